//! The metrics side of detection: per-channel series, the /metrics server and the OpenMetrics
//! recorder, fed by the same observations as the engine, and published about once a second.

use std::path::PathBuf;

use otwatch_models::{Alert, Engine};

use super::Detection;
use crate::metrics::{
    families, label_all, ChannelMetrics, DetectionState, Inputs, LiveCounters, MetricsServer,
    OpenMetricsRecorder,
};
use crate::output::remote_write::RemoteWrite;
use crate::output::{OutputHealth, OutputKind};
use crate::stats::Stats;

/// The metrics are published at most this often.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The metrics side of a run: per-channel series, the HTTP server, the OpenMetrics recorder,
/// remote-write.
pub struct MetricsHub {
    pub channels: ChannelMetrics,
    pub server: Option<MetricsServer>,
    pub recorder: Option<OpenMetricsRecorder>,
    pub recorder_path: Option<PathBuf>,
    /// `--remote-write`: the families pushed out every interval.
    pub remote: Option<RemoteWrite>,
    /// The sensor's name, a label of every series.
    pub sensor: Option<std::sync::Arc<str>>,
    pub live: Option<LiveCounters>,
    pub workers: Vec<u64>,
    pub(super) capture_ts: i64,
    pub(super) active_flows: usize,
    pub(super) packets: u64,
    pub(super) last_publish: std::time::Instant,
}

impl MetricsHub {
    pub fn new(max_channels: usize) -> Self {
        MetricsHub {
            channels: ChannelMetrics::new(max_channels),
            server: None,
            recorder: None,
            recorder_path: None,
            remote: None,
            sensor: None,
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
        let mut fams = families(&Inputs {
            stats,
            active_flows: self.active_flows,
            capture_ts: self.capture_ts,
            live: self.live,
            workers: &self.workers,
            channels: Some(&self.channels),
            detection: state,
            outputs: Some(outputs),
        });
        if let Some(s) = &self.sensor {
            label_all(&mut fams, s);
        }
        fams
    }

    /// Whether it is time to publish to the server or push to the remote-write receiver.
    /// `tried` says whether this packet is one where the clock is read at all.
    fn due(&self, tried: bool) -> (bool, bool) {
        if !tried {
            return (false, false);
        }
        let publish = self.server.is_some() && self.last_publish.elapsed() >= PUBLISH_EVERY;
        let push = self.remote.as_ref().is_some_and(|r| r.due());
        (publish, push)
    }

    /// Hands the families to the server and the remote-write queue, as `due` said.
    fn send(&mut self, fams: Vec<crate::metrics::Family>, publish: bool, push: bool) {
        if push {
            if let Some(r) = &mut self.remote {
                r.push(&fams);
            }
        }
        if publish {
            self.last_publish = std::time::Instant::now();
            if let Some(srv) = &self.server {
                srv.publish(fams);
            }
        }
    }
}

impl Detection {
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
            clock_steps: engine.clock_steps,
        }
    }

    /// `packets` more packets were handled, the last at capture time `ts`: publishes the
    /// metrics about once a second, and records an OpenMetrics sample when one is due.
    /// `counters` gives the pipeline's counters and open flows, asked for only then.
    #[inline(never)]
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
        let (publish, push) = m.due(before / 16 != m.packets / 16);
        let record = m.recorder.as_ref().is_some_and(|r| r.due(ts));
        if publish || push || record {
            // The metrics count every observation up to this packet.
            self.drain();
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
            m.send(fams, publish, push);
        }
    }

    /// Publishes the metrics now (counters merged from live workers, about once a second).
    pub fn publish(&mut self, stats: &Stats, active_flows: usize, ts: i64) {
        let state = self.detection_state();
        let Some(m) = &mut self.metrics else { return };
        m.capture_ts = ts;
        m.active_flows = active_flows;
        let (_, push) = m.due(true);
        let fams = m.families(stats, &state, &self.outputs);
        m.send(fams, m.server.is_some(), push);
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
    /// file written (and synced). Called after every other output has finished, so that the
    /// last values count all their failures; remote-write's last push goes first, and what it
    /// could not deliver is counted in the values published and recorded after it (not in
    /// that push itself).
    pub fn finish_metrics(&mut self, stats: &Stats, active_flows: usize) -> std::io::Result<()> {
        let state = self.detection_state();
        let Some(m) = &mut self.metrics else {
            return Ok(());
        };
        m.active_flows = active_flows;
        let recorded_drops = m.recorder.as_ref().map_or(0, |r| r.dropped_points);
        if recorded_drops > 0 {
            self.outputs
                .fail(OutputKind::OpenMetrics, recorded_drops, &RecorderFull);
        }
        let mut fams = m.families(stats, &state, &self.outputs);
        if let Some(r) = &mut m.remote {
            // The last values, then the queue drains (10 s at most) before the summary counts
            // what the receiver never got.
            r.push(&fams);
            r.finish();
            fams = m.families(stats, &state, &self.outputs);
        }
        if let Some(srv) = &m.server {
            srv.publish_final(fams.clone());
        }
        if let (Some(r), Some(path)) = (&mut m.recorder, &m.recorder_path) {
            r.record(m.capture_ts.max(1), &fams);
            let more = r.dropped_points - recorded_drops;
            if more > 0 {
                self.outputs
                    .fail(OutputKind::OpenMetrics, more, &RecorderFull);
            }
            let named = |e: std::io::Error| {
                std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
            };
            let f = std::fs::File::create(path).map_err(named)?;
            let mut w = std::io::BufWriter::new(f);
            r.write(&mut w).map_err(named)?;
            // An error that shows only when the data reaches the disk is one too.
            w.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .map_err(named)?;
        }
        Ok(())
    }
}

/// The OpenMetrics recorder's bound was reached: samples past it are not in the file.
struct RecorderFull;

impl std::fmt::Display for RecorderFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the OpenMetrics file holds at most {} sample lines: later samples are not in it",
            crate::metrics::MAX_RECORDED_POINTS
        )
    }
}
