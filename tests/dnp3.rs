//! DNP3 through the whole replay path, from generated captures: a response split over several
//! transport segments and TCP segments, a lost transport segment, a bad data CRC (also checked
//! against tshark when it is installed), DNP3 over UDP, and the bound under a flood of
//! FIR-without-FIN segments.

mod common;

use common::*;
use otwatch::dissect::dnp3::{MAX_CHANNELS, MAX_FRAGMENT_LEN};
use otwatch_parsers::dnp3::{encode_link_frame, LinkControl, MAX_LINK_FRAME_LEN};

const MASTER: ([u8; 4], u16) = ([10, 0, 1, 1], 40001);
const OUTSTATION: ([u8; 4], u16) = ([10, 0, 1, 2], 20000);

/// Link frames for an application fragment, cut into transport segments of at most 249 octets.
fn link_frames(
    from_master: bool,
    src: u16,
    dst: u16,
    fragment: &[u8],
    first_seq: u8,
) -> Vec<Vec<u8>> {
    let control = LinkControl(if from_master { 0xC4 } else { 0x44 });
    let chunks: Vec<&[u8]> = fragment.chunks(249).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut th = (first_seq.wrapping_add(i as u8)) & 0x3f;
            if i == 0 {
                th |= 0x40;
            }
            if i + 1 == chunks.len() {
                th |= 0x80;
            }
            let mut user = vec![th];
            user.extend_from_slice(chunk);
            let mut out = [0u8; MAX_LINK_FRAME_LEN];
            encode_link_frame(control, dst, src, &user, &mut out)
                .expect("frame")
                .to_vec()
        })
        .collect()
}

/// A class 0 read from the master.
fn read_request(seq: u8) -> Vec<u8> {
    vec![0xC0 | seq, 0x01, 60, 1, 0x06]
}

/// A response with `n` 32-bit analog inputs with flags (g30v1, qualifier 0x01: 16-bit start/stop).
fn analog_response(seq: u8, n: u16) -> Vec<u8> {
    let mut f = vec![0xC0 | seq, 0x81, 0x00, 0x00, 30, 1, 0x01];
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&(n - 1).to_le_bytes());
    for i in 0..n {
        f.push(0x01);
        f.extend_from_slice(&(i32::from(i) * 10 - 500).to_le_bytes());
    }
    f
}

fn tcp(from_master: bool, seq: u32, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = if from_master {
        (MASTER, OUTSTATION)
    } else {
        (OUTSTATION, MASTER)
    };
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 8192)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn udp(from_master: bool, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = if from_master {
        (MASTER, OUTSTATION)
    } else {
        (OUTSTATION, MASTER)
    };
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn replay_packets(
    name: &str,
    packets: &[Vec<u8>],
) -> (
    Vec<otwatch::event::Event>,
    otwatch::replay::ReplayReport,
    Written,
) {
    let dir = scratch(name);
    let path = dir.join(format!("{name}.pcap"));
    write_pcap(&path, packets);
    let (events, report) = replay_file(&path);
    (events, report, Written { path, _dir: dir })
}

/// A capture written for a test: its path, and its scratch directory, removed with it.
struct Written {
    path: std::path::PathBuf,
    _dir: common::Scratch,
}

#[test]
fn response_split_over_transport_and_tcp_segments() {
    let request: Vec<u8> = link_frames(true, 1, 10, &read_request(3), 0).concat();
    let frames = link_frames(false, 10, 1, &analog_response(3, 100), 60);
    assert_eq!(frames.len(), 3, "three transport segments, sequence 60..62");
    // The outstation's bytes cut into TCP segments of 100 octets, across frame boundaries.
    let stream = frames.concat();
    let mut packets = vec![tcp(true, 1, &request)];
    for (i, chunk) in stream.chunks(100).enumerate() {
        packets.push(tcp(false, 1 + 100 * i as u32, chunk));
    }
    let last_frame = packets.len() as u64;
    let (events, report, _capture) = replay_packets("dnp3-split", &packets);
    assert_eq!(events.len(), 2, "{events:?}");
    let (req, resp) = (events[0].dnp3().unwrap(), events[1].dnp3().unwrap());
    assert_eq!(
        (
            req.app_function,
            req.link_src,
            req.link_dst,
            req.from_master
        ),
        (Some(1), 1, 10, true)
    );
    assert_eq!(events[0].direction, "request");
    assert_eq!(req.objects.as_ref().unwrap()[0].group, 60);
    assert_eq!(
        (resp.app_function, resp.segments, resp.app_seq),
        (Some(129), Some(3), Some(3))
    );
    assert_eq!(events[1].direction, "response");
    assert_eq!(
        events[1].frame, last_frame,
        "stamped with the TCP segment that completed it"
    );
    let obj = &resp.objects.as_ref().unwrap()[0];
    assert_eq!(
        (obj.group, obj.variation, obj.start, obj.stop),
        (30, 1, Some(0), Some(99))
    );
    assert_eq!(obj.points.len(), 100);
    assert_eq!(obj.points[7].index, 7);
    assert_eq!(obj.points[7].number(), Some(-430.0));
    assert_eq!(obj.points[7].flags, Some(1));
    let json = serde_json::to_value(&obj.points[7]).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"index": 7, "value": -430.0, "flags": 1})
    );
    assert_eq!(report.stats[otwatch::dissect::registry::DNP3].pdus[129], 1);
}

#[test]
fn a_lost_transport_segment_discards_the_fragment() {
    let mut frames = link_frames(false, 10, 1, &analog_response(4, 100), 0);
    frames.remove(1);
    frames.extend(link_frames(false, 10, 1, &analog_response(5, 2), 3));
    let mut seq = 1u32;
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let p = tcp(false, seq, f);
            seq += f.len() as u32;
            p
        })
        .collect();
    let (events, report, _capture) = replay_packets("dnp3-lost", &packets);
    // The broken fragment yields nothing; the next one is whole.
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].dnp3().unwrap().app_seq, Some(5));
    assert_eq!(
        report.stats[otwatch::dissect::registry::DNP3]
            .counters
            .get("sequence_error"),
        Some(&1),
        "{:?}",
        report.stats[otwatch::dissect::registry::DNP3].counters
    );
}

#[test]
fn a_bad_data_crc_is_reported_like_tshark_does() {
    let good = link_frames(true, 1, 10, &read_request(1), 0).concat();
    let mut bad = link_frames(true, 1, 10, &read_request(2), 1).concat();
    let last = bad.len() - 1;
    bad[last] ^= 0xff; // the data block's CRC
    let packets = vec![tcp(true, 1, &good), tcp(true, 1 + good.len() as u32, &bad)];
    let (events, report, path) = replay_packets("dnp3-crc", &packets);
    assert_eq!(events.len(), 2);
    let e = events[1].dnp3().unwrap();
    assert!(!e.crc_ok && e.app_function.is_none() && e.error == Some("data_crc"));
    assert!(events[0].dnp3().unwrap().crc_ok);
    assert_eq!(
        report.stats[otwatch::dissect::registry::DNP3]
            .counters
            .get("crc_errors"),
        Some(&1)
    );
    // tshark flags the same frame, and only it.
    if let Ok(out) = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&path.path)
        .args([
            "-Y",
            "dnp3.data_chunk.CRC.incorrect || dnp3.hdr.CRC.incorrect",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .output()
    {
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
        }
    }
}

#[test]
fn dnp3_over_udp() {
    let request = link_frames(true, 1, 10, &read_request(6), 0).concat();
    let response = link_frames(false, 10, 1, &analog_response(6, 3), 0).concat();
    let (events, _, _capture) =
        replay_packets("dnp3-udp", &[udp(true, &request), udp(false, &response)]);
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.transport.name() == "udp" && e.proto == "dnp3"));
    assert_eq!(
        events[1].dnp3().unwrap().objects.as_ref().unwrap()[0]
            .points
            .len(),
        3
    );
}

fn stream_packets(from_master: bool, stream: &[u8]) -> Vec<Vec<u8>> {
    let mut seq = 1u32;
    stream
        .chunks(1400)
        .map(|c| {
            let p = tcp(from_master, seq, c);
            seq += c.len() as u32;
            p
        })
        .collect()
}

fn segment_frame(src: u16, th: u8, len: usize) -> Vec<u8> {
    let mut user = vec![th];
    user.extend(std::iter::repeat_n(0xAA, len));
    let mut out = [0u8; MAX_LINK_FRAME_LEN];
    encode_link_frame(LinkControl(0x44), 1, src, &user, &mut out)
        .unwrap()
        .to_vec()
}

#[test]
fn fir_without_fin_flood_stays_bounded() {
    // On each of 16 channels, a first segment followed by 2,000 continuations that never
    // finish: every fragment hits the 16 KiB bound, is reported once, and memory stays at
    // one bounded fragment per channel.
    let mut stream = Vec::new();
    for src in 0..MAX_CHANNELS as u16 {
        stream.extend(segment_frame(src, 0x40, 249));
    }
    for i in 1..2000u32 {
        for src in 0..MAX_CHANNELS as u16 {
            stream.extend(segment_frame(src, (i % 64) as u8, 249));
        }
    }
    let (events, report, _capture) = replay_packets("dnp3-flood", &stream_packets(false, &stream));
    assert_eq!(
        events.len(),
        MAX_CHANNELS,
        "one fragment_too_large per channel"
    );
    assert!(events
        .iter()
        .all(|e| e.dnp3().unwrap().error == Some("fragment_too_large")));
    let peak = report.stats.tcp.dnp3_reassembly_peak;
    assert!(
        peak >= (MAX_CHANNELS * MAX_FRAGMENT_LEN / 2) as u64,
        "the flood did reach the bound: {peak}"
    );
    assert!(
        peak <= (MAX_CHANNELS * 2 * MAX_FRAGMENT_LEN) as u64,
        "peak {peak}"
    );
    assert_eq!(
        report.stats.tcp.dnp3_reassembly_bytes, 0,
        "released at close"
    );
}

#[test]
fn many_outstations_on_one_link_lose_nothing() {
    // A gateway: one master polls 40 outstations over one TCP connection, each answering in
    // one segment. Idle channels make room for new ones; every fragment becomes an event.
    let mut master = Vec::new();
    let mut outstations = Vec::new();
    for o in 0..40u16 {
        master.extend(link_frames(true, 1, 100 + o, &read_request((o % 16) as u8), 0).concat());
        outstations.extend(
            link_frames(false, 100 + o, 1, &analog_response((o % 16) as u8, 2), 0).concat(),
        );
    }
    let mut packets = stream_packets(true, &master);
    packets.extend(stream_packets(false, &outstations));
    let (events, report, _capture) = replay_packets("dnp3-gateway", &packets);
    assert_eq!(events.len(), 80);
    assert_eq!(
        report.stats[otwatch::dissect::registry::DNP3]
            .counters
            .get("channel_bound_drops"),
        None
    );
    // Direction follows the flow's roles: the outstation side (port 20000) answers.
    assert!(events
        .iter()
        .all(|e| (e.direction == "request") == (e.dst_port == 20000)));
}

#[test]
fn a_bad_header_crc_is_an_event_too() {
    let mut frame = link_frames(true, 1, 10, &read_request(1), 0).concat();
    frame[8] ^= 0x01; // header CRC
    let good = link_frames(true, 1, 10, &read_request(2), 1).concat();
    let mut stream = frame.clone();
    stream.extend(&good);
    let (events, report, path) = replay_packets("dnp3-hdrcrc", &[tcp(true, 1, &stream)]);
    assert_eq!(events.len(), 2, "{events:?}");
    let bad = events[0].dnp3().unwrap();
    assert!(!bad.crc_ok && bad.error == Some("header_crc") && bad.link_dst == 10);
    assert_eq!(events[1].dnp3().unwrap().app_seq, Some(2));
    assert_eq!(
        report.stats[otwatch::dissect::registry::DNP3]
            .counters
            .get("crc_errors"),
        Some(&1)
    );
    if let Ok(out) = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&path.path)
        .args(["-Y", "dnp3", "-T", "fields", "-e", "frame.number"])
        .output()
    {
        // tshark 4.0 disagrees here, and loses more: a header whose CRC fails is not DNP3 to
        // it, so it decodes nothing in the segment, not even the good frame after it. The
        // standard (IEEE 1815-2012 9.2.4.1.2) has the receiver discard the damaged frame; a
        // monitor should also say it saw one, and go on.
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
        }
    }
}

/// A response of short floats with flags (g30v5, qualifier 0x01) at indexes 0...
fn float_response(seq: u8, values: &[f32]) -> Vec<u8> {
    let mut f = vec![0xC0 | seq, 0x81, 0x00, 0x00, 30, 5, 0x01];
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&(values.len() as u16 - 1).to_le_bytes());
    for v in values {
        f.push(0x01);
        f.extend_from_slice(&v.to_le_bytes());
    }
    f
}

/// An analog float read as NaN, on a point learned from finite readings, is outside its
/// envelope (`value_out_of_range`: a NaN makes every comparison in the logic false); the same
/// polls with a finite reading there raise nothing.
#[test]
fn a_nan_reading_of_a_learned_point_is_out_of_range() {
    let dir = scratch("dnp3-nan");
    for (name, odd) in [("nan", f32::NAN), ("finite", 20.5f32)] {
        let mut packets = Vec::new();
        let (mut master, mut outstation) = (1u32, 1u32);
        let mut odd_frame = 0;
        for i in 0..40u8 {
            let t = std::time::Duration::from_secs(1_700_000_000 + 2 * u64::from(i));
            let request = link_frames(true, 1, 10, &read_request(i & 0x0f), i & 0x3f).concat();
            let v = if i == 35 {
                odd
            } else {
                20.0 + f32::from(i % 3) * 0.5
            };
            let response =
                link_frames(false, 10, 1, &float_response(i & 0x0f, &[v, 5.0]), i & 0x3f).concat();
            packets.push((t, tcp(true, master, &request)));
            packets.push((
                t + std::time::Duration::from_millis(20),
                tcp(false, outstation, &response),
            ));
            if i == 35 {
                odd_frame = packets.len() as u64;
            }
            master += request.len() as u32;
            outstation += response.len() as u32;
        }
        let path = dir.join(format!("{name}.pcap"));
        write_pcap_at(&path, &packets);
        let (alerts, _) = detect_files(Learn::For(60.0), &[(&path, &all_frames)]);
        let out: Vec<_> = alerts
            .iter()
            .filter(|a| {
                a.r#type == "value_out_of_range" && a.state == otwatch_models::AlertState::First
            })
            .map(|a| (a.message.clone(), a.frames.to_vec()))
            .collect();
        if name == "nan" {
            let said = "10.0.1.2 g30 0 reads NaN, learned 20..=21 (step at most 1)".to_string();
            assert_eq!(out, [(said, vec![odd_frame])], "{alerts:#?}");
        } else {
            assert!(out.is_empty(), "{alerts:#?}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An analog float that is infinite or NaN (the encoding allows both) is no sample: learning
/// makes envelopes of the finite values only, and the baseline saved from it loads again (a
/// saved infinity was written as `null`, which no longer loaded).
#[test]
fn non_finite_floats_are_not_learned_and_the_baseline_loads_again() {
    let mut packets = Vec::new();
    let (mut master, mut outstation) = (1u32, 1u32);
    for i in 0..20u8 {
        let request = link_frames(true, 1, 10, &read_request(i & 0x0f), i & 0x3f).concat();
        let v = f32::from(i);
        let response = link_frames(
            false,
            10,
            1,
            &float_response(i & 0x0f, &[v, f32::INFINITY, f32::NAN, -v]),
            i & 0x3f,
        )
        .concat();
        packets.push(tcp(true, master, &request));
        packets.push(tcp(false, outstation, &response));
        master += request.len() as u32;
        outstation += response.len() as u32;
    }
    let dir = scratch("dnp3-float");
    let path = dir.join("floats.pcap");
    write_pcap(&path, &packets);
    let baseline = learn_files(&[(&path, &all_frames)]);
    let points: Vec<_> = baseline
        .channels
        .iter()
        .flat_map(|c| c.points.iter())
        .map(|p| (p.address, p.min, p.max))
        .collect();
    assert_eq!(points, [(0, 0.0, 19.0), (3, -19.0, 0.0)], "{points:?}");
    let saved = dir.join("baseline.json");
    baseline.save(&saved).expect("saved");
    let loaded = otwatch_models::Baseline::load(&saved).expect("loads again");
    assert_eq!(loaded.channels.len(), baseline.channels.len());
}

/// A damaged header met in step (after a good frame, in the same segment) is one event and
/// one CRC error, not two: the search for the next frame starts past it.
#[test]
fn a_bad_header_crc_after_a_good_frame_is_reported_once() {
    let first = link_frames(true, 1, 10, &read_request(1), 0).concat();
    let mut bad = link_frames(true, 1, 10, &read_request(2), 1).concat();
    bad[8] ^= 0x01; // header CRC
    let last = link_frames(true, 1, 10, &read_request(3), 2).concat();
    let stream = [first, bad, last].concat();
    let (events, report, _capture) = replay_packets("dnp3-hdrcrc2", &[tcp(true, 1, &stream)]);
    let errors: Vec<_> = events.iter().map(|e| e.dnp3().unwrap().error).collect();
    assert_eq!(errors, [None, Some("header_crc"), None], "{events:?}");
    let counters = &report.stats[otwatch::dissect::registry::DNP3].counters;
    assert_eq!(counters.get("crc_errors"), Some(&1));
}

/// A bad data CRC raises `crc_error`; the same exchange with good CRCs does not.
#[test]
fn a_bad_crc_raises_an_alert_and_good_ones_do_not() {
    let good = link_frames(true, 1, 10, &read_request(1), 0).concat();
    let mut bad = link_frames(true, 1, 10, &read_request(2), 1).concat();
    let clean = link_frames(true, 1, 10, &read_request(2), 1).concat();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let dir = scratch("dnp3-crc-alert");
    for (name, second, expect) in [("bad", bad, true), ("good", clean, false)] {
        let path = dir.join(format!("{name}.pcap"));
        write_pcap(
            &path,
            &[
                tcp(true, 1, &good),
                tcp(true, 1 + good.len() as u32, &second),
            ],
        );
        let (alerts, _) = detect_files(Learn::Everything, &[(&path, &all_frames)]);
        let crc: Vec<_> = alerts.iter().filter(|a| a.r#type == "crc_error").collect();
        assert_eq!(!crc.is_empty(), expect, "{name}: {alerts:?}");
        if expect {
            assert_eq!(crc[0].frames.as_slice(), [2]);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An outstation that dials out to a master listening on 20000 (the master is the port's
/// server): detection still takes the master, by the DIR bit, as the channel's client.
#[test]
fn the_master_is_the_client_whoever_opened_the_connection() {
    let mk = |from_master: bool, seq: u32, payload: &[u8]| {
        // Here the master holds port 20000.
        let (src, dst) = if from_master {
            (([10, 0, 1, 1], 20000), ([10, 0, 1, 2], 40001))
        } else {
            (([10, 0, 1, 2], 40001), ([10, 0, 1, 1], 20000))
        };
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])
            .ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, seq, 8192)
            .write(&mut out, payload)
            .unwrap();
        out
    };
    let req = link_frames(true, 1, 10, &read_request(1), 0).concat();
    let resp = link_frames(false, 10, 1, &analog_response(1, 4), 0).concat();
    let dir = scratch("dnp3-dialout");
    let path = dir.join("dialout.pcap");
    write_pcap(&path, &[mk(true, 1, &req), mk(false, 1, &resp)]);
    let baseline = learn_files(&[(&path, &all_frames)]);
    let ch: Vec<_> = baseline
        .channels
        .iter()
        .filter(|c| c.channel.proto == otwatch_models::Proto::Dnp3)
        .collect();
    assert_eq!(ch.len(), 1, "{:?}", baseline.channels);
    assert_eq!(ch[0].channel.client.to_string(), "10.0.1.1", "the master");
    assert_eq!(
        ch[0].channel.server.to_string(),
        "10.0.1.2",
        "the outstation"
    );
    assert_eq!(ch[0].requests, 1);
    assert_eq!(ch[0].responses, 1);
    assert_eq!(
        ch[0].latency.as_ref().map(|l| l.samples),
        Some(1),
        "the response matched its request"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Points a request names by index without a value (a control relay output block, a read of
/// chosen points: qualifier 0x28) are accesses at their indexes, so operating or reading a
/// point learning never saw is out of range; they were all taken as index 0. An authenticate
/// response (131) is the outstation's answer, as every function from 129 up is (IEEE 1815-2012
/// 4.2.2.5), not a request of the master's.
#[test]
fn points_named_by_index_are_accesses_there_and_131_is_a_response() {
    // Direct operate (5) of a CROB on points 3000 and 3001, and 7 (qualifier 0x28).
    let mut operate = vec![0xC1, 0x05, 12, 1, 0x28, 3, 0];
    for i in [3000u16, 3001, 7] {
        operate.extend_from_slice(&i.to_le_bytes());
        operate.extend_from_slice(&[0x41, 1, 100, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    // A read (1) of analog input 3000 (g30v1, qualifier 0x28).
    let mut read = vec![0xC2, 0x01, 30, 1, 0x28, 1, 0];
    read.extend_from_slice(&3000u16.to_le_bytes());
    let auth_response = [0xC3, 131, 0x00, 0x00];
    let frames = [
        link_frames(true, 1, 10, &operate, 0).concat(),
        link_frames(true, 1, 10, &read, 1).concat(),
        link_frames(false, 10, 1, &auth_response, 0).concat(),
    ];
    let (mut m, mut o) = (1u32, 1u32);
    let mut packets = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let master = i < 2;
        let seq = if master { &mut m } else { &mut o };
        packets.push(tcp(master, *seq, f));
        *seq += f.len() as u32;
    }
    let (events, _, _w) = replay_packets("dnp3-index", &packets);
    let obs: Vec<_> = events
        .iter()
        .filter_map(otwatch::detection::observe::observe)
        .filter(|o| o.function < 0x100)
        .collect();
    let accesses = |o: &otwatch_models::Observation| {
        o.accesses
            .iter()
            .map(|a| (a.space, a.start, a.count, a.write))
            .collect::<Vec<_>>()
    };
    assert_eq!(obs.len(), 3, "{obs:#?}");
    assert_eq!(obs[0].function, 5);
    assert_eq!(accesses(&obs[0]), [(12, 3000, 2, true), (12, 7, 1, true)]);
    assert_eq!(obs[1].function, 1);
    assert_eq!(accesses(&obs[1]), [(30, 3000, 1, false)]);
    assert_eq!(obs[2].function, 131);
    assert_eq!(obs[2].kind, otwatch_models::Kind::Response);
    assert_eq!(
        obs[2].src().to_string(),
        "10.0.1.2",
        "sent by the outstation"
    );
}
