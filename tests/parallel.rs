//! `replay --workers N` gives what one worker gives: the same events in the same order, on the
//! fixtures always and on every corpus capture when OTWATCH_CORPUS is set; and the same alerts
//! (a multiset, ids aside) on every scenario and labelled capture.

mod common;

use common::Learn;
use std::path::{Path, PathBuf};

use otwatch::event::VecSink;
use otwatch::parallel::replay_parallel;
use otwatch::pipeline::Pipeline;
use otwatch::replay::replay;

/// Events as JSON lines in the order they came (timestamps and all), and the counters that
/// must not change.
fn run(files: &[PathBuf], workers: usize) -> (Vec<String>, Vec<u64>) {
    let mut sink = VecSink::default();
    let report = if workers == 1 {
        replay(files, &mut sink, &mut Pipeline::new())
    } else {
        replay_parallel(files, &mut sink, workers)
    };
    let lines: Vec<String> = sink
        .0
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let s = &report.stats;
    let mut counters = vec![s.packets, s.bytes, s.events, s.flows.created];
    for p in [
        &s[otwatch::dissect::registry::MODBUS],
        &s[otwatch::dissect::registry::DNP3],
        &s[otwatch::dissect::registry::S7COMM],
        &s[otwatch::dissect::registry::S7COMMPLUS],
    ] {
        counters.extend_from_slice(&p.pdus);
        counters.push(p.parse_errors.values().sum());
    }
    (lines, counters)
}

fn check(files: &[PathBuf]) {
    let (one, one_counts) = run(files, 1);
    for workers in [2, 3] {
        let (many, many_counts) = run(files, workers);
        assert_eq!(one.len(), many.len(), "{files:?} with {workers} workers");
        assert!(
            one == many,
            "{files:?}: events differ (or come in another order) with {workers} workers"
        );
        assert_eq!(
            one_counts, many_counts,
            "{files:?}: counters differ with {workers} workers"
        );
    }
}

#[test]
fn fixtures_give_the_same_events_with_several_workers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut all = Vec::new();
    for name in [
        "modbus_example.pcap",
        "modbus.pcap",
        "dnp3_example.pcap",
        "s7ident.pcap",
        "s7comm_plus.pcap",
        "s7comm_downloading_block_db1.pcap",
    ] {
        check(&[dir.join(name)]);
        all.push(dir.join(name));
    }
    // All of them in one run, as several files of one replay.
    check(&all);
}

#[test]
fn every_corpus_capture_gives_the_same_events_with_several_workers() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    let files = common::captures_under(&dir, &["pcap", "pcapng"]);
    assert!(files.len() > 50);
    for f in files {
        check(&[f]);
    }
}

/// The alert lines of a replay with detection (learning for `learn_s` seconds of capture time),
/// with 1 or N workers: sorted, ids aside, evidence reduced to whether a file was written.
/// What a run's detection did: its alert lines (sorted, ids aside, whether each got evidence),
/// the observations it saw, those the workers checked, and whether it was still learning.
struct Detected {
    lines: Vec<String>,
    /// The events output's lines, in order (with `events`).
    events: Vec<String>,
    observations: u64,
    on_workers: u64,
    learning: bool,
}

/// Detection on `files` with `workers` workers; `events`: with an events output too.
fn alerts(
    files: &[PathBuf],
    learn: &Learn,
    (workers, events): (usize, bool),
    evidence: &Path,
) -> Detected {
    use otwatch::detection::{alert_json, DetectSink, Detection};
    use otwatch::shards::Stage;
    use otwatch_models::{Engine, EngineConfig};
    let engine = match learn {
        Learn::For(learn_s) => Engine::learning(EngineConfig {
            learn_for: Some((learn_s * 1e9) as i64),
            ..EngineConfig::default()
        }),
        Learn::Baseline(b) => Engine::detecting(b.as_ref().clone(), EngineConfig::default()),
        Learn::Everything => Engine::learning(EngineConfig::default()),
    };
    let mut det = Detection::new(engine, None);
    det.kept = Some(Vec::new());
    let _ = std::fs::remove_dir_all(evidence);
    let rings = det
        .with_evidence_rings(evidence, workers)
        .expect("evidence dir");
    let (mut kept, mut none) = (VecSink::default(), otwatch::event::NullSink);
    let events: &mut dyn otwatch::event::EventSink = if events { &mut kept } else { &mut none };
    if workers == 1 {
        let mut pipeline = Pipeline::new();
        pipeline.evidence = rings.first().cloned();
        let mut sink = DetectSink {
            detection: &mut det,
            inner: events,
        };
        replay(files, &mut sink, &mut pipeline);
    } else {
        let mut stage = Stage {
            detection: Some(&mut det),
            events,
        };
        otwatch::parallel::replay_sharded(files, &mut stage, workers, Some(rings));
    }
    // Learning still (no packet came past its end): the workers never checked a channel.
    let learning = det.engine.as_ref().is_some_and(|e| e.is_learning());
    det.finish();
    assert_eq!(det.outputs.total(), 0, "{:?}", det.outputs.report());
    let engine = det.engine.as_ref().expect("an engine");
    let observations = engine.observations;
    let on_workers = det.worker_observations();
    let mut lines: Vec<String> = det
        .kept
        .take()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let mut v = alert_json(a);
            let m = v.as_object_mut().expect("object");
            m.remove("id");
            let written = m.remove("evidence").is_some();
            m.insert("evidence".into(), written.into());
            v.to_string()
        })
        .collect();
    lines.sort();
    let events = kept.0.iter().map(|e| serde_json::to_string(e).unwrap());
    Detected {
        lines,
        events: events.collect(),
        observations,
        on_workers,
        learning,
    }
}

fn check_alerts(files: &[PathBuf], learn_s: f64) -> usize {
    check_alerts_with(files, &Learn::For(learn_s))
}

fn check_alerts_with(files: &[PathBuf], learn: &Learn) -> usize {
    check_detection(files, learn, false)
}

/// [`check_alerts_with`]; `events`: with an events output too, whose lines must be the same
/// and in the same order.
fn check_detection(files: &[PathBuf], learn: &Learn, events: bool) -> usize {
    let dir = common::scratch("parallel-alerts");
    let Detected {
        lines: one,
        events: one_events,
        observations,
        learning,
        ..
    } = alerts(files, learn, (1, events), &dir.join("1"));
    for workers in [2, 3] {
        let run = alerts(
            files,
            learn,
            (workers, events),
            &dir.join(workers.to_string()),
        );
        assert!(
            run.events == one_events,
            "{files:?}: events differ (or come in another order) with {workers} workers"
        );
        // The channels were checked on the workers once learning had ended, and every
        // observation was seen once, as with one worker.
        assert_eq!(run.observations, observations, "{files:?}: observations");
        assert!(
            learning || run.on_workers > 0,
            "{files:?}: detection ran on the workers ({} observations)",
            run.on_workers
        );
        let many = run.lines;
        if one != many {
            let only_one: Vec<_> = one.iter().filter(|a| !many.contains(a)).take(3).collect();
            let only_many: Vec<_> = many.iter().filter(|a| !one.contains(a)).take(3).collect();
            panic!(
                "{files:?}: {} alert lines with 1 worker, {} with {workers}; only with 1: {only_one:?}; only with {workers}: {only_many:?}",
                one.len(),
                many.len()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    one.len()
}

/// Detection with N workers raises the same alerts as with one (a multiset, ids aside, evidence
/// written for the same ones), on every scenario of fixtures/scenarios with its labelled
/// learning window.
#[test]
fn scenarios_raise_the_same_alerts_with_several_workers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios");
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("labels.json")).expect("labels.json"),
    )
    .expect("labels json");
    let caps = labels["captures"].as_object().expect("captures");
    let mut total = 0;
    for cap in caps.values() {
        let file = dir.join(cap["file"].as_str().expect("file"));
        let learn = cap["clean_prefix"]["end_s"].as_f64().expect("end_s");
        total += check_alerts(&[file], learn);
    }
    assert!(caps.len() >= 10, "{} scenarios", caps.len());
    // Not a vacuous comparison: the scenarios' attacks raise alerts.
    assert!(total >= 20, "{total} alert lines over the scenarios");
}

/// With an events output too, the workers check the channels: the scenarios raise the same
/// alerts as with one worker, and the events come out the same and in the same order.
#[test]
fn scenarios_with_an_events_output_raise_the_same_alerts_with_several_workers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios");
    let mut total = 0;
    let names = [
        "modbus_write",
        "modbus_restart_scan",
        "s7_stop",
        "dnp3_operate",
        "iec104_silent",
        "enip_write",
    ];
    for name in names {
        let file = dir.join(format!("{name}.pcap"));
        // Learning on the clean minute the labels give every scenario.
        total += check_detection(&[file], &Learn::For(60.0), true);
    }
    // 30 on one worker when this was written.
    assert!(total >= 20, "{total} alert lines over the scenarios");
    // Two captures, one after the other: the workers flush between them.
    let two = ["modbus_write", "s7_stop"].map(|n| dir.join(format!("{n}.pcap")));
    assert!(check_detection(&two, &Learn::For(60.0), true) >= 10);
}

/// The same on every labelled capture of the corpus (../shared/pcaps/labelled), learning on
/// the first 10 s.
#[test]
fn labelled_captures_raise_the_same_alerts_with_several_workers() {
    let Some(corpus) = common::corpus_dir() else {
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus.join("labelled"))
        .expect("labelled dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 13, "{} labelled captures", files.len());
    let mut total = 0;
    for f in &files {
        total += check_alerts(std::slice::from_ref(f), 10.0);
    }
    assert!(total > 0, "no alert over the labelled captures");
}

/// A capture's first and last packet times.
fn time_span(path: &Path) -> (i64, i64) {
    use otwatch::capture::{CaptureFile, PacketSource};
    let mut cap = CaptureFile::open(path).expect("open capture");
    let (mut first, mut last) = (None, 0);
    while let Some(pkt) = cap.next_packet() {
        let ts = pkt.expect("packet").ts_nanos;
        first.get_or_insert(ts);
        last = ts;
    }
    (first.expect("a packet"), last)
}

/// A steady capture replayed right after itself: the second file starts before the first
/// ended, so the capture clock steps back by the capture's length. Against the baseline learned
/// from it, the two raise nothing: the second's requests do not count in the rate windows of
/// the time before the step (every channel a `traffic_flood`), nor do polls, timeouts,
/// silences and behaviour windows span the step. The same with 1 and N workers.
#[test]
fn a_capture_clock_that_steps_back_raises_nothing_on_steady_traffic() {
    let steady: Vec<_> = common::scenario_captures("")
        .into_iter()
        .filter(|(name, _)| name.contains("_steady"))
        .collect();
    assert!(steady.len() >= 5, "{} steady scenarios", steady.len());
    for (name, file) in steady {
        let (first, last) = time_span(&file);
        assert!(
            last - first > 60_000_000_000,
            "{name}: too short to step back"
        );
        let baseline = common::learn_files(&[(&file, &common::all_frames)]);
        let learn = Learn::Baseline(Box::new(baseline));
        assert_eq!(
            check_alerts_with(std::slice::from_ref(&file), &learn),
            0,
            "{name}"
        );
        let lines = check_alerts_with(&[file.clone(), file], &learn);
        assert_eq!(
            lines, 0,
            "{name} replayed after itself raised {lines} alert lines"
        );
    }
}

/// One packet of a steady capture copied with a time a day earlier (a glitch of the capture
/// clock, not a step: the next packet is back in time): against the baseline learned from the
/// capture, nothing is raised, with 1 and N workers. Taken for a step there and back, it made
/// every device silent for a day.
#[test]
fn one_packet_a_day_early_is_no_clock_step() {
    use otwatch::capture::{CaptureFile, PacketSource};
    let (_, file) = common::scenario_captures("modbus_steady")
        .into_iter()
        .next()
        .expect("modbus_steady");
    let mut packets = Vec::new();
    let mut cap = CaptureFile::open(&file).expect("open");
    while let Some(pkt) = cap.next_packet() {
        let pkt = pkt.expect("packet");
        let at = std::time::Duration::from_nanos(pkt.ts_nanos as u64);
        packets.push((at, pkt.data.to_vec()));
    }
    let (at, data) = packets[400].clone();
    packets.insert(401, (at - std::time::Duration::from_secs(86_400), data));
    let dir = common::scratch("clock-glitch");
    let glitch = dir.join("glitch.pcap");
    common::write_pcap_at(&glitch, &packets);
    let baseline = common::learn_files(&[(&file, &common::all_frames)]);
    let learn = Learn::Baseline(Box::new(baseline));
    assert_eq!(check_alerts_with(&[glitch], &learn), 0);
}

/// The last sample of every series of an OpenMetrics file (the values at the end of the run).
fn final_sample(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("openmetrics file");
    let samples: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    let last = samples
        .iter()
        .map(|(_, ts)| ts.parse::<f64>().expect("timestamp"))
        .fold(f64::MIN, f64::max);
    let mut out: Vec<String> = samples
        .iter()
        .filter(|(_, ts)| ts.parse::<f64>().ok() == Some(last))
        .map(|(series, _)| series.to_string())
        .collect();
    out.sort();
    out
}

/// The OpenMetrics samples fall at the same capture times with two workers as with one, and
/// what detection counts (alerts by type) holds the same values at each: the metrics hear of
/// every packet in order, after its items, as one worker's do. (The pipeline's own counters
/// are the workers' last published ones, so their values may differ during the run.) The same
/// with an events output too, whose lines are one worker's.
#[test]
fn metrics_samples_fall_at_the_same_times_with_two_workers() {
    let dir = common::scratch("parallel-samples");
    for name in [
        "modbus_write",
        "modbus_restart_scan",
        "s7_stop",
        "dnp3_restart",
    ] {
        let scenario =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/scenarios/{name}.pcap"));
        let mut runs = Vec::new();
        let mut events = Vec::new();
        for (workers, with_events) in [("1", false), ("2", false), ("1", true), ("2", true)] {
            let om = dir.join(format!("{name}-{workers}-{with_events}.om"));
            let ev = dir.join(format!("{name}-{workers}.events.jsonl"));
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_otwatch"));
            cmd.args(["replay", "--quiet", "--learn", "60s", "--workers", workers])
                .args(["--alerts", "/dev/null", "--openmetrics"])
                .arg(&om);
            if with_events {
                cmd.arg("--events").arg(&ev);
            }
            let out = cmd.arg(&scenario).output().expect("run otwatch");
            assert!(out.status.success(), "{out:?}");
            if with_events {
                events.push(std::fs::read_to_string(&ev).expect("events file"));
            }
            let text = std::fs::read_to_string(&om).expect("openmetrics file");
            let times: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("otwatch_packets_total{"))
                .filter_map(|l| l.rsplit_once(' ').map(|(_, ts)| ts.to_string()))
                .collect();
            let alerts: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("otwatch_alerts_total{"))
                .map(str::to_string)
                .collect();
            runs.push((times, alerts));
        }
        assert!(runs[0].0.len() > 10, "{name}: {} samples", runs[0].0.len());
        assert!(
            runs[0].1.iter().any(|l| !l.contains("} 0 ")),
            "{name}: no alert counted"
        );
        for run in &runs[1..] {
            assert_eq!(runs[0].0, run.0, "{name}: sample times");
            assert_eq!(runs[0].1, run.1, "{name}: alerts by type at each sample");
        }
        assert!(events[0].lines().count() > 10, "{name}: events written");
        assert!(events[0] == events[1], "{name}: events with two workers");
    }
}

/// `replay --workers 2` with detection, alerts, evidence and metrics runs, and ends with the
/// same metrics as one worker: every series of the last OpenMetrics sample (per-channel
/// requests, latencies and poll intervals, alerts by type, the pipeline's counters).
#[test]
fn replay_with_two_workers_ends_with_the_same_metrics() {
    let dir = common::scratch("parallel-metrics");
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios/modbus_write.pcap");
    let mut finals = Vec::new();
    for workers in ["1", "2"] {
        let om = dir.join(format!("metrics-{workers}.txt"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_otwatch"))
            .args(["replay", "--learn", "60s", "--workers", workers])
            .arg("--alerts")
            .arg(dir.join(format!("alerts-{workers}.jsonl")))
            .arg("--evidence")
            .arg(dir.join(format!("evidence-{workers}")))
            .arg("--openmetrics")
            .arg(&om)
            .arg(&scenario)
            .output()
            .expect("run otwatch");
        assert!(out.status.success(), "{out:?}");
        // With per-channel metrics too, the workers check the channels once learning ended.
        let summary = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            summary.contains("checked on the workers"),
            workers == "2",
            "{summary}"
        );
        finals.push(final_sample(&om));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        finals[0]
            .iter()
            .any(|s| s.starts_with("otwatch_requests_total{")),
        "per-channel series: {:?}",
        finals[0]
    );
    assert!(
        finals[0]
            .iter()
            .any(|s| s.starts_with("otwatch_alerts_total{")
                && s.contains("unauthorized_write")
                && !s.ends_with(" 0")),
        "the scenario's alert is counted: {:?}",
        finals[0]
    );
    let only_one: Vec<_> = finals[0]
        .iter()
        .filter(|s| !finals[1].contains(s))
        .collect();
    let only_two: Vec<_> = finals[1]
        .iter()
        .filter(|s| !finals[0].contains(s))
        .collect();
    assert!(
        only_one.is_empty() && only_two.is_empty(),
        "last samples differ: with 1 worker {only_one:?}, with 2 {only_two:?}"
    );
}

/// A Modbus read request (fc 3) with transaction id `tid`.
fn modbus_read(tid: u16) -> Vec<u8> {
    let mut p = tid.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 6, 1, 3, 0, 0, 0, 1]);
    p
}

/// A TCP segment from `client` to a Modbus server, Ethernet-framed.
fn segment(client: [u8; 4], server: [u8; 4], port: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(client, server, 64)
        .tcp(port, 502, seq, 8192)
        .psh()
        .write(&mut out, payload)
        .expect("build packet");
    out
}

/// Idle flows close at the same packet with N workers as with one: the reader sweeps every
/// worker's flow table on the one clock of all packets. A flow that goes quiet with a request
/// held behind a hole (only its sweep delivers it) while another host pair, on the other worker,
/// talks on for 20 minutes: the events come out in the same order, the held request at the
/// sweep's place, not at the end.
#[test]
fn idle_flows_are_swept_at_the_same_packet_with_several_workers() {
    // Two host pairs on different workers: the quiet pair comes first and takes worker 0; at
    // the busy pair's first packet worker 1 has had none, and the busy pair takes it.
    let server = [192, 168, 1, 10];
    let quiet = [10, 0, 0, 1];
    let busy = [10, 0, 0, 2];
    let t0 = std::time::Duration::from_secs(1_700_000_000);
    let mut packets = vec![
        (t0, segment(quiet, server, 40000, 1000, &modbus_read(1))),
        // 12 bytes lost, then request 3: held behind the hole until the flow closes.
        (
            t0 + std::time::Duration::from_millis(10),
            segment(quiet, server, 40000, 1024, &modbus_read(3)),
        ),
    ];
    for i in 0..240u32 {
        let at = t0 + std::time::Duration::from_secs(5 * u64::from(i) + 1);
        packets.push((
            at,
            segment(busy, server, 40001, 5000 + 12 * i, &modbus_read(i as u16)),
        ));
    }
    let dir = common::scratch("parallel-sweep");
    let path = dir.join("sweep.pcap");
    common::write_pcap_at(&path, &packets);
    let (one, _) = run(std::slice::from_ref(&path), 1);
    let (two, _) = run(std::slice::from_ref(&path), 2);
    let _ = std::fs::remove_dir_all(&dir);
    // The held request (transaction 3) comes out when the quiet flow is swept, 10 to 11
    // minutes in: before the end of the busy flow's requests.
    let held = one
        .iter()
        .position(|e| e.contains("\"transaction_id\":3,") && e.contains("\"src_port\":40000"))
        .expect("the held request is delivered");
    assert!(
        held < one.len() - 10,
        "swept before the end: at {held} of {}",
        one.len()
    );
    assert!(
        one == two,
        "events differ (or come in another order) with 2 workers"
    );
}

/// A flush or a sweep is one job for every worker: its events, from several workers, come out
/// in the order one worker gives them (time, frame, flow), not worker by worker. Two host
/// pairs on different workers each hold a request behind a hole; the second worker's was sent
/// first. The flows close at the end of input (a flush), or idle while a third pair talks on
/// (a sweep).
#[test]
fn a_flush_and_a_sweep_of_several_workers_come_out_in_one_workers_order() {
    let server = [192, 168, 1, 10];
    let (first, second, busy) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]);
    let t0 = std::time::Duration::from_secs(1_700_000_000);
    let ms = std::time::Duration::from_millis;
    // `first` takes worker 0 at its first packet, `second` worker 1 (it had none): the
    // assignment by first sight (`PairOwners`). With the two on one worker this would not test
    // the merge's order; it does today (without the flush keys, it fails).
    let quiet = vec![
        (t0, segment(first, server, 40000, 1000, &modbus_read(1))),
        (
            t0 + ms(1),
            segment(second, server, 40001, 2000, &modbus_read(2)),
        ),
        // 12 bytes lost on each, then a request held behind the hole until the flow closes:
        // the second pair's first.
        (
            t0 + ms(2),
            segment(second, server, 40001, 2024, &modbus_read(4)),
        ),
        (
            t0 + ms(3),
            segment(first, server, 40000, 1024, &modbus_read(3)),
        ),
    ];
    let mut swept = quiet.clone();
    for i in 0..240u32 {
        let at = t0 + std::time::Duration::from_secs(5 * u64::from(i) + 1);
        swept.push((
            at,
            segment(
                busy,
                server,
                40002,
                5000 + 12 * i,
                &modbus_read(100 + i as u16),
            ),
        ));
    }
    let dir = common::scratch("parallel-flush-order");
    for (name, packets) in [("flush", &quiet), ("sweep", &swept)] {
        let path = dir.join(format!("{name}.pcap"));
        common::write_pcap_at(&path, packets);
        let (one, _) = run(std::slice::from_ref(&path), 1);
        let (two, _) = run(std::slice::from_ref(&path), 2);
        let at = |tid: u32| {
            one.iter()
                .position(|e| e.contains(&format!("\"transaction_id\":{tid},")))
                .unwrap_or_else(|| panic!("{name}: request {tid} is delivered"))
        };
        assert!(
            at(4) < at(3),
            "{name}: the second pair's held request first"
        );
        if name == "sweep" {
            // Delivered by the sweep, 10 to 11 minutes in, not by the flush at the end.
            assert!(
                at(3) < one.len() - 10,
                "swept before the end: at {} of {}",
                at(3),
                one.len()
            );
        }
        assert!(
            one == two,
            "{name}: events differ (or come in another order) with 2 workers"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--learn` counts from the capture's first packet, not its first OT PDU, with one worker and
/// with two: a capture that opens with an ARP request, 30 s before a Modbus poll, and a Modbus poll from then on
/// learns until 60 s, so a write at 70 s is detected (counted from the first PDU, learning
/// would have lasted until 90 s and learned the write).
#[test]
fn learning_lasts_from_the_first_packet() {
    use common::{
        conversation_packets, read_holding_request, read_holding_response, Segment, Side,
    };
    use std::time::Duration;
    let dir = common::scratch("learn-first-packet");
    let t0 = 1_700_000_000_000u64;
    // Other traffic first, which makes no observation: an ARP request.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 7, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 7, 10, 9, 9, 1]);
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 9, 9, 2]);
    let mut timed = vec![(Duration::from_millis(t0), arp)];
    // The poll, one a second from 30 s to 100 s, and a write of register 5 at 70.5 s.
    let write = |tid: u16| {
        let mut v = tid.to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 0, 0, 6, 1, 6, 0, 5, 0, 42]);
        v
    };
    let mut segments = Vec::new();
    let mut times = Vec::new();
    let (mut c, mut s) = (0usize, 0usize);
    let mut exchange = |req: Vec<u8>, resp: Vec<u8>, at: u64| {
        let (rl, pl) = (req.len(), resp.len());
        segments.push(Segment {
            from: Side::Client,
            offset: c,
            data: req,
            captured: true,
        });
        segments.push(Segment {
            from: Side::Server,
            offset: s,
            data: resp,
            captured: true,
        });
        times.extend([at, at + 10]);
        c += rl;
        s += pl;
    };
    for k in 0..70u16 {
        let tid = k + 1;
        exchange(
            read_holding_request(tid, 1, 0, 2),
            read_holding_response(tid, 1, &[1, 2]),
            t0 + 30_000 + u64::from(k) * 1000,
        );
        if k == 40 {
            exchange(write(1000), write(1000), t0 + 70_500);
        }
    }
    let packets = conversation_packets(common::CLIENT_ISN, common::SERVER_ISN, true, &segments);
    let handshake = [t0 + 29_000, t0 + 29_001, t0 + 29_002];
    for (p, at) in packets.into_iter().zip(handshake.into_iter().chain(times)) {
        timed.push((Duration::from_millis(at), p));
    }
    let capture = dir.join("late-poll.pcap");
    common::write_pcap_at(&capture, &timed);
    for workers in ["1", "2"] {
        let alerts = dir.join(format!("alerts-{workers}.jsonl"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_otwatch"))
            .args(["replay", "--quiet", "--learn", "60s", "--workers", workers])
            .arg("--alerts")
            .arg(&alerts)
            .arg(&capture)
            .output()
            .expect("run otwatch");
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(&alerts).expect("alerts");
        assert!(
            text.lines().any(|l| l.contains("\"unauthorized_write\"")),
            "{workers} worker(s): the write at 70 s is detected: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
