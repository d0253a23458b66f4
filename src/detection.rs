//! Wiring between the dissectors and the detection engine: events become observations, the
//! engine's alerts become JSON Lines (docs/alerts.md), and each alert can get a small pcap of
//! the packets that caused it (`--evidence DIR`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use otwatch_models::{Alert, Engine};
use serde_json::json;

use crate::event::{Event, EventSink, Timestamp};
use crate::metrics::{
    families, ChannelMetrics, DetectionState, Inputs, LiveCounters, MetricsServer,
    OpenMetricsRecorder,
};
use crate::observe::observe;
use crate::output::evidence::{EvidenceRing, EVIDENCE_MAX_FILES};
use crate::output::{OutputFile, OutputHealth, OutputKind};
use crate::stats::Stats;

/// The detection clock is advanced by packets at least this often (capture time).
const TICK_EVERY_NANOS: i64 = 250_000_000;

/// When the detection clock ticks: every packet at least [`TICK_EVERY_NANOS`] of capture time
/// after the last tick. The sharded pipeline decides the same ticks on its reader thread.
pub struct TickClock;

impl TickClock {
    pub fn due(last_tick: &mut i64, ts: i64) -> bool {
        if ts.saturating_sub(*last_tick) >= TICK_EVERY_NANOS {
            *last_tick = ts;
            true
        } else {
            false
        }
    }
}

/// The metrics are published at most this often.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The metrics side of a run: per-channel series, the HTTP server, the OpenMetrics recorder.
pub struct MetricsHub {
    pub channels: ChannelMetrics,
    pub server: Option<MetricsServer>,
    pub recorder: Option<OpenMetricsRecorder>,
    pub recorder_path: Option<PathBuf>,
    pub live: Option<LiveCounters>,
    pub workers: Vec<u64>,
    capture_ts: i64,
    active_flows: usize,
    packets: u64,
    last_publish: std::time::Instant,
}

impl MetricsHub {
    pub fn new(max_channels: usize) -> Self {
        MetricsHub {
            channels: ChannelMetrics::new(max_channels),
            server: None,
            recorder: None,
            recorder_path: None,
            live: None,
            workers: Vec::new(),
            capture_ts: 0,
            active_flows: 0,
            packets: 0,
            last_publish: std::time::Instant::now(),
        }
    }

    fn families(
        &self,
        stats: &Stats,
        state: &DetectionState,
        outputs: &OutputHealth,
    ) -> Vec<crate::metrics::Family> {
        families(&Inputs {
            stats,
            active_flows: self.active_flows,
            capture_ts: self.capture_ts,
            live: self.live,
            workers: &self.workers,
            channels: Some(&self.channels),
            detection: state,
            outputs: Some(outputs),
        })
    }
}

/// The JSON line of an alert (docs/alerts.md).
pub fn alert_json(a: &Alert) -> serde_json::Value {
    let mut v = json!({
        "ts": Timestamp(a.ts).to_string(),
        "id": a.id,
        "kind": a.kind,
        "type": a.r#type,
        "severity": a.severity,
        "proto": a.proto,
        "src_ip": a.src_ip,
        "dst_ip": a.dst_ip,
        "source": &*a.source,
        "frames": a.frames,
        "message": a.message,
        "learned": a.learned,
        "observed": a.observed,
        "count": a.count,
        "first_seen": Timestamp(a.first_seen).to_string(),
        "last_seen": Timestamp(a.last_seen).to_string(),
        "repeat": a.repeat,
    });
    if let (Some(e), Some(m)) = (&a.evidence, v.as_object_mut()) {
        m.insert("evidence".into(), json!(e));
    }
    v
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
    /// pairs that worker owns ([`crate::parallel::pair_shard`]).
    evidence: Option<(PathBuf, Vec<Arc<Mutex<EvidenceRing>>>)>,
    /// Names this run's evidence files apart from an earlier run's (alert ids restart at 1).
    run_tag: String,
    pub evidence_written: u64,
    /// Alert lines written, by kind, type and severity (first lines of a cause only).
    pub counts: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// When set, every alert line is also kept here (tests, evaluation).
    pub kept: Option<Vec<Alert>>,
    scratch: Vec<Alert>,
    /// Capture time of the last tick given to the engine.
    last_tick: i64,
}

impl Detection {
    pub fn new(engine: Engine, out: Option<OutputFile>) -> Self {
        Detection {
            engine: Some(engine),
            metrics: None,
            out,
            outputs: Arc::default(),
            evidence: None,
            run_tag: {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                format!("{secs}-{}", std::process::id())
            },
            evidence_written: 0,
            counts: BTreeMap::new(),
            kept: None,
            scratch: Vec::new(),
            last_tick: i64::MIN,
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
        let rings: Vec<_> = (0..workers.max(1))
            .map(|_| Arc::new(Mutex::new(EvidenceRing::default())))
            .collect();
        self.evidence = Some((dir.to_path_buf(), rings.clone()));
        Ok(rings)
    }

    /// Whether anything reads observations: the engine, or per-channel metrics.
    pub fn wants_observations(&self) -> bool {
        self.engine.is_some() || self.metrics.as_ref().is_some_and(|m| m.channels.enabled())
    }

    pub fn observe_event(&mut self, ev: &Event) {
        if let Some(o) = observe(ev) {
            self.observe(&o);
        }
    }

    /// One observation, in capture order.
    pub fn observe(&mut self, o: &otwatch_models::Observation) {
        let mut lines = std::mem::take(&mut self.scratch);
        if let Some(m) = &mut self.metrics {
            m.channels.observe(o);
        }
        if let Some(e) = &mut self.engine {
            e.observe(o, &mut lines);
        }
        self.write(&mut lines);
        self.scratch = lines;
    }

    /// The clock moved with no event (a quiet live link).
    pub fn tick(&mut self, now: i64) {
        self.last_tick = now;
        let mut lines = std::mem::take(&mut self.scratch);
        if let Some(e) = &mut self.engine {
            e.tick(now, &mut lines);
        }
        self.write(&mut lines);
        self.scratch = lines;
    }

    /// End of input: last lines of repeated causes; the baseline (learned or loaded).
    /// Alerts are flushed and fsynced; failures are in [`Detection::outputs`].
    pub fn finish(&mut self) -> Option<otwatch_models::Baseline> {
        let mut lines = Vec::new();
        let baseline = self.engine.as_mut().and_then(|e| e.finish(&mut lines));
        self.write(&mut lines);
        if let Some(out) = &mut self.out {
            out.finish();
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

    fn write(&mut self, lines: &mut Vec<Alert>) {
        // Alerts reach the file at once: a reader tailing it (a SIEM) sees each as it is raised.
        let flush = !lines.is_empty();
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
                if let (Some((dir, rings)), true) =
                    (&self.evidence, self.evidence_written < EVIDENCE_MAX_FILES)
                {
                    let ring = &rings[crate::parallel::pair_shard(a.src_ip, a.dst_ip, rings.len())];
                    let path = dir.join(format!(
                        "alert-{}-{:06}-{}.pcap",
                        self.run_tag, a.id, a.r#type
                    ));
                    let written = ring
                        .lock()
                        .map_err(|_| std::io::Error::other("evidence ring poisoned"))
                        .and_then(|r| r.write(&a, &path));
                    match written {
                        Ok(true) => {
                            self.evidence_written += 1;
                            a.evidence = Some(path.display().to_string());
                        }
                        Ok(false) => {}
                        Err(e) => {
                            let why = format!("{}: {e}", path.display());
                            self.outputs.fail(OutputKind::Evidence, 1, &why);
                        }
                    }
                }
            }
            if let Some(out) = &mut self.out {
                out.line(|b| serde_json::to_writer(b, &alert_json(&a)));
            }
            if let Some(k) = &mut self.kept {
                k.push(a);
            }
        }
        if let (true, Some(out)) = (flush, &mut self.out) {
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
            }
            s.push('\n');
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

    /// Metrics only (no detection).
    pub fn metrics_only(hub: MetricsHub) -> Self {
        let mut d = Detection::new(Engine::learning(Default::default()), None);
        d.engine = None;
        d.metrics = Some(hub);
        d
    }

    /// The detection state, for the metrics.
    fn detection_state(&self) -> DetectionState {
        let Some(engine) = &self.engine else {
            return DetectionState::default();
        };
        let baseline = engine.baseline();
        // Every type is exported from the start, at 0, so that `increase()` sees its first
        // alert (a series that appears with value 1 has no increase to show).
        let mut alerts = self.counts.clone();
        for t in otwatch_models::alert::TYPES {
            let kind = match Alert::kind_of(t) {
                otwatch_models::AlertKind::Integrity => "integrity",
                otwatch_models::AlertKind::Availability => "availability",
            };
            alerts
                .entry((kind, t, Alert::default_severity(t).name()))
                .or_insert(0);
        }
        DetectionState {
            enabled: true,
            learning: engine.is_learning(),
            learned_until: baseline.map(|b| b.learned_until),
            baseline_channels: baseline.map_or(0, |b| b.channels.len()),
            alerts,
            bounds_hit: engine.bounds_hit().to_vec(),
        }
    }

    /// After each packet: publish metrics about once a second, record OpenMetrics samples when
    /// one is due in capture time.
    pub fn after_packet(&mut self, stats: &Stats, active_flows: usize, ts: i64) {
        // The detection clock moves with every packet, not only with OT events: timers fire
        // when the plant goes quiet while other traffic goes on.
        if self.engine.is_some() && TickClock::due(&mut self.last_tick, ts) {
            self.tick(ts);
        }
        self.metrics_progress(1, ts, || (stats.clone(), active_flows));
    }

    /// `packets` more packets were handled, the last at capture time `ts`: publishes the
    /// metrics about once a second, and records an OpenMetrics sample when one is due.
    /// `counters` gives the pipeline's counters and open flows, asked for only then.
    pub fn metrics_progress(
        &mut self,
        packets: u64,
        ts: i64,
        counters: impl FnOnce() -> (Stats, usize),
    ) {
        let Some(m) = &mut self.metrics else { return };
        m.capture_ts = ts;
        let before = m.packets;
        m.packets += packets;
        let publish = m.server.is_some()
            && (before / 16 != m.packets / 16)
            && m.last_publish.elapsed() >= PUBLISH_EVERY;
        let record = m.recorder.as_ref().is_some_and(|r| r.due(ts));
        if publish || record {
            let (stats, active_flows) = counters();
            let stats = &stats;
            let state = self.detection_state();
            let Some(m) = &mut self.metrics else { return };
            m.active_flows = active_flows;
            let fams = m.families(stats, &state, &self.outputs);
            if record {
                if let Some(r) = &mut m.recorder {
                    r.record(ts, &fams);
                }
            }
            if publish {
                m.last_publish = std::time::Instant::now();
                if let Some(srv) = &m.server {
                    srv.publish(fams);
                }
            }
        }
    }

    /// Publishes the metrics now (counters merged from live workers, about once a second).
    pub fn publish(&mut self, stats: &Stats, active_flows: usize, ts: i64) {
        let state = self.detection_state();
        let Some(m) = &mut self.metrics else { return };
        m.capture_ts = ts;
        m.active_flows = active_flows;
        m.last_publish = std::time::Instant::now();
        let fams = m.families(stats, &state, &self.outputs);
        if let Some(srv) = &m.server {
            srv.publish(fams);
        }
    }

    /// Capture counters of a live source and the packets handed to each worker.
    pub fn set_live(&mut self, counters: LiveCounters, per_worker: &[u64]) {
        if let Some(m) = &mut self.metrics {
            m.live = Some(counters);
            m.workers.clear();
            m.workers.extend_from_slice(per_worker);
        }
    }

    /// End of the run for the metrics: the last publication and sample, and the OpenMetrics
    /// file written.
    pub fn finish_metrics(&mut self, stats: &Stats, active_flows: usize) -> std::io::Result<()> {
        let state = self.detection_state();
        let Some(m) = &mut self.metrics else {
            return Ok(());
        };
        m.active_flows = active_flows;
        let fams = m.families(stats, &state, &self.outputs);
        if let Some(srv) = &m.server {
            srv.publish_final(fams.clone());
        }
        if let (Some(r), Some(path)) = (&mut m.recorder, &m.recorder_path) {
            r.record(m.capture_ts.max(1), &fams);
            let f = std::fs::File::create(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            r.write(&mut std::io::BufWriter::new(f))
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        }
        Ok(())
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
    }

    fn tick(&mut self, now_nanos: i64) {
        self.detection.tick(now_nanos);
        self.inner.tick(now_nanos);
    }

    fn after_packet(&mut self, stats: &Stats, active_flows: usize, ts: i64) {
        self.detection.after_packet(stats, active_flows, ts);
    }

    fn live_counters(&mut self, c: LiveCounters) {
        if let Some(m) = &mut self.detection.metrics {
            m.live = Some(c);
        }
    }

    fn emit(&mut self, event: Event) {
        self.detection.observe_event(&event);
        if self.inner.wants_events() {
            self.inner.emit(event);
        }
    }
}

/// `60`, `90s`, `15m`, `2h`, `1d` into nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a duration (e.g. 90s, 15m, 2h, 1d)"))?;
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d)")),
    };
    let nanos = n * mult * 1e9;
    if !nanos.is_finite() || nanos < 0.0 || nanos > i64::MAX as f64 {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(nanos as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90_000_000_000));
        assert_eq!(parse_duration("90s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5m"), Ok(90_000_000_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000_000_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000_000_000));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
