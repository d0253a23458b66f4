//! Dissectors that build observations straight from the parser's records (Modbus, S7comm
//! reads and writes, S7comm-plus, DNP3 application PDUs, EtherNet/IP, IEC 104 I frames:
//! detection without an events output) give exactly the observations that
//! detection makes from the same PDUs' events, in the same order: on the fixtures always, and
//! on every corpus capture when OTWATCH_CORPUS is set.

mod common;

use std::path::Path;

use otwatch::fuzzing::ObservationLog;
use otwatch::pipeline::Pipeline;
use otwatch::replay::replay;

/// The observations of `file` made from events and by the direct path, with values and item
/// data (`detail`: detection) or without (per-channel metrics alone), and the events counted
/// each way; returns how many came by the direct path.
fn check(file: &Path, detail: bool) -> usize {
    let files = [file.to_path_buf()];
    let mut from_events = ObservationLog::new(true, detail);
    let a = replay(&files, &mut from_events, &mut Pipeline::new());
    let mut direct = ObservationLog::new(false, detail);
    let b = replay(&files, &mut direct, &mut Pipeline::new());
    assert_eq!(
        from_events.seen.len(),
        direct.seen.len(),
        "{file:?}: as many observations"
    );
    for (i, (x, y)) in from_events.seen.iter().zip(&direct.seen).enumerate() {
        assert_eq!(x, y, "{file:?}: observation {i} (detail {detail})");
    }
    assert_eq!(a.stats.events, b.stats.events, "{file:?}: events counted");
    direct.direct
}

#[test]
fn direct_observations_are_those_of_the_events_on_the_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for (name, direct) in [
        ("modbus_example.pcap", true),
        ("modbus.pcap", true),
        ("s7ident.pcap", true),
        ("s7comm_downloading_block_db1.pcap", false),
        ("dnp3_example.pcap", true),
        ("s7comm_plus.pcap", true),
        ("scenarios/enip_steady.pcap", true),
        ("scenarios/enip_write.pcap", true),
        ("scenarios/enip_reset.pcap", true),
        ("scenarios/iec104_steady.pcap", true),
        ("scenarios/iec104_command.pcap", true),
    ] {
        let n = check(&dir.join(name), true);
        assert_eq!(check(&dir.join(name), false), n, "{name}");
        // The comparison must have compared something the direct path made.
        assert_eq!(n > 0, direct, "{name}: {n} observations made directly");
    }
}

#[test]
fn direct_observations_are_those_of_the_events_on_the_corpus() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    let files = common::captures_under(&dir, &["pcap", "pcapng", "gz"]);
    assert!(files.len() > 50);
    let direct: usize = files.iter().map(|f| check(f, true) + check(f, false)).sum();
    assert!(direct > 10_000, "{direct} observations made directly");
}
