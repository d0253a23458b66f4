//! TCP reassembly through the whole replay path: generated pcaps with reordering, overlap,
//! retransmission, gaps, mid-stream pickup and split/merged ADUs, replayed from real files.

mod common;

use common::*;
use otwatch::event::{Event, Values};

const N: u16 = 10;

fn request(i: u16) -> Vec<u8> {
    read_holding_request(100 + i, 1, 1000 + 10 * i, 3)
}

fn response(i: u16) -> Vec<u8> {
    read_holding_response(100 + i, 1, &[i, i + 1, i + 2])
}

/// One segment per ADU, request then response, transaction by transaction.
fn baseline() -> Vec<Segment> {
    let mut segs = Vec::new();
    let (mut co, mut so) = (0, 0);
    for i in 0..N {
        let (q, r) = (request(i), response(i));
        segs.push(Segment {
            from: Side::Client,
            offset: co,
            data: q.clone(),
            captured: true,
        });
        segs.push(Segment {
            from: Side::Server,
            offset: so,
            data: r.clone(),
            captured: true,
        });
        co += q.len();
        so += r.len();
    }
    segs
}

fn split(seg: &Segment, at: usize) -> [Segment; 2] {
    let mut a = seg.clone();
    let mut b = seg.clone();
    a.data.truncate(at);
    b.data = seg.data[at..].to_vec();
    b.offset += at;
    [a, b]
}

fn run(
    name: &str,
    handshake: bool,
    segs: &[Segment],
) -> (Vec<Event>, otwatch::replay::ReplayReport) {
    let dir = scratch(name);
    let path = dir.join("conv.pcap");
    write_conversation(&path, handshake, segs);
    let out = replay_file(&path);
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        out.1.errors().next().is_none(),
        "replay error: {:?}",
        out.1.files
    );
    out
}

/// (direction, transaction id, address, values) of every Modbus event, sorted.
/// (direction, transaction id, address, register values).
type Row = (String, u16, Option<u16>, Option<Vec<u16>>);

fn summary(events: &[Event]) -> Vec<Row> {
    let mut v: Vec<_> = events
        .iter()
        .map(|e| {
            let m = e.modbus.as_ref().expect("modbus event");
            let values = match &m.values {
                Some(Values::Registers(r)) => Some(r.clone()),
                _ => None,
            };
            (e.direction.to_string(), m.transaction_id, m.address, values)
        })
        .collect();
    v.sort();
    v
}

fn expected(skip_requests: &[u16], unmatched_responses: &[u16]) -> Vec<Row> {
    let mut v = Vec::new();
    for i in 0..N {
        if !skip_requests.contains(&i) {
            v.push(("request".to_string(), 100 + i, Some(1000 + 10 * i), None));
        }
        let addr = (!unmatched_responses.contains(&i)).then_some(1000 + 10 * i);
        v.push((
            "response".to_string(),
            100 + i,
            addr,
            Some(vec![i, i + 1, i + 2]),
        ));
    }
    v.sort();
    v
}

#[test]
fn in_order_with_handshake() {
    let (events, report) = run("in-order", true, &baseline());
    assert_eq!(summary(&events), expected(&[], &[]));
    // Frame numbers: 3 handshake packets, then one packet per ADU.
    assert_eq!(events[0].frame, 4);
    assert_eq!(events[1].frame, 5);
    assert_eq!(events[1].modbus.as_ref().unwrap().request_frame, Some(4));
    assert_eq!(events[0].src_port, CLIENT.1);
    assert_eq!(events[0].direction, "request");
    assert_eq!(events[1].direction, "response");
    let t = &report.stats.tcp;
    assert_eq!(
        (
            t.midstream_pickups,
            t.gaps,
            t.retransmitted_segments,
            t.out_of_order_segments
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(report.stats.modbus.unmatched_responses, 0);
}

#[test]
fn adus_split_byte_by_byte() {
    let segs: Vec<Segment> = baseline()
        .iter()
        .flat_map(|s| {
            (0..s.data.len()).map(move |k| Segment {
                from: s.from,
                offset: s.offset + k,
                data: vec![s.data[k]],
                captured: true,
            })
        })
        .collect();
    let (events, _) = run("split", true, &segs);
    assert_eq!(summary(&events), expected(&[], &[]));
    // The event is stamped with the frame that completed the ADU: the last byte of the first request.
    assert_eq!(events[0].frame, 3 + 12);
}

#[test]
fn several_adus_per_segment() {
    let base = baseline();
    let join = |side: Side| Segment {
        from: side,
        offset: 0,
        data: base
            .iter()
            .filter(|s| s.from == side)
            .flat_map(|s| s.data.clone())
            .collect(),
        captured: true,
    };
    let (events, _) = run("merged", true, &[join(Side::Client), join(Side::Server)]);
    assert_eq!(summary(&events), expected(&[], &[]));
    assert!(events[..N as usize].iter().all(|e| e.frame == 4));
}

#[test]
fn reordered_segments_are_put_back_in_order() {
    let mut segs = baseline();
    // Each pair of requests arrives swapped: request 2k+1 before request 2k.
    let mut order = Vec::new();
    for k in 0..(N as usize / 2) {
        let (q0, r0, q1, r1) = (4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3);
        order.extend([q1, q0, r0, r1]);
    }
    segs = order.iter().map(|&i| segs[i].clone()).collect();
    let (events, report) = run("reorder", true, &segs);
    assert_eq!(summary(&events), expected(&[], &[]));
    // Request 1 waits out of order (frame 4) and is dissected as soon as request 0 fills the
    // hole (frame 5), in stream order, before the responses.
    let firsts: Vec<(u16, u64)> = events[..3]
        .iter()
        .map(|e| (e.modbus.as_ref().unwrap().transaction_id, e.frame))
        .collect();
    assert_eq!(firsts, [(100, 5), (101, 5), (100, 6)]);
    assert_eq!(report.stats.tcp.out_of_order_segments, u64::from(N / 2));
    assert_eq!(report.stats.tcp.gaps, 0);
    assert_eq!(report.stats.modbus.unmatched_responses, 0);
}

#[test]
fn retransmissions_and_overlaps_are_deduplicated() {
    let mut segs = Vec::new();
    for s in baseline() {
        if s.from == Side::Client {
            // Overlapping halves: [0, 8) then [4, len).
            let mut a = s.clone();
            a.data.truncate(8);
            let mut b = s.clone();
            b.offset += 4;
            b.data = s.data[4..].to_vec();
            segs.push(a);
            segs.push(b);
        } else {
            segs.push(s.clone());
            segs.push(s); // exact retransmission
        }
    }
    let (events, report) = run("retrans", true, &segs);
    assert_eq!(summary(&events), expected(&[], &[]));
    assert_eq!(report.stats.tcp.retransmitted_segments, u64::from(N));
    assert_eq!(report.stats.tcp.overlapping_segments, u64::from(N));
}

#[test]
fn conflicting_out_of_order_overlap_first_wins() {
    let mut segs = baseline();
    // Request 1 arrives early twice, the second copy with a different address: first wins.
    let q1 = segs[2].clone();
    let mut forged = q1.clone();
    forged.data[9] ^= 0x55;
    segs.insert(0, forged.clone());
    segs.insert(0, q1);
    let (events, report) = run("conflict", true, &segs);
    assert_eq!(summary(&events), expected(&[], &[]));
    assert_eq!(report.stats.tcp.conflicting_overlaps, 1);
}

#[test]
fn capture_loss_is_skipped_and_dissection_resumes() {
    let mut segs = baseline();
    // The capture misses request 3 entirely, and the second half of request 5.
    segs[6].captured = false;
    let [a, mut b] = split(&segs[10], 5);
    b.captured = false;
    segs.splice(10..11, [a, b]);
    let (events, report) = run("gap", true, &segs);
    assert_eq!(summary(&events), expected(&[3, 5], &[3, 5]));
    assert_eq!(report.stats.tcp.gaps, 2);
    assert_eq!(report.stats.tcp.gap_bytes, 12 + 7);
    assert_eq!(report.stats.modbus.unmatched_responses, 2);
}

#[test]
fn midstream_pickup_resynchronises() {
    let mut segs = baseline();
    // No handshake; the capture starts inside request 0 (and before response 0).
    let [_, tail] = split(&segs[0], 5);
    segs[0] = tail;
    let (events, report) = run("midstream", false, &segs);
    assert_eq!(summary(&events), expected(&[0], &[0]));
    assert_eq!(report.stats.tcp.midstream_pickups, 2);
    assert_eq!(report.stats.modbus.resync_skipped_bytes, 7);
}

#[test]
fn capture_starting_with_a_response_is_not_read_backwards() {
    let segs: Vec<Segment> = baseline().into_iter().skip(1).collect();
    let (events, _) = run("response-first", false, &segs);
    assert_eq!(events[0].direction, "response");
    assert_eq!(events[0].src_port, 502);
    assert_eq!(summary(&events), expected(&[0], &[0]));
}

#[test]
fn unfilled_hole_is_flushed_at_the_end_and_bounds_hold() {
    // 300 requests after a hole the server never acknowledges (it is silent): the out-of-order
    // buffer hits its segment bound, the hole is declared a gap, and everything after is dissected.
    let mut segs = Vec::new();
    let mut off = 0;
    for i in 0..300u16 {
        let q = read_holding_request(i, 1, i, 1);
        segs.push(Segment {
            from: Side::Client,
            offset: off,
            data: q.clone(),
            captured: i != 0,
        });
        off += q.len();
    }
    let (events, report) = run("ooo-bound", true, &segs);
    assert_eq!(events.len(), 299);
    assert!(report.stats.tcp.ooo_bound_gaps >= 1);
    assert_eq!(report.stats.tcp.gaps, 1);
}

#[test]
fn non_modbus_bytes_on_port_502_are_not_modbus() {
    let http = b"GET /index.html HTTP/1.1\r\nHost: plc\r\nUser-Agent: curl/8\r\n\r\n".to_vec();
    let reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec();
    let segs = vec![
        Segment {
            from: Side::Client,
            offset: 0,
            data: http,
            captured: true,
        },
        Segment {
            from: Side::Server,
            offset: 0,
            data: reply,
            captured: true,
        },
    ];
    let (events, report) = run("http", true, &segs);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(report.stats.modbus.total_pdus(), 0);
    assert_eq!(report.stats.modbus.unidentified_flows, 1);
}

#[test]
fn a_new_connection_on_the_same_ports_starts_afresh() {
    // Two connections on one 5-tuple. The first ends with half a request buffered and one
    // request unanswered; the second (new SYN, new sequence numbers) must not inherit either.
    let mut first = baseline();
    first.truncate(6);
    let half = split(&baseline()[6], 6)[0].clone();
    first.push(half);
    let mut packets = conversation_packets(CLIENT_ISN, SERVER_ISN, true, &first);
    packets.extend(conversation_packets(
        0x7000_0000,
        0x0900_0000,
        true,
        &baseline(),
    ));
    let dir = scratch("reuse");
    let path = dir.join("reuse.pcap");
    write_pcap(&path, &packets);
    let (events, report) = replay_file(&path);
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(report.stats.flows.reused, 1);
    assert_eq!(report.stats.flows.created, 2);
    assert_eq!(events.len(), 6 + 2 * N as usize);
    assert_eq!(summary(&events[6..]), expected(&[], &[]));
    assert_eq!(report.stats.modbus.unmatched_responses, 0);
    assert_eq!(
        report.stats.tcp.gaps + report.stats.tcp.retransmitted_segments,
        0
    );
}
