//! The one packet loop. A [`Feed`] (capture files, or a live interface) hands each packet to a
//! [`Dispatch`]: one pipeline on this thread ([`Inline`]), or N workers behind one reader
//! ([`run_sharded`]). Replay and live, one worker or many, run [`packet_loop`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::capture::Packet;
use crate::event::EventSink;
use crate::metrics::LiveCounters;
use crate::output::evidence::EvidenceRing;
use crate::parallel::PairOwners;
use crate::pipeline::Pipeline;
use crate::shards::{guarded, renew, run_worker, CachePadded, DiedGuard, Shards, Stage, Wants};
use crate::stats::{Merge, Stats};

/// Live counters reach the metrics this often.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// What a feed has next.
pub enum Next<'a, H> {
    /// A packet, the name of its source, and what a worker needs to find its bytes. `restart`:
    /// a new capture starts with it (its time runs before the previous one's end), so every
    /// flow is closed first.
    Packet {
        /// Borrowed where the feed made it: copied whole just after it was written field by
        /// field, the packet cost a store-forwarding stall every time (2% of dissection).
        pkt: &'a Packet<'a>,
        source: &'a Arc<str>,
        handle: H,
        restart: bool,
    },
    /// Nothing came within the wait (a quiet live link): the clock still moves.
    Idle,
}

/// Where packets come from.
pub trait Feed {
    /// A packet as a worker receives it (a descriptor into bytes the worker can read).
    type Handle: Copy + Send;
    /// A live capture: it waits for packets, and has counters for the metrics (read once a
    /// second). A replay does neither, and its loop reads no clock.
    const LIVE: bool = false;
    /// Waits up to `wait` for what comes next and hands it to `take`, which gives back a packet
    /// it could not take (live: its worker's queue was full). False at the end of the input (or
    /// on a stop).
    fn next<T>(&mut self, wait: Duration, take: T) -> bool
    where
        T: FnMut(Next<'_, Self::Handle>) -> Option<Self::Handle>;
    /// A live capture's counters, for the metrics (asked once a second when [`Feed::LIVE`]).
    fn counters(&mut self) -> Option<LiveCounters> {
        None
    }
}

/// Where packets go.
pub trait Dispatch<H> {
    /// One packet; `Err` gives it back when it could not be taken.
    fn packet(&mut self, pkt: &Packet<'_>, source: &Arc<str>, handle: H) -> Result<(), H>;
    /// A new capture starts: close every flow.
    fn restart(&mut self);
    /// No packet, and the clock is at `now`.
    fn idle(&mut self, now: i64);
    /// Packets are held by workers: the feed should wait only briefly, so the merge runs.
    fn busy(&self) -> bool {
        false
    }
    fn counters(&mut self, counters: LiveCounters);
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Runs `feed` into `dispatch` until the feed ends.
pub fn packet_loop<F: Feed, D: Dispatch<F::Handle>>(feed: &mut F, dispatch: &mut D) {
    let mut last_counters = Instant::now();
    loop {
        let wait = if F::LIVE && dispatch.busy() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(100)
        };
        let more = feed.next(wait, |next| match next {
            Next::Packet {
                pkt,
                source,
                handle,
                restart,
            } => {
                if restart {
                    dispatch.restart();
                }
                dispatch.packet(pkt, source, handle).err()
            }
            Next::Idle => {
                dispatch.idle(now_nanos());
                None
            }
        });
        if !more {
            break;
        }
        if F::LIVE && last_counters.elapsed() >= COUNTERS_EVERY {
            last_counters = Instant::now();
            if let Some(c) = feed.counters() {
                dispatch.counters(c);
            }
        }
    }
}

/// One pipeline on the calling thread; detection, metrics and events are in `sink`.
pub struct Inline<'a> {
    pipeline: &'a mut Pipeline,
    sink: &'a mut dyn EventSink,
    /// Set while a packet or a tick is being handled: a panic then is the pipeline's (or the
    /// sink's), not the feed's.
    handling: bool,
}

impl<'a> Inline<'a> {
    pub fn new(pipeline: &'a mut Pipeline, sink: &'a mut dyn EventSink) -> Self {
        Inline {
            pipeline,
            sink,
            handling: false,
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        self.pipeline
    }

    /// Runs `feed` through the pipeline. A panic while a packet is processed (a bug) is
    /// counted, and the pipeline goes on fresh with the next packet, as a worker's does
    /// ([`crate::shards`]); the guard is around the loop, so it costs nothing per packet. A
    /// panic in the feed itself (the file reader, the ring), whose state it may have left half
    /// updated, still ends the process.
    pub fn run<F: Feed>(&mut self, feed: &mut F) {
        loop {
            let run =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| packet_loop(feed, self)));
            match run {
                Ok(()) => return,
                Err(panic) if !self.handling => std::panic::resume_unwind(panic),
                Err(_) => {
                    self.handling = false;
                    renew(self.pipeline);
                }
            }
        }
    }

    /// Closes every flow (a new capture, or the end of the input).
    pub fn finish(&mut self) {
        let sink = &mut *self.sink;
        guarded(self.pipeline, |p| p.finish(&mut *sink));
        // By itself: a panic in the flush must not leave observations held.
        guarded(self.pipeline, |_| sink.drain());
    }
}

impl<H> Dispatch<H> for Inline<'_> {
    fn packet(&mut self, pkt: &Packet<'_>, source: &Arc<str>, _: H) -> Result<(), H> {
        self.handling = true;
        self.pipeline.process(pkt, source, self.sink);
        self.sink.after_packet(
            &self.pipeline.stats,
            self.pipeline.active_flows(),
            pkt.ts_nanos,
        );
        self.handling = false;
        Ok(())
    }

    fn restart(&mut self) {
        self.finish();
    }

    fn idle(&mut self, now: i64) {
        self.handling = true;
        self.sink.tick(now);
        self.sink
            .after_packet(&self.pipeline.stats, self.pipeline.active_flows(), now);
        self.handling = false;
    }

    fn counters(&mut self, counters: LiveCounters) {
        self.sink.live_counters(counters);
    }
}

/// The reader's side of N workers: each packet goes to the worker its host pair hashes to, and
/// what they hand back is merged into capture order for the stage (see [`crate::shards`]).
struct Sharded<'r, 's, H> {
    shards: Shards<H>,
    stage: &'r mut Stage<'s>,
    workers: usize,
    lossless: bool,
    /// Packets handed to each worker.
    worker_packets: Vec<CachePadded<u64>>,
    /// Which worker owns each host pair.
    owners: PairOwners,
    queue_drops: u64,
}

impl<H> Sharded<'_, '_, H> {
    fn worker_packets(&self) -> Vec<u64> {
        self.worker_packets.iter().map(|p| p.0).collect()
    }
}

impl<H> Dispatch<H> for Sharded<'_, '_, H> {
    fn packet(&mut self, pkt: &Packet<'_>, _: &Arc<str>, handle: H) -> Result<(), H> {
        let packets = &self.worker_packets;
        let w = self
            .owners
            .owner(pkt.linktype, pkt.data, self.workers, |w| packets[w].0);
        self.worker_packets[w].0 += 1;
        // Replay waits (merging) while the worker's queue is full; live loses the packet.
        let pushed = self
            .shards
            .push(w, handle, pkt.ts_nanos, self.lossless, self.stage);
        if pushed.is_err() {
            self.queue_drops += 1;
        }
        self.shards.merge_sometimes(self.stage);
        pushed
    }

    fn restart(&mut self) {
        // Every worker closes its flows before the new capture's packets.
        self.shards.flush(self.stage);
    }

    fn idle(&mut self, now: i64) {
        self.shards.merge(self.stage);
        // The clock moves once everything captured before has been released.
        if self.shards.idle() {
            self.shards.tick_now(now, self.stage);
        }
    }

    fn busy(&self) -> bool {
        !self.shards.idle()
    }

    fn counters(&mut self, counters: LiveCounters) {
        self.shards.merge(self.stage);
        let per_worker = self.worker_packets();
        if let Some(d) = self.stage.detection.as_deref_mut() {
            d.set_live(
                LiveCounters {
                    queue_drops: self.queue_drops,
                    ..counters
                },
                &per_worker,
            );
            let (merged, active) = self.shards.counters();
            d.publish(&merged, active, now_nanos());
        }
    }
}

/// What N workers did.
#[derive(Debug, Default)]
pub struct ShardedReport {
    pub stats: Stats,
    /// Flows open when the input ended (before the last flush closed them).
    pub active_flows: usize,
    /// Packets handed to each worker.
    pub worker_packets: Vec<u64>,
    /// Packets lost because their worker's queue was full (live only).
    pub queue_drops: u64,
}

/// Runs `feed` through `workers` worker threads (queues of `capacity` packets). `lossless`: the
/// reader waits for a full queue (replay) instead of losing the packet (live). `process`
/// dissects one packet on a worker: it finds the handle's bytes (with a scratch buffer of the
/// worker's) and calls [`Pipeline::process`] with the sink; each worker gets its own copy
/// (nothing it reads for every packet lives on the reader's stack).
/// `evidence`: one ring per worker.
pub fn run_sharded<F, P>(
    feed: &mut F,
    stage: &mut Stage<'_>,
    workers: usize,
    capacity: usize,
    lossless: bool,
    evidence: Option<Vec<Arc<Mutex<EvidenceRing>>>>,
    process: P,
) -> ShardedReport
where
    F: Feed,
    P: Fn(&F::Handle, &mut Pipeline, &mut dyn EventSink, &mut Vec<u8>) + Clone + Send,
{
    let workers = workers.max(1);
    let wants = Wants::of(stage.detection.as_deref(), &*stage.events);
    let (mut shards, ends) =
        Shards::<F::Handle>::new(workers, capacity, stage.detection.as_deref());
    // Channels checked on the workers, when nothing on the stage reads every observation
    // (events to syslog go out between the alerts). An events output takes the events the
    // workers hand on; their observations are checked where they were made.
    shards.split_detection(
        stage
            .detection
            .as_deref()
            .is_some_and(crate::detection::Detection::split_ok)
            && std::env::var_os("OTWATCH_DETECT_ON_READER").is_none(),
    );
    let died = AtomicBool::new(false);
    let mut report = ShardedReport::default();
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for (w, ends) in ends.into_iter().enumerate() {
            let (process, died) = (process.clone(), &died);
            let mut pipeline = Pipeline::new();
            pipeline.evidence = evidence.as_ref().and_then(|r| r.get(w).cloned());
            handles.push(scope.spawn(move || {
                // Set if the worker panics, so the merge does not wait for it for ever.
                let _died = DiedGuard(died);
                let mut scratch = Vec::new();
                run_worker(ends, pipeline, wants, |h: &F::Handle, pipeline, sink| {
                    process(h, pipeline, sink, &mut scratch)
                })
            }));
        }
        let mut sharded = Sharded {
            shards,
            stage: &mut *stage,
            workers,
            lossless,
            worker_packets: vec![CachePadded::default(); workers],
            owners: PairOwners::default(),
            queue_drops: 0,
        };
        packet_loop(feed, &mut sharded);
        let worker_packets = sharded.worker_packets();
        let Sharded {
            mut shards,
            queue_drops,
            ..
        } = sharded;
        // Workers finish what is queued (their flows closed), then hang up.
        shards.flush(stage);
        let stage_panics = shards.finish(stage, || !died.load(Ordering::Acquire));
        report.worker_packets = worker_packets;
        report.queue_drops = queue_drops;
        for h in handles {
            if let Ok((s, a)) = h.join() {
                report.stats.merge(&s);
                report.active_flows += a;
            }
        }
        // A panic in detection or an output on this thread counts as a worker's does.
        report.stats.worker_panics += stage_panics;
    });
    report
}

#[cfg(test)]
mod tests {
    use crate::event::{Event, EventSink, VecSink};
    use crate::pipeline::Pipeline;
    use crate::replay::replay;

    /// Panics on its third event, as a bug in a dissector or in detection would.
    struct PanicsOnce(Vec<u64>);

    impl EventSink for PanicsOnce {
        fn emit(&mut self, event: Event) {
            self.0.push(event.frame);
            assert!(self.0.len() != 3, "a bug, on frame {}", event.frame);
        }
    }

    /// With one worker, a panic while a packet is processed is counted, and the replay goes on
    /// with a fresh pipeline: later packets are still dissected.
    #[test]
    fn a_panic_with_one_worker_is_counted_and_the_replay_goes_on() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/modbus.pcap");
        let mut all = VecSink::default();
        let clean = replay(std::slice::from_ref(&file), &mut all, &mut Pipeline::new());
        assert_eq!(clean.stats.worker_panics, 0);
        let frames: Vec<u64> = all.0.iter().map(|e| e.frame).collect();
        assert!(frames.len() > 10, "{} events", frames.len());

        let mut buggy = PanicsOnce(Vec::new());
        let report = replay(
            std::slice::from_ref(&file),
            &mut buggy,
            &mut Pipeline::new(),
        );
        assert_eq!(report.stats.worker_panics, 1);
        // Every packet was still read and reached the pipeline, and events came after the
        // panic's.
        assert_eq!(report.files[0].packets, clean.files[0].packets);
        assert_eq!(report.stats.packets, clean.stats.packets);
        let after = buggy.0.iter().filter(|&&f| f > frames[2]).count();
        assert!(after > 5, "{after} events after the panic: {:?}", buggy.0);
    }

    /// With two workers, a panic in the stage (detection or an output, on the reading thread)
    /// is counted as a worker's, and the merge goes on: later events still come, in order.
    #[test]
    fn a_panic_in_the_stage_with_two_workers_is_counted_and_the_replay_goes_on() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/modbus.pcap");
        let mut all = VecSink::default();
        let clean = replay(std::slice::from_ref(&file), &mut all, &mut Pipeline::new());
        let frames: Vec<u64> = all.0.iter().map(|e| e.frame).collect();
        let mut buggy = PanicsOnce(Vec::new());
        let mut stage = crate::shards::Stage {
            detection: None,
            events: &mut buggy,
        };
        let report =
            crate::parallel::replay_sharded(std::slice::from_ref(&file), &mut stage, 2, None);
        assert_eq!(report.stats.worker_panics, 1);
        assert_eq!(report.stats.packets, clean.stats.packets);
        // Every event reached the sink (the third one before it panicked), in one worker's
        // order.
        assert_eq!(buggy.0, frames);
    }

    /// Idles a few times, then panics: a bug in the feed itself.
    struct BrokenFeed(u32);

    impl super::Feed for BrokenFeed {
        type Handle = ();
        const LIVE: bool = true;

        fn next<T>(&mut self, _: std::time::Duration, mut take: T) -> bool
        where
            T: FnMut(super::Next<'_, ()>) -> Option<()>,
        {
            self.0 += 1;
            assert!(self.0 <= 3, "a bug in the feed");
            take(super::Next::Idle);
            true
        }
    }

    /// Counts ticks, and panics on the second.
    #[derive(Default)]
    struct TickPanics(u32);

    impl EventSink for TickPanics {
        fn emit(&mut self, _: Event) {}
        fn tick(&mut self, _: i64) {
            self.0 += 1;
            assert!(self.0 != 2, "a bug in a tick");
        }
    }

    /// A panic in a tick (the pipeline's or the sink's side) is counted; one in the feed, whose
    /// state it may have broken, still ends the run.
    #[test]
    fn a_panic_in_the_feed_is_not_survived() {
        let mut pipeline = Pipeline::new();
        let mut sink = TickPanics::default();
        let mut inline = super::Inline::new(&mut pipeline, &mut sink);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inline.run(&mut BrokenFeed(0))
        }));
        assert!(run.is_err(), "the feed's panic went through");
        assert_eq!(sink.0, 3, "every tick before the feed broke was handed on");
        assert_eq!(
            pipeline.stats.worker_panics, 1,
            "the tick's panic was counted"
        );
    }
}
