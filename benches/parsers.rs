//! The protocol parsers alone, in one run so their throughputs compare: Modbus (framing + PDU
//! decoding), S7 (TPKT, COTP reassembly, S7comm/S7comm-plus and read items), DNP3 (link frames +
//! transport reassembly + application layer + every object and point) and IEC 104 (APDU framing +
//! ASDU + every information element decoded), each over the TCP payloads of a shipped capture
//! (IEC 104: the c104 scenario capture), concatenated per direction as a reassembler hands them
//! over, repeated to about 1 MiB.
//!
//!     cargo bench --bench parsers

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use otwatch_parsers::{dnp3, enip, iec104, modbus, s7};

/// TCP payloads of a fixture, with whether they were sent to `server_port`, sliced with
/// etherparse (not with otwatch's pipeline, so only the parser is measured).
fn payloads(fixture: &str, server_port: u16) -> Vec<(bool, Vec<u8>)> {
    let path = if fixture.starts_with('/') {
        fixture.to_string()
    } else {
        format!("{}/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"))
    };
    let data = std::fs::read(path).expect("fixture");
    let mut out = Vec::new();
    let mut rest = &data[24..];
    while let Ok((after, block)) = pcap_parser::pcap::parse_pcap_frame(rest) {
        rest = after;
        let Ok(p) = etherparse::SlicedPacket::from_ethernet(block.data) else {
            continue;
        };
        if let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport {
            if !tcp.payload().is_empty() {
                out.push((
                    tcp.destination_port() == server_port,
                    tcp.payload().to_vec(),
                ));
            }
        }
    }
    out
}

/// Repeat to about 1 MiB; (stream, bytes).
fn repeated(one: Vec<(bool, Vec<u8>)>) -> (Vec<(bool, Vec<u8>)>, u64) {
    let len: usize = one.iter().map(|(_, b)| b.len()).sum();
    assert!(len > 0, "the fixture has no payload for this benchmark");
    let reps = (1 << 20) / len.max(1) + 1;
    let stream: Vec<_> = (0..reps).flat_map(|_| one.iter().cloned()).collect();
    let bytes = stream.iter().map(|(_, b)| b.len() as u64).sum();
    (stream, bytes)
}

fn modbus_all(stream: &[(bool, Vec<u8>)]) -> u64 {
    let mut n = 0u64;
    for (to_server, bytes) in stream {
        let dir = if *to_server {
            modbus::Direction::Request
        } else {
            modbus::Direction::Response
        };
        let mut rest = &bytes[..];
        while let modbus::AduResult::Complete { adu, consumed } = modbus::parse_adu(rest) {
            if let Ok(pdu) = modbus::parse_pdu(adu.pdu, dir) {
                n += u64::from(pdu.function.0) + u64::from(pdu.address().unwrap_or(0));
            }
            rest = &rest[consumed..];
        }
    }
    n
}

fn dnp3_all(stream: &[(bool, Vec<u8>)]) -> u64 {
    let mut n = 0u64;
    let mut reassemblers = [
        dnp3::TransportReassembler::new(),
        dnp3::TransportReassembler::new(),
    ];
    let mut buf = [0u8; dnp3::MAX_USER_DATA_LEN];
    for (to_server, bytes) in stream {
        let r = &mut reassemblers[usize::from(*to_server)];
        let mut rest = &bytes[..];
        while let dnp3::LinkResult::Complete { frame, consumed } = dnp3::parse_link_frame(rest) {
            rest = &rest[consumed..];
            if !frame.carries_user_data() {
                continue;
            }
            let data = match frame.contiguous_user_data() {
                Some(d) => d,
                None => frame.user_data_into(&mut buf),
            };
            if let Some(fragment) = r.push(data).fragment() {
                if let Ok(app) = dnp3::parse_app_fragment(fragment) {
                    n += u64::from(app.function.0);
                    for obj in app.objects().flatten() {
                        n += obj.points().map(|p| u64::from(p.index)).sum::<u64>();
                    }
                }
            }
        }
    }
    n
}

fn s7_all(stream: &[(bool, Vec<u8>)]) -> u64 {
    let mut n = 0u64;
    let mut cotp = [s7::CotpReassembler::new(), s7::CotpReassembler::new()];
    for (to_server, bytes) in stream {
        let r = &mut cotp[usize::from(*to_server)];
        let mut rest = &bytes[..];
        while let s7::TpktResult::Complete { tpkt, consumed } = s7::parse_tpkt(rest) {
            rest = &rest[consumed..];
            let Ok(tpdu) = s7::parse_cotp(tpkt.tpdu) else {
                continue;
            };
            let Some((payload, eot)) = tpdu.body.data() else {
                continue;
            };
            if let s7::Reassembled::Complete(tsdu) = r.push(payload, eot) {
                match s7::parse_s7_payload(tsdu) {
                    Ok(s7::S7Payload::S7comm(pdu)) => {
                        n += u64::from(pdu.header.pdu_ref);
                        if let s7::S7Body::ReadVarResponse { items } = pdu.body {
                            n += items.iter().map(|i| i.data.len() as u64).sum::<u64>();
                        }
                    }
                    Ok(s7::S7Payload::S7commPlus(p)) => n += u64::from(p.data_len),
                    _ => {}
                }
            }
        }
    }
    n
}

fn iec104_all(stream: &[(bool, Vec<u8>)]) -> u64 {
    let mut n = 0u64;
    for (_, bytes) in stream {
        let mut rest = &bytes[..];
        while let iec104::Framed::Complete { apdu, consumed } = iec104::parse_apdu(rest) {
            rest = &rest[consumed..];
            let Ok(asdu) = iec104::parse_asdu(apdu.asdu) else {
                continue;
            };
            n += u64::from(asdu.type_id.0);
            for o in asdu.objects() {
                if let Some(e) = iec104::decode_element(asdu.type_id, o.element) {
                    n += u64::from(o.ioa) + u64::from(e.quality.unwrap_or(0));
                }
            }
        }
    }
    n
}

fn enip_all(stream: &[(bool, Vec<u8>)]) -> u64 {
    let mut n = 0u64;
    for (_, bytes) in stream {
        let mut rest = &bytes[..];
        while let enip::Framed::Complete { encap, consumed } = enip::parse_encap(rest) {
            rest = &rest[consumed..];
            let Ok((_, _, cpf)) = enip::parse_send_data(encap.data) else {
                continue;
            };
            for item in cpf.items() {
                let body = if item.kind == enip::ItemType::CONNECTED_DATA {
                    item.data.get(2..).unwrap_or(&[])
                } else {
                    item.data
                };
                if let Ok(m) = enip::parse_cip(body) {
                    n += u64::from(m.service.0);
                    if let Some(p) = m.path {
                        n += u64::from(p.class().unwrap_or(0));
                    }
                    if m.service == enip::Service::MULTIPLE_SERVICE_PACKET {
                        for part in enip::multiple_service(m.data).into_iter().flatten() {
                            n += enip::parse_cip(part).map_or(0, |x| u64::from(x.service.0));
                        }
                    }
                }
            }
        }
    }
    n
}

fn parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("parsers");
    let (modbus_stream, modbus_bytes) = repeated(payloads("modbus_example.pcap", 502));
    let (dnp3_stream, dnp3_bytes) = repeated(payloads("dnp3_example.pcap", 20000));
    g.throughput(Throughput::Bytes(modbus_bytes));
    g.bench_function("modbus", |b| {
        b.iter(|| black_box(modbus_all(black_box(&modbus_stream))))
    });
    g.throughput(Throughput::Bytes(dnp3_bytes));
    g.bench_function("dnp3", |b| {
        b.iter(|| black_box(dnp3_all(black_box(&dnp3_stream))))
    });
    let (s7_stream, s7_bytes) = repeated(payloads("s7comm_downloading_block_db1.pcap", 102));
    g.throughput(Throughput::Bytes(s7_bytes));
    g.bench_function("s7", |b| {
        b.iter(|| black_box(s7_all(black_box(&s7_stream))))
    });
    let (iec_stream, iec_bytes) = repeated(payloads("scenarios/iec104_steady.pcap", 2404));
    g.throughput(Throughput::Bytes(iec_bytes));
    g.bench_function("iec104", |b| {
        b.iter(|| black_box(iec104_all(black_box(&iec_stream))))
    });
    // EtherNet/IP: a corpus capture (not shipped in fixtures/), when OTWATCH_CORPUS is set.
    if let Some(corpus) = std::env::var_os("OTWATCH_CORPUS") {
        let path = std::path::Path::new(&corpus).join("enip/cip.pcap");
        let (enip_stream, enip_bytes) = repeated(payloads(&path.to_string_lossy(), enip::PORT));
        g.throughput(Throughput::Bytes(enip_bytes));
        g.bench_function("enip", |b| {
            b.iter(|| black_box(enip_all(black_box(&enip_stream))))
        });
    }
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
