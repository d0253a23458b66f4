//! The fuzz harnesses of `otwatch::fuzzing` (run without bound under libFuzzer from `fuzz/`),
//! each for a bounded number of cases here so that every `cargo test` exercises them: arbitrary
//! bytes, and mutations of real inputs (fixture captures, a learned baseline, HTTP requests)
//! that get past the first checks.

mod common;

use proptest::prelude::*;

const FIXTURES: [&str; 4] = [
    "modbus_example.pcap",
    "dnp3_example.pcap",
    "s7ident.pcap",
    "s7comm_plus.pcap",
];

fn fixture(i: usize) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(FIXTURES[i % FIXTURES.len()]);
    std::fs::read(p).expect("fixture")
}

/// `base` with some bytes replaced and its length cut or grown.
fn mutate(mut base: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for &(at, b) in edits {
        if !base.is_empty() {
            let i = at % base.len();
            base[i] = b;
        }
    }
    if cut > 0 {
        let keep = base.len().saturating_sub(cut % (base.len() + 1));
        base.truncate(keep);
    }
    base
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// Packet records (as `otwatch::fuzzing`'s packet harnesses read them: selector, sequence
/// jump, time step, length, payload) of Modbus/TCP polls between one client and its server:
/// each step a read of holding registers and its answer, or, by `kind`, a write, a read of
/// another block, an exception, a request left unanswered, or a long silence; `at` picks the
/// block, `v` the value.
fn modbus_records(steps: &[(u8, u8, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut record = |to_server: bool, step: u8, pdu: &[u8], tid: u16| {
        let mut adu = tid.to_be_bytes().to_vec();
        adu.extend_from_slice(&[0, 0]);
        adu.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
        adu.push(1);
        adu.extend_from_slice(pdu);
        out.extend_from_slice(&[if to_server { 0 } else { 4 }, 0, 0, step, adu.len() as u8]);
        out.extend_from_slice(&adu);
    };
    for (i, &(kind, at, v)) in steps.iter().enumerate() {
        let tid = i as u16;
        let start = u16::from(at) * 10;
        let read = [3, (start >> 8) as u8, start as u8, 0, 2];
        let answer = [3, 4, 0, v % 4, 0, 1];
        // Two polls a second; a silence of twelve seconds now and then.
        let pause = if kind == 7 { 240 } else { 10 };
        match kind {
            0..=3 => {
                record(true, pause, &[3, 0, 0, 0, 2], tid);
                record(false, 1, &[3, 4, 0, v % 4, 0, 1], tid);
            }
            4 => {
                record(
                    true,
                    pause,
                    &[6, (start >> 8) as u8, start as u8, 0, v],
                    tid,
                );
                record(false, 1, &[6, (start >> 8) as u8, start as u8, 0, v], tid);
            }
            5 => {
                record(true, pause, &read, tid);
                record(false, 1, &answer, tid);
            }
            6 => {
                record(true, pause, &read, tid);
                record(false, 1, &[0x83, 2], tid);
            }
            _ => record(true, pause, &read, tid),
        }
    }
    out
}

/// A learned baseline's JSON, once per test binary.
fn baseline_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/scenarios/modbus_steady.pcap");
        let b = common::learn_files(&[(&path, &common::all_frames)]);
        serde_json::to_string_pretty(&b).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn capture_reader_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        otwatch::fuzzing::capture(&data);
    }

    #[test]
    fn capture_reader_on_damaged_real_captures(
        which in 0usize..4,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..16),
        cut in any::<usize>(),
        compressed in any::<bool>(),
    ) {
        let data = mutate(fixture(which), &edits, cut);
        let data = if compressed { gzip(&data) } else { data };
        otwatch::fuzzing::capture(&data);
    }

    #[test]
    fn damaged_gzip_streams(
        which in 0usize..4,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        otwatch::fuzzing::capture(&mutate(gzip(&fixture(which)), &edits, cut));
    }

    #[test]
    fn packet_sequences_through_reassembly_dissectors_and_detection(
        data in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        otwatch::fuzzing::packets(&data);
    }

    #[test]
    fn one_worker_and_two_agree_on_fuzzed_packets(
        data in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        otwatch::fuzzing::workers(&data);
    }

    #[test]
    fn one_worker_and_two_agree_on_modbus_polls_and_their_breaks(
        pairs in prop::collection::vec(
            prop::collection::vec((0u8..8, 0u8..4, any::<u8>()), 20..80),
            3,
        ),
    ) {
        let parts: Vec<Vec<u8>> = pairs.iter().map(|p| modbus_records(p)).collect();
        // The first byte cuts the rest in three, one part a host pair.
        let total = parts.iter().map(Vec::len).sum::<usize>().max(1);
        let a = (parts[0].len() * 16 / total).min(15);
        let b = (parts[1].len() * 16 / (total - parts[0].len()).max(1)).min(15);
        let mut data = vec![(b << 4 | a) as u8];
        for p in &parts {
            data.extend_from_slice(p);
        }
        otwatch::fuzzing::workers(&data);
    }

    #[test]
    fn the_split_of_detection_agrees_with_one_engine(
        data in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        otwatch::fuzzing::split(&data);
    }

    #[test]
    fn observations_from_records_and_from_events_agree(
        data in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        otwatch::fuzzing::observations(&data);
    }

    #[test]
    fn baselines_damaged_and_arbitrary(
        edits in prop::collection::vec(
            (any::<usize>(), prop::sample::select(b"0123456789-.e+[]{}\",:truex ".to_vec())),
            0..12,
        ),
        cut in prop::sample::select(vec![0usize, 0, 0, 1, 7, 100]),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        otwatch::fuzzing::baseline_json(&mutate(baseline_text().as_bytes().to_vec(), &edits, cut));
        otwatch::fuzzing::baseline_json(&noise);
    }

    #[test]
    fn web_configs(text in "(tls_server_config|basic_auth_users|http_server_config|foo)?:?\\n?( [a-z_]{0,12}: ?[a-zA-Z0-9$./]{0,20}\\n){0,4}") {
        otwatch::fuzzing::web_config(text.as_bytes());
    }
}

proptest! {
    // Each case is a real connection to the server: fewer of them.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn http_requests(
        method in prop::sample::select(vec!["GET", "POST", "HEAD", "G\0T", ""]),
        path in "/[a-z?=&%]{0,12}",
        headers in prop::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,40}"), 0..6),
        auth in prop::option::of("[A-Za-z0-9+/=:]{0,24}"),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: Basic {a}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&tail);
        otwatch::fuzzing::http_request(&bytes);
    }

    #[test]
    fn http_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        otwatch::fuzzing::http_request(&data);
    }
}

/// IPv4 packets carrying TCP, shaped so that most get past the first checks: every header
/// length, total lengths around the bytes there are (and 0, as segmentation offload writes),
/// fragments, checksums right and wrong, TCP data offsets of every size.
fn ipv4_tcp(
    mut bytes: Vec<u8>,
    ihl: u8,
    total: (u8, i16),
    protocol: u8,
    flags_offset: u16,
    sum_right: bool,
    data_offset: u8,
) -> Vec<u8> {
    let Some(first) = bytes.first_mut() else {
        return bytes;
    };
    *first = 0x40 | ihl;
    let header_len = usize::from(ihl) * 4;
    if bytes.len() >= 20 {
        let total_len = match total.0 % 3 {
            0 => bytes.len() as i64 + i64::from(total.1 % 24),
            1 => 0,
            _ => i64::from(total.1 as u16),
        };
        let total_len = total_len.clamp(0, 0xffff) as u16;
        bytes[2..4].copy_from_slice(&total_len.to_be_bytes());
        bytes[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        bytes[9] = protocol;
        if let Some(tcp) = bytes.get_mut(header_len + 12) {
            *tcp = data_offset << 4 | (*tcp & 0x0f);
        }
        if sum_right && bytes.len() >= header_len && header_len >= 20 {
            bytes[10..12].fill(0);
            let mut sum: u32 = bytes[..header_len]
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            bytes[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// otwatch reads IPv4 and TCP headers by hand (every packet's first step); etherparse's
    /// reading of the same bytes is the reference.
    #[test]
    fn ipv4_and_tcp_headers_are_read_as_etherparse_reads_them(
        bytes in prop::collection::vec(any::<u8>(), 0..160),
        ihl in 0u8..16,
        total in (any::<u8>(), any::<i16>()),
        protocol in prop_oneof![Just(6u8), Just(17), Just(51), any::<u8>()],
        flags_offset in prop_oneof![Just(0u16), Just(0x4000), any::<u16>()],
        sum_right in any::<bool>(),
        data_offset in 0u8..16,
    ) {
        let packet = ipv4_tcp(bytes, ihl, total, protocol, flags_offset, sum_right, data_offset);
        otwatch::fuzzing::decode(&packet);
        if let Some(segment) = packet.get(usize::from(ihl) * 4..) {
            otwatch::fuzzing::decode(segment);
        }
    }
}

/// The `observations` fuzz target's first crash (session 16): two segments of one TCP stream
/// that contradict each other. The conflict's observation comes without an event in both
/// ways (it is no PDU), which the harness took for a dissector building its own observation
/// while the events were asked for.
#[test]
fn a_stream_conflict_is_observed_both_ways() {
    let data = [
        0x75, 0xff, 0xff, 0xff, 0x01, 0x00, 0x35, 0xff, 0xff, 0xff, 0x48, 0xff, 0x48,
    ];
    otwatch::fuzzing::observations(&data);
}
