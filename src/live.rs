//! `live --workers N`: one capture thread reads the AF_PACKET ring and hands each packet, as a
//! descriptor into the ring (no copy), to the worker its host pair hashes to, over one lock-free
//! SPSC queue per worker. Workers own their flow tables. A ring block goes back to the kernel
//! when the capture thread and every worker are done with its packets.
//!
//! Backpressure: a worker whose queue is full loses the packet, and `queue_drops` counts it; the
//! capture thread never waits, so the ring keeps draining (in replay the reader waits instead).
//! Events come back in batches, flushed whenever a worker's queue runs empty, so they reach the
//! output (and detection) within the time a worker takes to catch up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::capture::afpacket::{restore_vlan, AfPacketSource, RawPacket, SharedRing};
use crate::capture::{CaptureError, LinkType, Packet};
use crate::event::{Event, EventSink, NullSink};
use crate::metrics::LiveCounters;
use crate::parallel::worker_of;
use crate::pipeline::Pipeline;
use crate::stats::{Merge, Stats};

/// Descriptors a worker's queue holds.
pub const QUEUE_CAPACITY: usize = 65_536;
const EVENT_BATCH: usize = 256;
/// Workers report their counters this often (for the metrics and the summary while running).
const STATS_EVERY: Duration = Duration::from_secs(1);

enum Msg {
    Events(Vec<Event>),
    /// A worker's counters so far and its open flows.
    Stats(usize, Box<Stats>, usize),
}

struct BatchSink {
    batch: Vec<Event>,
    tx: mpsc::SyncSender<Msg>,
}

impl BatchSink {
    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(EVENT_BATCH));
            let _ = self.tx.send(Msg::Events(full));
        }
    }
}

impl EventSink for BatchSink {
    fn emit(&mut self, event: Event) {
        self.batch.push(event);
        if self.batch.len() >= EVENT_BATCH {
            self.flush();
        }
    }
}

/// What a fan-out capture did.
#[derive(Debug, Default)]
pub struct FanoutReport {
    pub stats: Stats,
    pub active_flows: usize,
    /// Packets handed to each worker.
    pub worker_packets: Vec<u64>,
    /// Packets lost because their worker's queue was full.
    pub queue_drops: u64,
    pub error: Option<CaptureError>,
}

fn handle(msg: Msg, sink: &mut dyn EventSink, latest: &mut [(Stats, usize)]) {
    match msg {
        Msg::Events(batch) => {
            for e in batch {
                sink.emit(e);
            }
        }
        Msg::Stats(id, stats, active) => {
            if let Some(slot) = latest.get_mut(id) {
                *slot = (*stats, active);
            }
        }
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn worker(
    id: usize,
    mut queue: rtrb::Consumer<RawPacket>,
    ring: SharedRing,
    tx: mpsc::SyncSender<Msg>,
    name: Arc<str>,
    wanted: bool,
) {
    let mut pipeline = Pipeline::new();
    let mut sink = BatchSink {
        batch: Vec::with_capacity(EVENT_BATCH),
        tx: tx.clone(),
    };
    let mut null = NullSink;
    let mut vlan_buf: Vec<u8> = Vec::new();
    let mut last_stats = Instant::now();
    let mut n: u64 = 0;
    loop {
        match queue.pop() {
            Ok(p) => {
                n += 1;
                // Under load the queue never runs empty: report counters from here too.
                if n.is_multiple_of(4096) && last_stats.elapsed() >= STATS_EVERY {
                    last_stats = Instant::now();
                    let _ = tx.send(Msg::Stats(
                        id,
                        Box::new(pipeline.stats.clone()),
                        pipeline.active_flows(),
                    ));
                }
                // SAFETY: `p` came from the ring's source, which outlives this worker (the
                // fan-out joins the workers before it returns), and `done` is called below.
                let bytes = unsafe { ring.bytes(&p) };
                let (data, orig_len) = match p.vlan {
                    Some(tag) => restore_vlan(&mut vlan_buf, bytes, tag, p.orig_len),
                    None => (bytes, p.orig_len),
                };
                let pkt = Packet {
                    ts_nanos: p.ts_nanos,
                    frame: p.frame,
                    linktype: LinkType::ETHERNET,
                    orig_len,
                    data,
                };
                let out: &mut dyn EventSink = if wanted { &mut sink } else { &mut null };
                pipeline.process(&pkt, &name, out);
                // SAFETY: as above; the packet is not used after this.
                unsafe { ring.done(&p) };
            }
            Err(_) => {
                if queue.is_abandoned() {
                    break;
                }
                // Idle: nothing is held back.
                sink.flush();
                if last_stats.elapsed() >= STATS_EVERY {
                    last_stats = Instant::now();
                    let _ = tx.send(Msg::Stats(
                        id,
                        Box::new(pipeline.stats.clone()),
                        pipeline.active_flows(),
                    ));
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
    let active = pipeline.active_flows();
    let out: &mut dyn EventSink = if wanted { &mut sink } else { &mut null };
    pipeline.finish(out);
    sink.flush();
    let _ = tx.send(Msg::Stats(id, Box::new(pipeline.stats), active));
}

/// Captures from `source` with `workers` dissecting threads until `stop` is set or the source
/// fails. Events, ticks and counters reach `sink` on the calling (capture) thread.
pub fn run_fanout(
    source: &mut AfPacketSource,
    workers: usize,
    name: &Arc<str>,
    sink: &mut dyn EventSink,
    stop: &AtomicBool,
) -> FanoutReport {
    let workers = workers.max(1);
    let ring = source.fanout_ring();
    let wanted = sink.wants_events();
    let mut report = FanoutReport {
        worker_packets: vec![0; workers],
        ..FanoutReport::default()
    };
    let mut latest: Vec<(Stats, usize)> = vec![(Stats::default(), 0); workers];
    let (tx, rx) = mpsc::sync_channel::<Msg>(1024);
    std::thread::scope(|scope| {
        let mut producers = Vec::with_capacity(workers);
        for id in 0..workers {
            let (producer, consumer) = rtrb::RingBuffer::<RawPacket>::new(QUEUE_CAPACITY);
            producers.push(producer);
            let (ring, tx, name) = (ring.clone(), tx.clone(), Arc::clone(name));
            scope.spawn(move || worker(id, consumer, ring, tx, name, wanted));
        }
        drop(tx);
        let mut last_counters = Instant::now();
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            match source.next_raw(Duration::from_millis(100)) {
                Ok(Some(p)) => {
                    // SAFETY: `p` is held until `done` (below, or by its worker).
                    let w = worker_of(LinkType::ETHERNET, unsafe { ring.bytes(&p) }, workers);
                    report.worker_packets[w] += 1;
                    if producers[w].push(p).is_err() {
                        report.queue_drops += 1;
                        // SAFETY: the packet never reached a worker; this is its only `done`.
                        unsafe { ring.done(&p) };
                    }
                    n += 1;
                    if n.is_multiple_of(64) {
                        while let Ok(msg) = rx.try_recv() {
                            handle(msg, sink, &mut latest);
                        }
                    }
                }
                Ok(None) => sink.tick(now_nanos()),
                Err(e) => {
                    report.error = Some(e);
                    break;
                }
            }
            while let Ok(msg) = rx.try_recv() {
                handle(msg, sink, &mut latest);
            }
            if last_counters.elapsed() >= STATS_EVERY {
                last_counters = Instant::now();
                let l = source.stats();
                sink.live_counters(LiveCounters {
                    kernel_drops: l.kernel_drops,
                    ring_freezes: l.kernel_freeze_q_cnt,
                    queue_drops: report.queue_drops,
                });
                sink.worker_packets(&report.worker_packets);
                let mut merged = Stats::default();
                let mut active = 0;
                for (s, a) in &latest {
                    merged.merge(s);
                    active += a;
                }
                sink.publish(&merged, active, now_nanos());
            }
        }
        // Workers finish what is queued, then hang up.
        drop(producers);
        for msg in rx.iter() {
            handle(msg, sink, &mut latest);
        }
    });
    source.finish_fanout();
    for (s, a) in &latest {
        report.stats.merge(s);
        report.active_flows += a;
    }
    report
}
