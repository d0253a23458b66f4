//! Alerts (and, with `--syslog-events`, events) to a SIEM over syslog: RFC 5424 messages over UDP, TCP
//! (RFC 6587 octet counting) or TLS (rustls), carrying the alert's JSON or a CEF line.
//!
//! Capture never waits for the collector: messages go through a bounded queue to a sender
//! thread (`outbox.rs`), which reconnects with a backoff while the collector is down. A message
//! that finds the queue full, or that is still undelivered when the run ends, is counted as a
//! failure of the `syslog` output (summary, `otwatch_output_errors_total`, exit status).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use otwatch_models::Alert;

use super::outbox::{Backoff, Courier, Delivery, Outbox};
use super::{OutputHealth, OutputKind};

/// Messages waiting for the collector at most; past this they are dropped and counted.
pub const QUEUE: usize = 16_384;
/// How long the end of a run waits for the queue to drain to a reachable collector.
const DRAIN: Duration = Duration::from_secs(5);
/// A socket operation that makes no progress this long fails.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection (TCP, and the TLS handshake) is made within this, however slowly the collector
/// trickles: nothing on the sender thread waits without a bound.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// A batch is written within this, or the connection is given up.
const BATCH_DEADLINE: Duration = Duration::from_secs(10);
/// The send buffer asked of the kernel: what the collector has not acknowledged when a
/// connection breaks is counted as lost, and a small buffer keeps that window small.
const SEND_BUFFER: libc::c_int = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Cef,
}

/// Where to send: `udp://HOST:PORT`, `tcp://HOST:PORT` or `tls://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let bad = || {
            format!("--syslog {url}: expected udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT")
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let transport = match scheme {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => return Err(bad()),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Target {
            transport,
            host: host.to_string(),
            port,
        })
    }
}

/// The largest message sent by default: what rsyslog takes whole (its `maxMessageSize`; RFC
/// 5425 asks receivers for 8 KiB at least). A collector splits a longer one into fragments that
/// are no longer JSON: such a message is not sent, and counted.
pub const DEFAULT_MAX_SIZE: u32 = 8192;

/// The sending half, owned by detection; the outbox's thread does the network work.
pub struct SyslogSink {
    outbox: Outbox<Vec<u8>>,
    format: Format,
    sensor: Arc<str>,
    max_size: usize,
    health: Arc<OutputHealth>,
}

impl SyslogSink {
    /// Starts the sender thread. A TLS target needs `ca` (PEM) to check the collector with.
    pub fn start(
        target: Target,
        ca: Option<&Path>,
        format: Format,
        max_size: usize,
        sensor: Arc<str>,
        health: Arc<OutputHealth>,
    ) -> Result<SyslogSink, String> {
        let tls = match target.transport {
            Transport::Tls => Some(tls_config(ca)?),
            _ => None,
        };
        let sender = Sender::new(target, tls, Arc::clone(&health));
        let outbox = Outbox::start(
            sender,
            "otwatch-syslog",
            QUEUE,
            DRAIN,
            OutputKind::Syslog,
            Arc::clone(&health),
        )?;
        Ok(SyslogSink {
            outbox,
            format,
            sensor,
            max_size,
            health,
        })
    }

    /// Queues a message, or counts it as failed when it is over the size the collector takes.
    fn push(&mut self, msg: Vec<u8>) {
        if msg.len() > self.max_size {
            let why = format!(
                "a {}-byte message is over --syslog-max-size {}: not sent (raise it to what the collector takes)",
                msg.len(),
                self.max_size
            );
            self.health.fail(OutputKind::Syslog, 1, &why);
            return;
        }
        self.outbox.push(msg);
    }

    /// Queues an alert line; never blocks. The JSON body is `eve` when given
    /// (`--log-format eve`), else the native line; CEF is made from the native line.
    pub fn alert(&mut self, a: &Alert, json: &serde_json::Value, eve: Option<&serde_json::Value>) {
        let severity = match a.severity {
            otwatch_models::Severity::Critical => 2,
            otwatch_models::Severity::High => 3,
            otwatch_models::Severity::Medium => 4,
            otwatch_models::Severity::Low => 5,
        };
        let body = match self.format {
            Format::Json => eve.unwrap_or(json).to_string(),
            Format::Cef => cef(a, json),
        };
        let msg = rfc5424(severity, a.ts, &self.sensor, a.r#type, &body);
        self.push(msg);
    }

    /// Queues an event's JSON line (severity informational).
    pub fn event(&mut self, ts: i64, json: &[u8]) {
        let body = String::from_utf8_lossy(json);
        let msg = rfc5424(6, ts, &self.sensor, "event", &body);
        self.push(msg);
    }

    /// End of the run: the queue drains to the collector for up to 5 s; what is left is
    /// counted as failed.
    pub fn finish(&mut self) {
        self.outbox.finish();
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG` (facility local0).
fn rfc5424(severity: u8, ts: i64, sensor: &str, msgid: &str, body: &str) -> Vec<u8> {
    let pri = 16 * 8 + u32::from(severity);
    let host: String = sensor
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let host = if host.is_empty() { "-".into() } else { host };
    format!(
        "<{pri}>1 {} {host} otwatch {} {msgid} - {body}",
        crate::event::Timestamp(ts),
        std::process::id()
    )
    .into_bytes()
}

/// The alert as a CEF line: `CEF:0|otwatch|otwatch|VERSION|type|name|severity|extension`.
pub fn cef(a: &Alert, json: &serde_json::Value) -> String {
    // Header fields: no line breaks (one message, one line), `\` and `|` escaped.
    let header = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('|', "\\|")
            .replace(['\n', '\r'], " ")
    };
    let value = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('=', "\\=")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    let severity = match a.severity {
        otwatch_models::Severity::Critical => 10,
        otwatch_models::Severity::High => 8,
        otwatch_models::Severity::Medium => 5,
        otwatch_models::Severity::Low => 3,
    };
    let techniques: Vec<&str> = otwatch_models::alert::techniques(a.r#type)
        .iter()
        .map(|t| t.0)
        .collect();
    let mut ext = vec![
        format!("rt={}", a.ts / 1_000_000),
        format!("src={}", a.src_ip),
        format!("dst={}", a.dst_ip),
        format!("app={}", value(a.proto.name())),
        format!("externalId={}", a.id),
        format!("cnt={}", a.count),
        format!("act={}", a.state.name()),
        format!("cat={}", json["kind"].as_str().unwrap_or("")),
    ];
    if let Some(p) = a.ports {
        ext.push(format!("spt={}", p.src));
        ext.push(format!("dpt={}", p.dst));
        ext.push(format!("proto={}", if p.udp { "UDP" } else { "TCP" }));
    }
    if let Some(c) = json["community_id"].as_str() {
        ext.push(format!("cs1Label=communityId cs1={}", value(c)));
    }
    if !techniques.is_empty() {
        ext.push(format!(
            "cs2Label=mitreTechniques cs2={}",
            techniques.join(",")
        ));
    }
    if let Some(s) = json["sensor"].as_str() {
        ext.push(format!("dvchost={}", value(s)));
    }
    ext.push(format!("msg={}", value(&a.message)));
    format!(
        "CEF:0|otwatch|otwatch|{}|{}|{}|{severity}|{}",
        header(env!("CARGO_PKG_VERSION")),
        header(a.r#type),
        header(&a.message),
        ext.join(" ")
    )
}

fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let ca = ca.ok_or("--syslog tls://… needs --syslog-ca FILE (the collector's CA, PEM)")?;
    let pem = std::fs::read(ca).map_err(|e| format!("--syslog-ca {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("--syslog-ca {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("--syslog-ca {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--syslog-ca {}: no certificate", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The socket under TCP and TLS: counts the bytes written to it, and bounds every read and
/// write on it by the deadline of the operation it serves (a handshake, a batch), so that a
/// collector that trickles a byte now and then cannot hold the sender, or the end of the run.
struct Wire {
    s: TcpStream,
    written: u64,
    deadline: Option<Instant>,
}

impl Wire {
    fn arm(&self, read: bool) -> std::io::Result<()> {
        let timeout = match self.deadline {
            None => WRITE_TIMEOUT,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the collector is too slow",
                    ));
                }
                left.min(WRITE_TIMEOUT)
            }
        };
        if read {
            self.s.set_read_timeout(Some(timeout))
        } else {
            self.s.set_write_timeout(Some(timeout))
        }
    }

    /// Bytes written that the collector has not acknowledged (Linux `SIOCOUTQ`).
    fn unacked(&self) -> Option<u64> {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer, on a socket we own.
        let r = unsafe { libc::ioctl(self.s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        (r == 0).then_some(u64::try_from(n).unwrap_or(0))
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm(true)?;
        self.s.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm(false)?;
        let n = self.s.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(Wire),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Wire>>),
}

impl Conn {
    fn wire(&mut self) -> Option<&mut Wire> {
        match self {
            Conn::Udp(_) => None,
            Conn::Tcp(w) => Some(w),
            Conn::Tls(t) => Some(&mut t.sock),
        }
    }
}

/// What a look at a connection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Open,
    Closed,
    /// The collector reset the connection: it discarded data it had not read.
    Reset,
}

struct Sender {
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    health: Arc<OutputHealth>,
    conn: Option<Conn>,
    /// The connection was made for the batch now in `batch` (no batch went through on it yet).
    fresh: bool,
    /// Framed messages not yet written (TCP, TLS): written in one go when the queue runs empty
    /// or [`BATCH`] bytes are waiting, so that a busy run costs a system call per batch, not per
    /// message.
    batch: Vec<u8>,
    /// Messages in `batch`.
    batched: u64,
    /// The batch outlived the connection it was for: it goes first on the next one.
    stranded: bool,
    backoff: Backoff,
    /// The collector is known to be unreachable (said once).
    down: bool,
    /// Batches written on the connection that the collector has not acknowledged yet: the
    /// connection's byte count at each one's end, and its messages.
    inflight: VecDeque<(u64, u64)>,
    /// When the batches found acknowledged in the last [`RESET_WINDOW`] were, and their
    /// messages (a reset may have discarded them).
    recent_acked: VecDeque<(Instant, u64)>,
}

/// A collector that resets a connection discarded what it had acknowledged and not read yet:
/// the messages acknowledged this long before the reset was noticed, and the last batch
/// acknowledged in any case, are counted as lost (a working collector reads what arrives well
/// within it; one that accepts and closes at once read none of it). An upper bound: a
/// collector restarted in the middle of a stream had read most of them.
const RESET_WINDOW: Duration = Duration::from_millis(250);

/// Bytes of framed messages written at once (about: the message that passes it joins).
const BATCH: usize = 64 * 1024;

impl Sender {
    fn new(
        target: Target,
        tls: Option<Arc<rustls::ClientConfig>>,
        health: Arc<OutputHealth>,
    ) -> Self {
        Sender {
            target,
            tls,
            health,
            conn: None,
            fresh: false,
            batch: Vec::with_capacity(BATCH + 4096),
            batched: 0,
            stranded: false,
            backoff: Backoff::default(),
            down: false,
            inflight: VecDeque::new(),
            recent_acked: VecDeque::new(),
        }
    }

    fn describe(&self) -> String {
        format!("{}:{}", self.target.host, self.target.port)
    }

    /// Connects if not connected; false when the collector cannot be reached (now).
    fn ensure_connected(&mut self) -> bool {
        // A collector that closed the connection (a restart) is noticed before writing to it:
        // what is written to a closed connection is lost where nothing can count it.
        match self.conn.as_mut().map(peer_state) {
            Some(Peer::Closed) => self.drop_conn(false, "closed by the collector"),
            Some(Peer::Reset) => self.drop_conn(true, "reset by the collector"),
            _ => {}
        }
        if self.conn.is_some() {
            return true;
        }
        if !self.backoff.ready() {
            return false;
        }
        match self.connect() {
            Ok(c) => {
                self.down = false;
                self.conn = Some(c);
                self.fresh = true;
                true
            }
            Err(e) => {
                // Said once per outage; only messages that are lost count as failures.
                if !self.down {
                    self.down = true;
                    eprintln!(
                        "otwatch: warning: syslog collector {} unreachable: {e} (retrying; messages wait in a bounded queue)",
                        self.describe()
                    );
                }
                self.backoff.failed();
                false
            }
        }
    }

    /// Takes one message, connecting first if needed; false when it could not (retried later).
    /// Over TCP and TLS the message joins the batch; a datagram goes at once, and one that
    /// cannot be sent (too large, say) is dropped and counted, so it cannot hold up the rest.
    fn send(&mut self, msg: &[u8]) -> bool {
        if !self.ensure_connected() {
            return false;
        }
        // A batch that a broken connection left goes first.
        if self.stranded && !self.write_batch() {
            return false;
        }
        if let Some(Conn::Udp(s)) = &self.conn {
            if let Err(e) = s.send(msg) {
                // Refused: the ICMP port unreachable of an earlier datagram came back, and
                // this one was not sent either.
                let n = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    2
                } else {
                    1
                };
                let why = format!("{}: a datagram could not be sent: {e}", self.describe());
                self.health.fail(OutputKind::Syslog, n, &why);
            }
            return true;
        }
        framed(&mut self.batch, msg);
        self.batched += 1;
        if self.batch.len() >= BATCH {
            self.write_batch();
        }
        true
    }

    /// Writes the batch; false when the connection failed (the batch waits for the next one).
    /// A batch that fails on a connection made for it is dropped and counted, so that a
    /// collector that takes connections and then fails cannot hold everything up.
    fn write_batch(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        if let Some(w) = conn.wire() {
            w.deadline = Some(Instant::now() + BATCH_DEADLINE);
        }
        let written = match conn {
            Conn::Tcp(s) => s.write_all(&self.batch).and_then(|()| s.flush()),
            Conn::Tls(s) => s.write_all(&self.batch).and_then(|()| s.flush()),
            Conn::Udp(_) => Ok(()),
        };
        let end = conn.wire().map(|w| {
            w.deadline = None;
            w.written
        });
        match written {
            Ok(()) => {
                if let Some(end) = end {
                    self.inflight.push_back((end, self.batched));
                }
                self.batch.clear();
                self.batched = 0;
                self.fresh = false;
                self.stranded = false;
                self.backoff.succeeded();
                self.settle();
                true
            }
            Err(e) => {
                // A collector that accepts and then fails is retried with the same backoff as
                // one that refuses. The batch goes again whole on the next connection (what
                // of it went through may arrive twice).
                let reset = e.kind() == std::io::ErrorKind::ConnectionReset;
                let why = match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        "the collector stopped reading".to_string()
                    }
                    _ => e.to_string(),
                };
                self.drop_conn(reset, &why);
                self.backoff.failed();
                self.stranded = true;
                if self.fresh {
                    self.drop_batch(&format!(
                        "{}: {} message(s) failed on a new connection: {e}",
                        self.describe(),
                        self.batched
                    ));
                }
                false
            }
        }
    }

    /// Forgets the batches the collector acknowledged.
    fn settle(&mut self) {
        let Some(w) = self.conn.as_mut().and_then(Conn::wire) else {
            return;
        };
        let Some(acked) = w.unacked().map(|q| w.written.saturating_sub(q)) else {
            return;
        };
        let now = Instant::now();
        while let Some(&(end, units)) = self.inflight.front() {
            if end > acked {
                break;
            }
            self.recent_acked.push_back((now, units));
            self.inflight.pop_front();
        }
        // The last one stays, however old (a reset counts it at least).
        while self.recent_acked.len() > 1
            && self
                .recent_acked
                .front()
                .is_some_and(|&(at, _)| now.duration_since(at) > RESET_WINDOW)
        {
            self.recent_acked.pop_front();
        }
    }

    /// Gives the connection up: the batches written on it that the collector did not
    /// acknowledge are counted as lost (a collector that stopped reading, that accepts and
    /// closes, that went away), and after a reset those acknowledged within [`RESET_WINDOW`]
    /// too: the collector discarded data it had acknowledged and not read.
    fn drop_conn(&mut self, reset: bool, why: &str) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let acked = conn
            .wire()
            .and_then(|w| w.unacked().map(|q| w.written.saturating_sub(q)));
        let mut lost: u64 = self
            .inflight
            .drain(..)
            .filter(|&(end, _)| acked.is_none_or(|a| end > a))
            .map(|(_, units)| units)
            .sum();
        let recent = std::mem::take(&mut self.recent_acked);
        if reset {
            // The last batch acknowledged at least, however long ago.
            let now = Instant::now();
            let last = recent.len().saturating_sub(1);
            lost += recent
                .iter()
                .enumerate()
                .filter(|&(i, &(at, _))| i == last || now.duration_since(at) <= RESET_WINDOW)
                .map(|(_, &(_, units))| units)
                .sum::<u64>();
        }
        if lost > 0 {
            let why = format!(
                "{}: {lost} message(s) written but not known to be received when the connection ended ({why}; some may have arrived)",
                self.describe()
            );
            self.health.fail(OutputKind::Syslog, lost, &why);
        }
    }

    /// Everything written was acknowledged: the connection is closed politely (TLS
    /// close_notify, then the write side), and the collector's own close awaited until
    /// `deadline`: a reset instead says it discarded data it had acknowledged (a collector that
    /// accepts and closes at once), counted as lost; no answer by then is taken for a close.
    fn shut_down(&mut self, deadline: Instant) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Conn::Tls(t) = conn {
            t.conn.send_close_notify();
            t.sock.deadline = Some(Instant::now() + WRITE_TIMEOUT);
            let _ = t.conn.write_tls(&mut t.sock);
        }
        if let Some(w) = conn.wire() {
            let _ = w.s.shutdown(std::net::Shutdown::Write);
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match peer_state(conn) {
                Peer::Reset => return self.drop_conn(true, "reset by the collector at the end"),
                Peer::Closed => break,
                Peer::Open if Instant::now() >= deadline => break,
                Peer::Open => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        self.conn = None;
        self.recent_acked.clear();
    }

    fn drop_batch(&mut self, why: &str) {
        if self.batched > 0 {
            self.health.fail(OutputKind::Syslog, self.batched, &why);
        }
        self.batch.clear();
        self.batched = 0;
        self.stranded = false;
    }

    fn connect(&self) -> std::io::Result<Conn> {
        let addrs: Vec<_> = (self.target.host.as_str(), self.target.port)
            .to_socket_addrs()?
            .collect();
        let mut last = std::io::Error::other("no address");
        // Every address the name has (a dual-stack name whose first is unreachable).
        for addr in addrs {
            match self.connect_to(addr) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn connect_to(&self, addr: std::net::SocketAddr) -> std::io::Result<Conn> {
        if self.target.transport == Transport::Udp {
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(bind)?;
            s.connect(addr)?;
            return Ok(Conn::Udp(s));
        }
        let s = TcpStream::connect_timeout(&addr, WRITE_TIMEOUT)?;
        s.set_nodelay(true)?;
        // SAFETY: SO_SNDBUF takes one int, read from the pointer, on a socket we own.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&SEND_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let mut wire = Wire {
            s,
            written: 0,
            // TLS reads too (the handshake): within the connection's deadline.
            deadline: Some(Instant::now() + CONNECT_DEADLINE),
        };
        match &self.tls {
            None => {
                wire.deadline = None;
                Ok(Conn::Tcp(wire))
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.target.host.clone())
                    .map_err(std::io::Error::other)?;
                let c = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(std::io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(c, wire);
                // Handshake now, so a bad certificate is a connection failure, not a lost line.
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                tls.sock.deadline = None;
                Ok(Conn::Tls(Box::new(tls)))
            }
        }
    }
}

impl Courier for Sender {
    type Item = Vec<u8>;

    fn deliver(&mut self, msg: &Vec<u8>) -> Delivery {
        if self.send(msg) {
            Delivery::Done
        } else {
            Delivery::Retry
        }
    }

    fn units(_: &Vec<u8>) -> u64 {
        1
    }

    /// The queue ran empty: the batch goes now, so that an alert reaches the collector at once
    /// (after reconnecting, if the connection broke).
    fn idle(&mut self) {
        if !self.batch.is_empty() && self.ensure_connected() {
            self.write_batch();
        }
    }

    fn holding(&self) -> bool {
        !self.batch.is_empty()
    }

    /// The end of the run: the batch goes, or (the collector away) is counted as lost; then
    /// the collector has until `deadline` to acknowledge what was written, and what it has not
    /// is counted as lost.
    fn close(&mut self, deadline: Instant) {
        let sent = self.batch.is_empty() || self.ensure_connected() && self.write_batch();
        if !sent {
            let why = format!(
                "{} message(s) undelivered at the end: {} unreachable",
                self.batched,
                self.describe()
            );
            self.drop_batch(&why);
        }
        loop {
            self.settle();
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            if let Conn::Udp(s) = conn {
                // The last datagram's port unreachable, if it came back.
                if let Ok(Some(e)) = s.take_error() {
                    let why = format!("{}: a datagram could not be sent: {e}", self.describe());
                    self.health.fail(OutputKind::Syslog, 1, &why);
                }
                return;
            }
            match peer_state(conn) {
                Peer::Closed if !self.inflight.is_empty() => {
                    return self.drop_conn(false, "closed by the collector");
                }
                Peer::Reset => return self.drop_conn(true, "reset by the collector"),
                _ => {}
            }
            if self.inflight.is_empty() {
                return self.shut_down(deadline);
            }
            if Instant::now() >= deadline {
                return self.drop_conn(false, "not acknowledged within the drain time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    const UNITS: &'static str = "message(s)";

    fn describe(&self) -> String {
        Sender::describe(self)
    }
}

/// Whether the collector closed or reset the connection (or sent something, which a syslog
/// collector does only to close it): a non-blocking look at the socket. Over TLS what arrived
/// goes through rustls first (a TLS 1.3 server's session tickets are not a close).
fn peer_state(conn: &mut Conn) -> Peer {
    /// `Some(true)`: bytes to read; `Some(false)`: nothing yet; `None`: closed or reset.
    fn readable(s: &TcpStream) -> Result<bool, Peer> {
        let mut b = [0u8; 1];
        if s.set_nonblocking(true).is_err() {
            return Err(Peer::Closed);
        }
        let r = s.peek(&mut b);
        if s.set_nonblocking(false).is_err() {
            return Err(Peer::Closed);
        }
        match r {
            Ok(0) => Err(Peer::Closed),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(Peer::Reset),
            Err(_) => Err(Peer::Closed),
        }
    }
    match conn {
        Conn::Udp(_) => Peer::Open,
        Conn::Tcp(w) => match readable(&w.s) {
            Ok(false) => Peer::Open,
            Ok(true) => Peer::Closed,
            Err(p) => p,
        },
        Conn::Tls(t) => match readable(&t.sock.s) {
            Err(p) => p,
            Ok(false) => Peer::Open,
            Ok(true) => {
                if t.sock.s.set_nonblocking(true).is_err() {
                    return Peer::Closed;
                }
                let read = t.conn.read_tls(&mut t.sock.s);
                let closed = match (read, t.conn.process_new_packets()) {
                    (Err(e), _) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        let _ = t.sock.s.set_nonblocking(false);
                        return Peer::Reset;
                    }
                    (Ok(0), _) | (Err(_), _) | (_, Err(_)) => true,
                    (Ok(_), Ok(state)) => state.peer_has_closed(),
                };
                if t.sock.s.set_nonblocking(false).is_err() || closed {
                    Peer::Closed
                } else {
                    Peer::Open
                }
            }
        },
    }
}

/// RFC 6587 octet counting: `LEN SP MSG`, appended to `out`.
fn framed(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("tls://siem.example:6514").unwrap(),
            Target {
                transport: Transport::Tls,
                host: "siem.example".into(),
                port: 6514
            }
        );
        assert_eq!(Target::parse("udp://[::1]:514").unwrap().host, "::1");
        for bad in [
            "siem:514",
            "http://a:1",
            "tcp://:514",
            "tcp://a:port",
            "tcp://a",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cef_escapes_its_header_and_extension() {
        let key = otwatch_models::AlertKey::host("scan", [10, 0, 0, 9].into());
        let mut a = Alert::new(
            None,
            key,
            otwatch_models::Severity::High,
            otwatch_models::Proto::Modbus,
            [10, 0, 0, 9].into(),
            [10, 0, 0, 2].into(),
            1_700_000_000_000_000_000,
        );
        a.message = "a|b=c\\d\nnew".into();
        let json = serde_json::json!({"kind": "integrity", "sensor": "s=1"});
        let line = cef(&a, &json);
        assert!(line.starts_with("CEF:0|otwatch|otwatch|"), "{line}");
        assert!(line.contains("|scan|a\\|b=c\\\\d new|8|"), "{line}");
        assert!(
            line.contains("rt=1700000000000 src=10.0.0.9 dst=10.0.0.2 "),
            "{line}"
        );
        assert!(
            line.contains("cs2Label=mitreTechniques cs2=T0846,T0861"),
            "{line}"
        );
        assert!(line.contains("dvchost=s\\=1"), "{line}");
        assert!(line.ends_with("msg=a|b\\=c\\\\d\\nnew"), "{line}");
    }

    #[test]
    fn rfc5424_header() {
        let m = rfc5424(2, 1_700_000_000_000_000_000, "plant 7", "plc_stop", "{}");
        let m = String::from_utf8(m).unwrap();
        assert!(
            m.starts_with("<130>1 2023-11-14T22:13:20.000000Z plant7 otwatch "),
            "{m}"
        );
        assert!(m.ends_with(" plc_stop - {}"), "{m}");
    }
}
