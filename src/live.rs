//! `live --workers N`: one capture thread reads the AF_PACKET ring and hands each packet, as a
//! descriptor into the ring (no copy), to the worker that owns its host pair, over one lock-free
//! SPSC queue per worker. Workers own their flow tables. A ring block goes back to the kernel
//! when the capture thread and every worker are done with its packets.
//!
//! Backpressure: a worker whose queue is full loses the packet, and `queue_drops` counts it; the
//! capture thread never waits, so the ring keeps draining (in replay the reader waits instead).
//! What the workers hand back (observations, events) is merged into capture order by
//! [`crate::shards`], as in replay, and reaches detection, metrics and the events output on the
//! capture thread.
//!
//! The reading loop is [`crate::run::packet_loop`], as for one worker; this file gives it its feed
//! and tells a worker how to find a packet's bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::capture::afpacket::{restore_vlan, AfPacketSource, RawPacket, SharedRing};
use crate::capture::{CaptureError, LinkType, Packet};
use crate::event::EventSink;
use crate::metrics::LiveCounters;
use crate::output::evidence::EvidenceRing;
use crate::run::{run_sharded, Feed, Next};
use crate::shards::Stage;
use crate::stats::Stats;

/// Descriptors a worker's queue holds.
pub const QUEUE_CAPACITY: usize = 65_536;

/// How long a stopped live capture goes on reading what the kernel had already captured, at
/// most (a link that keeps the ring full).
pub const STOP_DRAIN: Duration = Duration::from_millis(500);

/// A stopped capture's ring is drained once it has given nothing for this long: longer than a
/// ring block's timeout (10 ms: the kernel hands a block over when it is full or that old) and
/// than libpcap's read timeout (100 ms), so frames captured just before the stop are still
/// handed over.
pub const DRAIN_QUIET: Duration = Duration::from_millis(150);

/// The longest a read waits while draining.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// A live capture asked to stop (SIGINT/SIGTERM) first reads the frames the kernel had already
/// captured: they were seen, and an operator stopping the sensor expects them in the outputs
/// and the summary, not dropped uncounted. The drain ends once the ring has been quiet for
/// [`DRAIN_QUIET`], or after [`STOP_DRAIN`] on a link that keeps it busy.
#[derive(Debug, Default)]
pub struct StopDrain {
    since: Option<Instant>,
    last_frame: Option<Instant>,
}

impl StopDrain {
    /// How long the next read may wait for a frame: `wait` while running; a short poll while
    /// draining; `None` once the drain is over (stop reading).
    pub fn wait(&mut self, stop: bool, wait: Duration) -> Option<Duration> {
        if !stop {
            return Some(wait);
        }
        self.wait_at(Instant::now(), wait)
    }

    fn wait_at(&mut self, now: Instant, wait: Duration) -> Option<Duration> {
        let since = *self.since.get_or_insert(now);
        let quiet_from = self.last_frame.map_or(since, |f| f.max(since));
        let over = now.saturating_duration_since(since) >= STOP_DRAIN
            || now.saturating_duration_since(quiet_from) >= DRAIN_QUIET;
        (!over).then_some(wait.min(DRAIN_POLL))
    }

    /// A frame was read (only noted while draining).
    #[inline]
    pub fn frame(&mut self) {
        if self.since.is_some() {
            self.last_frame = Some(Instant::now());
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
    let ring = source.fanout_ring();
    let mut feed = RingFeed {
        source,
        ring: ring.clone(),
        name,
        stop,
        drain: StopDrain::default(),
        error: None,
    };
    let report = run_sharded(
        &mut feed,
        stage,
        workers,
        QUEUE_CAPACITY,
        false,
        evidence,
        |p: &RawPacket, pipeline, sink, vlan_buf| {
            // The packet goes back to the ring however processing ends (a panic too).
            struct GiveBack<'a>(&'a SharedRing, RawPacket);
            impl Drop for GiveBack<'_> {
                fn drop(&mut self) {
                    // SAFETY: the packet is not used after this; see below.
                    unsafe { self.0.done(&self.1) };
                }
            }
            let _give_back = GiveBack(&ring, *p);
            // SAFETY: `p` came from the ring's source, which outlives this worker (the fan-out
            // joins the workers before it returns), and `done` is called once, by
            // `_give_back`, after the last use of the bytes.
            let bytes = unsafe { ring.bytes(p) };
            let (data, orig_len) = match p.vlan {
                Some(tag) => restore_vlan(vlan_buf, bytes, tag, p.orig_len),
                None => (bytes, p.orig_len),
            };
            let pkt = Packet {
                ts_nanos: p.ts_nanos,
                frame: p.frame,
                linktype: LinkType::ETHERNET,
                orig_len,
                data,
                csum_not_ready: p.csum_not_ready,
            };
            pipeline.process(&pkt, name, sink);
        },
    );
    let error = feed.error.take();
    source.finish_fanout();
    FanoutReport {
        stats: report.stats,
        active_flows: report.active_flows,
        worker_packets: report.worker_packets,
        queue_drops: report.queue_drops,
        error,
    }
}

/// The AF_PACKET ring in fan-out mode: each packet stays in the ring, handed on as a descriptor,
/// until its worker is done with it.
struct RingFeed<'a> {
    source: &'a mut AfPacketSource,
    ring: SharedRing,
    name: &'a Arc<str>,
    stop: &'a AtomicBool,
    drain: StopDrain,
    error: Option<CaptureError>,
}

impl Feed for RingFeed<'_> {
    type Handle = RawPacket;
    const LIVE: bool = true;

    fn next<T>(&mut self, wait: Duration, mut f: T) -> bool
    where
        T: FnMut(Next<'_, RawPacket>) -> Option<RawPacket>,
    {
        let Some(wait) = self.drain.wait(self.stop.load(Ordering::Relaxed), wait) else {
            return false;
        };
        match self.source.next_raw(wait) {
            Ok(Some(p)) => {
                self.drain.frame();
                // SAFETY: the capture thread holds the block of `p` until its next `next_raw`,
                // so these bytes stay valid while `take` runs, even once a worker has called
                // `done` for `p`; they are read here only to pick the worker.
                let data = unsafe { self.ring.bytes(&p) };
                let pkt = Packet {
                    ts_nanos: p.ts_nanos,
                    frame: p.frame,
                    linktype: LinkType::ETHERNET,
                    orig_len: p.orig_len,
                    data,
                    csum_not_ready: p.csum_not_ready,
                };
                let refused = f(Next::Packet {
                    pkt: &pkt,
                    source: self.name,
                    handle: p,
                    restart: false,
                });
                if let Some(p) = refused {
                    // SAFETY: the packet never reached a worker; this is its only `done`.
                    unsafe { self.ring.done(&p) };
                }
                true
            }
            Ok(None) => {
                f(Next::Idle);
                true
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    fn counters(&mut self) -> Option<LiveCounters> {
        let l = self.source.stats();
        Some(LiveCounters {
            kernel_drops: l.kernel_drops,
            ring_freezes: l.kernel_freeze_q_cnt,
            queue_drops: 0,
            unread_at_stop: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Running: reads wait as asked. Stopped: reads poll briefly, and go on while frames come
    /// (each one restarts the quiet time) until the drain's time is up; a ring quiet for
    /// `DRAIN_QUIET` ends it sooner. Instants are given, so nothing here depends on the clock.
    #[test]
    fn a_stopped_capture_drains_until_quiet_or_its_time_is_up() {
        let ms = Duration::from_millis;
        let wait = ms(100);
        let t0 = Instant::now();
        let mut d = StopDrain::default();
        assert_eq!(d.wait(false, wait), Some(wait));
        assert_eq!(d.wait_at(t0, wait), Some(DRAIN_POLL));
        assert_eq!(d.wait_at(t0 + ms(100), wait), Some(DRAIN_POLL));
        assert_eq!(
            d.wait_at(t0 + DRAIN_QUIET, wait),
            None,
            "quiet since the stop"
        );

        // Frames keep coming: going on past the quiet time, ended by the drain's limit.
        let mut d = StopDrain::default();
        assert_eq!(d.wait_at(t0, wait), Some(DRAIN_POLL));
        let mut t = t0;
        while t < t0 + STOP_DRAIN {
            d.last_frame = Some(t);
            assert_eq!(d.wait_at(t + ms(1), wait), Some(DRAIN_POLL), "{:?}", t - t0);
            t += ms(100);
        }
        d.last_frame = Some(t0 + STOP_DRAIN - ms(1));
        assert_eq!(d.wait_at(t0 + STOP_DRAIN, wait), None, "the drain's limit");

        // Quiet after the last frame.
        let mut d = StopDrain::default();
        d.wait_at(t0, wait);
        d.last_frame = Some(t0 + ms(200));
        assert_eq!(d.wait_at(t0 + ms(300), wait), Some(DRAIN_POLL));
        assert_eq!(d.wait_at(t0 + ms(200) + DRAIN_QUIET, wait), None);

        // Not noted while running.
        let mut d = StopDrain::default();
        d.frame();
        assert!(d.last_frame.is_none());
    }
}
