//! L2-L4 decode: link layer (Ethernet with 802.1Q/QinQ, Linux SLL/SLL2, NULL/loop, raw IP), IPv4/IPv6
//! and TCP/UDP. Nothing is copied: the result borrows the packet.
//!
//! IPv4 and TCP headers, every packet's first steps, are read here (`ipv4_layer`,
//! `tcp_segment`), by etherparse's rules: a property test and the `decode` fuzz target hold
//! them to etherparse's slices of the same bytes. IPv6 with its extension chain, IPv4 with an
//! authentication header, and UDP are sliced by etherparse.
//!
//! Truncated packets (snaplen) are decoded laxly: the transport payload is what was captured, and
//! the flow layer sees the missing tail as a gap. Checksums are verified and counted, never used to
//! drop data (capture hosts with checksum offload write bogus ones on their own traffic; live
//! capture says which of its packets those are, and their TCP/UDP checksum is not verified).

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
/// VLAN tags, and MPLS labels, walked at most (tshark walks any number; a real frame has a few).
const MAX_VLAN_TAGS: usize = 8;
const MPLS: [u16; 2] = [0x8847, 0x8848];
const MAX_MPLS_LABELS: usize = 8;

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

/// Most frames: Ethernet without a VLAN tag, IP right after it. What [`link_layer`] finds for
/// such a frame, without a call (the call and its result in memory cost 4% of steady-site's
/// dissection); `None` for anything else.
#[inline(always)]
fn plain_ethernet(linktype: LinkType, data: &[u8]) -> Option<(u16, u16, &[u8])> {
    if linktype != LinkType::ETHERNET {
        return None;
    }
    let (header, l3) = data.split_first_chunk::<14>()?;
    let ether_type = u16::from_be_bytes([header[12], header[13]]);
    (ether_type == ETHERTYPE_IPV4 || ether_type == ETHERTYPE_IPV6).then_some((0, ether_type, l3))
}

/// The IP bytes of a frame, past its link header (and VLAN tags); `None` when the frame is not
/// IP by its link layer, or the link layer is cut short or not one otwatch reads. For the
/// reader of N workers, which only needs the addresses.
pub(crate) fn ip_bytes(linktype: LinkType, data: &[u8]) -> Option<&[u8]> {
    match link_layer(linktype, data).ok()? {
        (_, ETHERTYPE_IPV4 | ETHERTYPE_IPV6, l3) => Some(l3),
        _ => None,
    }
}

/// What follows an ether type: its VLAN tags (802.1Q, QinQ; the first one's id is the VLAN)
/// and MPLS labels down to the bottom of the stack, whose payload's version nibble says IPv4 or
/// IPv6. `None` when a tag or label is cut short.
#[inline]
fn tagged(ether_type: u16, data: &[u8]) -> Option<(u16, u16, &[u8])> {
    // Most frames: IP right after the link header. (When the compiler stopped inlining the walk
    // below, looking the ether type up in the tag lists cost steady-site's dissection 4.8% more
    // instructions; with this test first, 1.3% fewer than when it was inlined.)
    if ether_type == ETHERTYPE_IPV4 || ether_type == ETHERTYPE_IPV6 {
        return Some((0, ether_type, data));
    }
    tags(ether_type, data)
}

/// [`tagged`] past the IP fast path.
fn tags(mut ether_type: u16, data: &[u8]) -> Option<(u16, u16, &[u8])> {
    let be16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]));
    let mut at = 0;
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
    if MPLS.contains(&ether_type) {
        ether_type = 0;
        for _ in 0..MAX_MPLS_LABELS {
            let label = data.get(at..at + 4)?;
            at += 4;
            // Bottom of stack: the payload follows.
            if label[2] & 1 == 1 {
                ether_type = match data.get(at)? >> 4 {
                    4 => ETHERTYPE_IPV4,
                    6 => ETHERTYPE_IPV6,
                    _ => 0,
                };
                break;
            }
        }
    }
    Some((vlan, ether_type, data.get(at..)?))
}

/// `None` when the link header is cut short.
fn link_header(linktype: LinkType, data: &[u8]) -> Option<(u16, u16, &[u8])> {
    let be16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]));
    match linktype {
        LinkType::ETHERNET => tagged(be16(data, 12)?, data.get(14..)?),
        // Linux cooked v1: 16-byte header, protocol (ether type) in the last two bytes.
        LinkType::LINUX_SLL => tagged(be16(data, 14)?, data.get(16..)?),
        // Linux cooked v2: 20-byte header, protocol (ether type) in the first two bytes.
        LinkType::LINUX_SLL2 => tagged(be16(data, 0)?, data.get(20..)?),
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
/// An IPv6 Fragment header found in an extension chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ipv6Fragment {
    id: u32,
    /// Offset of the fragment's data in the datagram's fragmentable part, in bytes.
    offset: usize,
    more: bool,
    /// The header the fragmentable part starts with (an extension header or the transport).
    next: u8,
    /// Bytes of the chain up to the end of the Fragment header: the fragment's data follows.
    data_at: usize,
}

/// The Fragment header of an extension chain that starts with header `first`, walking the
/// headers before it (RFC 8200 4.5).
fn ipv6_fragment_header(first: u8, chain: &[u8]) -> Option<Ipv6Fragment> {
    let mut next = first;
    let mut at = 0;
    loop {
        let rest = chain.get(at..)?;
        if next == IPV6_FRAGMENT {
            let header = rest.get(..8)?;
            let offset_flags = u16::from_be_bytes([header[2], header[3]]);
            return Some(Ipv6Fragment {
                id: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
                offset: usize::from(offset_flags >> 3) * 8,
                more: offset_flags & 1 == 1,
                next: header[0],
                data_at: at + 8,
            });
        }
        let len = ipv6_extension_len(next, rest)?;
        next = *rest.first()?;
        at += len;
    }
}

const IPV6_FRAGMENT: u8 = 44;

/// The length of the IPv6 extension header `kind` at the start of `bytes`, or `None` when
/// `kind` is no extension header (or the bytes are too few to say).
fn ipv6_extension_len(kind: u8, bytes: &[u8]) -> Option<usize> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const AUTH: u8 = 51;
    const DEST_OPTIONS: u8 = 60;
    let len = match kind {
        HOP_BY_HOP | ROUTING | DEST_OPTIONS => (usize::from(*bytes.get(1)?) + 1) * 8,
        IPV6_FRAGMENT => 8,
        AUTH => (usize::from(*bytes.get(1)?) + 2) * 4,
        _ => return None,
    };
    (bytes.len() >= len).then_some(len)
}

/// The transport header an IPv6 datagram's extension headers lead to, and its bytes: how a
/// reassembled datagram, whose fragmentable part may start with extension headers (those
/// after the Fragment header, such as Destination Options), is read.
fn ipv6_transport(mut next: u8, mut data: &[u8]) -> (u8, &[u8]) {
    while let Some(len) = ipv6_extension_len(next, data) {
        next = data[0];
        data = &data[len..];
    }
    (next, data)
}

/// What the IP layer of a packet gave: its addresses, the protocol it carries and those bytes,
/// whether they were captured whole, whether the IPv4 header checksum is right, and where a
/// fragment goes (identification, offset in bytes, more fragments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpLayer<'a> {
    src: IpAddr,
    dst: IpAddr,
    protocol: IpNumber,
    payload: &'a [u8],
    complete: bool,
    header_checksum_ok: bool,
    frag: Option<(u32, usize, bool)>,
}

/// IPv4 read here, by the same rules as etherparse's lax slice (`ip_layer_sliced`, which the
/// tests and the `decode` fuzz target hold this to): this is every packet's first step.
/// `None` for what it leaves to etherparse: not IPv4, or an authentication header after it.
#[inline(always)]
fn ipv4_layer(l3: &[u8]) -> Option<Option<IpLayer<'_>>> {
    let first = *l3.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let Some(header) = l3.get(..header_len).filter(|_| header_len >= 20) else {
        return Some(None);
    };
    let protocol = IpNumber(header[9]);
    if protocol == IpNumber::AUTHENTICATION_HEADER {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    // A total length shorter than the header (0 from segmentation offload) is ignored and the
    // captured bytes taken; a longer one than was captured leaves the payload incomplete.
    let (end, complete) = if total_len < header_len {
        (l3.len(), true)
    } else if l3.len() < total_len {
        (l3.len(), false)
    } else {
        (total_len, true)
    };
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    let (more_fragments, offset) = (flags_offset & 0x2000 != 0, flags_offset & 0x1fff);
    let word = |at: usize| [header[at], header[at + 1], header[at + 2], header[at + 3]];
    Some(Some(IpLayer {
        src: IpAddr::V4(word(12).into()),
        dst: IpAddr::V4(word(16).into()),
        protocol,
        payload: &l3[header_len..end],
        complete,
        header_checksum_ok: fold(sum_le(header)) == 0xffff,
        frag: (more_fragments || offset != 0).then(|| {
            (
                u32::from(u16::from_be_bytes([header[4], header[5]])),
                usize::from(offset) * 8,
                more_fragments,
            )
        }),
    }))
}

/// An IPv6 fragment, read here: its data is what follows its Fragment header, whatever that
/// starts with. etherparse reads on past that header (Destination Options that belong to the
/// datagram's fragmentable part, or a later fragment's data taken for a header), which loses
/// the fragment or its bytes. `None` when `l3` is no IPv6 fragment.
fn ipv6_fragment_layer(l3: &[u8]) -> Option<IpLayer<'_>> {
    const FIXED: usize = 40;
    let header = l3.get(..FIXED)?;
    if header[0] >> 4 != 6 {
        return None;
    }
    let f = ipv6_fragment_header(header[6], &l3[FIXED..])?;
    let address = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&header[at..at + 16]);
        IpAddr::from(a)
    };
    let end = FIXED + usize::from(u16::from_be_bytes([header[4], header[5]]));
    let start = FIXED + f.data_at;
    Some(IpLayer {
        src: address(8),
        dst: address(24),
        protocol: IpNumber(f.next),
        payload: l3.get(start..end.min(l3.len())).unwrap_or_default(),
        complete: end <= l3.len(),
        header_checksum_ok: true,
        frag: Some((f.id, f.offset, f.more)),
    })
}

/// The IP layer by etherparse's lax slice: IPv6 with its extension chain, IPv4 with an
/// authentication header, and the reference `ipv4_layer` is held to.
fn ip_layer_sliced(l3: &[u8]) -> Option<IpLayer<'_>> {
    if let Some(fragment) = ipv6_fragment_layer(l3) {
        return Some(fragment);
    }
    let (ip, _) = LaxIpSlice::from_slice(l3).ok()?;
    let (src, dst, payload, header_checksum_ok, frag) = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
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
                ipv4_header_checksum_ok(h.slice()),
                frag,
            )
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
                true,
                None,
            )
        }
    };
    Some(IpLayer {
        src,
        dst,
        protocol: payload.ip_number,
        payload: payload.payload,
        complete: !payload.incomplete,
        header_checksum_ok,
        frag,
    })
}

/// Decode one link-layer frame. The link header is sliced here (a few fixed offsets), IPv4 and
/// TCP too (`ipv4_layer`, `tcp_segment`); IPv6 and UDP by etherparse's slices. Nothing is
/// copied: the result borrows the packet.
/// `verify`: whether the TCP/UDP checksum can be verified (not on a packet the capture host
/// sent with checksum offload: [`crate::capture::Packet::csum_not_ready`]).
pub fn decode<'a>(
    linktype: LinkType,
    data: &'a [u8],
    verify: bool,
    stats: &mut Stats,
) -> Decode<'a> {
    let (vlan, ether_type, l3) = match plain_ethernet(linktype, data) {
        Some(l) => l,
        None => match link_layer(linktype, data) {
            Ok(l) => l,
            Err(LinkIssue::Unsupported) => {
                stats.unsupported_linktype += 1;
                return Decode::Ignored;
            }
            Err(LinkIssue::Short) => {
                stats.decode_errors.link += 1;
                return Decode::Error;
            }
        },
    };
    if ether_type != ETHERTYPE_IPV4 && ether_type != ETHERTYPE_IPV6 {
        stats.non_ip += 1;
        return Decode::Ignored;
    }
    // Each way of reading the IP layer goes on by itself (`after_ip` is inlined into both):
    // merged into one value, the layer went through memory in pieces and was read back whole,
    // a store-forwarding stall on every packet.
    let sliced = match ipv4_layer(l3) {
        Some(Some(ip)) => return after_ip(vlan, ip, verify, stats),
        Some(None) => None,
        None => ip_layer_sliced(l3),
    };
    match sliced {
        Some(ip) => after_ip(vlan, ip, verify, stats),
        None => {
            stats.decode_errors.ip += 1;
            Decode::Error
        }
    }
}

/// What follows the IP layer: a fragment, or the transport layer.
#[inline(always)]
fn after_ip<'a>(vlan: u16, ip: IpLayer<'a>, verify: bool, stats: &mut Stats) -> Decode<'a> {
    if !ip.header_checksum_ok {
        stats.checksum_errors.ipv4 += 1;
    }
    if !ip.complete {
        stats.truncated_packets += 1;
    }
    if let Some((id, offset, more_fragments)) = ip.frag {
        stats.ip_fragments += 1;
        if !ip.complete {
            // Cut by the snaplen: its datagram can never be whole (the rest of it times out,
            // or is dropped at the end, counted), and a last fragment's length would lie.
            return Decode::Ignored;
        }
        return Decode::Fragment(Fragment {
            vlan,
            src: ip.src,
            dst: ip.dst,
            id,
            protocol: ip.protocol,
            offset,
            more_fragments,
            payload: ip.payload,
        });
    }
    transport(
        vlan,
        ip.src,
        ip.dst,
        ip.protocol,
        ip.payload,
        ip.complete,
        !verify,
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
    // An IPv6 datagram's fragmentable part may start with extension headers.
    let (protocol, payload) = match src {
        IpAddr::V6(_) => {
            let (next, data) = ipv6_transport(protocol.0, payload);
            (IpNumber(next), data)
        }
        IpAddr::V4(_) => (protocol, payload),
    };
    transport(vlan, src, dst, protocol, payload, true, false, stats)
}

/// TCP or UDP. `complete`: the IP payload was captured whole, so its checksum can be verified;
/// `offloaded`: the capture host's own packet, whose checksum its NIC fills in: not verified.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transport<'a>(
    vlan: u16,
    src: IpAddr,
    dst: IpAddr,
    protocol: IpNumber,
    payload: &'a [u8],
    complete: bool,
    offloaded: bool,
    stats: &mut Stats,
) -> Decode<'a> {
    if offloaded && matches!(protocol, IpNumber::TCP | IpNumber::UDP) {
        stats.checksum_errors.offloaded += 1;
    }
    let verify = complete && !offloaded;
    let transport = match protocol {
        IpNumber::TCP => {
            let Some(tcp) = tcp_segment(payload) else {
                stats.decode_errors.tcp += 1;
                return Decode::Error;
            };
            if verify && !transport_checksum_ok(payload, 6, src, dst) {
                stats.checksum_errors.tcp += 1;
            }
            tcp
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
            if verify && !udp_checksum_ok(&udp, src, dst) {
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

/// The one's-complement sum (RFC 1071) of `data` read as little-endian 64-bit words, into a
/// 128-bit accumulator that loses no carry (folded by [`fold`]). An odd last byte is padded with
/// zero, as the RFC says.
///
/// Little-endian: the sum of 16-bit words is independent of byte order except that it comes out
/// byte-swapped (RFC 1071 section 2(B)), and a checksum is right when the sum is all ones, which
/// reads the same both ways. So the bytes are summed as they lie in memory, with no swap per word.
#[inline(always)]
fn sum_le(data: &[u8]) -> u128 {
    let (words, rest) = data.as_chunks::<8>();
    let mut acc: u128 = 0;
    for w in words {
        acc += u128::from(u64::from_le_bytes(*w));
    }
    // The last 0-7 bytes, in place: a 4-, a 2- and a 1-byte piece.
    let (mut tail, mut at, mut shift) = (0u64, 0, 0);
    if rest.len() & 4 != 0 {
        tail = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
        (at, shift) = (4, 32);
    }
    if rest.len() & 2 != 0 {
        tail |= u64::from(u16::from_le_bytes([rest[at], rest[at + 1]])) << shift;
        (at, shift) = (at + 2, shift + 16);
    }
    if rest.len() & 1 != 0 {
        tail |= u64::from(rest[at]) << shift;
    }
    acc + u128::from(tail)
}

/// Folds a sum to 16 bits (end-around carry), in a fixed number of steps.
#[inline(always)]
fn fold(acc: u128) -> u16 {
    let (s, carry) = (acc as u64).overflowing_add((acc >> 64) as u64);
    // `s` is at most 2^64 - 2 after a carry out, so adding the carry back cannot overflow.
    let s = s + u64::from(carry);
    let s = (s & 0xffff_ffff) + (s >> 32);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Whether a TCP or UDP segment (`segment`: header and payload, checksum field included) sums to
/// all ones with its pseudo-header, i.e. its checksum is right. The pseudo-header's fields are
/// added as little-endian words of where they would lie ([`sum_le`]).
#[inline(always)]
fn transport_checksum_ok(segment: &[u8], protocol: u8, src: IpAddr, dst: IpAddr) -> bool {
    let len = segment.len() as u32;
    let pseudo = match (src, dst) {
        // Source, destination, then a zero byte, the protocol and the 16-bit length. The length
        // is added as a 32-bit word: the same as 16 bits below 64 KiB, and beyond (a captured
        // offload segment whose IP total length is 0) the sum the 16-bit field cannot hold.
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            u128::from(u32::from_le_bytes(s.octets()))
                + u128::from(u32::from_le_bytes(d.octets()))
                + (u128::from(protocol) << 8)
                + u128::from(len.swap_bytes())
        }
        // Source, destination, the 32-bit length, three zero bytes and the next header.
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let words = |a: [u8; 16]| {
                let w = u128::from_le_bytes(a);
                u128::from(w as u64) + (w >> 64)
            };
            words(s.octets())
                + words(d.octets())
                + u128::from(len.swap_bytes())
                + (u128::from(protocol) << 24)
        }
        _ => return true,
    };
    fold(pseudo + sum_le(segment)) == 0xffff
}

#[cfg(test)]
fn tcp_checksum_ok(tcp: &etherparse::TcpSlice<'_>, src: IpAddr, dst: IpAddr) -> bool {
    transport_checksum_ok(tcp.slice(), 6, src, dst)
}

/// A TCP segment's header fields and payload, read by the rules of etherparse's
/// `TcpSlice::from_slice` (which the tests hold this to): at least 20 bytes, a data offset of at
/// least 5 words, and the header's options all there.
#[inline(always)]
fn tcp_segment(segment: &[u8]) -> Option<Transport<'_>> {
    let fixed = segment.get(..20)?;
    let header_len = usize::from(fixed[12] >> 4) * 4;
    if header_len < 20 {
        return None;
    }
    let payload = segment.get(header_len..)?;
    let be16 = |at: usize| u16::from_be_bytes([fixed[at], fixed[at + 1]]);
    let be32 =
        |at: usize| u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    let flags = fixed[13];
    Some(Transport::Tcp {
        src_port: be16(0),
        dst_port: be16(2),
        seq: be32(4),
        ack: be32(8),
        flags: TcpFlags {
            syn: flags & 0x02 != 0,
            ack: flags & 0x10 != 0,
            fin: flags & 0x01 != 0,
            rst: flags & 0x04 != 0,
        },
        payload,
    })
}

fn udp_checksum_ok(udp: &etherparse::UdpSlice<'_>, src: IpAddr, dst: IpAddr) -> bool {
    // Zero means "no checksum" over IPv4.
    if udp.checksum() == 0 && src.is_ipv4() {
        return true;
    }
    transport_checksum_ok(udp.slice(), 17, src, dst)
}

/// Panics unless `bytes` read as an IP packet give the same by `ipv4_layer` as by etherparse's
/// lax slice, and read as a TCP segment the same by `tcp_segment` as by etherparse's
/// `TcpSlice` (`otwatch::fuzzing::decode`, under libFuzzer and in `tests/fuzz.rs`).
#[doc(hidden)]
pub fn assert_agrees_with_etherparse(bytes: &[u8]) {
    match ipv4_layer(bytes) {
        Some(mine) => assert_eq!(mine, ip_layer_sliced(bytes), "IPv4 {bytes:02x?}"),
        // Left to etherparse: not IPv4, or IPv4 with an authentication header.
        None => assert!(
            bytes.first().is_none_or(|b| b >> 4 != 4) || bytes.get(9) == Some(&51),
            "{bytes:02x?}"
        ),
    }
    let theirs = etherparse::TcpSlice::from_slice(bytes)
        .ok()
        .map(|tcp| Transport::Tcp {
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
        });
    assert_eq!(tcp_segment(bytes), theirs, "TCP {bytes:02x?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VLAN tags (up to eight, the first one's id the VLAN) and MPLS labels down to the bottom
    /// of the stack, after Ethernet and after Linux cooked headers, as tshark reads them. Before,
    /// more than three tags, tags in SLL/SLL2 and MPLS were counted as non-IP.
    #[test]
    fn vlan_tags_and_mpls_labels_are_walked_to_ip() {
        let ip = [
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let tags = |n: usize, inner: u16| {
            let mut v = Vec::new();
            for i in 0..n {
                v.extend_from_slice(&(100 + i as u16).to_be_bytes());
                let next = if i + 1 == n { inner } else { 0x8100 };
                v.extend_from_slice(&next.to_be_bytes());
            }
            v
        };
        // Ethernet, 5 tags.
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00]);
        eth.extend(tags(5, 0x0800));
        eth.extend_from_slice(&ip);
        assert_eq!(
            link_header(LinkType::ETHERNET, &eth),
            Some((100, 0x0800, &ip[..]))
        );
        // Ethernet, MPLS: two labels, the second the bottom of the stack.
        let mut mpls = vec![0u8; 12];
        mpls.extend_from_slice(&[0x88, 0x47, 0, 1, 0, 64, 0, 2, 1, 64]);
        mpls.extend_from_slice(&ip);
        assert_eq!(
            link_header(LinkType::ETHERNET, &mpls),
            Some((0, 0x0800, &ip[..]))
        );
        // SLL with a tag; SLL2 with one.
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x81, 0x00]);
        sll.extend(tags(1, 0x0800));
        sll.extend_from_slice(&ip);
        assert_eq!(
            link_header(LinkType::LINUX_SLL, &sll),
            Some((100, 0x0800, &ip[..]))
        );
        let mut sll2 = vec![0x81, 0x00];
        sll2.extend(vec![0u8; 18]);
        sll2.extend(tags(1, 0x86dd));
        sll2.extend_from_slice(&ip);
        assert_eq!(
            link_header(LinkType::LINUX_SLL2, &sll2),
            Some((100, 0x86dd, &ip[..]))
        );
        // A label stack cut short is a link error, not a read past the end.
        assert_eq!(link_header(LinkType::ETHERNET, &mpls[..16]), None);
    }

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
        let _ = decode(LinkType::ETHERNET, &frame, true, &mut stats);
        let fragment = |first, chain: &[u8]| {
            ipv6_fragment_header(first, chain).map(|f| (f.id, f.offset, f.more, f.next, f.data_at))
        };
        assert_eq!(
            fragment(44, &[0, 0, 0, 9, 0, 0, 0, 7]),
            Some((7, 8, true, 0, 8))
        );
        assert_eq!(fragment(0, &[44, 0xff]), None);
        assert_eq!(fragment(0, &[]), None);
        // Hop-by-hop (8 bytes), then the fragment header.
        let chain = [44, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 16, 0, 0, 1, 0];
        assert_eq!(fragment(0, &chain), Some((256, 16, false, 17, 16)));
        // What the fragmentable part starts with is walked after reassembly: Destination
        // Options (8 bytes), then TCP.
        let part = [6, 0, 1, 4, 0, 0, 0, 0, 0xaa];
        assert_eq!(ipv6_transport(60, &part), (6, &part[8..]));
        assert_eq!(ipv6_transport(6, &part), (6, &part[..]));
        // A header that claims more than is there is left as it is.
        assert_eq!(ipv6_transport(60, &part[..4]), (60, &part[..4]));
    }

    /// The little-endian 64-bit sum, folded, is the byte swap of the plain big-endian 16-bit
    /// one's-complement sum (RFC 1071), for every length up to 600 and for the extremes: all
    /// zeros, all ones (the most carries), and random bytes.
    #[test]
    fn the_wide_sum_is_the_plain_sum_byte_swapped() {
        fn plain(data: &[u8]) -> u16 {
            let mut acc: u64 = 0;
            for pair in data.chunks(2) {
                acc += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            }
            while acc >> 16 != 0 {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            acc as u16
        }
        let mut seed: u32 = 0x9e37_79b9;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        };
        for len in 0..600usize {
            let random: Vec<u8> = (0..len).map(|_| next()).collect();
            for data in [vec![0u8; len], vec![0xffu8; len], random] {
                assert_eq!(
                    fold(sum_le(&data)),
                    plain(&data).swap_bytes(),
                    "{data:02x?}"
                );
            }
        }
        assert_eq!(fold(u128::MAX), 0xffff);
        // A segment longer than a 16-bit length holds (a captured offload segment): the length
        // counts in full, as a 32-bit word would.
        let (src, dst): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut segment: Vec<u8> = (0..70_001u32).map(|i| (i * 7 + 3) as u8).collect();
        segment[16..18].fill(0);
        let mut acc: u64 = plain(&[10, 0, 0, 1, 10, 0, 0, 2]).into();
        acc += 6 + segment.len() as u64 + u64::from(plain(&segment));
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        segment[16..18].copy_from_slice(&(!(acc as u16)).to_be_bytes());
        assert!(transport_checksum_ok(&segment, 6, src, dst));
        segment[16] ^= 1;
        assert!(!transport_checksum_ok(&segment, 6, src, dst));
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
        for len in (0..80usize).chain([255, 256, 1459, 1460, 1461]) {
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
            // UDP over IPv6, right and with one byte wrong.
            let (s6, d6) = (
                [
                    0xfe,
                    0x80,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    next() as u8,
                ],
                [next() as u8; 16],
            );
            let mut frame = Vec::new();
            PacketBuilder::ipv6(s6, d6, 64)
                .udp(20000, 40000)
                .write(&mut frame, &payload)
                .expect("build");
            let (s, d) = (IpAddr::from(s6), IpAddr::from(d6));
            let segment = &frame[40..];
            assert!(transport_checksum_ok(segment, 17, s, d), "udp6 len {len}");
            let mut bad = segment.to_vec();
            let at = next() as usize % bad.len();
            bad[at] ^= 0x01;
            assert!(
                !transport_checksum_ok(&bad, 17, s, d),
                "udp6 len {len}, byte {at}"
            );
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
