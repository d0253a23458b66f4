//! Passive, enforced: once capture is set up, the process cannot transmit on its capture socket,
//! cannot regain privileges, and holds no capabilities.
//!
//! - A seccomp filter (seccompiler, on every thread at once) refuses with EPERM every system
//!   call that could send on the capture descriptors (sendto, sendmsg, sendmmsg, write, writev,
//!   pwrite*, sendfile, splice into them), every way to copy them to another number (dup*,
//!   fcntl F_DUPFD*), new packet sockets, io_uring (whose operations seccomp never sees) and
//!   pidfd_getfd. Setting the filter sets no-new-privileges.
//! - Capabilities are cleared (effective, permitted, inheritable, ambient, and the bounding set
//!   where allowed), so `--user` also works when otwatch starts as a user with CAP_NET_RAW
//!   (systemd `AmbientCapabilities=`, or `setcap`) instead of as root.

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

fn eq(arg: u8, v: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)
}

/// The filter: EPERM for anything that could transmit on, or duplicate, one of `fds`; every
/// other call allowed.
pub fn no_transmit_program(fds: &[RawFd]) -> Result<BpfProgram, String> {
    let e = |e: BackendError| format!("seccomp filter: {e}");
    let arch =
        TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp filter: {e}"))?;
    let on = |arg: u8| -> Result<Vec<SeccompRule>, String> {
        fds.iter()
            .map(|&fd| SeccompRule::new(vec![eq(arg, fd as u32 as u64).map_err(e)?]).map_err(e))
            .collect()
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in [
        libc::SYS_sendto,
        libc::SYS_sendmsg,
        libc::SYS_sendmmsg,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_pwrite64,
        libc::SYS_pwritev,
        libc::SYS_pwritev2,
        libc::SYS_sendfile,
        libc::SYS_dup,
        libc::SYS_dup3,
    ] {
        rules.insert(nr, on(0)?);
    }
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_dup2, on(0)?);
    // splice(fd_in, off_in, fd_out, ...): the output descriptor is the third argument.
    rules.insert(libc::SYS_splice, on(2)?);
    let mut fcntl = Vec::new();
    for &fd in fds {
        for cmd in [libc::F_DUPFD, libc::F_DUPFD_CLOEXEC] {
            fcntl.push(
                SeccompRule::new(vec![
                    eq(0, fd as u32 as u64).map_err(e)?,
                    eq(1, cmd as u64).map_err(e)?,
                ])
                .map_err(e)?,
            );
        }
    }
    rules.insert(libc::SYS_fcntl, fcntl);
    // No new socket that can put frames or raw IP on a wire: AF_PACKET of any type, and raw or
    // SOCK_PACKET sockets of any family (the kernel turns `socket(AF_INET, SOCK_PACKET)` into
    // a packet socket after seccomp has seen AF_INET). The type's low four bits are the type,
    // the rest SOCK_NONBLOCK/SOCK_CLOEXEC.
    // Netlink sockets are raw too, but talk to the kernel, never to a wire (glibc's getifaddrs
    // and libpcap use them).
    let sock_type = |t: i32| -> Result<SeccompRule, String> {
        SeccompRule::new(vec![
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Ne,
                libc::AF_NETLINK as u64,
            )
            .map_err(e)?,
            SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(0xf),
                t as u64,
            )
            .map_err(e)?,
        ])
        .map_err(e)
    };
    rules.insert(
        libc::SYS_socket,
        vec![
            SeccompRule::new(vec![eq(0, libc::AF_PACKET as u64).map_err(e)?]).map_err(e)?,
            sock_type(libc::SOCK_RAW)?,
            sock_type(SOCK_PACKET)?,
        ],
    );
    // Unconditional: io_uring's sends never pass through seccomp; pidfd_getfd copies
    // descriptors out of other processes.
    rules.insert(libc::SYS_io_uring_setup, Vec::new());
    rules.insert(libc::SYS_pidfd_getfd, Vec::new());
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(e)?;
    BpfProgram::try_from(filter).map_err(e)
}

/// Installs [`no_transmit_program`] on every thread of the process (and every thread created
/// later). The descriptors must stay open for the life of the process: a file opened later
/// under the same number would be refused too.
pub fn deny_transmit(fds: &[RawFd]) -> Result<(), String> {
    let program = no_transmit_program(fds)?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("seccomp filter: {e}"))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The obsolete `SOCK_PACKET` type (deprecated in libc, still honoured by the kernel).
const SOCK_PACKET: i32 = 10;

/// Clears every capability of the calling thread: ambient, bounding (when CAP_SETPCAP allows),
/// effective, permitted, inheritable. Capabilities are per thread: call it before any other
/// thread exists.
pub fn clear_capabilities() -> std::io::Result<()> {
    use std::io::Error;
    type Ul = libc::c_ulong;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as Ul,
            0 as Ul,
            0 as Ul,
            0 as Ul,
        )
    };
    // EINVAL: a kernel without ambient capabilities (before 4.3), nothing to clear.
    if rc != 0 && Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(Error::last_os_error());
    }
    for cap in 0..64 as Ul {
        // SAFETY: as above.
        match unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0 as Ul, 0 as Ul, 0 as Ul) } {
            r if r < 0 => break, // past the last capability the kernel knows
            1 => {
                // SAFETY: as above.
                let dropped =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0 as Ul, 0 as Ul, 0 as Ul) };
                // Without CAP_SETPCAP the bounding set stays; with the other sets empty and
                // no-new-privileges set, nothing in it can be regained.
                if dropped != 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads a version-3 header and two data structs, both valid here.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    /// The filter on one thread (seccompiler's `apply_filter` is per thread): sends, writes and
    /// copies of the chosen descriptor fail with EPERM, other descriptors work, and the rest of
    /// the test process is untouched.
    #[test]
    fn the_filter_refuses_transmitting_on_the_capture_descriptor_only() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let (c, d) = UnixDatagram::pair().unwrap();
        let fd = a.as_raw_fd();
        let program = no_transmit_program(&[fd]).unwrap();
        let eperm = |rc: i64| {
            rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                seccompiler::apply_filter(&program).unwrap();
                assert_eq!(a.send(b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
                // SAFETY: plain syscalls on descriptors this test owns.
                unsafe {
                    assert!(eperm(libc::write(fd, b"x".as_ptr().cast(), 1) as i64));
                    assert!(eperm(libc::dup(fd) as i64));
                    assert!(eperm(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) as i64));
                    assert!(eperm(
                        libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) as i64
                    ));
                    assert!(eperm(libc::syscall(
                        libc::SYS_io_uring_setup,
                        1u32,
                        std::ptr::null_mut::<u8>()
                    )));
                }
                // Other descriptors still work on the filtered thread, and ordinary sockets
                // can still be made (the metrics server, syslog).
                c.send(b"y").unwrap();
                let tcp = std::net::TcpListener::bind("127.0.0.1:0");
                assert!(tcp.is_ok(), "{tcp:?}");
                // SAFETY: a plain socket call; the descriptor is closed at once.
                unsafe {
                    let nl = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0);
                    assert!(nl >= 0, "netlink: {}", std::io::Error::last_os_error());
                    libc::close(nl);
                }
            })
            .join()
            .unwrap();
        });
        // This thread has no filter.
        a.send(b"z").unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(b.recv(&mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"z", "nothing from the filtered thread arrived");
        assert_eq!(d.recv(&mut buf).unwrap(), 1);
    }
}
