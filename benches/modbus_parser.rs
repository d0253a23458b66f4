//! The Modbus parser alone: framing and PDU decoding over a stream of real ADUs.
//!
//!     cargo bench --bench modbus_parser
//!
//! The stream is every Modbus/TCP payload byte of the shipped fixture (all public function
//! codes, requests and responses), concatenated per direction as a reassembler would hand them
//! over, repeated to about 1 MiB.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use otwatch_parsers::modbus::{parse_adu, parse_pdu, AduResult, Direction};

/// The fixture's TCP payloads with their direction, sliced with etherparse (not with otwatch's
/// own pipeline, so the bench measures the parser alone).
fn fixture_stream() -> Vec<(Direction, Vec<u8>)> {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/modbus_example.pcap"
    ))
    .expect("fixture");
    let mut out = Vec::new();
    let mut rest = &data[24..];
    while let Ok((after, block)) = pcap_parser::pcap::parse_pcap_frame(rest) {
        rest = after;
        let Ok(p) = etherparse::SlicedPacket::from_ethernet(block.data) else {
            continue;
        };
        if let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport {
            if tcp.payload().is_empty() {
                continue;
            }
            let dir = if tcp.destination_port() == 502 {
                Direction::Request
            } else {
                Direction::Response
            };
            out.push((dir, tcp.payload().to_vec()));
        }
    }
    out
}

fn parse_all(stream: &[(Direction, Vec<u8>)]) -> u64 {
    let mut n = 0u64;
    for (dir, bytes) in stream {
        let mut rest = &bytes[..];
        while let AduResult::Complete { adu, consumed } = parse_adu(rest) {
            if let Ok(pdu) = parse_pdu(adu.pdu, *dir) {
                n += u64::from(pdu.function.0) + u64::from(pdu.address().unwrap_or(0));
            }
            rest = &rest[consumed..];
        }
    }
    n
}

fn modbus(c: &mut Criterion) {
    let one = fixture_stream();
    let one_len: usize = one.iter().map(|(_, b)| b.len()).sum();
    let reps = (1 << 20) / one_len.max(1) + 1;
    let stream: Vec<_> = (0..reps).flat_map(|_| one.iter().cloned()).collect();
    let bytes: usize = stream.iter().map(|(_, b)| b.len()).sum();
    let mut adus = 0u64;
    for (_, b) in &stream {
        let mut rest = &b[..];
        while let AduResult::Complete { consumed, .. } = parse_adu(rest) {
            adus += 1;
            rest = &rest[consumed..];
        }
    }
    let mut g = c.benchmark_group("modbus_parser");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("frame_and_decode_bytes", |b| {
        b.iter(|| black_box(parse_all(black_box(&stream))))
    });
    g.throughput(Throughput::Elements(adus));
    g.bench_function("frame_and_decode_adus", |b| {
        b.iter(|| black_box(parse_all(black_box(&stream))))
    });
    g.finish();
}

criterion_group!(benches, modbus);
criterion_main!(benches);
