//! Evaluation against the labelled captures of ../shared/pcaps/labelled (Lemay & Fernandez
//! Modbus, QUT S7comm): learn from clean traffic of the same site, detect, and score the alerts
//! against the ground truth. Prints one row per capture (run with `--nocapture` to see it; the
//! numbers are in docs/evaluation.md) and fails if detection falls below what was measured.
//!
//! Scoring, per capture:
//! - an attack episode is detected when an alert names one of its labelled frames (every
//!   occurrence is scored: alerts are repeated on each occurrence here, with no deduplication
//!   interval);
//! - a false alert is an alert cause none of whose occurrences names a labelled frame;
//! - false alerts per hour are over the capture time after learning.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::*;
use otwatch::capture::{CaptureFile, PacketSource};
use otwatch_models::Alert;

/// Frame number → capture time, for a whole file.
fn frame_times(path: &Path) -> BTreeMap<u64, i64> {
    let mut cap = CaptureFile::open(path).expect("open");
    let mut out = BTreeMap::new();
    while let Some(p) = cap.next_packet() {
        let p = p.expect("packet");
        out.insert(p.frame, p.ts_nanos);
    }
    out
}

/// Labelled frames grouped into episodes: a gap of more than `gap_s` between labelled frames
/// starts a new one.
fn episodes(
    labelled: &BTreeSet<u64>,
    times: &BTreeMap<u64, i64>,
    gap_s: f64,
) -> Vec<BTreeSet<u64>> {
    let mut out: Vec<BTreeSet<u64>> = Vec::new();
    let mut last_ts: Option<i64> = None;
    for &f in labelled {
        let ts = times.get(&f).copied().unwrap_or(0);
        let new = last_ts.is_none_or(|l| (ts - l) as f64 / 1e9 > gap_s);
        if new {
            out.push(BTreeSet::new());
        }
        if let Some(e) = out.last_mut() {
            e.insert(f);
        }
        last_ts = Some(ts);
    }
    out
}

fn lemay_labels(path: &Path) -> BTreeSet<u64> {
    let text = std::fs::read_to_string(path).expect("labels");
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().split(';');
            let frame = it.next()?.trim().parse().ok()?;
            (it.next()?.trim() == "1").then_some(frame)
        })
        .collect()
}

fn qut_labels(path: &Path) -> BTreeSet<u64> {
    let text = std::fs::read_to_string(path).expect("labels");
    text.lines()
        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
        .collect()
}

struct Score {
    capture: String,
    learning: String,
    detected: usize,
    episodes: usize,
    causes: usize,
    false_causes: Vec<String>,
    hours_after_learning: f64,
    missed: Vec<String>,
    /// The alert types that named each detected episode.
    caught: Vec<String>,
}

fn score(
    capture: &Path,
    learning: &str,
    alerts: &[Alert],
    labelled: &BTreeSet<u64>,
    eps: &[BTreeSet<u64>],
    detect_from: i64,
) -> Score {
    let times = frame_times(capture);
    let end = times.values().copied().max().unwrap_or(0);
    let mut detected = 0;
    let mut missed = Vec::new();
    let mut caught = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        let by: BTreeSet<&str> = alerts
            .iter()
            .filter(|a| a.frames.iter().any(|f| ep.contains(f)))
            .map(|a| a.r#type)
            .collect();
        if !by.is_empty() {
            detected += 1;
            caught.push(format!("episode {} by {by:?}", i + 1));
        } else {
            let (a, b) = (
                ep.first().copied().unwrap_or(0),
                ep.last().copied().unwrap_or(0),
            );
            missed.push(format!("episode {} (frames {a}..{b})", i + 1));
        }
    }
    let mut by_cause: BTreeMap<u64, (bool, &Alert)> = BTreeMap::new();
    for a in alerts {
        let hit = a.frames.iter().any(|f| labelled.contains(f));
        let e = by_cause.entry(a.id).or_insert((false, a));
        e.0 |= hit;
    }
    let false_causes = by_cause
        .values()
        .filter(|(hit, _)| !hit)
        .map(|(_, a)| format!("{} (frames {:?}): {}", a.r#type, a.frames, a.message))
        .collect();
    Score {
        capture: capture
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        learning: learning.into(),
        detected,
        episodes: eps.len(),
        causes: by_cause.len(),
        false_causes,
        hours_after_learning: (end - detect_from).max(0) as f64 / 3.6e12,
        missed,
        caught,
    }
}

fn print(rows: &[Score]) {
    eprintln!("\n| capture | learning | episodes detected | alert causes | false alerts | capture time after learning | false alerts per hour |");
    eprintln!("|---|---|---|---|---|---|---|");
    for r in rows {
        let per_hour = if r.hours_after_learning > 0.0 {
            format!(
                "{:.1}",
                r.false_causes.len() as f64 / r.hours_after_learning
            )
        } else {
            "n/a".into()
        };
        eprintln!(
            "| {} | {} | {}/{} | {} | {} | {:.1} s | {} |",
            r.capture,
            r.learning,
            r.detected,
            r.episodes,
            r.causes,
            r.false_causes.len(),
            r.hours_after_learning * 3600.0,
            per_hour
        );
    }
    for r in rows {
        for c in &r.caught {
            eprintln!("detected: {}: {c}", r.capture);
        }
        for m in &r.missed {
            eprintln!("missed: {}: {m}", r.capture);
        }
        for f in &r.false_causes {
            eprintln!("false: {}: {f}", r.capture);
        }
    }
}

/// Frames whose label contradicts the labels around them (../shared/pcaps/labelled/README.md
/// lists the quirk), scored as attack frames.
const LABEL_ERRATA: &[(&str, u64, &str)] = &[(
    "exploit_ms08_netapi_modbus_6RTU_with_operate",
    2,
    "the attacker's first SYN to .105:4444 is labelled 0 while the RST answering it (frame 5) is 1",
)];

#[test]
fn labelled_captures() {
    let Some(dir) = corpus_dir() else { return };
    let l = dir.join("labelled");
    let mut rows = Vec::new();

    // Lemay: the site's clean traffic is moving_two_files without its labelled frames.
    let site = l.join("moving_two_files_modbus_6RTU.pcap");
    let site_labels = lemay_labels(&l.join("moving_two_files_modbus_6RTU_labeled.csv"));
    let keep = |f: u64| !site_labels.contains(&f);
    let site_baseline = learn_files(&[(&site, &keep)]);
    // moving_two_files itself: its clean prefix, frames 1-324 (10.04 s).
    {
        let times = frame_times(&site);
        let eps = episodes(&site_labels, &times, 5.0);
        let learn_s = (times[&324] - times[&1]) as f64 / 1e9 + 1e-6;
        let (alerts, _) = detect_files_realert(Learn::For(learn_s), &[(&site, &all_frames)], 0.0);
        rows.push(score(
            &site,
            "clean prefix, frames 1-324",
            &alerts,
            &site_labels,
            &eps,
            times[&324],
        ));
    }
    for name in [
        "characterization_modbus_6RTU_with_operate",
        "exploit_ms08_netapi_modbus_6RTU_with_operate",
    ] {
        let cap = l.join(format!("{name}.pcap"));
        let mut labels = lemay_labels(&l.join(format!("{name}_labeled.csv")));
        for (file, frame, _why) in LABEL_ERRATA {
            if name == *file {
                labels.insert(*frame);
            }
        }
        let times = frame_times(&cap);
        let eps = episodes(&labels, &times, 5.0);
        let (alerts, _) = detect_files_realert(
            Learn::Baseline(Box::new(site_baseline.clone())),
            &[(&cap, &all_frames)],
            0.0,
        );
        let start = times.values().copied().min().unwrap_or(0);
        rows.push(score(
            &cap,
            "moving_two_files, clean frames",
            &alerts,
            &labels,
            &eps,
            start,
        ));
    }

    // QUT: no clean capture exists; the four HMI-port captures (the floods went over the PLC
    // port and none of them holds the attacker) are the site's traffic for the PLC-port snippets.
    let hmi: Vec<PathBuf> = std::fs::read_dir(&l)
        .expect("labelled dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".hmi.pcap"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(hmi.len(), 4);
    let files: Vec<(&Path, FrameFilter<'_>)> = hmi
        .iter()
        .map(|p| (p.as_path(), &all_frames as FrameFilter<'_>))
        .collect();
    let qut_baseline = learn_files(&files);
    let mut flooding = Vec::new();
    let mut masters: Vec<PathBuf> = std::fs::read_dir(&l)
        .expect("labelled dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".master.pcap"))
        .collect();
    masters.sort();
    for cap in &masters {
        let csv = PathBuf::from(cap.to_string_lossy().replace(".master.pcap", ".master.csv"));
        let labels = qut_labels(&csv);
        let times = frame_times(cap);
        let eps = vec![labels.clone()];
        let (alerts, _) = detect_files_realert(
            Learn::Baseline(Box::new(qut_baseline.clone())),
            &[(cap, &all_frames)],
            0.0,
        );
        let start = times.values().copied().min().unwrap_or(0);
        rows.push(score(
            cap,
            "the 4 HMI-port captures",
            &alerts,
            &labels,
            &eps,
            start,
        ));
    }
    // The HMI-port flooding captures lie wholly inside their attack windows, with no per-frame
    // labels and no clean frame: each is scored against the other three (leave one out), its one
    // episode detected by an availability alert. False alerts cannot be counted.
    for (i, cap) in hmi.iter().enumerate() {
        let others: Vec<(&Path, FrameFilter<'_>)> = hmi
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| (p.as_path(), &all_frames as FrameFilter<'_>))
            .collect();
        let baseline = learn_files(&others);
        let (alerts, _) = detect_files_realert(
            Learn::Baseline(Box::new(baseline)),
            &[(cap, &all_frames)],
            0.0,
        );
        let availability: BTreeSet<&str> = alerts
            .iter()
            .filter(|a| a.kind == otwatch_models::AlertKind::Availability)
            .map(|a| a.r#type)
            .collect();
        let all: BTreeSet<&str> = alerts.iter().map(|a| a.r#type).collect();
        eprintln!(
            "flooding (HMI port): {}: availability alerts {:?}; all alert types {:?}",
            cap.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            availability,
            all
        );
        flooding.push(!availability.is_empty());
    }
    print(&rows);

    // What was measured (docs/evaluation.md): every episode of the Lemay scan and exploit and of
    // the six QUT attacks is detected; moving_two_files' later SSL episodes ride on connections
    // already alerted at its first episode.
    let by_name: BTreeMap<&str, &Score> = rows.iter().map(|r| (r.capture.as_str(), r)).collect();
    for r in &rows {
        if r.capture.starts_with("moving_two_files") {
            assert!(
                r.detected >= 2,
                "{}: {}/{}",
                r.capture,
                r.detected,
                r.episodes
            );
        } else {
            assert_eq!(
                r.detected, r.episodes,
                "{}: missed {:?}",
                r.capture, r.missed
            );
        }
        // False alerts no higher than measured: the four on characterization are explained in
        // docs/evaluation.md (operator writes and a NetBIOS session absent from the baseline, a
        // new IPv6 host); every other capture has none.
        let allowed = if r.capture.starts_with("characterization") {
            4
        } else {
            0
        };
        assert!(
            r.false_causes.len() <= allowed,
            "{}: false alerts {:?}",
            r.capture,
            r.false_causes
        );
    }
    assert!(by_name.len() == rows.len());
    let flagged = flooding.iter().filter(|f| **f).count();
    eprintln!(
        "flooding captures with an availability alert: {flagged}/{}",
        flooding.len()
    );
    // The flood on the PLC port shows on the HMI port as poll cycles skipped: twice within a
    // minute in ConveyorBeltOff and ReactorOff; once in 15 minutes in WaterTankOnAuto (next to
    // an operator's write) and never in ConveyorBeltOn, which a single skipped cycle does not
    // make a broken poll (docs/alerts.md).
    assert!(flagged >= 2, "flooding: {flagged}/4");
}

/// One capture of the clean-control evaluation: learn on the first 40% of its capture time,
/// detect on the rest, where every alert cause is false.
struct Clean {
    capture: String,
    hours: f64,
    by_type: BTreeMap<&'static str, usize>,
    causes: Vec<String>,
}

fn clean_control(path: &Path, keep: FrameFilter<'_>) -> Clean {
    let times: Vec<i64> = frame_times(path)
        .into_iter()
        .filter(|(f, _)| keep(*f))
        .map(|(_, t)| t)
        .collect();
    let (first, last) = (times[0], times[times.len() - 1]);
    let learn = (last - first) as f64 * 0.4 / 1e9;
    let (alerts, _) = detect_files(Learn::For(learn), &[(path, keep)]);
    let mut by_type = BTreeMap::new();
    let mut causes = Vec::new();
    for a in alerts
        .iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
    {
        *by_type.entry(a.r#type).or_default() += 1;
        causes.push(format!(
            "{} (frames {:?}): {}",
            a.r#type, a.frames, a.message
        ));
    }
    Clean {
        capture: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        hours: (last - first) as f64 * 0.6 / 3.6e12,
        by_type,
        causes,
    }
}

/// Clean-control evaluation (docs/evaluation.md): normal operation only. Learn on the first 40%
/// of it, count every alert on the rest as false. The set: the frames labelled normal of the
/// three Lemay captures, the steady scenarios (120 s each, and an hour of each protocol), and
/// the clean 60-s prefix of every other scenario (labels.json). The QUT captures are left out:
/// every one of them lies inside an attack window (the HMI-port captures show the flood's
/// effect on the HMI's polling).
#[test]
fn clean_control_false_alerts() {
    let Some(dir) = corpus_dir() else { return };
    let l = dir.join("labelled");
    let mut rows = Vec::new();
    for name in [
        "moving_two_files_modbus_6RTU",
        "characterization_modbus_6RTU_with_operate",
        "exploit_ms08_netapi_modbus_6RTU_with_operate",
    ] {
        let mut labels = lemay_labels(&l.join(format!("{name}_labeled.csv")));
        for (file, frame, _why) in LABEL_ERRATA {
            if name == *file {
                labels.insert(*frame);
            }
        }
        let keep = |f: u64| !labels.contains(&f);
        rows.push(clean_control(&l.join(format!("{name}.pcap")), &keep));
    }
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios");
    let text = std::fs::read_to_string(scenarios.join("labels.json")).expect("labels.json");
    let labels: serde_json::Value = serde_json::from_str(&text).expect("labels parse");
    let captures = labels["captures"].as_object().expect("captures");
    for (name, c) in captures {
        let path = scenarios.join(c["file"].as_str().expect("file"));
        let last = if name.ends_with("_steady") || name.ends_with("_steady_hour") {
            u64::MAX
        } else {
            c["clean_prefix"]["last_frame"]
                .as_u64()
                .expect("clean prefix")
        };
        let keep = move |f: u64| f <= last;
        rows.push(clean_control(&path, &keep));
    }

    eprintln!("\n| capture | clean time after learning | false alerts | per hour | by type |");
    eprintln!("|---|---|---|---|---|");
    let (mut total, mut hours) = (0usize, 0.0);
    for r in &rows {
        total += r.causes.len();
        hours += r.hours;
        eprintln!(
            "| {} | {:.1} s | {} | {:.1} | {:?} |",
            r.capture,
            r.hours * 3600.0,
            r.causes.len(),
            r.causes.len() as f64 / r.hours,
            r.by_type
        );
    }
    eprintln!(
        "| all | {:.1} s | {total} | {:.1} | |",
        hours * 3600.0,
        total as f64 / hours
    );
    for r in &rows {
        for c in &r.causes {
            eprintln!("false: {}: {c}", r.capture);
        }
    }
    // What was measured (docs/evaluation.md).
    for r in &rows {
        assert!(r.causes.len() <= 5, "{}: {:#?}", r.capture, r.causes);
    }
    assert!(total <= MEASURED_CLEAN_FALSE, "{total} false alerts");
}

/// False alert causes on the clean-control set, as measured (docs/evaluation.md).
const MEASURED_CLEAN_FALSE: usize = 1;
