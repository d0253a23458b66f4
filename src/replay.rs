//! `otwatch replay`: read capture files through the pipeline, in order, losslessly.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::{CaptureError, CaptureFile, PacketSource};
use crate::event::EventSink;
use crate::pipeline::Pipeline;
use crate::stats::Stats;

#[derive(Debug)]
pub struct FileReport {
    pub path: PathBuf,
    pub packets: u64,
    pub error: Option<CaptureError>,
}

#[derive(Debug)]
pub struct ReplayReport {
    /// SIGINT/SIGTERM stopped the replay before the end of its input.
    pub interrupted: bool,
    pub files: Vec<FileReport>,
    pub stats: Stats,
    pub elapsed: Duration,
    pub active_flows_at_end: usize,
}

impl ReplayReport {
    pub fn errors(&self) -> impl Iterator<Item = &CaptureError> {
        self.files.iter().filter_map(|f| f.error.as_ref())
    }
}

/// Progress on stderr, only when it is a terminal.
fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ({eta})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    Some(pb)
}

/// Replay `files` in order through one pipeline (flows continue across files, as with a rotated
/// capture). A file that cannot be read, or breaks part way, is reported and the rest still run.
pub fn replay(
    files: &[PathBuf],
    sink: &mut dyn EventSink,
    pipeline: &mut Pipeline,
) -> ReplayReport {
    replay_paced(files, sink, pipeline, None)
}

/// As [`replay`], paced by the capture's timestamps: `speed` 1.0 replays in real time, 10.0 ten
/// times faster (`replay --speed`). `None`: as fast as possible.
pub fn replay_paced(
    files: &[PathBuf],
    sink: &mut dyn EventSink,
    pipeline: &mut Pipeline,
    speed: Option<f64>,
) -> ReplayReport {
    let start = Instant::now();
    // Capture time and wall time of the first packet, for pacing.
    let mut pace_origin: Option<(i64, Instant)> = None;
    let mut reports = Vec::with_capacity(files.len());
    // Capture time where the previous file ended: a file that starts before it is a different
    // capture, not a continuation, and its flows must not be stitched onto the previous ones.
    let mut previous_end: Option<i64> = None;
    let mut interrupted = false;
    for path in files {
        if interrupted {
            break;
        }
        let mut cap = match CaptureFile::open(path) {
            Ok(c) => c,
            Err(e) => {
                reports.push(FileReport {
                    path: path.clone(),
                    packets: 0,
                    error: Some(e),
                });
                continue;
            }
        };
        let source: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
        let pb = progress_bar(cap.progress().1.unwrap_or(0));
        if let Some(pb) = &pb {
            pb.set_prefix(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        let file_start = Instant::now();
        let mut error = None;
        let mut n: u64 = 0;
        loop {
            if crate::signals::stop_requested() {
                interrupted = true;
                break;
            }
            let pos = cap.progress().0;
            match cap.next_packet() {
                None => break,
                Some(Ok(pkt)) => {
                    if n == 0 && previous_end.is_some_and(|end| pkt.ts_nanos < end) {
                        pipeline.finish(sink);
                    }
                    previous_end = Some(pkt.ts_nanos);
                    if let Some(speed) = speed.filter(|s| *s > 0.0 && s.is_finite()) {
                        let (t0, w0) = *pace_origin.get_or_insert((pkt.ts_nanos, Instant::now()));
                        let due = (pkt.ts_nanos.saturating_sub(t0)).max(0) as f64 / speed;
                        let due = std::time::Duration::from_nanos(due.min(u64::MAX as f64) as u64);
                        // In steps, so that a stop is not kept waiting by a long gap.
                        while let Some(wait) = due.checked_sub(w0.elapsed()) {
                            if crate::signals::stop_requested() {
                                break;
                            }
                            std::thread::sleep(wait.min(std::time::Duration::from_millis(100)));
                        }
                    }
                    pipeline.process(&pkt, &source, sink);
                    sink.after_packet(&pipeline.stats, pipeline.active_flows(), pkt.ts_nanos);
                    n += 1;
                    if n.is_multiple_of(8192) {
                        if let Some(pb) = &pb {
                            pb.set_position(pos);
                            let secs = file_start.elapsed().as_secs_f64().max(1e-9);
                            pb.set_message(format!("{:.0} packets/s", n as f64 / secs));
                        }
                    }
                }
                Some(Err(e)) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        reports.push(FileReport {
            path: path.clone(),
            packets: cap.packets(),
            error,
        });
    }
    let active = pipeline.active_flows();
    pipeline.finish(sink);
    ReplayReport {
        interrupted,
        files: reports,
        stats: pipeline.stats.clone(),
        elapsed: start.elapsed(),
        active_flows_at_end: active,
    }
}
