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
            let conversation = matches!(e.proto, "tcp" | "udp") && e.modbus.is_none();
            prop_assert!((e.modbus.is_some() || conversation) && e.frame >= 1 && e.frame <= packets.len() as u64);
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
