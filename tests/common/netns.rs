//! Network namespaces for tests: entering one, a raw packet socket to send frames with, the
//! Ethernet frames of a capture, and the reason to skip when the test cannot make them.

use std::ffi::CString;
use std::mem::{size_of, zeroed};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use otwatch::capture::{CaptureFile, PacketSource};

pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and packet sockets need it)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the `ip` command (iproute2) is missing".into()),
    }
}

pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Move the calling thread (only it) into the named network namespace.
pub fn enter_netns(name: &str) {
    let path = CString::new(format!("/var/run/netns/{name}")).unwrap();
    // SAFETY: valid path; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(
        fd >= 0,
        "open netns {name}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a namespace file descriptor.
    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    let err = std::io::Error::last_os_error();
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    assert_eq!(rc, 0, "setns {name}: {err}");
}

/// The test's own plain packet socket, bound to `ifname` in the thread's namespace (used to send
/// on the peer end, and to count what arrives there). Not otwatch's source.
pub struct RawSocket(pub libc::c_int);

impl RawSocket {
    pub fn bind(ifname: &str) -> RawSocket {
        let c = CString::new(ifname).unwrap();
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert!(ifindex != 0, "no interface {ifname}");
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let s = RawSocket(fd);
        // SAFETY: zeroed sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: valid address of the size passed.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        s
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: buffer valid for its length.
        let n = unsafe { libc::send(self.0, frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Sends every frame, in bursts of 256 with a pause between: a veth hands each frame to
    /// the peer's per-CPU backlog, which holds 1000 (netdev_max_backlog) and drops the rest,
    /// uncounted by any capture, when the softirq that empties it falls behind the sender.
    pub fn send_all<F: AsRef<[u8]>>(&self, frames: &[F]) {
        for (i, f) in frames.iter().enumerate() {
            self.send(f.as_ref());
            if i % 256 == 255 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Count the frames received within `window` (the socket's own outgoing frames excluded).
    pub fn count_for(&self, window: Duration) -> usize {
        let end = Instant::now() + window;
        let mut n = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return n;
            }
            let mut pfd = libc::pollfd {
                fd: self.0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if rc <= 0 {
                continue;
            }
            // SAFETY: zeroed sockaddr_ll is valid; buffers are valid for their lengths.
            let mut from: libc::sockaddr_ll = unsafe { zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            let r = unsafe {
                libc::recvfrom(
                    self.0,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if r >= 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
                n += 1;
            }
        }
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// The Ethernet frames of a capture file (other link types are left out: the veth carries
/// Ethernet), and whether the file was Ethernet at all.
pub fn ethernet_frames(path: &Path) -> Vec<Vec<u8>> {
    let Ok(mut cap) = CaptureFile::open(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(Ok(p)) = cap.next_packet() {
        if p.linktype != otwatch::capture::LinkType::ETHERNET
            || p.data.len() < 14
            || p.data.len() > 1514
        {
            return Vec::new();
        }
        out.push(p.data.to_vec());
    }
    out
}
