//! N workers behind one reader, with their output put back in capture order.
//!
//! The reader (replay's file reader, or live's capture thread) numbers every packet (`seq`) and
//! hands it to the worker that owns its host pair, over that worker's lock-free SPSC queue
//! (rtrb). A worker runs its own [`Pipeline`] (flows, dissectors, evidence ring) and turns each
//! event into what the run needs: while learning (or with events to syslog), the compact
//! observation detection and per-channel metrics read (built on the worker, so that work is
//! parallel too); once learning has ended, its own channels' checks
//! ([`otwatch_models::split::WorkerEngine`], from [`Job::Detect`]) and only what they found
//! and what spans channels ([`Payload`]), with the observation for per-channel metrics; and
//! the event itself when an events output is on (after its observation's checks).
//! Each goes back over a second SPSC queue, tagged with its packet's `seq`; after each packet
//! the worker publishes the last `seq` it finished (but for observations it holds for a batch).
//!
//! The reader merges: an item is released once every worker has finished every packet before
//! it, so the stage sees observations (and the workers' findings) in the order one worker
//! would have produced them, and detection's clock ticks after the same packets (the reader
//! decides the ticks from the timestamps of all packets, as [`crate::detection::TickClock`]
//! does on one worker, and ticks the workers with [`Job::Tick`]). A flush (the end of the
//! input, or a capture that starts before the last one ended) goes to every worker under one
//! `seq`, and its events are ordered by [`crate::event::FlushKey`], as one worker orders them.
//!
//! Memory is bounded: at most `workers × queue capacity` packets are in flight (handed out and
//! not yet finished by every worker before them); past that, replay waits and live drops (and
//! counts), so the items the merge holds back for a slow worker stay bounded too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otwatch_models::detect::{Heard, Note};
use otwatch_models::split::WorkerEngine;
use otwatch_models::{Alert, Baseline, Found, Observation};

use crate::detection::observe::observe;
use crate::detection::{Detection, TickClock};
use crate::event::{Event, EventSink, FlushKey};
use crate::pipeline::Pipeline;
use crate::stats::{Merge, Stats};

/// Items a worker's output queue holds.
const OUT_CAPACITY: usize = 8192;
/// Released observations waiting to be filled again, per worker: as many as the worker's output
/// queue holds. With fewer, the worker ran out of spares while the reader held many (a window of
/// packets in flight), made new ones, and the reader freed the surplus when they came back: on
/// steady-site with two workers, 86 000 observations freed across cores (mimalloc's cross-thread
/// free on the reader, the thread that bounds two workers); with as many, a few hundred. The
/// reader hands back every observation it is done with (the queue's room bounds them); the
/// worker takes them all back whenever it needs one and has none kept, when idle and every 4096
/// packets, keeps the small ones (as the reader judged them: [`Spare`]) and frees the others on
/// its own core. Each kept one still holds what it held until it is filled again: at most about
/// 20 MB per worker stay held after a burst (8192 x (about 300 bytes + 4 accesses + room for 256
/// values)); between two take-backs the queue's 8192 slots can hold large ones too, as the
/// output queue can. The raised lists of candidate alerts go back through the same queue
/// ([`Back`]): an item hands back at most one observation or one list.
const SPARE_CAPACITY: usize = OUT_CAPACITY;

/// The cache lines an observation spans.
const OBSERVATION_LINES: usize = std::mem::size_of::<Observation>().div_ceil(64);

/// Whether a released observation is small enough to be kept to be filled again; a larger one
/// is freed by the worker when it comes back.
fn small_enough_to_keep(o: &Observation) -> bool {
    // By room held, not by length: an emptied list can hold much. Numbers and bytes count
    // together (a number is eight bytes), up to 2 KiB, as much as when every value was a
    // number: the boxes of S7 reads of up to 2048 data bytes are kept (the S7 dissector makes
    // room for a response's data at once, and holds byte runs as bytes). With room for 128
    // values (when a byte was held as a number), steady-site's 222-byte reads came back too
    // large, and every one made its values' room again on a new box (2.753 G instructions with
    // two workers, 2.741 G with 256).
    let room = o.values.capacity() * std::mem::size_of::<f64>() + o.bytes.capacity();
    o.accesses.capacity() <= 4 && room <= otwatch_models::obs::BYTES_AT_ONCE
}
/// An observation the reader is done with, on its way back to its worker, with whether the
/// worker should keep it to fill again ([`small_enough_to_keep`]): judged on the reader, which
/// has just read it, so that the worker takes it back without touching it (its lines are long
/// gone from the worker's cache; reading them there cost a miss per observation, the worker's
/// costliest load after the queue's slots).
pub(crate) struct Spare {
    obs: Box<Observation>,
    keep: bool,
}

impl Spare {
    fn of(obs: Box<Observation>) -> Spare {
        Spare {
            keep: small_enough_to_keep(&obs),
            obs,
        }
    }
}

/// What the reader hands back to a worker: an observation to fill again, or a list of
/// candidate alerts raised (`Payload::Alerts`), whose remains the worker drops and whose
/// room and box it fills again. Dropped on the reader, every candidate of a flood freed
/// memory the worker had allocated and let go of a reference to the capture's name the worker
/// had taken: each a cache line crossing between the cores (the reference count's, one
/// line for every alert of a capture).
pub(crate) enum Back {
    Observation(Spare),
    Alerts(Box<Payload>),
}

/// Lists of raised alerts a worker keeps to fill again, and the most room a kept one may hold
/// (in alerts: most observations raise one or two).
const SPENT_KEPT: usize = 64;
const SPENT_ROOM: usize = 16;

/// Workers publish their counters this often (metrics while running).
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Slots ahead of the one written that [`push_ahead`] asks for.
const PUSH_AHEAD: usize = 8;

/// Pushes `job` to a worker's queue as `rtrb::Producer::push` does, and asks for the slot
/// [`PUSH_AHEAD`] places further with the intent to write: each slot was last read on the
/// worker's core, and the reader's stores into it waited for the worker's copy to be
/// invalidated (half of `run_sharded`'s own samples, two workers on steady-site). Asked for
/// now, it comes while the packets in between are read. With fewer free slots than that, the
/// job is pushed without the hint.
fn push_ahead<T>(jobs: &mut rtrb::Producer<T>, job: T) -> Result<(), rtrb::PushError<T>> {
    let Ok(mut chunk) = jobs.write_chunk_uninit(PUSH_AHEAD + 1) else {
        return jobs.push(job);
    };
    let (first, second) = chunk.as_mut_slices();
    // Past the ring's end, the chunk goes on at its start.
    let ahead = first
        .get(PUSH_AHEAD)
        .or_else(|| second.get(PUSH_AHEAD - first.len()));
    if let Some(slot) = ahead {
        crate::prefetch::prefetch_lines_for_write(slot, 1);
    }
    chunk.fill_from_iter(std::iter::once(job));
    Ok(())
}

/// What a worker is asked to do.
pub(crate) enum Job<P> {
    Packet(u64, P),
    /// Close every flow (end of input, or a new capture): its events under this `seq`.
    Flush(u64),
    /// Close the flows idle at this capture time (the reader's sweep clock).
    Sweep(u64, i64),
    /// Check the channels this worker owns from now on ([`otwatch_models::split`]).
    Detect(u64, Arc<WorkerStart>),
    /// Detection's clock ticks at this capture time (channels checked on the workers).
    Tick(u64, i64),
}

/// What a worker needs to check its channels: the baseline, when detection started and how
/// far the clock had ticked.
pub(crate) struct WorkerStart {
    baseline: Arc<Baseline>,
    start: i64,
    tick_high: i64,
}

/// What an item carries besides an observation. Boxed in the item, whatever its size.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Payload {
    /// An event, for an events output.
    Event(Event),
    /// The candidate alerts a worker's detection found in one observation (their lists move
    /// as they are: a flood has one or two per PDU).
    Alerts(Found),
    /// What a worker's detection says of what spans channels about one observation.
    Note(Note),
    /// A worker's share of a tick: what its timers and windows raised, the learned devices it
    /// heard since its last tick, and the latest observation it saw.
    Tick {
        found: Vec<Alert>,
        heard: Vec<Heard>,
        seen: i64,
        /// The counts since they were last handed on (as [`Payload::Counts`]).
        observations: u64,
        untracked: u64,
    },
    /// At a flush: the observations a worker checked and the PDUs it left out past the runtime
    /// bound since it last said, and the latest observation it saw.
    Counts {
        observations: u64,
        untracked: u64,
        seen: i64,
    },
}

/// What a worker hands back for one event. Small (32 bytes, two to a cache line): each slot
/// of the queue is a cache line the worker must take back from the reader's core to write it,
/// and an item of 80 bytes (with its flush key inline) made that the worker's costliest store.
pub(crate) struct Item {
    seq: u64,
    obs: Option<Box<Observation>>,
    /// Boxed: an event is large, and most runs carry none (nor alerts, nor notes).
    payload: Option<Box<Payload>>,
    /// The order of an item of a job every worker does under one `seq` (a flush, a sweep):
    /// their items are sorted by it. None for a packet's, which come from one worker in order.
    key: Option<Box<FlushKey>>,
}

/// A value on a cache line of its own. What one core writes for every packet must not share a
/// line with what another core reads or writes as often: two workers' `done` counters, or the
/// reader's packet counters beside them, made every packet a cache-line transfer between cores.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
pub(crate) struct CachePadded<T>(pub T);

/// What the run wants from the workers' events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wants {
    /// Observations, for detection and per-channel metrics.
    pub observations: bool,
    /// The events themselves, for an events output.
    pub events: bool,
    /// Point values and item data in the events.
    pub detail: bool,
    /// The observations on the reader for per-channel metrics, when the workers check the
    /// channels.
    pub channel_metrics: bool,
}

impl Wants {
    pub fn of(detection: Option<&Detection>, events: &dyn EventSink) -> Wants {
        Wants {
            observations: detection.is_some_and(Detection::wants_observations),
            events: events.wants_events() || detection.is_some_and(Detection::wants_event_lines),
            detail: detection.is_some_and(|d| d.engine.is_some()) || events.wants_detail(),
            channel_metrics: detection.is_some_and(Detection::wants_channel_metrics),
        }
    }
}

/// The worker's event sink: events into items, pushed to the reader.
struct ItemSink {
    seq: u64,
    out: rtrb::Producer<Item>,
    /// Observations and lists of candidate alerts the reader is done with, to be filled again:
    /// what they hold is then allocated, freed and reference-counted on this worker's core
    /// only (the reader dropping them made every one a cross-core free and a shared reference
    /// count).
    spare: rtrb::Consumer<Back>,
    /// The small ones taken back, at most [`SPARE_CAPACITY`]; boxed, because the box itself
    /// is what goes to the reader again.
    #[allow(clippy::vec_box)]
    kept: Vec<Box<Observation>>,
    /// Lists of candidate alerts back from the reader, emptied, at most [`SPENT_KEPT`]; boxed,
    /// as they go to the reader again.
    #[allow(clippy::vec_box)]
    spent: Vec<Box<Payload>>,
    wants: Wants,
    /// The current job is a flush or a sweep: its items carry their keys.
    keyed: bool,
    /// The channels this worker owns are checked here, once the reader says so.
    engine: Option<WorkerEngine>,
    found: Found,
    notes: Vec<Note>,
    /// The engine's counts last handed on: observations, PDUs past the runtime bound.
    counted: (u64, u64),
    /// PDUs held to be checked in a batch: the dissectors' code and detection's do not fit the
    /// instruction cache together, and each runs from a warm one in turns, as on one worker
    /// ([`Detection::hold`]). While some are held, the worker says it finished only the
    /// packets before the first.
    held: Vec<Held>,
    /// The events of the PDUs held that have one, in order.
    held_events: VecDeque<Event>,
    /// Panics in this worker's detection (a bug), caught: counted with the pipeline's.
    panics: u64,
}

/// Observations a worker holds for a batch of checks.
const WORKER_BATCH: usize = 64;

/// A PDU held for a batch of checks ([`ItemSink::held`]): its packet's `seq`, its key, its
/// observation (none for an event detection has no use for), and whether it has an event for
/// an events output (the next of [`ItemSink::held_events`]: an event is large, and a batch's
/// entries are written and read in turns), handed on after the observation's checks, so that
/// the worker's items stay in packet order.
struct Held {
    seq: u64,
    key: FlushKey,
    obs: Option<Box<Observation>>,
    event: bool,
}

impl EventSink for ItemSink {
    fn emit(&mut self, event: Event) {
        let obs = if self.wants.observations {
            observe(&event)
        } else {
            None
        };
        let key = event.flush_key();
        let event = self.wants.events.then_some(event);
        if self.engine.is_some() {
            let obs = obs.map(|o| match self.box_to_hold() {
                Some(mut b) => {
                    *b = o;
                    b
                }
                None => Box::new(o),
            });
            if obs.is_none() && event.is_none() {
                return;
            }
            let has_event = event.is_some();
            // Its event waits with the events held before it (after them, if checked at once).
            self.held_events.extend(event);
            return self.hold_entry(Held {
                seq: self.seq,
                key,
                obs,
                event: has_event,
            });
        }
        self.push(key, obs, event);
    }

    fn observed(&mut self, key: FlushKey, obs: &mut Box<Observation>) {
        if self.engine.is_some() {
            return self.hold(key, obs);
        }
        let obs = crate::event::take_observation(obs, self.spare_box());
        self.push_boxed(key, Some(obs), None);
    }

    fn wants_events(&self) -> bool {
        self.wants.events || self.wants.observations
    }

    fn wants_detail(&self) -> bool {
        self.wants.detail
    }

    fn wants_observations(&self) -> bool {
        self.wants.observations
    }

    fn wants_event_out(&self) -> bool {
        self.wants.events
    }
}

impl ItemSink {
    fn new(out: rtrb::Producer<Item>, spare: rtrb::Consumer<Back>, wants: Wants) -> Self {
        ItemSink {
            seq: 0,
            out,
            spare,
            kept: Vec::new(),
            spent: Vec::new(),
            wants,
            keyed: false,
            engine: None,
            found: Found::default(),
            notes: Vec::new(),
            counted: (0, 0),
            held: Vec::new(),
            held_events: VecDeque::new(),
            panics: 0,
        }
    }

    /// Runs `work` (detection's, on this worker) and counts a panic in it (a bug): the worker
    /// goes on, as one worker goes on after a panic in detection, and the merge never waits
    /// for what a dead worker would not finish.
    fn guard(&mut self, work: impl FnOnce(&mut ItemSink)) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(self)));
        if run.is_err() {
            self.panics += 1;
        }
    }

    /// A box to hold the next observation in, one checked already: with per-channel metrics
    /// one the reader gave back (the observations go there), else one kept here.
    fn box_to_hold(&mut self) -> Option<Box<Observation>> {
        if self.wants.channel_metrics {
            self.spare_box()
        } else {
            self.kept.pop()
        }
    }

    /// Holds `obs` for the next batch of checks (its box changes places with one checked
    /// already); a flush's or a sweep's is checked at once, after those held.
    fn hold(&mut self, key: FlushKey, obs: &mut Box<Observation>) {
        let spare = self.box_to_hold();
        let b = crate::event::take_observation(obs, spare);
        self.hold_entry(Held {
            seq: self.seq,
            key,
            obs: Some(b),
            event: false,
        });
    }

    /// Holds a PDU for the next batch of checks (its event, if it has one, already last of
    /// `held_events`); a flush's or a sweep's is checked and handed on at once, after those
    /// held.
    fn hold_entry(&mut self, mut h: Held) {
        if self.keyed {
            self.drain_held();
            if let Some(o) = &h.obs {
                self.check(h.key, o);
            }
            return self.hand_on_held(&mut h);
        }
        self.held.push(h);
        if self.held.len() >= WORKER_BATCH {
            self.drain_held();
        }
    }

    /// Checks the PDUs held, in order, each under its packet's `seq`, and hands each on after
    /// its checks. A panic in one's checks (a bug) loses those checks only; its event and the
    /// rest are handed on.
    fn drain_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let seq = self.seq;
        let mut held = std::mem::take(&mut self.held);
        let mut next = 0;
        while next < held.len() {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                while let Some(h) = held.get_mut(next) {
                    next += 1;
                    self.seq = h.seq;
                    if let Some(o) = &h.obs {
                        self.check(h.key, o);
                    }
                    self.hand_on_held(h);
                }
            }));
            if run.is_err() {
                self.panics += 1;
                // What its checks found before the panic is lost with them, not handed on with
                // the next one's.
                self.found.clear();
                self.notes.clear();
                // The one whose checks panicked is still handed on.
                if let Some(h) = held.get_mut(next - 1) {
                    self.hand_on_held(h);
                }
            }
        }
        held.clear();
        self.seq = seq;
        self.held = held;
    }

    /// A held PDU, checked, to the reader: its observation when per-channel metrics are kept
    /// there (after what its checks found; it comes back to be filled again), else kept to be
    /// filled again here; then its event.
    fn hand_on_held(&mut self, h: &mut Held) {
        if let Some(b) = h.obs.take() {
            if self.wants.channel_metrics {
                self.push_boxed(h.key, Some(b), None);
            } else if self.kept.len() < SPARE_CAPACITY && small_enough_to_keep(&b) {
                self.kept.push(b);
            }
        }
        if std::mem::take(&mut h.event) {
            if let Some(e) = self.held_events.pop_front() {
                self.push_boxed(h.key, None, Some(Box::new(Payload::Event(e))));
            }
        }
    }

    /// The packets before `next` are finished, but for those whose observations are held.
    fn finished_before(&self, next: u64) -> u64 {
        self.held.first().map_or(next, |h| h.seq)
    }

    /// Checks `o` against the channels' baseline here; what the stage needs of it (the alerts
    /// it raised, its notes) goes to the reader.
    fn check(&mut self, key: FlushKey, o: &Observation) {
        let Some(engine) = &mut self.engine else {
            return;
        };
        if self.keyed {
            // A flush's or a sweep's items are ordered with every worker's: each scan note
            // names its capture.
            engine.forget_source();
        }
        #[cfg(test)]
        tests::panic_if_asked(o);
        engine.observe(o, &mut self.found, &mut self.notes);
        if self.found.is_empty() && self.notes.is_empty() {
            return;
        }
        self.hand_on(key);
    }

    /// The alerts found and the notes made, to the reader. Out of line: most observations
    /// have a note at most.
    #[inline(never)]
    fn hand_on(&mut self, key: FlushKey) {
        if !self.found.is_empty() {
            let payload = self.alerts_payload();
            self.push_boxed(key, None, Some(payload));
        }
        let mut notes = std::mem::take(&mut self.notes);
        for n in notes.drain(..) {
            self.push_boxed(key, None, Some(Box::new(Payload::Note(n))));
        }
        self.notes = notes;
    }

    /// The candidate alerts found, as a list in a box to the reader: a box and a list back
    /// from it when there is one (the list found so far goes in the box, and the emptied one
    /// takes its place, its room filled next), else new ones.
    fn alerts_payload(&mut self) -> Box<Payload> {
        let mut found = std::mem::take(&mut self.found);
        if self.spent.is_empty() {
            self.take_back();
        }
        let Some(mut b) = self.spent.pop() else {
            // Written into its box: built aside, the list was copied in with an event's room.
            return Box::write(Box::new_uninit(), Payload::Alerts(found));
        };
        match &mut *b {
            Payload::Alerts(list) => {
                std::mem::swap(list, &mut found);
                self.found = found;
            }
            other => *other = Payload::Alerts(found),
        }
        b
    }

    /// The clock's tick at `now`: the worker's share of it to the reader.
    fn tick(&mut self, now: i64) {
        self.drain_held();
        let Some(engine) = &mut self.engine else {
            return;
        };
        let (mut found, mut heard) = (Vec::new(), Vec::new());
        let seen = engine.tick(now, &mut found, &mut heard);
        // The counts too, for the metrics and summary of a run that goes on (live).
        let (observations, untracked) = self.counted_since();
        self.push_boxed(
            no_key(now),
            None,
            Some(Box::new(Payload::Tick {
                found,
                heard,
                seen,
                observations,
                untracked,
            })),
        );
    }

    /// The engine's counts since they were last handed on: observations, PDUs past the runtime
    /// bound.
    fn counted_since(&mut self) -> (u64, u64) {
        let Some(engine) = &self.engine else {
            return (0, 0);
        };
        let now = (engine.observations, engine.untracked_channels());
        let since = (now.0 - self.counted.0, now.1 - self.counted.1);
        self.counted = now;
        since
    }

    /// The engine's counts since they were last handed on, to the reader.
    fn counts(&mut self) {
        let Some(seen) = self.engine.as_ref().map(WorkerEngine::seen) else {
            return;
        };
        let (observations, untracked) = self.counted_since();
        self.push_boxed(
            no_key(seen),
            None,
            Some(Box::new(Payload::Counts {
                observations,
                untracked,
                seen,
            })),
        );
    }

    /// The current job is a flush or a sweep (`keyed`), or no longer: its items are ordered
    /// with every worker's, so the first scan note of each names its capture.
    fn keyed(&mut self, keyed: bool) {
        self.drain_held();
        self.keyed = keyed;
        if let Some(e) = &mut self.engine {
            e.forget_source();
        }
    }

    /// An observation to fill again, if one came back: those kept first, the queue only
    /// when they ran out (the queue's index is written by the reader for every observation it
    /// hands back; reading it for every one the worker fills moved its cache line between the
    /// cores each time).
    fn spare_box(&mut self) -> Option<Box<Observation>> {
        if self.kept.is_empty() {
            self.take_back();
        }
        let spare = self.kept.pop();
        // The next one to fill was last read on the reader's core: asked for now, to be
        // written, its lines come while this observation's packet is dissected.
        if let Some(next) = self.kept.last() {
            crate::prefetch::prefetch_lines_for_write(&**next, OBSERVATION_LINES);
        }
        spare
    }

    /// Takes back every observation the reader returned: the small ones are kept (the first
    /// [`SPARE_CAPACITY`]), the others freed here, on the core that allocated what they hold;
    /// and every list of candidate alerts, emptied here (the first [`SPENT_KEPT`] of small
    /// room kept).
    fn take_back(&mut self) {
        while let Ok(back) = self.spare.pop() {
            match back {
                Back::Observation(s) => {
                    if s.keep && self.kept.len() < SPARE_CAPACITY {
                        self.kept.push(s.obs);
                    }
                }
                Back::Alerts(mut b) => {
                    let Payload::Alerts(list) = &mut *b else {
                        continue;
                    };
                    list.clear();
                    // A list that once held many keeps its room: not kept to be filled again.
                    if self.spent.len() < SPENT_KEPT
                        && list.alerts.capacity() <= SPENT_ROOM
                        && list.bare.capacity() <= SPENT_ROOM
                    {
                        self.spent.push(b);
                    }
                }
            }
        }
    }

    /// One PDU's item to the reader: its observation (in a spare box when one is back), its
    /// event.
    fn push(&mut self, key: FlushKey, obs: Option<Observation>, event: Option<Event>) {
        let event = event.map(|e| Box::new(Payload::Event(e)));
        if obs.is_none() && event.is_none() {
            return;
        }
        let obs = obs.map(|o| match self.spare_box() {
            Some(mut b) => {
                *b = o;
                b
            }
            None => Box::new(o),
        });
        self.push_boxed(key, obs, event);
    }

    fn push_boxed(
        &mut self,
        key: FlushKey,
        obs: Option<Box<Observation>>,
        payload: Option<Box<Payload>>,
    ) {
        // Lossless: the reader always drains (it only ever waits by draining). Room first, so
        // that the item is written once, into its slot: an item built aside to be pushed again
        // after a full queue was written field by field and then read whole for the slot, a
        // load that waited for the stores to reach the cache (a quarter of a worker's time).
        while self.out.is_full() {
            if self.out.is_abandoned() {
                return;
            }
            std::thread::yield_now();
        }
        // Cannot fail: only this thread fills the queue, and it has room.
        let _ = self.out.push(Item {
            seq: self.seq,
            obs,
            payload,
            key: self.keyed.then(|| Box::new(key)),
        });
    }
}

/// The key of an item no flush orders (a tick's share): never read, the job being unkeyed.
fn no_key(ts: i64) -> FlushKey {
    let none = (std::net::IpAddr::from([0, 0, 0, 0]), 0);
    FlushKey {
        ts,
        frame: 0,
        src: none,
        dst: none,
    }
}

/// Held by a worker thread: sets its flag if the thread unwinds (a panic), so that the merge
/// stops waiting for what that worker will never finish.
pub(crate) struct DiedGuard<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for DiedGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// A worker's ends of its queues.
pub(crate) struct WorkerEnds<P> {
    jobs: rtrb::Consumer<Job<P>>,
    out: rtrb::Producer<Item>,
    spare: rtrb::Consumer<Back>,
    done: Arc<CachePadded<AtomicU64>>,
    counters: Arc<Mutex<(Stats, usize)>>,
}

/// Runs `work` on a pipeline. A panic is a bug, but must not stop the run: the pipeline goes on
/// fresh (its counters and evidence ring kept, its flows and protocol state lost), and
/// `worker_panics` counts it for the summary and the exit status. On a worker the job still
/// counts as finished (the merge never waits for it, the other workers' output keeps flowing).
pub(crate) fn guarded(pipeline: &mut Pipeline, work: impl FnOnce(&mut Pipeline)) {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(pipeline)));
    if run.is_err() {
        renew(pipeline);
    }
}

/// After a panic: a fresh pipeline with the counters (one more panic) and the evidence ring. A
/// ring the panic left locked (poisoned) is emptied and used again: otherwise nothing would be
/// recorded for the rest of the run, and every alert's evidence would fail.
pub(crate) fn renew(pipeline: &mut Pipeline) {
    if let Some(ring) = &pipeline.evidence {
        if let Err(poisoned) = ring.lock() {
            let mut r = poisoned.into_inner();
            r.empty();
            ring.clear_poison();
        }
    }
    let mut fresh = Pipeline::new();
    fresh.stats = std::mem::take(&mut pipeline.stats);
    fresh.stats.worker_panics += 1;
    // The old flows, and what they held, are gone with the old pipeline: the gauges of what
    // flows hold start again from nothing (their bounds would otherwise bite early).
    let tcp = &mut fresh.stats.tcp;
    tcp.ooo_bytes_held = 0;
    tcp.tail_bytes_held = 0;
    tcp.dnp3_reassembly_bytes = 0;
    tcp.s7_reassembly_bytes = 0;
    fresh.evidence = pipeline.evidence.take();
    fresh.reader_sweeps = pipeline.reader_sweeps;
    *pipeline = fresh;
}

/// Runs a worker until the reader hangs up and its queue is empty. `process` dissects one
/// packet: it resolves the descriptor to bytes and calls [`Pipeline::process`] with the sink.
/// Returns the worker's counters and the flows it had open when the input ended (before the
/// last flush closed them).
pub(crate) fn run_worker<P>(
    ends: WorkerEnds<P>,
    mut pipeline: Pipeline,
    wants: Wants,
    mut process: impl FnMut(&P, &mut Pipeline, &mut dyn EventSink),
) -> (Stats, usize) {
    let WorkerEnds {
        mut jobs,
        out,
        spare,
        done,
        counters,
    } = ends;
    let mut sink = ItemSink::new(out, spare, wants);
    // The reader sweeps idle flows for every worker at once (Job::Sweep).
    pipeline.reader_sweeps = true;
    let mut last_counters = Instant::now();
    let mut n: u64 = 0;
    let publish = |pipeline: &Pipeline| {
        if let Ok(mut c) = counters.lock() {
            *c = (pipeline.stats.clone(), pipeline.active_flows());
        }
    };
    let mut idle = 0u32;
    let mut open_at_flush = 0;
    // The packets before this one were dissected (their observations may still be held).
    let mut packets_done = 0;
    loop {
        let job = jobs.pop();
        if job.is_ok() {
            idle = 0;
        }
        match job {
            Ok(Job::Packet(seq, p)) => {
                sink.seq = seq;
                // A panic is a bug, but must not stop the run: the worker goes on with a fresh
                // pipeline, and the packet still counts as finished (the merge never waits for
                // it), so the other workers' output keeps flowing. Counted and reported.
                guarded(&mut pipeline, |pipeline| process(&p, pipeline, &mut sink));
                if sink.panics > 0 {
                    pipeline.stats.worker_panics += std::mem::take(&mut sink.panics);
                }
                packets_done = seq + 1;
                done.0
                    .store(sink.finished_before(seq + 1), Ordering::Release);
                n += 1;
                // Every 4096 packets: the metrics' counters lag by at most that per worker; and
                // what the reader handed back is taken back (large ones freed), should no
                // observation have asked for a spare since.
                if n.is_multiple_of(4096) {
                    last_counters = Instant::now();
                    publish(&pipeline);
                    sink.take_back();
                }
            }
            Ok(Job::Sweep(seq, now)) => {
                sink.seq = seq;
                sink.keyed(true);
                guarded(&mut pipeline, |pipeline| pipeline.sweep(now, &mut sink));
                sink.keyed(false);
                pipeline.stats.worker_panics += std::mem::take(&mut sink.panics);
                done.0.store(seq + 1, Ordering::Release);
            }
            Ok(Job::Flush(seq)) => {
                sink.seq = seq;
                // Open when the input ended (the last flush is the end's), as one worker reports.
                open_at_flush = pipeline.active_flows();
                sink.keyed(true);
                guarded(&mut pipeline, |pipeline| pipeline.finish(&mut sink));
                sink.keyed(false);
                sink.guard(ItemSink::counts);
                pipeline.stats.worker_panics += std::mem::take(&mut sink.panics);
                done.0.store(seq + 1, Ordering::Release);
            }
            Ok(Job::Detect(seq, start)) => {
                sink.guard(|sink| {
                    sink.engine = Some(WorkerEngine::new(
                        Arc::clone(&start.baseline),
                        start.start,
                        start.tick_high,
                    ));
                });
                pipeline.stats.worker_panics += std::mem::take(&mut sink.panics);
                done.0.store(seq + 1, Ordering::Release);
            }
            Ok(Job::Tick(seq, now)) => {
                sink.seq = seq;
                sink.guard(|sink| sink.tick(now));
                pipeline.stats.worker_panics += std::mem::take(&mut sink.panics);
                done.0.store(seq + 1, Ordering::Release);
            }
            // Abandoned, then empty: nothing more can come (a job pushed between a failed pop
            // and the hang-up is still there).
            Err(_) if jobs.is_abandoned() && jobs.is_empty() => {
                if !sink.held.is_empty() {
                    sink.drain_held();
                    done.0.store(packets_done, Ordering::Release);
                }
                break;
            }
            Err(_) if jobs.is_abandoned() => continue,
            Err(_) => {
                // Nothing to do: what is held is checked, and its packets are finished.
                if !sink.held.is_empty() {
                    sink.drain_held();
                    pipeline.stats.worker_panics += std::mem::take(&mut sink.panics);
                    done.0.store(packets_done, Ordering::Release);
                    continue;
                }
                if last_counters.elapsed() >= STATS_EVERY {
                    last_counters = Instant::now();
                    publish(&pipeline);
                }
                // What came back while the worker had nothing to fill: large ones freed now.
                sink.take_back();
                // Briefly polite, then asleep: an idle worker must not take a core from the
                // reader, which reads, merges and keeps what spans channels.
                idle += 1;
                if idle < 64 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
                continue;
            }
        }
    }
    publish(&pipeline);
    (pipeline.stats.clone(), open_at_flush)
}

/// The reader waits for a worker (replay: its queue is full, or the packets in flight are at
/// the bound); `waited` is when this wait began. For its first 50 µs a yield, for a wait that
/// is short, as it is when the reader only reads and a worker frees a slot in a moment (two
/// workers, dissection: sleeping from the first pause took steady-site from 62 to 76 ms). Then
/// a sleep: on two cores the reader and two workers are three threads, and a reader yielding
/// through a long wait keeps a core from the worker it waits for (with detection, steady-site
/// took 151 ms with yields only, 127 ms with the sleep; bench-ics, dissection: 677 ms when the
/// yields ended after 32 of them, 560 ms after 50 µs). 20 µs asked; with Linux's default timer
/// slack about 70 µs, far less than a worker's queue holds.
fn reader_pause(waited: &mut Option<Instant>) {
    let since = *waited.get_or_insert_with(Instant::now);
    if since.elapsed() < READER_YIELDING {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// How long the reader yields in one wait before it sleeps.
const READER_YIELDING: Duration = Duration::from_micros(50);

/// The reader's side of one worker.
struct Lane<P> {
    /// `None` once the reader hung up.
    jobs: Option<rtrb::Producer<Job<P>>>,
    out: rtrb::Consumer<Item>,
    /// Released observations and raised lists of candidate alerts, back to the worker to be
    /// filled again (dropped here when the queue is full).
    spare: rtrb::Producer<Back>,
    done: Arc<CachePadded<AtomicU64>>,
    counters: Arc<Mutex<(Stats, usize)>>,
    /// Items taken from the worker, not yet released.
    held: VecDeque<Item>,
    /// The worker's `done` as the last merge read it.
    done_seen: u64,
    /// The capture the worker's last scan note named.
    source: Option<Arc<str>>,
}

/// The lane of a job handed to every worker ([`InFlight`]).
const EVERY_LANE: u32 = u32::MAX;

/// A job handed out and not yet released: its `seq`, capture time and lane (or
/// [`EVERY_LANE`]). One queue for all lanes, in `seq` order: the first that is unfinished is
/// the bound of what can be released, and everything before it is finished.
type InFlight = (u64, i64, u32);

/// The workers' counters as last published, added up, and their open flows.
fn sum_counters<P>(lanes: &[Lane<P>]) -> (Stats, usize) {
    let mut stats = Stats::default();
    let mut active = 0;
    for l in lanes {
        if let Ok(c) = l.counters.lock() {
            stats.merge(&c.0);
            active += c.1;
        }
    }
    (stats, active)
}

/// Where the merged stream goes: detection (observations, ticks, metrics) and the events
/// output.
pub struct Stage<'a> {
    pub detection: Option<&'a mut Detection>,
    pub events: &'a mut dyn EventSink,
}

impl Stage<'_> {
    /// The clock moved to `now` with no packet (a quiet live link).
    pub fn tick(&mut self, now: i64) {
        if let Some(d) = self.detection.as_deref_mut() {
            d.tick(now);
        }
        self.events.tick(now);
    }
}

/// The reader's side of the workers: queues out, the merge back.
pub(crate) struct Shards<P> {
    lanes: Vec<Lane<P>>,
    /// Jobs handed out and not released, in `seq` order.
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// Packets after which detection's clock ticks (`seq`, capture time).
    ticks: VecDeque<(u64, i64)>,
    /// When detection's clock ticks, decided here as on one worker.
    tick_clock: TickClock,
    clock: bool,
    /// Whether detection was told the first packet's time ([`Detection::begin`]).
    begun: bool,
    /// Whether the last packet was handed out losslessly (replay) or not (live): a tick's
    /// broadcast waits for a full queue only in replay.
    lossless: bool,
    /// Whether detection may go to the workers ([`Shards::split_detection`]), and when it goes
    /// (before the first packet at or past this time), or whether it went.
    split: bool,
    hand_at: Option<i64>,
    on_workers: bool,
    /// The flow tables' sweep clock, for every worker ([`crate::flow::SweepClock`]).
    last_sweep: i64,
    /// Packets in flight at most (handed out, not yet finished by every earlier worker).
    window: u64,
    /// Capture time of the last packet released; and, when a worker died, the packets of jobs
    /// only the others finished, for the metrics.
    released_ts: i64,
    released: u64,
    /// Finished jobs the metrics have not heard of yet, with metrics on: `seq`, capture time,
    /// whether that time is a packet's (not a flush's or a sweep's), packets.
    heard: VecDeque<(u64, i64, bool, u64)>,
    /// The capture time the metrics last heard.
    heard_ts: Option<i64>,
    /// Flush items of one `seq` from several workers, being ordered.
    batch: Vec<Item>,
    /// Panics in the stage caught by the merge.
    stage_panics: u64,
}

impl<P> Shards<P> {
    /// Queues for `workers` workers (`capacity` packets each); the ends go to the threads.
    pub fn new(
        workers: usize,
        capacity: usize,
        detection: Option<&Detection>,
    ) -> (Shards<P>, Vec<WorkerEnds<P>>) {
        let mut lanes = Vec::with_capacity(workers);
        let mut ends = Vec::with_capacity(workers);
        for _ in 0..workers.max(1) {
            let (jobs_tx, jobs_rx) = rtrb::RingBuffer::new(capacity);
            let (out_tx, out_rx) = rtrb::RingBuffer::new(OUT_CAPACITY);
            let (spare_tx, spare_rx) = rtrb::RingBuffer::new(SPARE_CAPACITY);
            let done = Arc::new(CachePadded(AtomicU64::new(0)));
            let counters = Arc::new(Mutex::new((Stats::default(), 0)));
            ends.push(WorkerEnds {
                jobs: jobs_rx,
                out: out_tx,
                spare: spare_rx,
                done: Arc::clone(&done),
                counters: Arc::clone(&counters),
            });
            lanes.push(Lane {
                jobs: Some(jobs_tx),
                out: out_rx,
                spare: spare_tx,
                done,
                counters,
                held: VecDeque::new(),
                done_seen: 0,
                source: None,
            });
        }
        let shards = Shards {
            lanes,
            in_flight: VecDeque::new(),
            next_seq: 0,
            ticks: VecDeque::new(),
            tick_clock: TickClock::default(),
            clock: detection.is_some_and(|d| d.engine.is_some()),
            begun: false,
            lossless: true,
            split: false,
            hand_at: None,
            on_workers: false,
            last_sweep: i64::MIN,
            window: (workers.max(1) * capacity) as u64,
            released_ts: 0,
            released: 0,
            heard: VecDeque::new(),
            heard_ts: None,
            batch: Vec::new(),
            stage_panics: 0,
        };
        (shards, ends)
    }

    /// Hands a packet at capture time `ts` to worker `w`. `lossless`: wait (merging) while its
    /// queue is full; otherwise a full queue loses the packet, handed back as `Err`.
    pub fn push(
        &mut self,
        w: usize,
        p: P,
        ts: i64,
        lossless: bool,
        stage: &mut Stage<'_>,
    ) -> Result<(), P> {
        self.lossless = lossless;
        // At most `window` packets in flight, so that what the merge holds back for a slow
        // worker stays bounded (the per-worker queues alone would let the others run ahead).
        if self.next_seq.saturating_sub(self.oldest_unfinished()) >= self.window
            && !self.wait_for_window(lossless, stage)
        {
            return Err(p);
        }
        if !self.begun {
            self.begin(ts, stage);
        }
        if crate::flow::SweepClock::due(&mut self.last_sweep, ts) {
            // Before the packet, as a pipeline sweeping by itself does.
            self.sweep(ts, stage);
        }
        // A step back ticks after what came before (the sweep included) and before this packet,
        // as on one worker.
        if self.clock && self.tick_clock.back(ts) {
            if let Some(before) = self.next_seq.checked_sub(1) {
                self.tick_at(before, ts, stage);
            }
            // Learning's end moves with the step: known once the stage has ticked.
            if self.hand_at.is_some() {
                self.hand_at = Some(i64::MIN);
            }
        }
        if self.hand_at.is_some_and(|at| ts >= at) {
            self.hand_detection(ts, stage);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let Some(jobs) = self.lanes[w].jobs.as_mut() else {
            return Err(p);
        };
        match push_ahead(jobs, Job::Packet(seq, p)) {
            Ok(()) => {}
            Err(rtrb::PushError::Full(job)) if lossless => self.push_when_full(w, job, stage)?,
            Err(rtrb::PushError::Full(Job::Packet(_, p))) => {
                self.tick_after(seq, ts, stage);
                return Err(p);
            }
            Err(rtrb::PushError::Full(_)) => return Ok(()),
        }
        // A lane's number fits (at most `cli::MAX_WORKERS` workers).
        self.in_flight.push_back((seq, ts, w as u32));
        self.tick_after(seq, ts, stage);
        Ok(())
    }

    /// [`Shards::push`] with `window` packets in flight: merges (and, `lossless`, waits) until
    /// there is room; false when there is none and the packet is to be lost (live capture).
    /// Out of line, as the other waits: inlined, their loops made every packet's call set up
    /// for them.
    #[cold]
    #[inline(never)]
    fn wait_for_window(&mut self, lossless: bool, stage: &mut Stage<'_>) -> bool {
        let mut waited = None;
        loop {
            self.merge(stage);
            if self.next_seq.saturating_sub(self.oldest_unfinished()) < self.window {
                return true;
            }
            if !lossless {
                return false;
            }
            reader_pause(&mut waited);
        }
    }

    /// The first packet is at `ts`: learning lasts from it, as on one worker (where the
    /// pipeline tells detection before each packet's observations).
    #[cold]
    #[inline(never)]
    fn begin(&mut self, ts: i64, stage: &mut Stage<'_>) {
        self.begun = true;
        if let Some(d) = stage.detection.as_deref_mut() {
            d.begin(ts);
            // A saved baseline: now (to the workers); learning for a while: at its end (to the
            // workers, or ended on the stage before that packet, as one worker ends it);
            // from everything: never.
            let split = self.split;
            self.hand_at = d.engine.as_ref().and_then(|e| match e.baseline() {
                Some(_) => split.then_some(i64::MIN),
                None => e.learning_until(),
            });
        }
    }

    /// Detection's channel checks run on the workers once learning has ended (or from the
    /// first packet with a saved baseline); the stage keeps what spans channels and the alert
    /// book ([`otwatch_models::split`]). For runs that read no observation on the stage
    /// ([`Detection::split_ok`]: no events to syslog, which go out between the alerts).
    pub fn split_detection(&mut self, on: bool) {
        self.split = on;
    }

    /// The sweep job for every worker at capture time `ts` (out of line: every 10 s of capture).
    #[cold]
    #[inline(never)]
    fn sweep(&mut self, ts: i64, stage: &mut Stage<'_>) {
        self.broadcast(|seq| Job::Sweep(seq, ts), ts, stage);
    }

    /// [`Shards::push`] of `job` to worker `w`, whose queue was full: waits (merging) until it
    /// has room. The packet comes back only if the reader hung up on the worker meanwhile.
    #[cold]
    #[inline(never)]
    fn push_when_full(
        &mut self,
        w: usize,
        mut job: Job<P>,
        stage: &mut Stage<'_>,
    ) -> Result<(), P> {
        let mut waited = None;
        loop {
            // Push again once an eighth of the queue is free, not at each freed slot:
            // pushing one job per slot the worker frees bounced the queue's indices
            // between the two cores for every packet.
            loop {
                if self.merge(stage) == 0 {
                    reader_pause(&mut waited);
                }
                match self.lanes[w].jobs.as_ref() {
                    Some(j) if !j.is_abandoned() && j.slots() < j.buffer().capacity() / 8 => {}
                    _ => break,
                }
            }
            let Some(jobs) = self.lanes[w].jobs.as_mut() else {
                return match job {
                    Job::Packet(_, p) => Err(p),
                    _ => Ok(()),
                };
            };
            match push_ahead(jobs, job) {
                Ok(()) => return Ok(()),
                Err(rtrb::PushError::Full(back)) => job = back,
            }
        }
    }

    fn tick_after(&mut self, seq: u64, ts: i64, stage: &mut Stage<'_>) {
        if self.clock && self.tick_clock.due(ts) {
            self.tick_at(seq, ts, stage);
        }
    }

    /// Detection's clock ticks at `ts` after the job `seq`: on the stage, and first on every
    /// worker when they check the channels (a job of its own, after `seq`).
    fn tick_at(&mut self, seq: u64, ts: i64, stage: &mut Stage<'_>) {
        if self.on_workers {
            return self.tick_workers(ts, stage);
        }
        self.ticks.push_back((seq, ts));
    }

    #[cold]
    #[inline(never)]
    fn tick_workers(&mut self, ts: i64, stage: &mut Stage<'_>) {
        let seq = if self.lossless {
            self.broadcast(|seq| Job::Tick(seq, ts), ts, stage)
        } else {
            self.broadcast_lossy(|seq| Job::Tick(seq, ts), ts)
        };
        self.ticks.push_back((seq, ts));
    }

    /// [`Shards::broadcast`] for live capture, which must not stall on a slow worker: a worker
    /// whose queue is full does not get the job (a tick: its timers fire at the next one).
    fn broadcast_lossy(&mut self, job: impl Fn(u64) -> Job<P>, ts: i64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push_back((seq, ts, EVERY_LANE));
        for lane in &mut self.lanes {
            if let Some(jobs) = lane.jobs.as_mut() {
                let _ = jobs.push(job(seq));
            }
        }
        seq
    }

    /// Learning ends before the packet at `ts` (the first at or past its end; or a quiet live
    /// link's tick), and detection goes to the workers ([`Shards::split_detection`]; with a
    /// saved baseline at the first packet). Everything before is merged first (the stage
    /// learned from it) and learning ends on the stage, as one worker ends it before that
    /// packet; then every worker is handed the baseline, and checks the channels it owns from
    /// the next packet on. Also after a clock step back while learning: its end moved with
    /// the step, and is known once the stage has ticked back.
    #[cold]
    #[inline(never)]
    fn hand_detection(&mut self, ts: i64, stage: &mut Stage<'_>) {
        let mut waited = None;
        while !self.idle() {
            if self.merge(stage) == 0 {
                reader_pause(&mut waited);
            }
        }
        let Some(d) = stage.detection.as_deref_mut() else {
            self.hand_at = None;
            return;
        };
        d.end_learning_by(ts);
        let Some(e) = d.engine.as_ref() else {
            self.hand_at = None;
            return;
        };
        if !self.split {
            // The reader runs all of detection: learning ended here, before this packet.
            self.hand_at = e.learning_until();
            return;
        }
        let Some(baseline) = e.shared_baseline() else {
            // Still learning: its end moved (the clock stepped back).
            self.hand_at = e.learning_until();
            return;
        };
        let start = Arc::new(WorkerStart {
            baseline,
            start: ts,
            tick_high: e.tick_high(),
        });
        d.hand_to_workers();
        self.hand_at = None;
        self.on_workers = true;
        self.broadcast(|seq| Job::Detect(seq, Arc::clone(&start)), ts, stage);
    }

    /// The first packet handed out that some worker has not finished (as of the last merge,
    /// which releases every finished one before it).
    fn oldest_unfinished(&self) -> u64 {
        self.in_flight.front().map_or(self.next_seq, |j| j.0)
    }

    /// Every worker closes its flows, as one step of the sequence.
    pub fn flush(&mut self, stage: &mut Stage<'_>) {
        let ts = self.released_ts;
        self.broadcast(Job::Flush, ts, stage);
    }

    /// One job for every worker under one `seq`, waiting (and merging) for room: a flush or a
    /// sweep is never lost, in live capture either.
    fn broadcast(&mut self, job: impl Fn(u64) -> Job<P>, ts: i64, stage: &mut Stage<'_>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        // In flight before any worker has it: while the reader waits for a full queue below it
        // merges, and a worker that already did the job must not have its items released
        // ahead of the others' (with nothing earlier unfinished, nothing else would hold them).
        self.in_flight.push_back((seq, ts, EVERY_LANE));
        for w in 0..self.lanes.len() {
            let mut job = job(seq);
            while let Some(Err(rtrb::PushError::Full(back))) =
                self.lanes[w].jobs.as_mut().map(|j| j.push(job))
            {
                job = back;
                if self.merge(stage) == 0 {
                    std::thread::yield_now();
                }
            }
        }
        seq
    }

    /// The clock moved to `now` without a packet (a quiet live link): detection ticks, and the
    /// next packet-driven tick counts from here, as on one worker.
    pub fn tick_now(&mut self, now: i64, stage: &mut Stage<'_>) {
        if self.clock {
            self.tick_clock.last = now;
        }
        // Learning ends at this tick, as on one worker (the workers then start here).
        if self.hand_at.is_some_and(|at| now >= at) {
            self.hand_detection(now, stage);
        }
        if self.on_workers {
            // The workers' share first: the stage ticks when the merge reaches it.
            self.tick_workers(now, stage);
            self.events_tick(now, stage);
            return;
        }
        stage.tick(now);
    }

    /// The events output's clock (a quiet live link), when detection ticks through the merge.
    #[cold]
    fn events_tick(&mut self, now: i64, stage: &mut Stage<'_>) {
        stage.events.tick(now);
    }

    /// Merges every 64 packets handed out (often enough to keep the held items few, rarely
    /// enough to cost little).
    pub fn merge_sometimes(&mut self, stage: &mut Stage<'_>) {
        if self.next_seq.is_multiple_of(64) {
            self.merge(stage);
        }
    }

    /// Whether nothing is in flight: every packet handed out was finished and released.
    pub fn idle(&self) -> bool {
        self.in_flight.is_empty() && self.lanes.iter().all(|l| l.held.is_empty())
    }

    /// The workers' counters as last published, merged, and their open flows.
    pub fn counters(&self) -> (Stats, usize) {
        sum_counters(&self.lanes)
    }

    /// Takes what the workers finished and releases, in order, everything no worker can still
    /// precede. Returns the number of items and ticks released. A panic in the stage (a bug in
    /// detection or an output) is counted (`finish` returns the count) and the merge goes on with
    /// what follows, as one worker goes on after a panic in its sink; the guard is around the
    /// whole merge, so it costs nothing per item.
    pub fn merge(&mut self, stage: &mut Stage<'_>) -> usize {
        let mut n = 0;
        loop {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.merge_guarded(stage, &mut n)
            }));
            match run {
                Ok(()) => return n,
                Err(_) => self.stage_panics += 1,
            }
        }
    }

    fn merge_guarded(&mut self, stage: &mut Stage<'_>, n: &mut usize) {
        for lane in &mut self.lanes {
            // `done` first: every item of a finished packet was pushed before it was stored.
            lane.done_seen = lane.done.0.load(Ordering::Acquire);
            while let Ok(item) = lane.out.pop() {
                lane.held.push_back(item);
            }
        }
        // Finished jobs before the first unfinished one are released with their items below.
        // With metrics, each job is heard of in `seq` order with the items (after its own,
        // before the next job's), at its own capture time, as one worker's metrics hear of each
        // packet after its events: a sample holds exactly what came before it, and samples fall
        // at the times one worker's do.
        let metrics = stage
            .detection
            .as_ref()
            .is_some_and(|d| d.metrics.is_some());
        let mut max_ts = None;
        while let Some(&(seq, ts, w)) = self.in_flight.front() {
            if !Self::finished(&self.lanes, seq, w) {
                break;
            }
            max_ts = Some(max_ts.map_or(ts, |m: i64| m.max(ts)));
            if metrics {
                // A job for every worker counts once per worker, as it did when each worker's
                // jobs were counted apart (the metrics read the count only to pace their clock).
                // A job for every worker (a flush, a sweep) has no packet's time of its own:
                // the metrics keep the last packet's ([`Shards::hear_until`]).
                let (own, count) = if w == EVERY_LANE {
                    (false, self.lanes.len() as u64)
                } else {
                    (true, 1)
                };
                self.heard.push_back((seq, ts, own, count));
            }
            self.in_flight.pop_front();
        }
        let bound = self.in_flight.front().map_or(u64::MAX, |j| j.0);
        loop {
            let next_item = self
                .lanes
                .iter()
                .filter_map(|l| l.held.front().map(|i| i.seq))
                .min();
            let next_tick = self.ticks.front().map(|t| t.0);
            let next = match (next_item, next_tick) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(s) => s,
                    None => break,
                },
            };
            if next >= bound {
                break;
            }
            if metrics {
                self.hear_until(next, stage);
            }
            if next_item == Some(next) {
                self.release_seq(next, stage);
                *n += 1;
            }
            if next_tick == Some(next) {
                if let Some((_, ts)) = self.ticks.pop_front() {
                    if let Some(d) = stage.detection.as_deref_mut() {
                        d.tick(ts);
                    }
                    *n += 1;
                }
            }
        }
        if metrics {
            self.hear_until(u64::MAX, stage);
        }
        if let Some(ts) = max_ts {
            self.released_ts = self.released_ts.max(ts);
        }
        if self.released > 0 {
            self.release_died(stage);
        }
    }

    /// What `finish` carried for a worker that died, to the metrics (taken first: a panic in
    /// them must not leave it to be handed on again and again). Out of line: it never happens
    /// but for a bug.
    #[cold]
    #[inline(never)]
    fn release_died(&mut self, stage: &mut Stage<'_>) {
        let released = std::mem::take(&mut self.released);
        if let Some(d) = stage.detection.as_deref_mut() {
            let lanes = &self.lanes;
            d.metrics_progress(released, self.released_ts, || sum_counters(lanes));
        }
    }

    /// The metrics hear of the finished jobs before `seq` (see [`Shards::merge`]). Out of line:
    /// only with metrics.
    #[inline(never)]
    fn hear_until(&mut self, seq: u64, stage: &mut Stage<'_>) {
        while let Some(&(job, ts, own, count)) = self.heard.front() {
            if job >= seq {
                break;
            }
            self.heard.pop_front();
            let ts = match (own, self.heard_ts) {
                (false, Some(last)) => last,
                _ => ts,
            };
            self.heard_ts = Some(ts);
            if let Some(d) = stage.detection.as_deref_mut() {
                let lanes = &self.lanes;
                d.metrics_progress(count, ts, || sum_counters(lanes));
            }
        }
    }

    /// Whether the job `seq` handed to lane `w` (or to every lane) is finished, as the last
    /// merge read the workers' `done`.
    fn finished(lanes: &[Lane<P>], seq: u64, w: u32) -> bool {
        match lanes.get(w as usize) {
            Some(lane) => seq < lane.done_seen,
            None => lanes.iter().all(|l| seq < l.done_seen),
        }
    }

    /// Releases every held item of `seq`: from one worker (a packet's) in its order, or from
    /// several (a flush) in flush-key order.
    fn release_seq(&mut self, seq: u64, stage: &mut Stage<'_>) {
        let mut lanes = self
            .lanes
            .iter_mut()
            .filter(|l| l.held.front().is_some_and(|i| i.seq == seq));
        if let (Some(lane), None) = (lanes.next(), lanes.next()) {
            // A packet's items: one worker's, in its order.
            while lane.held.front().is_some_and(|i| i.seq == seq) {
                if let Some(item) = lane.held.pop_front() {
                    // The next observation was written on the worker's core: asked for now,
                    // its lines cross while this one goes through detection.
                    if let Some(o) = lane.held.front().and_then(|i| i.obs.as_deref()) {
                        crate::prefetch::prefetch_lines(o, OBSERVATION_LINES);
                    }
                    let (obs, spent) = Self::release(item, stage, &mut lane.source);
                    // Back to its worker, which keeps it or frees it; one that finds the queue
                    // full (the worker has not taken back for a while) is dropped here.
                    if let Some(o) = obs {
                        let _ = lane.spare.push(Back::Observation(Spare::of(o)));
                    }
                    if let Some(b) = spent {
                        let _ = lane.spare.push(Back::Alerts(b));
                    }
                }
            }
            return;
        }
        self.release_flush(seq, stage);
    }

    /// [`Shards::release_seq`] of a job every worker did (a flush, a sweep): their items in
    /// flush-key order. Out of line: a packet's items, from one worker, are the common case.
    #[cold]
    #[inline(never)]
    fn release_flush(&mut self, seq: u64, stage: &mut Stage<'_>) {
        self.batch.clear();
        for lane in &mut self.lanes {
            while lane.held.front().is_some_and(|i| i.seq == seq) {
                if let Some(item) = lane.held.pop_front() {
                    self.batch.push(item);
                }
            }
        }
        self.batch.sort_by_key(|i| i.key.as_deref().copied());
        // Drained in place: the batch keeps its allocation for the next flush.
        let mut batch = std::mem::take(&mut self.batch);
        for item in batch.drain(..) {
            // A flush's items come from every worker: their observations and lists of alerts
            // are dropped here (a flush or a sweep is rare), and their scan notes each name
            // their capture.
            let _ = Self::release(item, stage, &mut None);
        }
        self.batch = batch;
    }

    /// Hands an item on; returns its observation, done with, and its list of candidate
    /// alerts, raised.
    fn release(
        item: Item,
        stage: &mut Stage<'_>,
        source: &mut Option<Arc<str>>,
    ) -> (Option<Box<Observation>>, Option<Box<Payload>>) {
        if let (Some(d), Some(o)) = (stage.detection.as_deref_mut(), &item.obs) {
            // Once the workers check the channels, an observation comes for the metrics only.
            if d.channels_on_workers() {
                d.observe_metrics(o);
            } else {
                d.observe(o);
            }
        }
        let spent = item
            .payload
            .and_then(|p| Self::release_payload(p, stage, source));
        (item.obs, spent)
    }

    /// [`Shards::release`] of an item's event (only with an events output), or of what a
    /// worker's detection found. Out of line, so that releasing an observation, the common case
    /// while learning, sets up nothing for it. `source`: the capture the worker's last scan
    /// note named.
    #[inline(never)]
    fn release_payload(
        mut p: Box<Payload>,
        stage: &mut Stage<'_>,
        source: &mut Option<Arc<str>>,
    ) -> Option<Box<Payload>> {
        // Candidate alerts (one or two per PDU under a flood) are raised where they lie: each
        // moved out of a box of its own and on to the book was copied three times (the box
        // holds an event's room). The list, raised, goes back to its worker.
        if let Payload::Alerts(found) = &mut *p {
            if let Some(d) = stage.detection.as_deref_mut() {
                d.found(found);
            }
            return Some(p);
        }
        let p = *p;
        let Payload::Event(e) = p else {
            if let Some(d) = stage.detection.as_deref_mut() {
                Self::release_found(p, d, source);
            }
            return None;
        };
        if let Some(d) = stage.detection.as_deref_mut() {
            d.event_out(&e);
        }
        stage.events.emit(e);
        None
    }

    /// What a worker's detection handed on, to the stage ([`otwatch_models::split`]).
    fn release_found(p: Payload, d: &mut Detection, source: &mut Option<Arc<str>>) {
        match p {
            // Handed on before (`release_payload`).
            Payload::Event(_) | Payload::Alerts(_) => {}
            Payload::Note(n) => {
                if let Note::Scan(otwatch_models::detect::ScanNote {
                    source: Some(s), ..
                }) = &n
                {
                    *source = Some(Arc::clone(s));
                }
                let named = source.get_or_insert_with(|| Arc::from(""));
                d.note(n, named);
            }
            Payload::Tick {
                mut found,
                mut heard,
                seen,
                observations,
                untracked,
            } => {
                d.tick_share(&mut found, &mut heard, seen);
                d.worker_counts(observations, untracked, seen);
            }
            Payload::Counts {
                observations,
                untracked,
                seen,
            } => d.worker_counts(observations, untracked, seen),
        }
    }

    /// Hangs up on the workers, then merges until they have finished everything. `running`
    /// says whether no worker thread has died (panicked). Returns the panics the merge caught
    /// in the stage.
    pub fn finish(mut self, stage: &mut Stage<'_>, running: impl Fn() -> bool) -> u64 {
        for lane in &mut self.lanes {
            lane.jobs = None;
        }
        loop {
            self.merge(stage);
            if self.idle() {
                break;
            }
            if !running() {
                // A worker died: merge what the others finished, then stop
                // waiting for what it never will.
                self.merge(stage);
                // A job for every worker that the live ones finished counts for each of them,
                // as when each worker's jobs were counted apart; the rest is dropped.
                let lanes = &self.lanes;
                for &(seq, ts, w) in &self.in_flight {
                    let done = lanes.iter().filter(|l| seq < l.done_seen).count() as u64;
                    if w == EVERY_LANE && done > 0 && done < lanes.len() as u64 {
                        self.released += done;
                        self.released_ts = self.released_ts.max(ts);
                    }
                }
                self.in_flight
                    .retain(|&(seq, _, w)| Self::finished(lanes, seq, w));
                self.merge(stage);
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        // Ticks after the last item.
        self.merge(stage);
        self.stage_panics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests: the capture whose first observation checked on a worker panics, as a bug would.
    static PANIC_IN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

    pub(super) fn panic_if_asked(o: &Observation) {
        let asked = PANIC_IN.lock().is_ok_and(|mut p| {
            let hit = p.as_deref() == Some(&*o.source);
            if hit {
                *p = None;
            }
            hit
        });
        assert!(!asked, "a bug, on frame {}", o.frame);
    }

    /// A panic in a worker's detection (a bug) loses the observation it was in and is counted
    /// as a worker's panic; the run goes on to its end, the reader never waiting for what the
    /// worker would not finish, and the workers check the rest.
    #[test]
    fn a_panic_in_a_workers_detection_is_counted_and_the_run_goes_on() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/scenarios/modbus_write.pcap");
        let dir = std::env::temp_dir().join(format!("otwatch-worker-panic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let capture = dir.join("panics.pcap");
        std::fs::copy(&fixture, &capture).expect("copy the fixture");
        *PANIC_IN.lock().expect("the hook") = Some(capture.display().to_string());
        let config = otwatch_models::EngineConfig {
            learn_for: Some(60 * otwatch_models::NANOS),
            ..otwatch_models::EngineConfig::default()
        };
        let mut det = Detection::new(otwatch_models::Engine::learning(config), None);
        let mut events = crate::event::NullSink;
        let report = {
            let mut stage = Stage {
                detection: Some(&mut det),
                events: &mut events,
            };
            crate::parallel::replay_sharded(std::slice::from_ref(&capture), &mut stage, 2, None)
        };
        *PANIC_IN.lock().expect("the hook") = None;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(report.stats.worker_panics, 1, "the panic is counted");
        assert!(
            det.worker_observations() > 0,
            "the workers went on checking"
        );
        let one = crate::replay::replay(
            std::slice::from_ref(&fixture),
            &mut crate::event::NullSink,
            &mut Pipeline::new(),
        );
        assert_eq!(
            report.stats.packets, one.stats.packets,
            "every packet was read"
        );
        let _ = det.finish();
    }
    use crate::event::{Direction, Pdu, Timestamp, VecSink};

    /// `push_ahead` is a queue's push: in order through every wrap of the ring, whatever is
    /// free (near full, where it asks for nothing ahead, and full, where it hands the job back).
    #[test]
    fn push_ahead_pushes_in_order_near_full_and_full() {
        let capacity = PUSH_AHEAD + 3;
        let (mut tx, mut rx) = rtrb::RingBuffer::new(capacity);
        let mut next = 0u32;
        let mut expected = 0u32;
        // Fill to various depths and drain part, so that pushes meet every free count and
        // every place of the wrap.
        for round in 0..50usize {
            let mut full = false;
            for _ in 0..=capacity {
                match push_ahead(&mut tx, next) {
                    Ok(()) => next += 1,
                    Err(rtrb::PushError::Full(back)) => {
                        assert_eq!(back, next, "the job handed back");
                        assert_eq!(tx.slots(), 0, "refused only when full");
                        full = true;
                        break;
                    }
                }
            }
            assert!(full, "more pushed than the ring holds");
            for _ in 0..=(round % (PUSH_AHEAD + 3)) {
                assert_eq!(rx.pop().ok(), Some(expected));
                expected += 1;
            }
        }
        while let Ok(v) = rx.pop() {
            assert_eq!(v, expected);
            expected += 1;
        }
        assert_eq!(expected, next);
    }

    /// A read of `accesses` accesses of `values` values each, held as numbers.
    fn read(accesses: usize, values: usize) -> Observation {
        use otwatch_models::{Channel, Kind, Proto};
        let channel = Channel {
            proto: Proto::Modbus,
            client: [10, 0, 0, 1].into(),
            server: [10, 0, 0, 2].into(),
            unit: 1,
        };
        let mut o = Observation::new(0, "t".into(), 1, channel, Kind::Response, 3);
        for i in 0..accesses {
            o.push_access(
                4,
                i as u32,
                values as u32,
                false,
                std::iter::repeat_n(1.0, values),
            );
        }
        o
    }

    /// A worker's sink checking its channels against an empty baseline (each new client's
    /// first request raises alerts), with the reader's ends of its queues.
    fn checking_sink(
        channel_metrics: bool,
    ) -> (ItemSink, rtrb::Consumer<Item>, rtrb::Producer<Back>) {
        let (out, items) = rtrb::RingBuffer::new(1024);
        let (back, spare) = rtrb::RingBuffer::new(SPARE_CAPACITY);
        let wants = Wants {
            observations: true,
            events: false,
            detail: true,
            channel_metrics,
        };
        let mut sink = ItemSink::new(out, spare, wants);
        sink.engine = Some(WorkerEngine::new(Arc::new(Baseline::default()), 0, 0));
        (sink, items, back)
    }

    /// With per-channel metrics, a worker's items go out in packet order: each held
    /// observation's alerts, then the observation itself, then the next one's (a batch's
    /// observations after all of its alerts left a packet's items behind later packets').
    /// Against an empty baseline each new client's first request raises alerts.
    #[test]
    fn a_workers_items_stay_in_packet_order_with_channel_metrics() {
        let (mut sink, mut items, _back) = checking_sink(true);
        for seq in 0..8u64 {
            let mut o = Box::new(read(1, 1));
            o.kind = otwatch_models::Kind::Request;
            o.channel.client = [10, 0, 0, 10 + seq as u8].into();
            (o.ts, o.frame) = (seq as i64 + 1, seq + 1);
            sink.seq = seq;
            let key = FlushKey {
                ts: o.ts,
                frame: o.frame,
                src: (o.channel.client, 40_000),
                dst: (o.channel.server, 502),
            };
            sink.observed(key, &mut o);
        }
        assert_eq!(sink.finished_before(8), 0, "held for a batch");
        sink.drain_held();
        let mut seqs = Vec::new();
        let (mut alerts, mut observations) = (0, 0);
        while let Ok(item) = items.pop() {
            seqs.push(item.seq);
            if let Some(Payload::Alerts(found)) = item.payload.as_deref() {
                alerts += found.len();
            }
            observations += usize::from(item.obs.is_some());
        }
        assert_eq!(observations, 8);
        assert!(alerts >= 8, "{alerts} alerts");
        assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");
    }

    /// A list of candidate alerts the reader raised goes back to its worker: what is left of
    /// the alerts is dropped there (with their references to the capture's name, a count the
    /// worker's core keeps), and the worker's next lists go out in the boxes that came back.
    #[test]
    fn raised_alert_lists_come_back_to_their_worker() {
        let (mut sink, mut items, mut back) = checking_sink(false);
        let source: Arc<str> = Arc::from("capture.pcap");
        // A new client's request: against an empty baseline, it raises alerts.
        let request = |sink: &mut ItemSink, seq: u64| {
            let mut o = Box::new(read(1, 1));
            o.source = Arc::clone(&source);
            o.kind = otwatch_models::Kind::Request;
            o.channel.client = [10, 0, 0, 10 + seq as u8].into();
            (o.ts, o.frame) = (seq as i64 + 1, seq + 1);
            sink.seq = seq;
            let key = no_key(o.ts);
            sink.observed(key, &mut o);
            sink.drain_held();
        };
        let lists = |items: &mut rtrb::Consumer<Item>| {
            let mut lists = Vec::new();
            while let Ok(item) = items.pop() {
                if let Some(p) = item.payload.filter(|p| matches!(**p, Payload::Alerts(_))) {
                    lists.push(p);
                }
            }
            lists
        };
        request(&mut sink, 0);
        let first = lists(&mut items);
        let alerts: usize = first
            .iter()
            .map(|p| match &**p {
                Payload::Alerts(found) => found.len(),
                _ => 0,
            })
            .sum();
        assert!(alerts > 0, "no alerts");
        let boxes: Vec<*const Payload> = first.iter().map(|p| &raw const **p).collect();
        let before = Arc::strong_count(&source);
        for p in first {
            assert!(back.push(Back::Alerts(p)).is_ok());
        }
        sink.take_back();
        assert_eq!(
            before - Arc::strong_count(&source),
            alerts,
            "the alerts were dropped where they were made"
        );
        assert_eq!(sink.spent.len(), boxes.len(), "kept to be filled again");
        request(&mut sink, 1);
        let second = lists(&mut items);
        let client: std::net::IpAddr = [10, 0, 0, 11].into();
        let mut again = 0;
        for p in &second {
            assert!(
                boxes.contains(&(&raw const **p)),
                "a list went out in a new box"
            );
            let Payload::Alerts(found) = &**p else {
                continue;
            };
            // The second request's own, none of the first's left in a list filled again.
            for a in &found.to_alerts() {
                assert!(a.src_ip == client || a.dst_ip == client, "{a:?}");
            }
            again += found.len();
        }
        assert_eq!(again, alerts, "the same request from a new client");
    }

    /// A spare is judged by the room it holds, not by what it holds now: a read of many
    /// values, or of many accesses, emptied, is still freed when it comes back.
    #[test]
    fn only_small_observations_are_kept_as_spares() {
        // A read of 222 numbers, of 125: kept.
        assert!(small_enough_to_keep(&read(1, 222)));
        assert!(small_enough_to_keep(&read(1, 125)));
        assert!(small_enough_to_keep(&read(4, 64)));
        assert!(!small_enough_to_keep(&read(1, 257)));
        assert!(!small_enough_to_keep(&read(5, 1)));
        let mut emptied = read(1, 1000);
        emptied.values.clear();
        assert!(!small_enough_to_keep(&emptied), "its room is still held");
        // Values held as bytes (steady-site's S7 reads carry 222 data bytes) count a byte each,
        // and with the numbers' room: 2048 bytes in all.
        let with_bytes = |numbers: usize, bytes: usize| {
            let mut o = read(1, numbers);
            otwatch_models::ValuesAt::push_bytes(&mut o.bytes, &vec![0; bytes]);
            o.bytes.shrink_to_fit();
            o
        };
        assert!(small_enough_to_keep(&with_bytes(0, 222)));
        assert!(small_enough_to_keep(&with_bytes(0, 2048)));
        assert!(!small_enough_to_keep(&with_bytes(0, 2049)));
        assert!(small_enough_to_keep(&with_bytes(128, 1024)));
        assert!(!small_enough_to_keep(&with_bytes(128, 1025)));
    }

    /// When it has none kept, the worker takes back everything the reader returned, keeps the
    /// small ones (at most `SPARE_CAPACITY`) and frees the large ones; while it has some kept,
    /// it leaves the queue alone.
    #[test]
    fn a_worker_takes_back_every_spare_and_keeps_only_small_ones() {
        let (mut back, spare) = rtrb::RingBuffer::new(SPARE_CAPACITY);
        let (out, _out_rx) = rtrb::RingBuffer::new(4);
        let wants = Wants {
            observations: true,
            events: false,
            detail: false,
            channel_metrics: false,
        };
        let mut sink = ItemSink::new(out, spare, wants);
        for (accesses, values) in [(5, 1), (1, 2), (1, 1000), (2, 3)] {
            assert!(back
                .push(Back::Observation(Spare::of(Box::new(read(
                    accesses, values
                )))))
                .is_ok());
        }
        let first = sink.spare_box().expect("a small one was returned");
        assert_eq!(back.slots(), SPARE_CAPACITY, "all were taken back");
        assert_eq!(sink.kept.len(), 1, "the two large ones were freed");
        // One more returned while one is kept: it waits in the queue.
        assert!(back
            .push(Back::Observation(Spare::of(Box::new(read(1, 4)))))
            .is_ok());
        let second = sink.spare_box().expect("the other small one");
        assert_eq!(back.slots(), SPARE_CAPACITY - 1, "the queue left alone");
        assert!(sink.kept.is_empty());
        let third = sink.spare_box().expect("the one from the queue");
        assert_eq!((third.accesses.len(), third.accesses[0].values.len), (1, 4));
        let sizes = |o: &Observation| (o.accesses.len(), o.accesses[0].values.len);
        let mut got = [sizes(&first), sizes(&second)];
        got.sort_unstable();
        assert_eq!(got, [(1, 2), (2, 3)]);
        assert!(sink.spare_box().is_none());
        // At most SPARE_CAPACITY are kept; the rest of a full queue is freed.
        for _ in 0..2 {
            while back
                .push(Back::Observation(Spare::of(Box::new(read(1, 1)))))
                .is_ok()
            {}
            sink.take_back();
        }
        assert_eq!(sink.kept.len(), SPARE_CAPACITY);
        assert_eq!(back.slots(), SPARE_CAPACITY);
    }

    fn event(frame: u64, k: u64) -> Event {
        Event {
            ts: Timestamp(frame as i64),
            source: Arc::from("test"),
            frame,
            proto: "tcp",
            transport: crate::event::L4::Tcp,
            src_ip: std::net::IpAddr::from([10, 0, 0, 1]),
            src_port: k as u16,
            dst_ip: std::net::IpAddr::from([10, 0, 0, 2]),
            dst_port: 502,
            direction: Direction::Request,
            src_mac: None,
            dst_mac: None,
            pdu: Pdu::Conversation { udp: false },
        }
    }

    /// Workers that take random time per packet and hand back 0 to 3 events each: the merged
    /// stream is every event, in the order the packets were handed out, whatever the
    /// scheduling; a full queue only makes the reader wait (lossless).
    #[test]
    fn the_merge_restores_the_order_packets_were_handed_out() {
        for (workers, capacity, packets) in
            [(1, 4, 500u64), (2, 4, 2000), (3, 16, 3000), (4, 1, 500)]
        {
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ workers as u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut sink = VecSink::default();
            let mut stage = Stage {
                detection: None,
                events: &mut sink,
            };
            let wants = Wants::of(None, &*stage.events);
            let (mut shards, ends) = Shards::<(u64, u64, u64)>::new(workers, capacity, None);
            let mut expected = Vec::new();
            std::thread::scope(|scope| {
                for ends in ends {
                    scope.spawn(move || {
                        run_worker(
                            ends,
                            Pipeline::new(),
                            wants,
                            |&(frame, n, spin), _, sink| {
                                for _ in 0..spin {
                                    std::hint::spin_loop();
                                }
                                if spin % 7 == 0 {
                                    std::thread::yield_now();
                                }
                                for k in 0..n {
                                    sink.emit(event(frame, k));
                                }
                            },
                        )
                    });
                }
                for frame in 1..=packets {
                    let (w, n, spin) = (
                        (next() % workers as u64) as usize,
                        next() % 4,
                        next() % 2000,
                    );
                    expected.extend((0..n).map(|k| (frame, k)));
                    assert!(shards
                        .push(w, (frame, n, spin), frame as i64, true, &mut stage)
                        .is_ok());
                    shards.merge_sometimes(&mut stage);
                }
                shards.flush(&mut stage);
                shards.finish(&mut stage, || true);
            });
            let got: Vec<(u64, u64)> = sink
                .0
                .iter()
                .map(|e| (e.frame, u64::from(e.src_port)))
                .collect();
            assert_eq!(got.len(), expected.len(), "{workers} workers");
            assert!(got == expected, "{workers} workers: out of order");
        }
    }

    /// Live capture (not lossless): a packet that finds no room is handed back, whether the
    /// packets in flight are at their bound (one worker, one slot) or, with three workers of
    /// one slot each, the worker's queue is full (or the bound is reached first, while the
    /// other two finish the sweep). The worker holds the first of the first six packets it
    /// gets until they have all been handed out, and its queue holds one more: at least four
    /// of them are lost. What was taken comes out, every event of it, in the order it was
    /// handed out. Nothing is asserted before the worker is let go and the workers are hung
    /// up on: a failure fails the test, it does not hang it.
    #[test]
    fn a_lossy_push_loses_only_the_packets_it_hands_back() {
        for workers in [1, 3] {
            let gate = std::sync::atomic::AtomicBool::new(false);
            let mut sink = VecSink::default();
            let mut stage = Stage {
                detection: None,
                events: &mut sink,
            };
            let wants = Wants::of(None, &*stage.events);
            let (mut shards, ends) = Shards::<(u64, u64)>::new(workers, 1, None);
            let mut expected = Vec::new();
            let mut lost = Vec::new();
            let mut wrong_back = Vec::new();
            std::thread::scope(|scope| {
                for ends in ends {
                    let gate = &gate;
                    scope.spawn(move || {
                        run_worker(ends, Pipeline::new(), wants, |&(frame, n), _, sink| {
                            while frame <= 6 && !gate.load(Ordering::Acquire) {
                                std::thread::yield_now();
                            }
                            for k in 0..n {
                                sink.emit(event(frame, k));
                            }
                        })
                    });
                }
                let mut push = |shards: &mut Shards<(u64, u64)>, stage: &mut Stage<'_>, frame| {
                    let n = frame % 3 + 1;
                    match shards.push(0, (frame, n), frame as i64, false, stage) {
                        Ok(()) => expected.extend((0..n).map(|k| (frame, k))),
                        Err(back) => {
                            if back != (frame, n) {
                                wrong_back.push((frame, back));
                            }
                            lost.push(frame);
                        }
                    }
                };
                for frame in 1..=6 {
                    push(&mut shards, &mut stage, frame);
                }
                gate.store(true, Ordering::Release);
                for frame in 7..=200 {
                    push(&mut shards, &mut stage, frame);
                    shards.merge_sometimes(&mut stage);
                }
                shards.flush(&mut stage);
                shards.finish(&mut stage, || true);
            });
            assert!(wrong_back.is_empty(), "handed back: {wrong_back:?}");
            let early = lost.iter().filter(|&&f| f <= 6).count();
            assert!(early >= 4, "{workers} workers: {lost:?} lost");
            let got: Vec<(u64, u64)> = sink
                .0
                .iter()
                .map(|e| (e.frame, u64::from(e.src_port)))
                .collect();
            assert!(got == expected, "{workers} workers: {got:?}");
        }
    }

    /// Played step by step (the test is both workers): a packet is released only once every
    /// earlier one is finished, and a flush only once every worker finished it, its items then
    /// in flush-key order.
    #[test]
    fn the_merge_waits_for_every_worker_of_a_flush() {
        let mut sink = VecSink::default();
        let wants = Wants::of(None, &sink);
        let (mut shards, ends) = Shards::<u64>::new(2, 8, None);
        type Worker = (
            rtrb::Consumer<Job<u64>>,
            ItemSink,
            Arc<CachePadded<AtomicU64>>,
        );
        let mut workers: Vec<Worker> = ends
            .into_iter()
            .map(|e| {
                let sink = ItemSink::new(e.out, e.spare, wants);
                (e.jobs, sink, e.done)
            })
            .collect();
        enum Kind {
            Packet,
            Other,
        }
        // Worker `w` does its next packet or flush (and the sweeps before it): one event per
        // packet (its frame, port 0); for a flush, one event whose port is 10 - w (worker 1's
        // sorts first).
        let mut step = |w: usize| {
            let (jobs, sink, done) = &mut workers[w];
            loop {
                let job = jobs.pop().expect("a job is waiting");
                let (seq, ev, job_kind) = match job {
                    Job::Packet(seq, frame) => (seq, Some(event(frame, 0)), Kind::Packet),
                    Job::Flush(seq) => (seq, Some(event(100, 10 - w as u64)), Kind::Other),
                    Job::Sweep(seq, _) | Job::Tick(seq, _) | Job::Detect(seq, _) => {
                        (seq, None, Kind::Other)
                    }
                };
                sink.seq = seq;
                // As `run_worker` does: a flush's items carry their keys.
                sink.keyed = !matches!(job_kind, Kind::Packet);
                let last = ev.is_some();
                if let Some(ev) = ev {
                    sink.emit(ev);
                }
                done.0.store(seq + 1, Ordering::Release);
                if last {
                    break;
                }
            }
        };
        // The reader's side, one step at a time; returns what was released so far.
        let mut reader = |sink: &mut VecSink, act: &dyn Fn(&mut Shards<u64>, &mut Stage<'_>)| {
            let mut stage = Stage {
                detection: None,
                events: sink,
            };
            act(&mut shards, &mut stage);
            let got: Vec<(u64, u16)> = sink.0.iter().map(|e| (e.frame, e.src_port)).collect();
            (got, shards.idle())
        };
        reader(&mut sink, &|s, st| {
            assert!(s.push(0, 1, 1, true, st).is_ok());
            assert!(s.push(1, 2, 2, true, st).is_ok());
            s.flush(st);
        });
        // Packet 2 finished first: nothing goes before packet 1.
        step(1);
        let (got, idle) = reader(&mut sink, &|s, st| {
            s.merge(st);
        });
        assert!(got.is_empty() && !idle);
        // Worker 0 finished packet 1 and the flush, worker 1 not the flush: the packets go,
        // the flush waits.
        step(0);
        step(0);
        let (got, idle) = reader(&mut sink, &|s, st| {
            s.merge(st);
        });
        assert_eq!(got, [(1, 0), (2, 0)]);
        assert!(!idle);
        step(1);
        let (got, idle) = reader(&mut sink, &|s, st| {
            s.merge(st);
        });
        assert_eq!(got, [(1, 0), (2, 0), (100, 9), (100, 10)]);
        assert!(idle);
    }

    /// A packet that makes a worker panic costs that packet's events and the worker's flows,
    /// nothing else: the merge does not wait for it, every other event comes out in order, and
    /// the panic is counted.
    #[test]
    fn a_worker_that_panics_goes_on_and_is_counted() {
        let mut sink = VecSink::default();
        let mut stage = Stage {
            detection: None,
            events: &mut sink,
        };
        let wants = Wants::of(None, &*stage.events);
        let (mut shards, ends) = Shards::<u64>::new(2, 8, None);
        let mut stats = Vec::new();
        std::thread::scope(|scope| {
            let handles: Vec<_> = ends
                .into_iter()
                .map(|ends| {
                    scope.spawn(move || {
                        run_worker(ends, Pipeline::new(), wants, |&frame, _, sink| {
                            assert!(frame % 10 != 7, "a bug on frame {frame}");
                            sink.emit(event(frame, 0));
                        })
                    })
                })
                .collect();
            for frame in 1..=100u64 {
                assert!(shards
                    .push((frame % 2) as usize, frame, frame as i64, true, &mut stage)
                    .is_ok());
                shards.merge_sometimes(&mut stage);
            }
            shards.flush(&mut stage);
            shards.finish(&mut stage, || true);
            for h in handles {
                stats.push(h.join().expect("the worker thread survives"));
            }
        });
        let frames: Vec<u64> = sink.0.iter().map(|e| e.frame).collect();
        let expected: Vec<u64> = (1..=100).filter(|f| f % 10 != 7).collect();
        assert_eq!(frames, expected);
        let panics: u64 = stats.iter().map(|(s, _)| s.worker_panics).sum();
        assert_eq!(panics, 10);
    }

    /// A fresh pipeline after a panic keeps the counters, but the gauges of what the lost
    /// flows held start again from nothing.
    #[test]
    fn renew_zeroes_the_gauges_of_what_flows_held() {
        let mut p = Pipeline::new();
        p.stats.packets = 7;
        p.stats.tcp.tail_bytes_held = 100;
        p.stats.tcp.ooo_bytes_held = 200;
        renew(&mut p);
        assert_eq!(p.stats.packets, 7);
        assert_eq!(p.stats.worker_panics, 1);
        assert_eq!(
            (p.stats.tcp.tail_bytes_held, p.stats.tcp.ooo_bytes_held),
            (0, 0)
        );
    }

    /// A panic that left the evidence ring locked poisons it: the fresh pipeline gets it back
    /// usable (emptied), or nothing would be recorded for the rest of the run.
    #[test]
    fn renew_recovers_a_poisoned_evidence_ring() {
        let ring = Arc::new(Mutex::new(crate::output::evidence::EvidenceRing::default()));
        let held = Arc::clone(&ring);
        let poisoner = std::thread::spawn(move || {
            let _guard = held.lock().expect("not poisoned yet");
            panic!("a bug while the ring is locked");
        });
        assert!(poisoner.join().is_err());
        assert!(ring.is_poisoned());
        let mut pipeline = Pipeline::new();
        pipeline.evidence = Some(Arc::clone(&ring));
        renew(&mut pipeline);
        assert_eq!(pipeline.stats.worker_panics, 1);
        assert!(!ring.is_poisoned());
        assert!(ring.lock().is_ok());
        assert!(pipeline.evidence.is_some_and(|r| Arc::ptr_eq(&r, &ring)));
    }
}
