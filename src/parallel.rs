//! `replay --workers N`: one reader thread hands packets to N workers, each owning its flows.
//!
//! The reader hashes each packet's IP address pair symmetrically (both directions, and every
//! fragment of a datagram, go to the same worker; so do all flows between two hosts) and pushes
//! a small descriptor (offset and length into the file's bytes, timestamp, frame) into that
//! worker's lock-free single-producer single-consumer queue (`rtrb`). Workers read the packet
//! bytes in place from the shared memory map: nothing is copied. In replay the reader waits when a
//! queue is full (lossless), merging the workers' output while it waits; what the workers hand
//! back (observations for detection and metrics, events) is put back in capture order by
//! [`crate::shards`], so detection with N workers sees what it sees with one.
//!
//! The reading loop is [`crate::run::packet_loop`], as for one worker; this file gives it its feed
//! and tells a worker how to find a packet's bytes.

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

/// Symmetric hash of the packet's IP addresses (0 when it is not IP: any worker will do).
pub(crate) fn worker_of(linktype: LinkType, data: &[u8], workers: usize) -> usize {
    let ip = match linktype {
        LinkType::ETHERNET => {
            let mut at = 12;
            let mut et = u16::from_be_bytes([
                data.get(at).copied().unwrap_or(0),
                data.get(at + 1).copied().unwrap_or(0),
            ]);
            at += 2;
            for _ in 0..3 {
                if !matches!(et, 0x8100 | 0x88A8 | 0x9100) {
                    break;
                }
                et = u16::from_be_bytes([
                    data.get(at + 2).copied().unwrap_or(0),
                    data.get(at + 3).copied().unwrap_or(0),
                ]);
                at += 4;
            }
            data.get(at..)
        }
        LinkType::LINUX_SLL => data.get(16..),
        LinkType::LINUX_SLL2 => data.get(20..),
        LinkType::NULL | LinkType::LOOP => data.get(4..),
        _ => Some(data),
    };
    let Some(ip) = ip else { return 0 };
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let be128 = |b: &[u8]| {
        let mut w = [0u8; 16];
        w.copy_from_slice(&b[..16]);
        u128::from_be_bytes(w)
    };
    match ip.first().map(|v| v >> 4) {
        Some(4) => match ip.get(12..20) {
            Some(a) => shard_of_words(be32(a).into(), be32(&a[4..]).into(), workers),
            None => 0,
        },
        Some(6) => match ip.get(8..40) {
            Some(a) => shard_of_words(be128(a), be128(&a[16..]), workers),
            None => 0,
        },
        _ => 0,
    }
}

/// A symmetric hash of two addresses (as numbers; IPv4 in the low 32 bits): the pair ordered,
/// each folded to 64 bits, two multiplies, and the worker from the high bits of the hash times
/// the number of workers (no division). The reader hashes every packet: FNV-1a over the bytes
/// cost it 128 instructions a packet (bench-ics, two workers), this a few.
fn shard_of_words(a: u128, b: u128, workers: usize) -> usize {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let fold = |x: u128| x as u64 ^ (x >> 64) as u64;
    let h = (fold(lo).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ fold(hi))
        .wrapping_mul(0xd6e8_feb8_6659_fd93);
    ((u128::from(h) * workers.max(1) as u128) >> 64) as usize
}

/// The worker that owns the host pair `a`, `b`: the same one [`worker_of`] picks for their
/// packets (for the evidence ring that holds them).
pub fn pair_shard(a: std::net::IpAddr, b: std::net::IpAddr, workers: usize) -> usize {
    use std::net::IpAddr;
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            shard_of_words(a.to_bits().into(), b.to_bits().into(), workers)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => shard_of_words(a.to_bits(), b.to_bits(), workers),
        _ => 0,
    }
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

    /// Both directions of a host pair go to one worker, the one `pair_shard` names (the
    /// evidence ring's), and host pairs spread over the workers.
    #[test]
    fn a_host_pair_has_one_worker_and_pairs_spread() {
        for workers in [1, 2, 3, 4, 8] {
            let mut per = vec![0usize; workers];
            for i in 0..4096u32 {
                let (a, b): (IpAddr, IpAddr) = if i % 4 == 3 {
                    (
                        IpAddr::V6(std::net::Ipv6Addr::from(u128::from(i) << 64 | 1)),
                        IpAddr::V6(std::net::Ipv6Addr::from(0xfe80 << 112 | u128::from(i))),
                    )
                } else {
                    (
                        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | i)),
                        IpAddr::V4(std::net::Ipv4Addr::from(0xc0a8_0100 | (i % 7))),
                    )
                };
                let w = pair_shard(a, b, workers);
                assert!(w < workers);
                assert_eq!(pair_shard(b, a, workers), w);
                for vlans in [0, 2] {
                    assert_eq!(
                        worker_of(LinkType::ETHERNET, &frame(a, b, vlans), workers),
                        w
                    );
                    assert_eq!(
                        worker_of(LinkType::ETHERNET, &frame(b, a, vlans), workers),
                        w
                    );
                }
                per[w] += 1;
            }
            let fair = 4096 / workers;
            for (w, n) in per.iter().enumerate() {
                assert!(
                    *n > fair * 8 / 10 && *n < fair * 12 / 10,
                    "{workers} workers: worker {w} has {n} of 4096 pairs"
                );
            }
        }
        // Not IP, or cut short: worker 0.
        assert_eq!(worker_of(LinkType::ETHERNET, &[0u8; 20], 4), 0);
        let v4 = frame("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 0);
        assert_eq!(worker_of(LinkType::ETHERNET, &v4[..30], 4), 0);
    }
}
