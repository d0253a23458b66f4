//! The fleet demo, run for real: two otwatch sensors, each in a network namespace of its own
//! watching its own capture replayed onto its monitor port (a veth pair inside the namespace),
//! push their metrics (remote-write) to one Prometheus and send their alerts (syslog over TCP)
//! to one rsyslog, both outside the namespaces, reached over a management veth. What arrived
//! is told apart by `sensor`. Skipped, with the reason printed, when not root or when `ip`,
//! Prometheus or rsyslogd are missing.

#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::*;
use common::services::*;

const OTWATCH: &str = env!("CARGO_BIN_EXE_otwatch");
/// Only there so that a broken test cannot hang; not a performance threshold.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);

/// One sensor's namespace: a monitor veth pair inside it (`mon`, captured; `feed`, where the
/// test sends the capture's frames) and a management veth to the root namespace
/// (10.231.N.2 inside, 10.231.N.1 outside). Dropping it deletes the namespace and its links.
struct Site {
    ns: String,
    outside: String,
}

impl Site {
    fn new(n: u8) -> Site {
        let site = Site {
            ns: format!("otw-{}-fleet{n}", std::process::id()),
            outside: format!("otwfleet{n}"),
        };
        // A link left by a run that was killed would make the next one fail.
        let _ = Command::new("ip")
            .args(["link", "del", &site.outside])
            .output();
        run(&["ip", "netns", "add", &site.ns]);
        let ns = site.ns.as_str();
        run(&[
            "ip", "-n", ns, "link", "add", "mon", "type", "veth", "peer", "name", "feed",
        ]);
        for key in [
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ] {
            run(&["ip", "netns", "exec", ns, "sysctl", "-q", "-w", key]);
        }
        run(&[
            "ip",
            "link",
            "add",
            &site.outside,
            "type",
            "veth",
            "peer",
            "name",
            "mgmt",
            "netns",
            ns,
        ]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.231.{n}.1/30"),
            "dev",
            &site.outside,
        ]);
        run(&["ip", "link", "set", &site.outside, "up"]);
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.231.{n}.2/30"),
            "dev",
            "mgmt",
        ]);
        for ifname in ["lo", "mon", "feed", "mgmt"] {
            run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
        site
    }

    /// Sends `frames` on the monitor port's other end, from a thread inside the namespace.
    fn replay(&self, frames: Vec<Vec<u8>>) {
        let ns = self.ns.clone();
        std::thread::spawn(move || {
            enter_netns(&ns);
            RawSocket::bind("feed").send_all(&frames);
        })
        .join()
        .expect("sender");
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.outside])
            .output();
    }
}

struct Sensor {
    child: Child,
    alerts: PathBuf,
    stderr: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/scenarios")
        .join(name)
}

/// The integrity alert types and their causes in an alerts file. (Availability alerts depend on
/// time: the test sends a capture's minutes of frames in a moment, so a live sensor sees a
/// flood and silences that the replay, at the capture's own pace, does not.)
fn alert_types(path: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let a: serde_json::Value = serde_json::from_str(l).expect("alert json");
        if a["state"] == "first" && a["kind"] == "integrity" {
            *out.entry(a["type"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
    }
    out
}

#[test]
fn two_sensors_push_to_one_prometheus_and_one_rsyslog() {
    if let Some(why) = skip_reason() {
        common::skip(why);
        return;
    }
    if !have("prometheus") {
        return;
    }
    let Some(rsyslog) = rsyslogd() else {
        common::skip("rsyslogd not found (Debian package rsyslog)");
        return;
    };
    let dir = common::scratch("fleet");
    let (_prom, prom_port) = start_prometheus_on(
        "0.0.0.0",
        &dir,
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    );
    let syslog_port = free_port();
    let collector = Collector::start_on(&rsyslog, &dir, "0.0.0.0", syslog_port, false);

    let captures = ["modbus_write.pcap", "modbus_restart_scan.pcap"];
    let mut sites = Vec::new();
    let mut sensors = Vec::new();
    let mut expected = Vec::new();
    for (i, name) in captures.iter().enumerate() {
        let n = i as u8 + 1;
        // The sensor's baseline: learned on the first minute of its capture; the replay with
        // it gives the alerts the live sensor must raise.
        let baseline = dir.join(format!("baseline-{n}.json"));
        let reference = dir.join(format!("reference-{n}.jsonl"));
        let learn = Command::new(OTWATCH)
            .args(["replay", "-q", "--learn", "60s", "--save-baseline"])
            .arg(&baseline)
            .arg(scenario(name))
            .output()
            .expect("learn");
        assert!(learn.status.success(), "{learn:?}");
        let replay = Command::new(OTWATCH)
            .args(["replay", "-q", "--baseline"])
            .arg(&baseline)
            .arg("--alerts")
            .arg(&reference)
            .arg(scenario(name))
            .output()
            .expect("replay");
        assert!(replay.status.success(), "{replay:?}");
        let types = alert_types(&reference);
        assert!(!types.is_empty(), "{name} raises alerts");
        expected.push(types);

        let site = Site::new(n);
        let alerts = dir.join(format!("alerts-{n}.jsonl"));
        let central = format!("10.231.{n}.1");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &site.ns, OTWATCH, "live", "-i", "mon"])
            .args(["--ring-blocks", "64", "--sensor-name", &format!("cell-{n}")])
            .arg("--baseline")
            .arg(&baseline)
            .arg("--alerts")
            .arg(&alerts)
            .args(["--syslog", &format!("tcp://{central}:{syslog_port}")])
            .args([
                "--remote-write",
                &format!("http://{central}:{prom_port}/api/v1/write"),
                "--remote-write-interval",
                "1s",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start otwatch live");
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        for line in stderr.by_ref() {
            if line.expect("stderr line").contains("capturing on") {
                break;
            }
        }
        sensors.push(Sensor {
            child,
            alerts,
            stderr,
        });
        sites.push(site);
    }

    assert!(
        expected[0].contains_key("unauthorized_write"),
        "{expected:?}"
    );
    assert!(
        expected[1].contains_key("device_restart_command") && expected[1].contains_key("scan"),
        "{expected:?}"
    );
    // Each sensor watches its own capture.
    for (site, name) in sites.iter().zip(captures) {
        let frames = ethernet_frames(&scenario(name));
        assert!(!frames.is_empty());
        site.replay(frames);
    }
    let start = Instant::now();
    while start.elapsed() < SAFETY_TIMEOUT
        && sensors
            .iter()
            .zip(&expected)
            .any(|(s, e)| alert_types(&s.alerts) != *e)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stopped as systemd stops them: the last values are pushed, the syslog queue drains.
    let mut alert_lines = Vec::new();
    let mut counted = BTreeMap::new();
    for (i, s) in sensors.iter_mut().enumerate() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(s.child.id() as libc::pid_t, libc::SIGINT) };
        let rest: Vec<String> = s.stderr.by_ref().map_while(Result::ok).collect();
        let status = s.child.wait().expect("otwatch live exits");
        assert_eq!(status.code(), Some(0), "{}", rest.join("\n"));
        assert!(
            rest.iter().any(|l| l.contains("remote-write: ")),
            "{rest:?}"
        );
        // The packets the sensor counted ("otwatch live on mon: N packets, …"): the veth may
        // drop a frame of a burst, the sensor's own count is what its metrics must say.
        let packets: f64 = rest
            .iter()
            .find_map(|l| l.split("otwatch live on mon: ").nth(1))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no summary: {rest:?}"));
        assert!(packets > 0.0);
        counted.insert(format!("cell-{}", i + 1), packets);
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&s.alerts)
            .expect("alerts")
            .lines()
            .map(|l| serde_json::from_str(l).expect("alert json"))
            .collect();
        alert_lines.push(lines);
    }
    for (s, e) in sensors.iter().zip(&expected) {
        assert_eq!(alert_types(&s.alerts), *e, "live alerts, as the replay's");
    }

    // rsyslog: every alert line of each sensor, told apart by the sensor's name (the RFC 5424
    // HOSTNAME and the body's `sensor`).
    let total: usize = alert_lines.iter().map(Vec::len).sum();
    let got = collector.received(total);
    assert_eq!(got.len(), total, "{got:#?}");
    for (i, lines) in alert_lines.iter().enumerate() {
        let name = format!("cell-{}", i + 1);
        let bodies: Vec<serde_json::Value> = got
            .iter()
            .filter(|m| m.contains(&format!(" {name} otwatch ")))
            .map(|m| {
                let body = &m[m.find(" - ").expect("no structured data") + 3..];
                serde_json::from_str(body).expect("the alert's JSON")
            })
            .collect();
        assert_eq!(&bodies, lines, "{name}'s alerts in rsyslog");
        assert!(bodies.iter().all(|b| b["sensor"] == name.as_str()));
    }

    // Prometheus: both sensors' series, told apart by `sensor`.
    let packets = |q: &str| -> BTreeMap<String, f64> {
        query(prom_port, q, None)
            .into_iter()
            .map(|(l, v)| (l.get("sensor").cloned().unwrap_or_default(), v))
            .collect()
    };
    let want = counted;
    let start = Instant::now();
    let mut got = BTreeMap::new();
    while start.elapsed() < SAFETY_TIMEOUT {
        got = packets("otwatch_packets_total");
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(got, want, "packets per sensor in Prometheus");
    for (i, e) in expected.iter().enumerate() {
        let name = format!("cell-{}", i + 1);
        for (t, n) in e {
            let q = format!("otwatch_alerts_total{{sensor=\"{name}\",type=\"{t}\"}}");
            let v: f64 = query(prom_port, &q, None).iter().map(|s| s.1).sum();
            assert_eq!(v, *n as f64, "{q}");
        }
    }
    drop(sensors);
    drop(sites);
    let _ = std::fs::remove_dir_all(dir);
}
