//! Families and samples, and their encodings: the Prometheus text format and OpenMetrics.

use super::*;

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
    pub(crate) fn new(name: &'static str, kind: MetricKind, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    pub(crate) fn with(mut self, labels: Vec<(&'static str, String)>, v: f64) -> Self {
        self.push(labels, v);
        self
    }

    pub(crate) fn push(&mut self, labels: Vec<(&'static str, String)>, v: f64) {
        self.samples.push(Sample {
            labels,
            value: Value::Number(v),
        });
    }

    /// The family name in OpenMetrics: counters lose their `_total`.
    pub(crate) fn om_name(&self) -> &'static str {
        match self.kind {
            MetricKind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            _ => self.name,
        }
    }
}

pub(crate) fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

pub(crate) fn labels_text(
    labels: &[(&'static str, String)],
    extra: Option<(&str, &str)>,
    out: &mut String,
) {
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

pub(crate) fn number(v: f64, out: &mut String) {
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
pub(crate) fn sample_lines(
    f: &Family,
    s: &Sample,
    ts: Option<f64>,
    openmetrics: bool,
    out: &mut String,
) {
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
    points(s, |suffix, extra, v| line(suffix, extra, v, out));
}

/// Every series point of one sample: (suffix, extra label, value). A number is one point; a
/// histogram is its cumulative buckets (`_bucket`, `le`), `_sum` and `_count`.
pub(crate) fn points(s: &Sample, mut point: impl FnMut(&str, Option<(&str, &str)>, f64)) {
    match &s.value {
        Value::Number(v) => point("", None, *v),
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
                point("_bucket", Some(("le", &le)), cum as f64);
            }
            point("_sum", None, h.sum);
            point("_count", None, cum as f64);
        }
    }
}

pub(crate) fn header(f: &Family, openmetrics: bool, out: &mut String) {
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
    encode(families, false)
}

/// OpenMetrics 1.0 text, ending in `# EOF`.
pub fn encode_openmetrics(families: &[Family]) -> String {
    let mut out = encode(families, true);
    out.push_str("# EOF\n");
    out
}

fn encode(families: &[Family], openmetrics: bool) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for f in families {
        header(f, openmetrics, &mut out);
        for s in &f.samples {
            sample_lines(f, s, None, openmetrics, &mut out);
        }
    }
    out
}

pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
