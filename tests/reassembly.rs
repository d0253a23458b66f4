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
            let m = e.modbus().expect("modbus event");
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
    assert_eq!(events[1].modbus().unwrap().request_frame, Some(4));
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
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].unmatched_responses,
        0
    );
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
        .map(|e| (e.modbus().unwrap().transaction_id, e.frame))
        .collect();
    assert_eq!(firsts, [(100, 5), (101, 5), (100, 6)]);
    assert_eq!(report.stats.tcp.out_of_order_segments, u64::from(N / 2));
    assert_eq!(report.stats.tcp.gaps, 0);
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].unmatched_responses,
        0
    );
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
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].unmatched_responses,
        2
    );
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
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].resync_skipped_bytes,
        7
    );
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
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].total_pdus(),
        0
    );
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].unidentified_flows,
        1
    );
}

#[test]
fn a_new_connection_on_the_same_ports_starts_afresh() {
    // Two connections on one 5-tuple. The first ends with half a request buffered and one
    // request unanswered; the second (new SYN, new sequence numbers) must not inherit either.
    // The same when the capture missed the second one's SYN: its SYN-ACK says it is new.
    for client_syn in [true, false] {
        a_new_connection_starts_afresh(client_syn);
    }
}

fn a_new_connection_starts_afresh(client_syn: bool) {
    let mut first = baseline();
    first.truncate(6);
    let half = split(&baseline()[6], 6)[0].clone();
    first.push(half);
    let mut packets = conversation_packets(CLIENT_ISN, SERVER_ISN, true, &first);
    let mut second = conversation_packets(0x7000_0000, 0x0900_0000, true, &baseline());
    if !client_syn {
        second.remove(0);
    }
    packets.extend(second);
    let dir = scratch("reuse");
    let path = dir.join("reuse.pcap");
    write_pcap(&path, &packets);
    let (events, report) = replay_file(&path);
    assert_eq!(report.stats.flows.reused, 1, "client SYN {client_syn}");
    assert_eq!(report.stats.flows.created, 2);
    assert_eq!(events.len(), 6 + 2 * N as usize);
    assert_eq!(summary(&events[6..]), expected(&[], &[]));
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].unmatched_responses,
        0
    );
    assert_eq!(
        report.stats.tcp.gaps + report.stats.tcp.retransmitted_segments,
        0
    );
}

/// A SPAN port hands the server's bare acknowledgement of two requests over before the first
/// of them: the hole it acknowledges is skipped from the next packet on, and that packet is the
/// late request, so nothing is lost (the request was dropped as a retransmission). An
/// acknowledgement that comes with the server's answer skips it at once, so that what waited
/// behind the hole is dissected before the answer.
#[test]
fn a_bare_acknowledgement_ahead_of_its_segment_loses_nothing() {
    let segs = baseline();
    let (l0, l1) = (segs[0].data.len(), segs[2].data.len());
    // Request 1, then request 0, then everything else in order.
    let mut reordered = vec![segs[2].clone(), segs[0].clone()];
    reordered.extend(
        segs.iter()
            .enumerate()
            .filter(|(i, _)| *i != 0 && *i != 2)
            .map(|(_, s)| s.clone()),
    );
    let mut packets = conversation_packets(CLIENT_ISN, SERVER_ISN, true, &reordered);
    let mut ack = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4(SERVER.0, CLIENT.0, 64)
        .tcp(SERVER.1, CLIENT.1, SERVER_ISN.wrapping_add(1), 8192)
        .ack(CLIENT_ISN.wrapping_add(1 + (l0 + l1) as u32))
        .write(&mut ack, &[])
        .unwrap();
    // After the handshake and request 1.
    packets.insert(4, ack);
    let dir = scratch("ack-ahead");
    let path = dir.join("ack.pcap");
    write_pcap(&path, &packets);
    let (events, report) = replay_file(&path);
    let mut rows = summary(&events);
    rows.sort();
    let mut want = expected(&[], &[]);
    want.sort();
    assert_eq!(rows, want);
    assert_eq!(report.stats.tcp.gaps, 0);
    assert_eq!(report.stats.tcp.retransmitted_segments, 0);
}

/// A request sent again at the same place with other bytes (the classic evasion: a first
/// copy the receiver refuses, for a bad checksum say, then the one it takes) is counted as a
/// conflict; the first copy stays what was delivered, as Linux keeps it. An exact
/// retransmission is no conflict.
#[test]
fn a_copy_sent_again_with_other_bytes_is_a_conflict() {
    let mut segs = baseline();
    let mut other = segs[2].clone();
    other.data = read_holding_request(101, 1, 4000, 3);
    assert_eq!(other.data.len(), segs[2].data.len());
    let exact = segs[4].clone();
    segs.insert(3, other);
    segs.insert(6, exact);
    let dir = scratch("conflict");
    let path = dir.join("conflict.pcap");
    write_conversation(&path, true, &segs);
    let (events, report) = replay_file(&path);
    assert_eq!(summary(&events), expected(&[], &[]));
    assert_eq!(report.stats.tcp.retransmitted_segments, 2);
    assert_eq!(report.stats.tcp.conflicting_overlaps, 1);
    // The frame of the other copy: after the handshake, the first three segments.
    assert_eq!(stream_conflicts(&path), [(3 + 4, 1)]);
}

/// A longer copy at the last segment's place whose first bytes differ (a read the PLC refused,
/// then a write and a read in its place) is a conflict too. A keep-alive probe (one garbage byte just behind the stream's end) is none,
/// even when the last segment was that one byte.
#[test]
fn copies_of_other_lengths_conflict_and_keep_alives_do_not() {
    let mut segs = baseline();
    let q1 = segs[2].clone();
    let mut longer = q1.clone();
    longer.data = [read_holding_request(101, 1, 4000, 3), request(5)].concat();
    segs.insert(3, longer);
    let dir = scratch("longer");
    let path = dir.join("longer.pcap");
    write_conversation(&path, true, &segs);
    let (_, report) = replay_file(&path);
    assert_eq!(report.stats.tcp.conflicting_overlaps, 1);
    assert_eq!(stream_conflicts(&path), [(3 + 4, 1)]);

    // Request 1 sent as 11 + 1 bytes, then a keep-alive probe of one 0x00 byte at its last
    // byte's place, from the client.
    let mut segs = baseline();
    let [a, b] = split(&segs[2], 11);
    segs.splice(2..3, [a, b.clone()]);
    let mut probe = b;
    probe.data = vec![0x00];
    segs.insert(4, probe);
    let dir = scratch("keepalive");
    let path = dir.join("keepalive.pcap");
    write_conversation(&path, true, &segs);
    let (events, report) = replay_file(&path);
    assert_eq!(summary(&events), expected(&[], &[]));
    assert_eq!(
        report.stats.tcp.conflicting_overlaps, 0,
        "{:?}",
        report.stats.tcp
    );
}

/// The `overlap_conflict` alerts detection raises on a capture (no baseline needed): the
/// frame of each cause's first line and its final count. Each names the client as the
/// sender, on the TCP conversation to port 502.
fn stream_conflicts(path: &std::path::Path) -> Vec<(u64, u64)> {
    let alerts = detect_files(Learn::Everything, &[(path, &all_frames)]).0;
    let mine: Vec<_> = alerts
        .iter()
        .filter(|a| a.r#type == "overlap_conflict")
        .collect();
    assert!(
        alerts.len() == mine.len(),
        "only stream conflicts: {alerts:#?}"
    );
    for a in &mine {
        assert_eq!(a.proto, otwatch_models::Proto::Tcp);
        if a.state == otwatch_models::AlertState::First {
            assert_eq!(a.observed["anomaly"], "tcp_conflicting_overlap");
        }
        assert_eq!(a.key.unit(), 502);
        assert_eq!(a.src_ip, std::net::IpAddr::from(CLIENT.0), "{a:?}");
    }
    let count = |a: &otwatch_models::Alert| a.count;
    mine.iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
        .map(|a| {
            let last = mine
                .iter()
                .rev()
                .find(|b| b.id == a.id)
                .map_or(0, |b| count(b));
            (a.frames.iter().next().copied().unwrap_or(0), last)
        })
        .collect()
}

/// Request 1 held out of order, then one in-order segment carrying request 0 and another
/// request 1 over the held bytes: the in-order segment is delivered (the held copy trimmed,
/// as Linux trims its queued one) and the difference is counted as a conflict.
#[test]
fn an_in_order_segment_over_other_held_bytes_is_a_conflict() {
    let segs = baseline();
    let (q0, q1) = (segs[0].data.clone(), segs[2].data.clone());
    let other = read_holding_request(101, 1, 4000, 3);
    let both = Segment {
        data: [q0.clone(), other].concat(),
        ..segs[0].clone()
    };
    let mut reordered = vec![segs[2].clone(), both];
    reordered.extend(segs[1..].iter().filter(|s| s.data != q1).cloned());
    let dir = scratch("held-conflict");
    let path = dir.join("held.pcap");
    write_conversation(&path, true, &reordered);
    let (_, report) = replay_file(&path);
    assert_eq!(report.stats.tcp.conflicting_overlaps, 1);
    assert_eq!(stream_conflicts(&path).len(), 1);
}

/// A SYN with a new sequence number in the middle of an open connection, which the server
/// does not answer with a SYN-ACK (RFC 5961: a challenge ACK, nothing changes), changes nothing
/// here either: a spoofed one moved the client's stream 500 000 bytes ahead, and every real
/// request after it, writes too, was dropped as a retransmission. It is counted.
#[test]
fn a_syn_the_server_does_not_answer_leaves_the_open_connection_alone() {
    let mut packets = conversation_packets(CLIENT_ISN, SERVER_ISN, true, &baseline());
    let mut syn = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(CLIENT.0, SERVER.0, 64)
        .tcp(CLIENT.1, SERVER.1, CLIENT_ISN.wrapping_add(500_000), 8192)
        .syn()
        .write(&mut syn, &[])
        .unwrap();
    // After the handshake and the first exchange.
    packets.insert(5, syn);
    let dir = scratch("spoofed-syn");
    let path = dir.join("syn.pcap");
    write_pcap(&path, &packets);
    let (events, report) = replay_file(&path);
    assert_eq!(summary(&events), expected(&[], &[]));
    assert_eq!(report.stats.flows.reused, 0);
    assert_eq!(report.stats.flows.syn_on_open, 1);
    assert_eq!(report.stats.tcp.retransmitted_segments, 0);
}

/// Request 1's second half arrives early with its real bytes, then the whole request with a
/// forged address in that half, starting before it: the bytes held first win there too, and
/// the conflict is counted.
#[test]
fn a_copy_that_starts_earlier_does_not_overwrite_the_bytes_held_first() {
    let mut segs = baseline();
    let q1 = segs[2].clone();
    let [_, second_half] = split(&q1, 8);
    let mut forged = q1.clone();
    forged.data[9] ^= 0x55;
    segs.insert(0, forged);
    segs.insert(0, second_half);
    let (events, report) = run("conflict-earlier", true, &segs);
    assert_eq!(summary(&events), expected(&[], &[]));
    assert_eq!(report.stats.tcp.conflicting_overlaps, 1);
}

#[test]
fn a_longer_second_copy_out_of_order_does_not_overwrite_the_first() {
    let mut segs = baseline();
    // Request 1 arrives early with its real bytes, then again longer, with a forged address and
    // request 2 appended: the held bytes win, only the extension is taken.
    let q1 = segs[2].clone();
    let mut forged = q1.clone();
    forged.data[9] ^= 0x55;
    forged.data.extend_from_slice(&segs[4].data);
    segs.insert(0, forged);
    segs.insert(0, q1);
    let (events, report) = run("conflict-longer", true, &segs);
    assert_eq!(summary(&events), expected(&[], &[]));
    assert_eq!(report.stats.tcp.conflicting_overlaps, 1);
}

#[test]
fn data_freed_by_an_ack_keeps_its_own_frame() {
    // The client sends requests 0, 1 (lost by the capture) and 2; the server's response to 0
    // acknowledges all three. Request 2 waited out of order; once the ack proves request 1 was
    // sent, request 2 is dissected, stamped with its own packet, not with the response's.
    let base = baseline();
    let mut q1 = base[2].clone();
    q1.captured = false;
    let segs = vec![base[0].clone(), q1, base[4].clone(), base[1].clone()];
    let (events, report) = run("ack-skip", true, &segs);
    assert_eq!(report.stats.tcp.gaps, 1);
    let q2 = events
        .iter()
        .find(|e| e.direction == "request" && e.modbus().unwrap().transaction_id == 102)
        .expect("request 2");
    // Frames: 3 handshake, 4 = request 0, 5 = request 2, 6 = response 0.
    assert_eq!(q2.frame, 5);
}

#[test]
fn bytes_framed_once_on_port_502_are_not_reported_as_modbus() {
    // One well-framed but invalid ADU (function code 0) and nothing else: not evidence enough.
    let once = Segment {
        from: Side::Client,
        offset: 0,
        data: vec![0, 1, 0, 0, 0, 2, 1, 0],
        captured: true,
    };
    let (events, report) = run("framed-once", true, std::slice::from_ref(&once));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].total_pdus(),
        0
    );
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].unconfirmed_pdus_discarded,
        1
    );
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].unidentified_flows,
        1
    );
    // Two in a row are: MBAP headers that chain are Modbus framing, and both are reported.
    let mut twice = once.clone();
    twice.data.extend_from_slice(&[0, 2, 0, 0, 0, 2, 1, 0]);
    let (events, report) = run("framed-twice", true, &[twice]);
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.modbus().unwrap().error == Some("invalid_value")));
    assert_eq!(
        report.stats[otwatch::dissect::registry::MODBUS].unidentified_flows,
        0
    );
}

#[test]
fn idle_flows_are_evicted_and_flushed_with_their_own_frames() {
    // Flow A: request 0, then request 2 with request 1 never captured and never acknowledged
    // (the server is silent). Ten minutes later another client polls: A is evicted, its held
    // request 2 dissected and stamped with its own frame; then B's traffic follows.
    let base = baseline();
    let mut q1 = base[2].clone();
    q1.captured = false;
    let a = conversation_packets(
        CLIENT_ISN,
        SERVER_ISN,
        true,
        &[base[0].clone(), q1, base[4].clone()],
    );
    let mut timed: Vec<_> = a
        .into_iter()
        .enumerate()
        .map(|(i, p)| (packet_time(i), p))
        .collect();
    let mut b = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 9], SERVER.0, 64)
        .tcp(40000, 502, 1, 8192)
        .write(&mut b, &read_holding_request(7, 1, 7, 1))
        .unwrap();
    timed.push((packet_time(0) + std::time::Duration::from_secs(700), b));
    let dir = scratch("idle");
    let path = dir.join("idle.pcap");
    write_pcap_at(&path, &timed);
    let (events, report) = replay_file(&path);
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(report.stats.flows.evicted_idle, 1);
    let tids: Vec<(u16, u64)> = events
        .iter()
        .map(|e| (e.modbus().unwrap().transaction_id, e.frame))
        .collect();
    // Handshake 1-3, request 0 = 4, request 2 = 5 (held), B = 6.
    assert_eq!(tids, [(100, 4), (102, 5), (7, 6)]);
}

/// Split an Ethernet/IPv4 packet's IP payload into fragments of `chunk` bytes (a multiple of 8).
fn fragment_ipv4(packet: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let (eth, ip) = packet.split_at(14);
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let (hdr, payload) = ip.split_at(ihl);
    let mut out = Vec::new();
    for (k, part) in payload.chunks(chunk).enumerate() {
        let mut h = hdr.to_vec();
        let total = (ihl + part.len()) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        let more = (k + 1) * chunk < payload.len();
        let field = ((k * chunk / 8) as u16) | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&field.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let sum = h
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut p = eth.to_vec();
        p.extend_from_slice(&h);
        p.extend_from_slice(part);
        out.push(p);
    }
    out
}

/// One Ethernet/IPv4 TCP segment from CLIENT to SERVER carrying `payload`.
fn client_segment(payload: &[u8]) -> Vec<u8> {
    let mut whole = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(CLIENT.0, SERVER.0, 64)
        .tcp(CLIENT.1, SERVER.1, 1000, 8192)
        .write(&mut whole, payload)
        .unwrap();
    whole
}

/// A Modbus/TCP write of `values` to holding registers 10.. of unit 1 (transaction 9).
fn write_registers_adu(values: &[u16]) -> Vec<u8> {
    let bytes = 2 * values.len() as u16;
    let mut adu = vec![0, 9, 0, 0];
    adu.extend_from_slice(&(7 + bytes).to_be_bytes());
    adu.extend_from_slice(&[1, 16, 0, 10]);
    adu.extend_from_slice(&(values.len() as u16).to_be_bytes());
    adu.push(bytes as u8);
    for v in values {
        adu.extend_from_slice(&v.to_be_bytes());
    }
    adu
}

#[test]
fn modbus_in_fragmented_ip_is_reassembled() {
    // A write of 100 registers (a 213-byte ADU) sent in 5 IPv4 fragments, the last one first.
    let values: Vec<u16> = (0..100).collect();
    let adu = write_registers_adu(&values);
    let whole = client_segment(&adu);
    let mut frags = fragment_ipv4(&whole, 48);
    assert_eq!(frags.len(), 5);
    frags.rotate_right(1);
    let dir = scratch("frag");
    let path = dir.join("frag.pcap");
    write_pcap(&path, &frags);
    let (events, report) = replay_file(&path);
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(report.stats.ip_fragments, 5);
    assert_eq!(report.stats.defrag.reassembled, 1);
    assert_eq!(
        report.stats.checksum_errors.tcp, 0,
        "the reassembled segment's checksum verifies"
    );
    assert_eq!(events.len(), 1);
    let m = events[0].modbus().unwrap();
    assert_eq!(
        (m.function_code, m.address, m.quantity),
        (16, Some(10), Some(100))
    );
    assert_eq!(m.values, Some(Values::Registers(values)));
    assert_eq!(
        events[0].frame, 5,
        "completed by the last fragment to arrive"
    );
}

/// A fragment sent twice with other bytes (the IP layer's overlap evasion: which copy a PLC's
/// stack keeps is its own choice) is counted and raised as `overlap_conflict` on the
/// conversation of its protocol, from its sender; the first copy is what was reassembled.
#[test]
fn a_fragment_sent_again_with_other_bytes_is_a_conflict() {
    let values: Vec<u16> = (0..100).collect();
    let whole = client_segment(&write_registers_adu(&values));
    let mut frags = fragment_ipv4(&whole, 48);
    let mut other = frags[2].clone();
    let last = other.len() - 1;
    other[last] ^= 0xff;
    frags.insert(3, other);
    let dir = scratch("frag-conflict");
    let path = dir.join("frag.pcap");
    write_pcap(&path, &frags);
    let (events, report) = replay_file(&path);
    assert_eq!(report.stats.defrag.conflicting_overlaps, 1);
    assert_eq!(events.len(), 1);
    let m = events[0].modbus().expect("the write");
    assert_eq!(m.values, Some(Values::Registers(values)), "the first copy");
    let alerts = detect_files(Learn::Everything, &[(&path, &all_frames)]).0;
    let firsts: Vec<_> = alerts
        .iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
        .collect();
    assert_eq!(firsts.len(), 1, "{alerts:#?}");
    let a = firsts[0];
    assert_eq!(a.r#type, "overlap_conflict");
    assert_eq!(a.observed["anomaly"], "ip_fragment_conflicting_overlap");
    assert_eq!(a.proto, otwatch_models::Proto::Tcp);
    assert_eq!(a.src_ip, std::net::IpAddr::from(CLIENT.0));
    assert_eq!(a.frames.first(), Some(&4), "the second copy");
}

/// A fragment cut by the snaplen never completes its datagram (tshark does not reassemble it
/// either): the datagram is left unfinished and counted, and no PDU is made of what the cut
/// fragment's length claimed. Before, the last fragment's claimed length made a datagram with
/// a bad checksum and a partial PDU.
#[test]
fn a_fragment_cut_by_the_snaplen_completes_nothing() {
    let adu = [0, 9, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10].repeat(12);
    let whole = client_segment(&adu);
    let frags = fragment_ipv4(&whole, 48);
    // A classic pcap whose last record keeps 20 bytes fewer than the packet had.
    let mut pcap = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        pcap.extend(v.to_le_bytes());
    }
    for (i, f) in frags.iter().enumerate() {
        let keep = if i + 1 == frags.len() {
            f.len() - 20
        } else {
            f.len()
        };
        for v in [1_700_000_000u32, i as u32, keep as u32, f.len() as u32] {
            pcap.extend(v.to_le_bytes());
        }
        pcap.extend(&f[..keep]);
    }
    let dir = scratch("frag-cut");
    let path = dir.join("frag.pcap");
    std::fs::write(&path, pcap).unwrap();
    let (events, report) = replay_file(&path);
    assert_eq!(report.stats.ip_fragments, frags.len() as u64);
    assert_eq!(report.stats.defrag.reassembled, 0);
    assert_eq!(report.stats.defrag.unfinished, 1);
    assert_eq!(report.stats.truncated_packets, 1);
    assert_eq!(report.stats.checksum_errors.tcp, 0);
    assert!(events.is_empty(), "{events:?}");
}

/// IPv6 fragments whose fragmentable part starts with an extension header (Destination
/// Options, RFC 8200 4.5): each fragment's data is what follows its Fragment header, and the
/// reassembled datagram's headers are walked to TCP. The write is seen (a monitor that could
/// not put these together would miss a write an attacker hid this way).
#[test]
fn ipv6_fragments_with_options_after_the_fragment_header_are_reassembled() {
    let values: Vec<u16> = (0..20).collect();
    let adu = write_registers_adu(&values);
    let (src, dst) = ([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], {
        let mut d = [0u8; 16];
        d[0] = 0xfd;
        d[15] = 2;
        d
    });
    let mut whole = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(src, dst, 64)
        .tcp(CLIENT.1, SERVER.1, 1000, 8192)
        .write(&mut whole, &adu)
        .unwrap();
    let (eth, rest) = whole.split_at(14);
    let tcp = &rest[40..];
    // The fragmentable part: Destination Options (8 bytes: a PadN option), then TCP.
    let mut part = vec![6, 0, 1, 4, 0, 0, 0, 0];
    part.extend_from_slice(tcp);
    let mut frags = Vec::new();
    for (k, chunk) in part.chunks(32).enumerate() {
        let more = (k + 1) * 32 < part.len();
        let mut p = eth.to_vec();
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&(8 + chunk.len() as u16).to_be_bytes());
        p.extend_from_slice(&[44, 64]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        let offset = ((k * 32 / 8) as u16) << 3 | u16::from(more);
        p.extend_from_slice(&[60, 0]);
        p.extend_from_slice(&offset.to_be_bytes());
        p.extend_from_slice(&77u32.to_be_bytes());
        p.extend_from_slice(chunk);
        frags.push(p);
    }
    assert_eq!(frags.len(), 3);
    frags.rotate_right(1);
    let dir = scratch("frag6");
    let path = dir.join("frag6.pcap");
    write_pcap(&path, &frags);
    let (events, report) = replay_file(&path);
    assert_eq!(report.stats.ip_fragments, 3);
    assert_eq!(report.stats.defrag.reassembled, 1);
    assert_eq!(report.stats.checksum_errors.tcp, 0);
    assert_eq!(events.len(), 1, "{events:?}");
    let m = events[0].modbus().unwrap();
    assert_eq!(
        (m.function_code, m.address, m.quantity),
        (16, Some(10), Some(20))
    );
    assert_eq!(m.values, Some(Values::Registers(values)));
}

#[test]
fn a_stream_picked_up_again_far_away_is_not_dropped_or_waited_for() {
    // Two sessions on one 5-tuple; the capture missed the second one's handshake. Its sequence
    // numbers are far behind the first's (it would all look like retransmissions) or far ahead
    // (it would all wait behind a huge hole). Either way the second session must be dissected.
    for second_isn in [0x8000_0000u32, 0xA000_0000] {
        let mut packets = conversation_packets(0x9000_0000, SERVER_ISN, true, &baseline()[..4]);
        packets.extend(conversation_packets(
            second_isn,
            SERVER_ISN + 0x4000_0000,
            false,
            &baseline(),
        ));
        let dir = scratch("jump");
        let path = dir.join("jump.pcap");
        write_pcap(&path, &packets);
        let (events, report) = replay_file(&path);
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(
            events.len(),
            4 + 2 * N as usize,
            "second ISN {second_isn:#x}"
        );
        assert_eq!(
            report.stats.tcp.discontinuities, 2,
            "both directions jumped"
        );
        assert_eq!(
            report.stats.tcp.retransmitted_segments + report.stats.tcp.gaps,
            0
        );
    }
}

/// One TCP packet between CLIENT and SERVER: from the server's end (port 502) or the client's,
/// with its sequence number, its acknowledgement (if any), SYN and RST, and payload.
fn tcp_packet(
    from_server: bool,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    rst: bool,
    payload: &[u8],
) -> Vec<u8> {
    let (src, dst) = if from_server {
        (SERVER, CLIENT)
    } else {
        (CLIENT, SERVER)
    };
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 8192);
    let b = if syn { b.syn() } else { b };
    let b = if rst { b.rst() } else { b };
    let b = match ack {
        Some(a) => b.ack(a),
        None => b,
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// A held SYN opens its connection when its SYN-ACK comes, when the capture missed the SYN-ACK
/// but the new connection's first data starts right after the SYN's ISN, and when the SYN is
/// sent again after a challenge ACK and a RST (no SYN left unanswered then); the device on port
/// 502 that dialled out keeps its own stream's start.
#[test]
fn a_held_syn_opens_its_connection_by_its_answer_or_its_first_data() {
    let n = 2 * N as usize;
    // 1. The SYN-ACK was not captured: the new connection's data, from an ISN behind the old
    // stream's position (a stack that reused its ISN after a reboot).
    let mut packets = conversation_packets(CLIENT_ISN, SERVER_ISN, true, &baseline());
    let isn = CLIENT_ISN.wrapping_sub(50_000);
    packets.push(tcp_packet(false, isn, None, true, false, &[]));
    let mut second = conversation_packets(isn, 0x0900_0000, true, &baseline());
    second.drain(..2); // the SYN (pushed above) and the SYN-ACK (missed)
    packets.extend(second);
    // 2. A SYN with a new ISN, the server's challenge ACK, the client's RST, the same SYN
    // again, then its handshake and data.
    let isn2 = 0x2000_0000;
    let third = conversation_packets(isn2, 0x0a00_0000, true, &baseline());
    packets.push(third[0].clone());
    packets.push(tcp_packet(
        true,
        0x0900_0001,
        Some(isn.wrapping_add(1)),
        false,
        false,
        &[],
    ));
    packets.push(tcp_packet(
        false,
        isn.wrapping_add(1),
        None,
        false,
        true,
        &[],
    ));
    packets.extend(third);
    let dir = scratch("held-syn");
    let path = dir.join("held.pcap");
    write_pcap(&path, &packets);
    let (events, report) = replay_file(&path);
    assert_eq!(events.len(), 3 * n, "every PDU of the three connections");
    assert_eq!(report.stats.flows.syn_on_open, 0);
    assert_eq!(report.stats.flows.reused, 2);
    assert_eq!(report.stats.tcp.retransmitted_segments, 0);
    // 3. The device on port 502 sends the SYN of the next connection (it dialled out), the
    // other end answers: both streams start at their ISNs, no mid-stream pickup.
    let mut packets = conversation_packets(CLIENT_ISN, SERVER_ISN, true, &baseline());
    let (s_isn, c_isn) = (0x3000_0000u32, 0x4000_0000u32);
    packets.push(tcp_packet(true, s_isn, None, true, false, &[]));
    packets.push(tcp_packet(
        false,
        c_isn,
        Some(s_isn.wrapping_add(1)),
        true,
        false,
        &[],
    ));
    packets.push(tcp_packet(
        true,
        s_isn.wrapping_add(1),
        Some(c_isn.wrapping_add(1)),
        false,
        false,
        &response(0),
    ));
    packets.push(tcp_packet(
        false,
        c_isn.wrapping_add(1),
        Some(s_isn.wrapping_add(1)),
        false,
        false,
        &request(1),
    ));
    let path = dir.join("dialout.pcap");
    write_pcap(&path, &packets);
    let (events, report) = replay_file(&path);
    assert_eq!(events.len(), n + 2);
    assert_eq!(report.stats.tcp.midstream_pickups, 0);
    assert_eq!(report.stats.flows.reused, 1);
}

/// A hole the server acknowledged with a bare ACK, on a connection that then goes quiet: the
/// data behind it is dissected at the next sweep (10 s of capture time), not when the flow
/// idles out ten minutes later.
#[test]
fn a_hole_acknowledged_on_a_quiet_connection_is_skipped_at_the_next_sweep() {
    let segs = baseline();
    let (l0, l1) = (segs[0].data.len(), segs[2].data.len());
    // Request 0 lost; request 1 held; a bare ACK of both; then silence on this connection
    // while another one (other ports) keeps the capture's clock going for a minute.
    let mut packets: Vec<(std::time::Duration, Vec<u8>)> = Vec::new();
    let t = |ms: u64| std::time::Duration::from_millis(1_700_000_000_000 + ms);
    let c1 = CLIENT_ISN.wrapping_add(1);
    for p in conversation_packets(CLIENT_ISN, SERVER_ISN, true, &[]) {
        packets.push((t(0), p));
    }
    packets.push((
        t(0),
        tcp_packet(
            false,
            c1.wrapping_add(l0 as u32),
            Some(SERVER_ISN + 1),
            false,
            false,
            &segs[2].data,
        ),
    ));
    packets.push((
        t(1),
        tcp_packet(
            true,
            SERVER_ISN + 1,
            Some(c1.wrapping_add((l0 + l1) as u32)),
            false,
            false,
            &[],
        ),
    ));
    for i in 0..60u64 {
        let mut other = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 3], SERVER.0, 64)
            .tcp(40000, 502, 1000 + 12 * i as u32, 8192)
            .write(&mut other, &read_holding_request(i as u16, 1, 0, 1))
            .unwrap();
        packets.push((t(1000 * (i + 1)), other));
    }
    let dir = scratch("quiet-hole");
    let path = dir.join("quiet.pcap");
    common::write_pcap_at(&path, &packets);
    let (events, _) = replay_file(&path);
    let at = events
        .iter()
        .position(|e| e.src_port == CLIENT.1)
        .expect("request 1");
    // The other connection's requests come one a second: the sweep 10 s on comes after
    // about ten of them, the flow's idling out after all 60.
    assert!(
        (5..20).contains(&at),
        "dissected at the sweep after 10 s: event {at} of {}",
        events.len()
    );
}
