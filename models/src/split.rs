//! Detection with N workers: each worker checks the channels it owns ([`WorkerEngine`]), and
//! the stage ([`Engine`](crate::Engine), where all workers' output meets in capture order)
//! keeps what spans channels and the alert book.
//!
//! What a channel's checks do depends only on its own PDUs and the clock's ticks (timers and
//! behaviour windows fire at ticks only), so a worker that sees its channels' observations and
//! every tick finds what one engine finds about them. What spans channels goes to the stage
//! as small records ([`Note`]): per request (and per conversation learning never saw) its
//! share of its client's scan window; a learned channel's first PDU on a worker (its polls,
//! followed by the stage from detection's start until then, are the worker's from there); per
//! tick, the latest PDU of each learned device the worker heard
//! ([`Heard`]) for the devices' silence clocks. The worker hands on its candidate alerts (the
//! implied ones dropped, as one engine drops them); the stage softens, deduplicates and
//! writes them with its book, as one engine does. The alerts are the same as one engine's, as
//! a multiset (ids aside): within one PDU, a scan alert may come before or after the PDU's
//! other alerts.

use std::sync::Arc;

use crate::alert::{Alert, Found};
use crate::baseline::Baseline;
use crate::detect::{suppress_implied, Detector, Heard, Note};
use crate::engine::{always, carries_always, CLOCK_STEP_BACK};
use crate::obs::Observation;

/// A worker's share of detection: the channels it owns.
pub struct WorkerEngine {
    detector: Box<Detector>,
    scratch: Found,
    /// The latest time the clock ticked to since it last stepped back.
    tick_high: i64,
    /// The latest observation's time (the alert book's end lines are at the latest seen).
    seen: i64,
    pub observations: u64,
}

impl WorkerEngine {
    /// Detection against `baseline` from `start` (every worker the same; see
    /// [`Engine::start_at`](crate::Engine::start_at)), the clock having ticked up to
    /// `tick_high` ([`Engine::tick_high`](crate::Engine::tick_high)).
    pub fn new(baseline: Arc<Baseline>, start: i64, tick_high: i64) -> Self {
        let mut detector = Box::new(Detector::shared(baseline));
        detector.on_worker();
        detector.start_at(start);
        WorkerEngine {
            detector,
            scratch: Found::default(),
            tick_high,
            seen: i64::MIN,
            observations: 0,
        }
    }

    /// One observation: the candidate alerts it raises go to `found` (to the stage's
    /// [`Engine::raise_each`](crate::Engine::raise_each); an empty `found` changes places with
    /// this engine's lists, room and all, and names the observation's capture for its bare
    /// occurrences), and what it says of what spans channels to `notes`
    /// ([`Engine::note`](crate::Engine::note)).
    pub fn observe(&mut self, o: &Observation, found: &mut Found, notes: &mut Vec<Note>) {
        self.observations += 1;
        self.seen = self.seen.max(o.ts);
        if !self.scratch.is_empty() {
            self.scratch.clear();
        }
        let d = &mut *self.detector;
        if carries_always(o) {
            let raised = &*d;
            always(o, &|k| raised.is_marked(k), &mut self.scratch.alerts);
        }
        if o.stream_anomaly.is_none() {
            d.observe(o, &mut self.scratch.alerts);
            if !d.raised.bare.is_empty() {
                d.take_bare(&mut self.scratch.bare);
            }
        }
        if !self.scratch.is_empty() {
            suppress_implied(&mut self.scratch);
            // Their texts were built here (the whole alerts: the bare records are of causes
            // marked already): the stage's book will hold them, and later occurrences need none.
            for a in &self.scratch.alerts {
                d.mark_raised(a.key);
            }
            // The lists themselves, not a copy of each alert (a flood has one or two a PDU).
            found.append(&mut self.scratch, &o.source);
        }
        d.across.take_notes(notes);
    }

    /// The clock's tick at `now`: what the channels' timers and windows raise goes to `found`,
    /// the devices heard since the last tick to `heard` (both to the stage's
    /// [`Engine::tick_found`](crate::Engine::tick_found)). Returns the latest observation's time
    /// seen so far.
    pub fn tick(&mut self, now: i64, found: &mut Vec<Alert>, heard: &mut Vec<Heard>) -> i64 {
        let d = &mut *self.detector;
        if now < self.tick_high.saturating_sub(CLOCK_STEP_BACK) {
            self.tick_high = now;
            d.clock_back(now);
        }
        self.tick_high = self.tick_high.max(now);
        d.tick(now, found);
        d.across.take_heard(heard);
        self.seen
    }

    /// The latest observation's time seen so far.
    pub fn seen(&self) -> i64 {
        self.seen
    }

    /// The next scan note names its capture (a note may be handed on apart from this worker's
    /// earlier ones: a flush's are ordered with every worker's).
    pub fn forget_source(&mut self) {
        self.detector.across.forget_source();
    }

    /// PDUs of channels learning never saw beyond the runtime bound (see
    /// [`Engine::bounds_hit`](crate::Engine::bounds_hit)).
    pub fn untracked_channels(&self) -> u64 {
        self.detector.untracked_channels
    }
}
