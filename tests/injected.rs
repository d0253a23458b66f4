//! Injected episodes (issue 14): anomalies edited into real corpus captures, each detected by an
//! alert of the expected type that names a frame of the episode.
//!
//! The edits keep the captures valid: TCP sequence and acknowledgement numbers are shifted by the
//! bytes an edit adds or removes (so reassembly sees a consistent stream), and the IPv4 and TCP
//! checksums are computed again. Each episode goes into its own copy of the capture; its labels
//! are the frames (in the edited capture) of the packets the edit touched. Learning is the first
//! 40% of the capture, and every episode starts after it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use otwatch::capture::{CaptureFile, PacketSource};
use otwatch_models::{Alert, AlertState};

struct Pkt {
    ts: Duration,
    data: Vec<u8>,
    /// Touched by the episode: a label.
    episode: bool,
}

fn read(path: &Path) -> Vec<Pkt> {
    let mut cap = CaptureFile::open(path).expect("open capture");
    let mut out = Vec::new();
    while let Some(p) = cap.next_packet() {
        let p = p.expect("packet");
        out.push(Pkt {
            ts: Duration::from_nanos(p.ts_nanos as u64),
            data: p.data.to_vec(),
            episode: false,
        });
    }
    out
}

/// Writes the packets in time order (stable); returns the 1-based frames of the episode.
fn write(path: &Path, mut packets: Vec<Pkt>) -> BTreeSet<u64> {
    packets.sort_by_key(|p| p.ts);
    let timed: Vec<(Duration, Vec<u8>)> = packets.iter().map(|p| (p.ts, p.data.clone())).collect();
    write_pcap_at(path, &timed);
    (1..)
        .zip(&packets)
        .filter(|(_, p)| p.episode)
        .map(|(f, _)| f)
        .collect()
}

/// Where the headers of an Ethernet/IPv4/TCP packet are.
#[derive(Clone, Copy)]
struct Tcp {
    ip: usize,
    tcp: usize,
    payload: usize,
    /// End of the IP packet (Ethernet padding may follow).
    end: usize,
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// The TCP segment of an Ethernet (optionally VLAN-tagged) IPv4 frame; `None` for anything
/// else, or a frame too short for its headers.
fn tcp(d: &[u8]) -> Option<Tcp> {
    let mut ip = 14;
    d.get(ip + 20)?;
    let mut ethertype = be16(d, 12);
    if ethertype == 0x8100 {
        ethertype = be16(d, 16);
        ip = 18;
    }
    if ethertype != 0x0800 || d.get(ip + 9) != Some(&6) {
        return None;
    }
    d.get(ip + usize::from(d[ip] & 0x0f) * 4 + 20)?;
    let tcp = ip + usize::from(d[ip] & 0x0f) * 4;
    let payload = tcp + usize::from(d[tcp + 12] >> 4) * 4;
    // Short frames carry Ethernet padding after the IP packet.
    let end = ip + usize::from(be16(d, ip + 2));
    (end <= d.len() && payload <= end).then_some(())?;
    let addr = |at: usize| [d[at], d[at + 1], d[at + 2], d[at + 3]];
    Some(Tcp {
        ip,
        tcp,
        payload,
        end,
        src: (addr(ip + 12), be16(d, tcp)),
        dst: (addr(ip + 16), be16(d, tcp + 2)),
        seq: be32(d, tcp + 4),
        ack: be32(d, tcp + 8),
    })
}

fn checksum(sum: u32, bytes: &[u8]) -> u32 {
    bytes.chunks(2).fold(sum, |s, c| {
        s + u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
    })
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sets the payload, sequence and acknowledgement numbers; recomputes lengths and checksums.
/// A frame shorter than Ethernet's 60 bytes gets zero padding after the IP packet.
fn rebuild(d: &mut Vec<u8>, t: &Tcp, payload: &[u8], seq: u32, ack: u32) {
    d.truncate(t.payload);
    d.extend_from_slice(payload);
    let end = d.len();
    d[t.tcp + 4..t.tcp + 8].copy_from_slice(&seq.to_be_bytes());
    d[t.tcp + 8..t.tcp + 12].copy_from_slice(&ack.to_be_bytes());
    let total = (end - t.ip) as u16;
    d[t.ip + 2..t.ip + 4].copy_from_slice(&total.to_be_bytes());
    d[t.ip + 10..t.ip + 12].copy_from_slice(&[0, 0]);
    let ip_sum = fold(checksum(0, &d[t.ip..t.tcp]));
    d[t.ip + 10..t.ip + 12].copy_from_slice(&ip_sum.to_be_bytes());
    d[t.tcp + 16..t.tcp + 18].copy_from_slice(&[0, 0]);
    let len = (end - t.tcp) as u32;
    let pseudo = checksum(
        checksum(6 + len, &d[t.ip + 12..t.ip + 16]),
        &d[t.ip + 16..t.ip + 20],
    );
    let tcp_sum = fold(checksum(pseudo, &d[t.tcp..end]));
    d[t.tcp + 16..t.tcp + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    if d.len() < 60 {
        d.resize(60, 0);
    }
}

/// What an edit does with one segment of the connection.
enum Edit {
    Keep,
    /// Kept as it is, and labelled: a packet of the episode that the edit left alone (a
    /// request left unanswered, a poll whose neighbour was dropped).
    Mark,
    Drop,
    /// New payload (the stream grows or shrinks by the difference).
    Payload(Vec<u8>),
    /// Later by this much, labelled.
    Delay(Duration),
    /// Later by this much, not labelled (moved along by an earlier delay).
    Later(Duration),
}

/// Edits the segments of the TCP connection to `server` in capture order: `f(from_server, ts,
/// payload)` says what becomes of each. Sequence numbers after an edit are shifted by the bytes
/// it added or removed, and acknowledgements by what the other side's edits did up to the byte
/// they acknowledge. Touched segments are labelled.
fn edit(
    packets: &mut Vec<Pkt>,
    server: ([u8; 4], u16),
    mut f: impl FnMut(bool, Duration, &[u8]) -> Edit,
) {
    // Per direction (0: to the server): its first sequence number, and after each segment
    // the end of its bytes (relative) with the shift so far.
    let mut isn: [Option<u32>; 2] = [None, None];
    let mut shifts: [Vec<(u32, i64)>; 2] = [Vec::new(), Vec::new()];
    let shift_at = |shifts: &Vec<(u32, i64)>, rel: u32| -> i64 {
        let i = shifts.partition_point(|s| s.0 <= rel);
        if i == 0 {
            0
        } else {
            shifts[i - 1].1
        }
    };
    let mut out = Vec::with_capacity(packets.len());
    for mut p in packets.drain(..) {
        let Some(t) = tcp(&p.data) else {
            out.push(p);
            continue;
        };
        let d = if t.dst == server {
            0
        } else if t.src == server {
            1
        } else {
            out.push(p);
            continue;
        };
        let seq0 = *isn[d].get_or_insert(t.seq);
        let rel = t.seq.wrapping_sub(seq0);
        let payload = p.data[t.payload..t.end].to_vec();
        let rel_end = rel.wrapping_add(payload.len() as u32);
        // A segment that brings nothing past what was already sent (a retransmission, a pure
        // ACK) keeps its bytes: only shifted by the edits before it.
        let fresh = !payload.is_empty() && shifts[d].last().is_none_or(|s| rel_end > s.0);
        let cur = shift_at(&shifts[d], rel);
        let e = if fresh || payload.is_empty() {
            f(d == 1, p.ts, &payload)
        } else {
            Edit::Keep
        };
        let new_payload = match &e {
            Edit::Drop => Vec::new(),
            Edit::Payload(v) => v.clone(),
            Edit::Keep | Edit::Mark | Edit::Delay(_) | Edit::Later(_) => payload.clone(),
        };
        if fresh {
            let grown = new_payload.len() as i64 - payload.len() as i64;
            shifts[d].push((rel_end, cur + grown));
        }
        if matches!(e, Edit::Drop) {
            continue;
        }
        let other = 1 - d;
        let ack = match isn[other] {
            Some(o) => {
                let s = shift_at(&shifts[other], t.ack.wrapping_sub(o));
                t.ack.wrapping_add(s as u32)
            }
            None => t.ack,
        };
        rebuild(
            &mut p.data,
            &t,
            &new_payload,
            t.seq.wrapping_add(cur as u32),
            ack,
        );
        match e {
            Edit::Keep => {}
            Edit::Delay(by) => {
                p.ts += by;
                p.episode = true;
            }
            Edit::Later(by) => p.ts += by,
            Edit::Drop | Edit::Mark | Edit::Payload(_) => p.episode = true,
        }
        out.push(p);
    }
    *packets = out;
}

fn corpus_file(name: &str) -> Option<PathBuf> {
    corpus_dir().map(|d| d.join(name))
}

/// The Modbus connection of modbusBig.pcap: 10.235.149.240 polls 10.235.149.243 with
/// write single coil (5) and read coils (1), one request every ~40 ms, for 58 s.
const BIG_PLC: ([u8; 4], u16) = ([10, 235, 149, 243], 502);

/// Learns for `learn` seconds (the first 40% of the original capture), detects on the rest; the
/// alert lines (repeats included: realert 0) of `expected` type that name an episode frame,
/// and every type raised.
fn detect(
    path: &Path,
    learn: f64,
    episode: &BTreeSet<u64>,
    expected: &str,
) -> (Vec<Alert>, BTreeSet<&'static str>) {
    let alerts = detect_files_realert(Learn::For(learn), &[(path, &all_frames)], 0.0).0;
    let types = alerts
        .iter()
        .filter(|a| a.state == AlertState::First)
        .map(|a| a.r#type)
        .collect();
    let hits = alerts
        .into_iter()
        .filter(|a| a.r#type == expected && a.frames.iter().any(|f| episode.contains(f)))
        .collect();
    (hits, types)
}

/// The first 40% of a capture's time, in seconds.
fn learn_of(packets: &[Pkt]) -> f64 {
    let (first, last) = (packets[0].ts, packets[packets.len() - 1].ts);
    (last - first).as_secs_f64() * 0.4
}

/// Capture time of modbusBig.pcap's first packet plus `s` seconds.
fn big_at(packets: &[Pkt], s: f64) -> Duration {
    packets[0].ts + Duration::from_secs_f64(s)
}

fn modbus_fc(payload: &[u8]) -> Option<u8> {
    payload.get(7).copied()
}

struct Episode {
    name: &'static str,
    /// Seconds of learning: the first 40% of the original capture.
    learn: f64,
    expected: &'static str,
    file: PathBuf,
    frames: BTreeSet<u64>,
}

fn check(episodes: &[Episode]) {
    let mut failed = Vec::new();
    for e in episodes {
        assert!(!e.frames.is_empty(), "{}: the edit touched nothing", e.name);
        let (hits, types) = detect(&e.file, e.learn, &e.frames, e.expected);
        eprintln!(
            "injected {}: {} frames; {} of its {} alert lines name them; all types raised {:?}",
            e.name,
            e.frames.len(),
            hits.len(),
            e.expected,
            types
        );
        if hits.is_empty() {
            failed.push(e.name);
        }
    }
    assert!(failed.is_empty(), "not detected: {failed:?}");
}

#[test]
fn injected_modbus_episodes_are_detected() {
    let Some(base) = corpus_file("modbus/modbusBig.pcap") else {
        return;
    };
    let dir = scratch("injected");
    let original = read(&base);
    let learn = learn_of(&original);
    let start = big_at(&original, 35.0);
    let end = big_at(&original, 45.0);
    let within = |ts: Duration| ts >= start && ts < end;
    let mut episodes = Vec::new();
    let mut make = |name: &'static str,
                    expected: &'static str,
                    f: &mut dyn FnMut(bool, Duration, &[u8]) -> Edit| {
        let mut packets = read(&base);
        edit(&mut packets, BIG_PLC, f);
        let file = dir.join(format!("{name}.pcap"));
        let frames = write(&file, packets);
        episodes.push(Episode {
            name,
            learn,
            expected,
            file,
            frames,
        });
    };

    // The PLC falls silent on Modbus at 35 s (it still talks S7 on port 102).
    make(
        "silent",
        "response_timeout",
        &mut |from_server, ts, p| match (from_server, ts >= start, p.is_empty()) {
            (true, true, _) => Edit::Drop,
            (false, true, false) => Edit::Mark,
            _ => Edit::Keep,
        },
    );
    // Its answers slowed by 100 ms for 10 s.
    // The master waits for each answer before its next request, so everything after a slowed
    // answer comes later too: the delays add up over the connection.
    let mut offset = Duration::ZERO;
    make("slow", "latency_shift", &mut |from_server, ts, p| {
        if from_server && !p.is_empty() && within(ts) {
            offset += Duration::from_millis(100);
            Edit::Delay(offset)
        } else if offset > Duration::ZERO {
            Edit::Later(offset)
        } else {
            Edit::Keep
        }
    });
    // The master floods: 1500 more read-coils requests in one burst, answered in one burst.
    let mut burst = None::<(Vec<u8>, bool)>;
    make(
        "master_flood",
        "traffic_flood",
        &mut |from_server, ts, p| {
            if ts < start || p.is_empty() || modbus_fc(p) != Some(1) {
                return Edit::Keep;
            }
            match (&mut burst, from_server) {
                (None, false) => {
                    let mut more = p.to_vec();
                    for i in 0..1500u16 {
                        let mut r = p.to_vec();
                        r[0..2].copy_from_slice(&(0x8000 | i).to_be_bytes());
                        more.extend_from_slice(&r);
                    }
                    burst = Some((Vec::new(), false));
                    Edit::Payload(more)
                }
                (Some((_, answered)), true) if !*answered => {
                    *answered = true;
                    let mut more = p.to_vec();
                    for i in 0..1500u16 {
                        let mut r = p.to_vec();
                        r[0..2].copy_from_slice(&(0x8000 | i).to_be_bytes());
                        more.extend_from_slice(&r);
                    }
                    Edit::Payload(more)
                }
                _ => Edit::Keep,
            }
        },
    );
    // The master writes coil 60000, far from the coils it writes and reads (its request and the
    // echo).
    let mut wrote = 0;
    make("far_write", "address_out_of_range", &mut |_, ts, p| {
        if ts < start || wrote >= 2 || modbus_fc(p) != Some(5) || p.len() != 12 {
            return Edit::Keep;
        }
        wrote += 1;
        let mut v = p.to_vec();
        v[8..10].copy_from_slice(&60000u16.to_be_bytes());
        Edit::Payload(v)
    });
    check(&episodes);
}

/// One episode edited into the corpus capture `name` (the connection to `server`), from
/// `from_s` seconds into it: `f(from, from_server, ts, payload)` says what becomes of each
/// segment; checked to be detected by an alert of type `expected`.
fn single(
    name: &str,
    server: ([u8; 4], u16),
    episode: &'static str,
    expected: &'static str,
    from_s: f64,
    mut f: impl FnMut(Duration, bool, Duration, &[u8]) -> Edit,
) {
    let Some(base) = corpus_file(name) else {
        return;
    };
    let dir = scratch(episode);
    let mut packets = read(&base);
    let learn = learn_of(&packets);
    let from = big_at(&packets, from_s);
    edit(&mut packets, server, |from_server, ts, p| {
        f(from, from_server, ts, p)
    });
    let file = dir.join(format!("{episode}.pcap"));
    let frames = write(&file, packets);
    check(&[Episode {
        name: episode,
        learn,
        expected,
        file,
        frames,
    }]);
}

/// ModbusTCP.pcap: 141.81.0.10 reads input registers 399.. of 141.81.0.86 (function 4). Three
/// answers after learning report 9999 in every register.
#[test]
fn injected_value_out_of_envelope_is_detected() {
    let mut changed = 0;
    let plc = ([141, 81, 0, 86], 502);
    single(
        "modbus/ModbusTCP.pcap",
        plc,
        "value_out_of_envelope",
        "value_out_of_range",
        60.0,
        |start, from_server, ts, p| {
            if !from_server || ts < start || changed >= 3 || modbus_fc(p) != Some(4) || p.len() < 11
            {
                return Edit::Keep;
            }
            changed += 1;
            let mut v = p.to_vec();
            for r in v[9..].chunks_exact_mut(2) {
                r.copy_from_slice(&9999u16.to_be_bytes());
            }
            Edit::Payload(v)
        },
    );
}

/// wincc_s300_setup-alarm-read-write.pcapng: the HMI 134.249.53.130 writes bits of M1 from
/// 6.8 s to 31 s. One of its writes after learning goes to DB 99 instead: a data block it never
/// wrote or read.
#[test]
fn injected_s7_write_to_a_new_data_block_is_detected() {
    let mut done = false;
    let plc = ([134, 249, 61, 182], 102);
    let capture = "s7/wincc_s300_setup-alarm-read-write.pcapng";
    single(
        capture,
        plc,
        "s7_write_to_new_db",
        "address_out_of_range",
        24.0,
        |start, from_server, ts, p| {
            // TPKT (4), COTP DT (3), S7 header (10), then the Write Var parameter: function 5,
            // one item whose S7ANY address has its DB at +6 and area at +8.
            let job = p.len() > 7 + 10 + 14 && p[7] == 0x32 && p[8] == 1 && p[17] == 5;
            if from_server || ts < start || done || !job {
                return Edit::Keep;
            }
            done = true;
            let mut v = p.to_vec();
            let item = 7 + 10 + 2;
            v[item + 6..item + 8].copy_from_slice(&99u16.to_be_bytes());
            v[item + 8] = 0x84;
            Edit::Payload(v)
        },
    );
}

/// ConveyorBeltOn_Flooding.hmi.pcap: the HMI 10.10.10.20 reads the PLC 10.10.10.10 with a few
/// Read Var jobs, each once a second, and never skipped one in the capture's 511 s (the flood
/// of that run went over the PLC's other port). From 300 s to 360 s, every other job of each
/// kind is skipped, with its answer.
#[test]
fn injected_every_other_poll_skipped_is_detected() {
    let mut seen: std::collections::HashMap<Vec<u8>, u32> = Default::default();
    let mut dropped_refs = BTreeSet::new();
    let plc = ([10, 10, 10, 10], 102);
    let capture = "labelled/20161215192146.ConveyorBeltOn_Flooding.hmi.pcap";
    single(
        capture,
        plc,
        "every_other_poll",
        "poll_cycle_broken",
        300.0,
        |start, from_server, ts, p| {
            // TPKT (4) and COTP DT (3), then S7: a job's PDU reference at +4, its parameter
            // (function, item count, first item) at +10; an ack_data's parameter at +12.
            let s7 = p.len() > 7 + 12 && p[7] == 0x32;
            if !s7 || ts < start || ts >= start + Duration::from_secs(60) {
                return Edit::Keep;
            }
            let pdu_ref = [p[11], p[12]];
            if from_server {
                return if p[8] == 3 && dropped_refs.remove(&pdu_ref) {
                    Edit::Drop
                } else {
                    Edit::Keep
                };
            }
            if p[8] != 1 || p[17] != 4 || p.len() < 7 + 10 + 14 {
                return Edit::Keep;
            }
            let n = seen.entry(p[19..31].to_vec()).or_default();
            *n += 1;
            if n.is_multiple_of(2) {
                dropped_refs.insert(pdu_ref);
                Edit::Drop
            } else {
                Edit::Mark
            }
        },
    );
}
