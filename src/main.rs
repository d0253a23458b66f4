#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use otwatch::detection::{parse_duration, DetectSink, Detection, MetricsHub};
use otwatch::event::{EventSink, JsonLinesSink, NullSink};
use otwatch::output::{check_writable, OutputFile, OutputHealth, OutputKind};
use otwatch::pipeline::Pipeline;
use otwatch::{replay, summary};
use otwatch_models::{Baseline, Engine, EngineConfig};

/// Passive monitor for industrial (OT) networks: Modbus/TCP, DNP3, S7comm.
#[derive(Parser)]
#[command(name = "otwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay pcap/pcapng captures (plain or gzip) through the dissectors.
    Replay {
        /// Capture files, read in the order given (flows continue across them).
        #[arg(required = true, value_name = "PCAP")]
        pcaps: Vec<PathBuf>,
        /// Write one JSON object per protocol PDU (JSON Lines) to PATH, or to stdout with `-`.
        #[arg(long, value_name = "PATH|-")]
        events: Option<PathBuf>,
        /// Do not print the summary on stderr.
        #[arg(long, short)]
        quiet: bool,
        /// Dissect with N worker threads (one more thread reads). Each worker owns the flows
        /// between the host pairs hashed to it; events of different flows may interleave
        /// differently than with one worker.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_workers)]
        workers: usize,
        #[command(flatten)]
        detect: DetectArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
        /// Replay pace: `max` (as fast as possible), `realtime`, or a factor (`10` = ten times
        /// faster than the capture).
        #[arg(long, default_value = "max", value_name = "realtime|max|FACTOR")]
        speed: String,
        /// Keep serving /metrics this long after the input ends (e.g. `30s`), so a scraper
        /// sees the final values.
        #[arg(long, value_name = "DURATION", requires = "metrics")]
        metrics_hold: Option<String>,
        /// Write every metric family as OpenMetrics samples with capture timestamps (every 10 s
        /// of capture time) to FILE, for `promtool tsdb create-blocks-from openmetrics`.
        #[arg(long, value_name = "FILE")]
        openmetrics: Option<PathBuf>,
    },
    /// Learn a baseline from captures of normal operation.
    Learn {
        #[arg(required = true, value_name = "PCAP")]
        pcaps: Vec<PathBuf>,
        /// Where to write the baseline (JSON, written atomically).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Alerts raised while learning (commands, malformed PDUs) as JSON Lines.
        #[arg(long, value_name = "PATH|-")]
        alerts: Option<PathBuf>,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Inspect a saved baseline.
    Baseline {
        #[command(subcommand)]
        command: BaselineCommand,
    },
    /// Capture live from an interface (a SPAN/mirror port) through an AF_PACKET ring. Passive:
    /// the socket never transmits. Stops on SIGINT/SIGTERM, flushing events and the summary.
    Live {
        /// Interface to capture on.
        #[arg(short, long, value_name = "IFACE")]
        interface: String,
        /// Write one JSON object per protocol PDU (JSON Lines) to PATH, or to stdout with `-`.
        #[arg(long, value_name = "PATH|-")]
        events: Option<PathBuf>,
        /// Do not print the summary on stderr.
        #[arg(long, short)]
        quiet: bool,
        /// After opening the capture socket, drop privileges to this user.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Ring: number of blocks (of --block-size bytes each).
        #[arg(long, default_value_t = 16)]
        ring_blocks: u32,
        /// Ring block size in bytes (a multiple of the page size).
        #[arg(long, default_value_t = 4 * 1024 * 1024)]
        block_size: u32,
        /// Do not put the interface in promiscuous mode.
        #[arg(long)]
        no_promiscuous: bool,
        /// Capture through libpcap instead of the AF_PACKET ring (builds with `--features libpcap`).
        #[arg(long)]
        libpcap: bool,
        /// BPF filter (tcpdump syntax); implies --libpcap.
        #[arg(long, value_name = "EXPR")]
        bpf: Option<String>,
        /// Dissect with N worker threads fed from the ring without copying (the capture thread
        /// hashes host pairs to workers; a worker whose queue is full loses the packet, counted).
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_workers)]
        workers: usize,
        #[command(flatten)]
        detect: DetectArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
}

/// `--workers`: at least one.
fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0 workers would dissect nothing: give at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?}: expected a number of worker threads")),
    }
}

/// `--learn`: a duration longer than zero.
fn parse_learn(s: &str) -> Result<String, String> {
    match parse_duration(s)? {
        0 => Err(
            "a learning window of 0 learns nothing: give a duration such as 10m, or use --baseline"
                .into(),
        ),
        _ => Ok(s.to_string()),
    }
}

/// Metrics options, shared by `replay` and `live` (docs/metrics.md).
#[derive(clap::Args, Default)]
struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics: `PORT` binds loopback, `HOST:PORT` binds
    /// as given.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Per-channel series at most; observations of further channels are counted in
    /// otwatch_metrics_channels_overflow_total.
    #[arg(long, default_value_t = otwatch::metrics::DEFAULT_MAX_CHANNELS, value_name = "N")]
    metrics_max_channels: usize,
    /// TLS and basic auth for /metrics: a Prometheus exporter-toolkit web config (YAML, as
    /// node_exporter's --web.config.file).
    #[arg(
        long,
        value_name = "FILE",
        requires = "metrics",
        alias = "web.config.file"
    )]
    web_config: Option<PathBuf>,
}

/// `realtime`, `max` or a positive factor.
fn parse_speed(s: &str) -> Result<Option<f64>, String> {
    match s {
        "max" => Ok(None),
        "realtime" => Ok(Some(1.0)),
        f => match f.parse::<f64>() {
            Ok(x) if x > 0.0 && x.is_finite() => Ok(Some(x)),
            _ => Err(format!(
                "--speed {s:?}: expected realtime, max or a positive factor"
            )),
        },
    }
}

#[derive(Subcommand)]
enum BaselineCommand {
    /// What a baseline holds, for a person.
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Detection options, shared by `replay` and `live`. Detection runs when any of them is given.
#[derive(clap::Args, Default)]
struct DetectArgs {
    /// Write alerts (JSON Lines, docs/alerts.md) to PATH, or to stdout with `-`.
    #[arg(long, value_name = "PATH|-")]
    alerts: Option<PathBuf>,
    /// Detect against this saved baseline from the first packet.
    #[arg(long, value_name = "FILE", conflicts_with = "learn")]
    baseline: Option<PathBuf>,
    /// Learn from the first DURATION of capture time (e.g. 10m, 2h), then detect.
    #[arg(long, value_name = "DURATION", value_parser = parse_learn)]
    learn: Option<String>,
    /// Save the baseline in use at the end (learned, or the one loaded).
    #[arg(long, value_name = "FILE")]
    save_baseline: Option<PathBuf>,
    /// Write a small pcap of the packets behind each alert into DIR.
    #[arg(long, value_name = "DIR")]
    evidence: Option<PathBuf>,
}

impl DetectArgs {
    fn enabled(&self) -> bool {
        self.alerts.is_some()
            || self.baseline.is_some()
            || self.learn.is_some()
            || self.save_baseline.is_some()
            || self.evidence.is_some()
    }
}

/// Checks, before any input is read, that every file written at the end can be written:
/// `--save-baseline` / `learn -o` and `--openmetrics`. (Events, alerts and evidence are opened
/// or probed when they are set up.)
fn check_late_outputs(detect: &DetectArgs, openmetrics: Option<&PathBuf>) -> Result<(), String> {
    if let Some(p) = &detect.save_baseline {
        check_writable(p, "baseline")?;
    }
    if let Some(p) = openmetrics {
        check_writable(p, "--openmetrics")?;
    }
    Ok(())
}

/// The detection and metrics state the options ask for, if any.
fn build_analysis(
    args: &DetectArgs,
    metrics: &MetricsArgs,
    openmetrics: Option<&PathBuf>,
    health: &Arc<OutputHealth>,
) -> Result<Option<Detection>, String> {
    let hub = if metrics.metrics.is_some() || openmetrics.is_some() {
        let mut hub = MetricsHub::new(metrics.metrics_max_channels);
        if let Some(addr) = &metrics.metrics {
            let web = metrics
                .web_config
                .as_deref()
                .map(otwatch::metrics::web_config::WebConfig::load)
                .transpose()?;
            hub.server = Some(otwatch::metrics::MetricsServer::start(addr, web)?);
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
fn build_detection(
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
fn finish_detection(det: Option<&mut Detection>, args: &DetectArgs) -> String {
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
    if let (Some(path), Some(b)) = (&args.save_baseline, &baseline) {
        match b.save(path) {
            Ok(()) => text.push_str(&format!(
                "  baseline: {} channels written to {}\n",
                b.channels.len(),
                path.display()
            )),
            Err(e) => det.outputs.fail(OutputKind::Baseline, 1, &e),
        }
    }
    if args.alerts.is_none() && det.counts.values().any(|n| *n > 0) {
        text.push_str(
            "  warning: alerts were raised but not written anywhere: give --alerts PATH (or - for stdout)\n",
        );
    }
    text
}

/// The summary's lines about the outputs: events written, and every output that failed.
fn outputs_summary(events: Option<&JsonLinesSink>, health: &OutputHealth) -> String {
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
fn print_stdout(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("writing to stdout: {e}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay {
            pcaps,
            events,
            quiet,
            workers,
            detect,
            metrics,
            speed,
            metrics_hold,
            openmetrics,
        } => {
            let opts = ReplayOptions {
                speed: match parse_speed(&speed) {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                },
                hold: match metrics_hold.as_deref().map(parse_duration).transpose() {
                    Ok(h) => h,
                    Err(e) => return fail(e),
                },
                openmetrics,
                metrics,
            };
            run_replay(&pcaps, events, quiet, workers, &detect, &opts, "replay")
        }
        Command::Learn {
            pcaps,
            output,
            alerts,
            quiet,
        } => {
            let detect = DetectArgs {
                alerts,
                save_baseline: Some(output),
                ..DetectArgs::default()
            };
            run_replay(
                &pcaps,
                None,
                quiet,
                1,
                &detect,
                &ReplayOptions::default(),
                "learn",
            )
        }
        Command::Baseline {
            command: BaselineCommand::Show { file },
        } => match Baseline::load(&file) {
            Ok(b) => print_stdout(&b.describe()),
            Err(e) => fail(e),
        },
        Command::Live {
            interface,
            events,
            quiet,
            user,
            ring_blocks,
            block_size,
            no_promiscuous,
            libpcap,
            bpf,
            workers,
            detect,
            metrics,
        } => {
            let opts = otwatch::capture::afpacket::AfPacketOptions {
                block_size,
                block_count: ring_blocks,
                promiscuous: !no_promiscuous,
                ..Default::default()
            };
            let source = match open_live(&interface, opts, libpcap || bpf.is_some(), bpf.as_deref())
            {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            // The capabilities that opened the socket are not needed again; they are per thread,
            // so they go before any thread (the metrics server) exists. With `--user` from root,
            // setuid drops them on every thread later (handing the outputs over needs them).
            if !otwatch::capture::harden::is_root() || user.is_none() {
                if let Err(e) = otwatch::capture::harden::clear_capabilities() {
                    return fail(format_args!("cannot clear capabilities: {e}"));
                }
            }
            let opts = LiveOptions {
                user,
                workers,
                detect,
                metrics,
            };
            run_live(&interface, source, events, quiet, &opts)
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("otwatch: error: {msg}");
    ExitCode::FAILURE
}

/// Replay options beyond detection.
#[derive(Default)]
struct ReplayOptions {
    speed: Option<f64>,
    hold: Option<i64>,
    openmetrics: Option<PathBuf>,
    metrics: MetricsArgs,
}

fn run_replay(
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
            let mut sink = DetectSink {
                detection: det,
                inner,
            };
            replay::replay_paced(pcaps, &mut sink, &mut pipeline, opts.speed)
        }
        None => replay::replay_paced(pcaps, inner, &mut pipeline, opts.speed),
    };
    let mut code = ExitCode::SUCCESS;
    if let Some(det) = &mut detection {
        if let Err(e) = det.finish_metrics(&report.stats, report.active_flows_at_end) {
            health.fail(OutputKind::OpenMetrics, 1, &e);
        }
    }
    let warning = detection.as_ref().and_then(|d| learning_warning(d, detect));
    let mut det_summary = finish_detection(detection.as_mut(), detect);
    det_summary.push_str(warning.as_deref().unwrap_or_default());
    if let Some(j) = &mut json {
        j.out.finish();
    }
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

/// Every output of a run, opened (or checked, for those written at the end) before the first
/// packet is read: detection with its alerts, evidence and metrics, the evidence rings the
/// workers record into, the events sink.
fn open_outputs(
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
    let json = match events {
        Some(p) => Some(JsonLinesSink::new(OutputFile::open(
            OutputKind::Events,
            p,
            Arc::clone(health),
        )?)),
        None => None,
    };
    Ok((detection, rings, json))
}

/// The evidence rings of a run, one per worker.
type EvidenceRings = Vec<Arc<std::sync::Mutex<otwatch::output::evidence::EvidenceRing>>>;
/// Detection (with alerts, evidence and metrics), the evidence rings, the events sink.
type RunOutputs = (
    Option<Detection>,
    Option<EvidenceRings>,
    Option<JsonLinesSink>,
);

/// A run whose outputs failed exits non-zero, whatever else went well.
fn outputs_exit(health: &OutputHealth, code: ExitCode) -> ExitCode {
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
fn learning_warning(det: &Detection, detect: &DetectArgs) -> Option<String> {
    let engine = det.engine.as_ref()?;
    let window = detect.learn.as_deref()?;
    engine.is_learning().then(|| {
        format!("  warning: the capture ended inside the learning window (--learn {window}): nothing was detected; learn for less, or learn once and detect with --baseline\n")
    })
}

/// Where live packets come from.
enum LiveSource {
    Ring(otwatch::capture::afpacket::AfPacketSource),
    #[cfg(feature = "libpcap")]
    Pcap(otwatch::capture::libpcap::PcapSource),
}

fn open_live(
    iface: &str,
    opts: otwatch::capture::afpacket::AfPacketOptions,
    libpcap: bool,
    bpf: Option<&str>,
) -> Result<LiveSource, String> {
    if libpcap {
        #[cfg(feature = "libpcap")]
        return otwatch::capture::libpcap::PcapSource::open(iface, bpf, opts.promiscuous)
            .map(LiveSource::Pcap);
        #[cfg(not(feature = "libpcap"))]
        {
            let _ = bpf;
            return Err("this build has no libpcap support (--libpcap, --bpf): rebuild with `--features libpcap`".into());
        }
    }
    otwatch::capture::afpacket::AfPacketSource::open(iface, opts)
        .map(LiveSource::Ring)
        .map_err(|e| e.to_string())
}

/// The capture counters of a live source, for the metrics.
fn live_counters(source: &mut LiveSource) -> otwatch::metrics::LiveCounters {
    match source {
        LiveSource::Ring(r) => {
            let l = r.stats();
            otwatch::metrics::LiveCounters {
                kernel_drops: l.kernel_drops,
                ring_freezes: l.kernel_freeze_q_cnt,
                queue_drops: 0,
            }
        }
        #[cfg(feature = "libpcap")]
        LiveSource::Pcap(p) => {
            let l = p.stats();
            otwatch::metrics::LiveCounters {
                kernel_drops: l.dropped + l.if_dropped,
                ring_freezes: 0,
                queue_drops: 0,
            }
        }
    }
}

/// Live options beyond the capture source.
struct LiveOptions {
    user: Option<String>,
    workers: usize,
    detect: DetectArgs,
    metrics: MetricsArgs,
}

fn run_live(
    iface: &str,
    mut source: LiveSource,
    events: Option<PathBuf>,
    quiet: bool,
    opts: &LiveOptions,
) -> ExitCode {
    let (user, detect, metrics) = (opts.user.clone(), &opts.detect, &opts.metrics);
    if opts.workers > 1 && !matches!(source, LiveSource::Ring(_)) {
        return fail("--workers needs the AF_PACKET ring (drop --libpcap/--bpf)");
    }
    otwatch::signals::install();
    let health = Arc::new(OutputHealth::default());
    // Files and the metrics socket are opened before privileges are dropped.
    let (mut detection, mut rings, mut json) = match open_outputs(
        detect,
        metrics,
        None,
        events.as_ref(),
        &health,
        opts.workers,
    ) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let mut pipeline = Pipeline::new();
    pipeline.evidence = rings.as_ref().and_then(|r| r.first().cloned());
    if let Some(user) = user {
        if let Err(e) = become_user(&user, json.as_ref(), detection.as_ref(), detect) {
            return fail(e);
        }
    }
    // From here on the capture socket cannot send, on any thread (and no-new-privileges).
    let capture_fd = match &source {
        LiveSource::Ring(r) => r.raw_fd(),
        #[cfg(feature = "libpcap")]
        LiveSource::Pcap(p) => p.raw_fd(),
    };
    if let Err(e) = otwatch::capture::harden::deny_transmit(&[capture_fd]) {
        return fail(e);
    }
    if !quiet {
        eprintln!("otwatch: capturing on {iface} (passive: transmitting on the capture socket is refused)");
    }
    if let Some(w) = otwatch::capture::afpacket::link_warning(iface) {
        eprintln!("otwatch: warning: {w}");
    }
    let mut null = NullSink;
    let inner: &mut dyn EventSink = match &mut json {
        Some(j) => j,
        None => &mut null,
    };
    let name: std::sync::Arc<str> = std::sync::Arc::from(format!("live:{iface}").as_str());
    let start = std::time::Instant::now();
    let mut error = None;
    let mut fanout = None;
    let mut open_at_end = 0;
    if let (true, LiveSource::Ring(r)) = (opts.workers > 1, &mut source) {
        let mut stage = otwatch::shards::Stage {
            detection: detection.as_mut(),
            events: inner,
        };
        fanout = Some(otwatch::live::run_fanout_stage(
            r,
            opts.workers,
            &name,
            &mut stage,
            &otwatch::signals::STOP,
            rings.take(),
        ));
    } else {
        let mut detect_sink;
        let sink: &mut dyn EventSink = match &mut detection {
            Some(det) => {
                detect_sink = DetectSink {
                    detection: det,
                    inner,
                };
                &mut detect_sink
            }
            None => inner,
        };
        let mut last_counters = std::time::Instant::now();
        while !otwatch::signals::stop_requested() {
            if last_counters.elapsed() >= std::time::Duration::from_secs(1) {
                last_counters = std::time::Instant::now();
                sink.live_counters(live_counters(&mut source));
            }
            let next = match &mut source {
                LiveSource::Ring(r) => r
                    .next_packet_timeout(std::time::Duration::from_millis(100))
                    .map_err(|e| e.to_string()),
                #[cfg(feature = "libpcap")]
                LiveSource::Pcap(p) => p.next_packet_timeout(),
            };
            match next {
                Ok(Some(pkt)) => {
                    pipeline.process(&pkt, &name, sink);
                    sink.after_packet(&pipeline.stats, pipeline.active_flows(), pkt.ts_nanos);
                }
                Ok(None) => {
                    // A quiet link: the clock still moves (timeouts, silent devices).
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as i64);
                    sink.tick(now);
                    sink.after_packet(&pipeline.stats, pipeline.active_flows(), now);
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        open_at_end = pipeline.active_flows();
        pipeline.finish(sink);
    }
    let active = match &fanout {
        Some(f) => f.active_flows,
        None => open_at_end,
    };
    let (captured, drops, freezes) = match &mut source {
        LiveSource::Ring(r) => {
            let l = r.stats();
            (l.packets, l.kernel_drops, l.kernel_freeze_q_cnt)
        }
        #[cfg(feature = "libpcap")]
        LiveSource::Pcap(p) => {
            let l = p.stats();
            (l.received, l.dropped + l.if_dropped, 0)
        }
    };
    let stats = match &mut fanout {
        Some(f) => {
            if let Some(e) = f.error.take() {
                error = Some(e.to_string());
            }
            f.stats.clone()
        }
        None => pipeline.stats.clone(),
    };
    let report = replay::ReplayReport {
        interrupted: false,
        files: Vec::new(),
        stats,
        elapsed: start.elapsed(),
        active_flows_at_end: active,
    };
    let mut code = ExitCode::SUCCESS;
    if let Some(det) = &mut detection {
        if let (Some(m), Some(f)) = (&mut det.metrics, &fanout) {
            m.workers = f.worker_packets.clone();
            if let Some(l) = &mut m.live {
                l.queue_drops = f.queue_drops;
            }
        }
        if let Err(e) = det.finish_metrics(&report.stats, active) {
            code = fail(format_args!("writing metrics: {e}"));
        }
    }
    let det_summary = finish_detection(detection.as_mut(), detect);
    if let Some(j) = &mut json {
        j.out.finish();
    }
    if !quiet {
        let text = summary::render(&report, &format!("otwatch live on {iface}:"));
        let _ = std::io::stderr().write_all(text.as_bytes());
        let _ = writeln!(
            std::io::stderr(),
            "  capture: {captured} packets received, kernel drops {drops}, ring freezes {freezes}"
        );
        if let Some(f) = &fanout {
            let per: Vec<String> = f.worker_packets.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(
                std::io::stderr(),
                "  workers: {} (packets {}), queue-full drops {}",
                f.worker_packets.len(),
                per.join(" / "),
                f.queue_drops
            );
        }
        let _ = std::io::stderr().write_all(det_summary.as_bytes());
        let _ = std::io::stderr().write_all(outputs_summary(json.as_ref(), &health).as_bytes());
    }
    if let Some(e) = error {
        code = fail(e);
    }
    outputs_exit(&health, code)
}

/// Drops privileges to `user`, after giving it the outputs it must write later: the events
/// and alerts files (reopened on SIGHUP) and the evidence directory. Then checks, as that
/// user, that every late output can still be written.
fn become_user(
    user: &str,
    events: Option<&JsonLinesSink>,
    detection: Option<&Detection>,
    detect: &DetectArgs,
) -> Result<(), String> {
    use otwatch::capture::afpacket::{drop_privileges, lookup_user};
    let (uid, gid) = lookup_user(user)?;
    if otwatch::capture::harden::is_root() {
        // Through the open descriptors: a path swapped for a symlink meanwhile is not followed.
        if let Some(j) = events {
            j.out
                .chown(uid, gid)
                .map_err(|e| format!("--events: cannot hand it to user {user}: {e}"))?;
        }
        if let Some(d) = detection {
            d.chown_outputs(uid, gid)
                .map_err(|e| format!("alerts/evidence: cannot hand them to user {user}: {e}"))?;
        }
    }
    drop_privileges(user)?;
    check_late_outputs(detect, None).map_err(|e| format!("{e} (as user {user})"))?;
    if let Some(dir) = &detect.evidence {
        otwatch::output::check_dir_writable(dir)
            .map_err(|e| format!("--evidence: {e} (as user {user})"))?;
    }
    Ok(())
}
