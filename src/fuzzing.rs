//! Fuzz harnesses for everything an attacker reaches beyond the protocol parsers: the capture
//! file reader (pcap, pcapng, gzip), decode with defragmentation, TCP reassembly and every
//! dissector's state driven by a sequence of packets into detection, baseline loading, and the
//! /metrics HTTP request path with its web config. Each takes arbitrary bytes and must neither
//! panic nor hang. `fuzz/` runs them under libFuzzer (`cargo fuzz run capture` …), and
//! `tests/fuzz.rs` runs each for a bounded number of cases inside `cargo test`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::capture::{CaptureFile, LinkType, Packet, PacketSource};
use crate::detection::{DetectSink, Detection};
use crate::event::{EventSink, NullSink, VecSink};
use crate::pipeline::Pipeline;
use otwatch_models::{Engine, EngineConfig};

/// Packets read from one input at most (a tiny input can describe very many empty records).
const MAX_PACKETS: usize = 4096;

/// The capture reader on `data` as a file's bytes; every packet it yields through the pipeline.
pub fn capture(data: &[u8]) {
    let Ok(mut cap) = CaptureFile::from_bytes(Path::new("fuzz.pcap"), data.to_vec()) else {
        return;
    };
    let source: Arc<str> = Arc::from("fuzz.pcap");
    let mut pipeline = Pipeline::new();
    let mut sink = VecSink::default();
    for _ in 0..MAX_PACKETS {
        match cap.next_packet() {
            Some(Ok(pkt)) => pipeline.process(&pkt, &source, &mut sink),
            Some(Err(e)) => {
                // Errors name the file and say what is wrong, for a person.
                let text = e.to_string();
                assert!(text.starts_with("fuzz.pcap: "), "{text}");
                break;
            }
            None => break,
        }
    }
    pipeline.finish(&mut sink);
}

/// Server ports a packet can go to: every dissected protocol, and one that none dissects
/// (chosen by the selector's two low bits and the time step's high bit).
const PORTS: [u16; 8] = [502, 20000, 102, 8080, 2404, 44818, 2222, 102];

/// Bytes read per packet record: selector, sequence delta (2), time step, payload length.
const RECORD_HEADER: usize = 5;

/// The frames of one fuzzer-described packet (two when IP-fragmented), the capture time step
/// before it in nanoseconds, and the input left.
type NextPacket<'a> = (Vec<Vec<u8>>, u64, &'a [u8]);

/// One packet from the front of `data`: Ethernet + IPv4 + TCP or UDP between one client and
/// one server, with the fuzzer choosing port, direction, flags, sequence jumps, time and payload;
/// sometimes cut into IP fragments. Returns the frames and the rest of the input.
fn next_packet<'a>(data: &'a [u8], seqs: &mut [u32; 2]) -> Option<NextPacket<'a>> {
    next_packet_between(data, seqs, ([10, 0, 0, 1], [10, 0, 0, 2]))
}

/// [`next_packet`] between the client and the server `hosts`.
fn next_packet_between<'a>(
    data: &'a [u8],
    seqs: &mut [u32; 2],
    hosts: ([u8; 4], [u8; 4]),
) -> Option<NextPacket<'a>> {
    let (head, rest) = data.split_at_checked(RECORD_HEADER)?;
    let (sel, delta, step, len) = (
        head[0],
        i16::from_be_bytes([head[1], head[2]]),
        head[3],
        usize::from(head[4]),
    );
    let (payload, rest) = rest.split_at_checked(len).unwrap_or((rest, &[]));
    let port = PORTS[usize::from(sel & 3) | usize::from(step >> 7) << 2];
    let to_server = sel & 4 == 0;
    let udp = sel & 8 != 0;
    let (client, server) = ((hosts.0, 40000u16), (hosts.1, port));
    let (src, dst) = if to_server {
        (client, server)
    } else {
        (server, client)
    };
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.0, dst.0, 64);
    let mut frame = Vec::new();
    let built = if udp {
        b.udp(src.1, dst.1).write(&mut frame, payload)
    } else {
        let dir = usize::from(!to_server);
        let seq = seqs[dir].wrapping_add(delta as i32 as u32);
        seqs[dir] = seq.wrapping_add(payload.len() as u32);
        let ack = seqs[1 - dir];
        let mut t = b.tcp(src.1, dst.1, seq, 8192);
        if sel & 16 != 0 {
            t = t.syn();
        }
        if sel & 32 != 0 {
            t = t.fin();
        }
        if sel & 64 != 0 {
            t = t.rst();
        }
        t.ack(ack).psh().write(&mut frame, payload)
    };
    built.ok()?;
    let frames = if sel & 128 != 0 {
        fragment(&frame)
    } else {
        vec![frame]
    };
    Some((frames, u64::from(step) * 50_000_000, rest))
}

/// An Ethernet/IPv4 frame cut into two IP fragments (when its IP payload is long enough).
fn fragment(frame: &[u8]) -> Vec<Vec<u8>> {
    const ETH: usize = 14;
    const IP: usize = 20;
    let Some(ip_payload) = frame.get(ETH + IP..) else {
        return vec![frame.to_vec()];
    };
    if ip_payload.len() < 16 {
        return vec![frame.to_vec()];
    }
    let cut = (ip_payload.len() / 2) & !7;
    let mut out = Vec::new();
    for (i, part) in [&ip_payload[..cut], &ip_payload[cut..]]
        .into_iter()
        .enumerate()
    {
        let mut f = frame[..ETH + IP].to_vec();
        let total = (IP + part.len()) as u16;
        f[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
        let offset = if i == 0 { 0x2000u16 } else { (cut / 8) as u16 };
        f[ETH + 6..ETH + 8].copy_from_slice(&offset.to_be_bytes());
        f[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
        f.extend_from_slice(part);
        out.push(f);
    }
    out
}

/// IPv4 and TCP headers as otwatch reads them by hand agree with etherparse's reading of the
/// same bytes: `data` as an IP packet and as a TCP segment.
pub fn decode(data: &[u8]) {
    crate::decode::assert_agrees_with_etherparse(data);
}

/// A sequence of packets built from `data` through decode, defragmentation, the flow table,
/// TCP reassembly, every dissector, and detection (learning for the first second of capture
/// time, then detecting), with evidence recorded.
pub fn packets(data: &[u8]) {
    let config = EngineConfig {
        learn_for: Some(1_000_000_000),
        ..EngineConfig::default()
    };
    let mut det = Detection::new(Engine::learning(config), None);
    let mut inner = NullSink;
    let mut sink = DetectSink {
        detection: &mut det,
        inner: &mut inner,
    };
    feed(data, &mut sink);
    let _ = det.finish();
}

/// The two ways to an observation agree: the packets `data` describes (as for [`packets`])
/// give the same observations, in the same order, when the dissectors build them from their
/// events and when they build them from the parsers' records (no events output on). And the
/// counts are the same either way, and with nobody reading the records (dissection alone),
/// but for the counts of events themselves.
pub fn observations(data: &[u8]) {
    let alone = feed(data, &mut NullSink).without_event_counts();
    for detail in [true, false] {
        let mut from_events = ObservationLog::new(true, detail);
        let events = feed(data, &mut from_events);
        let mut direct = ObservationLog::new(false, detail);
        let counted = feed(data, &mut direct);
        assert_eq!(from_events.seen, direct.seen);
        assert_eq!(events, counted, "counts");
        // Events are made only for a reader.
        assert_eq!(
            alone,
            events.without_event_counts(),
            "counts of dissection alone"
        );
    }
}

/// Detection's split agrees with one engine: on the observations `data` describes (a site's
/// learned polls, then requests of every kind among them), one engine, and two or three
/// workers with a stage, raise the same alerts. The harness is
/// [`otwatch_models::fuzzing::split`]; it is here with the others, for `fuzz/`.
pub fn split(data: &[u8]) {
    otwatch_models::fuzzing::split(data);
}

/// Keeps every observation a pipeline gives, as text. With `events` it asks for the events
/// and makes the observations from them; without, the dissectors that can build observations
/// of their own hand them over ([`EventSink::observed`]). `detail`: values and item data wanted
/// (detection), or not (per-channel metrics alone).
pub struct ObservationLog {
    events: bool,
    detail: bool,
    pub seen: Vec<String>,
    /// How many were handed over by their dissectors.
    pub direct: usize,
    /// The boxes taken, given back three observations later, as detection's batch gives back
    /// the boxes it has run: the dissectors build in boxes that held other observations.
    taken: std::collections::VecDeque<Box<otwatch_models::Observation>>,
}

impl ObservationLog {
    pub fn new(events: bool, detail: bool) -> Self {
        ObservationLog {
            events,
            detail,
            seen: Vec::new(),
            direct: 0,
            taken: std::collections::VecDeque::new(),
        }
    }
}

impl EventSink for ObservationLog {
    fn emit(&mut self, event: crate::event::Event) {
        if let Some(o) = crate::detection::observe::observe(&event) {
            self.seen.push(format!("{o:?}"));
        }
    }

    fn observed(
        &mut self,
        _key: crate::event::FlushKey,
        obs: &mut Box<otwatch_models::Observation>,
    ) {
        // A stream that contradicts itself is no PDU: its observation comes without an event
        // either way (`Ctx::stream_conflict`).
        let anomaly = obs.stream_anomaly.is_some();
        assert!(
            !self.events || anomaly,
            "a dissector built its own observation although the events were asked for"
        );
        if !anomaly {
            self.direct += 1;
        }
        self.seen.push(format!("{obs:?}"));
        let back = if self.taken.len() >= 3 {
            self.taken.pop_front()
        } else {
            None
        };
        self.taken
            .push_back(crate::event::take_observation(obs, back));
    }

    fn wants_events(&self) -> bool {
        true
    }
    fn wants_detail(&self) -> bool {
        self.detail
    }
    fn wants_observations(&self) -> bool {
        true
    }
    fn wants_event_out(&self) -> bool {
        self.events
    }
}

/// The packets `data` describes, through one pipeline into `sink`, then the end of input;
/// returns what the pipeline counted.
fn feed(data: &[u8], sink: &mut dyn EventSink) -> crate::stats::Stats {
    let source: Arc<str> = Arc::from("fuzz");
    let mut pipeline = Pipeline::new();
    let mut seqs = [1000u32, 5000u32];
    let mut ts = FUZZ_EPOCH;
    let mut rest = data;
    let mut frame_no = 0u64;
    while let Some((frames, step, next)) = next_packet(rest, &mut seqs) {
        rest = next;
        ts = ts.saturating_add(step as i64);
        for f in frames {
            frame_no += 1;
            let pkt = Packet {
                ts_nanos: ts,
                frame: frame_no,
                linktype: LinkType::ETHERNET,
                orig_len: f.len() as u32,
                data: &f,
                csum_not_ready: false,
            };
            pipeline.process(&pkt, &source, sink);
            sink.after_packet(&pipeline.stats, pipeline.active_flows(), ts);
        }
    }
    pipeline.finish(sink);
    pipeline.stats
}

/// One worker and two give the same events, in the same order, and the same alerts (a
/// multiset, ids aside), with the same observations checked: the packets of three host pairs
/// (`data` cut in three by its first byte, each part's packets as [`packets`] describes them,
/// between its own client and one of two servers), merged in time order, written as a capture
/// and replayed both ways, learning for its first second. Differential: the N-worker pipeline
/// (hand-out by host pair, the merge, detection split between the workers and the stage)
/// against one worker.
pub fn workers(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let a = rest.len() * usize::from(cut & 0x0f) / 16;
    let b = a + (rest.len() - a) * usize::from(cut >> 4) / 16;
    let mut frames: Vec<(i64, Vec<u8>)> = Vec::new();
    for (k, part) in [&rest[..a], &rest[a..b], &rest[b..]]
        .into_iter()
        .enumerate()
    {
        let hosts = ([10, 0, 0, 1 + k as u8], [10, 0, 1, 1 + (k % 2) as u8]);
        let (mut seqs, mut ts, mut rest) = ([1000u32, 5000u32], FUZZ_EPOCH, part);
        while let Some((fs, step, next)) = next_packet_between(rest, &mut seqs, hosts) {
            rest = next;
            ts = ts.saturating_add(step as i64);
            frames.extend(fs.into_iter().map(|f| (ts, f)));
            if frames.len() >= MAX_PACKETS {
                break;
            }
        }
    }
    // In time order; a stable sort keeps each part's packets of one time in their order.
    frames.sort_by_key(|f| f.0);
    // A file of its own: tests run harnesses on several threads of one process.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("otwatch-fuzz-workers-{}-{run}.pcap", std::process::id());
    let path = std::env::temp_dir().join(name);
    if write_pcap(&path, &frames).is_err() {
        return;
    }
    let one = detect_with(&path, 1);
    let two = detect_with(&path, 2);
    let _ = std::fs::remove_file(&path);
    assert_eq!(one.0, two.0, "observations checked");
    assert!(
        one.1 == two.1,
        "events differ (or come in another order) with two workers"
    );
    assert_eq!(one.2, two.2, "alerts with two workers");
}

/// The capture time of the fuzz harnesses' first packet.
const FUZZ_EPOCH: i64 = 1_700_000_000_000_000_000;

/// `frames` (capture time in nanoseconds, Ethernet frame) as a nanosecond pcap at `path`.
fn write_pcap(path: &Path, frames: &[(i64, Vec<u8>)]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(24 + frames.iter().map(|f| 16 + f.1.len()).sum::<usize>());
    out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (ts, f) in frames {
        let (secs, nanos) = (ts.div_euclid(1_000_000_000), ts.rem_euclid(1_000_000_000));
        out.extend_from_slice(&(secs as u32).to_le_bytes());
        out.extend_from_slice(&(nanos as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out)
}

/// Detection on the capture at `path` with `workers` workers, learning for its first second:
/// the observations it checked, the events' lines in order, and the alerts' lines (ids aside)
/// sorted.
fn detect_with(path: &Path, workers: usize) -> (u64, Vec<String>, Vec<String>) {
    let config = EngineConfig {
        learn_for: Some(1_000_000_000),
        ..EngineConfig::default()
    };
    let mut det = Detection::new(Engine::learning(config), None);
    det.kept = Some(Vec::new());
    let mut events = VecSink::default();
    let files = [path.to_path_buf()];
    if workers == 1 {
        let mut sink = DetectSink {
            detection: &mut det,
            inner: &mut events,
        };
        crate::replay::replay(&files, &mut sink, &mut Pipeline::new());
    } else {
        let mut stage = crate::shards::Stage {
            detection: Some(&mut det),
            events: &mut events,
        };
        crate::parallel::replay_sharded(&files, &mut stage, workers, None);
    }
    det.finish();
    let observations = det.engine.as_ref().map_or(0, |e| e.observations);
    let mut alerts: Vec<String> = det
        .kept
        .take()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let mut v = crate::output::alerts::alert_json(a);
            if let Some(m) = v.as_object_mut() {
                m.remove("id");
            }
            v.to_string()
        })
        .collect();
    alerts.sort();
    let events = events
        .0
        .iter()
        .map(|e| serde_json::to_string(e).unwrap_or_default());
    (observations, events.collect(), alerts)
}

/// Baseline loading on `data` as the file's text; a baseline that loads is described and
/// detected against.
pub fn baseline_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(baseline) = otwatch_models::Baseline::from_json(text, "fuzz.json") else {
        return;
    };
    let _ = baseline.describe();
    let mut engine = Engine::detecting(baseline, EngineConfig::default());
    let mut out = Vec::new();
    engine.tick(1_700_000_000_000_000_000, &mut out);
    let _ = engine.finish(&mut out);
}

/// The web config parser on `data` as the file's text.
pub fn web_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::metrics::web_config::WebConfig::parse(text, Path::new("."));
    }
}

/// One /metrics server for the whole fuzzing process, with basic auth on (so the credentials
/// path is reached too).
fn server() -> Option<&'static crate::metrics::MetricsServer> {
    static SERVER: OnceLock<Option<crate::metrics::MetricsServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            // As every Rust program's runtime does (libFuzzer's C `main` does not): a peer that
            // closes its end makes a write fail with EPIPE, not kill the process.
            // SAFETY: setting a signal's disposition to ignore, before any connection exists.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
            // A bcrypt hash of "s3cret" at the lowest cost (fast checks).
            let hash = bcrypt::hash("s3cret", 4).ok()?;
            let web = crate::metrics::web_config::WebConfig::parse(
                &format!("basic_auth_users:\n  scraper: '{hash}'\n"),
                Path::new("."),
            )
            .ok()?;
            crate::metrics::MetricsServer::start("127.0.0.1:0", Some(web)).ok()
        })
        .as_ref()
}

/// `data` as the bytes a client sends on one connection to /metrics; what the server answers
/// is read until it closes (or a short timeout).
pub fn http_request(data: &[u8]) {
    use std::io::{Read, Write};
    let Some(srv) = server() else { return };
    let Ok(mut s) = std::net::TcpStream::connect(srv.addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(200)));
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    // The server is still there for the next connection.
    assert!(srv.failure().is_none(), "{:?}", srv.failure());
}
