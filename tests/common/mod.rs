//! Helpers for tests: Modbus ADU builders and a TCP conversation written as a real pcap file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use etherparse::PacketBuilder;
use otwatch::event::{Event, VecSink};
use otwatch::pipeline::Pipeline;
use otwatch::replay::{replay, ReplayReport};

pub const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 50123);
pub const SERVER: ([u8; 4], u16) = ([10, 0, 0, 2], 502);

pub mod netns;
pub mod services;

/// Read holding registers request (fc 3).
pub fn read_holding_request(tid: u16, unit: u8, address: u16, quantity: u16) -> Vec<u8> {
    let mut v = tid.to_be_bytes().to_vec();
    v.extend_from_slice(&[0, 0, 0, 6, unit, 3]);
    v.extend_from_slice(&address.to_be_bytes());
    v.extend_from_slice(&quantity.to_be_bytes());
    v
}

/// Read holding registers response (fc 3).
pub fn read_holding_response(tid: u16, unit: u8, values: &[u16]) -> Vec<u8> {
    let mut v = tid.to_be_bytes().to_vec();
    let len = 3 + 2 * values.len() as u16;
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&[unit, 3, 2 * values.len() as u8]);
    for x in values {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// One TCP segment of a conversation: who sends it, where in the sender's stream it starts, its bytes.
#[derive(Debug, Clone)]
pub struct Segment {
    pub from: Side,
    pub offset: usize,
    pub data: Vec<u8>,
    /// False: the endpoints exchanged it, but the capture missed it (its bytes are still acked).
    pub captured: bool,
}

pub const CLIENT_ISN: u32 = 0xffff_ff00; // wraps within the test streams
pub const SERVER_ISN: u32 = 0x1000;

/// Write a conversation as an Ethernet pcap: optional handshake, then the segments in the order
/// given, each acknowledging everything the sender has received so far in that order.
pub fn write_conversation(path: &Path, handshake: bool, segments: &[Segment]) {
    let packets = conversation_packets(CLIENT_ISN, SERVER_ISN, handshake, segments);
    write_pcap(path, &packets);
}

/// The packets of one conversation with the given initial sequence numbers.
pub fn conversation_packets(
    client_isn: u32,
    server_isn: u32,
    handshake: bool,
    segments: &[Segment],
) -> Vec<Vec<u8>> {
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let build =
        |from: Side, seq: u32, ack: u32, syn: bool, ackf: bool, payload: &[u8]| -> Vec<u8> {
            let (src, dst) = match from {
                Side::Client => (CLIENT, SERVER),
                Side::Server => (SERVER, CLIENT),
            };
            let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(src.0, dst.0, 64)
                .tcp(src.1, dst.1, seq, 8192);
            let b = if syn { b.syn() } else { b };
            let b = if ackf { b.ack(ack) } else { b };
            let b = if payload.is_empty() { b } else { b.psh() };
            let mut out = Vec::new();
            b.write(&mut out, payload).expect("build packet");
            out
        };
    let (cbase, sbase) = (client_isn.wrapping_add(1), server_isn.wrapping_add(1));
    if handshake {
        packets.push(build(Side::Client, client_isn, 0, true, false, &[]));
        packets.push(build(Side::Server, server_isn, cbase, true, true, &[]));
        packets.push(build(Side::Client, cbase, sbase, false, true, &[]));
    }
    // What each side has received, contiguously, in send order.
    let (mut client_rcvd, mut server_rcvd) = (0usize, 0usize);
    for s in segments {
        let (seq, ack) = match s.from {
            Side::Client => (
                cbase.wrapping_add(s.offset as u32),
                sbase.wrapping_add(client_rcvd as u32),
            ),
            Side::Server => (
                sbase.wrapping_add(s.offset as u32),
                cbase.wrapping_add(server_rcvd as u32),
            ),
        };
        match s.from {
            Side::Client => server_rcvd = server_rcvd.max(s.offset + s.data.len()),
            Side::Server => client_rcvd = client_rcvd.max(s.offset + s.data.len()),
        }
        if s.captured {
            packets.push(build(s.from, seq, ack, false, true, &s.data));
        }
    }
    packets
}

/// Capture time of the i-th packet written by [`write_pcap`]: 10 ms apart from 2023-11-14.
pub fn packet_time(i: usize) -> std::time::Duration {
    std::time::Duration::from_millis(1_700_000_000_000 + 10 * i as u64)
}

pub fn write_pcap(path: &Path, packets: &[Vec<u8>]) {
    let timed: Vec<_> = packets
        .iter()
        .enumerate()
        .map(|(i, p)| (packet_time(i), p.clone()))
        .collect();
    write_pcap_at(path, &timed);
}

/// Write Ethernet packets with the given capture times.
pub fn write_pcap_at(path: &Path, packets: &[(std::time::Duration, Vec<u8>)]) {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::fs::File::create(path).expect("create pcap");
    let header = PcapHeader {
        datalink: pcap_file::DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(file, header).expect("pcap header");
    for (ts, p) in packets {
        w.write_packet(&PcapPacket::new(*ts, p.len() as u32, p))
            .expect("write packet");
    }
}

/// Replay one file; return its events and the report.
pub fn replay_file(path: &Path) -> (Vec<Event>, ReplayReport) {
    let mut sink = VecSink::default();
    let mut pipeline = Pipeline::new();
    let report = replay(&[path.to_path_buf()], &mut sink, &mut pipeline);
    (sink.0, report)
}

/// The scenario captures of fixtures/scenarios whose names start with `prefix`, sorted, each
/// with its path relative to the repository.
pub fn scenario_captures(prefix: &str) -> Vec<(String, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios");
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("fixtures/scenarios")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".pcap"))
        .map(|n| (format!("fixtures/scenarios/{n}"), dir.join(n)))
        .collect();
    v.sort();
    v
}

/// A fresh scratch directory for one test, removed when the test is done with it (when the
/// guard is dropped) unless the test is failing: then it is kept, and its path printed, for a
/// look at what the test left.
pub fn scratch(name: &str) -> Scratch {
    // A directory of its own for every call: tests run in parallel, and two that asked for the
    // same name (one helper called by two tests) would delete each other's files.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("otwatch-test-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Scratch(dir)
}

/// A test's scratch directory ([`scratch`]): a path, removed with its contents on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Says on the terminal that the calling test is skipped, and why. libtest captures `eprintln!`
/// of passing tests, so a skip printed that way is invisible in the default `cargo test` output;
/// a write straight to the stderr handle is not captured.
pub fn skip(why: impl std::fmt::Display) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// The corpus directory from OTWATCH_CORPUS, or `None` (with the skip reported).
pub fn corpus_dir() -> Option<PathBuf> {
    match std::env::var_os("OTWATCH_CORPUS") {
        Some(p) if Path::new(&p).is_dir() => Some(PathBuf::from(p)),
        Some(p) => {
            skip(format_args!("OTWATCH_CORPUS={p:?} is not a directory"));
            None
        }
        None => {
            skip("set OTWATCH_CORPUS to ../shared/pcaps to run the corpus tests");
            None
        }
    }
}

/// The captures under `dir`, at any depth, whose names end in one of `extensions`, sorted.
pub fn captures_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read corpus dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .is_some_and(|e| extensions.iter().any(|x| e == *x))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Whether tshark runs here; reports the skip when it does not.
pub fn tshark_or_skip() -> bool {
    let ok = std::process::Command::new("tshark")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("tshark not found (Debian package tshark)");
    }
    ok
}

/// How a detection run gets its baseline.
pub enum Learn {
    /// From the first this-many seconds of capture time, then detect.
    For(f64),
    /// A baseline learned beforehand.
    Baseline(Box<otwatch_models::Baseline>),
    /// From everything: only the alerts that need no baseline.
    Everything,
}

/// Which frames of a file to feed (1-based frame number in, keep out).
pub type FrameFilter<'a> = &'a dyn Fn(u64) -> bool;

pub fn all_frames(_: u64) -> bool {
    true
}

/// Replays `files` (each with a frame filter) through detection; returns every alert line and
/// the baseline at the end.
pub fn detect_files(
    learn: Learn,
    files: &[(&Path, FrameFilter<'_>)],
) -> (Vec<otwatch_models::Alert>, Option<otwatch_models::Baseline>) {
    detect_files_realert(
        learn,
        files,
        otwatch_models::EngineConfig::default().realert_secs,
    )
}

/// As [`detect_files`], with a repeat line for a cause seen again `realert_secs` after its last
/// line (0: a line for every occurrence, for scoring against labels).
pub fn detect_files_realert(
    learn: Learn,
    files: &[(&Path, FrameFilter<'_>)],
    realert_secs: f64,
) -> (Vec<otwatch_models::Alert>, Option<otwatch_models::Baseline>) {
    use otwatch::capture::{CaptureFile, PacketSource};
    use otwatch::detection::{DetectSink, Detection};
    use otwatch::event::EventSink;
    use otwatch_models::{Engine, EngineConfig};
    let config = EngineConfig {
        learn_for: match learn {
            Learn::For(s) => Some((s * 1e9) as i64),
            _ => None,
        },
        realert_secs,
        ..EngineConfig::default()
    };
    let engine = match learn {
        Learn::Baseline(b) => Engine::detecting(*b, config),
        _ => Engine::learning(config),
    };
    let mut det = Detection::new(engine, None);
    det.kept = Some(Vec::new());
    let mut pipeline = Pipeline::new();
    let mut inner = otwatch::event::NullSink;
    {
        let mut sink = DetectSink {
            detection: &mut det,
            inner: &mut inner,
        };
        for (path, keep) in files {
            let source: std::sync::Arc<str> = std::sync::Arc::from(path.to_string_lossy().as_ref());
            let mut cap = CaptureFile::open(path).expect("open capture");
            while let Some(pkt) = cap.next_packet() {
                let pkt = pkt.expect("packet");
                if keep(pkt.frame) {
                    pipeline.process(&pkt, &source, &mut sink);
                    sink.after_packet(&pipeline.stats, pipeline.active_flows(), pkt.ts_nanos);
                }
            }
        }
        pipeline.finish(&mut sink);
    }
    let baseline = det.finish();
    assert_eq!(
        det.outputs.total(),
        0,
        "outputs failed: {:?}",
        det.outputs.report()
    );
    (det.kept.take().unwrap_or_default(), baseline)
}

/// Learns a baseline from `files` (everything in them that the filters keep).
pub fn learn_files(files: &[(&Path, FrameFilter<'_>)]) -> otwatch_models::Baseline {
    detect_files(Learn::Everything, files)
        .1
        .expect("a baseline")
}

/// A test CA (`ca.crt`) and a server certificate for 127.0.0.1 and localhost signed by it
/// (`server.crt`, `server.key`), written into `dir`.
pub fn write_test_certificates(dir: &Path) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "otwatch test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params
        .extended_key_usages
        .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// tshark's fields of every frame matching `filter` in `path`, one row per frame (tab-separated
/// fields, every occurrence of a field joined with `,`), rows with fewer fields dropped.
pub fn tshark_fields(path: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let out = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args([
            "-Y",
            filter,
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ])
        .args(fields.iter().flat_map(|f| ["-e", f]))
        .output()
        .expect("run tshark");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(String::from).collect::<Vec<_>>())
        .filter(|row| row.len() >= fields.len())
        .collect()
}

/// A tshark field's `,`-joined hexadecimal values (`0x1a,0x02`).
pub fn hex_list(field: &str) -> Vec<u64> {
    field
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .collect()
}

/// Waits for `child` to end, killing it and failing with `what` if it has not after a minute or
/// two: a guard against a hang, not a measure of speed.
pub fn wait_or_kill(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("{what}: still running after two minutes");
}
