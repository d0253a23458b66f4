//! The command line: flags, and nothing else (main.rs dispatches, the other files here run
//! the commands).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use otwatch::duration::parse_duration;

pub(crate) mod config;
pub(crate) mod live;
pub(crate) mod outputs;
pub(crate) mod replay;

/// Passive monitor for industrial (OT) networks: Modbus/TCP, DNP3, S7comm, IEC 60870-5-104,
/// EtherNet/IP.
#[derive(Parser)]
#[command(name = "otwatch", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Replay pcap/pcapng captures (plain or gzip) through the dissectors.
    // A flag given twice takes its last value: `--config`'s flags come first, so the command
    // line's own win.
    #[command(args_override_self = true)]
    Replay {
        /// Capture files, read in the order given (flows continue across them).
        #[arg(required = true, value_name = "PCAP")]
        pcaps: Vec<PathBuf>,
        /// Write one JSON object per protocol PDU (JSON Lines) to PATH, or to stdout with `-`.
        #[arg(long, value_name = "PATH|-")]
        events: Option<PathBuf>,
        /// Do not print the summary on stderr (`--quiet=false` undoes `quiet = true` of `--config`).
        #[arg(long, short, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
        quiet: bool,
        /// Dissect with N worker threads. Each owns the flows between the host pairs given to
        /// it (at a pair's first packet, the worker of its server if another pair gave the
        /// server one, else the least-loaded; docs/pipeline.md has the details) and, once
        /// learning has ended, checks their
        /// channels; one more thread reads, puts the workers' output back in capture order and
        /// keeps what spans channels, so events and alerts are those of one worker.
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
    #[command(args_override_self = true)]
    /// Capture live from an interface (a SPAN/mirror port) through an AF_PACKET ring. Passive:
    /// the socket never transmits. Stops on SIGINT/SIGTERM, flushing events and the summary.
    Live {
        /// Interface to capture on.
        #[arg(short, long, value_name = "IFACE")]
        interface: String,
        /// Write one JSON object per protocol PDU (JSON Lines) to PATH, or to stdout with `-`.
        #[arg(long, value_name = "PATH|-")]
        events: Option<PathBuf>,
        /// Do not print the summary on stderr (`--quiet=false` undoes `quiet = true` of `--config`).
        #[arg(long, short, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
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
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
        no_promiscuous: bool,
        /// Capture through libpcap instead of the AF_PACKET ring (builds with `--features libpcap`).
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
        libpcap: bool,
        /// BPF filter (tcpdump syntax); implies --libpcap.
        #[arg(long, value_name = "EXPR")]
        bpf: Option<String>,
        /// Dissect with N worker threads fed from the ring without copying (the capture thread
        /// gives each host pair a worker, a worker whose queue is full loses the packet, counted;
        /// it merges their output back into capture order; the workers check their channels).
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_workers)]
        workers: usize,
        #[command(flatten)]
        detect: DetectArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
}

/// The most `--workers`: each has queues of its own (two of 8192 items), and a worker is a
/// thread that wants a core.
pub const MAX_WORKERS: usize = 1024;

/// `--workers`: at least one, at most [`MAX_WORKERS`].
pub(crate) fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0 workers would dissect nothing: give at least 1".into()),
        Ok(n) if n > MAX_WORKERS => Err(format!(
            "{n} workers: at most {MAX_WORKERS} (more threads than cores only wait on each other)"
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?}: expected a number of worker threads")),
    }
}

/// `--learn`: a duration longer than zero.
pub(crate) fn parse_learn(s: &str) -> Result<String, String> {
    match parse_duration(s)? {
        0 => Err(
            "a learning window of 0 learns nothing: give a duration such as 10m, or use --baseline"
                .into(),
        ),
        _ => Ok(s.to_string()),
    }
}

/// `--sensor-name`: not empty (an empty label value is no label in Prometheus: sensors would
/// merge).
pub(crate) fn parse_sensor(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err("the sensor's name cannot be empty".into()),
        _ => Ok(s.to_string()),
    }
}

/// A push interval: a duration longer than zero.
pub(crate) fn parse_interval(s: &str) -> Result<String, String> {
    match parse_duration(s)? {
        0 => Err("an interval of 0 would push without pause: give a duration such as 15s".into()),
        _ => Ok(s.to_string()),
    }
}

/// Metrics options, shared by `replay` and `live` (docs/metrics.md).
#[derive(clap::Args, Default)]
pub(crate) struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics: `PORT` binds loopback, `HOST:PORT` binds
    /// as given.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<String>,
    /// Per-channel series at most; observations of further channels are counted in
    /// otwatch_metrics_channels_overflow_total.
    #[arg(long, default_value_t = otwatch::metrics::DEFAULT_MAX_CHANNELS, value_name = "N")]
    pub(crate) metrics_max_channels: usize,
    /// TLS and basic auth for /metrics: a Prometheus exporter-toolkit web config (YAML, as
    /// node_exporter's --web.config.file).
    #[arg(
        long,
        value_name = "FILE",
        requires = "metrics",
        alias = "web.config.file"
    )]
    pub(crate) web_config: Option<PathBuf>,
    /// Push the metrics to a Prometheus remote-write receiver (remote-write 1.0), e.g.
    /// http://prometheus:9090/api/v1/write: for sensors that may not be scraped from outside.
    #[arg(long, value_name = "URL")]
    pub(crate) remote_write: Option<String>,
    /// The CA (PEM) that signed an https receiver's certificate (default: the public roots).
    #[arg(long, value_name = "FILE", requires = "remote_write")]
    pub(crate) remote_write_ca: Option<PathBuf>,
    /// How often to push, in wall-clock time (default 15s); the last values are pushed at the end.
    #[arg(long, value_name = "DURATION", requires = "remote_write", value_parser = parse_interval)]
    pub(crate) remote_write_interval: Option<String>,
}

/// `realtime`, `max` or a positive factor.
pub(crate) fn parse_speed(s: &str) -> Result<Option<f64>, String> {
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
pub(crate) enum BaselineCommand {
    /// What a baseline holds, for a person.
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Detection options, shared by `replay` and `live`. Detection runs when any of them is given.
#[derive(clap::Args, Default)]
pub(crate) struct DetectArgs {
    /// Read these flags from a TOML file (contrib/otwatch.toml is the commented example); a flag
    /// on the command line overrides the file's.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Write alerts (JSON Lines, docs/alerts.md) to PATH, or to stdout with `-`.
    #[arg(long, value_name = "PATH|-")]
    pub(crate) alerts: Option<PathBuf>,
    /// Detect against this saved baseline from the first packet.
    #[arg(long, value_name = "FILE", conflicts_with = "learn")]
    pub(crate) baseline: Option<PathBuf>,
    /// Learn from the first DURATION of capture time (e.g. 10m, 2h), then detect.
    #[arg(long, value_name = "DURATION", value_parser = parse_learn)]
    pub(crate) learn: Option<String>,
    /// Save the baseline in use at the end (learned, or the one loaded).
    #[arg(long, value_name = "FILE")]
    pub(crate) save_baseline: Option<PathBuf>,
    /// Write a small pcap of the packets behind each alert into DIR.
    #[arg(long, value_name = "DIR")]
    pub(crate) evidence: Option<PathBuf>,
    /// This sensor's name, on every alert and event line (`sensor`). Default: the host's name.
    #[arg(long, value_name = "NAME", value_parser = parse_sensor)]
    pub(crate) sensor_name: Option<String>,
    /// Send every alert line to a syslog collector (RFC 5424): udp://HOST:PORT,
    /// tcp://HOST:PORT (RFC 6587 octet counting) or tls://HOST:PORT (with --syslog-ca).
    #[arg(long, value_name = "URL")]
    pub(crate) syslog: Option<String>,
    /// The CA (PEM) that signed the TLS collector's certificate.
    #[arg(long, value_name = "FILE", requires = "syslog")]
    pub(crate) syslog_ca: Option<PathBuf>,
    /// The syslog message body: the alert's JSON line, or CEF.
    #[arg(long, value_name = "json|cef", default_value = "json", value_parser = ["json", "cef"], requires = "syslog")]
    pub(crate) syslog_format: String,
    /// Send every event (its JSON line) to the syslog collector too, severity informational.
    #[arg(long, requires = "syslog", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) syslog_events: bool,
    /// The largest syslog message (bytes) the collector takes whole: a larger one is not sent,
    /// and counted as a failure (rsyslog takes 8 KiB by default and splits longer ones).
    #[arg(long, value_name = "BYTES", default_value_t = otwatch::output::syslog::DEFAULT_MAX_SIZE, value_parser = clap::value_parser!(u32).range(480..), requires = "syslog")]
    pub(crate) syslog_max_size: u32,
    /// The JSON of alert and event lines (files and syslog): otwatch's own (docs/alerts.md,
    /// docs/events.md), or Suricata EVE (docs/siem.md) for pipelines that read Suricata.
    #[arg(long, value_name = "otwatch|eve", default_value = "otwatch", value_parser = ["otwatch", "eve"])]
    pub(crate) log_format: String,
}

impl DetectArgs {
    /// `--log-format eve`.
    pub(crate) fn eve(&self) -> bool {
        self.log_format == "eve"
    }

    /// `--sensor-name`, or the host's name (or `otwatch` when it has none).
    pub(crate) fn sensor(&self) -> std::sync::Arc<str> {
        let name = self.sensor_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "otwatch".into())
        });
        std::sync::Arc::from(name)
    }

    pub(crate) fn enabled(&self) -> bool {
        self.alerts.is_some()
            || self.baseline.is_some()
            || self.learn.is_some()
            || self.save_baseline.is_some()
            || self.evidence.is_some()
            || self.syslog.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_between_one_and_the_bound() {
        assert_eq!(parse_workers("1"), Ok(1));
        assert_eq!(parse_workers("1024"), Ok(MAX_WORKERS));
        assert!(parse_workers("0").is_err());
        let too_many = parse_workers("1025").expect_err("refused");
        assert!(too_many.contains("at most 1024"), "{too_many}");
        assert!(parse_workers("4294967297").is_err());
        assert!(parse_workers("two").is_err());
    }
}
