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
