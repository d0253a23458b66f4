//! L2-L4 decode: link layer (Ethernet with 802.1Q/QinQ, Linux SLL/SLL2, NULL/loop, raw IP), IPv4/IPv6
//! and TCP/UDP, with `etherparse` doing the slicing. Nothing is copied: the result borrows the packet.
//!
//! Truncated packets (snaplen) are decoded laxly: the transport payload is what was captured, and
//! the flow layer sees the missing tail as a gap. Checksums are verified and counted, never used to
//! drop data (capture hosts with checksum offload write bogus ones on their own traffic).

pub mod defrag;

use std::net::IpAddr;

use etherparse::{
    EtherType, IpNumber, LaxIpPayloadSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice,
};

use crate::capture::LinkType;
use crate::stats::Stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Transport<'a> {
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: &'a [u8],
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        payload: &'a [u8],
    },
}

/// A decoded IP packet with its TCP or UDP segment.
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    /// Outermost 802.1Q VLAN id, 0 when untagged.
    pub vlan: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport<'a>,
}

/// An IP fragment, to be handed to [`defrag::Defragmenter`].
#[derive(Debug, Clone, Copy)]
pub struct Fragment<'a> {
    pub vlan: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub protocol: IpNumber,
    /// Offset of this fragment's payload in the original datagram, in bytes.
    pub offset: usize,
    pub more_fragments: bool,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub enum Decode<'a> {
    Packet(Decoded<'a>),
    Fragment(Fragment<'a>),
    /// Not IP, or IP carrying neither TCP nor UDP: nothing for otwatch.
    Ignored,
    /// Damaged beyond use; the stats say which layer.
    Error,
}

const AF_INET: u32 = 2;

fn is_af_inet6(af: u32) -> bool {
    // Linux 10, the BSDs 24, FreeBSD 28, macOS 30.
    matches!(af, 10 | 24 | 28 | 30)
}

/// Decode one link-layer frame.
pub fn decode<'a>(linktype: LinkType, data: &'a [u8], stats: &mut Stats) -> Decode<'a> {
    let sliced = match linktype {
        LinkType::ETHERNET => match LaxSlicedPacket::from_ethernet(data) {
            Ok(p) => p,
            Err(_) => {
                stats.decode_errors.link += 1;
                return Decode::Error;
            }
        },
        LinkType::LINUX_SLL => {
            // 16-byte header; protocol (ether type) in the last two bytes.
            let Some(hdr) = data.get(..16) else {
                stats.decode_errors.link += 1;
                return Decode::Error;
            };
            let et = EtherType(u16::from_be_bytes([hdr[14], hdr[15]]));
            LaxSlicedPacket::from_ether_type(et, &data[16..])
        }
        LinkType::LINUX_SLL2 => {
            // 20-byte header; protocol (ether type) in the first two bytes.
            let Some(hdr) = data.get(..20) else {
                stats.decode_errors.link += 1;
                return Decode::Error;
            };
            let et = EtherType(u16::from_be_bytes([hdr[0], hdr[1]]));
            LaxSlicedPacket::from_ether_type(et, &data[20..])
        }
        LinkType::NULL | LinkType::LOOP => {
            let Some(hdr) = data.get(..4) else {
                stats.decode_errors.link += 1;
                return Decode::Error;
            };
            let raw = [hdr[0], hdr[1], hdr[2], hdr[3]];
            // NULL stores the family in the capturing host's byte order, LOOP in network order.
            let af = if linktype == LinkType::LOOP {
                u32::from_be_bytes(raw)
            } else if u32::from_le_bytes(raw) < 0x10000 {
                u32::from_le_bytes(raw)
            } else {
                u32::from_be_bytes(raw)
            };
            if af != AF_INET && !is_af_inet6(af) {
                stats.non_ip += 1;
                return Decode::Ignored;
            }
            match LaxSlicedPacket::from_ip(&data[4..]) {
                Ok(p) => p,
                Err(_) => {
                    stats.decode_errors.ip += 1;
                    return Decode::Error;
                }
            }
        }
        LinkType::RAW
        | LinkType::RAW_BSD
        | LinkType::RAW_BSD_ALT
        | LinkType::IPV4
        | LinkType::IPV6 => match LaxSlicedPacket::from_ip(data) {
            Ok(p) => p,
            Err(_) => {
                stats.decode_errors.ip += 1;
                return Decode::Error;
            }
        },
        _ => {
            stats.unsupported_linktype += 1;
            return Decode::Ignored;
        }
    };
    from_sliced(&sliced, stats)
}

fn from_sliced<'a>(p: &LaxSlicedPacket<'a>, stats: &mut Stats) -> Decode<'a> {
    let vlan = p.vlan_ids().first().map_or(0, |v| v.value());
    let (src, dst, payload, frag): (
        IpAddr,
        IpAddr,
        &LaxIpPayloadSlice<'a>,
        Option<(u32, usize, bool)>,
    ) = match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            if !ipv4_header_checksum_ok(h.slice()) {
                stats.checksum_errors.ipv4 += 1;
            }
            let frag = ip.is_payload_fragmented().then(|| {
                (
                    u32::from(h.identification()),
                    usize::from(h.fragments_offset().value()) * 8,
                    h.more_fragments(),
                )
            });
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                ip.payload(),
                frag,
            )
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let mut frag = None;
            if ip.is_payload_fragmented() {
                for ext in ip.extensions().clone().into_iter() {
                    if let etherparse::Ipv6ExtensionSlice::Fragment(f) = ext {
                        frag = Some((
                            f.identification(),
                            usize::from(f.fragment_offset().value()) * 8,
                            f.more_fragments(),
                        ));
                    }
                }
            }
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                ip.payload(),
                frag,
            )
        }
        Some(LaxNetSlice::Arp(_)) | None => {
            if p.stop_err.is_some() {
                stats.decode_errors.ip += 1;
                return Decode::Error;
            }
            stats.non_ip += 1;
            return Decode::Ignored;
        }
    };
    if payload.incomplete {
        stats.truncated_packets += 1;
    }
    if let Some((id, offset, more_fragments)) = frag {
        stats.ip_fragments += 1;
        return Decode::Fragment(Fragment {
            vlan,
            src,
            dst,
            id,
            protocol: payload.ip_number,
            offset,
            more_fragments,
            payload: payload.payload,
        });
    }
    match &p.transport {
        Some(t) => from_transport(vlan, src, dst, t, !payload.incomplete, stats),
        None => match payload.ip_number {
            IpNumber::TCP => {
                stats.decode_errors.tcp += 1;
                Decode::Error
            }
            IpNumber::UDP => {
                stats.decode_errors.udp += 1;
                Decode::Error
            }
            _ => {
                stats.non_tcp_udp += 1;
                Decode::Ignored
            }
        },
    }
}

/// Decode the transport layer of a reassembled IP datagram.
pub fn decode_transport<'a>(
    vlan: u16,
    src: IpAddr,
    dst: IpAddr,
    protocol: IpNumber,
    payload: &'a [u8],
    stats: &mut Stats,
) -> Decode<'a> {
    let t = match protocol {
        IpNumber::TCP => match etherparse::TcpSlice::from_slice(payload) {
            Ok(t) => TransportSlice::Tcp(t),
            Err(_) => {
                stats.decode_errors.tcp += 1;
                return Decode::Error;
            }
        },
        IpNumber::UDP => match etherparse::UdpSlice::from_slice(payload) {
            Ok(u) => TransportSlice::Udp(u),
            Err(_) => {
                stats.decode_errors.udp += 1;
                return Decode::Error;
            }
        },
        _ => {
            stats.non_tcp_udp += 1;
            return Decode::Ignored;
        }
    };
    from_transport(vlan, src, dst, &t, true, stats)
}

fn from_transport<'a>(
    vlan: u16,
    src: IpAddr,
    dst: IpAddr,
    t: &TransportSlice<'a>,
    complete: bool,
    stats: &mut Stats,
) -> Decode<'a> {
    let transport = match t {
        TransportSlice::Tcp(tcp) => {
            if complete && !tcp_checksum_ok(tcp, src, dst) {
                stats.checksum_errors.tcp += 1;
            }
            Transport::Tcp {
                src_port: tcp.source_port(),
                dst_port: tcp.destination_port(),
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                flags: TcpFlags {
                    syn: tcp.syn(),
                    ack: tcp.ack(),
                    fin: tcp.fin(),
                    rst: tcp.rst(),
                },
                payload: tcp.payload(),
            }
        }
        TransportSlice::Udp(udp) => {
            if complete && !udp_checksum_ok(udp, src, dst) {
                stats.checksum_errors.udp += 1;
            }
            Transport::Udp {
                src_port: udp.source_port(),
                dst_port: udp.destination_port(),
                payload: udp.payload(),
            }
        }
        _ => {
            stats.non_tcp_udp += 1;
            return Decode::Ignored;
        }
    };
    Decode::Packet(Decoded {
        vlan,
        src,
        dst,
        transport,
    })
}

fn ipv4_header_checksum_ok(header: &[u8]) -> bool {
    etherparse::checksum::Sum16BitWords::new()
        .add_slice(header)
        .ones_complement()
        == 0
}

fn tcp_checksum_ok(tcp: &etherparse::TcpSlice<'_>, src: IpAddr, dst: IpAddr) -> bool {
    let calc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => tcp.calc_checksum_ipv4(s.octets(), d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => tcp.calc_checksum_ipv6(s.octets(), d.octets()),
        _ => return true,
    };
    calc.map_or(true, |c| c == tcp.checksum())
}

fn udp_checksum_ok(udp: &etherparse::UdpSlice<'_>, src: IpAddr, dst: IpAddr) -> bool {
    let stored = udp.checksum();
    let calc = match (src, dst) {
        // Zero means "no checksum" over IPv4.
        (IpAddr::V4(_), IpAddr::V4(_)) if stored == 0 => return true,
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            udp.to_header()
                .calc_checksum_ipv4_raw(s.octets(), d.octets(), udp.payload())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            udp.to_header()
                .calc_checksum_ipv6_raw(s.octets(), d.octets(), udp.payload())
        }
        _ => return true,
    };
    calc.map_or(true, |c| c == stored)
}
