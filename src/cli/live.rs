//! `otwatch live`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use otwatch::detection::{DetectSink, Detection};
use otwatch::event::{EventSink, JsonLinesSink, NullSink};
use otwatch::output::OutputHealth;
use otwatch::pipeline::Pipeline;
use otwatch::run::{Feed, Inline, Next};
use otwatch::{replay, summary};

use super::outputs::*;
use super::{DetectArgs, MetricsArgs};

/// Where live packets come from.
pub(crate) enum LiveSource {
    Ring(otwatch::capture::afpacket::AfPacketSource),
    #[cfg(feature = "libpcap")]
    Pcap(otwatch::capture::libpcap::PcapSource),
}

pub(crate) fn open_live(
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
pub(crate) fn live_counters(source: &mut LiveSource) -> otwatch::metrics::LiveCounters {
    match source {
        LiveSource::Ring(r) => {
            let l = r.stats();
            otwatch::metrics::LiveCounters {
                kernel_drops: l.kernel_drops,
                ring_freezes: l.kernel_freeze_q_cnt,
                queue_drops: 0,
                unread_at_stop: 0,
            }
        }
        #[cfg(feature = "libpcap")]
        LiveSource::Pcap(p) => {
            let l = p.stats();
            otwatch::metrics::LiveCounters {
                kernel_drops: l.dropped + l.if_dropped,
                ring_freezes: 0,
                queue_drops: 0,
                unread_at_stop: 0,
            }
        }
    }
}

/// A live source read on the capture thread (one worker): AF_PACKET or libpcap.
struct LiveFeed<'a> {
    source: &'a mut LiveSource,
    name: &'a std::sync::Arc<str>,
    drain: otwatch::live::StopDrain,
    error: Option<String>,
}

impl Feed for LiveFeed<'_> {
    type Handle = ();
    const LIVE: bool = true;

    fn next<T>(&mut self, wait: std::time::Duration, mut f: T) -> bool
    where
        T: FnMut(Next<'_, ()>) -> Option<()>,
    {
        let Some(wait) = self.drain.wait(otwatch::signals::stop_requested(), wait) else {
            return false;
        };
        let next = match &mut *self.source {
            LiveSource::Ring(r) => r.next_packet_timeout(wait).map_err(|e| e.to_string()),
            #[cfg(feature = "libpcap")]
            LiveSource::Pcap(p) => p.next_packet_timeout(),
        };
        match next {
            Ok(Some(ref pkt)) => {
                self.drain.frame();
                f(Next::Packet {
                    pkt,
                    source: self.name,
                    handle: (),
                    restart: false,
                });
                true
            }
            Ok(None) => {
                // A quiet link: the clock still moves (timeouts, silent devices).
                f(Next::Idle);
                true
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    fn counters(&mut self) -> Option<otwatch::metrics::LiveCounters> {
        Some(live_counters(self.source))
    }
}

/// Live options beyond the capture source.
pub(crate) struct LiveOptions {
    pub(crate) user: Option<String>,
    pub(crate) workers: usize,
    pub(crate) detect: DetectArgs,
    pub(crate) metrics: MetricsArgs,
}

pub(crate) fn run_live(
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
    if let Some(w) = otwatch::cpus::spread_warning_here(opts.workers) {
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
        let mut feed = LiveFeed {
            source: &mut source,
            name: &name,
            drain: otwatch::live::StopDrain::default(),
            error: None,
        };
        let mut inline = Inline::new(&mut pipeline, sink);
        inline.run(&mut feed);
        error = feed.error.take();
        open_at_end = inline.pipeline().active_flows();
        inline.finish();
    }
    let active = match &fanout {
        Some(f) => f.active_flows,
        None => open_at_end,
    };
    // Read once reading is over: what the kernel put in the ring and nobody read (a busy link
    // past the stop's drain, or frames that came while the outputs finished) is said, not
    // hidden in the packets received.
    let (captured, drops, freezes, unread) = match &mut source {
        LiveSource::Ring(r) => {
            let l = r.stats();
            (l.packets, l.kernel_drops, l.kernel_freeze_q_cnt, l.unread())
        }
        #[cfg(feature = "libpcap")]
        LiveSource::Pcap(p) => {
            let l = p.stats();
            (l.received, l.dropped + l.if_dropped, 0, 0)
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
    if let Some(m) = detection.as_mut().and_then(|d| d.metrics.as_mut()) {
        // The capture's final counters, whatever the last once-a-second update held: the end
        // of the run's publication, push and file count every drop the summary does.
        m.live = Some(otwatch::metrics::LiveCounters {
            kernel_drops: drops,
            ring_freezes: freezes,
            queue_drops: fanout.as_ref().map_or(0, |f| f.queue_drops),
            unread_at_stop: unread,
        });
        if let Some(f) = &fanout {
            m.workers = f.worker_packets.clone();
        }
    }
    let det_summary = finish_outputs(
        detection.as_mut(),
        json.as_mut(),
        detect,
        &report.stats,
        active,
        &health,
        &[],
    );
    if !quiet {
        let text = summary::render(&report, &format!("otwatch live on {iface}:"));
        let _ = std::io::stderr().write_all(text.as_bytes());
        let unread = if unread > 0 {
            format!(", left in the ring at the stop {unread}")
        } else {
            String::new()
        };
        let _ = writeln!(
            std::io::stderr(),
            "  capture: {captured} packets received, kernel drops {drops}, ring freezes {freezes}{unread}"
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
    if report.stats.worker_panics > 0 {
        code = fail(format_args!(
            "{} packet(s) made a worker panic (a bug: please report it); capture went on",
            report.stats.worker_panics
        ));
    }
    outputs_exit(&health, code)
}

/// Drops privileges to `user`, after giving it the outputs it must write later: the events
/// and alerts files (reopened on SIGHUP) and the evidence directory. Then checks, as that
/// user, that every late output can still be written.
pub(crate) fn become_user(
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
