//! Saved baselines, byte for byte. What learning makes of the fixtures must not change by
//! accident: a refactor of learning (its maps, caches and bounds) must give the same baseline,
//! behaviour model and point order included. A deliberate change is blessed with
//! `OTWATCH_BLESS=1 cargo test --test golden` and the diff of `fixtures/golden/` reviewed.

mod common;

use std::path::PathBuf;

/// The fixtures learned, one golden baseline each: every scenario protocol's steady capture,
/// and the real captures with the most functions.
const LEARNED: [&str; 8] = [
    "scenarios/modbus_steady.pcap",
    "scenarios/s7_steady.pcap",
    "scenarios/dnp3_steady.pcap",
    "scenarios/enip_steady.pcap",
    "scenarios/iec104_steady.pcap",
    "modbus_example.pcap",
    "s7comm_plus.pcap",
    "dnp3_example.pcap",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[test]
fn learning_the_fixtures_gives_the_golden_baselines() {
    let bless = std::env::var("OTWATCH_BLESS").is_ok_and(|v| v == "1");
    for name in LEARNED {
        let capture = fixtures().join(name);
        let baseline = common::learn_files(&[(&capture, &common::all_frames)]);
        // As `Baseline::save` writes it.
        let text = serde_json::to_string_pretty(&baseline).expect("serialize") + "\n";
        let stem = name
            .trim_start_matches("scenarios/")
            .trim_end_matches(".pcap");
        let golden = fixtures()
            .join("golden")
            .join(format!("{stem}.baseline.json"));
        if bless {
            std::fs::write(&golden, &text).expect("write golden baseline");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (bless with OTWATCH_BLESS=1 cargo test --test golden)",
                golden.display()
            )
        });
        if text != want {
            let line = text
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(text.lines().count().min(want.lines().count()));
            panic!(
                "{name}: the learned baseline differs from {} from line {}: got {:?}, golden {:?}",
                golden.display(),
                line + 1,
                text.lines().nth(line),
                want.lines().nth(line)
            );
        }
    }
}
