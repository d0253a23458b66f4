//! Live capture from an AF_PACKET TPACKET_V3 ring (Linux, no system library: libc only).
//!
//! The kernel writes packets into a memory-mapped ring of blocks; a block belongs to user space
//! once its `block_status` has `TP_STATUS_USER`, and goes back to the kernel when we store
//! `TP_STATUS_KERNEL` into it. Packets handed out by [`AfPacketSource`] borrow the ring block
//! directly (zero-copy): the block is returned to the kernel only on the call *after* its last
//! packet was handed out, which the lending [`PacketSource`] interface guarantees is after the
//! caller dropped that packet.
//!
//! One exception to zero-copy: the kernel strips 802.1Q tags and reports them in the frame's
//! metadata. Tagged frames (only those) are copied into a small per-source buffer with the tag
//! re-inserted after the MAC addresses, so that decode sees the frame as it was on the wire. The
//! common untagged path never copies.
//!
//! The socket NEVER transmits: no TX ring is configured and nothing calls send/sendto/write on it.
//! A passive monitor on a SPAN port must be invisible on the network.

#![cfg(target_os = "linux")]

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::ptr;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::cell::Cell;

use super::{CaptureError, LinkType, Packet, PacketSource};

/// Ring geometry and socket options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// Bytes per ring block; a multiple of the page size and of [`FRAME_SIZE`].
    pub block_size: u32,
    /// Number of blocks in the ring.
    pub block_count: u32,
    /// The kernel hands a partly filled block to user space after this many milliseconds
    /// (the latency bound on a quiet link).
    pub block_timeout_ms: u32,
    /// Put the interface into promiscuous mode for as long as the socket is open.
    pub promiscuous: bool,
    /// Join this PACKET_FANOUT group (flow-hash mode), so that several sockets share the traffic.
    pub fanout: Option<u16>,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            block_size: 4 * 1024 * 1024,
            block_count: 16,
            block_timeout_ms: 10,
            promiscuous: true,
            fanout: None,
        }
    }
}

/// The nominal frame size passed in `tpacket_req3`. TPACKET_V3 packs frames of any size into a
/// block; the kernel only uses this to validate the request.
pub const FRAME_SIZE: u32 = 2048;

/// Poll granularity of [`PacketSource::next_packet`] between checks of the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Why a live source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error("permission denied opening a packet socket on {0} (needs root or CAP_NET_RAW)")]
    PermissionDenied(String),
    #[error("{iface}: invalid ring options: {detail}")]
    InvalidOptions { iface: String, detail: String },
    #[error("{iface}: {op} failed: {source}")]
    Os {
        iface: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Capture accounting. Kernel counters are read with PACKET_STATISTICS, which resets them, so
/// they are accumulated here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Packets the kernel saw for this socket (including the dropped ones).
    pub packets: u64,
    /// Packets the kernel dropped because the ring was full.
    pub kernel_drops: u64,
    /// Times the ring was frozen because every block was owned by user space.
    pub kernel_freeze_q_cnt: u64,
    /// Ring blocks received from the kernel.
    pub blocks: u64,
    /// Packets handed out by this source.
    pub delivered: u64,
    /// Packets whose 802.1Q tag the kernel had stripped and this source put back (copied).
    pub vlan_restored: u64,
}

impl LiveStats {
    /// Packets the kernel put in the ring that this source never handed out: at the end of a
    /// run, what was left in the ring when reading stopped (a busy link past the stop's drain).
    pub fn unread(&self) -> u64 {
        self.packets
            .saturating_sub(self.kernel_drops.saturating_add(self.delivered))
    }
}

/// A live AF_PACKET TPACKET_V3 capture on one interface. See the module documentation.
pub struct AfPacketSource {
    iface: String,
    /// The interface's index when the socket was bound: a device removed and made again (a
    /// USB NIC replugged, a VLAN or veth recreated) has another, and the socket, bound to the
    /// old one, never receives again.
    ifindex: u32,
    /// The link went down (ENETDOWN) and no block came since: while so, every wait that times
    /// out asks whether the device is gone (the kernel reports the link down before the device
    /// is unregistered, so the first ask may find it still there).
    link_down: bool,
    fd: libc::c_int,
    ring: *mut u8,
    ring_len: usize,
    block_size: usize,
    block_count: usize,
    /// Block currently being read (or waited for).
    block: usize,
    /// True while `block` is owned by us and being walked.
    in_block: bool,
    /// Packets left in the current block.
    pkts_left: u32,
    /// Offset of the next packet header inside the current block.
    pkt_offset: usize,
    frame: u64,
    /// Tagged frames with their 802.1Q tag put back (the only copy).
    vlan_buf: Vec<u8>,
    stop: Arc<AtomicBool>,
    failed: bool,
    stats: Cell<LiveStats>,
    /// Fan-out mode: which blocks the capture thread and the workers still hold (see
    /// [`SharedRing`]).
    deferred: Option<Arc<BlockHolds>>,
}

// SAFETY: the ring pointer is owned exclusively by this source (no other handle to the mapping
// exists), so moving the source to another thread moves sole ownership of the mapping with it.
unsafe impl Send for AfPacketSource {}

fn os_err(iface: &str, op: &'static str) -> LiveError {
    LiveError::Os {
        iface: iface.to_string(),
        op,
        source: io::Error::last_os_error(),
    }
}

fn setsockopt<T>(fd: libc::c_int, level: libc::c_int, name: libc::c_int, val: &T) -> bool {
    // SAFETY: `val` points to a live, initialised `T` of exactly the length passed.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        ) == 0
    }
}

impl AfPacketSource {
    /// Open a packet socket on `iface` with a TPACKET_V3 receive ring.
    pub fn open(iface: &str, opts: AfPacketOptions) -> Result<AfPacketSource, LiveError> {
        let cname =
            CString::new(iface).map_err(|_| LiveError::NoSuchInterface(iface.to_string()))?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(LiveError::NoSuchInterface(iface.to_string()));
        }
        let page = {
            // SAFETY: sysconf has no memory-safety preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if p > 0 {
                p as u32
            } else {
                4096
            }
        };
        let invalid = |detail: String| LiveError::InvalidOptions {
            iface: iface.to_string(),
            detail,
        };
        if opts.block_size == 0
            || !opts.block_size.is_multiple_of(page)
            || !opts.block_size.is_multiple_of(FRAME_SIZE)
        {
            return Err(invalid(format!(
                "block size {} is not a non-zero multiple of the page size {page} and of {FRAME_SIZE}",
                opts.block_size
            )));
        }
        if opts.block_count == 0 {
            return Err(invalid("block count is 0".into()));
        }
        let ring_len = opts.block_size as usize * opts.block_count as usize;
        let frames_per_block = opts.block_size / FRAME_SIZE;
        let frame_nr = frames_per_block
            .checked_mul(opts.block_count)
            .ok_or_else(|| invalid("ring too large".into()))?;

        // Protocol 0 at creation: the socket receives nothing until it is bound to the interface
        // with ETH_P_ALL below, so no packet from another interface lands in the ring first.
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    LiveError::PermissionDenied(iface.to_string())
                }
                _ => LiveError::Os {
                    iface: iface.to_string(),
                    op: "socket(AF_PACKET)",
                    source: e,
                },
            });
        }
        // From here on, `src` owns the fd (and later the mapping): Drop cleans up on error.
        let mut src = AfPacketSource {
            iface: iface.to_string(),
            ifindex,
            link_down: false,
            fd,
            ring: ptr::null_mut(),
            ring_len: 0,
            block_size: opts.block_size as usize,
            block_count: opts.block_count as usize,
            block: 0,
            in_block: false,
            pkts_left: 0,
            pkt_offset: 0,
            frame: 0,
            vlan_buf: Vec::with_capacity(opts.block_size.min(65536) as usize + 4),
            stop: Arc::new(AtomicBool::new(false)),
            failed: false,
            stats: Cell::new(LiveStats::default()),
            deferred: None,
        };

        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        if !setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version) {
            return Err(os_err(iface, "setsockopt(PACKET_VERSION, TPACKET_V3)"));
        }
        let req = libc::tpacket_req3 {
            tp_block_size: opts.block_size,
            tp_block_nr: opts.block_count,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: frame_nr,
            tp_retire_blk_tov: opts.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        // Receive ring only. No PACKET_TX_RING: this socket never transmits.
        if !setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req) {
            return Err(os_err(iface, "setsockopt(PACKET_RX_RING)"));
        }
        // SAFETY: mapping the ring the kernel just allocated for this fd, with its exact length.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(os_err(iface, "mmap of the packet ring"));
        }
        src.ring = map.cast();
        src.ring_len = ring_len;

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV) => LiveError::NoSuchInterface(iface.to_string()),
                _ => LiveError::Os {
                    iface: iface.to_string(),
                    op: "bind",
                    source: e,
                },
            });
        }
        if opts.promiscuous {
            // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
            let mut mreq: libc::packet_mreq = unsafe { zeroed() };
            mreq.mr_ifindex = ifindex as i32;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            if !setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq) {
                return Err(os_err(iface, "setsockopt(PACKET_ADD_MEMBERSHIP, PROMISC)"));
            }
        }
        if let Some(group) = opts.fanout {
            let arg: libc::c_int = (u32::from(group) | (libc::PACKET_FANOUT_HASH << 16)) as i32;
            if !setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg) {
                return Err(os_err(iface, "setsockopt(PACKET_FANOUT)"));
            }
        }
        Ok(src)
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// A flag that makes [`PacketSource::next_packet`] return `None` (within ~100 ms) once set.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Ask [`PacketSource::next_packet`] to end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Capture accounting, including the kernel's counters (read and accumulated now).
    /// The capture socket's descriptor (for the seccomp filter that keeps it from sending).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd
    }

    pub fn stats(&self) -> LiveStats {
        // SAFETY: tpacket_stats_v3 is plain old data; all-zero is a valid value.
        let mut st: libc::tpacket_stats_v3 = unsafe { zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` is writable for `len` bytes and `len` is a valid in/out length.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        let mut s = self.stats.get();
        if rc == 0 {
            // Reading resets the kernel's counters: accumulate.
            s.packets += u64::from(st.tp_packets);
            s.kernel_drops += u64::from(st.tp_drops);
            s.kernel_freeze_q_cnt += u64::from(st.tp_freeze_q_cnt);
            self.stats.set(s);
        }
        s
    }

    /// The next packet, or `Ok(None)` when none arrived within `timeout` (so that the caller can
    /// check a stop flag). Errors are fatal: the source yields nothing more afterwards.
    pub fn next_packet_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Packet<'_>>, CaptureError> {
        if self.wait_ready(timeout)? {
            Ok(Some(self.take_packet()))
        } else {
            Ok(None)
        }
    }

    fn block_ptr(&self, i: usize) -> *mut libc::tpacket_block_desc {
        // SAFETY: i < block_count, so the offset stays within the mapping.
        unsafe { self.ring.add(i * self.block_size).cast() }
    }

    fn block_status_ptr(&self, i: usize) -> *mut u32 {
        let b = self.block_ptr(i);
        // SAFETY: `b` points to a block descriptor inside the mapping; taking a field address
        // does not read it.
        unsafe { ptr::addr_of_mut!((*b).hdr.bh1.block_status) }
    }

    /// Give the current block back to the kernel (in fan-out mode: drop the capture thread's
    /// hold on it, and give it back if no worker holds a packet of it) and move on to the next.
    fn release_block(&mut self) {
        match &self.deferred {
            None => {
                // Every read of the block's packets happens before the kernel may overwrite it.
                fence(Ordering::Release);
                // SAFETY: the status word lies in the mapping, is 4-byte aligned and shared with
                // the kernel; a volatile write keeps the compiler from eliding or reordering it.
                // No packet borrowing this block is alive: we hold `&mut self`.
                unsafe {
                    ptr::write_volatile(self.block_status_ptr(self.block), libc::TP_STATUS_KERNEL)
                };
            }
            Some(holds) => {
                // SAFETY: the status word of a block of this live mapping; `drop_hold` gives the
                // block back only when nobody holds it any more.
                unsafe { holds.drop_hold(self.block, self.block_status_ptr(self.block)) };
            }
        }
        self.in_block = false;
        self.block = (self.block + 1) % self.block_count;
    }

    /// Fan-out mode: the block is still held (by workers, from the previous lap) or its
    /// give-back is still being written. Its status word still says user from that lap: it is
    /// not new data, and must not be walked again until it was given back.
    fn held_from_last_lap(&self) -> bool {
        self.deferred
            .as_ref()
            .is_some_and(|h| !h.returned[self.block].load(Ordering::Acquire))
    }

    fn block_is_ours(&self) -> bool {
        if self.held_from_last_lap() {
            return false;
        }
        // SAFETY: see `release_block`; the kernel writes this word, so read it volatile.
        let status = unsafe { ptr::read_volatile(self.block_status_ptr(self.block)) };
        status & libc::TP_STATUS_USER != 0
    }

    /// Switches to fan-out mode and returns the handle workers use to read packets in place and
    /// give their blocks back. Call before reading the first packet.
    pub fn fanout_ring(&mut self) -> SharedRing {
        if self.deferred.is_none() {
            // A block walked in the normal mode goes back first: its hold was never counted.
            if self.in_block {
                self.release_block();
            }
            self.deferred = Some(Arc::new(BlockHolds {
                pending: (0..self.block_count).map(|_| AtomicU32::new(0)).collect(),
                returned: (0..self.block_count)
                    .map(|_| AtomicBool::new(true))
                    .collect(),
            }));
        }
        SharedRing {
            ring: self.ring,
            block_size: self.block_size,
            block_count: self.block_count,
            holds: Arc::clone(self.deferred.as_ref().expect("set above")),
        }
    }

    /// Fan-out mode: the next packet as a descriptor into the ring (no copy), its block held
    /// until [`SharedRing::done`] is called for it. `Ok(None)` on timeout.
    pub fn next_raw(&mut self, timeout: Duration) -> Result<Option<RawPacket>, CaptureError> {
        if self.deferred.is_none() || !self.wait_ready(timeout)? {
            return Ok(None);
        }
        let p = self.advance();
        if let Some(h) = &self.deferred {
            h.pending[self.block].fetch_add(1, Ordering::AcqRel);
        }
        Ok(Some(p))
    }

    /// Fan-out mode, end of capture: drop the capture thread's hold on the block it is in. Call
    /// once every worker has finished.
    pub fn finish_fanout(&mut self) {
        if self.in_block {
            self.release_block();
        }
    }

    /// Why the socket's device is gone, if it is: no device of its name any more, or one made
    /// again with another index (asked of the kernel in otwatch's own network namespace, as
    /// the socket was bound; a plain datagram socket's ioctl, which the seccomp filter allows).
    fn device_gone(&self) -> Option<String> {
        let name = CString::new(self.iface.as_str()).ok()?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == self.ifindex {
            return None;
        }
        let errno = io::Error::last_os_error().raw_os_error();
        Some(match index {
            0 if errno == Some(libc::ENODEV) => {
                "the interface was removed: the capture socket receives nothing; restart otwatch once it is back".into()
            }
            // Not known (the lookup itself failed): not called gone.
            0 => return None,
            _ => format!(
                "the interface was removed and made again (index {} is now {index}): the capture socket, bound to the old one, receives nothing; restart otwatch",
                self.ifindex
            ),
        })
    }

    fn fail(&mut self, source: io::Error) -> CaptureError {
        self.failed = true;
        CaptureError::Live {
            iface: self.iface.clone(),
            source,
        }
    }

    /// Make sure a packet is ready to take; false on timeout.
    fn wait_ready(&mut self, timeout: Duration) -> Result<bool, CaptureError> {
        if self.failed {
            return Ok(false);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.in_block {
                if self.pkts_left > 0 {
                    return Ok(true);
                }
                // The previous packet (the block's last) is no longer borrowed.
                self.release_block();
            }
            if self.block_is_ours() {
                // Reads of the block's contents must not be hoisted above the status check.
                fence(Ordering::Acquire);
                let b = self.block_ptr(self.block);
                // SAFETY: the block is owned by user space now; its header is initialised.
                let (num, first) = unsafe {
                    (
                        ptr::read_volatile(ptr::addr_of!((*b).hdr.bh1.num_pkts)),
                        ptr::read_volatile(ptr::addr_of!((*b).hdr.bh1.offset_to_first_pkt)),
                    )
                };
                self.in_block = true;
                if let Some(h) = &self.deferred {
                    // The capture thread's own hold, until it leaves the block.
                    h.returned[self.block].store(false, Ordering::Relaxed);
                    h.pending[self.block].fetch_add(1, Ordering::AcqRel);
                }
                self.pkts_left = num;
                self.pkt_offset = first as usize;
                self.link_down = false;
                let mut s = self.stats.get();
                s.blocks += 1;
                self.stats.set(s);
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                if self.link_down {
                    if let Some(why) = self.device_gone() {
                        return Err(self.fail(io::Error::new(io::ErrorKind::NotFound, why)));
                    }
                }
                return Ok(false);
            }
            if self.held_from_last_lap() {
                // Workers still read this block: poll(2) would report the ring readable and
                // spin. Back off briefly instead (the ring is full on our side; the kernel
                // counts what it cannot store).
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.fail(e));
            }
            if pfd.revents & libc::POLLNVAL != 0 {
                return Err(self.fail(io::Error::from_raw_os_error(libc::EBADF)));
            }
            if pfd.revents & libc::POLLERR != 0 {
                let mut err: libc::c_int = 0;
                let mut len = size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: `err` is writable for `len` bytes. Reading SO_ERROR clears it.
                unsafe {
                    libc::getsockopt(
                        self.fd,
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut err as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                // The link going down (a SPAN cable replugged) is not fatal: the socket stays
                // bound and receives again when the link comes back. The device itself gone
                // (removed, or made again under its name with another index) is: the socket
                // would stay silent for ever.
                if err == libc::ENETDOWN {
                    if let Some(why) = self.device_gone() {
                        return Err(self.fail(io::Error::new(io::ErrorKind::NotFound, why)));
                    }
                    if !self.link_down {
                        eprintln!(
                            "otwatch: warning: {}: the link went down; capture goes on when it is back",
                            self.iface
                        );
                    }
                    self.link_down = true;
                } else if err != 0 {
                    return Err(self.fail(io::Error::from_raw_os_error(err)));
                }
            }
        }
    }

    /// Steps over the packet at `pkt_offset` of the current block (`wait_ready` returned true)
    /// and describes it: where its bytes are, its times and lengths, a stripped VLAN tag.
    fn advance(&mut self) -> RawPacket {
        debug_assert!(self.in_block && self.pkts_left > 0);
        let base = self.block * self.block_size;
        let off = self.pkt_offset;
        let hdr_len = size_of::<libc::tpacket3_hdr>();
        // The kernel lays packets out inside the block; be defensive anyway.
        let hdr_ok = off + hdr_len <= self.block_size;
        // SAFETY: when `hdr_ok` the header lies within this block of the mapping, which user
        // space owns (TP_STATUS_USER observed with acquire ordering); it is 16-byte aligned.
        let h: libc::tpacket3_hdr = if hdr_ok {
            unsafe { ptr::read_volatile(self.ring.add(base + off).cast()) }
        } else {
            // SAFETY: all-zero is a valid tpacket3_hdr.
            unsafe { zeroed() }
        };
        self.pkts_left -= 1;
        if h.tp_next_offset == 0 || !hdr_ok {
            self.pkts_left = 0;
        } else {
            self.pkt_offset = off + h.tp_next_offset as usize;
        }
        let start = (off + usize::from(h.tp_mac)).min(self.block_size);
        let len = (h.tp_snaplen as usize).min(self.block_size - start);
        self.frame += 1;
        let mut s = self.stats.get();
        s.delivered += 1;
        let vlan = (h.tp_status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
            let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                h.hv1.tp_vlan_tpid
            } else {
                0x8100
            };
            s.vlan_restored += 1;
            (tpid, h.hv1.tp_vlan_tci as u16)
        });
        self.stats.set(s);
        RawPacket {
            block: self.block,
            offset: base + start,
            len,
            ts_nanos: i64::from(h.tp_sec) * 1_000_000_000 + i64::from(h.tp_nsec),
            orig_len: h.tp_len,
            frame: self.frame,
            vlan,
            csum_not_ready: h.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0,
        }
    }

    /// Hand out the packet at `pkt_offset` of the current block. `wait_ready` returned true.
    fn take_packet(&mut self) -> Packet<'_> {
        let p = self.advance();
        // SAFETY: [offset, offset+len) lies within the packet's block (clamped in `advance`),
        // which stays mapped and owned by user space until `release_block`, which needs
        // `&mut self`, so it cannot run while the returned packet borrows `self`.
        let data: &[u8] = unsafe { std::slice::from_raw_parts(self.ring.add(p.offset), p.len) };
        let (data, orig_len) = match p.vlan {
            Some(tag) => restore_vlan(&mut self.vlan_buf, data, tag, p.orig_len),
            None => (data, p.orig_len),
        };
        Packet {
            ts_nanos: p.ts_nanos,
            frame: p.frame,
            linktype: LinkType::ETHERNET,
            orig_len,
            data,
            csum_not_ready: p.csum_not_ready,
        }
    }
}

/// A frame with the 802.1Q tag the kernel stripped put back after the MAC addresses (the only
/// copy the live path makes), and its length on the wire with the tag. Frames too short for
/// MAC addresses are returned as they are.
pub fn restore_vlan<'a>(
    buf: &'a mut Vec<u8>,
    data: &'a [u8],
    (tpid, tci): (u16, u16),
    orig_len: u32,
) -> (&'a [u8], u32) {
    if data.len() < 12 {
        return (data, orig_len);
    }
    buf.clear();
    buf.extend_from_slice(&data[..12]);
    buf.extend_from_slice(&tpid.to_be_bytes());
    buf.extend_from_slice(&tci.to_be_bytes());
    buf.extend_from_slice(&data[12..]);
    (&buf[..], orig_len.saturating_add(4))
}

/// Fan-out mode: per block, who still holds it.
pub struct BlockHolds {
    /// Packets of the block handed out and not yet done, plus one while the capture thread
    /// walks it.
    pending: Box<[AtomicU32]>,
    /// Set once the block was given back to the kernel (its status word written) after its
    /// holds reached zero; cleared when the capture thread takes it again. The capture thread
    /// reads the block's status only when this is set, so it never mistakes a block of the
    /// previous lap, whose give-back is not yet written, for new data.
    returned: Box<[AtomicBool]>,
}

impl BlockHolds {
    /// Drops one hold on `block`; the last one gives the block back to the kernel.
    ///
    /// # Safety
    /// `status` is the status word of `block` in a live ring mapping, and the caller held one
    /// hold on it (the capture thread's, or one packet's).
    unsafe fn drop_hold(&self, block: usize, status: *mut u32) {
        if self.pending[block].fetch_sub(1, Ordering::AcqRel) == 1 {
            // Every read of the block's packets happens before the kernel may overwrite it.
            fence(Ordering::Release);
            // SAFETY: per the function's contract; no hold is left, so nothing reads the block.
            unsafe { ptr::write_volatile(status, libc::TP_STATUS_KERNEL) };
            self.returned[block].store(true, Ordering::Release);
        }
    }
}

/// A packet in the ring, handed to a worker without copying (fan-out mode).
#[derive(Debug, Clone, Copy)]
pub struct RawPacket {
    pub block: usize,
    /// Offset of the first byte from the start of the ring.
    pub offset: usize,
    pub len: usize,
    pub ts_nanos: i64,
    pub orig_len: u32,
    pub frame: u64,
    /// An 802.1Q tag the kernel stripped (TPID, TCI): the worker puts it back.
    pub vlan: Option<(u16, u16)>,
    /// Its transport checksum not computed yet (checksum offload, `TP_STATUS_CSUMNOTREADY`).
    pub csum_not_ready: bool,
}

/// The workers' handle on the ring in fan-out mode: read a packet in place, then say it is done;
/// the last one done with a block gives it back to the kernel.
#[derive(Clone)]
pub struct SharedRing {
    ring: *mut u8,
    block_size: usize,
    block_count: usize,
    holds: Arc<BlockHolds>,
}

// SAFETY: the mapping is shared by design; workers only read packets of blocks they hold (so the
// kernel does not own them), and a block is given back only when its holds reach zero. The
// mapping outlives every worker: the fan-out joins them (a thread scope) before the source, which
// owns the mapping, can be dropped. `bytes` and `done` are unsafe and state that contract.
unsafe impl Send for SharedRing {}
unsafe impl Sync for SharedRing {}

impl SharedRing {
    /// The packet's bytes.
    ///
    /// # Safety
    /// `p` came from [`AfPacketSource::next_raw`] of the source this ring belongs to, which is
    /// still alive, and [`SharedRing::done`] was not yet called for it.
    pub unsafe fn bytes(&self, p: &RawPacket) -> &[u8] {
        let end = p.offset.saturating_add(p.len);
        if p.block >= self.block_count || end > (p.block + 1) * self.block_size {
            return &[];
        }
        // SAFETY: within the packet's block (checked), which the caller's hold keeps user-owned.
        unsafe { std::slice::from_raw_parts(self.ring.add(p.offset), p.len) }
    }

    /// Done with `p`: its hold is dropped, and its block goes back to the kernel if it was the
    /// last.
    ///
    /// # Safety
    /// As for [`SharedRing::bytes`], and `done` is called exactly once per packet.
    pub unsafe fn done(&self, p: &RawPacket) {
        if p.block >= self.block_count {
            return;
        }
        // SAFETY: the block index is in range, so its descriptor lies in the live mapping; the
        // caller held one hold on it.
        unsafe {
            let b: *mut libc::tpacket_block_desc = self.ring.add(p.block * self.block_size).cast();
            self.holds
                .drop_hold(p.block, ptr::addr_of_mut!((*b).hdr.bh1.block_status));
        }
    }
}

impl PacketSource for AfPacketSource {
    /// Blocks until a packet arrives; `None` once [`AfPacketSource::stop`] was called (or the
    /// stop handle set) or after an error.
    fn next_packet(&mut self) -> Option<Result<Packet<'_>, CaptureError>> {
        loop {
            if self.failed || self.stop.load(Ordering::Relaxed) {
                return None;
            }
            match self.wait_ready(STOP_POLL) {
                Ok(true) => break,
                Ok(false) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(self.take_packet()))
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.stats.get().delivered, None)
    }
}

impl Drop for AfPacketSource {
    fn drop(&mut self) {
        if !self.ring.is_null() {
            // SAFETY: `ring`/`ring_len` are exactly the mapping created in `open`; no packet
            // borrows it any more (we are being dropped).
            unsafe { libc::munmap(self.ring.cast(), self.ring_len) };
        }
        // SAFETY: we own the fd and close it once.
        unsafe { libc::close(self.fd) };
    }
}

/// The uid and primary gid of `user`.
pub fn lookup_user(user: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let cname = CString::new(user).map_err(|_| format!("invalid user name: {user:?}"))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hint = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut buf = vec![0 as libc::c_char; if hint > 0 { hint as usize } else { 16384 }];
    // SAFETY: passwd is plain old data; all-zero is a valid value.
    let mut pw: libc::passwd = unsafe { zeroed() };
    let mut result: *mut libc::passwd = ptr::null_mut();
    loop {
        // SAFETY: all pointers are valid; `buf` is writable for `buf.len()` bytes.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "cannot look up user {user}: {}",
                io::Error::from_raw_os_error(rc)
            ));
        }
        break;
    }
    if result.is_null() {
        return Err(format!("no such user: {user}"));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

/// Switch to `user` (its uid, gid, and no supplementary groups). Call after the socket is open:
/// the open socket keeps working without privileges.
pub fn drop_privileges(user: &str) -> Result<(), String> {
    let (uid, gid) = lookup_user(user)?;
    if uid == 0 {
        // setuid(0) drops nothing: a uid-0 account would keep every capability.
        return Err(format!(
            "--user {user}: that account is uid 0, which keeps every privilege; name an unprivileged account (or leave --user out: otwatch then stays root but holds no capability)"
        ));
    }
    if !super::harden::is_root() {
        // Started as a user with capabilities (systemd AmbientCapabilities, setcap): switching
        // users needs root, but running as `user` already is the point.
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        if me != uid {
            return Err(format!(
                "--user {user}: running as uid {me}, not root, so cannot switch to uid {uid}; start otwatch as {user} (with CAP_NET_RAW) or as root"
            ));
        }
        return super::harden::clear_capabilities()
            .map_err(|e| format!("cannot clear capabilities: {e}"));
    }
    // SAFETY: setgroups with an empty list.
    if unsafe { libc::setgroups(0, ptr::null()) } != 0 {
        return Err(format!(
            "setgroups([]) failed: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: plain syscalls; group first, while we still have the privilege to change it.
    if unsafe { libc::setgid(gid) } != 0 {
        return Err(format!(
            "setgid({gid}) failed: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(format!(
            "setuid({uid}) failed: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: as above. Regaining root must now be impossible.
    if unsafe { libc::setuid(0) } == 0 {
        return Err("privileges were not dropped: setuid(0) still succeeds".into());
    }
    Ok(())
}

/// Why capturing on `iface` may see nothing (administratively down, or no carrier), from
/// /sys/class/net; `None` when it is up or its state cannot be read.
pub fn link_warning(iface: &str) -> Option<String> {
    let dir = std::path::Path::new("/sys/class/net").join(iface);
    let flags = std::fs::read_to_string(dir.join("flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    if flags & libc::IFF_UP as u32 == 0 {
        return Some(format!(
            "{iface} is down: nothing will be captured until it is up (ip link set {iface} up)"
        ));
    }
    let oper = std::fs::read_to_string(dir.join("operstate")).unwrap_or_default();
    (oper.trim() == "down").then(|| {
        format!("{iface} has no link (operstate down): check the SPAN/mirror cable and port")
    })
}

#[cfg(test)]
mod tests {

    /// What the kernel counted, less what it dropped and what was read, is what was left.
    #[test]
    fn unread_is_what_the_kernel_kept_and_nobody_read() {
        let l = super::LiveStats {
            packets: 100,
            kernel_drops: 7,
            delivered: 90,
            ..super::LiveStats::default()
        };
        assert_eq!(l.unread(), 3);
        let all_read = super::LiveStats { delivered: 93, ..l };
        assert_eq!(all_read.unread(), 0);
    }

    /// `--user` naming a uid-0 account is refused before anything changes: setuid(0) would
    /// drop nothing, and the run would keep every capability.
    #[test]
    fn a_uid_0_user_is_refused() {
        let e = super::drop_privileges("root").expect_err("root is refused");
        assert!(e.contains("uid 0") || e.contains("not root"), "{e}");
    }
}
