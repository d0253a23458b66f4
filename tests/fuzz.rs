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
