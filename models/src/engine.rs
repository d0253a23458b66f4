//! Learning, then detection, over one stream of observations in capture time.

use serde_json::json;

use std::sync::Arc;

use crate::alert::{Alert, AlertBook, AlertKey, Bare, Candidate, Found, Severity};
use crate::baseline::Baseline;
use crate::detect::{Detector, Heard, Note};
use crate::learn::Learner;
use crate::obs::{Command, Kind, Observation};
use crate::NANOS;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Learn from the first this-many nanoseconds of capture time, then detect. `None`: learn
    /// from everything (`otwatch learn`) unless a baseline is given.
    pub learn_for: Option<i64>,
    /// Behaviour-model window, seconds.
    pub window_secs: f64,
    /// A cause seen again this long after its last alert line gets a repeat line, seconds.
    pub realert_secs: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            learn_for: None,
            window_secs: 5.0,
            realert_secs: 300.0,
        }
    }
}

enum Phase {
    Learning(Box<Learner>),
    Detecting(Box<Detector>),
    /// Transient, while switching.
    Empty,
}

pub struct Engine {
    phase: Phase,
    learn_until: Option<i64>,
    config: EngineConfig,
    book: AlertBook,
    scratch: Found,
    pub observations: u64,
    /// The latest time the clock ticked to since it last stepped back.
    tick_high: i64,
    /// Times the capture clock stepped back by more than [`CLOCK_STEP_BACK`].
    pub clock_steps: u64,
    /// Whether the capture's first moment was seen ([`Engine::begin`]).
    begun: bool,
    /// PDUs of channels past the runtime bound, on N workers.
    worker_untracked: u64,
}

/// The clock ticking back by more than this is a step of the capture clock (a capture that
/// starts before the last one ended, a live sensor's clock stepped by NTP), not packets
/// reordered across flows: what detection measures over time starts again
/// ([`Engine::tick`]).
pub const CLOCK_STEP_BACK: i64 = NANOS;

impl Engine {
    /// Learns (for `config.learn_for` of capture time, or from everything), then detects.
    pub fn learning(config: EngineConfig) -> Self {
        Engine {
            phase: Phase::Learning(Box::new(Learner::new(config.window_secs))),
            learn_until: None,
            book: AlertBook::new((config.realert_secs * NANOS as f64) as i64),
            config,
            scratch: Found::default(),
            observations: 0,
            tick_high: i64::MIN,
            clock_steps: 0,
            begun: false,
            worker_untracked: 0,
        }
    }

    /// Detects against a saved baseline from the first observation.
    pub fn detecting(baseline: Baseline, config: EngineConfig) -> Self {
        Engine {
            phase: Phase::Detecting(Box::new(Detector::new(baseline))),
            learn_until: None,
            book: AlertBook::new((config.realert_secs * NANOS as f64) as i64),
            config,
            scratch: Found::default(),
            observations: 0,
            tick_high: i64::MIN,
            clock_steps: 0,
            begun: false,
            worker_untracked: 0,
        }
    }

    pub fn is_learning(&self) -> bool {
        matches!(self.phase, Phase::Learning(_))
    }

    /// The baseline in use, shared (N workers check against it).
    pub fn shared_baseline(&self) -> Option<std::sync::Arc<Baseline>> {
        match &self.phase {
            Phase::Detecting(d) => Some(std::sync::Arc::clone(&d.baseline)),
            _ => None,
        }
    }

    /// The baseline in use, once learning has ended (or was loaded).
    pub fn baseline(&self) -> Option<&Baseline> {
        match &self.phase {
            Phase::Detecting(d) => Some(&*d.baseline),
            _ => None,
        }
    }

    /// Distinct alert causes so far.
    pub fn alert_causes(&self) -> usize {
        self.book.len()
    }

    /// Where a memory bound of detection was hit: (bound, times), for the summary and the
    /// metrics. Learning's bounds are in the baseline's `unlearned`.
    pub fn bounds_hit(&self) -> [(&'static str, u64); 3] {
        let (channels, scans) = match &self.phase {
            Phase::Detecting(d) => (
                d.untracked_channels + self.worker_untracked,
                d.across.scan_resets,
            ),
            _ => (0, 0),
        };
        [
            ("runtime_channels", channels),
            ("scan_clients", scans),
            ("alert_causes", self.book.overflowed),
        ]
    }

    /// The capture's first moment, `ts` (its first packet, which the capture loop tells before
    /// the packet's observations): learning lasts `learn_for` from it. Without it, the first
    /// observation starts learning's clock. Later calls change nothing.
    #[inline]
    pub fn begin(&mut self, ts: i64) {
        if !self.begun {
            self.begin_at(ts);
        }
    }

    #[cold]
    #[inline(never)]
    fn begin_at(&mut self, ts: i64) {
        self.begun = true;
        match (&mut self.phase, self.config.learn_for) {
            (Phase::Learning(_), Some(d)) => self.learn_until = Some(ts.saturating_add(d)),
            // A saved baseline: detection's clocks start at the first packet.
            (Phase::Detecting(d), _) => d.start_at(ts),
            _ => {}
        }
    }

    /// Whether learning ends by `ts`: the capture loop ends it before the first packet at or
    /// past its end ([`Engine::end_learning`]), and N workers then take up detection.
    #[inline]
    pub fn learning_ends_by(&self, ts: i64) -> bool {
        self.learn_until.is_some_and(|until| ts >= until)
    }

    /// When learning ends, if it ends with time ([`Engine::begin`] first).
    pub fn learning_until(&self) -> Option<i64> {
        self.learn_until
    }

    /// Ends learning before a packet at `ts`: detection starts there.
    #[cold]
    #[inline(never)]
    pub fn end_learning(&mut self, ts: i64) {
        self.switch();
        self.start_at(ts);
    }

    /// N workers' share of the counts: observations they checked, and PDUs of channels past
    /// the runtime bound ([`Engine::bounds_hit`]).
    pub fn add_worker_counts(&mut self, observations: u64, untracked: u64) {
        self.observations += observations;
        self.worker_untracked += untracked;
    }

    /// Ends learning once `now` reached its end: one comparison while learning, none after.
    #[inline]
    fn switch_if_due(&mut self, now: i64) {
        if self.learn_until.is_some_and(|until| now >= until) {
            self.switch();
        }
    }

    #[cold]
    #[inline(never)]
    fn switch(&mut self) {
        // Learning's end is passed: nothing more to compare (it is set only while learning).
        self.learn_until = None;
        if let Phase::Learning(l) = std::mem::replace(&mut self.phase, Phase::Empty) {
            self.phase = Phase::Detecting(Box::new(Detector::new(l.finish())));
        }
    }

    /// One observation; alert lines to write are appended to `out`.
    pub fn observe(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        self.observations += 1;
        self.begin(o.ts);
        self.switch_if_due(o.ts);
        self.book.see(o.ts);
        // Empty but for a panic caught mid-observation (the capture loop goes on after one):
        // its candidates must not be raised with this observation's.
        if !self.scratch.is_empty() {
            self.scratch.clear();
        }
        // Most observations carry nothing `always` raises: tested here, its closures and texts
        // out of line (inlined, their set-up ran for every observation).
        if carries_always(o) {
            let book = &self.book;
            always(o, &|k| book.contains(k), &mut self.scratch.alerts);
        }
        // A stream anomaly is no traffic of its channel: nothing to learn or compare.
        match &mut self.phase {
            _ if o.stream_anomaly.is_some() => {}
            Phase::Learning(l) => l.observe(o),
            Phase::Detecting(d) => {
                d.observe(o, &mut self.scratch.alerts);
                if !d.raised.bare.is_empty() {
                    d.take_bare(&mut self.scratch.bare);
                }
            }
            Phase::Empty => {}
        }
        // Most observations raise nothing.
        if !self.scratch.is_empty() {
            let mut cands = std::mem::take(&mut self.scratch);
            if !cands.bare.is_empty() {
                cands.name_source(&o.source);
            }
            crate::detect::suppress_implied(&mut cands);
            self.raise_found(&mut cands, out);
            self.scratch = cands;
        }
    }

    /// One observation's candidates (after the implied ones were dropped), raised in place (an
    /// alert is large, and a flood has one per PDU): what the book keeps is moved out of the
    /// candidates, which are then cleared. The detector's set of causes marked raised evolves
    /// as when every candidate was marked in turn: a mark is skipped only where it would change
    /// nothing (a bare occurrence whose cause the detector found marked, with no clear of the
    /// set since).
    pub fn raise_found(&mut self, cands: &mut Found, out: &mut Vec<Alert>) {
        self.raise_each(cands, out);
        cands.clear();
    }

    /// [`Engine::raise_found`], the candidates left where they are (what the book keeps moved
    /// out of the whole alerts) for the caller to drop. With N workers, the candidates a
    /// worker found ([`crate::split`]), dropped on that worker. A bare occurrence is raised in
    /// its place among the whole alerts, as the alert it stands for would be.
    pub fn raise_each(&mut self, cands: &mut Found, out: &mut Vec<Alert>) {
        let clears = self.raised_clears();
        if cands.bare.is_empty() {
            for a in &mut cands.alerts {
                self.raise_in(a, clears, out);
            }
            return;
        }
        let source = cands.bare_source();
        cands.in_order(|c| match c {
            Candidate::Whole(a) => self.raise_in(a, clears, out),
            Candidate::Bare(b) => self.raise_bare(b, &source, clears, out),
        });
    }

    /// [`Engine::raise_in`] of a bare occurrence (of the capture `source`): counted by the
    /// book, and its cause marked again only where the set of marks was cleared since its
    /// observation's candidates began; raised whole where the book has no entry for it.
    fn raise_bare(&mut self, b: &Bare, source: &Arc<str>, clears: u64, out: &mut Vec<Alert>) {
        if !self.book.raise_bare(b, source, out) {
            return self.raise_in(&mut b.alert(source), clears, out);
        }
        if let Phase::Detecting(d) = &mut self.phase {
            if d.raised_clears() != clears {
                d.mark_raised(b.key);
            }
        }
    }

    /// The times the detector's set of causes marked raised was cleared (none while learning).
    fn raised_clears(&self) -> u64 {
        match &self.phase {
            Phase::Detecting(d) => d.raised_clears(),
            _ => 0,
        }
    }

    /// One candidate to the book; `clears`, [`Engine::raised_clears`] before its observation's
    /// first candidate.
    fn raise_in(&mut self, a: &mut Alert, clears: u64, out: &mut Vec<Alert>) {
        let mut detector = match &mut self.phase {
            Phase::Detecting(d) => Some(d),
            _ => None,
        };
        let (key, skipped) = (a.key, a.text_skipped);
        let mut started = false;
        let line = self.book.raise_with(a, |a| {
            started = true;
            if let Some(d) = detector.as_deref_mut() {
                d.soften(std::slice::from_mut(a));
                d.mark_raised(a.key);
            }
        });
        // An occurrence of an entry already in the book keeps its first line's
        // severity: it is not softened.
        if let (false, Some(d)) = (started, detector) {
            if !(skipped && d.raised_clears() == clears) {
                d.mark_raised(key);
            }
        }
        if let Some(line) = line {
            out.push(line);
        }
    }

    /// Advances the clock without an observation (live capture on a quiet link). The clock
    /// is the capture's, from packets (or, live, the wall clock on a quiet link): a tick more
    /// than [`CLOCK_STEP_BACK`] before the latest is a step back. Observations do not move it
    /// back (a PDU out of a TCP hole carries its own, older time).
    pub fn tick(&mut self, now: i64, out: &mut Vec<Alert>) {
        self.tick_found(now, &[], None, out);
    }

    /// [`Engine::tick`] with N workers checking the channels ([`crate::split`]): `heard`, what
    /// each worker heard of the learned devices since its last tick, and `found`, what the
    /// workers' timers and windows raised at this tick, go in with what is kept here (the
    /// devices' silence), in the order one engine gives a tick's alerts.
    pub fn tick_found(
        &mut self,
        now: i64,
        heard: &[Heard],
        found: Option<&mut Vec<Alert>>,
        out: &mut Vec<Alert>,
    ) {
        if let Phase::Detecting(d) = &mut self.phase {
            for h in heard {
                d.across.apply(h);
            }
        }
        if now < self.tick_high.saturating_sub(CLOCK_STEP_BACK) {
            self.clock_stepped_back(now);
        }
        self.tick_high = self.tick_high.max(now);
        self.book.see(now);
        self.switch_if_due(now);
        if let Phase::Detecting(d) = &mut self.phase {
            let mut cands = std::mem::take(&mut self.scratch.alerts);
            d.tick(now, &mut cands);
            // Timers and windows raise whole alerts (no bare occurrence comes of a tick); any
            // left are an observation's that a panic cut short, dropped with its candidates.
            d.raised.bare.clear();
            if let Some(found) = found.filter(|f| !f.is_empty()) {
                cands.append(found);
                cands.sort_by(crate::detect::tick_order);
            }
            d.soften(&mut cands);
            for a in &mut cands {
                if let Some(line) = self.book.raise(a) {
                    out.push(line);
                }
            }
            cands.clear();
            self.scratch.alerts = cands;
        }
    }

    /// N workers: what a worker's detection says of what spans channels about one observation
    /// ([`crate::split`]); `source`, the capture's name its last scan note named.
    pub fn note(&mut self, note: Note, source: &std::sync::Arc<str>, out: &mut Vec<Alert>) {
        let Phase::Detecting(d) = &mut self.phase else {
            return;
        };
        match note {
            Note::Claim(i) => d.claimed(i),
            Note::Scan(scan) => {
                self.book.see(scan.ts);
                let mut cands = std::mem::take(&mut self.scratch);
                d.scan_noted(scan, source, &mut cands.alerts);
                d.take_bare(&mut cands.bare);
                if !cands.is_empty() {
                    if !cands.bare.is_empty() {
                        cands.name_source(source);
                    }
                    self.raise_found(&mut cands, out);
                }
                self.scratch = cands;
            }
        }
    }

    /// Detection's clock saw `ts` (N workers: the latest observation a worker saw).
    pub fn see(&mut self, ts: i64) {
        self.book.see(ts);
    }

    /// The latest time the clock ticked to (since it last stepped back).
    pub fn tick_high(&self) -> i64 {
        self.tick_high
    }

    /// Detection checks every request in full, those its channel would hold as clean too (the
    /// detector's [`crate::detect`] `CleanRequests`): for the differential harness
    /// ([`crate::fuzzing`]), which holds the two ways to the same alerts. Only an engine that
    /// is detecting (made with a baseline, or past learning): otherwise nothing is done.
    pub fn check_every_request(&mut self) {
        if let Phase::Detecting(d) = &mut self.phase {
            d.check_every_request();
        }
    }

    /// Detection starts at `now` (its clocks: polls, silences, the first behaviour window),
    /// if it has not yet.
    pub fn start_at(&mut self, now: i64) {
        if let Phase::Detecting(d) = &mut self.phase {
            d.start_at(now);
        }
    }

    #[cold]
    #[inline(never)]
    fn clock_stepped_back(&mut self, now: i64) {
        self.clock_steps += 1;
        // Learning lasts its duration of capture time: the step is not part of it.
        let step = self.tick_high.saturating_sub(now);
        if let Some(until) = &mut self.learn_until {
            *until = until.saturating_sub(step);
        }
        self.tick_high = now;
        self.book.clock_back(now);
        match &mut self.phase {
            Phase::Learning(l) => l.clock_back(),
            Phase::Detecting(d) => d.clock_back(now),
            Phase::Empty => {}
        }
    }

    /// End of input: final lines for repeated causes; the learned baseline, when learning was
    /// still going on (or a loaded/learned one in detection).
    pub fn finish(&mut self, out: &mut Vec<Alert>) -> Option<Baseline> {
        out.extend(self.book.finish());
        match std::mem::replace(&mut self.phase, Phase::Empty) {
            Phase::Learning(l) => {
                let b = l.finish();
                self.phase = Phase::Detecting(Box::new(Detector::new(b.clone())));
                Some(b)
            }
            Phase::Detecting(d) => {
                let b = Baseline::clone(&d.baseline);
                self.phase = Phase::Detecting(d);
                Some(b)
            }
            Phase::Empty => None,
        }
    }
}

/// One observation, then the clock's tick at its time, as the capture loop ticks after a
/// packet (timers fire only at ticks).
#[cfg(test)]
fn see(engine: &mut Engine, o: &Observation, out: &mut Vec<Alert>) {
    engine.observe(o, out);
    engine.tick(o.ts, out);
}

/// Whether `o` carries something [`always`] raises (most do not: tested before the call, its
/// closures and texts out of line).
#[inline]
pub(crate) fn carries_always(o: &Observation) -> bool {
    o.command.is_some()
        || o.malformed.is_some()
        || o.stream_anomaly.is_some()
        || o.crc_error
        || o.device_restarted
}

/// The alert types [`always`] raises: they need no baseline, so what learning saw of their
/// channel does not lower them.
pub(crate) fn needs_no_baseline(r#type: &str) -> bool {
    matches!(
        r#type,
        "plc_stop"
            | "plc_start"
            | "program_download"
            | "program_upload"
            | "device_restart_command"
            | "malformed_pdu"
            | "crc_error"
            | "device_restarted"
            | "overlap_conflict"
    )
}

/// Alerts that need no baseline: commands that stop, start, reprogram or restart a device,
/// malformed PDUs, CRC errors, a device reporting its own restart, and TCP streams or IP
/// datagrams that contradict themselves. Raised while learning too.
/// A cause already in the book goes out bare: its text was built the first time.
#[inline(never)]
pub(crate) fn always(o: &Observation, known: &dyn Fn(&AlertKey) -> bool, out: &mut Vec<Alert>) {
    let ch = &o.channel;
    let mut push =
        |key: AlertKey, sev: Severity, text: &dyn Fn() -> (String, serde_json::Value)| {
            let mut a = crate::detect::alert(o, key, sev);
            if !known(&key) {
                let (message, observed) = text();
                (a.message, a.observed) = (message, observed.into());
            }
            out.push(a);
        };
    let what = || json!({"function": o.function, "name": o.function_name});
    if let (Some(cmd), Kind::Request) = (o.command, o.kind) {
        let (t, sev, what_cmd) = match cmd {
            Command::PlcStop => ("plc_stop", Severity::Critical, "a PLC stop"),
            Command::PlcStart => ("plc_start", Severity::High, "a PLC start"),
            Command::ProgramDownload => {
                ("program_download", Severity::Critical, "a program download")
            }
            Command::ProgramUpload => ("program_upload", Severity::Medium, "a program upload"),
            Command::Restart => (
                "device_restart_command",
                Severity::High,
                "a restart command",
            ),
        };
        push(AlertKey::channel(t, ch, 0), sev, &|| {
            let name = o
                .function_name
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            (
                format!("{} sent {what_cmd}{name} to {}", ch.client, ch.server),
                what(),
            )
        });
    }
    if let Some(reason) = o.malformed {
        // Reasons are static strings: the address names one.
        let key = AlertKey::channel("malformed_pdu", ch, reason.as_ptr() as u64);
        push(key, Severity::Medium, &|| {
            (
                format!(
                    "{ch}: malformed {} PDU from {}: {reason}",
                    ch.proto.name(),
                    o.src()
                ),
                json!({"reason": reason, "function": o.function}),
            )
        });
    }
    if let Some(what) = o.stream_anomaly {
        // One cause per layer (TCP, IP fragments) and per sender.
        let ip = what.starts_with("ip_");
        let layer: u64 = if ip { 2 } else { 1 };
        let key = AlertKey::channel(
            "overlap_conflict",
            ch,
            layer << 1 | u64::from(o.src() == ch.server),
        );
        push(key, Severity::Medium, &|| {
            (
                format!(
                    "{ch}: {} sent bytes that contradict bytes it sent before at the same place of the {} (a reassembly evasion, or a broken stack); the first ones were dissected",
                    o.src(),
                    if ip { "IP datagram" } else { "TCP stream" },
                ),
                json!({"anomaly": what}),
            )
        });
    }
    if o.crc_error {
        push(
            AlertKey::channel("crc_error", ch, 0),
            Severity::Medium,
            &|| {
                (
                    format!(
                        "{ch}: {} frame with a bad CRC from {}",
                        ch.proto.name(),
                        o.src()
                    ),
                    what(),
                )
            },
        );
    }
    if o.device_restarted && o.kind != Kind::Request {
        let key = AlertKey::pair("device_restarted", ch.proto, ch.server, ch.server, 0);
        push(key, Severity::High, &|| {
            (
                format!(
                    "{} reports that it restarted ({})",
                    ch.server,
                    match ch.proto {
                        crate::Proto::Iec104 => "end of initialisation, M_EI_NA_1",
                        _ => "IIN1.7 DEVICE_RESTART",
                    }
                ),
                what(),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use super::*;
    use crate::obs::{Channel, Proto};

    const T0: i64 = 1_700_000_000 * NANOS;

    /// A Modbus read (fc 3) from client number `i` to one PLC.
    fn request(i: u32, ts: i64) -> Observation {
        let channel = Channel {
            proto: Proto::Modbus,
            client: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            server: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)),
            unit: 1,
        };
        Observation::new(
            ts,
            Arc::from("t"),
            u64::from(i) + 1,
            channel,
            Kind::Request,
            3,
        )
    }

    #[test]
    fn learning_says_what_its_bounds_left_out() {
        let mut engine = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        let n = crate::learn::MAX_ASSETS as u32 + 10;
        for i in 0..n {
            engine.observe(&request(i, T0 + i64::from(i) * 1000), &mut out);
        }
        let baseline = engine.finish(&mut out).expect("a baseline");
        // The PLC and MAX_ASSETS - 1 clients fit; the other 11 clients' observations did not.
        assert_eq!(baseline.unlearned.assets, 11);
        assert!(baseline.unlearned.channels > 0);
        let text = baseline.describe();
        assert!(text.contains("INCOMPLETE"), "{text}");
        // Saved and loaded, the baseline still says so.
        let json = serde_json::to_string(&baseline).unwrap();
        let loaded = Baseline::from_json(&json, "b.json").unwrap();
        assert_eq!(loaded.unlearned, baseline.unlearned);
    }

    #[test]
    fn detection_counts_what_its_bounds_left_out() {
        let mut learner = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        learner.observe(&request(0, T0), &mut out);
        let baseline = learner.finish(&mut out).expect("a baseline");
        assert!(baseline.unlearned.is_empty());
        let mut engine = Engine::detecting(baseline, EngineConfig::default());
        let n = 20_000 + 100;
        for i in 1..=n {
            engine.observe(&request(i, T0 + i64::from(i) * 1000), &mut out);
            out.clear();
        }
        let hit: std::collections::BTreeMap<_, _> = engine.bounds_hit().into_iter().collect();
        assert!(hit["runtime_channels"] > 0, "{hit:?}");
        assert!(hit["alert_causes"] > 0, "{hit:?}");
    }

    /// A learned channel remembers where its client's scan window is; once the full table
    /// started afresh, that place belongs to someone else, and the client gets a window of its
    /// own: its scan alert carries its own frames.
    #[test]
    fn a_scan_window_remembered_by_a_channel_goes_stale_with_the_table() {
        let mut learner = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        let read = |client: u32, start: u32, frame: u64, ts: i64| {
            let mut o = request(client, ts);
            o.frame = frame;
            o.accesses.push(crate::obs::Access {
                space: 4,
                start,
                count: 1,
                write: false,
                values: Default::default(),
            });
            o
        };
        learner.observe(&read(1, 0, 1, T0), &mut out);
        let baseline = learner.finish(&mut out).expect("a baseline");
        let mut engine = Engine::detecting(baseline, EngineConfig::default());
        let mut ts = T0 + NANOS;
        // The learned client reads an address it never read: its window is made, and its
        // channel remembers where.
        engine.observe(&read(1, 7, 2, ts), &mut out);
        // As many new clients as the table holds, each reading an address learning never saw
        // (only what is new counts toward a scan): it is full, and starts afresh once.
        let max = crate::detect::MAX_SCAN_CLIENTS as u32;
        for client in 2..=max + 1 {
            ts += 1000;
            engine.observe(&read(client, 500, 3, ts), &mut out);
        }
        assert_eq!(engine.bounds_hit()[1], ("scan_clients", 1));
        out.clear();
        // The learned client reads 16 addresses it never read: a scan, in its own window.
        for k in 0..16u32 {
            ts += 1000;
            engine.observe(
                &read(1, 1000 + 10 * k, 900_000 + u64::from(k), ts),
                &mut out,
            );
        }
        let scans: Vec<&Alert> = out.iter().filter(|a| a.r#type == "scan").collect();
        assert_eq!(
            scans.len(),
            1,
            "{:?}",
            out.iter().map(|a| &a.message).collect::<Vec<_>>()
        );
        assert!(
            scans[0].frames.iter().all(|&f| f >= 900_000),
            "{:?}",
            scans[0].frames
        );
    }

    /// A hand-edited baseline that lists a channel or a device twice: the channel's polls of
    /// both entries are watched (a later poll of the same key would replace an earlier one),
    /// and the device's last entry says which Ethernet address it has.
    #[test]
    fn a_channel_or_device_listed_twice_merges_as_before() {
        let client: IpAddr = [10, 0, 0, 1].into();
        let server: IpAddr = [192, 168, 1, 10].into();
        let poll = |start: u32, at: i64, mac: u8| {
            let channel = Channel {
                proto: Proto::Modbus,
                client,
                server,
                unit: 1,
            };
            let mut o = Observation::new(T0 + at, Arc::from("t"), 1, channel, Kind::Request, 3);
            o.src_mac = Some([2, 0, 0, 0, 0, mac]);
            o.accesses.push(crate::obs::Access {
                space: 4,
                start,
                count: 10,
                write: false,
                values: Default::default(),
            });
            o
        };
        let mut learner = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        for s in 0..20 {
            learner.observe(&poll(0, s * NANOS, 1), &mut out);
            learner.observe(&poll(100, s * NANOS + NANOS / 2, 1), &mut out);
        }
        let mut baseline = learner.finish(&mut out).expect("a baseline");
        assert_eq!(baseline.channels.len(), 1);
        assert_eq!(baseline.channels[0].polls.len(), 2);
        // The channel twice, each entry with one of its polls; the client twice, the second
        // entry with another Ethernet address.
        let mut first = baseline.channels[0].clone();
        let mut second = first.clone();
        first.polls.retain(|p| p.start == 0);
        second.polls.retain(|p| p.start == 100);
        baseline.channels = vec![first, second];
        let at = baseline
            .assets
            .iter()
            .position(|a| a.ip == client)
            .expect("the client");
        let mut again = baseline.assets[at].clone();
        again.macs = vec!["02:00:00:00:00:09".into()];
        baseline.assets.push(again);
        let mut engine = Engine::detecting(baseline, EngineConfig::default());
        // Both polls go on from the learned NIC, then the poll of 0..9 stops.
        for s in 20..30 {
            see(&mut engine, &poll(0, s * NANOS, 1), &mut out);
            see(&mut engine, &poll(100, s * NANOS + NANOS / 2, 1), &mut out);
        }
        for s in 30..40 {
            see(&mut engine, &poll(100, s * NANOS + NANOS / 2, 1), &mut out);
        }
        let firsts: Vec<&Alert> = out.iter().filter(|a| !a.repeat).collect();
        let texts: Vec<&str> = firsts.iter().map(|a| a.message.as_str()).collect();
        let missing: Vec<&str> = firsts
            .iter()
            .filter(|a| a.r#type == "poll_cycle_broken")
            .map(|a| a.message.as_str())
            .collect();
        assert_eq!(missing.len(), 1, "{texts:?}");
        assert!(
            missing[0].contains("holding_registers 0+10 missing"),
            "{texts:?}"
        );
        let mac: Vec<&str> = firsts
            .iter()
            .filter(|a| a.r#type == "new_asset")
            .map(|a| a.message.as_str())
            .collect();
        assert_eq!(mac.len(), 1, "{texts:?}");
        assert!(mac[0].contains("learned 02:00:00:00:00:09"), "{texts:?}");
    }

    /// A channel whose client found no room among the assets is still learned, and each of its
    /// observations counts the client left out again (its ends are looked up each time, not
    /// taken from the channel).
    #[test]
    fn a_channel_with_an_end_left_out_counts_it_each_time() {
        let mut engine = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        // The server and MAX_ASSETS - 1 clients fill the assets; one channel short of the bound.
        let full = crate::learn::MAX_ASSETS as u32 - 1;
        for i in 0..full {
            engine.observe(&request(i, T0 + i64::from(i) * 1000), &mut out);
        }
        let late = full + 5;
        for k in 0..3 {
            engine.observe(&request(late, T0 + NANOS + k * 1000), &mut out);
        }
        let baseline = engine.finish(&mut out).expect("a baseline");
        assert_eq!(baseline.unlearned.assets, 3);
        assert_eq!(baseline.unlearned.channels, 0);
        assert_eq!(baseline.assets.len(), crate::learn::MAX_ASSETS);
        let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + late));
        let channel = baseline
            .channels
            .iter()
            .find(|c| c.channel.client == client)
            .expect("the late client's channel is learned");
        assert_eq!(channel.requests, 3);
    }

    /// A learned device is followed whichever channel it speaks on: a new Ethernet address is
    /// reported on the client side of a learned channel and on a channel learning never saw,
    /// a server still speaking (on a new channel) is not silent while a client that stopped
    /// is, and the missing poll of that client names its capture and its ports.
    #[test]
    fn devices_and_polls_are_followed_on_learned_and_new_channels() {
        use crate::obs::Ports;
        let client: IpAddr = [10, 0, 0, 1].into();
        let server: IpAddr = [192, 168, 1, 10].into();
        let source: Arc<str> = Arc::from("cap");
        let pdu = |unit: u32, kind: Kind, at: i64, mac: u8| {
            let channel = Channel {
                proto: Proto::Modbus,
                client,
                server,
                unit,
            };
            let ts = T0 + at;
            let mut o = Observation::new(ts, source.clone(), (at / 1000) as u64, channel, kind, 3);
            o.src_mac = Some([2, 0, 0, 0, 0, mac]);
            o.corr = Some((at / NANOS) as u32);
            let ports = Ports {
                src: 50_000,
                dst: 502,
                udp: false,
            };
            o.ports = Some(if kind == Kind::Request {
                ports
            } else {
                ports.reversed()
            });
            o
        };
        let config = EngineConfig {
            learn_for: Some(20 * NANOS),
            ..EngineConfig::default()
        };
        let mut engine = Engine::learning(config);
        let mut out = Vec::new();
        // Learning: the client (MAC ..01) polls the server (MAC ..02) every second on unit 1.
        for s in 0..20 {
            see(&mut engine, &pdu(1, Kind::Request, s * NANOS, 1), &mut out);
            see(
                &mut engine,
                &pdu(1, Kind::Response, s * NANOS + NANOS / 100, 2),
                &mut out,
            );
        }
        assert!(out.is_empty());
        // Detection: one poll from another NIC, then the client is quiet; the server answers
        // on unit 2, which learning never saw, from another NIC too, every second.
        see(
            &mut engine,
            &pdu(1, Kind::Request, 20 * NANOS, 0x91),
            &mut out,
        );
        for s in 21..40 {
            see(
                &mut engine,
                &pdu(2, Kind::Response, s * NANOS, 0x92),
                &mut out,
            );
        }
        let firsts: Vec<&Alert> = out.iter().filter(|a| !a.repeat).collect();
        let of = |t: &str, ip: IpAddr| {
            firsts
                .iter()
                .filter(|a| a.r#type == t && a.src_ip == ip)
                .count()
        };
        let texts: Vec<&str> = firsts.iter().map(|a| a.message.as_str()).collect();
        assert_eq!(of("new_asset", client), 1, "{texts:?}");
        assert_eq!(of("new_asset", server), 1, "{texts:?}");
        assert_eq!(of("device_silent", client), 1, "{texts:?}");
        assert_eq!(of("device_silent", server), 0, "{texts:?}");
        // Each new address is compared with that device's own learned one, and the client's
        // silence counts from its own last frame.
        let first = |t: &str, ip: IpAddr| {
            firsts
                .iter()
                .find(|a| a.r#type == t && a.src_ip == ip)
                .map(|a| (a.message.clone(), a.frames.clone()))
                .unwrap_or_default()
        };
        let (client_mac, _) = first("new_asset", client);
        assert!(
            client_mac.contains("learned 02:00:00:00:00:01"),
            "{client_mac}"
        );
        let (server_mac, _) = first("new_asset", server);
        assert!(
            server_mac.contains("learned 02:00:00:00:00:02"),
            "{server_mac}"
        );
        let (_, silent_frames) = first("device_silent", client);
        assert_eq!(silent_frames.as_slice(), [(20 * NANOS / 1000) as u64]);
        let missing: Vec<&&Alert> = firsts
            .iter()
            .filter(|a| a.r#type == "poll_cycle_broken")
            .collect();
        assert_eq!(missing.len(), 1, "{texts:?}");
        assert!(
            missing[0].message.contains("missing"),
            "{}",
            missing[0].message
        );
        assert_eq!(&*missing[0].source, "cap");
        assert_eq!(
            missing[0].ports,
            Some(Ports {
                src: 50_000,
                dst: 502,
                udp: false
            })
        );
    }

    /// The bound on runtime state is for channels learning never saw: past it, a learned
    /// channel (seen before or not) keeps its state, and a new one is counted as left out each
    /// time it comes, but is still checked against the baseline: a flood of new clients does
    /// not blind the integrity checks (a write by a client that never wrote is raised).
    #[test]
    fn the_runtime_bound_leaves_out_only_new_channels_and_not_their_checks() {
        let mut learner = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        for client in 0..3 {
            learner.observe(&request(client, T0), &mut out);
        }
        let baseline = learner.finish(&mut out).expect("a baseline");
        assert_eq!(baseline.channels.len(), 3);
        let mut engine = Engine::detecting(baseline, EngineConfig::default());
        let mut ts = T0 + 1000;
        let mut types = Vec::new();
        let mut see = |engine: &mut Engine, o: Observation| {
            engine.observe(&o, &mut out);
            types = out.iter().map(|a| a.r#type).collect::<Vec<_>>();
            out.clear();
            engine.bounds_hit()[0].1
        };
        let mut next = |client: u32| {
            ts += 1000;
            request(client, ts)
        };
        // Learned client 0, then new clients up to the bound.
        assert_eq!(see(&mut engine, next(0)), 0);
        let max = crate::detect::MAX_RUNTIME_CHANNELS as u32;
        for client in 1000..1000 + max {
            assert_eq!(see(&mut engine, next(client)), 0, "client {client}");
        }
        // Full: learned clients keep or get their state; a new client is left out, each
        // time it comes.
        assert_eq!(see(&mut engine, next(0)), 0);
        assert_eq!(see(&mut engine, next(1)), 0);
        assert_eq!(see(&mut engine, next(1)), 0);
        assert_eq!(see(&mut engine, next(900)), 1);
        assert_eq!(see(&mut engine, next(900)), 2);
        // Left out, and still checked: learned client 2 writes (fc 6) on a new unit, over a
        // channel with no state.
        let mut write = next(2);
        write.channel.unit = 7;
        write.function = 6;
        write.write = true;
        assert_eq!(see(&mut engine, write), 3);
        assert!(types.contains(&"unauthorized_write"), "{types:?}");
    }
}

#[cfg(test)]
mod clock_step_tests {
    use super::*;
    use crate::obs::{Access, Channel, Kind, Observation, Proto};
    use std::net::IpAddr;
    use std::sync::Arc;

    const T0: i64 = 1_700_000_000 * NANOS;

    /// A Modbus poll of holding registers 0..9 at `at` after `T0`, and its answer 10 ms later.
    fn poll(at: i64) -> [Observation; 2] {
        let channel = Channel {
            proto: Proto::Modbus,
            client: IpAddr::from([10, 0, 0, 1]),
            server: IpAddr::from([192, 168, 1, 10]),
            unit: 1,
        };
        let mut req = Observation::new(T0 + at, Arc::from("t"), 1, channel, Kind::Request, 3);
        req.corr = Some(at as u32);
        req.accesses.push(Access {
            space: 4,
            start: 0,
            count: 10,
            write: false,
            values: Default::default(),
        });
        let mut resp = req.clone();
        resp.kind = Kind::Response;
        resp.ts += NANOS / 100;
        resp.accesses.clear();
        [req, resp]
    }

    /// The clock steps back 25 s (a capture that starts before the last one ended): the poll
    /// goes on at its period in the new time and is not broken, and when it stops it is
    /// reported missing in the new time, not once the clock has caught up with the old. The
    /// learning window is shifted back by the step too.
    #[test]
    fn a_clock_step_back_starts_polls_again_in_the_new_time() {
        let config = EngineConfig {
            learn_for: Some(20 * NANOS),
            ..EngineConfig::default()
        };
        let mut engine = Engine::learning(config);
        let mut out = Vec::new();
        let run = |engine: &mut Engine, from: i64, to: i64, out: &mut Vec<Alert>| {
            for s in from..to {
                for o in poll(s * NANOS) {
                    engine.observe(&o, out);
                }
                engine.tick(T0 + s * NANOS + NANOS / 2, out);
            }
        };
        run(&mut engine, 0, 15, &mut out);
        // Back to 5 s from 14.5 s, when 5.5 s of learning were left: learning lasts to 10.5 s.
        engine.tick(T0 + 5 * NANOS, &mut out);
        assert_eq!(engine.clock_steps, 1);
        run(&mut engine, 5, 10, &mut out);
        assert!(engine.is_learning(), "learning is shifted by the step");
        run(&mut engine, 10, 11, &mut out);
        assert!(
            !engine.is_learning(),
            "learning lasted its 20 s of capture time"
        );
        run(&mut engine, 11, 40, &mut out);
        assert!(!engine.is_learning());
        assert!(
            out.is_empty(),
            "{:?}",
            out.iter().map(|a| &a.message).collect::<Vec<_>>()
        );
        // Back 25 s; the poll goes on for 10 s in the new time, then stops.
        engine.tick(T0 + 15 * NANOS, &mut out);
        assert_eq!(engine.clock_steps, 2);
        run(&mut engine, 15, 25, &mut out);
        assert!(
            out.is_empty(),
            "{:?}",
            out.iter().map(|a| &a.message).collect::<Vec<_>>()
        );
        for s in 25..35 {
            engine.tick(T0 + s * NANOS, &mut out);
        }
        let missing: Vec<&Alert> = out
            .iter()
            .filter(|a| a.r#type == "poll_cycle_broken")
            .collect();
        assert_eq!(
            missing.len(),
            1,
            "{:?}",
            out.iter().map(|a| &a.message).collect::<Vec<_>>()
        );
        assert!(
            missing[0].message.contains("missing"),
            "{}",
            missing[0].message
        );
        assert!(missing[0].ts < T0 + 35 * NANOS, "reported in the new time");
    }
}

/// What a read-only review of the engine found (session 13), each held by a test that fails
/// without its fix.
#[cfg(test)]
mod review_tests {
    use super::*;
    use crate::obs::{Channel, Kind, Observation, Proto};
    use std::net::IpAddr;
    use std::sync::Arc;

    const T0: i64 = 1_700_000_000 * NANOS;

    fn ms(t: f64) -> i64 {
        T0 + (t * 1e9) as i64
    }

    /// A Modbus request of `fc` from 10.0.0.`client` to 192.168.1.10 on `unit` at `t` s,
    /// reading (or writing `value` to) holding register `address`; and its answer 10 ms later.
    fn exchange(
        client: u8,
        unit: u32,
        fc: u32,
        t: f64,
        address: u32,
        value: Option<f64>,
    ) -> [Observation; 2] {
        let channel = Channel {
            proto: Proto::Modbus,
            client: IpAddr::from([10, 0, 0, client]),
            server: IpAddr::from([192, 168, 1, 10]),
            unit,
        };
        let frame = (t * 1000.0) as u64 + 1;
        let mut req = Observation::new(ms(t), Arc::from("t"), frame, channel, Kind::Request, fc);
        req.corr = Some(frame as u32);
        req.write = value.is_some() && fc == 6;
        let mut resp = req.clone();
        resp.kind = Kind::Response;
        resp.ts += NANOS / 100;
        resp.frame += 1;
        resp.write = false;
        if fc == 6 {
            req.push_access(4, address, 1, true, value);
        } else if fc == 3 {
            req.push_access(4, address, 1, false, None);
            resp.push_access(4, address, 1, false, value);
        }
        [req, resp]
    }

    fn run(engine: &mut Engine, obs: impl IntoIterator<Item = Observation>, out: &mut Vec<Alert>) {
        for o in obs {
            see(engine, &o, out);
        }
    }

    fn learning(secs: i64) -> Engine {
        Engine::learning(EngineConfig {
            learn_for: Some(secs * NANOS),
            ..EngineConfig::default()
        })
    }

    fn types(out: &[Alert]) -> Vec<&'static str> {
        out.iter().map(|a| a.r#type).collect()
    }

    /// A learned poll that is already dead when detection starts is missing three periods
    /// on, as one that stops later is.
    #[test]
    fn a_poll_dead_when_detection_starts_is_missing() {
        let mut engine = learning(20);
        let mut out = Vec::new();
        for s in 0..20 {
            run(
                &mut engine,
                exchange(1, 1, 3, f64::from(s), 0, Some(100.0)),
                &mut out,
            );
            run(
                &mut engine,
                exchange(1, 1, 4, f64::from(s) + 0.5, 0, None),
                &mut out,
            );
        }
        // Detection: the fc 3 poll goes on, the fc 4 poll does not.
        for s in 20..40 {
            run(
                &mut engine,
                exchange(1, 1, 3, f64::from(s), 0, Some(100.0)),
                &mut out,
            );
            engine.tick(ms(f64::from(s) + 0.5), &mut out);
        }
        let missing: Vec<_> = out
            .iter()
            .filter(|a| a.r#type == "poll_cycle_broken" && a.message.contains("missing"))
            .map(|a| a.message.clone())
            .collect();
        assert_eq!(missing.len(), 1, "{:?}", types(&out));
        assert!(missing[0].contains("function 4"), "{missing:?}");
        assert!(
            !out.iter()
                .any(|a| a.r#type == "poll_cycle_broken" && !a.message.contains("missing")),
            "the first poll after the start is no broken interval: {:?}",
            out.iter().map(|a| &a.message).collect::<Vec<_>>()
        );
    }

    /// Four new functions within two seconds are a scan wherever they fall, also across the
    /// minute that a tumbling window, restarted by the client's routine polls, ended at.
    #[test]
    fn a_scan_across_a_minute_edge_is_a_scan() {
        for offset in [-0.7, -0.2, 0.3, 0.8] {
            let mut engine = learning(60);
            let mut out = Vec::new();
            let mut t = 0.0;
            while t < 200.0 {
                run(&mut engine, exchange(1, 1, 3, t, 0, Some(100.0)), &mut out);
                t += 1.0;
            }
            let mut engine2 = learning(60);
            let mut out2 = Vec::new();
            let mut t = 0.0;
            let scan = [1u32, 2, 4, 17];
            let mut next = 0;
            while t < 200.0 {
                run(
                    &mut engine2,
                    exchange(1, 1, 3, t, 0, Some(100.0)),
                    &mut out2,
                );
                // The scan's requests straddle 120 s (the detection window's edge at 60 + 60).
                while next < scan.len() && 119.0 + offset + 0.5 * next as f64 <= t + 1.0 {
                    let at = 119.0 + offset + 0.5 * next as f64;
                    run(
                        &mut engine2,
                        exchange(1, 1, scan[next], at, 0, None),
                        &mut out2,
                    );
                    next += 1;
                }
                t += 1.0;
            }
            assert!(!types(&out).contains(&"scan"), "routine polls are no scan");
            assert!(
                types(&out2).contains(&"scan"),
                "offset {offset}: {:?}",
                types(&out2)
            );
        }
    }

    /// A write out of a point's envelope is its own cause, high, not folded into an earlier
    /// medium alert about a read of the same point.
    #[test]
    fn a_bad_write_is_not_folded_into_an_earlier_bad_read() {
        let mut engine = learning(60);
        let mut out = Vec::new();
        for s in 0..60 {
            let v = 100.0 + f64::from(s % 3);
            run(
                &mut engine,
                exchange(1, 1, 3, f64::from(s), 0, Some(v)),
                &mut out,
            );
            if s % 10 == 5 {
                run(
                    &mut engine,
                    exchange(1, 1, 6, f64::from(s) + 0.5, 0, Some(101.0)),
                    &mut out,
                );
            }
        }
        run(
            &mut engine,
            exchange(1, 1, 3, 60.0, 0, Some(500.0)),
            &mut out,
        );
        run(
            &mut engine,
            exchange(1, 1, 6, 61.5, 0, Some(9000.0)),
            &mut out,
        );
        // Reading back what the write put there is the write's effect: no cause of its own.
        run(
            &mut engine,
            exchange(1, 1, 3, 62.0, 0, Some(9000.0)),
            &mut out,
        );
        // Back to normal, then a read excursion of its own: another occurrence of the read
        // cause (the read-back above was none).
        run(
            &mut engine,
            exchange(1, 1, 3, 63.0, 0, Some(101.0)),
            &mut out,
        );
        run(
            &mut engine,
            exchange(1, 1, 3, 64.0, 0, Some(9999.0)),
            &mut out,
        );
        let mut end = Vec::new();
        engine.finish(&mut end);
        let read_count = end
            .iter()
            .find(|a| a.r#type == "value_out_of_range" && a.severity == Severity::Medium)
            .map(|a| a.count);
        assert_eq!(read_count, Some(2), "the 500 and the 9999 reads");
        let values: Vec<_> = out
            .iter()
            .filter(|a| a.r#type == "value_out_of_range")
            .map(|a| a.severity)
            .collect();
        assert_eq!(
            values,
            [Severity::Medium, Severity::High],
            "{:?}",
            types(&out)
        );
    }

    /// A pair's alert is a hint only when every channel between the two is under-learned: a
    /// unit 0 channel read three times does not lower a write on the well-learned unit 1.
    #[test]
    fn a_weak_unit_0_channel_does_not_soften_the_pair() {
        let mut engine = learning(60);
        let mut out = Vec::new();
        for s in 0..60 {
            run(
                &mut engine,
                exchange(1, 1, 3, f64::from(s), 0, Some(100.0)),
                &mut out,
            );
            if s < 3 {
                run(
                    &mut engine,
                    exchange(1, 0, 3, f64::from(s) + 0.5, 0, Some(100.0)),
                    &mut out,
                );
            }
        }
        run(
            &mut engine,
            exchange(1, 1, 6, 60.5, 0, Some(100.0)),
            &mut out,
        );
        let write: Vec<_> = out
            .iter()
            .filter(|a| a.r#type == "unauthorized_write")
            .map(|a| (a.severity, a.low_confidence))
            .collect();
        assert_eq!(write, [(Severity::Critical, false)], "{:?}", types(&out));
    }

    /// A device's silence is learned from its OT PDUs, and counts the quiet learning saw after
    /// its last one: a host seen only in conversations of other protocols has no silence clock
    /// (they are observed once, however long they go on), and one that read in a single burst
    /// early in learning is allowed the rest of learning's quiet.
    #[test]
    fn silences_are_learned_from_ot_pdus_up_to_the_end_of_learning() {
        let mut engine = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        for s in 0..60 {
            run(
                &mut engine,
                exchange(1, 1, 3, f64::from(s), 0, Some(100.0)),
                &mut out,
            );
        }
        // 10.0.0.7 reads three times at 5 s.
        for k in 0..3 {
            run(
                &mut engine,
                exchange(7, 1, 3, 5.0 + 0.2 * f64::from(k), 0, Some(100.0)),
                &mut out,
            );
        }
        // 10.0.0.9 opens four conversations of another protocol.
        for k in 0..4u16 {
            let ch = Channel {
                proto: Proto::Tcp,
                client: IpAddr::from([10, 0, 0, 9]),
                server: IpAddr::from([192, 168, 1, 20]),
                unit: u32::from(80 + k),
            };
            let o = Observation::new(
                ms(1.0 + f64::from(k)),
                Arc::from("t"),
                9,
                ch,
                Kind::Conversation,
                0,
            );
            engine.observe(&o, &mut out);
        }
        let baseline = engine.finish(&mut out).expect("a baseline");
        let silence = |ip: [u8; 4]| {
            baseline
                .assets
                .iter()
                .find(|a| a.ip == IpAddr::from(ip))
                .expect("an asset")
                .max_silence
        };
        assert_eq!(silence([10, 0, 0, 9]), None);
        let ews = silence([10, 0, 0, 7]).expect("a silence");
        assert!(ews > 50.0, "the quiet after its burst: {ews}");
    }

    /// A write the dissector rejected (malformed) in learning does not make its client a
    /// writer: its real write later is `unauthorized_write`.
    #[test]
    fn a_malformed_write_in_learning_makes_no_writer() {
        let mut engine = learning(60);
        let mut out = Vec::new();
        for s in 0..60 {
            run(
                &mut engine,
                exchange(1, 1, 3, f64::from(s), 0, Some(100.0)),
                &mut out,
            );
        }
        let [mut bad, _] = exchange(1, 1, 6, 30.5, 0, Some(100.0));
        bad.malformed = Some("byte_count_mismatch");
        engine.observe(&bad, &mut out);
        run(
            &mut engine,
            exchange(1, 1, 6, 61.5, 0, Some(100.0)),
            &mut out,
        );
        assert!(
            types(&out).contains(&"unauthorized_write"),
            "{:?}",
            types(&out)
        );
    }

    /// The latency learned is a sample of the whole learning run, not of its last 8192
    /// answers: answers of 40 ms for most of learning, then 5 ms, learn a median of 40 ms.
    #[test]
    fn the_learned_latency_samples_the_whole_run() {
        let mut engine = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        for n in 0..20_000u32 {
            let t = f64::from(n) * 0.05;
            let [req, mut resp] = exchange(1, 1, 3, t, 0, None);
            resp.ts = req.ts + if n < 12_000 { 40 } else { 5 } * NANOS / 1000;
            run(&mut engine, [req, resp], &mut out);
        }
        let baseline = engine.finish(&mut out).expect("a baseline");
        let l = baseline.channels[0].latency.clone().expect("a latency");
        assert_eq!(l.samples, 20_000);
        assert!(
            (l.p50 - 0.040).abs() < 1e-9 && (l.max - 0.040).abs() < 1e-9,
            "{l:?}"
        );
    }

    /// Learned devices talking over their IPv6 link-local addresses (from their learned
    /// Ethernet addresses) are not new devices, whichever end receives; a known device's DHCP
    /// request from 0.0.0.0 is no device at all.
    #[test]
    fn link_local_receivers_and_the_unspecified_address_are_no_new_devices() {
        let mac = |n: u8| [2, 0, 0, 0, 0, n];
        let mut engine = learning(60);
        let mut out = Vec::new();
        for s in 0..60 {
            let [mut req, mut resp] = exchange(1, 1, 3, f64::from(s), 0, Some(100.0));
            req.src_mac = Some(mac(1));
            resp.src_mac = Some(mac(10));
            run(&mut engine, [req, resp], &mut out);
        }
        let ll = |n: u16| IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, n]);
        let [mut req, mut resp] = exchange(1, 1, 3, 61.0, 0, Some(100.0));
        req.channel.client = ll(1);
        req.channel.server = ll(10);
        resp.channel = req.channel;
        req.src_mac = Some(mac(1));
        resp.src_mac = Some(mac(10));
        let dhcp = Channel {
            proto: Proto::Udp,
            client: IpAddr::from([0, 0, 0, 0]),
            server: IpAddr::from([255, 255, 255, 255]),
            unit: 67,
        };
        let mut discover =
            Observation::new(ms(62.0), Arc::from("t"), 9, dhcp, Kind::Conversation, 0);
        discover.src_mac = Some(mac(10));
        run(&mut engine, [req, resp, discover], &mut out);
        assert!(
            !types(&out).contains(&"new_asset"),
            "{:?}",
            out.iter().map(|a| &a.message).collect::<Vec<_>>()
        );
    }

    /// A write the server refused with an exception in learning (a prober's) wrote nothing: its
    /// client is no writer, and its real write later is `unauthorized_write`. A client with one
    /// accepted write is one.
    #[test]
    fn a_refused_write_in_learning_makes_no_writer() {
        for accepted in [false, true] {
            let mut engine = learning(60);
            let mut out = Vec::new();
            for s in 0..60 {
                run(
                    &mut engine,
                    exchange(1, 1, 3, f64::from(s), 0, Some(100.0)),
                    &mut out,
                );
            }
            let [req, mut resp] = exchange(1, 1, 6, 30.5, 0, Some(100.0));
            resp.exception = !accepted;
            run(&mut engine, [req, resp], &mut out);
            run(
                &mut engine,
                exchange(1, 1, 6, 61.5, 0, Some(100.0)),
                &mut out,
            );
            assert_eq!(
                types(&out).contains(&"unauthorized_write"),
                !accepted,
                "accepted {accepted}: {:?}",
                types(&out)
            );
        }
    }
}

#[cfg(test)]
mod member_tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::*;
    use crate::obs::{Channel, Proto};

    /// A CIP Multiple Service Packet (0x0A) at `t` s carrying the services `members`, and its
    /// answer.
    fn packet(t: i64, members: &[u32]) -> [Observation; 2] {
        let channel = Channel {
            proto: Proto::Enip,
            client: IpAddr::from([10, 0, 0, 1]),
            server: IpAddr::from([10, 0, 0, 2]),
            unit: 0,
        };
        let ts = 1_700_000_000 * NANOS + t * NANOS;
        let mut req = Observation::new(
            ts,
            Arc::from("t"),
            t as u64 * 2 + 1,
            channel,
            Kind::Request,
            0x0a,
        );
        req.corr = Some(t as u32);
        req.members = members.to_vec();
        let mut resp = req.clone();
        (resp.kind, resp.ts, resp.frame, resp.members) =
            (Kind::Response, ts + NANOS / 100, req.frame + 1, Vec::new());
        [req, resp]
    }

    /// The services a request carries are the channel's functions: learned, and one never
    /// carried in learning is a `new_function_code` of its own (a Logix upload's services on
    /// program objects inside Multiple Service Packets), once.
    #[test]
    fn a_new_service_inside_a_multiple_service_packet_is_a_new_function() {
        let mut engine = Engine::learning(EngineConfig {
            learn_for: Some(30 * NANOS),
            ..EngineConfig::default()
        });
        let mut out = Vec::new();
        for t in 0..40 {
            for o in packet(t, &[0x03, 0x4c]) {
                engine.observe(&o, &mut out);
            }
        }
        assert!(out.is_empty(), "{out:#?}");
        let upload = 0x100_6c4b;
        for t in 40..43 {
            for o in packet(t, &[0x03, upload]) {
                engine.observe(&o, &mut out);
            }
        }
        let got: Vec<_> = out
            .iter()
            .filter(|a| a.state == crate::alert::AlertState::First)
            .map(|a| (a.r#type, a.observed["function"].clone()))
            .collect();
        assert_eq!(
            got,
            [("new_function_code", serde_json::json!(upload))],
            "{out:#?}"
        );
        let message = &out[0].message;
        assert!(
            message.ends_with("inside 10 never used on this channel in learning"),
            "{message}"
        );
    }
}

/// What a channel's state does depends only on its own PDUs and the clock's ticks: engines that
/// each see some channels' observations and all the ticks raise, between them, what one engine
/// that sees everything raises (the ground for running channels' detection apart).
#[cfg(test)]
mod split_tests {
    use super::*;
    use crate::fuzzing::{at, lines, one_engine};
    use crate::obs::{Channel, Kind, Observation, Proto};
    use std::net::IpAddr;
    use std::sync::Arc;

    /// A read of holding register `address` by 10.0.0.`site` from 192.168.`site`.10 at `t` s,
    /// and its answer 10 ms later (none when `answered` is false).
    fn read(site: u8, t: f64, address: u32, answered: bool) -> Vec<Observation> {
        exchange(site, site, t, address, answered)
    }

    /// [`read`] by 10.0.0.`client` from 192.168.`site`.10.
    fn exchange(client: u8, site: u8, t: f64, address: u32, answered: bool) -> Vec<Observation> {
        let channel = Channel {
            proto: Proto::Modbus,
            client: IpAddr::from([10, 0, 0, client]),
            server: IpAddr::from([192, 168, site, 10]),
            unit: 1,
        };
        let frame = (t * 1000.0) as u64 * 32 + u64::from(client);
        let mut req = Observation::new(at(t), Arc::from("t"), frame, channel, Kind::Request, 3);
        req.corr = Some(frame as u32);
        req.push_access(4, address, 1, false, None);
        let mut resp = req.clone();
        resp.kind = Kind::Response;
        resp.ts += NANOS / 100;
        resp.frame += 16;
        resp.accesses.clear();
        resp.push_access(4, address, 1, false, Some(7.0));
        if answered {
            vec![req, resp]
        } else {
            vec![req]
        }
    }

    /// Site 1 in detection: a burst of reads of new addresses at 150 s (an unusual window),
    /// then its server stops answering at 170 s.
    fn site1(s: u32) -> Vec<Observation> {
        let mut obs = read(1, f64::from(s) + 0.11, 0, s < 170);
        if s == 150 {
            for k in 0..40 {
                let t = f64::from(s) + 0.11 + 0.001 * f64::from(k + 1);
                obs.extend(read(1, t, 100 + k, true));
            }
        }
        obs
    }

    /// Site 1's reads (`site1`: at 0.11 s past each second), and site 2's at 0.07 s and 0.57 s
    /// past each (`site2`). None falls on a tick (0.93 s past each second).
    fn traffic(
        from: u32,
        to: u32,
        site1: impl Fn(u32) -> Vec<Observation>,
        site2: bool,
    ) -> Vec<Observation> {
        let mut obs = Vec::new();
        for s in from..to {
            obs.extend(site1(s));
            if site2 {
                obs.extend(read(2, f64::from(s) + 0.07, 0, true));
                obs.extend(read(2, f64::from(s) + 0.57, 1, true));
            }
        }
        obs
    }

    /// Runs `obs` (in time order) with a tick every second, 0.93 s past it, after the
    /// observations before it, up to `end` s; returns the alerts as (type, ts, src, dst, message), sorted.
    fn detect(
        baseline: &Baseline,
        obs: &[Observation],
        end: f64,
    ) -> Vec<(String, i64, IpAddr, IpAddr, String)> {
        // Sorted by all but the count, last: the order of `lines`.
        lines(&one_engine(baseline, obs, end))
            .into_iter()
            .map(|(t, ts, s, d, m, _)| (t, ts, s, d, m))
            .collect()
    }

    #[test]
    fn channels_apart_raise_what_they_raise_together() {
        let mut learner = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        for o in traffic(0, 120, |s| read(1, f64::from(s) + 0.11, 0, true), true) {
            see(&mut learner, &o, &mut out);
        }
        let baseline = learner.finish(&mut out).expect("a baseline");
        assert!(baseline.behaviour.is_some(), "a behaviour model is learned");
        // Site 1 as `site1` has it; site 2's client stops polling at 185 s.
        let one = traffic(120, 200, site1, false);
        let two = traffic(120, 185, |_| Vec::new(), true);
        let mut both = traffic(120, 200, site1, false);
        both.extend(two.iter().cloned());
        both.sort_by_key(|o| (o.ts, o.frame));
        let together = detect(&baseline, &both, 200.0);
        // Each engine apart sees only its site: the other site's devices and polls are silent
        // to it, and what it says of them is left out.
        let of_site = |site: u8| {
            move |a: &(String, i64, IpAddr, IpAddr, String)| {
                [a.2, a.3].iter().any(|ip| match ip {
                    IpAddr::V4(v4) => v4.octets()[3] == site || v4.octets()[2] == site,
                    IpAddr::V6(_) => false,
                })
            }
        };
        let mut apart: Vec<_> = detect(&baseline, &one, 200.0)
            .into_iter()
            .filter(of_site(1))
            .collect();
        apart.extend(
            detect(&baseline, &two, 200.0)
                .into_iter()
                .filter(of_site(2)),
        );
        apart.sort();
        let types: std::collections::BTreeSet<&str> =
            together.iter().map(|a| a.0.as_str()).collect();
        for t in [
            "behaviour_anomaly",
            "response_timeout",
            "poll_cycle_broken",
            "device_silent",
        ] {
            assert!(types.contains(t), "{t} is raised: {together:#?}");
        }
        assert_eq!(together, apart);
    }

    /// Runs `obs` as [`detect`] does, with `workers` workers each checking the channels whose
    /// server `owner` gives it, and a stage where their output meets.
    fn detect_split(
        baseline: &Baseline,
        obs: &[Observation],
        end: f64,
        workers: usize,
        owner: impl Fn(&Observation) -> usize,
        one: bool,
    ) -> Vec<(String, i64, IpAddr, IpAddr, String, u64)> {
        if one {
            return lines(&one_engine(baseline, obs, end));
        }
        lines(&crate::fuzzing::workers_and_stage(
            baseline, obs, end, workers, owner,
        ))
    }

    /// Workers that each check the channels of their servers, and a stage where their output
    /// meets, raise what one engine raises (as a multiset: each line, its time and its count),
    /// what spans channels included: a client that scans addresses across two servers, each
    /// another worker's, and falls silent after its last PDU on either.
    #[test]
    fn workers_and_a_stage_raise_what_one_engine_raises() {
        // The roaming client 10.0.0.9 reads both servers, at 0.31 s and 0.81 s past each second.
        let roaming = |from: u32, to: u32, extra: &dyn Fn(u32) -> Vec<Observation>| {
            let mut obs = Vec::new();
            for s in from..to {
                obs.extend(exchange(9, 1, f64::from(s) + 0.31, 0, true));
                obs.extend(exchange(9, 2, f64::from(s) + 0.81, 0, true));
                obs.extend(extra(s));
            }
            obs
        };
        let mut learner = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        let mut learning = traffic(0, 120, |s| read(1, f64::from(s) + 0.11, 0, true), true);
        learning.extend(roaming(0, 120, &|_| Vec::new()));
        learning.sort_by_key(|o| (o.ts, o.frame));
        for o in &learning {
            see(&mut learner, o, &mut out);
        }
        let baseline = learner.finish(&mut out).expect("a baseline");
        // The roaming client walks 9 new addresses on each server at 160 s, and stops at 175 s.
        let walk = |s: u32| {
            let mut obs = Vec::new();
            if s == 160 {
                for k in 0..9u32 {
                    let t = f64::from(s) + 0.4 + 0.01 * f64::from(k);
                    obs.extend(exchange(9, 1 + (k % 2) as u8, t, 200 + 3 * k, true));
                    obs.extend(exchange(9, 2 - (k % 2) as u8, t + 0.005, 300 + 3 * k, true));
                }
            }
            obs
        };
        let mut all = traffic(120, 200, site1, false);
        all.extend(traffic(120, 185, |_| Vec::new(), true));
        all.extend(roaming(120, 175, &walk));
        all.sort_by_key(|o| (o.ts, o.frame));
        let by_server = |o: &Observation| match o.channel.server {
            IpAddr::V4(v4) => usize::from(v4.octets()[2] == 2),
            IpAddr::V6(_) => 0,
        };
        let one = detect_split(&baseline, &all, 200.0, 1, by_server, true);
        let split = detect_split(&baseline, &all, 200.0, 2, by_server, false);
        let types: std::collections::BTreeSet<&str> = one.iter().map(|a| a.0.as_str()).collect();
        for t in [
            "behaviour_anomaly",
            "response_timeout",
            "poll_cycle_broken",
            "device_silent",
            "scan",
            "address_out_of_range",
        ] {
            assert!(types.contains(t), "{t} is raised: {one:#?}");
        }
        assert!(
            one.iter()
                .any(|a| a.0 == "device_silent" && a.2 == IpAddr::from([10, 0, 0, 9])),
            "the roaming client falls silent: {one:#?}"
        );
        assert_eq!(one, split);
        // One worker with a stage is one engine too.
        assert_eq!(one, detect_split(&baseline, &all, 200.0, 1, |_| 0, false));
    }

    /// Random traffic (seeded): clients polling servers of three sites, then in detection
    /// reads of addresses learning never saw, new clients, polls that stop and servers that
    /// stop answering, at random, and a client quiet when detection starts that comes back
    /// with one of its two polls. One engine, two workers and three (each owning the servers of
    /// some sites) raise the same alerts, each line with its time and count.
    #[test]
    fn random_traffic_raises_the_same_alerts_on_one_engine_or_workers() {
        for seed in 1..=10u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            // Client c polls site (c % 3) + 1, and client 2 site 3 too.
            let polls: Vec<(u8, u8, f64)> = (1..=4u8)
                .map(|c| (c, c % 3 + 1, 0.05 * f64::from(c)))
                .chain(std::iter::once((2, 3, 0.61)))
                .collect();
            let mut learning = Vec::new();
            for s in 0..120 {
                for &(c, site, off) in &polls {
                    learning.extend(exchange(c, site, f64::from(s) + off, 0, true));
                }
                // Client 5 polls two blocks of site 2.
                learning.extend(exchange(5, 2, f64::from(s) + 0.83, 0, true));
                learning.extend(exchange(5, 2, f64::from(s) + 0.88, 1, true));
            }
            learning.sort_by_key(|o| (o.ts, o.frame));
            let mut learner = Engine::learning(EngineConfig::default());
            let mut out = Vec::new();
            for o in &learning {
                see(&mut learner, o, &mut out);
            }
            let baseline = learner.finish(&mut out).expect("a baseline");
            // Detection: each poll stops at a random second (or never), its server stops
            // answering at another; now and then a read of a new address, or a new client.
            let stops: Vec<(u32, u32)> = polls
                .iter()
                .map(|_| (150 + next(80) as u32, 140 + next(90) as u32))
                .collect();
            // Client 5 is quiet when detection starts, and comes back with one of its polls.
            let back = 125 + next(30) as u32;
            let mut all = Vec::new();
            for s in 120..200u32 {
                if s >= back {
                    all.extend(exchange(5, 2, f64::from(s) + 0.83, 0, true));
                }
                for (&(c, site, off), &(stop, mute)) in polls.iter().zip(&stops) {
                    if s < stop {
                        let t = f64::from(s) + off;
                        all.extend(exchange(c, site, t, 0, s < mute));
                    }
                }
                if next(4) == 0 {
                    let (c, site) = (1 + next(4) as u8, 1 + next(3) as u8);
                    let t = f64::from(s) + 0.3 + 0.01 * next(50) as f64;
                    all.extend(exchange(c, site, t, 100 + next(40) as u32, true));
                }
                if next(10) == 0 {
                    let (c, site) = (20 + next(5) as u8, 1 + next(3) as u8);
                    let t = f64::from(s) + 0.7 + 0.01 * next(20) as f64;
                    all.extend(exchange(c, site, t, next(3) as u32, next(2) == 0));
                }
            }
            all.sort_by_key(|o| (o.ts, o.frame));
            let site_of = |o: &Observation| match o.channel.server {
                IpAddr::V4(v4) => usize::from(v4.octets()[2]),
                IpAddr::V6(_) => 0,
            };
            let one = detect_split(&baseline, &all, 200.0, 1, |_| 0, true);
            assert!(!one.is_empty(), "seed {seed}: alerts are raised");
            for workers in [2, 3] {
                let split = detect_split(
                    &baseline,
                    &all,
                    200.0,
                    workers,
                    |o| site_of(o) % workers,
                    false,
                );
                assert_eq!(one, split, "seed {seed}, {workers} workers");
            }
        }
    }
}
