//! `live --workers N`: one capture thread reads the AF_PACKET ring and hands each packet, as a
//! descriptor into the ring (no copy), to the worker its host pair hashes to, over one lock-free
//! SPSC queue per worker. Workers own their flow tables. A ring block goes back to the kernel
//! when the capture thread and every worker are done with its packets.
//!
//! Backpressure: a worker whose queue is full loses the packet, and `queue_drops` counts it; the
//! capture thread never waits, so the ring keeps draining (in replay the reader waits instead).
//! What the workers hand back (observations, events) is merged into capture order by
//! [`crate::shards`], as in replay, and reaches detection, metrics and the events output on the
//! capture thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::capture::afpacket::{restore_vlan, AfPacketSource, RawPacket, SharedRing};
use crate::capture::{CaptureError, LinkType, Packet};
use crate::event::EventSink;
use crate::metrics::LiveCounters;
use crate::output::evidence::EvidenceRing;
use crate::parallel::worker_of;
use crate::pipeline::Pipeline;
use crate::shards::{run_worker, DiedGuard, Shards, Stage, Wants};
use crate::stats::{Merge, Stats};

/// Descriptors a worker's queue holds.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Counters reach the metrics this often.
const STATS_EVERY: Duration = Duration::from_secs(1);

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

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Captures from `source` with `workers` dissecting threads until `stop` is set or the source
/// fails. Events reach `sink` on the calling (capture) thread, in capture order.
pub fn run_fanout(
    source: &mut AfPacketSource,
    workers: usize,
    name: &Arc<str>,
    sink: &mut dyn EventSink,
    stop: &AtomicBool,
) -> FanoutReport {
    let mut stage = Stage {
        detection: None,
        events: sink,
    };
    run_fanout_stage(source, workers, name, &mut stage, stop, None)
}

/// As [`run_fanout`], feeding detection and metrics too; `evidence`: one ring per worker.
pub fn run_fanout_stage(
    source: &mut AfPacketSource,
    workers: usize,
    name: &Arc<str>,
    stage: &mut Stage<'_>,
    stop: &AtomicBool,
    evidence: Option<Vec<Arc<Mutex<EvidenceRing>>>>,
) -> FanoutReport {
    let workers = workers.max(1);
    let ring = source.fanout_ring();
    let wants = Wants::of(stage.detection.as_deref(), &*stage.events);
    let mut report = FanoutReport {
        worker_packets: vec![0; workers],
        ..FanoutReport::default()
    };
    let (mut shards, ends) =
        Shards::<RawPacket>::new(workers, QUEUE_CAPACITY, stage.detection.as_deref());
    let died = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for (w, ends) in ends.into_iter().enumerate() {
            let (ring, name, died) = (ring.clone(), Arc::clone(name), &died);
            let mut pipeline = Pipeline::new();
            pipeline.evidence = evidence.as_ref().and_then(|r| r.get(w).cloned());
            handles.push(scope.spawn(move || {
                // Set if the worker panics, so the merge does not wait for it for ever.
                let _died = DiedGuard(died);
                let mut vlan_buf: Vec<u8> = Vec::new();
                run_worker(ends, pipeline, wants, |p: &RawPacket, pipeline, sink| {
                    // The packet goes back to the ring however processing ends (a panic too).
                    struct GiveBack<'a>(&'a SharedRing, RawPacket);
                    impl Drop for GiveBack<'_> {
                        fn drop(&mut self) {
                            // SAFETY: the packet is not used after this; see below.
                            unsafe { self.0.done(&self.1) };
                        }
                    }
                    let _give_back = GiveBack(&ring, *p);
                    // SAFETY: `p` came from the ring's source, which outlives this worker (the
                    // fan-out joins the workers before it returns), and `done` is called once,
                    // by `_give_back`, after the last use of the bytes.
                    let bytes = unsafe { ring.bytes(p) };
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
                    pipeline.process(&pkt, &name, sink);
                })
            }));
        }
        let mut last_counters = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // While workers hold packets, wait briefly: the merge must keep running, or a worker
            // blocked on its full output queue keeps its ring block from the kernel.
            let wait = if shards.idle() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(1)
            };
            match source.next_raw(wait) {
                Ok(Some(p)) => {
                    // SAFETY: `p` is held until `done` (below, or by its worker).
                    let w = worker_of(LinkType::ETHERNET, unsafe { ring.bytes(&p) }, workers);
                    report.worker_packets[w] += 1;
                    // Live never waits: a full queue loses the packet, counted.
                    if let Err(p) = shards.push(w, p, p.ts_nanos, false, stage) {
                        report.queue_drops += 1;
                        // SAFETY: the packet never reached a worker; this is its only `done`.
                        unsafe { ring.done(&p) };
                    }
                    shards.merge_sometimes(stage);
                }
                Ok(None) => {
                    shards.merge(stage);
                    // A quiet link: the clock still moves (timeouts, silent devices), once
                    // everything captured before has been released.
                    if shards.idle() {
                        shards.tick_now(now_nanos(), stage);
                    }
                }
                Err(e) => {
                    report.error = Some(e);
                    break;
                }
            }
            if last_counters.elapsed() >= STATS_EVERY {
                last_counters = Instant::now();
                shards.merge(stage);
                if let Some(d) = stage.detection.as_deref_mut() {
                    let l = source.stats();
                    d.set_live(
                        LiveCounters {
                            kernel_drops: l.kernel_drops,
                            ring_freezes: l.kernel_freeze_q_cnt,
                            queue_drops: report.queue_drops,
                        },
                        &report.worker_packets,
                    );
                    let (merged, active) = shards.counters();
                    d.publish(&merged, active, now_nanos());
                }
            }
        }
        // Workers finish what is queued (their flows closed), then hang up.
        shards.flush(stage);
        shards.finish(stage, || !died.load(Ordering::Acquire));
        for h in handles {
            if let Ok((s, a)) = h.join() {
                report.stats.merge(&s);
                report.active_flows += a;
            }
        }
    });
    source.finish_fanout();
    report
}
