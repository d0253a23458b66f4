//! Real services for tests: a Prometheus and an rsyslogd started by the test, on loopback
//! ports of their own, killed when dropped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn have(bin: &str) -> bool {
    let found = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        super::skip(format_args!(
            "{bin} not installed (Debian package prometheus)"
        ));
    }
    found
}

/// A port for a test's server, free when this returns and never one the kernel hands out to
/// outgoing connections: it comes from below the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`). A port from `bind(":0")` is an ephemeral one,
/// and any connection another test opens meanwhile (an otwatch reaching its own collector) can
/// take it as its local end before the server binds it: the server then cannot listen, and the
/// test waits for it in vain.
pub fn free_port() -> u16 {
    // Never the same port twice in one test process: tests run in parallel, and a port found
    // free could be handed to the next caller before the first one's server binds.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 12000 {
        (10000, ephemeral_low)
    } else {
        (1024, ephemeral_low.max(2048)) // an unusual range: below it as far as there is room
    };
    let span = u64::from(high - low);
    // Each test process starts somewhere else in the range (test binaries run one after
    // another, and their servers' ports may linger in TIME_WAIT); the steps (7919, a prime
    // not dividing the span) visit every port of the range once.
    let seed = u64::from(std::process::id()).wrapping_mul(2654435761);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for step in 0..span {
        let port = low + ((seed + step * 7919) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        // Free on every address, as a server on 0.0.0.0 needs it.
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// A plain HTTP/1.0 GET on loopback: the status code and the body.
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

pub fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query through Prometheus's HTTP API: (labels, value) per series.
pub fn query(port: u16, q: &str, time: Option<f64>) -> Vec<(BTreeMap<String, String>, f64)> {
    let t = time.map(|t| format!("&time={t:.3}")).unwrap_or_default();
    let Some((200, body)) = http_get(
        port,
        &format!("/api/v1/query?query={}{t}", urlencode(q)),
        None,
    ) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let value = s["value"][1]
                        .as_str()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(f64::NAN);
                    (labels, value)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_prometheus(dir: &Path, config: &str, extra: &[&str]) -> (Killed, u16) {
    start_prometheus_on("127.0.0.1", dir, config, extra)
}

/// A Prometheus listening on `host` (`0.0.0.0`: reachable from the test's namespaces too), on a
/// free port; ready when this returns.
pub fn start_prometheus_on(host: &str, dir: &Path, config: &str, extra: &[&str]) -> (Killed, u16) {
    let port = free_port();
    std::fs::write(dir.join("prometheus.yml"), config).expect("config");
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={host}:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
        .spawn()
        .expect("start prometheus");
    let guard = Killed(child);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if matches!(http_get(port, "/-/ready", None), Some((200, _))) {
            return (guard, port);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "prometheus did not become ready: {}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
}
pub const OSSL: &str = "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so";

pub fn rsyslogd() -> Option<PathBuf> {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// An rsyslogd listening on 127.0.0.1:`port` (imtcp; `tls`: the openssl driver with `dir`'s
/// certificates), writing every message as received, one per line, to `dir/out.log`.
pub struct Collector {
    child: Child,
    pub out: PathBuf,
}

impl Collector {
    pub fn start(bin: &Path, dir: &Path, port: u16, tls: bool) -> Collector {
        Collector::start_on(bin, dir, "127.0.0.1", port, tls)
    }

    /// As `start`, listening on `address`.
    pub fn start_on(bin: &Path, dir: &Path, address: &str, port: u16, tls: bool) -> Collector {
        let d = dir.display();
        let global = if tls {
            format!(
                "global(workDirectory=\"{d}\" maxMessageSize=\"64k\" defaultNetstreamDriver=\"ossl\" \
                 defaultNetstreamDriverCAFile=\"{d}/ca.crt\" defaultNetstreamDriverCertFile=\"{d}/server.crt\" \
                 defaultNetstreamDriverKeyFile=\"{d}/server.key\")\n\
                 module(load=\"imtcp\" streamDriver.name=\"ossl\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\n"
            )
        } else {
            format!(
                "global(workDirectory=\"{d}\" maxMessageSize=\"64k\")\nmodule(load=\"imtcp\")\n"
            )
        };
        let conf = format!(
            "{global}input(type=\"imtcp\" address=\"{address}\" port=\"{port}\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             if $app-name == \"otwatch\" then action(type=\"omfile\" file=\"{d}/out.log\" template=\"raw\")\n\
             if $app-name == \"probe\" then action(type=\"omfile\" file=\"{d}/probe.log\" template=\"raw\")\n"
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).expect("conf");
        let log = dir.join("rsyslogd.log");
        let mut child = Command::new(bin)
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("rsyslogd's log"))
            .spawn()
            .expect("rsyslogd starts");
        // Ready when a probe sent to the port comes out in this rsyslogd's own file: the
        // listener is this one (not another test's on a reused port), and its output works.
        // The probe goes again each second until it comes out (a connection accepted while
        // rsyslogd is starting is not promised to be read).
        let (start, probe) = (Instant::now(), dir.join("probe.log"));
        let mut last_sent: Option<Instant> = None;
        while !std::fs::read_to_string(&probe).is_ok_and(|t| t.contains("ready")) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "rsyslogd on {address}:{port} ended ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "rsyslogd on {address}:{port} did not write the probe in 60 s (probe sent: {}): {}",
                    last_sent.is_some(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if tls {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break; // a TLS listener takes no plain probe: listening is what can be checked
                }
            } else if last_sent.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                    if c.write_all(b"<134>1 - - probe - - - ready\n").is_ok() {
                        last_sent = Some(Instant::now());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Collector {
            child,
            out: dir.join("out.log"),
        }
    }

    /// The messages received, once there are `n` of them (or after 10 s).
    pub fn received(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(String::from).collect();
            if lines.len() >= n || start.elapsed() > Duration::from_secs(10) {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Collector {
    /// Kills the collector now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
