//! Packet capture: the Bronze tier. Every source yields [`Packet`]s that borrow their bytes
//! from the source's own buffer (a memory-mapped file, a decompressed buffer, a kernel ring).

pub mod afpacket;
pub mod file;
pub mod harden;
#[cfg(feature = "libpcap")]
pub mod libpcap;

pub use file::{CaptureError, CaptureFile};

/// Link-layer header type, as numbered by tcpdump.org's LINKTYPE_* registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    /// DLT_RAW as written by OpenBSD/some libpcap builds (12) and the portable LINKTYPE_RAW (101).
    pub const RAW_BSD: LinkType = LinkType(12);
    pub const RAW_BSD_ALT: LinkType = LinkType(14);
    pub const RAW: LinkType = LinkType(101);
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);

    pub fn name(self) -> &'static str {
        match self {
            Self::NULL => "null",
            Self::ETHERNET => "ethernet",
            Self::RAW_BSD | Self::RAW_BSD_ALT | Self::RAW => "raw",
            Self::LOOP => "loop",
            Self::LINUX_SLL => "linux_sll",
            Self::IPV4 => "ipv4",
            Self::IPV6 => "ipv6",
            Self::LINUX_SLL2 => "linux_sll2",
            _ => "unsupported",
        }
    }
}

/// One captured packet. `data` borrows from the source; nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Capture time in nanoseconds since the Unix epoch (UTC).
    pub ts_nanos: i64,
    /// 1-based index of the packet in its input (as tshark numbers frames).
    pub frame: u64,
    pub linktype: LinkType,
    /// Length of the packet on the wire; `data.len()` is smaller when the capture cut it.
    pub orig_len: u32,
    pub data: &'a [u8],
    /// A packet whose transport checksum is not computed yet (live capture with checksum
    /// offload, Linux's `TP_STATUS_CSUMNOTREADY`: the capture host's own packets, or a local
    /// VM's or container's over a veth, tap or virtio interface): it is not verified (counted
    /// as offloaded, not as bad).
    pub csum_not_ready: bool,
}

/// A source of packets. A lending interface: the packet borrows the source until the next call,
/// which is what lets ring buffers and memory maps hand out their bytes without copying.
pub trait PacketSource {
    /// The next packet, `None` at the end, or an error after which the source yields nothing more.
    fn next_packet(&mut self) -> Option<Result<Packet<'_>, CaptureError>>;
    /// Bytes consumed so far and the total (for progress), when the source knows them.
    fn progress(&self) -> (u64, Option<u64>);
}
