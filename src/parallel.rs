//! `replay --workers N`: one reader thread hands packets to N workers, each owning its flows.
//!
//! The reader finds the worker that owns each packet's host pair ([`PairOwners`]: both
//! directions, and every fragment of a datagram, go to the same worker; so do all flows between
//! two hosts) and pushes
//! a small descriptor (offset and length into the file's bytes, timestamp, frame) into that
//! worker's lock-free single-producer single-consumer queue (`rtrb`). Workers read the packet
//! bytes in place from the shared memory map: nothing is copied. In replay the reader waits when a
//! queue is full (lossless), merging the workers' output while it waits; what the workers hand
//! back (observations for detection and metrics, events) is put back in capture order by
//! [`crate::shards`], so detection with N workers sees what it sees with one.
//!
//! The reading loop is [`crate::run::packet_loop`], as for one worker; this file gives it its feed
//! and tells a worker how to find a packet's bytes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::capture::{CaptureError, CaptureFile, LinkType, Packet};
use crate::event::EventSink;
use crate::output::evidence::EvidenceRing;
use crate::replay::{source_names, Desc, FileFeed, ReplayReport, Slot};
use crate::run::run_sharded;
use crate::shards::Stage;

/// Descriptors a worker's queue holds.
pub const QUEUE_CAPACITY: usize = 8192;

/// The packet's host pair: its two IP addresses as numbers (IPv4 in the low 32 bits) in order,
/// and whether they are IPv6. `None` when it is not IP by its link layer (an IEC 61850 or
/// PROFINET frame whose payload starts like an IP header must not take a place in
/// [`PairOwners`]), or cut short.
fn host_pair(linktype: LinkType, data: &[u8]) -> Option<HostPair> {
    // The common frame first, in a few steps: Ethernet without a VLAN tag, IPv4 (the type
    // 0x0800 and the header's version). What the general way below finds for it, the same.
    if linktype == LinkType::ETHERNET {
        if let Some(h) = data.get(12..34) {
            if h[..2] == [0x08, 0x00] && h[2] >> 4 == 4 {
                let a = u128::from(u32::from_be_bytes([h[14], h[15], h[16], h[17]]));
                let b = u128::from(u32::from_be_bytes([h[18], h[19], h[20], h[21]]));
                return Some(if a <= b { (a, b, false) } else { (b, a, false) });
            }
        }
    }
    host_pair_of_any(linktype, data)
}

/// [`host_pair`] for any link layer and IP version.
fn host_pair_of_any(linktype: LinkType, data: &[u8]) -> Option<HostPair> {
    let ip = crate::decode::ip_bytes(linktype, data)?;
    let be32 = |b: &[u8]| u128::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let be128 = |b: &[u8]| {
        let mut w = [0u8; 16];
        w.copy_from_slice(&b[..16]);
        u128::from_be_bytes(w)
    };
    // The IP header's own version decides, as decode's does.
    let (a, b, v6) = match ip.first()? >> 4 {
        4 => {
            let a = ip.get(12..20)?;
            (be32(a), be32(&a[4..]), false)
        }
        6 => {
            let a = ip.get(8..40)?;
            (be128(a), be128(&a[16..]), true)
        }
        _ => return None,
    };
    Some(if a <= b { (a, b, v6) } else { (b, a, v6) })
}

/// Host pairs given a worker, at most; a pair first seen beyond it goes by hash.
pub const MAX_OWNED_PAIRS: usize = 65_536;

/// Which worker owns each host pair. A pair is given one at its first packet and keeps it: both
/// directions and every fragment go to it, and so do all flows between the two hosts. A pair
/// whose first packet has a dissected protocol's server port on one side (and not on both) goes
/// to the worker that owns that server, when one does: all of a server's clients are one
/// worker's, so what detection keeps per server (its value envelopes, their memo) is in one
/// place. Otherwise it goes to the worker handed the fewest packets so far (and, for a server,
/// makes it the server's). A plant has few host pairs of very different weight (a
/// SCADA master polling a handful of PLCs), and a hash put steady-site's two heavy pairs on one
/// worker as often as not; first sight to the least loaded spreads them. The table is bounded
/// ([`MAX_OWNED_PAIRS`]): a flood of new pairs goes by a symmetric hash instead, so a pair's
/// worker never changes. Not IP: worker 0.
///
/// A pair whose first packet names no server goes with an end that is a known server, else to
/// the least loaded; should an end turn out a server later, its clients follow that pair: when
/// another pair names it (`unnamed`), or when the pair's own first TCP or UDP packet after a
/// ping does (a pair first seen without TCP or UDP is watched until then: [`WATCHED`]).
pub(crate) struct PairOwners {
    owners: HashMap<HostPair, u16, foldhash::fast::RandomState>,
    /// The worker of each server (its address, and whether IPv6) that a pair was given for,
    /// bounded as `owners`.
    servers: HashMap<(u128, bool), u16, foldhash::fast::RandomState>,
    /// The worker of each address of a pair whose first packet named no server (a ping, a
    /// later fragment, server ports on both sides), bounded as `owners`: should the address
    /// turn out a server, its clients go where that pair went.
    unnamed: HashMap<(u128, bool), u16, foldhash::fast::RandomState>,
    /// The owners of recent pairs, direct-mapped by [`pair_hash`]: a hit costs a compare, where
    /// the map's lookup cost the reader 70 instructions a packet (bench-ics).
    recent: Vec<Option<(HostPair, u16)>>,
}

/// The mark, on a pair's worker in `owners` and `recent`, of a pair first seen with no TCP or
/// UDP header (a ping, a later fragment): its next packets are looked at until one has, and
/// the server that one names (if any) is recorded as the pair's worker's. Workers are fewer.
const WATCHED: u16 = 0x8000;

/// Two addresses in order, and whether they are IPv6 ([`host_pair`]).
type HostPair = (u128, u128, bool);

/// Entries of [`PairOwners::recent`].
const RECENT: usize = 256;

impl Default for PairOwners {
    fn default() -> Self {
        PairOwners {
            owners: HashMap::default(),
            servers: HashMap::default(),
            unnamed: HashMap::default(),
            recent: vec![None; RECENT],
        }
    }
}

impl PairOwners {
    /// The worker, of `workers`, for this packet; `load(w)`: packets handed to worker `w` so far.
    pub fn owner(
        &mut self,
        linktype: LinkType,
        data: &[u8],
        workers: usize,
        load: impl Fn(usize) -> u64,
    ) -> usize {
        let Some(pair) = host_pair(linktype, data) else {
            return 0;
        };
        let slot = (pair_hash(pair.0, pair.1) >> 56) as usize % RECENT;
        if let Some((p, w)) = self.recent[slot] {
            if p == pair {
                if w & WATCHED != 0 {
                    return self.watched(pair, slot, w, server_of(linktype, data));
                }
                return usize::from(w);
            }
        }
        let w = match self.owners.get(&pair) {
            Some(&w) if w & WATCHED != 0 => {
                self.recent[slot] = Some((pair, w));
                return self.watched(pair, slot, w, server_of(linktype, data));
            }
            Some(&w) => w,
            None if self.owners.len() >= MAX_OWNED_PAIRS || workers >= usize::from(WATCHED) => {
                return shard_of_words(pair.0, pair.1, workers);
            }
            None => self.new_pair(pair, server_of(linktype, data), workers, load),
        };
        self.recent[slot] = Some((pair, w));
        usize::from(w & !WATCHED)
    }

    /// A packet of a pair first seen with no TCP or UDP header (`w`: its worker, marked
    /// [`WATCHED`]); `seen`: what [`server_of`] read of this one. Once it has one, the server it
    /// names (if any) is its worker's when no other pair gave the server one, and the pair is
    /// no longer watched (out of line: a ping's packets until then).
    #[cold]
    #[inline(never)]
    fn watched(
        &mut self,
        pair: HostPair,
        slot: usize,
        w: u16,
        seen: Option<Option<(u128, bool)>>,
    ) -> usize {
        let w = w & !WATCHED;
        if let Some(server) = seen {
            if let Some(s) = server {
                if self.servers.len() < MAX_OWNED_PAIRS {
                    self.servers.entry(s).or_insert(w);
                }
            }
            self.owners.insert(pair, w);
            self.recent[slot] = Some((pair, w));
        }
        usize::from(w)
    }
}

impl PairOwners {
    /// The worker for a pair first seen, with `server` on one side when its first packet
    /// says so: the server's worker (or that of a pair with the server that named none);
    /// when it names none, the worker of either end as a server; else the least loaded (out
    /// of line: once per pair).
    /// `seen`: what [`server_of`] read of the pair's first packet. Returns the worker, marked
    /// [`WATCHED`] for a pair first seen with no TCP or UDP header.
    #[cold]
    #[inline(never)]
    fn new_pair(
        &mut self,
        pair: HostPair,
        seen: Option<Option<(u128, bool)>>,
        workers: usize,
        load: impl Fn(usize) -> u64,
    ) -> u16 {
        let server = seen.flatten();
        let (a, b, v6) = pair;
        let known = match server {
            Some(s) => self.servers.get(&s).or_else(|| self.unnamed.get(&s)),
            None => self
                .servers
                .get(&(a, v6))
                .or_else(|| self.servers.get(&(b, v6))),
        };
        let w = match known {
            Some(&w) => usize::from(w),
            None => (0..workers).min_by_key(|&w| load(w)).unwrap_or(0),
        };
        match server {
            Some(s) if self.servers.len() < MAX_OWNED_PAIRS => {
                self.servers.entry(s).or_insert(w as u16);
            }
            None if self.unnamed.len() < MAX_OWNED_PAIRS => {
                self.unnamed.entry((a, v6)).or_insert(w as u16);
                self.unnamed.entry((b, v6)).or_insert(w as u16);
            }
            _ => {}
        }
        let w = if seen.is_none() {
            w as u16 | WATCHED
        } else {
            w as u16
        };
        self.owners.insert(pair, w);
        w
    }
}

/// The server of a TCP or UDP packet: the end whose port is a dissected protocol's server port,
/// when one end's is and the other's is not (its address as [`host_pair`] gives it, and whether
/// IPv6); `Some(None)` when no end's is, or both. `None` when the packet has no TCP or UDP
/// header to read: a fragment after the first, IPv6 with extension headers, ICMP, anything else.
fn server_of(linktype: LinkType, data: &[u8]) -> Option<Option<(u128, bool)>> {
    let ip = crate::decode::ip_bytes(linktype, data)?;
    let be = |b: &[u8]| b.iter().fold(0u128, |acc, &x| acc << 8 | u128::from(x));
    let (proto, transport, src, dst, v6) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
            if fragment != 0 {
                return None;
            }
            (
                *ip.get(9)?,
                ip.get(ihl..)?,
                be(ip.get(12..16)?),
                be(ip.get(16..20)?),
                false,
            )
        }
        6 => (
            *ip.get(6)?,
            ip.get(40..)?,
            be(ip.get(8..24)?),
            be(ip.get(24..40)?),
            true,
        ),
        _ => return None,
    };
    let udp = match proto {
        6 => false,
        17 => true,
        _ => return None,
    };
    let port = |at: usize| {
        Some(u16::from_be_bytes([
            *transport.get(at)?,
            *transport.get(at + 1)?,
        ]))
    };
    let (sport, dport) = (port(0)?, port(2)?);
    Some(
        match (
            crate::dissect::App::is_server_port(sport, udp),
            crate::dissect::App::is_server_port(dport, udp),
        ) {
            (true, false) => Some((src, v6)),
            (false, true) => Some((dst, v6)),
            _ => None,
        },
    )
}

/// The worker for a pair by hash: the high bits of [`pair_hash`] times the number of workers
/// (no division).
fn shard_of_words(a: u128, b: u128, workers: usize) -> usize {
    ((u128::from(pair_hash(a, b)) * workers.max(1) as u128) >> 64) as usize
}

/// A symmetric 64-bit hash of two addresses: each folded to 64 bits, two multiplies; its high
/// bits are the well-mixed ones.
fn pair_hash(a: u128, b: u128) -> u64 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let fold = |x: u128| x as u64 ^ (x >> 64) as u64;
    (fold(lo).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ fold(hi)).wrapping_mul(0xd6e8_feb8_6659_fd93)
}

/// Replay `files` with `workers` threads dissecting (the calling thread reads, and merges
/// their events back into capture order).
pub fn replay_parallel(
    files: &[PathBuf],
    sink: &mut dyn EventSink,
    workers: usize,
) -> ReplayReport {
    let mut stage = Stage {
        detection: None,
        events: sink,
    };
    replay_sharded(files, &mut stage, workers, None)
}

/// Replay `files` with `workers` threads dissecting, feeding detection, metrics and events in
/// capture order (see [`crate::shards`]). `evidence`: one ring per worker.
pub fn replay_sharded(
    files: &[PathBuf],
    stage: &mut Stage<'_>,
    workers: usize,
    evidence: Option<Vec<Arc<Mutex<EvidenceRing>>>>,
) -> ReplayReport {
    let start = Instant::now();
    // Open every file first: workers read their bytes by (file, offset) for the whole replay.
    let mut opened: Vec<Option<CaptureFile>> = Vec::with_capacity(files.len());
    let mut errors: Vec<Option<CaptureError>> = Vec::with_capacity(files.len());
    for path in files {
        let (c, e) = match CaptureFile::open_shareable(path) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        opened.push(c);
        errors.push(e);
    }
    let sources = source_names(files);
    // Split every file into its bytes (shared with the workers) and its cursor (the reader's).
    let mut bytes: Vec<&[u8]> = Vec::with_capacity(files.len());
    let mut slots = Vec::with_capacity(files.len());
    for (c, e) in opened.iter_mut().zip(errors) {
        let split = match (c, e) {
            (_, Some(e)) => Err(e),
            (Some(c), None) => Ok(c.split()),
            (None, None) => Ok(None),
        };
        bytes.push(match &split {
            Ok(Some((b, _))) => *b,
            _ => &[][..],
        });
        slots.push(Slot::Split(split));
    }
    let mut feed = FileFeed::new(files, &sources, slots, None);
    let report = run_sharded(&mut feed, stage, workers, QUEUE_CAPACITY, true, evidence, {
        let sources = sources.clone();
        move |d: &Desc, pipeline, sink, _| {
            let data = bytes[d.file].get(d.offset..d.offset + d.len).unwrap_or(&[]);
            let pkt = Packet {
                ts_nanos: d.ts_nanos,
                frame: d.frame,
                linktype: d.linktype,
                orig_len: d.orig_len,
                data,
                csum_not_ready: false,
            };
            pipeline.process(&pkt, &sources[d.file], sink);
        }
    });
    ReplayReport {
        interrupted: feed.interrupted,
        files: feed.reports,
        stats: report.stats,
        elapsed: start.elapsed(),
        active_flows_at_end: report.active_flows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// An Ethernet frame (with `vlans` 802.1Q tags) carrying an IP header from `a` to `b`.
    fn frame(a: IpAddr, b: IpAddr, vlans: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        for _ in 0..vlans {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                f.extend_from_slice(&[0x08, 0x00, 0x45]);
                f.extend_from_slice(&[0; 11]);
                f.extend_from_slice(&a.octets());
                f.extend_from_slice(&b.octets());
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                f.extend_from_slice(&[0x86, 0xdd, 0x60]);
                f.extend_from_slice(&[0; 7]);
                f.extend_from_slice(&a.octets());
                f.extend_from_slice(&b.octets());
            }
            _ => unreachable!(),
        }
        f
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | i))
    }

    /// The short way for Ethernet and IPv4 finds what the general way finds: on frames of
    /// every length up to 80 bytes, built around the fields it reads (type, version, VLAN tags,
    /// IPv6), with the rest random.
    #[test]
    fn the_short_way_to_a_host_pair_agrees_with_the_general_one() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let types: [[u8; 2]; 5] = [[8, 0], [0x86, 0xdd], [0x81, 0], [8, 6], [0x88, 0xa8]];
        let mut short_way = 0;
        for round in 0..20_000 {
            let len = round % 81;
            let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let r = next();
            if len >= 14 {
                frame[12..14].copy_from_slice(&types[(r % 5) as usize]);
            }
            if len >= 15 {
                // The version nibble: mostly 4, sometimes 6 or anything.
                frame[14] = match (r >> 8) % 4 {
                    0 | 1 => 0x45,
                    2 => 0x60,
                    _ => frame[14],
                };
            }
            if len >= 18 && frame[12..14] == [0x81, 0] {
                frame[16..18].copy_from_slice(&types[((r >> 16) % 2) as usize]);
            }
            for linktype in [LinkType::ETHERNET, LinkType::RAW, LinkType::LINUX_SLL] {
                let fast = host_pair(linktype, &frame);
                assert_eq!(
                    fast,
                    host_pair_of_any(linktype, &frame),
                    "{linktype:?} {frame:02x?}"
                );
                short_way += usize::from(
                    linktype == LinkType::ETHERNET
                        && len >= 34
                        && frame[12..14] == [8, 0]
                        && frame[14] >> 4 == 4,
                );
            }
        }
        assert!(short_way > 800, "the short way was taken {short_way} times");
    }

    /// A host pair takes the least-loaded worker at its first packet and keeps it, both
    /// directions, with or without VLAN tags, IPv4 and IPv6.
    #[test]
    fn a_host_pair_keeps_the_worker_it_got_at_first_sight() {
        let mut owners = PairOwners::default();
        let mut loads = [0u64; 3];
        let server = v4(1000);
        let owner = |owners: &mut PairOwners, loads: &mut [u64; 3], a, b, vlans| {
            let snapshot = *loads;
            let w = owners.owner(LinkType::ETHERNET, &frame(a, b, vlans), 3, |w| snapshot[w]);
            loads[w] += 1;
            w
        };
        // Three pairs, one after another: workers 0, 1, 2.
        assert_eq!(owner(&mut owners, &mut loads, v4(1), server, 0), 0);
        assert_eq!(owner(&mut owners, &mut loads, server, v4(1), 0), 0);
        assert_eq!(owner(&mut owners, &mut loads, v4(2), server, 2), 1);
        assert_eq!(owner(&mut owners, &mut loads, v4(3), server, 0), 2);
        // Worker 0 busy with its pair: the next new pair goes to the least loaded (1 or 2).
        for _ in 0..10 {
            assert_eq!(owner(&mut owners, &mut loads, server, v4(1), 1), 0);
        }
        assert_eq!(owner(&mut owners, &mut loads, v4(4), server, 0), 1);
        // An old pair keeps its worker whatever the loads.
        assert_eq!(owner(&mut owners, &mut loads, server, v4(3), 2), 2);
        let (a6, b6): (IpAddr, IpAddr) = ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
        let w6 = owner(&mut owners, &mut loads, a6, b6, 0);
        assert_eq!(owner(&mut owners, &mut loads, b6, a6, 1), w6);
        // Not IP, or cut short: worker 0, and nothing remembered. A frame of another ether
        // type whose payload looks like an IPv4 header is not IP either.
        assert_eq!(owners.owner(LinkType::ETHERNET, &[0u8; 20], 3, |_| 9), 0);
        let mut sampled_values = frame(v4(8), server, 0);
        sampled_values[12..14].copy_from_slice(&[0x88, 0xba]);
        assert_eq!(
            owners.owner(LinkType::ETHERNET, &sampled_values, 3, |_| 9),
            0
        );
        let cut = frame(v4(7), server, 0);
        assert_eq!(owners.owner(LinkType::ETHERNET, &cut[..30], 3, |_| 9), 0);
        assert_eq!(owners.owners.len(), 5);
    }

    /// A TCP packet from `a`:`sport` to `b`:`dport` (IPv4 or IPv6), over Ethernet.
    fn tcp(a: IpAddr, sport: u16, b: IpAddr, dport: u16) -> Vec<u8> {
        let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => eth.ipv4(a.octets(), b.octets(), 64),
            (IpAddr::V6(a), IpAddr::V6(b)) => eth.ipv6(a.octets(), b.octets(), 64),
            _ => unreachable!(),
        };
        let mut out = Vec::new();
        ip.tcp(sport, dport, 1, 8192)
            .write(&mut out, &[0; 12])
            .expect("build packet");
        out
    }

    /// The worker of two that `owners` gives the packet `data`, each worker's load being 100
    /// per packet handed to it so far (`loads`, which a test may raise).
    fn owner_of(owners: &mut PairOwners, loads: &std::cell::Cell<[u64; 2]>, data: &[u8]) -> usize {
        let snapshot = loads.get();
        let w = owners.owner(LinkType::ETHERNET, data, 2, |w| snapshot[w]);
        let mut l = loads.get();
        l[w] += 100;
        loads.set(l);
        w
    }

    /// An ICMP echo request from `a` to `b` (no TCP or UDP header: a pair first seen by one
    /// names no server).
    fn ping(a: IpAddr, b: IpAddr) -> Vec<u8> {
        let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut out = Vec::new();
        match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => eth
                .ipv4(a.octets(), b.octets(), 64)
                .icmpv4_echo_request(1, 1)
                .write(&mut out, &[0; 8]),
            (IpAddr::V6(a), IpAddr::V6(b)) => eth
                .ipv6(a.octets(), b.octets(), 64)
                .icmpv6_echo_request(1, 1)
                .write(&mut out, &[0; 8]),
            _ => unreachable!(),
        }
        .expect("build packet");
        out
    }

    /// A PLC pinged by a monitoring host, then by the SCADA host that goes on to poll it on
    /// the same pair: the PLC's other clients go with the SCADA host's pair (the first pair
    /// that named the PLC a server), whatever the loads and the ping that came first. IPv4
    /// and IPv6; and a ping between a known server and a new host goes with the server.
    #[test]
    fn a_pinged_plcs_clients_go_with_the_pair_that_polls_it() {
        for v6 in [false, true] {
            let ip = |i: u32| {
                if v6 {
                    IpAddr::V6(std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)))
                } else {
                    v4(i)
                }
            };
            let mut owners = PairOwners::default();
            let loads = std::cell::Cell::new([0u64; 2]);
            let mut owner = |data: Vec<u8>| owner_of(&mut owners, &loads, &data);
            let (nms, scada, plc) = (ip(1), ip(2), ip(1000));
            assert_eq!(owner(ping(nms, plc)), 0);
            // Worker 0 is the busier: the SCADA host's ping goes to worker 1, and so does the
            // pair's every packet, its polls included.
            assert_eq!(owner(ping(scada, plc)), 1);
            assert_eq!(owner(ping(plc, scada)), 1);
            assert_eq!(owner(tcp(scada, 50_000, plc, 502)), 1);
            assert_eq!(owner(tcp(plc, 502, scada, 50_000)), 1);
            // Worker 1 is now much the busier: a new client of the PLC goes to it all the same.
            let mut l = loads.get();
            l[1] += 10_000;
            loads.set(l);
            assert_eq!(owner(tcp(ip(3), 50_001, plc, 502)), 1);
            // A ping between the PLC and a new host goes with the PLC.
            assert_eq!(owner(ping(ip(4), plc)), 1);
            // The monitoring host's pair keeps its worker.
            assert_eq!(owner(ping(nms, plc)), 0);
        }
    }

    /// All of a server's clients go to the worker that got the server's first pair, whatever
    /// the loads, both ways; a pair whose first packet names no server (a later fragment, no
    /// server port or two) goes to the worker of an end that is a known server, else to the
    /// least loaded; and a pair keeps its worker.
    #[test]
    fn a_servers_clients_go_to_its_worker() {
        let mut owners = PairOwners::default();
        let loads = std::cell::Cell::new([0u64; 2]);
        let mut owner = |data: Vec<u8>| owner_of(&mut owners, &loads, &data);
        let (plc, plc2) = (v4(1000), v4(2000));
        assert_eq!(owner(tcp(v4(1), 50_000, plc, 502)), 0);
        // Worker 0 is the busier: a second client of the PLC still goes to it, both ways.
        assert_eq!(owner(tcp(plc, 502, v4(2), 50_001)), 0);
        assert_eq!(owner(tcp(v4(2), 50_001, plc, 502)), 0);
        assert_eq!(owner(tcp(v4(1), 50_000, plc, 502)), 0);
        // Another server takes the least loaded, and keeps its clients there.
        assert_eq!(owner(tcp(v4(1), 50_002, plc2, 102)), 1);
        assert_eq!(owner(tcp(v4(3), 50_003, plc2, 102)), 1);
        // No server port, or one on both sides: the worker of the end that is a known server,
        // the busier each time.
        let busier = |w: usize| {
            let mut l = loads.get();
            l[w] = l[1 - w] + 10_000;
            loads.set(l);
        };
        busier(0);
        assert_eq!(owner(tcp(v4(4), 40_000, plc, 40_001)), 0);
        busier(1);
        assert_eq!(owner(tcp(v4(5), 502, plc2, 102)), 1);
        // A pair first seen by a fragment after the first names no server either.
        let mut fragment = tcp(v4(6), 50_004, plc, 502);
        fragment[20] = 0x00;
        fragment[21] = 0x10;
        busier(0);
        assert_eq!(owner(fragment), 0);
        // Between two addresses neither of which is a known server: the least loaded. Should
        // one turn out a server (a ping before the polls), its clients follow.
        let plc3 = v4(3000);
        let before = loads.get();
        let least = usize::from(before[1] < before[0]);
        assert_eq!(owner(tcp(v4(7), 40_002, plc3, 40_003)), least);
        // Its worker is now much the busier.
        let mut l = loads.get();
        l[least] += 10_000;
        loads.set(l);
        assert_eq!(owner(tcp(v4(10), 50_007, plc3, 502)), least);
        assert_eq!(owner(tcp(plc3, 502, v4(11), 50_008)), least);
        // IPv6 the same.
        let (c6, s6): (IpAddr, IpAddr) = ("fd00::1".parse().unwrap(), "fd00::10".parse().unwrap());
        let w6 = owner(tcp(c6, 50_000, s6, 20_000));
        assert_eq!(
            owner(tcp(s6, 20_000, "fd00::2".parse().unwrap(), 50_001)),
            w6
        );
    }

    /// Past the table's bound a new pair goes by a symmetric hash: the same worker every time
    /// and both ways, and the pairs spread.
    #[test]
    fn pairs_beyond_the_bound_go_by_hash() {
        let mut owners = PairOwners::default();
        for i in 0..MAX_OWNED_PAIRS as u32 {
            owners.owner(LinkType::ETHERNET, &frame(v4(i), v4(1 << 20), 0), 4, |_| 0);
        }
        assert_eq!(owners.owners.len(), MAX_OWNED_PAIRS);
        let mut per = [0usize; 4];
        for i in 0..4096u32 {
            let (a, b) = (v4(1 << 21 | i), v4((1 << 22) | (i % 7)));
            let w = owners.owner(LinkType::ETHERNET, &frame(a, b, 0), 4, |_| 0);
            assert_eq!(
                owners.owner(LinkType::ETHERNET, &frame(b, a, 1), 4, |_| 5),
                w
            );
            per[w] += 1;
        }
        assert_eq!(owners.owners.len(), MAX_OWNED_PAIRS);
        for (w, n) in per.iter().enumerate() {
            assert!(*n > 800 && *n < 1250, "worker {w} has {n} of 4096 pairs");
        }
    }
}
