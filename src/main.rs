#[global_allocator]
static GLOBAL: otwatch::alloc::MiMalloc = otwatch::alloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

use otwatch::duration::parse_duration;
use otwatch_models::Baseline;

mod cli;

use cli::live::{open_live, run_live, LiveOptions};
use cli::outputs::{fail, print_stdout};
use cli::replay::{run_replay, ReplayOptions};
use cli::{parse_speed, BaselineCommand, Cli, Command, DetectArgs};

fn main() -> ExitCode {
    let cli = match cli::config::expand(std::env::args_os().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(e) => {
            eprintln!("otwatch: error: {e}");
            return ExitCode::from(2);
        }
    };
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
