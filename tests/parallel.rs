//! `replay --workers N` gives the same events, as a multiset, as one worker: on the fixtures
//! always, and on every corpus capture when OTWATCH_CORPUS is set.

mod common;

use std::path::{Path, PathBuf};

use otwatch::event::VecSink;
use otwatch::parallel::replay_parallel;
use otwatch::pipeline::Pipeline;
use otwatch::replay::replay;

/// Events as sorted JSON lines (timestamps and all), and the counters that must not change.
fn run(files: &[PathBuf], workers: usize) -> (Vec<String>, Vec<u64>) {
    let mut sink = VecSink::default();
    let report = if workers == 1 {
        replay(files, &mut sink, &mut Pipeline::new())
    } else {
        replay_parallel(files, &mut sink, workers)
    };
    let mut lines: Vec<String> = sink
        .0
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    lines.sort();
    let s = &report.stats;
    let mut counters = vec![s.packets, s.bytes, s.events, s.flows.created];
    for p in [&s.modbus, &s.dnp3, &s.s7comm, &s.s7commplus] {
        counters.extend_from_slice(&p.pdus);
        counters.push(p.parse_errors.values().sum());
    }
    (lines, counters)
}

fn check(files: &[PathBuf]) {
    let (one, one_counts) = run(files, 1);
    for workers in [2, 3] {
        let (many, many_counts) = run(files, workers);
        assert_eq!(one.len(), many.len(), "{files:?} with {workers} workers");
        assert!(
            one == many,
            "{files:?}: events differ with {workers} workers"
        );
        assert_eq!(
            one_counts, many_counts,
            "{files:?}: counters differ with {workers} workers"
        );
    }
}

#[test]
fn fixtures_give_the_same_events_with_several_workers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut all = Vec::new();
    for name in [
        "modbus_example.pcap",
        "modbus.pcap",
        "dnp3_example.pcap",
        "s7ident.pcap",
        "s7comm_plus.pcap",
        "s7comm_downloading_block_db1.pcap",
    ] {
        check(&[dir.join(name)]);
        all.push(dir.join(name));
    }
    // All of them in one run, as several files of one replay.
    check(&all);
}

#[test]
fn every_corpus_capture_gives_the_same_events_with_several_workers() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    let mut stack = vec![dir];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() > 50);
    for f in files {
        check(&[f]);
    }
}
