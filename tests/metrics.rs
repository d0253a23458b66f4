//! Metrics end to end, with a real Prometheus (Debian's `prometheus` package; `.ci/run` installs
//! it): a scrape of `otwatch replay --speed … --metrics`, a TSDB backfilled from `--openmetrics`
//! with promtool, and every PromQL expression of the shipped dashboards and rules checked by
//! `promtool check rules`. Skipped, with the reason printed, where the binaries are absent.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::services::*;
use common::{scratch, write_test_certificates};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// PDUs per (proto, function) as the replay itself counts them.
fn replay_pdus(path: &Path) -> BTreeMap<(String, String), f64> {
    let (_, report) = common::replay_file(path);
    let mut out = BTreeMap::new();
    for (name, p) in [
        ("modbus", &report.stats[otwatch::dissect::registry::MODBUS]),
        ("s7comm", &report.stats[otwatch::dissect::registry::S7COMM]),
        ("dnp3", &report.stats[otwatch::dissect::registry::DNP3]),
    ] {
        for (fc, n) in p.functions() {
            out.insert((name.to_string(), fc.to_string()), n as f64);
        }
    }
    out
}

fn by_proto_function(
    series: &[(BTreeMap<String, String>, f64)],
) -> BTreeMap<(String, String), f64> {
    series
        .iter()
        .map(|(l, v)| {
            (
                (
                    l.get("proto").cloned().unwrap_or_default(),
                    l.get("function").cloned().unwrap_or_default(),
                ),
                *v,
            )
        })
        .collect()
}

/// The exporter alone: both formats by content negotiation, on loopback.
#[test]
fn metrics_endpoint_serves_both_formats() {
    let port = free_port();
    let fixture = repo().join("fixtures/scenarios/modbus_steady.pcap");
    let child = Command::new(env!("CARGO_BIN_EXE_otwatch"))
        .args([
            "replay",
            "-q",
            "--speed",
            "1000",
            "--sensor-name",
            "t",
            "--metrics",
        ])
        .arg(port.to_string())
        .args(["--metrics-hold", "120s"]) // killed when the test ends (the guard)
        .arg(&fixture)
        .spawn()
        .expect("otwatch");
    let _guard = Killed(child);
    let start = Instant::now();
    let mut text = None;
    while start.elapsed() < Duration::from_secs(20) {
        if let Some((200, body)) = http_get(port, "/metrics", None) {
            if body.contains("otwatch_pdus_total{proto=\"modbus\",function=\"3\",sensor=\"t\"} 240")
            {
                text = Some(body);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = text.expect("final metrics in the text format");
    assert!(text.contains("# TYPE otwatch_packets_total counter"));
    assert!(text.contains("otwatch_packets_total{sensor=\"t\"} 549"));
    // Every series names the sensor (--sensor-name), the server's own among them.
    assert!(
        text.lines()
            .filter(|l| l.starts_with("otwatch_"))
            .all(|l| l.contains("sensor=\"t\"")),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    let (code, om) = http_get(
        port,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .expect("openmetrics");
    assert_eq!(code, 200);
    assert!(
        om.contains("# TYPE otwatch_packets counter") && om.ends_with("# EOF\n"),
        "{om}"
    );
    assert_eq!(http_get(port, "/other", None).map(|r| r.0), Some(404));
    if have("promtool") {
        let mut p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        p.stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = p.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A real Prometheus scrapes a paced replay; the PDUs per function it stored equal the replay's
/// own counts.
#[test]
fn prometheus_scrapes_a_paced_replay() {
    if !have("prometheus") {
        return;
    }
    let dir = scratch("prom-scrape");
    let otw = free_port();
    let fixture = repo().join("fixtures/scenarios/modbus_steady.pcap");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: otwatch\n    static_configs:\n      - targets: ['127.0.0.1:{otw}']\n"
    );
    let (_prom, port) = start_prometheus(&dir, &config, &[]);
    // 120 s of capture at 20× is 6 s; the hold lets the last values be scraped.
    let status = Command::new(env!("CARGO_BIN_EXE_otwatch"))
        .args([
            "replay",
            "-q",
            "--speed",
            "20",
            "--learn",
            "30s",
            "--metrics",
        ])
        .arg(format!("127.0.0.1:{otw}"))
        .args(["--metrics-hold", "4s"])
        .arg(&fixture)
        .status()
        .expect("otwatch");
    assert!(status.success());
    // After otwatch exits, Prometheus's next failed scrape marks its series stale, and an
    // instant query would then find nothing: the last values scraped are asked for with
    // last_over_time, which skips staleness markers.
    let expected = replay_pdus(&fixture);
    assert_eq!(expected.get(&("modbus".into(), "3".into())), Some(&240.0));
    let got = by_proto_function(&query(port, "last_over_time(otwatch_pdus_total[1m])", None));
    assert_eq!(got, expected, "PDUs per function in Prometheus");
    // The series moved while the replay ran: several distinct values were scraped.
    let over_time = query(port, "count_over_time(otwatch_packets_total[1m])", None);
    assert!(
        over_time.first().is_some_and(|(_, n)| *n >= 3.0),
        "{over_time:?}"
    );
    let learning = query(port, "last_over_time(otwatch_learning[1m])", None);
    assert_eq!(
        learning.first().map(|s| s.1),
        Some(0.0),
        "learning ended after 30 s of capture"
    );
    // Every alert type is exported from the start (at 0 here: steady polling raises nothing).
    let alerts = query(port, "last_over_time(otwatch_alerts_total[1m])", None);
    assert!(
        alerts.len() >= 22 && alerts.iter().all(|(_, v)| *v == 0.0),
        "{alerts:?}"
    );
    let lat = query(
        port,
        "sum(last_over_time(otwatch_response_latency_seconds_count[1m]))",
        None,
    );
    assert_eq!(
        lat.first().map(|s| s.1),
        Some(180.0),
        "every request answered and timed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `--openmetrics` backfilled with promtool into a TSDB that Prometheus then serves: the values
/// are there, at the capture's own times.
#[test]
fn openmetrics_backfill_into_prometheus() {
    if !have("promtool") || !have("prometheus") {
        return;
    }
    let dir = scratch("prom-backfill");
    let om = dir.join("out.om");
    let fixture = repo().join("fixtures/scenarios/modbus_flood.pcap");
    let status = Command::new(env!("CARGO_BIN_EXE_otwatch"))
        .args([
            "replay",
            "-q",
            "--learn",
            "60s",
            "--sensor-name",
            "t",
            "--openmetrics",
        ])
        .arg(&om)
        .arg(&fixture)
        .status()
        .expect("otwatch");
    assert!(status.success());
    let data = dir.join("data");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&data)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The capture's last packet time: the final sample is there.
    let text = std::fs::read_to_string(&om).expect("om");
    let last_ts: f64 = text
        .lines()
        .filter(|l| l.starts_with("otwatch_capture_timestamp_seconds{sensor=\"t\"} "))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .fold(0.0, f64::max);
    assert!(last_ts > 1.7e9, "capture timestamps in the file");
    let (_prom, port) = start_prometheus(
        &dir,
        "global:\n  scrape_interval: 1h\n",
        &["--storage.tsdb.retention.time=100y"],
    );
    let expected = replay_pdus(&fixture);
    let got = by_proto_function(&query(port, "otwatch_pdus_total", Some(last_ts)));
    assert_eq!(got, expected, "PDUs per function at the capture's end");
    // The flood shows as a rate at the capture's own time.
    let floods = query(
        port,
        "otwatch_alerts_total{type=\"traffic_flood\"}",
        Some(last_ts),
    );
    assert_eq!(floods.first().map(|s| s.1), Some(1.0), "{floods:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every PromQL expression in the dashboards and rules is valid (promtool), and the dashboards
/// are wired for import: unique uid, a Prometheus datasource variable used by every panel and
/// target, defined variables only.
#[test]
fn dashboards_and_rules_are_valid() {
    let dashboards = repo().join("grafana/dashboards");
    let mut exprs = Vec::new();
    let mut uids = std::collections::BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dashboards)
        .expect("grafana/dashboards")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f).expect("read"))
            .expect("dashboard json");
        let name = f.display().to_string();
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty() && uids.insert(uid.to_string()),
            "{name}: uid {uid:?}"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: title"
        );
        let vars = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ds = vars
            .iter()
            .find(|v| v["type"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["query"], "prometheus", "{name}");
        let ds_name = ds["name"].as_str().unwrap_or_default().to_string();
        let var_names: Vec<String> = vars
            .iter()
            .filter_map(|v| v["name"].as_str().map(String::from))
            .collect();
        let mut panels = d["panels"].as_array().cloned().unwrap_or_default();
        let nested: Vec<serde_json::Value> = panels
            .iter()
            .flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default())
            .collect();
        panels.extend(nested);
        for p in &panels {
            if p["type"] == "row" && p["targets"].is_null() {
                continue;
            }
            let uid = p["datasource"]["uid"].as_str().unwrap_or_default();
            assert_eq!(
                uid,
                format!("${{{ds_name}}}"),
                "{name}: panel {:?} datasource",
                p["title"]
            );
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                assert_eq!(
                    t["datasource"]["uid"].as_str(),
                    Some(format!("${{{ds_name}}}").as_str()),
                    "{name}: target datasource"
                );
                if let Some(e) = t["expr"].as_str() {
                    for var in e.split('$').skip(1) {
                        let v: String = var
                            .trim_start_matches('{')
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        assert!(
                            v.starts_with("__") || var_names.contains(&v),
                            "{name}: undefined variable ${v} in {e}"
                        );
                    }
                    exprs.push(e.to_string());
                }
            }
        }
    }
    assert!(exprs.len() >= 20, "{} expressions", exprs.len());
    if !have("promtool") {
        return;
    }
    // The dashboards' expressions as recording rules, variables substituted.
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let mut q = e
            .replace("$__rate_interval", "5m")
            .replace("${__rate_interval}", "5m")
            .replace("$__interval_ms", "60000")
            .replace("$__interval", "1m")
            .replace("$__range", "1h");
        // Label variables are used as `label=~"$var"`.
        while let Some(at) = q.find('$') {
            let end = q[at + 1..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '{' || c == '}'))
                .map_or(q.len(), |n| at + 1 + n);
            q.replace_range(at..end, ".*");
        }
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&q).expect("quote")
        ));
    }
    let dir = scratch("dash-rules");
    let path = dir.join("dashboards.yml");
    std::fs::write(&path, rules).expect("rules");
    for file in [
        path.clone(),
        repo().join("grafana/rules/otwatch-sensor.yml"),
    ] {
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(repo().join("grafana/tests/otwatch-sensor.test.yml"))
        .current_dir(repo().join("grafana/tests"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(repo().join("grafana/prometheus.yml"))
        .current_dir(repo().join("grafana"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// An otwatch whose /metrics stays up (a replay held open); killed when dropped. Ready once
/// /metrics answers (401 when the web config asks for credentials).
fn serving_otwatch(port: u16, extra: &[&str], setup: impl FnOnce(&mut Command)) -> Killed {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otwatch"));
    cmd.args([
        "replay",
        "-q",
        "--sensor-name",
        "t",
        "--metrics",
        &format!("127.0.0.1:{port}"),
    ])
    .args(["--metrics-hold", "120s"])
    .args(extra)
    .arg(repo().join("fixtures/modbus_example.pcap"))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    setup(&mut cmd);
    let guard = Killed(cmd.spawn().expect("start otwatch"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if matches!(http_get(port, "/metrics", None), Some((200 | 401, _))) {
            return guard;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("otwatch did not serve /metrics");
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The value of one sample of the text exposition.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// A 10 MB request head is refused without being held, idle connections cost no thread each,
/// and a scrape still gets through while 200 of them are open.
#[test]
fn metrics_server_bounds_what_a_client_controls() {
    let port = free_port();
    let otw = serving_otwatch(port, &[], |_| {});
    let pid = otw.0.id();
    let before = proc_status(pid, "VmHWM:");
    // 10 MB of header.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < 10 * 1024 * 1024 {
        // The server stops reading (and closes) long before the end: writes then fail.
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    // Either the 431 arrived, or the reset the server's close caused on our unread data beat
    // it: in both cases the head was refused, not read.
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 431"),
        "{resp}"
    );
    let after = proc_status(pid, "VmHWM:");
    assert!(
        after.saturating_sub(before) < 4 * 1024,
        "peak RSS grew {} KiB on a 10 MB header",
        after - before
    );
    // 300 idle connections, past the limit of 256: no thread each, and a scrape still
    // answered: at the limit the oldest idle connection makes room (before, the scrape was
    // closed at once while idle ones held every slot).
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let threads = proc_status(pid, "Threads:");
    assert!(threads <= 4, "{threads} threads with 300 idle connections");
    let (code, body) = http_get(port, "/metrics", None).expect("scrape");
    assert_eq!(code, 200);
    let evicted = sample(
        &body,
        "otwatch_metrics_server_events_total{event=\"connection_evicted\",sensor=\"t\"}",
    );
    assert!(evicted.is_some_and(|n| n >= 45.0), "{evicted:?}");
    drop(idle);
}

/// Password checks are bounded per client: while one of a client's is pending, another
/// request of its with credentials not checked before is answered 429 at once (a flood of
/// wrong passwords from one host cannot queue the scraper's check behind seconds of bcrypt).
/// A bcrypt cost outside 4-16 is refused when the config is read.
#[test]
fn metrics_password_checks_are_bounded_per_client() {
    let dir = scratch("metrics-auth-bound");
    // Cost 14: a check takes well over the time the two requests below take to arrive.
    let hash = bcrypt::hash("s3cret", 14).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!("basic_auth_users:\n  scraper: '{hash}'\n"),
    )
    .unwrap();
    let port = free_port();
    let web = dir.join("web.yml").to_string_lossy().into_owned();
    let _otw = serving_otwatch(port, &["--web-config", &web], |_| {});
    let request = |password: &str| {
        let cred = base64_basic(&format!("scraper:{password}"));
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cred}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        s
    };
    let status = |mut s: TcpStream| {
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r.get(9..12).unwrap_or("").to_string()
    };
    let (a, b) = (request("wrong-1"), request("wrong-2"));
    let mut got = [status(a), status(b)];
    got.sort();
    assert_eq!(got, ["401", "429"]);
    // The right password, once nothing is pending.
    let ok = request("s3cret");
    assert_eq!(status(ok), "200");
    // A cost bcrypt cannot check (3) is refused at start.
    std::fs::write(
        dir.join("bad.yml"),
        format!(
            "basic_auth_users:\n  scraper: '{}'\n",
            hash.replacen("$14$", "$03$", 1)
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_otwatch"))
        .args(["replay", "-q", "--metrics", "0", "--web-config"])
        .arg(dir.join("bad.yml"))
        .arg(repo().join("fixtures/modbus_example.pcap"))
        .output()
        .expect("otwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cost 3"),
        "{stderr}"
    );
}

/// Basic credentials as the Authorization header carries them.
fn base64_basic(pair: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(pair)
}

/// Out of file descriptors, the server backs off and serves again once they come back
/// (tiny_http's accept thread died for good here).
#[test]
fn metrics_server_survives_descriptor_exhaustion() {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let _otw = serving_otwatch(port, &[], |cmd| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 48,
                    rlim_max: 48,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    // More connections than the process has descriptors: the kernel queues them. Once every
    // descriptor is taken, the next accept of a queued one fails (EMFILE), at once.
    let hogs: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    let pid = _otw.0.id();
    let start = Instant::now();
    while start.elapsed() < SAFETY_TIMEOUT {
        let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        if open >= 48 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Held a while longer: the server's next accept fails at once, and it retries (backoff
    // from 10 ms) while the hogs hold every descriptor; released at once, their hang-ups could
    // free descriptors before the server's thread got to that accept.
    std::thread::sleep(Duration::from_millis(500));
    drop(hogs);
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < SAFETY_TIMEOUT {
        last = http_get(port, "/metrics", None);
        if matches!(&last, Some((200, _))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = last.expect("a scrape after the descriptors came back");
    assert_eq!(code, 200);
    let errors = sample(
        &body,
        "otwatch_metrics_server_events_total{event=\"accept_error\",sensor=\"t\"}",
    );
    assert!(
        errors.is_some_and(|n| n > 0.0),
        "accept errors counted: {errors:?}"
    );
}

/// Only there so that a broken test cannot hang; not a performance threshold.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS and basic auth from an exporter-toolkit web config, scraped by a real Prometheus over
/// https with the right password (up) and with a wrong one (down, counted as unauthorized).
#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    if !have("prometheus") {
        return;
    }
    let dir = scratch("prom-tls");
    // A CA and a server certificate for 127.0.0.1.
    write_test_certificates(&dir);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    // Relative file names: taken from the config file's directory, as exporter-toolkit does.
    std::fs::write(
        dir.join("web.yml"),
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  scraper: '{hash}'\n"),
    )
    .unwrap();
    if have("promtool") {
        let ok = Command::new("promtool")
            .args(["check", "web-config"])
            .arg(dir.join("web.yml"))
            .output()
            .expect("promtool");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    let otw = free_port();
    let web = dir.join("web.yml");
    let _otwatch = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_otwatch"));
        cmd.args(["replay", "-q", "--metrics", &format!("127.0.0.1:{otw}")])
            .arg("--web-config")
            .arg(&web)
            .args(["--metrics-hold", "120s"])
            .arg(repo().join("fixtures/modbus_example.pcap"))
            .stdout(Stdio::null());
        Killed(cmd.spawn().expect("otwatch"))
    };
    // Plain HTTP to a TLS port gets no metrics (once the port is open: it is bound before the
    // replay starts).
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", otw)).is_err() && start.elapsed() < SAFETY_TIMEOUT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(TcpStream::connect(("127.0.0.1", otw)).is_ok());
    assert!(!matches!(http_get(otw, "/metrics", None), Some((200, _))));
    let ca = dir.join("ca.crt");
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: scraper\n      password: {password}\n    static_configs:\n      - targets: ['127.0.0.1:{otw}']\n",
            ca.display()
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
        job("right", "s3cret"),
        job("wrong", "guess")
    );
    let (_prom, port) = start_prometheus(&dir, &config, &[]);
    let start = Instant::now();
    let mut up = Vec::new();
    while start.elapsed() < SAFETY_TIMEOUT {
        up = query(port, "up", None);
        let packets = query(port, "otwatch_packets_total{job=\"right\"}", None);
        if up.len() == 2 && !packets.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let up_of = |job: &str| {
        up.iter()
            .find(|(l, _)| l.get("job").map(String::as_str) == Some(job))
            .map(|s| s.1)
    };
    assert_eq!(up_of("right"), Some(1.0), "{up:?}");
    assert_eq!(up_of("wrong"), Some(0.0), "{up:?}");
    let packets = query(port, "otwatch_packets_total{job=\"right\"}", None);
    assert_eq!(packets.first().map(|s| s.1), Some(100.0));
    let _ = std::fs::remove_dir_all(dir);
}

/// `--remote-write` into a real Prometheus (`--web.enable-remote-write-receiver`): what arrived,
/// queried back, is what the replay counted, every series labelled with the sensor's name.
#[test]
fn remote_write_reaches_a_real_prometheus() {
    if !have("prometheus") {
        return;
    }
    let dir = scratch("prom-remote-write");
    let (_prom, port) = start_prometheus(
        &dir,
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    );
    let fixture = repo().join("fixtures/scenarios/modbus_steady.pcap");
    let out = Command::new(env!("CARGO_BIN_EXE_otwatch"))
        .args(["replay", "--learn", "30s", "--sensor-name", "cell-a"])
        .arg("--remote-write")
        .arg(format!("http://127.0.0.1:{port}/api/v1/write"))
        .arg(&fixture)
        .output()
        .expect("otwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("remote-write: "), "{stderr}");
    let expected = replay_pdus(&fixture);
    let start = Instant::now();
    let mut got = BTreeMap::new();
    while start.elapsed() < SAFETY_TIMEOUT {
        got = by_proto_function(&query(port, "otwatch_pdus_total{sensor=\"cell-a\"}", None));
        if got == expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(got, expected, "PDUs per function pushed to Prometheus");
    // Histograms arrive as their buckets, sum and count.
    let lat = query(
        port,
        "sum(otwatch_response_latency_seconds_count{sensor=\"cell-a\"})",
        None,
    );
    assert_eq!(lat.first().map(|s| s.1), Some(180.0));
    let inf = query(
        port,
        "sum(otwatch_response_latency_seconds_bucket{sensor=\"cell-a\",le=\"+Inf\"})",
        None,
    );
    assert_eq!(inf.first().map(|s| s.1), Some(180.0));
    // Every series pushed carries the sensor label, and nothing else arrived.
    let all = query(port, "{__name__=~\"otwatch_.+\"}", None);
    assert!(!all.is_empty());
    assert!(
        all.iter()
            .all(|(l, _)| l.get("sensor").map(String::as_str) == Some("cell-a")),
        "{all:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A receiver that is not there: capture goes on to the end, every sample queued is counted as
/// lost, and the run exits non-zero.
#[test]
fn remote_write_to_a_down_receiver_is_counted() {
    let fixture = repo().join("fixtures/modbus_example.pcap");
    // Nothing listens on a port that was just free.
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_otwatch"))
        .args(["replay", "--sensor-name", "cell-a", "--remote-write"])
        .arg(format!("http://127.0.0.1:{port}/api/v1/write"))
        .arg(&fixture)
        .output()
        .expect("otwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(" 100 packets"), "{stderr}");
    // "remote-write: S samples in R requests queued for URL", and all S were lost.
    let queued: u64 = stderr
        .split("remote-write: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the remote-write summary line");
    assert!(queued > 0);
    assert!(
        stderr.contains(&format!("remote_write output: {queued} failed writes")),
        "{stderr}"
    );
}
