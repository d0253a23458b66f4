//! Live capture through libpcap (cargo feature `libpcap`): for BPF filter strings and platforms
//! without AF_PACKET. The handle is non-blocking and otwatch polls its descriptor for at most
//! 100 ms at a time (libpcap's own read timeout may never fire on an idle Linux link), so an idle
//! link never delays shutdown. libpcap is only asked to receive; otwatch never sends.

use std::os::fd::AsRawFd;

use super::{LinkType, Packet};

/// Read timeout: how long a read may wait on an idle link before the caller checks for a stop.
const READ_TIMEOUT_MS: i32 = 100;
/// Kernel buffer for the capture.
const BUFFER_BYTES: i32 = 32 * 1024 * 1024;

pub struct PcapSource {
    cap: pcap::Capture<pcap::Active>,
    /// The capture's descriptor, polled while the link is idle.
    fd: std::os::fd::RawFd,
    linktype: LinkType,
    frame: u64,
}

/// Kernel and interface drops as libpcap reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcapStats {
    pub received: u64,
    pub dropped: u64,
    pub if_dropped: u64,
}

impl PcapSource {
    /// The capture's descriptor (for the seccomp filter that keeps it from sending).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd
    }

    /// Open `iface`, optionally with a BPF filter (tcpdump syntax).
    pub fn open(iface: &str, bpf: Option<&str>, promiscuous: bool) -> Result<PcapSource, String> {
        let inactive = pcap::Capture::from_device(iface).map_err(|e| format!("{iface}: {e}"))?;
        let mut cap = inactive
            .promisc(promiscuous)
            .snaplen(65535)
            .timeout(READ_TIMEOUT_MS)
            // Not immediate mode: libpcap then uses TPACKET_V3 blocks, which pack small OT
            // frames densely; with fixed 64 KiB slots (immediate mode, snaplen 65535) a 2 MiB
            // buffer holds 32 frames and a burst overflows it.
            .buffer_size(BUFFER_BYTES)
            .open()
            .and_then(|c| c.setnonblock())
            .map_err(|e| format!("{iface}: cannot capture: {e}"))?;
        if let Some(filter) = bpf {
            cap.filter(filter, true)
                .map_err(|e| format!("{iface}: BPF filter {filter:?}: {e}"))?;
        }
        let linktype = LinkType(cap.get_datalink().0 as u32);
        let fd = cap.as_raw_fd();
        Ok(PcapSource {
            cap,
            fd,
            linktype,
            frame: 0,
        })
    }

    /// The next packet, or `None` when the read timed out on an idle link.
    pub fn next_packet_timeout(&mut self) -> Result<Option<Packet<'_>>, String> {
        match self.cap.next_packet() {
            Ok(p) => {
                self.frame += 1;
                // time_t and suseconds_t are 64-bit here but not on every platform.
                #[allow(clippy::unnecessary_cast)]
                let ts = (p.header.ts.tv_sec as i64) * 1_000_000_000
                    + (p.header.ts.tv_usec as i64) * 1000;
                Ok(Some(Packet {
                    ts_nanos: ts,
                    frame: self.frame,
                    linktype: self.linktype,
                    orig_len: p.header.len,
                    data: p.data,
                    csum_not_ready: false,
                }))
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing buffered: wait for the descriptor to become readable, or 100 ms.
                let mut fds = libc::pollfd {
                    fd: self.fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call; an error (EINTR on
                // SIGINT) just returns early, which is what the caller wants.
                unsafe { libc::poll(&mut fds, 1, READ_TIMEOUT_MS) };
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn stats(&mut self) -> PcapStats {
        self.cap
            .stats()
            .map(|s| PcapStats {
                received: u64::from(s.received),
                dropped: u64::from(s.dropped),
                if_dropped: u64::from(s.if_dropped),
            })
            .unwrap_or_default()
    }
}
