//! The OpenMetrics recorder: samples with capture timestamps, for backfilling Prometheus from a replay.

use super::*;

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
