use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use otwatch::event::{EventSink, JsonLinesSink, NullSink};
use otwatch::pipeline::Pipeline;
use otwatch::{replay, summary};

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
        #[arg(long, default_value_t = 1, value_name = "N")]
        workers: usize,
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay {
            pcaps,
            events,
            quiet,
            workers,
        } => run_replay(&pcaps, events, quiet, workers),
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
            run_live(&interface, source, events, quiet, user)
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("otwatch: error: {msg}");
    ExitCode::FAILURE
}

fn run_replay(pcaps: &[PathBuf], events: Option<PathBuf>, quiet: bool, workers: usize) -> ExitCode {
    let mut pipeline = Pipeline::new();
    let mut run = |sink: &mut dyn EventSink| {
        if workers > 1 {
            otwatch::parallel::replay_parallel(pcaps, sink, workers)
        } else {
            replay::replay(pcaps, sink, &mut pipeline)
        }
    };
    let (report, sink_result) = match events {
        None => {
            let mut sink = NullSink;
            (run(&mut sink), Ok(()))
        }
        Some(path) if path.as_os_str() == "-" => {
            let stdout = std::io::stdout().lock();
            let mut sink = JsonLinesSink::new(BufWriter::with_capacity(1 << 16, stdout));
            let r = run(&mut sink);
            (r, sink.finish())
        }
        Some(path) => {
            let file = match File::create(&path) {
                Ok(f) => f,
                Err(e) => return fail(format_args!("{}: cannot create: {e}", path.display())),
            };
            let mut sink = JsonLinesSink::new(BufWriter::with_capacity(1 << 16, file));
            let r = run(&mut sink);
            (
                r,
                sink.finish()
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            )
        }
    };
    if !quiet {
        let _ = std::io::stderr().write_all(summary::render(&report).as_bytes());
    }
    let mut code = ExitCode::SUCCESS;
    match sink_result {
        Ok(()) => {}
        // The reader went away (`| head`): not our error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => code = fail(format_args!("writing events: {e}")),
    }
    for e in report.errors() {
        code = fail(e);
    }
    code
}

/// Set by SIGINT/SIGTERM; the capture loop checks it between packets (at least every 100 ms).
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; sigaction is
    // given a zeroed, fully initialised struct.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
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

fn run_live(
    iface: &str,
    mut source: LiveSource,
    events: Option<PathBuf>,
    quiet: bool,
    user: Option<String>,
) -> ExitCode {
    use otwatch::capture::afpacket::drop_privileges;
    if let Some(user) = user {
        if let Err(e) = drop_privileges(&user) {
            return fail(e);
        }
    }
    install_signal_handlers();
    let writer: Box<dyn Write> = match &events {
        None => Box::new(std::io::sink()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdout()),
        Some(p) => match File::create(p) {
            Ok(f) => Box::new(f),
            Err(e) => return fail(format_args!("{}: cannot create: {e}", p.display())),
        },
    };
    let mut json = JsonLinesSink::new(BufWriter::with_capacity(1 << 16, writer));
    let mut null = NullSink;
    let sink: &mut dyn EventSink = if events.is_some() {
        &mut json
    } else {
        &mut null
    };
    let name: std::sync::Arc<str> = std::sync::Arc::from(format!("live:{iface}").as_str());
    let mut pipeline = Pipeline::new();
    let start = std::time::Instant::now();
    let mut error = None;
    while !STOP.load(std::sync::atomic::Ordering::Relaxed) {
        let next = match &mut source {
            LiveSource::Ring(r) => r
                .next_packet_timeout(std::time::Duration::from_millis(100))
                .map_err(|e| e.to_string()),
            #[cfg(feature = "libpcap")]
            LiveSource::Pcap(p) => p.next_packet_timeout(),
        };
        match next {
            Ok(Some(pkt)) => pipeline.process(&pkt, &name, sink),
            Ok(None) => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let active = pipeline.active_flows();
    pipeline.finish(sink);
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
    let report = replay::ReplayReport {
        files: Vec::new(),
        stats: pipeline.stats.clone(),
        elapsed: start.elapsed(),
        active_flows_at_end: active,
    };
    let written = json.finish();
    if !quiet {
        let text = summary::render(&report).replacen(
            "otwatch replay: 0 file(s),",
            &format!("otwatch live on {iface}:"),
            1,
        );
        let _ = std::io::stderr().write_all(text.as_bytes());
        let _ = writeln!(
            std::io::stderr(),
            "  capture: {captured} packets received, kernel drops {drops}, ring freezes {freezes}"
        );
    }
    let mut code = ExitCode::SUCCESS;
    if let Err(e) = written {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            code = fail(format_args!("writing events: {e}"));
        }
    }
    if let Some(e) = error {
        code = fail(e);
    }
    code
}
