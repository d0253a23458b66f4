//! Alerts to a real rsyslog (Debian's rsyslogd, started by the test): over TCP with RFC 6587
//! octet counting, as JSON and as CEF, and over TLS (rsyslog's openssl driver, a test CA). What
//! rsyslog received is checked against the alerts file of the same run. A collector that is
//! down loses messages, and that is counted and makes the exit status non-zero.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::services::*;
use common::*;

const OTWATCH: &str = env!("CARGO_BIN_EXE_otwatch");

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios/modbus_write.pcap")
}

/// Runs detection on the scenario with `args`; returns the alerts file's lines and stderr.
fn run(dir: &Path, args: &[&str]) -> (Vec<serde_json::Value>, String, Option<i32>) {
    let alerts = dir.join("alerts.jsonl");
    let out = Command::new(OTWATCH)
        .args([
            "replay",
            "--learn",
            "60s",
            "--sensor-name",
            "cell-7",
            "--alerts",
        ])
        .arg(&alerts)
        .args(args)
        .arg(scenario())
        .output()
        .expect("otwatch runs");
    let lines = std::fs::read_to_string(&alerts)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert json"))
        .collect();
    (
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// The RFC 5424 header of a message and its body.
fn split(msg: &str) -> (&str, &str) {
    let at = msg.find(" - ").expect("no structured data, then the body");
    (&msg[..at], &msg[at + 3..])
}

#[test]
fn alerts_reach_rsyslog_over_tcp_as_json_and_cef() {
    let Some(bin) = rsyslogd() else {
        skip("rsyslogd not found (Debian package rsyslog)");
        return;
    };
    // `eve`: JSON bodies with --log-format eve, as the alerts file of the same run.
    for format in ["json", "cef", "eve"] {
        let dir = scratch(&format!("syslog-tcp-{format}"));
        let port = free_port();
        let collector = Collector::start(&bin, &dir, port, false);
        let url = format!("tcp://127.0.0.1:{port}");
        let mut args = vec!["--syslog", &url, "--syslog-format"];
        if format == "eve" {
            args.extend(["json", "--log-format", "eve"]);
        } else {
            args.push(format);
        }
        let (alerts, stderr, code) = run(&dir, &args);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(alerts.len() >= 3, "{alerts:?}");
        let got = collector.received(alerts.len());
        assert_eq!(got.len(), alerts.len(), "{got:#?}");
        for (msg, alert) in got.iter().zip(&alerts) {
            let (header, body) = split(msg);
            assert!(
                header.starts_with('<') && header.contains(">1 "),
                "{header}"
            );
            assert!(header.contains(" cell-7 otwatch "), "{header}");
            let r#type = match format {
                "eve" => &alert["alert"]["metadata"]["otwatch_type"][0],
                _ => &alert["type"],
            };
            assert!(header.ends_with(r#type.as_str().unwrap()), "{header}");
            if format != "cef" {
                let sent: serde_json::Value = serde_json::from_str(body).expect("the alert's JSON");
                assert_eq!(&sent, alert);
            } else {
                assert!(body.starts_with("CEF:0|otwatch|otwatch|"), "{body}");
                assert!(
                    body.contains(&format!("externalId={}", alert["id"])),
                    "{body}"
                );
                if let Some(c) = alert["community_id"].as_str() {
                    assert!(
                        body.contains(&format!("cs1={}", c.replace('=', "\\="))),
                        "{body}"
                    );
                }
            }
        }
    }
}

#[test]
fn alerts_reach_rsyslog_over_tls_intact() {
    let Some(bin) = rsyslogd() else {
        skip("rsyslogd not found (Debian package rsyslog)");
        return;
    };
    if !Path::new(OSSL).exists() {
        skip("rsyslog's openssl driver not found (Debian package rsyslog-openssl)");
        return;
    }
    let dir = scratch("syslog-tls");
    write_test_certificates(&dir);
    let port = free_port();
    let collector = Collector::start(&bin, &dir, port, true);
    let url = format!("tls://localhost:{port}");
    let ca = dir.join("ca.crt");
    let (alerts, stderr, code) = run(
        &dir,
        &["--syslog", &url, "--syslog-ca", ca.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let got = collector.received(alerts.len());
    assert_eq!(got.len(), alerts.len(), "{got:#?}");
    let mut with_flow = 0;
    for (msg, alert) in got.iter().zip(&alerts) {
        let sent: serde_json::Value = serde_json::from_str(split(msg).1).expect("the alert's JSON");
        assert_eq!(&sent, alert);
        assert!(!sent["attack"].as_array().unwrap().is_empty(), "{sent}");
        with_flow += usize::from(sent["community_id"].is_string());
    }
    assert!(
        with_flow > 0,
        "an alert with its Community ID went over TLS"
    );
}

/// A collector that is down never holds up the capture: the run ends, and every alert it could
/// not deliver is counted (summary, exit status 1).
#[test]
fn a_down_collector_loses_nothing_quietly() {
    let dir = scratch("syslog-down");
    // The discard port: nobody listens on it here (a port from free_port() could be taken by
    // another test's collector meanwhile).
    let url = "tcp://127.0.0.1:9".to_string();
    let (alerts, stderr, code) = run(&dir, &["--syslog", &url]);
    assert!(
        !alerts.is_empty(),
        "the alerts file is written all the same"
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("syslog"), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    // Every alert line is accounted for.
    let lost = format!("{} message(s) undelivered", alerts.len());
    assert!(stderr.contains(&lost), "{lost}: {stderr}");
}

/// With `--syslog-events`, every event goes to the collector too (MSGID `event`, severity
/// informational), its body the event's line in the events file; with one worker and with two.
#[test]
fn events_reach_rsyslog_with_syslog_events() {
    let Some(bin) = rsyslogd() else {
        skip("rsyslogd not found (Debian package rsyslog)");
        return;
    };
    for workers in ["1", "2"] {
        let dir = scratch(&format!("syslog-events-{workers}"));
        let port = free_port();
        let collector = Collector::start(&bin, &dir, port, false);
        let url = format!("tcp://127.0.0.1:{port}");
        let events = dir.join("events.jsonl");
        let ev = events.to_str().unwrap();
        let args = [
            "--syslog",
            &url,
            "--syslog-events",
            "--events",
            ev,
            "--workers",
            workers,
        ];
        let (alerts, stderr, code) = run(&dir, &args);
        assert_eq!(code, Some(0), "{stderr}");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
            .expect("events file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("event json"))
            .collect();
        let got = collector.received(alerts.len() + lines.len());
        let sent_events: Vec<serde_json::Value> = got
            .iter()
            .map(|m| split(m))
            .filter(|(h, _)| h.ends_with(" event") && h.starts_with("<134>1 "))
            .map(|(_, b)| serde_json::from_str(b).expect("the event's JSON"))
            .collect();
        assert_eq!(sent_events, lines, "workers {workers}");
        assert_eq!(got.len(), alerts.len() + lines.len(), "workers {workers}");
    }
}

/// A collector killed in the middle of a paced run: capture goes on to the end, and the messages
/// that could not be delivered after the kill are counted (the summary, the exit status). (Bytes
/// the kernel took just before the kill are lost where no one can count them: docs/siem.md.)
#[test]
fn a_collector_killed_mid_run_is_counted_and_capture_goes_on() {
    let Some(bin) = rsyslogd() else {
        skip("rsyslogd not found (Debian package rsyslog)");
        return;
    };
    let dir = scratch("syslog-killed");
    let port = free_port();
    let mut collector = Collector::start(&bin, &dir, port, false);
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios/modbus_steady.pcap");
    // 120 s of capture at 10× is 12 s (long beside the kill, which comes once the first
    // events are in: a starved test thread must not find the run already over); every event
    // goes to the collector.
    let child = Command::new(OTWATCH)
        .args([
            "replay",
            "--speed",
            "10",
            "--learn",
            "30s",
            "--sensor-name",
            "k",
        ])
        .args([
            "--syslog",
            &format!("tcp://127.0.0.1:{port}"),
            "--syslog-events",
        ])
        .arg(&fixture)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("otwatch runs");
    // Killed once events have arrived.
    assert!(!collector.received(1).is_empty(), "rsyslog got events");
    collector.kill();
    let out = child.wait_with_output().expect("otwatch ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(" 549 packets"),
        "every packet read: {stderr}"
    );
    assert!(stderr.contains("FAILED: syslog output: "), "{stderr}");
}

/// The number in the summary's `syslog output: N failed writes`.
fn syslog_failures(stderr: &str) -> u64 {
    let Some(at) = stderr.find("syslog output: ") else {
        return 0;
    };
    stderr[at + "syslog output: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A collector that accepts each connection and closes it at once (a load balancer with no
/// backend, a collector at its session limit): the writes go into the kernel and the collector
/// resets them. That is counted (not every message need be: a reset says data was discarded,
/// not how much), and the run fails.
#[test]
fn a_collector_that_accepts_and_closes_is_counted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("port").port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let dir = scratch("syslog-accept-close");
    let url = format!("tcp://127.0.0.1:{port}");
    let (alerts, stderr, code) = run(&dir, &["--syslog", &url]);
    assert!(!alerts.is_empty());
    assert_eq!(code, Some(1), "{stderr}");
    let failed = syslog_failures(&stderr);
    assert!(
        failed >= 1 && failed <= alerts.len() as u64,
        "{failed} of {}: {stderr}",
        alerts.len()
    );
}

/// A collector that takes the connection and never reads (its queue or disk full): the
/// messages it did not acknowledge are counted as lost, and the run fails and ends. Before,
/// the sender dropped the connection with megabytes unsent and exited 0.
#[test]
fn a_collector_that_stops_reading_is_counted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("port").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let dir = scratch("syslog-stalled");
    let events = dir.join("events.jsonl");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios/modbus_steady_hour.pcap.gz");
    let out = Command::new(OTWATCH)
        .args(["replay", "--syslog", &format!("tcp://127.0.0.1:{port}")])
        .arg("--syslog-events")
        .arg("--events")
        .arg(&events)
        .arg(&fixture)
        .output()
        .expect("otwatch runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let sent = std::fs::read_to_string(&events)
        .expect("events")
        .lines()
        .count() as u64;
    let failed = syslog_failures(&stderr);
    // What the collector's kernel acknowledged into its receive buffer is not known to be
    // lost: most of the messages, not all, are counted.
    assert!(
        failed > sent / 2 && failed <= sent,
        "{failed} of {sent}: {stderr}"
    );
}

/// A TLS collector that trickles its handshake (a byte every half second, a record that never
/// completes): the connection is given up within its deadline, the alerts are counted, and the
/// run ends. Before, the handshake's per-read timeout never fired and the run never ended.
#[test]
fn a_tls_collector_that_trickles_its_handshake_does_not_hold_the_run() {
    use std::io::Write as _;
    let dir = scratch("syslog-trickle");
    write_test_certificates(&dir);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("port").port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                // A handshake record header announcing 16 KiB, then a byte now and then.
                let _ = c.write_all(&[0x16, 0x03, 0x03, 0x40, 0x00]);
                while c.write_all(&[0]).is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            });
        }
    });
    let url = format!("tls://127.0.0.1:{port}");
    let ca = dir.join("ca.crt");
    let alerts = dir.join("alerts.jsonl");
    let mut child = Command::new(OTWATCH)
        .args(["replay", "--learn", "60s", "--alerts"])
        .arg(&alerts)
        .args(["--syslog", &url, "--syslog-ca"])
        .arg(&ca)
        .arg(scenario())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("otwatch runs");
    let status = wait_or_kill(&mut child, "otwatch with a trickling TLS collector");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines = std::fs::read_to_string(&alerts)
        .expect("alerts")
        .lines()
        .count() as u64;
    assert!(lines > 0);
    assert_eq!(syslog_failures(&stderr), lines, "{stderr}");
}

/// A message over `--syslog-max-size` is not sent (a collector would split it into pieces that
/// are no longer JSON) and is counted: every event either reaches the collector whole, within
/// the size, or is counted as failed.
#[test]
fn a_message_over_the_size_the_collector_takes_is_counted_not_sent() {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("port").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let reader = std::thread::spawn(move || {
        // No connection at all (nothing small enough to send) must not hang the test.
        let mut c = None;
        for _ in 0..1200 {
            if let Ok((conn, _)) = listener.accept() {
                c = Some(conn);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let mut all = Vec::new();
        if let Some(mut c) = c {
            c.set_nonblocking(false).expect("blocking");
            let _ = c.read_to_end(&mut all);
        }
        // RFC 6587 octet counting: LEN SP MSG.
        let mut sizes = Vec::new();
        let mut at = 0;
        while let Some(sp) = all[at..].iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&all[at..at + sp])
                .expect("length")
                .parse()
                .expect("length");
            sizes.push(len);
            at += sp + 1 + len;
        }
        sizes
    });
    let dir = scratch("syslog-max-size");
    let events = dir.join("events.jsonl");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dnp3_example.pcap");
    let out = Command::new(OTWATCH)
        .args(["replay", "--syslog", &format!("tcp://127.0.0.1:{port}")])
        .args(["--syslog-events", "--syslog-max-size", "780", "--events"])
        .arg(&events)
        .arg(&fixture)
        .output()
        .expect("otwatch runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let sizes = reader.join().expect("reader");
    let sent = std::fs::read_to_string(&events)
        .expect("events")
        .lines()
        .count();
    let failed = syslog_failures(&stderr) as usize;
    assert!(failed > 0 && !sizes.is_empty(), "{stderr}");
    assert!(sizes.iter().all(|&n| n <= 780), "{sizes:?}");
    assert_eq!(sizes.len() + failed, sent, "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--syslog-max-size 780"), "{stderr}");
}
