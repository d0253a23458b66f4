//! Wiring between the dissectors and the detection engine: events become observations, the
//! engine's alerts become JSON Lines (docs/alerts.md), and each alert can get a small pcap of
//! the packets that caused it (`--evidence DIR`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use otwatch_models::{Alert, Engine};

pub use crate::output::alerts::alert_json;
pub use hub::MetricsHub;

mod hub;
pub mod observe;

use crate::event::{Event, EventSink};
use crate::metrics::LiveCounters;
use crate::output::evidence::{EvidenceRing, EVIDENCE_MAX_FILES};
use crate::output::{OutputFile, OutputHealth, OutputKind};
use crate::stats::Stats;
use observe::observe;

/// The detection clock is advanced by packets at least this often (capture time).
const TICK_EVERY_NANOS: i64 = 250_000_000;

/// Observations held for detection before they are run through it together, with one
/// pipeline ([`Detection::hold`]). Dissection and detection together do not fit the
/// instruction cache: taken in turns, each runs from a warm one.
pub const DEFAULT_BATCH: usize = 64;

/// Held observations at most, whatever the batch: a packet of many PDUs, or a sweep that
/// closes many flows, runs detection as it goes past this.
const MAX_HELD: usize = 1024;

/// When the detection clock ticks: every packet at least [`TICK_EVERY_NANOS`] of capture time
/// after the last tick, and back when capture time stepped back. The sharded pipeline decides
/// the same ticks on its reader thread.
#[derive(Debug, Clone, Copy)]
pub struct TickClock {
    /// Capture time of the last tick.
    pub last: i64,
    /// The last packet was a tick or more before `last`: a step back if the next one is too.
    back_seen: bool,
}

impl Default for TickClock {
    fn default() -> Self {
        TickClock {
            last: i64::MIN,
            back_seen: false,
        }
    }
}

impl TickClock {
    /// Before a packet: the capture clock stepped back by a tick or more (a capture that
    /// starts before the last one ended, a live sensor's clock stepped by NTP), the packet
    /// before this one having too: one packet with a wrong time (a glitch) is no step, and the
    /// clock does not follow it there and back. The clock ticks back before the packet's PDUs
    /// are seen (after the PDUs of flows swept before it, which belong to the time before the
    /// step), so that they count after the step. A packet only a little older (reordering
    /// across flows) is no step.
    pub fn back(&mut self, ts: i64) -> bool {
        if ts > self.last.saturating_sub(TICK_EVERY_NANOS) {
            self.back_seen = false;
            return false;
        }
        if !std::mem::replace(&mut self.back_seen, true) {
            return false;
        }
        self.back_seen = false;
        self.last = ts;
        true
    }

    /// After a packet: the clock ticks a tick after the last tick.
    pub fn due(&mut self, ts: i64) -> bool {
        if ts.saturating_sub(self.last) >= TICK_EVERY_NANOS {
            self.last = ts;
            true
        } else {
            false
        }
    }
}

/// Detection state of one run: the engine, where alerts go, evidence.
pub struct Detection {
    /// `None` when only metrics were asked for.
    pub engine: Option<Engine>,
    /// Metrics (`--metrics`, `--openmetrics`), fed by the same observations.
    pub metrics: Option<MetricsHub>,
    out: Option<OutputFile>,
    /// Failures of every output of the run (alerts and evidence here).
    pub outputs: Arc<OutputHealth>,
    /// The evidence directory and the packet rings: one per worker, each holding the host
    /// pairs that worker owns ([`crate::parallel::PairOwners`]).
    evidence: Option<(PathBuf, Vec<Arc<Mutex<EvidenceRing>>>)>,
    /// Names this run's evidence files apart from an earlier run's (alert ids restart at 1).
    run_tag: String,
    /// The sensor's name, on every alert line.
    pub sensor: Option<Arc<str>>,
    /// `--log-format eve`: alert and event lines as Suricata EVE.
    pub eve: bool,
    /// Alerts to a syslog collector too.
    pub syslog: Option<crate::output::syslog::SyslogSink>,
    /// Events to the syslog collector as well (`--syslog-events`).
    pub syslog_events: bool,
    pub evidence_written: u64,
    /// Alerts that got no evidence file: past [`EVIDENCE_MAX_FILES`], and with no packet of
    /// their pair still held (forgotten at a ring's bound, or never seen).
    pub evidence_skipped: (u64, u64),
    /// Alert lines written, by kind, type and severity (first lines of a cause only).
    pub counts: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// When set, every alert line is also kept here (tests, evaluation).
    pub kept: Option<Vec<Alert>>,
    scratch: Vec<Alert>,
    /// When the engine's clock ticks.
    clock: TickClock,
    /// Observations held for the next batch ([`Detection::hold`]): the first `held` of
    /// `slots`, in capture order. The slots after them hold observations already run, each
    /// given back to the dissector for the next one lent (their boxes change places): a batch
    /// moves nothing else.
    /// Boxed, each: a box is what changes places with the dissector's.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<otwatch_models::Observation>>,
    held: usize,
    /// Observations a batch holds ([`DEFAULT_BATCH`]); 1 runs each at once.
    pub batch: usize,
    /// What N workers found for the next tick, and a scratch list ([`Detection::found`]).
    split: SplitShare,
    /// Tests: observing the observation of this frame panics, as a bug would.
    #[cfg(test)]
    panic_on_frame: Option<u64>,
}

/// What N workers checking the channels handed the stage for its next tick.
#[derive(Default)]
struct SplitShare {
    found: Vec<otwatch_models::Alert>,
    heard: Vec<otwatch_models::detect::Heard>,
    /// Observations the workers checked.
    observations: u64,
    /// Whether the workers check the channels.
    on_workers: bool,
}

impl Detection {
    pub fn new(engine: Engine, out: Option<OutputFile>) -> Self {
        Detection {
            engine: Some(engine),
            metrics: None,
            out,
            outputs: Arc::default(),
            evidence: None,
            sensor: None,
            eve: false,
            syslog: None,
            syslog_events: false,
            run_tag: {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                format!("{secs}-{}", std::process::id())
            },
            evidence_written: 0,
            evidence_skipped: (0, 0),
            counts: BTreeMap::new(),
            kept: None,
            scratch: Vec::new(),
            clock: TickClock::default(),
            slots: Vec::new(),
            held: 0,
            batch: DEFAULT_BATCH,
            split: SplitShare::default(),
            #[cfg(test)]
            panic_on_frame: None,
        }
    }

    /// Writes evidence pcaps into `dir` (created if missing, and checked to take new files);
    /// returns the ring the pipeline must record packets into.
    pub fn with_evidence(&mut self, dir: &Path) -> std::io::Result<Arc<Mutex<EvidenceRing>>> {
        let mut rings = self.with_evidence_rings(dir, 1)?;
        Ok(rings.remove(0))
    }

    /// As [`Detection::with_evidence`], with one ring per worker (`workers` at least 1).
    pub fn with_evidence_rings(
        &mut self,
        dir: &Path,
        workers: usize,
    ) -> std::io::Result<Vec<Arc<Mutex<EvidenceRing>>>> {
        std::fs::create_dir_all(dir)?;
        crate::output::check_dir_writable(dir)?;
        // One byte budget for all the workers together, each ring its share.
        let share = crate::output::evidence::EVIDENCE_BYTES / workers.max(1);
        let rings: Vec<_> = (0..workers.max(1))
            .map(|_| Arc::new(Mutex::new(EvidenceRing::with_budget(share))))
            .collect();
        self.evidence = Some((dir.to_path_buf(), rings.clone()));
        Ok(rings)
    }

    /// Whether anything reads observations: the engine, or per-channel metrics.
    pub fn wants_observations(&self) -> bool {
        self.engine.is_some() || self.metrics.as_ref().is_some_and(|m| m.channels.enabled())
    }

    pub fn observe_event(&mut self, ev: &Event) {
        self.drain();
        if let Some(o) = observe(ev) {
            self.observe(&o);
        }
    }

    /// Whether events must reach the detection stage for an output of its own (events to
    /// syslog), whatever the events file wants.
    pub fn wants_event_lines(&self) -> bool {
        self.syslog_events && self.syslog.is_some()
    }

    /// An event, in capture order, for the outputs detection owns (`--syslog-events`): its
    /// JSON line as an events file has it.
    pub fn event_out(&mut self, ev: &Event) {
        use crate::output::json;
        let (Some(s), true) = (&mut self.syslog, self.syslog_events) else {
            return;
        };
        let mut line = Vec::with_capacity(512);
        let made = json::to_writer(&mut line, ev).is_ok() && {
            crate::event::event_flow_members(&mut line, ev, self.sensor.as_deref());
            !self.eve
                || match crate::output::eve::event(&line) {
                    Some(eve) => {
                        line.clear();
                        json::to_writer(&mut line, &eve).is_ok()
                    }
                    None => false,
                }
        };
        if made {
            s.event(ev.ts.0, &line);
        } else {
            // Counted as any message the collector did not get.
            let why = "an event's line could not be made";
            self.outputs.fail(OutputKind::Syslog, 1, &why);
        }
    }

    /// One observation, in capture order.
    pub fn observe(&mut self, o: &otwatch_models::Observation) {
        #[cfg(test)]
        assert!(
            self.panic_on_frame != Some(o.frame),
            "a bug, on frame {}",
            o.frame
        );
        // Empty but for a panic caught mid-observation (the capture loop goes on after one).
        if !self.scratch.is_empty() {
            self.scratch.clear();
        }
        if let (Some(m), None) = (&mut self.metrics, o.stream_anomaly) {
            m.channels.observe(o);
        }
        if let Some(e) = &mut self.engine {
            e.observe(o, &mut self.scratch);
        }
        // Most observations raise nothing.
        if !self.scratch.is_empty() {
            let mut lines = std::mem::take(&mut self.scratch);
            self.write_lines(&mut lines);
            self.scratch = lines;
        }
    }

    /// Whether observations may wait for a batch. Metrics run the batch before they publish
    /// or sample. Evidence takes the packets of the alert's pair the ring holds when it is
    /// raised, and events to syslog go out between the alerts: with either, each observation
    /// is run at once, and those outputs see what they did before.
    fn batching(&self) -> bool {
        self.batch > 1
            && self.engine.is_some()
            && self.evidence.is_none()
            && !self.wants_event_lines()
    }

    /// One observation, in capture order, lent by the pipeline that built it: held for the
    /// next batch ([`Detection::batch`]), or run at once when a batch is not taken. What is
    /// held is run before anything else reaches detection or reads it (the clock, an event, a
    /// metrics sample, a new capture, the end), so the engine sees everything in the same order
    /// either way, and raises the same alerts.
    pub fn hold(&mut self, obs: &mut Box<otwatch_models::Observation>) {
        if !self.batching() {
            return self.observe(obs);
        }
        // The boxes change places: the dissector builds its next observation in the one this
        // slot held (run already).
        match self.slots.get_mut(self.held) {
            Some(slot) => std::mem::swap(slot, obs),
            None => self.slots.push(crate::event::take_observation(obs, None)),
        }
        self.held += 1;
        if self.held >= MAX_HELD {
            self.drain();
        }
    }

    /// Runs the observations held, in order. A panic inside one (a bug, which the capture loop
    /// counts and goes on after) loses that observation only, as it would unbatched: the rest
    /// of the batch is run, then the panic goes on (the first, if several).
    pub fn drain(&mut self) {
        let held = std::mem::take(&mut self.held);
        if held == 0 {
            return;
        }
        let slots = std::mem::take(&mut self.slots);
        let (mut next, mut panicked) = (0, None);
        while next < held {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                while let Some(o) = slots[..held].get(next) {
                    next += 1;
                    self.observe(o);
                }
            }));
            if let Err(payload) = run {
                panicked.get_or_insert(payload);
            }
        }
        self.slots = slots;
        // A burst (a packet of many PDUs, a sweep) held more than a batch: the slots past it
        // would keep what they last held for the rest of the run.
        self.slots.truncate(self.batch.max(DEFAULT_BATCH));
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    }

    /// The clock moved with no event (a quiet live link).
    pub fn tick(&mut self, now: i64) {
        self.drain();
        self.clock.last = now;
        let mut lines = std::mem::take(&mut self.scratch);
        if let Some(e) = &mut self.engine {
            // With N workers checking the channels, what they found at this tick goes in.
            e.tick_found(
                now,
                &self.split.heard,
                Some(&mut self.split.found),
                &mut lines,
            );
            self.split.heard.clear();
        }
        self.write(&mut lines);
        self.scratch = lines;
    }

    /// Whether N workers can check the channels, the stage keeping what spans them
    /// ([`otwatch_models::split`]): detection on, and no events to syslog (which go out
    /// between the alerts, in the order one worker makes them). Per-channel metrics still
    /// get every observation ([`Detection::observe_metrics`]).
    pub fn split_ok(&self) -> bool {
        self.engine.is_some() && !self.wants_event_lines()
    }

    /// Whether per-channel metrics read observations.
    pub fn wants_channel_metrics(&self) -> bool {
        self.metrics.as_ref().is_some_and(|m| m.channels.enabled())
    }

    /// Whether N workers check the channels now (their observations come for the metrics
    /// only).
    pub fn channels_on_workers(&self) -> bool {
        self.split.on_workers
    }

    /// N workers check the channels from now on.
    pub fn hand_to_workers(&mut self) {
        self.split.on_workers = true;
    }

    /// An observation for the per-channel metrics only (N workers checked it).
    pub fn observe_metrics(&mut self, o: &otwatch_models::Observation) {
        if let (Some(m), None) = (&mut self.metrics, o.stream_anomaly) {
            m.channels.observe(o);
        }
    }

    /// Observations checked on N workers (their channels' checks; what spans channels is
    /// kept here).
    pub fn worker_observations(&self) -> u64 {
        self.split.observations
    }

    /// N workers: the candidate alerts a worker found in one observation, raised here (what
    /// is left of them goes back to the worker).
    pub fn found(&mut self, found: &mut otwatch_models::Found) {
        let mut lines = std::mem::take(&mut self.scratch);
        if let Some(e) = &mut self.engine {
            e.raise_each(found, &mut lines);
        }
        self.write(&mut lines);
        self.scratch = lines;
    }

    /// N workers: what a worker's detection says of what spans channels about one
    /// observation; `source`, the capture its last scan note named.
    pub fn note(&mut self, n: otwatch_models::detect::Note, source: &Arc<str>) {
        let mut lines = std::mem::take(&mut self.scratch);
        if let Some(e) = &mut self.engine {
            e.note(n, source, &mut lines);
        }
        self.write(&mut lines);
        self.scratch = lines;
    }

    /// N workers: a worker's share of the next tick (what its timers and windows raised, the
    /// devices it heard), and the latest observation it saw.
    pub fn tick_share(
        &mut self,
        found: &mut Vec<otwatch_models::Alert>,
        heard: &mut Vec<otwatch_models::detect::Heard>,
        seen: i64,
    ) {
        self.split.found.append(found);
        self.split.heard.append(heard);
        if let Some(e) = &mut self.engine {
            e.see(seen);
        }
    }

    /// N workers: the observations a worker checked and the PDUs it left out past the runtime
    /// bound, since it last said, and the latest observation it saw.
    pub fn worker_counts(&mut self, observations: u64, untracked: u64, seen: i64) {
        self.split.observations += observations;
        if let Some(e) = &mut self.engine {
            e.add_worker_counts(observations, untracked);
            e.see(seen);
        }
    }

    /// End of input: last lines of repeated causes; the baseline (learned or loaded).
    /// Alerts are flushed and fsynced; failures are in [`Detection::outputs`].
    pub fn finish(&mut self) -> Option<otwatch_models::Baseline> {
        self.drain();
        let mut lines = Vec::new();
        let baseline = self.engine.as_mut().and_then(|e| e.finish(&mut lines));
        self.write(&mut lines);
        if let Some(out) = &mut self.out {
            out.finish();
        }
        if let Some(s) = &mut self.syslog {
            s.finish();
        }
        if let Some((dir, _)) = &self.evidence {
            // The evidence files reach the disk once, here, not one fsync per file on the
            // capture thread.
            if let Err(e) = crate::output::sync_dir(dir) {
                self.outputs.fail(
                    OutputKind::Evidence,
                    1,
                    &format!("{}: sync: {e}", dir.display()),
                );
            }
        }
        baseline
    }

    /// Hands the alerts file and the evidence directory to `uid`/`gid` (before `--user`
    /// drops privileges), through open descriptors, never by a path that could be a symlink.
    pub fn chown_outputs(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        if let Some(out) = &self.out {
            out.chown(uid, gid)?;
        }
        if let Some((dir, _)) = &self.evidence {
            let d = crate::output::open_dir(dir)?;
            std::os::unix::fs::fchown(&d, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    #[inline]
    fn write(&mut self, lines: &mut Vec<Alert>) {
        // Most observations raise nothing.
        if !lines.is_empty() {
            self.write_lines(lines);
        }
    }

    fn write_lines(&mut self, lines: &mut Vec<Alert>) {
        for mut a in lines.drain(..) {
            if !a.repeat {
                let kind = match a.kind {
                    otwatch_models::AlertKind::Integrity => "integrity",
                    otwatch_models::AlertKind::Availability => "availability",
                };
                *self
                    .counts
                    .entry((kind, a.r#type, a.severity.name()))
                    .or_default() += 1;
                if self.evidence.is_some() && self.evidence_written >= EVIDENCE_MAX_FILES {
                    self.evidence_skipped.0 += 1;
                }
                if let (Some((dir, rings)), true) =
                    (&self.evidence, self.evidence_written < EVIDENCE_MAX_FILES)
                {
                    let path = dir.join(format!(
                        "alert-{}-{:06}-{}.pcap",
                        self.run_tag, a.id, a.r#type
                    ));
                    // The ring of the worker that owns the host pair: the only one holding its
                    // packets (a pair keeps its worker, `parallel::PairOwners`).
                    let (mut written, mut poisoned) = (Ok(false), false);
                    for ring in rings {
                        let Ok(r) = ring.lock() else {
                            poisoned = true;
                            continue;
                        };
                        written = r.write(&a, &path);
                        if !matches!(written, Ok(false)) {
                            break;
                        }
                    }
                    if poisoned && matches!(written, Ok(false)) {
                        written = Err(std::io::Error::other("evidence ring poisoned"));
                    }
                    match written {
                        Ok(true) => {
                            self.evidence_written += 1;
                            a.evidence = Some(path.display().to_string());
                        }
                        Ok(false) => self.evidence_skipped.1 += 1,
                        Err(e) => {
                            let why = format!("{}: {e}", path.display());
                            self.outputs.fail(OutputKind::Evidence, 1, &why);
                        }
                    }
                }
            }
            if let (Some(out), false, None) = (&mut self.out, self.eve, &self.syslog) {
                // The alerts file alone: the line written straight from the alert.
                let sensor = self.sensor.as_deref();
                out.line(|b| crate::output::alerts::write_alert_line(b, &a, sensor));
            } else if self.out.is_some() || self.syslog.is_some() {
                let mut json = alert_json(&a);
                if let (Some(s), Some(m)) = (&self.sensor, json.as_object_mut()) {
                    m.insert("sensor".into(), serde_json::json!(&**s));
                }
                let eve = self.eve.then(|| crate::output::eve::alert(&a, &json));
                if let Some(out) = &mut self.out {
                    out.line(|b| crate::output::json::to_writer(b, eve.as_ref().unwrap_or(&json)));
                }
                if let Some(s) = &mut self.syslog {
                    s.alert(&a, &json, eve.as_ref());
                }
            }
            if let Some(k) = &mut self.kept {
                k.push(a);
            }
        }
        // Alerts reach the file at once: a reader tailing it (a SIEM) sees each as it is raised.
        if let Some(out) = &mut self.out {
            out.flush();
        }
    }

    /// A one-screen account of the alerts, for the summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(engine) = &self.engine {
            let learning = if engine.is_learning() {
                " (still learning at the end)"
            } else {
                ""
            };
            let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
            for ((_, t, _), n) in &self.counts {
                *by_type.entry(t).or_default() += n;
            }
            let total: u64 = by_type.values().sum();
            let by: Vec<String> = by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
            s.push_str(&format!("  alerts: {total} causes{learning}"));
            if !by.is_empty() {
                s.push_str(&format!(" ({})", by.join(", ")));
            }
            if self.evidence.is_some() {
                s.push_str(&format!("; evidence files {}", self.evidence_written));
                let (bound, gone) = self.evidence_skipped;
                if bound + gone > 0 {
                    s.push_str(&format!(
                        " (none for {} alerts: {bound} past the {EVIDENCE_MAX_FILES}-file bound, {gone} whose packets were no longer held)",
                        bound + gone
                    ));
                }
            }
            s.push('\n');
            if self.split.observations > 0 {
                s.push_str(&format!(
                    "  detection: {} of {} observations checked on the workers that own their channels\n",
                    self.split.observations, engine.observations
                ));
            }
            let hit: Vec<String> = engine
                .bounds_hit()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(b, n)| format!("{b} {n}"))
                .collect();
            if !hit.is_empty() {
                s.push_str(&format!(
                    "  detection bounds hit (state not kept, counted): {}\n",
                    hit.join(", ")
                ));
            }
            if engine.clock_steps > 0 {
                s.push_str(&format!(
                    "  detection: the capture clock stepped back {} time(s); rates, timers and behaviour windows started again there\n",
                    engine.clock_steps
                ));
            }
        }
        if let Some(m) = &self.metrics {
            if let Some(srv) = &m.server {
                let scheme = if srv.tls { "https" } else { "http" };
                let c = &srv.counters;
                let load =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                s.push_str(&format!(
                    "  metrics: served on {scheme}://{}/metrics (accept errors {}, connections refused at the limit {}, unauthorized {})\n",
                    srv.addr,
                    load(&c.accept_errors),
                    load(&c.refused_connections),
                    load(&c.unauthorized),
                ));
            }
            if m.channels.overflow > 0 {
                s.push_str(&format!(
                    "  metrics: {} observations of channels beyond --metrics-max-channels\n",
                    m.channels.overflow
                ));
            }
        }
        s
    }

    /// Before a packet's PDUs: learning's clock starts at the first packet
    /// ([`Engine::begin`]), and the clock ticks back to it if it stepped back
    /// ([`TickClock::back`]).
    pub fn before_packet(&mut self, ts: i64) {
        if let Some(e) = &mut self.engine {
            e.begin(ts);
            if self.clock.back(ts) {
                self.tick(ts);
            }
            self.end_learning_by(ts);
        }
    }

    /// Learning ends before the first packet at or past its end (N workers take up detection
    /// there: [`crate::shards`]); detection starts at that packet's time.
    #[inline]
    pub fn end_learning_by(&mut self, ts: i64) {
        if self.engine.as_ref().is_some_and(|e| e.learning_ends_by(ts)) {
            self.drain();
            if let Some(e) = &mut self.engine {
                e.end_learning(ts);
            }
        }
    }

    /// The capture's first packet is at `ts` (N workers: the reader tells it before the
    /// packet's observations come back): learning lasts from it.
    pub fn begin(&mut self, ts: i64) {
        if let Some(e) = &mut self.engine {
            e.begin(ts);
        }
    }

    /// After each packet: publish metrics about once a second, record OpenMetrics samples when
    /// one is due in capture time.
    pub fn after_packet(&mut self, stats: &Stats, active_flows: usize, ts: i64) {
        // The detection clock moves with every packet, not only with OT events: timers fire
        // when the plant goes quiet while other traffic goes on.
        if self.engine.is_some() && self.clock.due(ts) {
            self.tick(ts);
        } else if self.held >= self.batch {
            self.drain();
        }
        // Only metrics read the counters: without them a packet costs two comparisons here.
        if self.metrics.is_some() {
            self.metrics_progress(1, ts, || (stats.clone(), active_flows));
        }
    }
}

/// An event sink that feeds detection and passes events on to `inner`.
pub struct DetectSink<'a> {
    pub detection: &'a mut Detection,
    pub inner: &'a mut dyn EventSink,
}

impl EventSink for DetectSink<'_> {
    /// Detection reads values; per-channel metrics need only the headers.
    fn wants_detail(&self) -> bool {
        self.detection.engine.is_some() || self.inner.wants_detail()
    }

    /// Events are built when detection or per-channel metrics use them, or the output wants
    /// them: metrics with `--metrics-max-channels 0` cost only the counters.
    fn wants_events(&self) -> bool {
        self.detection.engine.is_some()
            || self
                .detection
                .metrics
                .as_ref()
                .is_some_and(|m| m.channels.enabled())
            || self.inner.wants_events()
            || self.detection.wants_event_lines()
    }

    fn wants_observations(&self) -> bool {
        self.detection.wants_observations()
    }

    fn wants_event_out(&self) -> bool {
        self.inner.wants_events() || self.detection.wants_event_lines()
    }

    fn tick(&mut self, now_nanos: i64) {
        self.detection.tick(now_nanos);
        self.inner.tick(now_nanos);
    }

    fn before_packet(&mut self, ts: i64) {
        self.detection.before_packet(ts);
    }

    fn after_packet(&mut self, stats: &Stats, active_flows: usize, ts: i64) {
        self.detection.after_packet(stats, active_flows, ts);
    }

    fn drain(&mut self) {
        self.detection.drain();
    }

    fn live_counters(&mut self, c: LiveCounters) {
        if let Some(m) = &mut self.detection.metrics {
            m.live = Some(c);
        }
    }

    fn emit(&mut self, event: Event) {
        self.detection.observe_event(&event);
        self.event_out(event);
    }

    fn observed(
        &mut self,
        _key: crate::event::FlushKey,
        obs: &mut Box<otwatch_models::Observation>,
    ) {
        self.detection.hold(obs);
    }
}

impl DetectSink<'_> {
    /// An event to the outputs: detection's own (events to syslog), then the events sink.
    fn event_out(&mut self, event: Event) {
        self.detection.event_out(&event);
        if self.inner.wants_events() {
            self.inner.emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Detection, TickClock, TICK_EVERY_NANOS as TICK};

    /// A panic while a batch runs (a bug in detection) loses the observation it was in, as it
    /// would unbatched: the rest of the batch is run before the panic goes on to the capture
    /// loop, and nothing stays held.
    #[test]
    fn a_panic_in_a_batch_loses_only_its_observation() {
        use otwatch_models::{Channel, Engine, EngineConfig, Kind, Observation, Proto};
        let mut det = Detection::new(Engine::learning(EngineConfig::default()), None);
        det.panic_on_frame = Some(3);
        let source: std::sync::Arc<str> = std::sync::Arc::from("test");
        let channel = Channel {
            proto: Proto::Modbus,
            client: [10, 0, 0, 1].into(),
            server: [10, 0, 0, 2].into(),
            unit: 1,
        };
        for frame in 1..=5 {
            let mut o = Box::new(Observation::new(
                frame as i64 * 1_000_000,
                std::sync::Arc::clone(&source),
                frame,
                channel,
                Kind::Request,
                3,
            ));
            det.hold(&mut o);
        }
        let seen = |d: &Detection| d.engine.as_ref().map_or(0, |e| e.observations);
        assert_eq!(seen(&det), 0, "held, not run");
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| det.drain()));
        assert!(run.is_err(), "the panic goes on");
        assert_eq!(seen(&det), 4, "frames 1, 2, 4 and 5 were run");
        assert_eq!(det.held, 0);
        det.drain();
        assert_eq!(seen(&det), 4, "nothing was left held");
    }

    /// The clock ticks a tick after the last, not for a packet a little older (reordering), and
    /// back before the second packet in a row a tick or more before it (a step back); one such
    /// packet alone (a glitch) is no step.
    #[test]
    fn the_tick_clock_follows_a_step_back_not_a_glitch() {
        let mut c = TickClock::default();
        assert!(c.due(100 * TICK));
        assert!(!c.due(100 * TICK + TICK / 2));
        assert!(c.due(101 * TICK));
        assert!(!c.back(101 * TICK - TICK / 2), "a reordered packet");
        assert!(!c.due(101 * TICK - TICK / 2));
        // A glitch: one packet a day back, then the clock goes on.
        assert!(!c.back(101 * TICK - 345_600 * TICK));
        assert!(!c.due(101 * TICK - 345_600 * TICK));
        assert!(!c.back(101 * TICK + TICK / 2));
        assert!(c.due(102 * TICK));
        // A step: two packets in a row.
        assert!(!c.back(50 * TICK));
        assert!(!c.due(50 * TICK));
        assert!(c.back(50 * TICK + TICK / 4), "a step back");
        assert_eq!(c.last, 50 * TICK + TICK / 4);
        assert!(!c.due(50 * TICK + TICK / 2));
        assert!(c.due(51 * TICK + TICK / 4));
    }
}
