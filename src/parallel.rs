//! `replay --workers N`: one reader thread hands packets to N workers, each owning its flows.
//!
//! The reader hashes each packet's IP address pair symmetrically (both directions, and every
//! fragment of a datagram, go to the same worker; so do all flows between two hosts) and pushes
//! a small descriptor (offset and length into the file's bytes, timestamp, frame) into that
//! worker's lock-free single-producer single-consumer queue (`rtrb`). Workers read the packet
//! bytes in place from the shared memory map: nothing is copied. In replay the reader waits when a
//! queue is full (lossless); events travel back to the reader in batches over a bounded channel,
//! which it drains while it waits, so neither side can block the other for good.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use crate::capture::{CaptureFile, LinkType, Packet};
use crate::event::{Event, EventSink, NullSink};
use crate::pipeline::Pipeline;
use crate::replay::{FileReport, ReplayReport};
use crate::stats::{Merge, Stats};

/// Descriptors a worker's queue holds.
pub const QUEUE_CAPACITY: usize = 8192;
/// Events per batch sent back to the reader.
const EVENT_BATCH: usize = 256;

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
    /// A later file started before this one ended: close every flow first.
    restart: bool,
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
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    // FNV-1a over the ordered pair: cheap, and symmetric because the pair is ordered.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in lo.iter().chain(hi) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers as u64) as usize
}

/// Collects a worker's events and sends them back in batches.
struct BatchSink {
    batch: Vec<Event>,
    tx: mpsc::SyncSender<Vec<Event>>,
    wanted: bool,
}

impl EventSink for BatchSink {
    fn emit(&mut self, event: Event) {
        self.batch.push(event);
        if self.batch.len() >= EVENT_BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(EVENT_BATCH));
            let _ = self.tx.send(full);
        }
    }

    fn wants_events(&self) -> bool {
        self.wanted
    }
}

fn drain(rx: &mpsc::Receiver<Vec<Event>>, sink: &mut dyn EventSink) {
    while let Ok(batch) = rx.try_recv() {
        for e in batch {
            sink.emit(e);
        }
    }
}

/// Replay `files` with `workers` threads dissecting (the calling thread reads). Events reach
/// `sink` in no particular order across flows of different workers.
pub fn replay_parallel(
    files: &[PathBuf],
    sink: &mut dyn EventSink,
    workers: usize,
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
    let wanted = sink.wants_events();
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
    let (tx, rx) = mpsc::sync_channel::<Vec<Event>>(64);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut producers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (producer, mut consumer) = rtrb::RingBuffer::<Desc>::new(QUEUE_CAPACITY);
            producers.push(producer);
            let (bytes, sources, done, tx) = (&bytes, &sources, &done, tx.clone());
            handles.push(scope.spawn(move || {
                let mut pipeline = Pipeline::new();
                let mut sink = BatchSink {
                    batch: Vec::with_capacity(EVENT_BATCH),
                    tx,
                    wanted,
                };
                let mut null = NullSink;
                let out: &mut dyn EventSink = if wanted { &mut sink } else { &mut null };
                loop {
                    match consumer.pop() {
                        Ok(d) => {
                            if d.restart {
                                // A marker, not a packet: the next file is another capture.
                                pipeline.finish(out);
                                continue;
                            }
                            let data = bytes[d.file].get(d.offset..d.offset + d.len).unwrap_or(&[]);
                            let pkt = Packet {
                                ts_nanos: d.ts_nanos,
                                frame: d.frame,
                                linktype: d.linktype,
                                orig_len: d.orig_len,
                                data,
                            };
                            pipeline.process(&pkt, &sources[d.file], out);
                        }
                        Err(_) if done.load(Ordering::Acquire) && consumer.is_empty() => break,
                        Err(_) => std::thread::yield_now(),
                    }
                }
                let active = pipeline.active_flows();
                pipeline.finish(out);
                if wanted && !sink.batch.is_empty() {
                    let _ = sink.tx.send(std::mem::take(&mut sink.batch));
                }
                (pipeline.stats, active)
            }));
        }
        drop(tx);
        let mut previous_end: Option<i64> = None;
        for (i, part) in parts.iter_mut().enumerate() {
            let Some((data, cursor)) = part else { continue };
            let mut first = true;
            loop {
                if crate::signals::stop_requested() {
                    break;
                }
                let desc = match cursor.next_in(data) {
                    None => break,
                    Some(Err(e)) => {
                        reports[i].error = Some(e);
                        break;
                    }
                    Some(Ok(pkt)) => {
                        let restart = first && previous_end.is_some_and(|end| pkt.ts_nanos < end);
                        first = false;
                        previous_end = Some(pkt.ts_nanos);
                        let offset = pkt.data.as_ptr() as usize - data.as_ptr() as usize;
                        (
                            worker_of(pkt.linktype, pkt.data, workers),
                            Desc {
                                file: i,
                                offset,
                                len: pkt.data.len(),
                                orig_len: pkt.orig_len,
                                ts_nanos: pkt.ts_nanos,
                                frame: pkt.frame,
                                linktype: pkt.linktype,
                                restart,
                            },
                        )
                    }
                };
                let (w, d) = desc;
                if d.restart {
                    // Every worker closes its flows before the new capture's packets.
                    for p in producers.iter_mut() {
                        while p.push(d).is_err() {
                            drain(&rx, sink);
                            std::thread::yield_now();
                        }
                    }
                }
                let mut d = d;
                d.restart = false;
                while let Err(rtrb::PushError::Full(back)) = producers[w].push(d) {
                    d = back;
                    drain(&rx, sink);
                    std::thread::yield_now();
                }
            }
            reports[i].packets = cursor.packets();
        }
        done.store(true, Ordering::Release);
        // Drain events until every worker has finished and hung up.
        let mut results = Vec::with_capacity(workers);
        for batch in rx.iter() {
            for e in batch {
                sink.emit(e);
            }
        }
        for h in handles {
            if let Ok(r) = h.join() {
                results.push(r);
            }
        }
        for (s, a) in results {
            stats.merge(&s);
            active += a;
        }
    });
    ReplayReport {
        interrupted: crate::signals::stop_requested(),
        files: reports,
        stats,
        elapsed: start.elapsed(),
        active_flows_at_end: active,
    }
}
