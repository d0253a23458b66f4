//! L2-L4 decode: link layer (Ethernet with 802.1Q/QinQ, Linux SLL/SLL2, NULL/loop, raw IP), IPv4/IPv6
//! and TCP/UDP, with `etherparse` doing the slicing. Nothing is copied: the result borrows the packet.
//!
//! Truncated packets (snaplen) are decoded laxly: the transport payload is what was captured, and
//! the flow layer sees the missing tail as a gap. Checksums are verified and counted, never used to
//! drop data (capture hosts with checksum offload write bogus ones on their own traffic).

pub mod defrag;

use std::net::IpAddr;

use etherparse::{IpNumber, LaxIpSlice};

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

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
/// 802.1Q, 802.1ad (QinQ outer tag) and the pre-standard QinQ tag.
const VLAN_TAGS: [u16; 3] = [0x8100, 0x88A8, 0x9100];
const MAX_VLAN_TAGS: usize = 3;

fn is_af_inet6(af: u32) -> bool {
    // Linux 10, the BSDs 24, FreeBSD 28, macOS 30.
    matches!(af, 10 | 24 | 28 | 30)
}

/// Why a frame's link layer could not be read.
enum LinkIssue {
    Unsupported,
    Short,
}

/// The network-layer bytes of a frame: (outer VLAN id, ether type, bytes after the link header).
fn link_layer(linktype: LinkType, data: &[u8]) -> Result<(u16, u16, &[u8]), LinkIssue> {
    match linktype {
        LinkType::ETHERNET
        | LinkType::LINUX_SLL
        | LinkType::LINUX_SLL2
        | LinkType::NULL
        | LinkType::LOOP
        | LinkType::RAW
        | LinkType::RAW_BSD
        | LinkType::RAW_BSD_ALT
        | LinkType::IPV4
        | LinkType::IPV6 => link_header(linktype, data).ok_or(LinkIssue::Short),
        _ => Err(LinkIssue::Unsupported),
    }
}

/// `None` when the link header is cut short.
fn link_header(linktype: LinkType, data: &[u8]) -> Option<(u16, u16, &[u8])> {
    let be16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]));
    match linktype {
        LinkType::ETHERNET => {
            let mut ether_type = be16(data, 12)?;
            let mut at = 14;
            let mut vlan = 0;
            for i in 0..MAX_VLAN_TAGS {
                if !VLAN_TAGS.contains(&ether_type) {
                    break;
                }
                let tci = be16(data, at)?;
                if i == 0 {
                    vlan = tci & 0x0fff;
                }
                ether_type = be16(data, at + 2)?;
                at += 4;
            }
            Some((vlan, ether_type, data.get(at..)?))
        }
        // Linux cooked v1: 16-byte header, protocol (ether type) in the last two bytes.
        LinkType::LINUX_SLL => Some((0, be16(data, 14)?, data.get(16..)?)),
        // Linux cooked v2: 20-byte header, protocol (ether type) in the first two bytes.
        LinkType::LINUX_SLL2 => Some((0, be16(data, 0)?, data.get(20..)?)),
        LinkType::NULL | LinkType::LOOP => {
            let hdr = data.get(..4)?;
            let raw = [hdr[0], hdr[1], hdr[2], hdr[3]];
            // NULL stores the family in the capturing host's byte order, LOOP in network order.
            let af = if linktype == LinkType::LOOP {
                u32::from_be_bytes(raw)
            } else if u32::from_le_bytes(raw) < 0x10000 {
                u32::from_le_bytes(raw)
            } else {
                u32::from_be_bytes(raw)
            };
            let ether_type = match af {
                AF_INET => ETHERTYPE_IPV4,
                af if is_af_inet6(af) => ETHERTYPE_IPV6,
                _ => 0,
            };
            Some((0, ether_type, data.get(4..)?))
        }
        // Raw IP: the version nibble says which.
        _ => {
            let ether_type = match data.first()? >> 4 {
                4 => ETHERTYPE_IPV4,
                6 => ETHERTYPE_IPV6,
                _ => 0,
            };
            Some((0, ether_type, data))
        }
    }
}

/// The fragment header in an IPv6 extension chain: (identification, offset in bytes, more
/// fragments). Walked here with every length checked against the bytes there are, rather than
/// with etherparse's `Ipv6ExtensionSliceIter`: after a lax parse that stopped inside the chain,
/// that iterator reads past the end of the slice it was given (found by fuzzing, `capture`).
fn ipv6_fragment(first: u8, mut chain: &[u8]) -> Option<(u32, usize, bool)> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const AUTH: u8 = 51;
    const DEST_OPTIONS: u8 = 60;
    let mut next = first;
    loop {
        let len = match next {
            HOP_BY_HOP | ROUTING | DEST_OPTIONS => (usize::from(*chain.get(1)?) + 1) * 8,
            FRAGMENT => 8,
            AUTH => (usize::from(*chain.get(1)?) + 2) * 4,
            _ => return None,
        };
        let header = chain.get(..len)?;
        if next == FRAGMENT {
            let offset_flags = u16::from_be_bytes([header[2], header[3]]);
            let id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            return Some((
                id,
                usize::from(offset_flags >> 3) * 8,
                offset_flags & 1 == 1,
            ));
        }
        next = header[0];
        chain = &chain[len..];
    }
}

/// Decode one link-layer frame. The link header is sliced here (a few fixed offsets); IP and the
/// transport header by etherparse's slices, which borrow the packet.
pub fn decode<'a>(linktype: LinkType, data: &'a [u8], stats: &mut Stats) -> Decode<'a> {
    let (vlan, ether_type, l3) = match link_layer(linktype, data) {
        Ok(l) => l,
        Err(LinkIssue::Unsupported) => {
            stats.unsupported_linktype += 1;
            return Decode::Ignored;
        }
        Err(LinkIssue::Short) => {
            stats.decode_errors.link += 1;
            return Decode::Error;
        }
    };
    if ether_type != ETHERTYPE_IPV4 && ether_type != ETHERTYPE_IPV6 {
        stats.non_ip += 1;
        return Decode::Ignored;
    }
    let ip = match LaxIpSlice::from_slice(l3) {
        Ok((ip, _)) => ip,
        Err(_) => {
            stats.decode_errors.ip += 1;
            return Decode::Error;
        }
    };
    let (src, dst, payload, frag) = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            if !ipv4_header_checksum_ok(h.slice()) {
                stats.checksum_errors.ipv4 += 1;
            }
            let frag = v4.is_payload_fragmented().then(|| {
                (
                    u32::from(h.identification()),
                    usize::from(h.fragments_offset().value()) * 8,
                    h.more_fragments(),
                )
            });
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
                frag,
            )
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            let frag = if v6.is_payload_fragmented() {
                ipv6_fragment(h.next_header().0, v6.extensions().slice())
            } else {
                None
            };
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
                frag,
            )
        }
    };
    let complete = !payload.incomplete;
    if !complete {
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
    transport(
        vlan,
        src,
        dst,
        payload.ip_number,
        payload.payload,
        complete,
        stats,
    )
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
    transport(vlan, src, dst, protocol, payload, true, stats)
}

/// TCP or UDP. `complete`: the IP payload was captured whole, so its checksum can be verified.
fn transport<'a>(
    vlan: u16,
    src: IpAddr,
    dst: IpAddr,
    protocol: IpNumber,
    payload: &'a [u8],
    complete: bool,
    stats: &mut Stats,
) -> Decode<'a> {
    let transport = match protocol {
        IpNumber::TCP => {
            let Ok(tcp) = etherparse::TcpSlice::from_slice(payload) else {
                stats.decode_errors.tcp += 1;
                return Decode::Error;
            };
            if complete && !tcp_checksum_ok(&tcp, src, dst) {
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
        IpNumber::UDP => {
            // Lax: a datagram cut by the snaplen keeps what was captured.
            let parsed = if complete {
                etherparse::UdpSlice::from_slice(payload)
            } else {
                etherparse::UdpSlice::from_slice_lax(payload)
            };
            let Ok(udp) = parsed else {
                stats.decode_errors.udp += 1;
                return Decode::Error;
            };
            if complete && !udp_checksum_ok(&udp, src, dst) {
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

/// One's-complement sum (RFC 1071) of `data` added to `acc`: 32-bit big-endian words into a
/// 64-bit accumulator (folded once at the end), which gives the same folded sum as 16-bit words
/// at a quarter of the additions. An odd last byte is padded with zero.
fn ones_sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes(w.try_into().unwrap_or([0; 4])));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes(p.try_into().unwrap_or([0; 2])));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (end-around carry).
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Whether a TCP or UDP segment (`segment`: header and payload, checksum field included) sums to
/// all ones with its pseudo-header, i.e. its checksum is right.
fn transport_checksum_ok(segment: &[u8], protocol: u8, src: IpAddr, dst: IpAddr) -> bool {
    let len = segment.len() as u64;
    let acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let acc = ones_sum(0, &s.octets());
            ones_sum(acc, &d.octets()) + u64::from(protocol) + len
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let acc = ones_sum(0, &s.octets());
            // The length is 32 bits here: its two halves are words of the sum.
            ones_sum(acc, &d.octets()) + u64::from(protocol) + (len >> 16) + (len & 0xffff)
        }
        _ => return true,
    };
    fold(ones_sum(acc, segment)) == 0xffff
}

fn tcp_checksum_ok(tcp: &etherparse::TcpSlice<'_>, src: IpAddr, dst: IpAddr) -> bool {
    transport_checksum_ok(tcp.slice(), 6, src, dst)
}

fn udp_checksum_ok(udp: &etherparse::UdpSlice<'_>, src: IpAddr, dst: IpAddr) -> bool {
    // Zero means "no checksum" over IPv4.
    if udp.checksum() == 0 && src.is_ipv4() {
        return true;
    }
    transport_checksum_ok(udp.slice(), 17, src, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv6 fragment header followed by a hop-by-hop header that is not there: etherparse's
    /// lax parse stops inside the chain, and walking it must stay within the bytes.
    #[test]
    fn an_ipv6_chain_cut_after_the_fragment_header_is_walked_safely() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x86, 0xdd]);
        // IPv6: payload length 10, next header 44 (fragment), hop limit 64.
        frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 10, 44, 64]);
        frame.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        // Fragment header: next 0 (hop-by-hop, only valid first), offset 8, more, id 7.
        frame.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 7]);
        // Two bytes of a hop-by-hop header that claims 2048.
        frame.extend_from_slice(&[6, 0xff]);
        let mut stats = Stats::default();
        let _ = decode(LinkType::ETHERNET, &frame, &mut stats);
        assert_eq!(
            ipv6_fragment(44, &[0, 0, 0, 9, 0, 0, 0, 7]),
            Some((7, 8, true))
        );
        assert_eq!(ipv6_fragment(0, &[44, 0xff]), None);
        assert_eq!(ipv6_fragment(0, &[]), None);
        // Hop-by-hop (8 bytes), then the fragment header.
        let chain = [44, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 16, 0, 0, 1, 0];
        assert_eq!(ipv6_fragment(0, &chain), Some((256, 16, false)));
    }

    /// The word-wise checksum agrees with etherparse's 16-bit one on segments of every length
    /// up to 64 and random contents, for TCP and UDP over IPv4 and IPv6, right and wrong.
    #[test]
    fn checksums_agree_with_etherparse() {
        use etherparse::PacketBuilder;
        let mut seed: u32 = 0x1234_5678;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in 0..64usize {
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let (a4, b4) = ([10, 0, 0, next() as u8], [192, 168, 1, next() as u8]);
            let (a6, b6) = ([next() as u8; 16], [next() as u8; 16]);
            let builders = [
                PacketBuilder::ipv4(a4, b4, 64).tcp(502, 40000, next(), 1024),
                PacketBuilder::ipv6(a6, b6, 64).tcp(40000, 502, next(), 1024),
            ];
            for b in builders {
                let mut frame = Vec::new();
                b.write(&mut frame, &payload).expect("build");
                let sliced = etherparse::SlicedPacket::from_ip(&frame).expect("slice");
                let (src, dst): (IpAddr, IpAddr) = match &sliced.net {
                    Some(etherparse::NetSlice::Ipv4(h)) => (
                        h.header().source_addr().into(),
                        h.header().destination_addr().into(),
                    ),
                    Some(etherparse::NetSlice::Ipv6(h)) => (
                        h.header().source_addr().into(),
                        h.header().destination_addr().into(),
                    ),
                    _ => panic!("ip"),
                };
                let Some(etherparse::TransportSlice::Tcp(tcp)) = &sliced.transport else {
                    panic!("tcp")
                };
                assert!(tcp_checksum_ok(tcp, src, dst), "len {len}");
                let mut bad = frame.clone();
                // A payload byte, or without payload the checksum field itself.
                let at = if len > 0 {
                    frame.len() - 1 - (next() as usize % len)
                } else {
                    frame.len() - 20 + 16
                };
                bad[at] ^= 0x40;
                let sliced = etherparse::SlicedPacket::from_ip(&bad).expect("slice");
                let Some(etherparse::TransportSlice::Tcp(tcp)) = &sliced.transport else {
                    panic!("tcp")
                };
                let theirs = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        tcp.calc_checksum_ipv4(s.octets(), d.octets())
                    }
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        tcp.calc_checksum_ipv6(s.octets(), d.octets())
                    }
                    _ => unreachable!(),
                }
                .expect("checksum");
                assert_eq!(
                    tcp_checksum_ok(tcp, src, dst),
                    theirs == tcp.checksum(),
                    "len {len}"
                );
            }
            let mut frame = Vec::new();
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(20000, 20000)
                .write(&mut frame, &payload)
                .expect("build");
            let sliced = etherparse::SlicedPacket::from_ip(&frame).expect("slice");
            let Some(etherparse::TransportSlice::Udp(udp)) = &sliced.transport else {
                panic!("udp")
            };
            let (s, d) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
            assert!(udp_checksum_ok(udp, s, d), "udp len {len}");
        }
    }

    /// The input libFuzzer found (`capture` target): it must decode without reading past
    /// the packet.
    #[test]
    fn the_fuzzer_found_ipv6_chain_decodes() {
        let data = include_bytes!("../../fuzz/regressions/capture-ipv6-ext-chain.bin");
        crate::fuzzing::capture(data);
    }
}
