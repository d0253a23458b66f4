//! `otwatch replay` and `otwatch learn`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use otwatch::detection::DetectSink;
use otwatch::event::{EventSink, NullSink};
use otwatch::output::OutputHealth;
use otwatch::pipeline::Pipeline;
use otwatch::{replay, summary};

use super::outputs::*;
use super::{DetectArgs, MetricsArgs};

/// Replay options beyond detection.
#[derive(Default)]
pub(crate) struct ReplayOptions {
    pub(crate) speed: Option<f64>,
    pub(crate) hold: Option<i64>,
    pub(crate) openmetrics: Option<PathBuf>,
    pub(crate) metrics: MetricsArgs,
}

pub(crate) fn run_replay(
    pcaps: &[PathBuf],
    events: Option<PathBuf>,
    quiet: bool,
    workers: usize,
    detect: &DetectArgs,
    opts: &ReplayOptions,
    command: &str,
) -> ExitCode {
    // First: a signal during setup must not kill the run half-way through opening its outputs.
    otwatch::signals::install();
    let health = Arc::new(OutputHealth::default());
    let (mut detection, rings, mut json) = match open_outputs(
        detect,
        &opts.metrics,
        opts.openmetrics.as_ref(),
        events.as_ref(),
        &health,
        workers,
    ) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    if opts.speed.is_some() && workers > 1 {
        return fail("--speed paces one worker: drop --workers");
    }
    if let Some(w) = otwatch::cpus::spread_warning_here(workers) {
        eprintln!("otwatch: warning: {w}");
    }
    let mut pipeline = Pipeline::new();
    pipeline.evidence = rings.as_ref().and_then(|r| r.first().cloned());
    let mut null = NullSink;
    let inner: &mut dyn EventSink = match &mut json {
        Some(j) => j,
        None => &mut null,
    };
    let report = match &mut detection {
        _ if workers > 1 => {
            let mut stage = otwatch::shards::Stage {
                detection: detection.as_mut(),
                events: inner,
            };
            otwatch::parallel::replay_sharded(pcaps, &mut stage, workers, rings)
        }
        Some(det) => {
            if opts.speed.is_some() {
                // Paced, a capture's quiet gap takes its time: an alert must not wait for the
                // packet after it in a batch.
                det.batch = 1;
            }
            let mut sink = DetectSink {
                detection: det,
                inner,
            };
            replay::replay_paced(pcaps, &mut sink, &mut pipeline, opts.speed)
        }
        None => replay::replay_paced(pcaps, inner, &mut pipeline, opts.speed),
    };
    let mut code = ExitCode::SUCCESS;
    let warning = detection.as_ref().and_then(|d| learning_warning(d, detect));
    let unread: Vec<String> = report
        .files
        .iter()
        .filter(|f| f.error.is_some() && f.packets == 0)
        .map(|f| f.path.display().to_string())
        .collect();
    let mut det_summary = finish_outputs(
        detection.as_mut(),
        json.as_mut(),
        detect,
        &report.stats,
        report.active_flows_at_end,
        &health,
        &unread,
    );
    det_summary.push_str(warning.as_deref().unwrap_or_default());
    if !quiet {
        let heading = format!("otwatch {command}: {} file(s),", report.files.len());
        let mut text = summary::render(&report, &heading);
        text.push_str(&det_summary);
        text.push_str(&outputs_summary(json.as_ref(), &health));
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    for e in report.errors() {
        code = fail(e);
    }
    if report.stats.worker_panics > 0 {
        code = fail(format_args!(
            "{} packet(s) made a worker panic (a bug: please report it); the run went on",
            report.stats.worker_panics
        ));
    }
    if report.interrupted {
        code = fail("interrupted by a signal before the end of the input (what was read is in the outputs, flushed)");
    }
    // Keep /metrics up for the last scrapes.
    if let (Some(hold), Some(det)) = (opts.hold, &detection) {
        if det.metrics.as_ref().is_some_and(|m| m.server.is_some()) {
            let until =
                std::time::Instant::now() + std::time::Duration::from_nanos(hold.max(0) as u64);
            while std::time::Instant::now() < until && !otwatch::signals::stop_requested() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    outputs_exit(&health, code)
}
