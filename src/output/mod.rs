//! Output files that never lose data quietly.
//!
//! Events and alerts are opened for append (a restart, e.g. by systemd, keeps the history, as
//! Suricata's eve.json and Zeek's logs do), reopened when SIGHUP asks for it (logrotate), and
//! flushed and fsynced on stop. Every output that fails is counted per output in
//! [`OutputHealth`]: the summary prints it, `otwatch_output_errors_total` exports it, and the run
//! exits non-zero.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub mod alerts;
pub mod eve;
pub mod evidence;
pub mod flow_ids;
pub mod json;
pub mod outbox;
pub mod remote_write;
pub mod syslog;

/// Bumped by SIGHUP: every [`OutputFile`] that saw an older value reopens its path.
static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every output file to reopen its path before its next write. Async-signal-safe (one
/// atomic add), so a SIGHUP handler may call it.
pub fn request_reopen() {
    REOPEN_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The outputs a run can have, for the counters and their metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Events,
    Alerts,
    Evidence,
    Baseline,
    OpenMetrics,
    MetricsServer,
    Syslog,
    RemoteWrite,
}

impl OutputKind {
    pub const ALL: [OutputKind; 8] = [
        OutputKind::Events,
        OutputKind::Alerts,
        OutputKind::Evidence,
        OutputKind::Baseline,
        OutputKind::OpenMetrics,
        OutputKind::MetricsServer,
        OutputKind::Syslog,
        OutputKind::RemoteWrite,
    ];

    /// The `output` label of `otwatch_output_errors_total`.
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Events => "events",
            OutputKind::Alerts => "alerts",
            OutputKind::Evidence => "evidence",
            OutputKind::Baseline => "baseline",
            OutputKind::OpenMetrics => "openmetrics",
            OutputKind::MetricsServer => "metrics_server",
            OutputKind::Syslog => "syslog",
            OutputKind::RemoteWrite => "remote_write",
        }
    }
}

/// Failures of every output of one run, shared by the threads that write them.
#[derive(Debug, Default)]
pub struct OutputHealth {
    errors: [AtomicU64; OutputKind::ALL.len()],
    /// The first failure of each output, said once on stderr when it happens.
    first: Mutex<[Option<String>; OutputKind::ALL.len()]>,
}

impl OutputHealth {
    /// Counts `n` lost writes (lines, files) of `kind`; the first failure is printed at once so
    /// an operator watching the console sees it before the summary.
    pub fn fail(&self, kind: OutputKind, n: u64, why: &dyn std::fmt::Display) {
        self.errors[kind as usize].fetch_add(n.max(1), Ordering::Relaxed);
        if let Ok(mut first) = self.first.lock() {
            let slot = &mut first[kind as usize];
            if slot.is_none() {
                let text = why.to_string();
                eprintln!(
                    "otwatch: error: {} output failed: {text} (further failures are counted)",
                    kind.name()
                );
                *slot = Some(text);
            }
        }
    }

    pub fn errors(&self, kind: OutputKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        OutputKind::ALL.iter().map(|k| self.errors(*k)).sum()
    }

    /// One line per failed output, for the summary and the exit status; empty when all went well.
    pub fn report(&self) -> Vec<String> {
        let first = self.first.lock().map(|f| f.clone()).unwrap_or_default();
        OutputKind::ALL
            .iter()
            .filter(|k| self.errors(**k) > 0)
            .map(|k| {
                let why = first[*k as usize].as_deref().unwrap_or("failed");
                format!(
                    "{} output: {} failed writes (first: {why})",
                    k.name(),
                    self.errors(*k)
                )
            })
            .collect()
    }
}

enum Target {
    File(File),
    Stdout,
    /// Benchmarks and tests: every byte accepted and dropped.
    Discard,
}

/// Bytes held before they are written out, at most.
const BUFFER: usize = 64 * 1024;

/// A line-oriented output: a file opened for append (reopened on SIGHUP), stdout, or nothing.
/// A line is either handed to the OS whole or counted as lost.
pub struct OutputFile {
    kind: OutputKind,
    path: Option<PathBuf>,
    target: Target,
    buf: Vec<u8>,
    /// Lines in `buf`.
    pending: u64,
    generation: u64,
    health: std::sync::Arc<OutputHealth>,
    /// stdout's reader went away (`| head`): what it does not read is the user's choice, not a
    /// failure.
    reader_gone: bool,
    /// Lines written out.
    pub lines: u64,
}

/// Opens `path` for append, creating it (mode 0640) if missing, never through a symlink (a
/// log directory may be writable by the dropped user, who must not be able to point the file
/// root opens at something else).
fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `buf` to a file opened for append. A write cut short (disk full) must not leave half
/// a line for the next one to be glued to: what went out of `buf` is cut off the file's end
/// again. The bytes written are counted rather than the file's length read before each write:
/// alerts are flushed after every batch, and a `fstat` each time doubled the system calls.
fn write_whole(f: &mut File, buf: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    let res = loop {
        let Some(rest) = buf.get(written..).filter(|r| !r.is_empty()) else {
            break Ok(());
        };
        match f.write(rest) {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if res.is_err() && written > 0 {
        if let Ok(m) = f.metadata() {
            if m.file_type().is_file() {
                let _ = f.set_len(m.len().saturating_sub(written as u64));
            }
        }
    }
    res
}

impl OutputFile {
    /// `-` is stdout; anything else a file opened for append.
    pub fn open(
        kind: OutputKind,
        path: &Path,
        health: std::sync::Arc<OutputHealth>,
    ) -> Result<OutputFile, String> {
        let (path, target) = if path.as_os_str() == "-" {
            (None, Target::Stdout)
        } else {
            let f = open_append(path)
                .map_err(|e| format!("{}: cannot open for writing: {e}", path.display()))?;
            (Some(path.to_path_buf()), Target::File(f))
        };
        Ok(OutputFile {
            kind,
            path,
            target,
            buf: Vec::with_capacity(BUFFER),
            pending: 0,
            generation: REOPEN_GENERATION.load(Ordering::Relaxed),
            health,
            reader_gone: false,
            lines: 0,
        })
    }

    /// An output that accepts everything and keeps nothing (benchmarks).
    pub fn discard(kind: OutputKind) -> OutputFile {
        OutputFile {
            kind,
            path: None,
            target: Target::Discard,
            buf: Vec::with_capacity(BUFFER),
            pending: 0,
            generation: 0,
            health: Default::default(),
            reader_gone: false,
            lines: 0,
        }
    }

    /// The file's path (`None` for stdout).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Hands the open file (not its path, which could be swapped meanwhile) to `uid`/`gid`,
    /// so that the dropped user can reopen it after logrotate. Only a regular file: a device
    /// such as /dev/null keeps its owner.
    pub fn chown(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        match &self.target {
            Target::File(f) if f.metadata()?.file_type().is_file() => {
                std::os::unix::fs::fchown(f, Some(uid), Some(gid))
            }
            _ => Ok(()),
        }
    }

    /// False once nobody reads any more (stdout closed by its reader).
    pub fn accepting(&self) -> bool {
        !self.reader_gone
    }

    /// Appends one line: `write` serialises it into the buffer, the newline is added here.
    pub fn line<E: std::fmt::Display>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) {
        if self.reader_gone {
            self.lost_to_gone_reader(1);
            return;
        }
        if REOPEN_GENERATION.load(Ordering::Relaxed) != self.generation {
            // Lines written before SIGHUP go to the old file, the rest to the new one.
            self.flush();
        }
        let mark = self.buf.len();
        // A serialiser that panics (a bug) must not leave half a line for the next to follow.
        struct Truncate<'a>(&'a mut Vec<u8>, usize, bool);
        impl Drop for Truncate<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    self.0.truncate(self.1);
                }
            }
        }
        let mut guard = Truncate(&mut self.buf, mark, false);
        let written = write(guard.0);
        guard.2 = true;
        drop(guard);
        match written {
            Ok(()) => {
                self.buf.push(b'\n');
                self.pending += 1;
            }
            Err(e) => {
                self.buf.truncate(mark);
                self.health.fail(self.kind, 1, &e);
                return;
            }
        }
        if self.buf.len() >= BUFFER {
            self.flush();
        }
    }

    /// Hands the buffered lines to the OS (reopening first when SIGHUP asked for it).
    pub fn flush(&mut self) {
        let generation = REOPEN_GENERATION.load(Ordering::Relaxed);
        if generation != self.generation {
            self.generation = generation;
            // What was written before the rotation belongs in the old file.
            self.write_out();
            self.reopen();
        }
        self.write_out();
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let res = match &mut self.target {
            Target::File(f) => write_whole(f, &self.buf),
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&self.buf).and_then(|()| out.flush())
            }
            Target::Discard => Ok(()),
        };
        match res {
            Ok(()) => self.lines += self.pending,
            Err(e)
                if matches!(self.target, Target::Stdout)
                    && e.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                // Events to a reader that went away (`| head`) are no longer wanted; any
                // other output's lines are lost, and counted, from here on.
                self.reader_gone = true;
                self.lost_to_gone_reader(self.pending);
            }
            Err(e) => {
                let what = format!("{}: {e}", self.describe());
                self.health.fail(self.kind, self.pending, &what);
            }
        }
        self.buf.clear();
        self.pending = 0;
    }

    /// `n` lines that stdout's reader, gone, will not get: a failure for every output but
    /// events (`--events - | head` is a way to look at the first events).
    fn lost_to_gone_reader(&self, n: u64) {
        if self.kind != OutputKind::Events {
            self.health
                .fail(self.kind, n, &"stdout: its reader went away (broken pipe)");
        }
    }

    fn describe(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "stdout".to_string(), |p| p.display().to_string())
    }

    /// Opens the path again (logrotate moved the file away). If the path cannot be opened the
    /// old file stays in use, so nothing is lost; the failure is counted.
    fn reopen(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        match open_append(&path) {
            Ok(f) => {
                if let Target::File(old) = &self.target {
                    // The lines written before the rotation reach the disk, or are counted as
                    // they are at the end of a run.
                    self.sync(old);
                }
                self.target = Target::File(f);
            }
            Err(e) => {
                let what = format!(
                    "{}: cannot reopen (still writing the old file): {e}",
                    path.display()
                );
                self.health.fail(self.kind, 1, &what);
            }
        }
    }

    /// End of run: everything written and, for a file, on disk (fsync).
    pub fn finish(&mut self) {
        self.flush();
        if let Target::File(f) = &self.target {
            self.sync(f);
        }
    }

    /// fsync, a failure counted (pipes and character devices cannot be synced: that is not
    /// lost data).
    fn sync(&self, f: &std::fs::File) {
        if let Err(e) = f.sync_all() {
            if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EROFS)) {
                let what = format!("{}: fsync: {e}", self.describe());
                self.health.fail(self.kind, 1, &what);
            }
        }
    }
}

/// Checks before any input is read that a file can later be written at `path` (the baseline,
/// the OpenMetrics file): its directory takes a new file, and the path is not a directory.
/// The check creates and removes a probe file, so it sees read-only mounts, permissions and
/// full inode tables as the real write will.
pub fn check_writable(path: &Path, what: &str) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{what} {}: is a directory", path.display()));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    check_dir_writable(dir)
        .map_err(|e| format!("{what} {}: cannot be written: {e}", path.display()))
}

/// Opens a directory itself (not a symlink to one).
pub fn open_dir(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

/// Everything written to the file system `dir` is on reaches the disk (syncfs).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = open_dir(dir)?;
    // SAFETY: syncfs on a descriptor we hold open.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Creates and removes a probe file in `dir`.
pub fn check_dir_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".otwatch-probe-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("otwatch-out-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_lines(out: &mut OutputFile, lines: &[&str]) {
        for l in lines {
            out.line(|b| {
                b.extend_from_slice(l.as_bytes());
                Ok::<(), std::io::Error>(())
            });
        }
    }

    #[test]
    fn appends_across_runs_and_reopens_on_request() {
        let dir = scratch("append");
        let path = dir.join("alerts.jsonl");
        let health = Arc::new(OutputHealth::default());
        let mut out = OutputFile::open(OutputKind::Alerts, &path, Arc::clone(&health)).unwrap();
        write_lines(&mut out, &["one"]);
        out.finish();
        // A restart appends.
        let mut out = OutputFile::open(OutputKind::Alerts, &path, Arc::clone(&health)).unwrap();
        write_lines(&mut out, &["two"]);
        out.flush();
        // logrotate: move the file away, then SIGHUP.
        let rotated = dir.join("alerts.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        write_lines(&mut out, &["three"]);
        request_reopen();
        write_lines(&mut out, &["four"]);
        out.finish();
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap(),
            "one\ntwo\nthree\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "four\n");
        assert_eq!(health.total(), 0);
        assert_eq!(out.lines, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_is_counted_per_line() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        if !Path::new("/dev/full").exists() {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED a_failed_write_is_counted_per_line: no /dev/full"
            );
            return;
        }
        let health = Arc::new(OutputHealth::default());
        let mut out = OutputFile::open(
            OutputKind::Events,
            Path::new("/dev/full"),
            Arc::clone(&health),
        )
        .unwrap();
        write_lines(&mut out, &["a", "b", "c"]);
        out.finish();
        assert_eq!(health.errors(OutputKind::Events), 3);
        assert_eq!(health.report().len(), 1);
        assert!(
            health.report()[0].contains("No space left"),
            "{:?}",
            health.report()
        );
    }

    #[test]
    fn a_serialiser_that_panics_leaves_no_half_line() {
        let dir = scratch("half-line");
        let path = dir.join("events.jsonl");
        let health = Arc::new(OutputHealth::default());
        let mut out = OutputFile::open(OutputKind::Events, &path, Arc::clone(&health)).unwrap();
        write_lines(&mut out, &["first"]);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            out.line(|b| -> Result<(), std::io::Error> {
                b.extend_from_slice(b"{\"half\":");
                panic!("a bug in a serialiser")
            })
        }));
        assert!(panicked.is_err());
        write_lines(&mut out, &["second"]);
        out.finish();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\nsecond\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writability_is_checked_before_any_input() {
        let dir = scratch("check");
        assert!(check_writable(&dir.join("baseline.json"), "--save-baseline").is_ok());
        assert!(check_writable(&dir, "--save-baseline").is_err());
        assert!(check_writable(&dir.join("missing/baseline.json"), "-o").is_err());
        // Nothing is left behind by the probe.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
