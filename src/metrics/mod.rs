//! Prometheus metrics (docs/metrics.md): families built from the pipeline's counters and the
//! detection state, served on `/metrics` from a thread of their own, and recorded with capture
//! timestamps as OpenMetrics for backfilling (`replay --openmetrics FILE`).
//!
//! The capture thread never waits for a scraper: it publishes a fresh set of families about once
//! a second, and skips a publication when a scrape holds the lock. One encoder writes both the
//! Prometheus text format and OpenMetrics (with sample timestamps, which backfilling needs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use otwatch_models::learn::{FastMap, Pending, PollKey};
use otwatch_models::{Channel, Kind, Observation};

use crate::stats::Stats;

mod server;
pub mod web_config;

pub use server::{parse_listen, MetricsServer, ServerCounters};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One histogram: cumulative counts per upper bound, sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(Histogram),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The name as exposed in the Prometheus text format (counters end in `_total`).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub samples: Vec<Sample>,
}

impl Family {
    fn new(name: &'static str, kind: MetricKind, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn with(mut self, labels: Vec<(&'static str, String)>, v: f64) -> Self {
        self.push(labels, v);
        self
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, v: f64) {
        self.samples.push(Sample {
            labels,
            value: Value::Number(v),
        });
    }

    /// The family name in OpenMetrics: counters lose their `_total`.
    fn om_name(&self) -> &'static str {
        match self.kind {
            MetricKind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            _ => self.name,
        }
    }
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels_text(labels: &[(&'static str, String)], extra: Option<(&str, &str)>, out: &mut String) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().map(|(k, v)| (*k, v.as_str())).chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label(v, out);
        out.push('"');
    }
    out.push('}');
}

fn number(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The series lines of one sample (`suffix`, labels, value), shared by both formats.
fn sample_lines(f: &Family, s: &Sample, ts: Option<f64>, openmetrics: bool, out: &mut String) {
    let line = |suffix: &str, extra: Option<(&str, &str)>, v: f64, out: &mut String| {
        let base = if openmetrics { f.om_name() } else { f.name };
        out.push_str(base);
        if openmetrics && f.kind == MetricKind::Counter {
            out.push_str("_total");
        }
        out.push_str(suffix);
        labels_text(&s.labels, extra, out);
        out.push(' ');
        number(v, out);
        if let Some(t) = ts {
            let _ = write!(out, " {t:.3}");
        }
        out.push('\n');
    };
    match &s.value {
        Value::Number(v) => line("", None, *v, out),
        Value::Histogram(h) => {
            let mut cum = 0u64;
            for (i, c) in h.counts.iter().enumerate() {
                cum += c;
                let le = match h.bounds.get(i) {
                    Some(b) => {
                        let mut t = String::new();
                        number(*b, &mut t);
                        if !t.contains('.') && !t.contains('e') {
                            t.push_str(".0");
                        }
                        t
                    }
                    None => "+Inf".to_string(),
                };
                line("_bucket", Some(("le", &le)), cum as f64, out);
            }
            line("_sum", None, h.sum, out);
            line("_count", None, cum as f64, out);
        }
    }
}

fn header(f: &Family, openmetrics: bool, out: &mut String) {
    let name = if openmetrics { f.om_name() } else { f.name };
    let kind = match f.kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    };
    let _ = writeln!(out, "# HELP {name} {}", f.help);
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The Prometheus text format (version 0.0.4).
pub fn encode_text(families: &[Family]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for f in families {
        header(f, false, &mut out);
        for s in &f.samples {
            sample_lines(f, s, None, false, &mut out);
        }
    }
    out
}

/// OpenMetrics 1.0 text, ending in `# EOF`.
pub fn encode_openmetrics(families: &[Family]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for f in families {
        header(f, true, &mut out);
        for s in &f.samples {
            sample_lines(f, s, None, true, &mut out);
        }
    }
    out.push_str("# EOF\n");
    out
}

pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const POLL_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Poll keys remembered per channel for intervals.
const POLL_KEYS_PER_CHANNEL: usize = 64;
pub const DEFAULT_MAX_CHANNELS: usize = 256;

struct ChannelSeries {
    requests: u64,
    latency: Histogram,
    polls: Histogram,
    pending: Pending,
    last_poll: FastMap<PollKey, i64>,
}

/// Per-channel series: requests, response latency, intervals between identical requests.
pub struct ChannelMetrics {
    channels: FastMap<Channel, ChannelSeries>,
    order: Vec<Channel>,
    max_channels: usize,
    pub overflow: u64,
    assets: FastMap<IpAddr, ()>,
}

/// Distinct hosts counted for `otwatch_assets_seen`, at most.
const MAX_ASSETS_COUNTED: usize = 100_000;

impl ChannelMetrics {
    pub fn new(max_channels: usize) -> Self {
        ChannelMetrics {
            channels: FastMap::default(),
            order: Vec::new(),
            max_channels,
            overflow: 0,
            assets: FastMap::default(),
        }
    }

    fn count_assets(&mut self, ch: &Channel) {
        for ip in [ch.client, ch.server] {
            if self.assets.len() < MAX_ASSETS_COUNTED {
                self.assets.insert(ip, ());
            }
        }
    }

    /// False with a cap of 0: no per-channel series (and no events needed for them).
    pub fn enabled(&self) -> bool {
        self.max_channels > 0
    }

    pub fn observe(&mut self, o: &Observation) {
        let ch = o.channel;
        if o.kind == Kind::Conversation {
            self.count_assets(&ch);
            return;
        }
        if !self.channels.contains_key(&ch) {
            // A channel's hosts are counted once, when it is first seen.
            self.count_assets(&ch);
            if self.channels.len() >= self.max_channels {
                self.overflow += 1;
                return;
            }
            self.order.push(ch);
        }
        let c = self.channels.entry(ch).or_insert_with(|| ChannelSeries {
            requests: 0,
            latency: Histogram::new(LATENCY_BUCKETS),
            polls: Histogram::new(POLL_BUCKETS),
            pending: Pending::default(),
            last_poll: FastMap::default(),
        });
        match o.kind {
            Kind::Request => {
                c.requests += 1;
                c.pending.request(o);
                let key = otwatch_models::learn::poll_key(o);
                if let Some(prev) = c.last_poll.get(&key) {
                    c.polls.observe(otwatch_models::secs(*prev, o.ts));
                }
                if c.last_poll.len() < POLL_KEYS_PER_CHANNEL || c.last_poll.contains_key(&key) {
                    c.last_poll.insert(key, o.ts);
                }
            }
            Kind::Response => {
                if let Some((l, _)) = c.pending.response(o) {
                    c.latency.observe(l);
                }
            }
            Kind::Unsolicited | Kind::Conversation => {}
        }
    }

    fn families(&self, out: &mut Vec<Family>) {
        let mut req = Family::new(
            "otwatch_requests_total",
            MetricKind::Counter,
            "Requests per channel.",
        );
        let mut lat = Family::new(
            "otwatch_response_latency_seconds",
            MetricKind::Histogram,
            "Request to response time per channel.",
        );
        let mut polls = Family::new(
            "otwatch_poll_interval_seconds",
            MetricKind::Histogram,
            "Interval between two identical requests (same function and address block) per channel.",
        );
        for ch in &self.order {
            let Some(c) = self.channels.get(ch) else {
                continue;
            };
            let labels = vec![
                ("proto", ch.proto.name().to_string()),
                ("client", ch.client.to_string()),
                ("server", ch.server.to_string()),
                ("unit", ch.unit_text()),
            ];
            req.push(labels.clone(), c.requests as f64);
            lat.samples.push(Sample {
                labels: labels.clone(),
                value: Value::Histogram(c.latency.clone()),
            });
            polls.samples.push(Sample {
                labels,
                value: Value::Histogram(c.polls.clone()),
            });
        }
        out.extend([req, lat, polls]);
        out.push(
            Family::new(
                "otwatch_metrics_channels_overflow_total",
                MetricKind::Counter,
                "Observations of channels beyond the label cap (--metrics-max-channels).",
            )
            .with(Vec::new(), self.overflow as f64),
        );
        out.push(
            Family::new(
                "otwatch_assets_seen",
                MetricKind::Gauge,
                "Distinct hosts seen in dissected or reported conversations.",
            )
            .with(Vec::new(), self.assets.len() as f64),
        );
    }
}

/// Capture counters only a live source has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounters {
    pub kernel_drops: u64,
    pub ring_freezes: u64,
    pub queue_drops: u64,
}

/// The detection state, for its gauges and counters.
#[derive(Debug, Clone, Default)]
pub struct DetectionState {
    pub enabled: bool,
    pub learning: bool,
    /// End of the learning window, capture time in seconds.
    pub learned_until: Option<f64>,
    pub baseline_channels: usize,
    /// Alert causes by (kind, type, severity).
    pub alerts: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Detection's memory bounds hit: (bound, times).
    pub bounds_hit: Vec<(&'static str, u64)>,
}

/// Everything the families are built from.
pub struct Inputs<'a> {
    pub stats: &'a Stats,
    pub active_flows: usize,
    pub capture_ts: i64,
    pub live: Option<LiveCounters>,
    pub workers: &'a [u64],
    pub channels: Option<&'a ChannelMetrics>,
    pub detection: &'a DetectionState,
    /// Failed writes of the run's outputs.
    pub outputs: Option<&'a crate::output::OutputHealth>,
}

fn proto_families(stats: &Stats, out: &mut Vec<Family>) {
    let protos = crate::dissect::ProtoId::all().map(|p| (p.spec().name, &stats[p]));
    let mut pdus = Family::new(
        "otwatch_pdus_total",
        MetricKind::Counter,
        "PDUs by protocol and function code.",
    );
    let mut exc = Family::new(
        "otwatch_exceptions_total",
        MetricKind::Counter,
        "Exception responses by protocol.",
    );
    let mut errs = Family::new(
        "otwatch_parse_errors_total",
        MetricKind::Counter,
        "Malformed PDUs by protocol and reason.",
    );
    for (name, p) in protos {
        for (fc, n) in p.functions() {
            pdus.push(
                vec![("proto", name.to_string()), ("function", fc.to_string())],
                n as f64,
            );
        }
        exc.push(vec![("proto", name.to_string())], p.exceptions as f64);
        for (reason, n) in &p.parse_errors {
            errs.push(
                vec![("proto", name.to_string()), ("reason", reason.to_string())],
                *n as f64,
            );
        }
    }
    out.extend([pdus, exc, errs]);
}

/// Every family, from the inputs.
pub fn families(i: &Inputs<'_>) -> Vec<Family> {
    let s = i.stats;
    let mut out = Vec::with_capacity(24);
    out.push(
        Family::new(
            "otwatch_build_info",
            MetricKind::Gauge,
            "The running build (always 1).",
        )
        .with(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            1.0,
        ),
    );
    out.push(
        Family::new(
            "otwatch_packets_total",
            MetricKind::Counter,
            "Packets captured and processed.",
        )
        .with(Vec::new(), s.packets as f64),
    );
    out.push(
        Family::new(
            "otwatch_bytes_total",
            MetricKind::Counter,
            "Bytes on the wire of the packets processed.",
        )
        .with(Vec::new(), s.bytes as f64),
    );
    out.push(
        Family::new(
            "otwatch_capture_timestamp_seconds",
            MetricKind::Gauge,
            "Capture time of the latest packet.",
        )
        .with(Vec::new(), i.capture_ts as f64 / 1e9),
    );
    let live = i.live.unwrap_or_default();
    let mut drops = Family::new(
        "otwatch_drops_total",
        MetricKind::Counter,
        "Packets or data lost, by stage.",
    );
    for (stage, n) in [
        ("kernel", live.kernel_drops),
        ("ring", live.ring_freezes),
        ("queue", live.queue_drops),
        (
            "reassembly",
            s.tcp.ooo_bound_gaps + s.tcp.buffer_bound_drops,
        ),
        ("flow_table", s.flows.table_full_drops),
        ("defrag", s.defrag.bound_drops),
        ("talkers", s.flows.talkers_full),
    ] {
        drops.push(vec![("stage", stage.to_string())], n as f64);
    }
    out.push(drops);
    out.push(
        Family::new(
            "otwatch_flows_active",
            MetricKind::Gauge,
            "Flows tracked now.",
        )
        .with(Vec::new(), i.active_flows as f64),
    );
    out.push(
        Family::new(
            "otwatch_flows_created_total",
            MetricKind::Counter,
            "Flows created.",
        )
        .with(Vec::new(), s.flows.created as f64),
    );
    let mut evicted = Family::new(
        "otwatch_flows_evicted_total",
        MetricKind::Counter,
        "Flows evicted, by reason: idle (timeout) or full (to make room in a full table).",
    );
    evicted.push(vec![("reason", "idle".into())], s.flows.evicted_idle as f64);
    evicted.push(vec![("reason", "full".into())], s.flows.evicted_full as f64);
    out.push(evicted);
    proto_families(s, &mut out);
    if let Some(c) = i.channels {
        c.families(&mut out);
    }
    if !i.workers.is_empty() {
        let mut w = Family::new(
            "otwatch_worker_packets_total",
            MetricKind::Counter,
            "Packets handed to each worker.",
        );
        for (n, p) in i.workers.iter().enumerate() {
            w.push(vec![("worker", n.to_string())], *p as f64);
        }
        out.push(w);
    }
    if let Some(h) = i.outputs {
        let mut f = Family::new(
            "otwatch_output_errors_total",
            MetricKind::Counter,
            "Writes an output could not make (lines, evidence files, saves), by output.",
        );
        for k in crate::output::OutputKind::ALL {
            f.push(vec![("output", k.name().to_string())], h.errors(k) as f64);
        }
        out.push(f);
    }
    let d = i.detection;
    if d.enabled {
        let mut bounds = Family::new(
            "otwatch_detection_bound_hits_total",
            MetricKind::Counter,
            "Observations detection could not keep state for, by the memory bound that was hit.",
        );
        for (bound, n) in &d.bounds_hit {
            bounds.push(vec![("bound", bound.to_string())], *n as f64);
        }
        out.push(bounds);
        let mut alerts = Family::new(
            "otwatch_alerts_total",
            MetricKind::Counter,
            "Alert causes raised, by kind, type and severity.",
        );
        for ((kind, t, sev), n) in &d.alerts {
            alerts.push(
                vec![
                    ("kind", kind.to_string()),
                    ("type", t.to_string()),
                    ("severity", sev.to_string()),
                ],
                *n as f64,
            );
        }
        out.push(alerts);
        out.push(
            Family::new(
                "otwatch_learning",
                MetricKind::Gauge,
                "1 while learning the baseline, 0 when detecting.",
            )
            .with(Vec::new(), f64::from(u8::from(d.learning))),
        );
        if let Some(until) = d.learned_until {
            out.push(
                Family::new(
                    "otwatch_baseline_age_seconds",
                    MetricKind::Gauge,
                    "Capture time since the end of the learning window.",
                )
                .with(Vec::new(), (i.capture_ts as f64 / 1e9 - until).max(0.0)),
            );
        }
        out.push(
            Family::new(
                "otwatch_baseline_channels",
                MetricKind::Gauge,
                "Channels in the baseline in use.",
            )
            .with(Vec::new(), d.baseline_channels as f64),
        );
    }
    out
}

/// The families a scrape sees; replaced about once a second by the capture thread.
pub type Published = Arc<Mutex<Vec<Family>>>;

/// Samples of every series at capture-time steps, written as one OpenMetrics exposition with
/// timestamps (family by family, series by series, in time order), for
/// `promtool tsdb create-blocks-from openmetrics`.
struct RecordedFamily {
    kind: MetricKind,
    help: &'static str,
    om_name: &'static str,
    /// Per metric (its label set): the lines of each sample time, in time order. A histogram's
    /// buckets, sum and count stay together and in bound order, as OpenMetrics wants.
    metrics: BTreeMap<String, Vec<(i64, String)>>,
}

pub struct OpenMetricsRecorder {
    step_nanos: i64,
    next: Option<i64>,
    /// Family name → its kind, help, OpenMetrics name and points per series.
    families: BTreeMap<&'static str, RecordedFamily>,
    points: usize,
    /// Points not kept because the bound was reached.
    pub dropped_points: u64,
}

/// Points kept in memory for the backfill file, at most (about 1.5 GiB of series text is never
/// reached: a week at 10-s steps is 60 480 points per series).
pub const MAX_RECORDED_POINTS: usize = 50_000_000;

impl OpenMetricsRecorder {
    pub fn new(step_secs: f64) -> Self {
        OpenMetricsRecorder {
            step_nanos: ((step_secs * 1e9) as i64).max(1_000_000),
            next: None,
            families: BTreeMap::new(),
            points: 0,
            dropped_points: 0,
        }
    }

    /// True when a sample is due at capture time `ts`.
    pub fn due(&self, ts: i64) -> bool {
        self.next.is_none_or(|n| ts >= n)
    }

    /// Records every series at capture time `ts`.
    pub fn record(&mut self, ts: i64, families: &[Family]) {
        self.next = Some(ts - ts.rem_euclid(self.step_nanos) + self.step_nanos);
        let secs = ts as f64 / 1e9;
        for f in families {
            let entry = self
                .families
                .entry(f.name)
                .or_insert_with(|| RecordedFamily {
                    kind: f.kind,
                    help: f.help,
                    om_name: f.om_name(),
                    metrics: BTreeMap::new(),
                });
            for s in &f.samples {
                if self.points >= MAX_RECORDED_POINTS {
                    self.dropped_points += 1;
                    continue;
                }
                let mut key = String::new();
                labels_text(&s.labels, None, &mut key);
                let points = entry.metrics.entry(key).or_default();
                if points.last().is_some_and(|(t, _)| *t > ts) {
                    continue;
                }
                let mut lines = String::new();
                sample_lines(f, s, Some(secs), true, &mut lines);
                // A second sample at the same time replaces the first: the end of a run records
                // its final values at the last packet's time, which a sample may already hold.
                if let Some(last) = points.last_mut().filter(|(t, _)| *t == ts) {
                    self.points -= last.1.lines().count();
                    self.points += lines.lines().count();
                    last.1 = lines;
                    continue;
                }
                self.points += lines.lines().count();
                points.push((ts, lines));
            }
        }
    }

    pub fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut buf = String::with_capacity(1 << 20);
        for f in self.families.values() {
            let k = match f.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
                MetricKind::Histogram => "histogram",
            };
            let _ = writeln!(buf, "# HELP {} {}", f.om_name, f.help);
            let _ = writeln!(buf, "# TYPE {} {k}", f.om_name);
            for points in f.metrics.values() {
                for (_, lines) in points {
                    buf.push_str(lines);
                    if buf.len() > 1 << 20 {
                        out.write_all(buf.as_bytes())?;
                        buf.clear();
                    }
                }
            }
        }
        buf.push_str("# EOF\n");
        out.write_all(buf.as_bytes())?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_families() -> Vec<Family> {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        vec![
            Family::new("otwatch_packets_total", MetricKind::Counter, "Packets.")
                .with(Vec::new(), 42.0),
            Family::new("otwatch_flows_active", MetricKind::Gauge, "Flows.")
                .with(vec![("a", "x\"y".into())], 1.5),
            Family {
                name: "otwatch_lat_seconds",
                help: "Latency.",
                kind: MetricKind::Histogram,
                samples: vec![Sample {
                    labels: vec![("proto", "modbus".into())],
                    value: Value::Histogram(h),
                }],
            },
        ]
    }

    #[test]
    fn text_format() {
        let t = encode_text(&sample_families());
        assert!(t.contains("# TYPE otwatch_packets_total counter\notwatch_packets_total 42\n"));
        assert!(t.contains("otwatch_flows_active{a=\"x\\\"y\"} 1.5\n"));
        assert!(t.contains("otwatch_lat_seconds_bucket{proto=\"modbus\",le=\"0.1\"} 1\n"));
        assert!(t.contains("otwatch_lat_seconds_bucket{proto=\"modbus\",le=\"1.0\"} 2\n"));
        assert!(t.contains("otwatch_lat_seconds_bucket{proto=\"modbus\",le=\"+Inf\"} 3\n"));
        assert!(t.contains("otwatch_lat_seconds_sum{proto=\"modbus\"} 5.55\n"));
        assert!(t.contains("otwatch_lat_seconds_count{proto=\"modbus\"} 3\n"));
        assert!(!t.contains("# EOF"));
    }

    #[test]
    fn openmetrics_format() {
        let t = encode_openmetrics(&sample_families());
        assert!(t.contains("# TYPE otwatch_packets counter\notwatch_packets_total 42\n"));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn recorder_groups_by_family_then_series_in_time_order() {
        let mut r = OpenMetricsRecorder::new(10.0);
        assert!(r.due(0));
        r.record(5_000_000_000, &sample_families());
        assert!(!r.due(9_000_000_000));
        assert!(r.due(10_000_000_000));
        r.record(12_000_000_000, &sample_families());
        let mut out = Vec::new();
        r.write(&mut out).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let packets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("otwatch_packets_total"))
            .collect();
        assert_eq!(
            packets,
            vec![
                "otwatch_packets_total 42 5.000",
                "otwatch_packets_total 42 12.000"
            ]
        );
        assert_eq!(text.matches("# TYPE otwatch_packets counter").count(), 1);
        // A histogram's lines stay together per sample time, buckets in bound order.
        let lat: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("otwatch_lat_seconds"))
            .collect();
        assert_eq!(lat.len(), 2 * 5, "{lat:?}");
        assert!(lat[0].contains("le=\"0.1\"") && lat[2].contains("le=\"+Inf\""));
        assert!(lat[4].starts_with("otwatch_lat_seconds_count") && lat[4].ends_with(" 5.000"));
        assert!(lat[5].contains("le=\"0.1\"") && lat[5].ends_with(" 12.000"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("9464").as_deref(), Ok("127.0.0.1:9464"));
        assert_eq!(parse_listen(":9464").as_deref(), Ok("127.0.0.1:9464"));
        assert_eq!(parse_listen("0.0.0.0:9464").as_deref(), Ok("0.0.0.0:9464"));
        assert!(parse_listen("nonsense").is_err());
    }
}
