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
    match ip.first().map(|v| v >> 4) {
        Some(4) => match (octets::<4>(ip, 12), octets::<4>(ip, 16)) {
            (Some(a), Some(b)) => shard_of_octets(a, b, workers),
            _ => 0,
        },
        Some(6) => match (octets::<16>(ip, 8), octets::<16>(ip, 24)) {
            (Some(a), Some(b)) => shard_of_octets(a, b, workers),
            _ => 0,
        },
        _ => 0,
    }
}

/// The `N` bytes at `at` of `data`, if it holds them.
fn octets<const N: usize>(data: &[u8], at: usize) -> Option<&[u8; N]> {
    data.get(at..)?.first_chunk()
}

/// FNV-1a over the ordered pair of addresses: cheap, and symmetric because the pair is ordered.
/// Over arrays of a fixed length, so that the reader's per-packet hash is a straight run of
/// multiplies (over slices and a chained iterator it cost 150 instructions a packet).
fn shard_of_octets<const N: usize>(a: &[u8; N], b: &[u8; N], workers: usize) -> usize {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in lo.iter().chain(hi.iter()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// The worker that owns the host pair `a`, `b`: the same one [`worker_of`] picks for their
/// packets (for the evidence ring that holds them).
pub fn pair_shard(a: std::net::IpAddr, b: std::net::IpAddr, workers: usize) -> usize {
    use std::net::IpAddr;
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => shard_of_octets(&a.octets(), &b.octets(), workers),
        (IpAddr::V6(a), IpAddr::V6(b)) => shard_of_octets(&a.octets(), &b.octets(), workers),
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
