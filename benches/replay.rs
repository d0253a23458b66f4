//! Whole-file replay against a bare pcap-parser loop over the same file, in the same run.
//!
//!     OTWATCH_BENCH_PCAP=../shared/pcaps/modbus/ModbusTCP.pcap cargo bench --bench replay
//!
//! Without OTWATCH_BENCH_PCAP: $OTWATCH_CORPUS/modbus/ModbusTCP.pcap, else the shipped fixture.
//! Criterion reports packets/s (elements); compare the ratios, not absolute times (shared, noisy
//! machines). The file is read from the page cache by every variant.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use otwatch::capture::{CaptureFile, PacketSource};
use otwatch::event::{JsonLinesSink, NullSink};
use otwatch::pipeline::Pipeline;

fn bench_file() -> PathBuf {
    if let Some(p) = std::env::var_os("OTWATCH_BENCH_PCAP") {
        return PathBuf::from(p);
    }
    if let Some(c) = std::env::var_os("OTWATCH_CORPUS") {
        let p = PathBuf::from(c).join("modbus/ModbusTCP.pcap");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/modbus_example.pcap"
    ))
}

/// The baseline: pcap-parser over the same bytes, touching every packet and nothing else.
fn bare_pcap_parser(data: &[u8]) -> (u64, u64) {
    let mut rest = &data[24..];
    let (mut n, mut bytes) = (0u64, 0u64);
    let big_endian = data[0] == 0xa1;
    while !rest.is_empty() {
        let r = if big_endian {
            pcap_parser::pcap::parse_pcap_frame_be(rest)
        } else {
            pcap_parser::pcap::parse_pcap_frame(rest)
        };
        match r {
            Ok((after, block)) => {
                n += 1;
                bytes +=
                    u64::from(block.data.first().copied().unwrap_or(0)) + block.data.len() as u64;
                rest = after;
            }
            Err(_) => break,
        }
    }
    (n, bytes)
}

/// Builds every event (as detection needs them) and drops it: the cost of events without output.
struct BuiltAndDropped(u64);

impl otwatch::event::EventSink for BuiltAndDropped {
    fn emit(&mut self, event: otwatch::event::Event) {
        self.0 += event.frame;
    }
}

/// One replay with metrics served (no scraper), `max_channels` per-channel series.
fn replay_with_metrics(path: &std::path::Path, max_channels: usize) -> bool {
    let mut pipeline = Pipeline::new();
    let mut hub = otwatch::detection::MetricsHub::new(max_channels);
    hub.server = Some(otwatch::metrics::MetricsServer::start("0", None).expect("listen"));
    let mut det = otwatch::detection::Detection::metrics_only(hub);
    let mut null = NullSink;
    let r = {
        let mut sink = otwatch::detection::DetectSink {
            detection: &mut det,
            inner: &mut null,
        };
        otwatch::replay::replay(&[path.to_path_buf()], &mut sink, &mut pipeline)
    };
    det.finish_metrics(&r.stats, 0).is_ok()
}

/// Capture time from the first packet to the last, nanoseconds.
fn capture_span(path: &std::path::Path) -> i64 {
    let mut cap = CaptureFile::open(path).expect("open");
    let (mut first, mut last) = (None, 0);
    while let Some(Ok(p)) = cap.next_packet() {
        first.get_or_insert(p.ts_nanos);
        last = p.ts_nanos;
    }
    last - first.unwrap_or(last)
}

fn replay(c: &mut Criterion) {
    let path = bench_file();
    let data = std::fs::read(&path).expect("bench pcap");
    let packets = bare_pcap_parser(&data).0;
    eprintln!(
        "bench file {} ({} packets, {} bytes)",
        path.display(),
        packets,
        data.len()
    );
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(packets));
    g.sample_size(20);
    g.bench_function("bare_pcap_parser_loop", |b| {
        b.iter(|| black_box(bare_pcap_parser(black_box(&data))))
    });
    g.bench_function("otwatch_capture_only", |b| {
        b.iter(|| {
            let mut cap = CaptureFile::open(&path).expect("open");
            let mut n = 0u64;
            while let Some(Ok(p)) = cap.next_packet() {
                n += p.data.len() as u64;
            }
            black_box(n)
        })
    });
    g.bench_function("otwatch_replay_no_events", |b| {
        b.iter(|| {
            let mut pipeline = Pipeline::new();
            let r =
                otwatch::replay::replay(std::slice::from_ref(&path), &mut NullSink, &mut pipeline);
            black_box(r.stats[otwatch::dissect::registry::MODBUS].total_pdus())
        })
    });
    g.bench_function("otwatch_replay_2_workers", |b| {
        b.iter(|| {
            let r =
                otwatch::parallel::replay_parallel(std::slice::from_ref(&path), &mut NullSink, 2);
            black_box(r.stats[otwatch::dissect::registry::MODBUS].total_pdus())
        })
    });
    g.bench_function("otwatch_replay_events_built", |b| {
        b.iter(|| {
            let mut pipeline = Pipeline::new();
            let mut sink = BuiltAndDropped(0);
            otwatch::replay::replay(std::slice::from_ref(&path), &mut sink, &mut pipeline);
            black_box(sink.0)
        })
    });
    // Detection: learn the first half of the capture's time, detect over the second half.
    let learn_for = capture_span(&path) / 2;
    g.bench_function("otwatch_replay_detect", |b| {
        b.iter(|| {
            let mut pipeline = Pipeline::new();
            let engine = otwatch_models::Engine::learning(otwatch_models::EngineConfig {
                learn_for: Some(learn_for),
                ..Default::default()
            });
            let mut det = otwatch::detection::Detection::new(engine, None);
            let mut null = NullSink;
            {
                let mut sink = otwatch::detection::DetectSink {
                    detection: &mut det,
                    inner: &mut null,
                };
                otwatch::replay::replay(std::slice::from_ref(&path), &mut sink, &mut pipeline);
            }
            black_box(det.finish().map(|b| b.channels.len()))
        })
    });
    // Metrics: families built and published about once a second to a /metrics server on
    // loopback (nobody scrapes it), with per-channel series, and with the counters only (no
    // events built).
    g.bench_function("otwatch_replay_metrics", |b| {
        b.iter(|| {
            black_box(replay_with_metrics(
                &path,
                otwatch::metrics::DEFAULT_MAX_CHANNELS,
            ))
        })
    });
    g.bench_function("otwatch_replay_metrics_counters_only", |b| {
        b.iter(|| black_box(replay_with_metrics(&path, 0)))
    });
    g.bench_function("otwatch_replay_json_events", |b| {
        b.iter(|| {
            let mut pipeline = Pipeline::new();
            let mut sink = JsonLinesSink::new(otwatch::output::OutputFile::discard(
                otwatch::output::OutputKind::Events,
            ));
            let r = otwatch::replay::replay(std::slice::from_ref(&path), &mut sink, &mut pipeline);
            black_box(r.stats.events)
        })
    });
    g.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
