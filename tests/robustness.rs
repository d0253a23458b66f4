//! Hostile input through the whole pipeline: random frames on every link type, real packets with
//! random bytes changed, and capture files cut at every length. Nothing may panic, and a damaged
//! file must end in a capture error, never in silence.

mod common;

use std::sync::Arc;

use otwatch::capture::{LinkType, Packet};
use otwatch::event::VecSink;
use otwatch::pipeline::Pipeline;
use proptest::prelude::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/modbus.pcap");

const LINKTYPES: [LinkType; 8] = [
    LinkType::ETHERNET,
    LinkType::NULL,
    LinkType::LOOP,
    LinkType::RAW,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType::IPV4,
    LinkType::IPV6,
];

/// The fixture's packets, as (timestamp, bytes).
fn fixture_packets() -> Vec<Vec<u8>> {
    let data = std::fs::read(FIXTURE).expect("fixture");
    let mut out = Vec::new();
    let mut rest = &data[24..];
    while let Ok((after, block)) = pcap_parser::pcap::parse_pcap_frame(rest) {
        out.push(block.data.to_vec());
        rest = after;
    }
    out
}

fn run(packets: &[(LinkType, Vec<u8>)]) -> VecSink {
    let mut pipeline = Pipeline::new();
    let mut sink = VecSink::default();
    let source: Arc<str> = Arc::from("fuzz");
    for (i, (linktype, data)) in packets.iter().enumerate() {
        let pkt = Packet {
            ts_nanos: i as i64 * 1_000_000,
            frame: i as u64 + 1,
            linktype: *linktype,
            orig_len: data.len() as u32,
            data,
            csum_not_ready: false,
        };
        pipeline.process(&pkt, &source, &mut sink);
    }
    pipeline.finish(&mut sink);
    sink
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_frames_never_panic(frames in prop::collection::vec((0usize..8, prop::collection::vec(any::<u8>(), 0..200)), 1..40)) {
        let packets: Vec<_> = frames.into_iter().map(|(l, d)| (LINKTYPES[l], d)).collect();
        run(&packets);
    }

    #[test]
    fn real_packets_with_random_bytes_changed_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()), 1..64)
    ) {
        let mut packets: Vec<_> = fixture_packets().into_iter().map(|d| (LinkType::ETHERNET, d)).collect();
        for (p, at, value) in edits {
            let n = packets.len();
            let pkt = &mut packets[p.index(n)].1;
            let i = at.index(pkt.len());
            pkt[i] = value;
        }
        let sink = run(&packets);
        // Every event is a Modbus event, or the conversation of a packet whose port was changed
        // (`tcp`/`udp`), with a frame inside the input.
        for e in &sink.0 {
            let conversation = matches!(e.proto, "tcp" | "udp") && e.modbus().is_none();
            prop_assert!((e.modbus().is_some() || conversation) && e.frame >= 1 && e.frame <= packets.len() as u64);
        }
    }
}

/// Real Modbus, DNP3 and S7 packets (the first 200 of each fixture), as Ethernet frames.
fn mixed_fixture_packets() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in [
        "modbus.pcap",
        "dnp3_example.pcap",
        "s7comm_downloading_block_db1.pcap",
        "scenarios/modbus_write.pcap",
    ] {
        let data =
            std::fs::read(format!("{}/fixtures/{f}", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
        let mut rest = &data[24..];
        let mut n = 0;
        while let Ok((after, block)) = pcap_parser::pcap::parse_pcap_frame(rest) {
            out.push(block.data.to_vec());
            rest = after;
            n += 1;
            if n == 200 {
                break;
            }
        }
    }
    out
}

/// Packets through dissection, detection (learning on the first half, then scoring), per-channel
/// metrics and the evidence ring.
fn run_detection(packets: &[Vec<u8>]) -> Vec<otwatch_models::Alert> {
    use otwatch::detection::{DetectSink, Detection, MetricsHub};
    use otwatch::event::EventSink;
    use otwatch_models::{Engine, EngineConfig};
    let half = packets.len() as i64 / 2 * 1_000_000;
    let engine = Engine::learning(EngineConfig {
        learn_for: Some(half),
        ..EngineConfig::default()
    });
    let mut det = Detection::new(engine, None);
    det.kept = Some(Vec::new());
    det.metrics = Some(MetricsHub::new(16));
    let dir = common::scratch("robust-evidence");
    let mut pipeline = Pipeline::new();
    pipeline.evidence = Some(det.with_evidence(&dir).expect("evidence dir"));
    let source: Arc<str> = Arc::from("fuzz");
    let mut null = otwatch::event::NullSink;
    {
        let mut sink = DetectSink {
            detection: &mut det,
            inner: &mut null,
        };
        for (i, data) in packets.iter().enumerate() {
            let pkt = Packet {
                ts_nanos: i as i64 * 1_000_000,
                frame: i as u64 + 1,
                linktype: LinkType::ETHERNET,
                orig_len: data.len() as u32,
                data,
                csum_not_ready: false,
            };
            pipeline.process(&pkt, &source, &mut sink);
            sink.after_packet(&pipeline.stats, pipeline.active_flows(), pkt.ts_nanos);
        }
        pipeline.finish(&mut sink);
    }
    let stats = pipeline.stats.clone();
    det.finish_metrics(&stats, 0).expect("metrics");
    let _ = det.finish();
    assert_eq!(
        det.outputs.total(),
        0,
        "outputs failed: {:?}",
        det.outputs.report()
    );
    let _ = std::fs::remove_dir_all(dir);
    det.kept.take().unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Hostile bytes reach the detector too: learning, scoring, metrics and evidence never
    /// panic, and every alert names frames of the input.
    #[test]
    fn detection_on_mutated_real_packets_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()), 1..96)
    ) {
        let mut packets = mixed_fixture_packets();
        for (p, at, value) in edits {
            let n = packets.len();
            let pkt = &mut packets[p.index(n)];
            let i = at.index(pkt.len());
            pkt[i] = value;
        }
        for a in run_detection(&packets) {
            prop_assert!(a.frames.iter().all(|f| *f >= 1 && *f <= packets.len() as u64), "{:?}", a);
        }
    }
}

#[test]
fn a_capture_cut_at_any_length_ends_in_an_error_not_silence() {
    let full = std::fs::read(FIXTURE).expect("fixture");
    let dir = common::scratch("cuts");
    let path = dir.join("cut.pcap");
    // Record boundaries: cutting exactly there is a valid, shorter capture.
    let mut boundaries = vec![24usize];
    let mut rest = &full[24..];
    while let Ok((after, _)) = pcap_parser::pcap::parse_pcap_frame(rest) {
        boundaries.push(full.len() - after.len());
        rest = after;
    }
    for len in (0..full.len()).step_by(7) {
        std::fs::write(&path, &full[..len]).unwrap();
        let (_, report) = common::replay_file(&path);
        let error = report.errors().next();
        if len < 24 {
            assert!(
                error.is_some(),
                "cut at {len}: a partial header must be an error"
            );
        } else {
            assert_eq!(
                error.is_none(),
                boundaries.contains(&len),
                "cut at {len}: {error:?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
