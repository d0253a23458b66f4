//! Outputs of a run: opened and checked before the input, summarised and accounted for after.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use otwatch::detection::{Detection, MetricsHub};
use otwatch::duration::parse_duration;
use otwatch::event::JsonLinesSink;
use otwatch::output::{check_writable, OutputFile, OutputHealth, OutputKind};
use otwatch_models::{Baseline, Engine, EngineConfig};

use super::{DetectArgs, MetricsArgs};

/// Checks, before any input is read, that every file written at the end can be written:
/// `--save-baseline` / `learn -o` and `--openmetrics`. (Events, alerts and evidence are opened
/// or probed when they are set up.)
pub(crate) fn check_late_outputs(
    detect: &DetectArgs,
    openmetrics: Option<&PathBuf>,
) -> Result<(), String> {
    if let Some(p) = &detect.save_baseline {
        check_writable(p, "baseline")?;
    }
    if let Some(p) = openmetrics {
        check_writable(p, "--openmetrics")?;
    }
    Ok(())
}

/// The detection and metrics state the options ask for, if any.
pub(crate) fn build_analysis(
    args: &DetectArgs,
    metrics: &MetricsArgs,
    openmetrics: Option<&PathBuf>,
    health: &Arc<OutputHealth>,
) -> Result<Option<Detection>, String> {
    let sensor = args.sensor();
    let hub =
        if metrics.metrics.is_some() || openmetrics.is_some() || metrics.remote_write.is_some() {
            let mut hub = MetricsHub::new(metrics.metrics_max_channels);
            hub.sensor = Some(Arc::clone(&sensor));
            if let Some(addr) = &metrics.metrics {
                let web = metrics
                    .web_config
                    .as_deref()
                    .map(otwatch::metrics::web_config::WebConfig::load)
                    .transpose()?;
                let server = otwatch::metrics::MetricsServer::start(addr, web)?;
                let _ = server.counters.sensor.set(sensor.to_string());
                hub.server = Some(server);
            }
            if let Some(url) = &metrics.remote_write {
                let every = match &metrics.remote_write_interval {
                    Some(d) => std::time::Duration::from_nanos(parse_duration(d)?.unsigned_abs()),
                    None => otwatch::output::remote_write::DEFAULT_INTERVAL,
                };
                hub.remote = Some(otwatch::output::remote_write::RemoteWrite::start(
                    url,
                    metrics.remote_write_ca.as_deref(),
                    every,
                    Arc::clone(&sensor),
                    Arc::clone(health),
                )?);
            }
            if let Some(path) = openmetrics {
                hub.recorder = Some(otwatch::metrics::OpenMetricsRecorder::new(10.0));
                hub.recorder_path = Some(path.clone());
            }
            Some(hub)
        } else {
            None
        };
    let mut det = build_detection(args, health)?;
    match (&mut det, hub) {
        (Some(d), hub) => d.metrics = hub,
        (None, Some(hub)) => det = Some(Detection::metrics_only(hub)),
        (None, None) => {}
    }
    if let Some(d) = &mut det {
        d.outputs = Arc::clone(health);
    }
    Ok(det)
}

/// The detection state the options ask for, if any.
pub(crate) fn build_detection(
    args: &DetectArgs,
    health: &Arc<OutputHealth>,
) -> Result<Option<Detection>, String> {
    if !args.enabled() {
        return Ok(None);
    }
    let config = EngineConfig {
        learn_for: args.learn.as_deref().map(parse_duration).transpose()?,
        ..EngineConfig::default()
    };
    let engine = match &args.baseline {
        Some(path) => Engine::detecting(Baseline::load(path).map_err(|e| e.to_string())?, config),
        None => Engine::learning(config),
    };
    let out = match &args.alerts {
        Some(p) => Some(OutputFile::open(OutputKind::Alerts, p, Arc::clone(health))?),
        None => None,
    };
    Ok(Some(Detection::new(engine, out)))
}

/// Ends detection: flushes alerts, saves the baseline if asked; the summary lines.
/// The end of a run's outputs, in the order that lets the last metrics count every failure:
/// detection's (the last alert lines, the syslog drain, the evidence sync, the baseline saved),
/// the events file, then the metrics (remote-write's last push, the final publication, the
/// OpenMetrics file). Returns the summary's lines for them.
/// `unread`: input files that could not be read at all (their names): a baseline learned
/// without them is not saved.
pub(crate) fn finish_outputs(
    mut det: Option<&mut Detection>,
    events: Option<&mut JsonLinesSink>,
    args: &DetectArgs,
    stats: &otwatch::stats::Stats,
    active_flows: usize,
    health: &OutputHealth,
    unread: &[String],
) -> String {
    let mut text = finish_detection(det.as_deref_mut(), args, unread);
    if let Some(j) = events {
        j.out.finish();
    }
    if let Some(det) = det {
        if let Err(e) = det.finish_metrics(stats, active_flows) {
            health.fail(OutputKind::OpenMetrics, 1, &e);
        }
        if let Some(r) = det.metrics.as_ref().and_then(|m| m.remote.as_ref()) {
            text.push_str(&r.summary());
        }
    }
    text
}

fn finish_detection(det: Option<&mut Detection>, args: &DetectArgs, unread: &[String]) -> String {
    let Some(det) = det else { return String::new() };
    let baseline = det.finish();
    if let Some(why) = det
        .metrics
        .as_ref()
        .and_then(|m| m.server.as_ref())
        .and_then(|s| s.failure())
    {
        det.outputs.fail(OutputKind::MetricsServer, 1, &why);
    }
    let mut text = det.summary();
    if let Some(line) = baseline.as_ref().and_then(|b| b.unlearned.describe()) {
        text.push_str(&format!("  warning: baseline {line}\n"));
    }
    if let Some(b) = &baseline {
        text.push_str(&under_learned_line(b));
    }
    if let (Some(path), Some(b)) = (&args.save_baseline, &baseline) {
        // A mistyped capture name must not replace a good baseline with an empty one.
        if let Some(name) = unread.first() {
            let why = format!(
                "{}: not written: {name} could not be read, and a baseline learned without it is not the one asked for",
                path.display()
            );
            det.outputs.fail(OutputKind::Baseline, 1, &why);
        } else if b.observations == 0 {
            let why = format!(
                "{}: not written: learning saw no OT traffic (nothing to learn)",
                path.display()
            );
            det.outputs.fail(OutputKind::Baseline, 1, &why);
        } else {
            match b.save(path) {
                Ok(()) => text.push_str(&format!(
                    "  baseline: {} channels written to {}\n",
                    b.channels.len(),
                    path.display()
                )),
                Err(e) => det.outputs.fail(OutputKind::Baseline, 1, &e),
            }
        }
    }
    if args.alerts.is_none() && args.syslog.is_none() && det.counts.values().any(|n| *n > 0) {
        text.push_str(
            "  warning: alerts were raised but not written anywhere: give --alerts PATH (or - for stdout)\n",
        );
    }
    text
}

/// The summary's line naming the baseline's under-learned channels (at most 5), if any.
fn under_learned_line(b: &otwatch_models::Baseline) -> String {
    let weak = b.under_learned();
    if weak.is_empty() {
        return String::new();
    }
    let more = weak.len().saturating_sub(5);
    format!(
        "  warning: {} under-learned channel(s) (fewer than {} PDUs, or fewer than {} cycles of their most repeated request, in learning; their alerts carry confidence low): {}{}\n",
        weak.len(),
        otwatch_models::baseline::MIN_LEARNED_PDUS,
        otwatch_models::baseline::MIN_LEARNED_CYCLES,
        weak[..weak.len().min(5)].join("; "),
        if more > 0 { format!("; and {more} more") } else { String::new() }
    )
}

/// The summary's lines about the outputs: events written, and every output that failed.
pub(crate) fn outputs_summary(events: Option<&JsonLinesSink>, health: &OutputHealth) -> String {
    let mut s = String::new();
    if let Some(j) = events {
        let to = j
            .out
            .path()
            .map_or_else(|| "stdout".to_string(), |p| p.display().to_string());
        s.push_str(&format!("  events written: {} to {to}\n", j.out.lines));
    }
    for line in health.report() {
        s.push_str(&format!("  FAILED: {line}\n"));
    }
    s
}

/// Prints to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn print_stdout(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("writing to stdout: {e}")),
    }
}

pub(crate) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("otwatch: error: {msg}");
    ExitCode::FAILURE
}

/// Every output of a run, opened (or checked, for those written at the end) before the first
/// packet is read: detection with its alerts, evidence and metrics, the evidence rings the
/// workers record into, the events sink.
pub(crate) fn open_outputs(
    detect: &DetectArgs,
    metrics: &MetricsArgs,
    openmetrics: Option<&PathBuf>,
    events: Option<&PathBuf>,
    health: &Arc<OutputHealth>,
    workers: usize,
) -> Result<RunOutputs, String> {
    check_late_outputs(detect, openmetrics)?;
    let mut detection = build_analysis(detect, metrics, openmetrics, health)?;
    let mut rings = None;
    if let (Some(det), Some(dir)) = (&mut detection, &detect.evidence) {
        rings = Some(
            det.with_evidence_rings(dir, workers)
                .map_err(|e| format!("--evidence {}: {e}", dir.display()))?,
        );
    }
    let sensor = detect.sensor();
    if let Some(det) = &mut detection {
        det.sensor = Some(Arc::clone(&sensor));
        det.eve = detect.eve();
        if let Some(url) = &detect.syslog {
            use otwatch::output::syslog::{Format, SyslogSink, Target};
            let format = if detect.syslog_format == "cef" {
                Format::Cef
            } else {
                Format::Json
            };
            det.syslog = Some(SyslogSink::start(
                Target::parse(url)?,
                detect.syslog_ca.as_deref(),
                format,
                detect.syslog_max_size as usize,
                Arc::clone(&sensor),
                Arc::clone(health),
            )?);
            det.syslog_events = detect.syslog_events;
        }
    }
    let json = match events {
        Some(p) => Some(
            JsonLinesSink::new(OutputFile::open(OutputKind::Events, p, Arc::clone(health))?)
                .with_sensor(sensor)
                .with_eve(detect.eve()),
        ),
        None => None,
    };
    Ok((detection, rings, json))
}

/// The evidence rings of a run, one per worker.
pub(crate) type EvidenceRings = Vec<Arc<std::sync::Mutex<otwatch::output::evidence::EvidenceRing>>>;
/// Detection (with alerts, evidence and metrics), the evidence rings, the events sink.
pub(crate) type RunOutputs = (
    Option<Detection>,
    Option<EvidenceRings>,
    Option<JsonLinesSink>,
);

/// A run whose outputs failed exits non-zero, whatever else went well.
pub(crate) fn outputs_exit(health: &OutputHealth, code: ExitCode) -> ExitCode {
    if health.total() > 0 {
        return fail(format_args!(
            "{} output writes failed: {}",
            health.total(),
            health.report().join("; ")
        ));
    }
    code
}

/// A warning when the run never left its learning window: nothing was detected.
pub(crate) fn learning_warning(det: &Detection, detect: &DetectArgs) -> Option<String> {
    let engine = det.engine.as_ref()?;
    let window = detect.learn.as_deref()?;
    engine.is_learning().then(|| {
        format!("  warning: the capture ended inside the learning window (--learn {window}): nothing was detected; learn for less, or learn once and detect with --baseline\n")
    })
}
