//! `otwatch replay`: read capture files through the pipeline, in order, losslessly.
//! The files are one [`crate::run::Feed`] (`FileFeed`), for one worker and for N.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::file::FileCursor;
use crate::capture::{CaptureError, CaptureFile, PacketSource};
use crate::event::EventSink;
use crate::pipeline::Pipeline;
use crate::run::Inline;
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
    let sources = source_names(files);
    let slots = files.iter().map(|p| Slot::Path(p.clone())).collect();
    let mut feed = FileFeed::new(files, &sources, slots, speed);
    let mut inline = Inline::new(pipeline, sink);
    inline.run(&mut feed);
    let active = inline.pipeline().active_flows();
    inline.finish();
    ReplayReport {
        interrupted: feed.interrupted,
        files: feed.reports,
        stats: pipeline.stats.clone(),
        elapsed: start.elapsed(),
        active_flows_at_end: active,
    }
}

/// Each file's name as the events and alerts give it.
pub(crate) fn source_names(files: &[PathBuf]) -> Vec<Arc<str>> {
    files
        .iter()
        .map(|p| Arc::from(p.to_string_lossy().as_ref()))
        .collect()
}

/// Where a packet lies in the files of a replay, for a worker to read its bytes in place.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    /// Index of the file in the replay.
    pub file: usize,
    pub offset: usize,
    pub len: usize,
    pub orig_len: u32,
    pub ts_nanos: i64,
    pub frame: u64,
    pub linktype: crate::capture::LinkType,
}

/// A file of the replay, before it is reached.
pub(crate) enum Slot<'a> {
    /// Opened when reached, and streamed (one worker: a gzip capture of any size).
    Path(PathBuf),
    /// Opened beforehand, its bytes shared with the workers: the bytes and the cursor over
    /// them (`None`: nothing to read), or why it could not be opened.
    Split(Result<Option<(&'a [u8], &'a mut FileCursor)>, CaptureError>),
}

/// The file being read.
enum Current<'a> {
    Streaming(CaptureFile),
    Split(&'a [u8], &'a mut FileCursor),
}

/// The files of a replay, in order, as one feed.
pub(crate) struct FileFeed<'a> {
    paths: &'a [PathBuf],
    sources: &'a [Arc<str>],
    slots: std::vec::IntoIter<Slot<'a>>,
    current: Option<Current<'a>>,
    speed: Option<f64>,
    /// Capture time and wall time of the first packet, for pacing.
    pace_origin: Option<(i64, Instant)>,
    /// Capture time where the previous file ended: a file that starts before it is a different
    /// capture, not a continuation, and its flows must not be stitched onto the previous ones.
    previous_end: Option<i64>,
    /// Packets read from the current file.
    n: u64,
    file_start: Instant,
    pb: Option<indicatif::ProgressBar>,
    pub(crate) reports: Vec<FileReport>,
    pub(crate) interrupted: bool,
}

impl<'a> FileFeed<'a> {
    pub(crate) fn new(
        paths: &'a [PathBuf],
        sources: &'a [Arc<str>],
        slots: Vec<Slot<'a>>,
        speed: Option<f64>,
    ) -> Self {
        FileFeed {
            paths,
            sources,
            slots: slots.into_iter(),
            current: None,
            // As fast as possible unless the factor is a positive number.
            speed: speed.filter(|s| *s > 0.0 && s.is_finite()),
            pace_origin: None,
            previous_end: None,
            n: 0,
            file_start: Instant::now(),
            pb: None,
            reports: Vec::with_capacity(paths.len()),
            interrupted: false,
        }
    }

    /// Moves to the next file that opens; false when there is none.
    fn open_next(&mut self) -> bool {
        loop {
            let Some(slot) = self.slots.next() else {
                return false;
            };
            let path = self.paths[self.reports.len()].clone();
            let opened = match slot {
                Slot::Path(p) => CaptureFile::open(&p).map(|c| Some(Current::Streaming(c))),
                Slot::Split(r) => r.map(|s| s.map(|(data, cursor)| Current::Split(data, cursor))),
            };
            self.reports.push(FileReport {
                path,
                packets: 0,
                error: None,
            });
            match opened {
                Ok(Some(c)) => {
                    if let Current::Streaming(cap) = &c {
                        self.pb = progress_bar(cap.progress().1.unwrap_or(0));
                        if let Some(pb) = &self.pb {
                            pb.set_prefix(
                                self.paths[self.reports.len() - 1]
                                    .file_name()
                                    .map(|n| n.to_string_lossy().into_owned())
                                    .unwrap_or_default(),
                            );
                        }
                    }
                    self.current = Some(c);
                    self.n = 0;
                    self.file_start = Instant::now();
                    return true;
                }
                Ok(None) => {}
                Err(e) => {
                    if let Some(r) = self.reports.last_mut() {
                        r.error = Some(e);
                    }
                }
            }
        }
    }

    /// The current file ended (or broke, with `error`): its report is complete.
    fn close_current(&mut self, error: Option<CaptureError>) {
        let packets = match self.current.take() {
            Some(Current::Streaming(cap)) => cap.packets(),
            Some(Current::Split(_, cursor)) => cursor.packets(),
            None => 0,
        };
        if let Some(pb) = self.pb.take() {
            pb.finish_and_clear();
        }
        if let Some(r) = self.reports.last_mut() {
            r.packets = packets;
            if error.is_some() {
                r.error = error;
            }
        }
    }
}

/// Waits until the packet at `ts` is due (`--speed`); `origin`: capture time and wall time of
/// the first packet.
fn pace(speed: f64, origin: &mut Option<(i64, Instant)>, ts: i64) {
    let (t0, w0) = *origin.get_or_insert((ts, Instant::now()));
    let due = (ts.saturating_sub(t0)).max(0) as f64 / speed;
    let due = Duration::from_nanos(due.min(u64::MAX as f64) as u64);
    // In steps, so that a stop is not kept waiting by a long gap.
    while let Some(wait) = due.checked_sub(w0.elapsed()) {
        if crate::signals::stop_requested() {
            break;
        }
        std::thread::sleep(wait.min(Duration::from_millis(100)));
    }
}

impl crate::run::Feed for FileFeed<'_> {
    type Handle = Desc;

    #[inline]
    fn next<T>(&mut self, _wait: Duration, mut f: T) -> bool
    where
        T: FnMut(crate::run::Next<'_, Desc>) -> Option<Desc>,
    {
        loop {
            if self.current.is_none() && !self.open_next() {
                return false;
            }
            if crate::signals::stop_requested() {
                // What was read is reported; the files after it are not.
                self.interrupted = true;
                self.close_current(None);
                return false;
            }
            let file = self.reports.len() - 1;
            if self.pb.is_some() && self.n > 0 && self.n.is_multiple_of(8192) {
                if let (Some(pb), Some(Current::Streaming(cap))) = (&self.pb, &self.current) {
                    pb.set_position(cap.progress().0);
                    let secs = self.file_start.elapsed().as_secs_f64().max(1e-9);
                    pb.set_message(format!("{:.0} packets/s", self.n as f64 / secs));
                }
            }
            let base = match &self.current {
                Some(Current::Split(data, _)) => Some(data.as_ptr() as usize),
                _ => None,
            };
            // Not in a tuple with `base`: the packet is then written where the reader made it,
            // not copied whole right after (a store-forwarding stall a packet).
            let next = match &mut self.current {
                Some(Current::Streaming(cap)) => cap.next_packet(),
                Some(Current::Split(data, cursor)) => cursor.next_in(data),
                None => None,
            };
            let pkt = match next {
                Some(Ok(ref pkt)) => pkt,
                Some(Err(e)) => {
                    self.close_current(Some(e));
                    continue;
                }
                None => {
                    self.close_current(None);
                    continue;
                }
            };
            let restart = self.n == 0 && self.previous_end.is_some_and(|end| pkt.ts_nanos < end);
            self.previous_end = Some(pkt.ts_nanos);
            self.n += 1;
            let offset = base.map_or(0, |b| pkt.data.as_ptr() as usize - b);
            if let Some(speed) = self.speed {
                pace(speed, &mut self.pace_origin, pkt.ts_nanos);
            }
            let handle = Desc {
                file,
                offset,
                len: pkt.data.len(),
                orig_len: pkt.orig_len,
                ts_nanos: pkt.ts_nanos,
                frame: pkt.frame,
                linktype: pkt.linktype,
            };
            f(crate::run::Next::Packet {
                pkt,
                source: &self.sources[file],
                handle,
                restart,
            });
            return true;
        }
    }
}
