//! The attacks of the reliability issue, each with what must hold after it: a SYN flood does not
//! blind the flow table, a flood of clients does not make alerts as large as the baseline, output
//! files keep their history and failed writes fail the run, and the CLI refuses or reports what
//! would otherwise do nothing useful.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{read_holding_request, scratch, write_pcap_at};
use etherparse::PacketBuilder;

const OTWATCH: &str = env!("CARGO_BIN_EXE_otwatch");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/modbus_example.pcap");
const T0: u64 = 1_700_000_000;

fn otwatch(args: &[&str]) -> Output {
    Command::new(OTWATCH)
        .args(args)
        .output()
        .expect("run otwatch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A TCP packet from `src:sport` to 192.168.1.10:502.
fn to_plc(src: [u8; 4], sport: u16, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [192, 168, 1, 10], 64)
        .tcp(sport, 502, seq, 8192);
    let b = if syn { b.syn() } else { b.psh().ack(1) };
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("build packet");
    out
}

fn at(secs: f64) -> Duration {
    Duration::from_secs_f64(T0 as f64 + secs)
}

/// Modbus write single register (fc 6).
fn write_register(tid: u16, unit: u8, address: u16, value: u16) -> Vec<u8> {
    let mut v = tid.to_be_bytes().to_vec();
    v.extend_from_slice(&[0, 0, 0, 6, unit, 6]);
    v.extend_from_slice(&address.to_be_bytes());
    v.extend_from_slice(&value.to_be_bytes());
    v
}

/// The 100 000 SYNs of the issue fill the default flow table in one second; a legitimate write
/// 300 s later (well inside the 10-minute idle timeout) must still be dissected.
#[test]
fn a_syn_flood_does_not_blind_the_flow_table() {
    let n = otwatch::flow::DEFAULT_MAX_FLOWS as u32;
    let mut packets = Vec::with_capacity(n as usize + 2);
    for i in 0..n {
        let src = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        packets.push((
            at(f64::from(i) / f64::from(n)),
            to_plc(src, 1024 + (i % 60000) as u16, i, true, &[]),
        ));
    }
    let client = [10, 200, 0, 1];
    packets.push((at(300.0), to_plc(client, 40000, 1000, true, &[])));
    packets.push((
        at(300.01),
        to_plc(
            client,
            40000,
            1001,
            false,
            &write_register(1, 1, 40001, 1234),
        ),
    ));
    let dir = scratch("synflood");
    let path = dir.join("flood.pcap");
    write_pcap_at(&path, &packets);
    let (events, report) = common::replay_file(&path);
    let _ = std::fs::remove_dir_all(dir);
    let writes: Vec<_> = events
        .iter()
        .filter(|e| e.src_ip == std::net::IpAddr::from(client))
        .filter_map(|e| e.modbus())
        .collect();
    assert_eq!(writes.len(), 1, "the write after the flood was not seen");
    assert_eq!(writes[0].function_code, 6);
    assert_eq!(report.stats.flows.table_full_drops, 0);
    assert!(report.stats.flows.evicted_full > 0, "eviction is counted");
}

/// Many flows each start a large S7 PDU (a TPKT announcing 65 535 bytes) and never finish it:
/// what the pipeline holds of such partial PDUs stays under its total bound (each flow's own
/// bound is 64 KiB; the flow table holds 100 000), and the ones dropped are counted.
#[test]
fn unfinished_large_pdus_of_many_flows_are_bounded() {
    use otwatch::flow::tcp::{MAX_TAIL_BYTES_TOTAL, TAIL_KEPT_UNDER_PRESSURE};
    let chunk = 60_000usize;
    let flows = MAX_TAIL_BYTES_TOTAL / chunk + 100;
    let build = |src: [u8; 4], sport: u16, seq: u32, payload: &[u8]| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, [192, 168, 1, 20], 64)
            .tcp(sport, 102, seq, 8192)
            .psh()
            .ack(1)
            .write(&mut out, payload)
            .unwrap();
        out
    };
    let mut big = vec![0x03, 0x00, 0xff, 0xff];
    big.resize(chunk, 0);
    let mut packets = Vec::new();
    for i in 0..flows {
        let src = [10, 1, (i >> 8) as u8, i as u8];
        packets.push(build(src, 40_000, 1, &big));
    }
    let dir = scratch("big-tails");
    let path = dir.join("tails.pcap");
    common::write_pcap(&path, &packets);
    drop(packets);
    let (_, report) = common::replay_file(&path);
    let tcp = &report.stats.tcp;
    assert!(
        tcp.tail_bytes_peak <= (MAX_TAIL_BYTES_TOTAL + chunk) as u64,
        "{} bytes held at most",
        tcp.tail_bytes_peak
    );
    assert!(tcp.tail_bytes_peak > (MAX_TAIL_BYTES_TOTAL - chunk) as u64);
    assert!(tcp.buffer_bound_drops >= (100 * chunk) as u64, "{tcp:?}");
    assert_eq!(
        tcp.tail_bytes_held, 0,
        "every flow's bytes given back at its end"
    );
    assert!(TAIL_KEPT_UNDER_PRESSURE < chunk);
}

/// Many clients poll unit 1 while learning, then unit 2: every `new_channel` alert names the
/// server's learned clients, and that list must stay a few items plus a count.
#[test]
fn alerts_about_a_flood_of_clients_stay_small() {
    const CLIENTS: u16 = 300;
    let mut packets = Vec::new();
    for (phase, (start, unit)) in [(0.0, 1u8), (11.0, 2u8)].into_iter().enumerate() {
        for i in 0..CLIENTS {
            let src = [10, 1, (i >> 8) as u8, i as u8];
            let sport = 10000 + phase as u16 * 20000 + i;
            let t = start + 9.0 * f64::from(i) / f64::from(CLIENTS);
            packets.push((at(t), to_plc(src, sport, 0, true, &[])));
            packets.push((
                at(t + 0.001),
                to_plc(src, sport, 1, false, &read_holding_request(i, unit, 0, 10)),
            ));
        }
    }
    let dir = scratch("amp");
    let pcap = dir.join("amp.pcap");
    write_pcap_at(&pcap, &packets);
    let alerts = dir.join("alerts.jsonl");
    let out = otwatch(&[
        "replay",
        "-q",
        "--learn",
        "10s",
        "--alerts",
        alerts.to_str().unwrap(),
        pcap.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&alerts).expect("alerts");
    let _ = std::fs::remove_dir_all(dir);
    let mut new_channel = 0;
    for line in text.lines() {
        let a: serde_json::Value = serde_json::from_str(line).expect("alert json");
        for part in ["learned", "observed"] {
            let Some(obj) = a[part].as_object() else {
                continue;
            };
            for (k, v) in obj {
                if let Some(list) = v.as_array() {
                    assert!(
                        list.len() <= otwatch_models::alert::ALERT_LIST_ITEMS,
                        "{part}.{k} has {} items: {line}",
                        list.len()
                    );
                }
            }
        }
        if a["type"] == "new_channel" {
            new_channel += 1;
            assert_eq!(a["learned"]["server_clients_total"], u64::from(CLIENTS));
        }
    }
    assert!(new_channel > 0, "no new_channel alert: {text}");
}

fn fixture_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["replay", "-q"];
    v.extend_from_slice(extra);
    v.push(FIXTURE);
    v
}

#[test]
fn events_and_alerts_files_are_appended_not_truncated() {
    let dir = scratch("append");
    let events = dir.join("events.jsonl");
    let alerts = dir.join("alerts.jsonl");
    let (e, a) = (events.to_str().unwrap(), alerts.to_str().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let out = otwatch(&fixture_args(&[
            "--events", e, "--learn", "1s", "--alerts", a,
        ]));
        assert!(out.status.success(), "{}", stderr(&out));
        let count = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        lines.push((count(&events), count(&alerts)));
    }
    let _ = std::fs::remove_dir_all(dir);
    let (first, second) = (lines[0], lines[1]);
    assert!(first.0 > 0 && first.1 > 0, "{first:?}");
    assert_eq!(
        second,
        (2 * first.0, 2 * first.1),
        "a restart kept the history"
    );
}

#[test]
fn a_failed_events_write_fails_the_run_and_is_reported() {
    if !Path::new("/dev/full").exists() {
        common::skip("no /dev/full");
        return;
    }
    let out = Command::new(OTWATCH)
        .args(["replay", "--events", "/dev/full", FIXTURE])
        .output()
        .expect("run");
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "exit status 0 after failed writes: {err}"
    );
    assert!(
        err.contains("FAILED: events output: 48 failed writes"),
        "{err}"
    );
}

/// Runs `script` under `sh` with a 4 KiB tmpfs mounted at `$1` (in a mount namespace of its
/// own) and `args` as `$2`...; `None` (the test skipped, and why said) where that cannot be
/// done here.
fn on_a_full_disk(tmpfs: &Path, script: &str, args: &[&str]) -> Option<Output> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip("not root (a tmpfs in a mount namespace needs it)");
        return None;
    }
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=4k tmpfs \"$1\" && {{ {script}; }}"
        ))
        .args(["sh", tmpfs.to_str().unwrap()])
        .args(args)
        .output();
    let Ok(out) = out else {
        common::skip("unshare (util-linux) is missing");
        return None;
    };
    let err = stderr(&out);
    if err.contains("unshare failed") || err.contains("mount:") {
        common::skip(format_args!("no mount namespace here: {err}"));
        return None;
    }
    Some(out)
}

/// Evidence on a full disk (a 4 KiB tmpfs in a mount namespace of the run's own): the files that
/// do not fit are counted as failed, removed rather than left half-written, and the run exits 1
/// (it exited 0 and said "evidence files 1" before).
#[test]
fn evidence_on_a_full_disk_fails_the_run() {
    let dir = scratch("evidence-full");
    let ev = dir.join("evidence");
    std::fs::create_dir_all(&ev).unwrap();
    let alerts = dir.join("a.jsonl");
    let out = on_a_full_disk(
        &ev,
        "exec \"$2\" replay -q --learn 1s --alerts \"$3\" --evidence \"$1\" \"$4\"",
        &[OTWATCH, alerts.to_str().unwrap(), FIXTURE],
    );
    let lines = std::fs::read_to_string(&alerts).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let Some(out) = out else { return };
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("output writes failed: evidence output:"),
        "{err}"
    );
    // Alerts still went out, without an evidence path for the files that failed.
    assert!(lines.lines().count() >= 2, "{lines}");
    assert!(
        lines.lines().any(|l| !l.contains("\"evidence\"")),
        "{lines}"
    );
}

/// An output file on a full disk (a 4 KiB tmpfs): a write that only partly went out is cut
/// off again, so the file holds whole lines only and the next line is not glued to half of
/// one. Alerts are written batch by batch: the first lines fit, then one write goes out in
/// part; exactly the lines not counted as failed are left, whole.
#[test]
fn a_write_cut_short_by_a_full_disk_leaves_no_half_line() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/modbus.pcap");
    let dir = scratch("alerts-full");
    let disk = dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    // All the lines, on a disk with room.
    let all = dir.join("all.jsonl");
    let run = ["replay", "-q", "--learn", "30s", "--alerts"];
    let whole = otwatch(&[&run[..], &[all.to_str().unwrap(), fixture]].concat());
    assert!(whole.status.success(), "{}", stderr(&whole));
    let total = std::fs::read_to_string(&all).unwrap().lines().count();
    let out = on_a_full_disk(
        &disk,
        concat!(
            "\"$2\" replay -q --learn 30s --alerts \"$1/a.jsonl\" \"$3\"; s=$?; ",
            "wc -l < \"$1/a.jsonl\"; wc -c < \"$1/a.jsonl\"; ",
            "tail -c 1 \"$1/a.jsonl\" | od -An -c; exit $s"
        ),
        &[OTWATCH, fixture],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let Some(out) = out else { return };
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let failed: usize = err
        .split("alerts output: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .expect(&err);
    // The file's lines, its length, then its last byte.
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    let words: Vec<&str> = shown.split_whitespace().collect();
    let lines: usize = words[0].parse().expect(&shown);
    let bytes: u64 = words[1].parse().expect(&shown);
    assert!(lines > 0 && failed > 0, "{shown} {err}");
    assert_eq!(lines + failed, total, "lines kept and lost: {shown} {err}");
    assert_eq!(words.get(2), Some(&"\\n"), "a half line was left: {shown}");
    assert!(bytes < 4096, "more than the disk holds: {shown}");
}

/// Outputs that fail as the run ends (here every line of the events file, flushed at the end)
/// are in the last metrics as well as in the summary and the exit status: the final values
/// are taken after every other output has finished.
#[test]
fn failures_at_the_end_of_a_run_are_in_the_last_metrics() {
    if !std::path::Path::new("/dev/full").exists() {
        common::skip("no /dev/full");
        return;
    }
    let dir = scratch("end-metrics");
    let om = dir.join("metrics.om");
    let out = otwatch(&[
        "replay",
        "--events",
        "/dev/full",
        "--openmetrics",
        om.to_str().unwrap(),
        FIXTURE,
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("FAILED: events output"), "{err}");
    let text = std::fs::read_to_string(&om).expect("the OpenMetrics file");
    let last = text
        .lines()
        .rfind(|l| l.starts_with("otwatch_output_errors_total{output=\"events\""))
        .expect("an events errors series");
    let value: u64 = last
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect(last);
    assert!(value > 0, "the last sample: {last}");
}

/// Alerts to a stdout whose reader is gone are lost, and counted as such (summary, exit
/// status); events to such a reader are not (`--events - | head` looks at the first ones).
/// The reader is gone before the run starts: stdout is a pipe whose read end is closed.
#[test]
fn alerts_to_a_reader_that_went_away_are_counted_as_lost() {
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/scenarios/modbus_restart_scan.pcap"
    );
    for (output, lost) in [("--alerts", true), ("--events", false)] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = Command::new(OTWATCH)
            .args(["replay", "--learn", "60s", output, "-", scenario])
            .stdout(writer)
            .output()
            .expect("run otwatch");
        let err = stderr(&out);
        assert_eq!(out.status.success(), !lost, "{output}: {err}");
        assert_eq!(
            err.contains("FAILED: alerts output"),
            lost,
            "{output}: {err}"
        );
    }
}

#[test]
fn late_outputs_are_checked_before_any_input_is_read() {
    let dir = scratch("late");
    let missing = dir.join("no/such/dir/baseline.json");
    for args in [
        vec!["learn", FIXTURE, "-o", missing.to_str().unwrap()],
        vec![
            "replay",
            "--learn",
            "1s",
            "--save-baseline",
            missing.to_str().unwrap(),
            FIXTURE,
        ],
        vec![
            "replay",
            "--openmetrics",
            missing.to_str().unwrap(),
            FIXTURE,
        ],
        vec!["replay", "--openmetrics", dir.to_str().unwrap(), FIXTURE],
    ] {
        let out = otwatch(&args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}: {err}");
        // Refused up front: no packet was read, so there is no summary.
        assert!(
            !err.contains("packets"),
            "{args:?} read its input first: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn runs_that_would_do_nothing_useful_are_refused_or_reported() {
    for args in [
        vec!["replay", "--learn", "0", FIXTURE],
        vec!["replay", "--workers", "0", FIXTURE],
        vec!["replay", "--metrics-hold", "5s", FIXTURE],
    ] {
        let out = otwatch(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?} was not refused");
    }
    // Pacing is one worker's: refused with several rather than ignored.
    let out = otwatch(&["replay", "--speed", "10", "--workers", "2", FIXTURE]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--speed paces one worker"));
    // The fixture spans 64 hours of capture time; a longer learning window never detects.
    let out = otwatch(&["replay", "--learn", "100d", FIXTURE]);
    assert!(stderr(&out).contains("ended inside the learning window"));
    // Alerts raised, nowhere to go.
    let out = otwatch(&["replay", "--learn", "1s", FIXTURE]);
    assert!(
        stderr(&out).contains("not written anywhere"),
        "{}",
        stderr(&out)
    );
    // No --events: nothing claims to have written events.
    let out = otwatch(&["replay", FIXTURE]);
    assert!(!stderr(&out).contains("events written"), "{}", stderr(&out));
}

#[test]
fn learn_says_where_the_baseline_went_and_baseline_show_survives_a_closed_pipe() {
    let dir = scratch("learn");
    let b = dir.join("b.json");
    let out = otwatch(&["learn", FIXTURE, "-o", b.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.starts_with("otwatch learn:"), "{err}");
    assert!(
        err.contains(&format!("written to {}", b.display())),
        "{err}"
    );
    // `baseline show | head`: the reader has gone before otwatch writes (a pipe whose read end
    // is closed), so the write fails with EPIPE, which must not be a panic or a failure.
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is ours and closed once; fds[1] is handed to the child and owned there.
    unsafe { libc::close(fds[0]) };
    let write_end =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let out = Command::new(OTWATCH)
        .args(["baseline", "show", b.to_str().unwrap()])
        .stdout(std::process::Stdio::from(write_end))
        .output()
        .expect("run");
    let _ = std::fs::remove_dir_all(dir);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// `learn` with a mistyped capture name, or a capture with no packets, does not replace a good
/// baseline with an empty one: it says so and fails, and the file is untouched. Before, the
/// baseline was overwritten (and the empty capture's run exited 0).
#[test]
fn learn_never_replaces_a_baseline_with_an_empty_one() {
    let dir = scratch("learn-empty");
    let b = dir.join("b.json");
    let out = otwatch(&["learn", FIXTURE, "-o", b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let good = std::fs::read(&b).expect("baseline");
    let empty = dir.join("empty.pcap");
    common::write_pcap(&empty, &[]);
    let typo = dir.join("no-such.pcap");
    for input in [&typo, &empty] {
        let out = otwatch(&["learn", input.to_str().unwrap(), "-o", b.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("not written"), "{err}");
        assert_eq!(std::fs::read(&b).expect("baseline"), good, "{err}");
    }
}

/// A FIFO given as a capture or a baseline is refused at once (before, opening it waited for a
/// writer, and SIGINT and SIGTERM could not stop it).
#[test]
fn a_fifo_is_refused_not_waited_on() {
    let dir = scratch("fifo");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for args in [
        vec!["replay", "-q", fifo.to_str().unwrap()],
        vec!["baseline", "show", fifo.to_str().unwrap()],
    ] {
        let mut child = Command::new(OTWATCH)
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        let status = common::wait_or_kill(&mut child, &format!("{args:?} on a FIFO"));
        assert_eq!(status.code(), Some(1), "{args:?}");
    }
}

/// SIGTERM (or SIGINT) during a replay stops it between packets: the outputs are flushed (every
/// line whole), the summary says it was interrupted, and the exit status says it did not finish.
#[test]
fn a_replay_stopped_by_a_signal_flushes_its_outputs() {
    use std::io::BufRead;
    let dir = scratch("sigterm");
    let events = dir.join("events.jsonl");
    // Real time: the fixture spans 64 hours of capture time, so the replay is still running.
    let mut child = Command::new(OTWATCH)
        .args(["replay", "--speed", "realtime", "--events"])
        .arg(&events)
        .arg(FIXTURE)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("otwatch");
    // The events file exists once the outputs are set up and the handlers installed.
    let start = std::time::Instant::now();
    while !events.exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut err = String::new();
    if let Some(e) = child.stderr.take() {
        for line in std::io::BufReader::new(e).lines().map_while(Result::ok) {
            err.push_str(&line);
            err.push('\n');
        }
    }
    let status = child.wait().expect("exit");
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("(interrupted by a signal)"), "{err}");
    assert!(err.contains("events written:"), "{err}");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("whole JSON lines");
    }
}
