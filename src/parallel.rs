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

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::capture::{CaptureFile, LinkType, Packet};
use crate::event::EventSink;
use crate::output::evidence::EvidenceRing;
use crate::pipeline::Pipeline;
use crate::replay::{FileReport, ReplayReport};
use crate::shards::{run_worker, DiedGuard, Shards, Stage, Wants};
use crate::stats::{Merge, Stats};

/// Descriptors a worker's queue holds.
pub const QUEUE_CAPACITY: usize = 8192;

#[derive(Debug, Clone, Copy)]
struct Desc {
    /// Index of the file in the replay.
    file: usize,
    offset: usize,
    len: usize,
    orig_len: u32,
    ts_nanos: i64,
    frame: u64,
    linktype: LinkType,
}

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
    let (a, b): (&[u8], &[u8]) = match ip.first().map(|v| v >> 4) {
        Some(4) => match (ip.get(12..16), ip.get(16..20)) {
            (Some(a), Some(b)) => (a, b),
            _ => return 0,
        },
        Some(6) => match (ip.get(8..24), ip.get(24..40)) {
            (Some(a), Some(b)) => (a, b),
            _ => return 0,
        },
        _ => return 0,
    };
    shard_of_octets(a, b, workers)
}

/// FNV-1a over the ordered pair of addresses: cheap, and symmetric because the pair is ordered.
fn shard_of_octets(a: &[u8], b: &[u8], workers: usize) -> usize {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in lo.iter().chain(hi) {
        h ^= u64::from(byte);
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
    let workers = workers.max(1);
    let start = Instant::now();
    // Open every file first: workers read their bytes by (file, offset) for the whole replay.
    let mut opened: Vec<Option<CaptureFile>> = Vec::with_capacity(files.len());
    let mut reports: Vec<FileReport> = Vec::with_capacity(files.len());
    for path in files {
        match CaptureFile::open_shareable(path) {
            Ok(c) => {
                opened.push(Some(c));
                reports.push(FileReport {
                    path: path.clone(),
                    packets: 0,
                    error: None,
                });
            }
            Err(e) => {
                opened.push(None);
                reports.push(FileReport {
                    path: path.clone(),
                    packets: 0,
                    error: Some(e),
                });
            }
        }
    }
    let sources: Vec<Arc<str>> = files
        .iter()
        .map(|p| Arc::from(p.to_string_lossy().as_ref()))
        .collect();
    let wants = Wants::of(stage.detection.as_deref(), &*stage.events);
    let mut stats = Stats::default();
    let mut active = 0usize;
    // Split every file into its bytes (shared with the workers) and its cursor (ours).
    let mut parts: Vec<Option<(&[u8], &mut crate::capture::file::FileCursor)>> = opened
        .iter_mut()
        .map(|c| c.as_mut().and_then(|c| c.split()))
        .collect();
    let bytes: Vec<&[u8]> = parts
        .iter()
        .map(|p| p.as_ref().map_or(&[][..], |(b, _)| *b))
        .collect();
    let (mut shards, ends) =
        Shards::<Desc>::new(workers, QUEUE_CAPACITY, stage.detection.as_deref());
    let died = AtomicBool::new(false);
    let mut interrupted = false;
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for (w, ends) in ends.into_iter().enumerate() {
            let (bytes, sources, died) = (&bytes, &sources, &died);
            let mut pipeline = Pipeline::new();
            pipeline.evidence = evidence.as_ref().and_then(|r| r.get(w).cloned());
            handles.push(scope.spawn(move || {
                // Set if the worker panics, so the merge does not wait for it for ever.
                let _died = DiedGuard(died);
                run_worker(ends, pipeline, wants, |d: &Desc, pipeline, sink| {
                    let data = bytes[d.file].get(d.offset..d.offset + d.len).unwrap_or(&[]);
                    let pkt = Packet {
                        ts_nanos: d.ts_nanos,
                        frame: d.frame,
                        linktype: d.linktype,
                        orig_len: d.orig_len,
                        data,
                    };
                    pipeline.process(&pkt, &sources[d.file], sink);
                })
            }));
        }
        let mut previous_end: Option<i64> = None;
        for (i, part) in parts.iter_mut().enumerate() {
            if interrupted {
                // Files after a stop are not read: not reported, as with one worker.
                reports.truncate(i);
                break;
            }
            let Some((data, cursor)) = part else { continue };
            let mut first = true;
            loop {
                if crate::signals::stop_requested() {
                    interrupted = true;
                    break;
                }
                match cursor.next_in(data) {
                    None => break,
                    Some(Err(e)) => {
                        reports[i].error = Some(e);
                        break;
                    }
                    Some(Ok(pkt)) => {
                        if first && previous_end.is_some_and(|end| pkt.ts_nanos < end) {
                            // Every worker closes its flows before the new capture's packets.
                            shards.flush(stage);
                        }
                        first = false;
                        previous_end = Some(pkt.ts_nanos);
                        let offset = pkt.data.as_ptr() as usize - data.as_ptr() as usize;
                        let w = worker_of(pkt.linktype, pkt.data, workers);
                        let d = Desc {
                            file: i,
                            offset,
                            len: pkt.data.len(),
                            orig_len: pkt.orig_len,
                            ts_nanos: pkt.ts_nanos,
                            frame: pkt.frame,
                            linktype: pkt.linktype,
                        };
                        // Lossless: waits, merging, while the worker's queue is full.
                        let _ = shards.push(w, d, pkt.ts_nanos, true, stage);
                        shards.merge_sometimes(stage);
                    }
                }
            }
            reports[i].packets = cursor.packets();
        }
        shards.flush(stage);
        shards.finish(stage, || !died.load(Ordering::Acquire));
        for h in handles {
            if let Ok((s, a)) = h.join() {
                stats.merge(&s);
                active += a;
            }
        }
    });
    ReplayReport {
        interrupted,
        files: reports,
        stats,
        elapsed: start.elapsed(),
        active_flows_at_end: active,
    }
}
