//! EtherNet/IP and CIP against tshark (Wireshark's dissectors), frame by frame, on every capture
//! of ../shared/pcaps/enip: every encapsulation message's command, session and status, and the
//! CIP services of the frame (top level, then the embedded ones of Multiple Service Packet and
//! Unconnected Send, in order) with their response bits and, for requests, their classes,
//! instances and symbolic segments (tag names).
//!
//! Disagreements that were examined are listed in `KNOWN_ENIP` with the reason; the test fails
//! on any other, and on a listed one that no longer happens.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use otwatch::event::Event;

/// The captures of ../shared/pcaps/other that carry ENIP (tshark's `enip` filter).
const OTHER: &[&str] = &[
    "other/EthernetIP-CIP.pcap",
    "other/cip_stop_plc.pcap",
    "other/enip_cip_example.pcap",
    "other/multiple_service_packet_cip.pcapng",
    "other/set_attribute_single_service_cip.pcapng",
];

/// Disagreements with tshark that were examined and are explained. (file, frame, reason)
const KNOWN_ENIP: &[(&str, u64, &str)] = &[];

#[derive(Debug, Default, PartialEq)]
struct Frame {
    /// (command, session, status) per encapsulation message.
    encaps: Vec<(u16, u32, u32)>,
    /// CIP services (7 bits), in order.
    services: Vec<u8>,
    /// Classes and instances of request paths, in order.
    classes: Vec<u32>,
    instances: Vec<u32>,
    /// Symbolic segments (tag names) of request paths, in order.
    symbols: Vec<String>,
    /// Identities (ListIdentity, Get_Attributes_All of the Identity object): vendor, device
    /// type, product code, serial, product name.
    identities: Vec<(u16, u16, u16, u32, String)>,
    /// Connected I/O (UDP 2222): connection id and sequence number.
    io: Vec<(u32, u32)>,
    /// Forward Open requests and their replies: O->T and T->O connection ids, and intervals in
    /// µs (RPI asked for, API agreed).
    connections: Vec<(u32, u32, u32, u32)>,
}

fn hex(field: &str) -> Vec<u64> {
    common::hex_list(field)
}

fn tshark(path: &Path) -> BTreeMap<u64, Frame> {
    let rows = common::tshark_fields(
        path,
        "enip",
        &[
            "frame.number",
            "enip.command",
            "enip.session",
            "enip.status",
            "cip.sc",
            "cip.rr",
            "cip.class",
            "cip.instance",
            "cip.symbol",
            "enip.lir.vendor",
            "enip.lir.devtype",
            "enip.lir.prodcode",
            "enip.lir.serial",
            "enip.lir.name",
            "cip.id.vendor_id",
            "cip.id.device_type",
            "cip.id.product_code",
            "cip.id.serial_number",
            "cip.id.product_name",
            "enip.cpf.sai.connid",
            "enip.cpf.sai.seq",
            "cip.cm.ot_connid",
            "cip.cm.to_connid",
            "cip.cm.otrpi",
            "cip.cm.torpi",
            "cip.cm.otapi",
            "cip.cm.toapi",
        ],
    );
    let mut by_frame = BTreeMap::new();
    for row in &rows {
        let f: Vec<&str> = row.iter().map(String::as_str).collect();
        let Ok(frame) = f[0].parse::<u64>() else {
            continue;
        };
        let (c, s, st) = (hex(f[1]), hex(f[2]), hex(f[3]));
        let encaps = (0..c.len())
            .map(|i| {
                (
                    c[i] as u16,
                    s.get(i).copied().unwrap_or(0) as u32,
                    st.get(i).copied().unwrap_or(0) as u32,
                )
            })
            .collect();
        let requests = hex(f[5]).first().is_none_or(|rr| *rr == 0);
        // ListIdentity's fields, else Get_Attributes_All's. tshark prints some in hex (`0x`)
        // and some in decimal.
        let id = if f[9].is_empty() {
            &f[14..19]
        } else {
            &f[9..14]
        };
        let num = |v: &str| match v.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        };
        let identities = match (num(id[0]), num(id[1]), num(id[2]), num(id[3])) {
            (Some(vendor), Some(kind), Some(code), Some(serial)) => {
                vec![(
                    vendor as u16,
                    kind as u16,
                    code as u16,
                    serial,
                    id[4].to_string(),
                )]
            }
            _ => Vec::new(),
        };
        by_frame.insert(
            frame,
            Frame {
                encaps,
                services: hex(f[4]).into_iter().map(|v| v as u8 & 0x7f).collect(),
                classes: if requests {
                    hex(f[6]).into_iter().map(|v| v as u32).collect()
                } else {
                    Vec::new()
                },
                instances: if requests {
                    hex(f[7]).into_iter().map(|v| v as u32).collect()
                } else {
                    Vec::new()
                },
                symbols: if requests {
                    f[8].split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                } else {
                    Vec::new()
                },
                identities,
                // Only where the frame is a Forward Open or its reply: tshark repeats a
                // connection's ids and intervals on its later frames.
                connections: match hex(f[4]).first().map(|s| s & 0x7f) {
                    Some(0x54 | 0x5b) => {
                        let (a, b) = (hex(f[21]), hex(f[22]));
                        let us = |x: &str| {
                            x.split(',')
                                .filter_map(|v| v.parse().ok())
                                .collect::<Vec<u32>>()
                        };
                        let (c, d) = if requests {
                            (us(f[23]), us(f[24]))
                        } else {
                            (us(f[25]), us(f[26]))
                        };
                        match (a.first(), b.first(), c.first(), d.first()) {
                            (Some(&a), Some(&b), Some(&c), Some(&d)) => {
                                vec![(a as u32, b as u32, c, d)]
                            }
                            _ => Vec::new(),
                        }
                    }
                    _ => Vec::new(),
                },
                io: hex(f[19])
                    .into_iter()
                    .zip(f[20].split(',').filter_map(|v| v.parse().ok()))
                    .map(|(c, q)| (c as u32, q))
                    .collect(),
            },
        );
    }
    by_frame
}

fn push_cip(c: &otwatch::dissect::enip::CipEvent, f: &mut Frame) {
    f.services.push(c.service);
    if !c.response {
        f.classes.extend(c.class);
        f.instances.extend(c.instance);
        f.symbols
            .extend(c.tag.iter().flat_map(|t| t.split('.').map(String::from)));
    }
    for i in c.items.iter().flatten() {
        push_cip(i, f);
    }
}

/// `a` is `b` with some entries taken out (order kept).
fn subsequence(a: &[u32], b: &[u32]) -> bool {
    let mut it = b.iter();
    a.iter().all(|x| it.any(|y| y == x))
}

/// tshark shows, with a connected message and with Forward Open and Forward Close, the classes
/// and instances of the connection's path (remembered from the Forward Open) besides the
/// message's own; otwatch reports the message's own path. So there tshark's lists must hold
/// otwatch's, in order; elsewhere they must be equal.
fn agree(x: &Frame, y: &Frame) -> bool {
    let connected = x.encaps.iter().any(|e| e.0 == 0x70)
        || x.services
            .first()
            .is_some_and(|s| matches!(s, 0x4e | 0x54 | 0x5b))
            && x.classes.first() == Some(&6);
    x.encaps == y.encaps
        && x.services == y.services
        && x.identities == y.identities
        && x.io == y.io
        && x.connections == y.connections
        && x.symbols == y.symbols
        && if connected {
            // Contained, and not vacuously: where tshark names classes, otwatch names some.
            subsequence(&x.classes, &y.classes)
                && subsequence(&x.instances, &y.instances)
                && (y.classes.is_empty() || !x.classes.is_empty() || !x.symbols.is_empty())
        } else {
            x.classes == y.classes && x.instances == y.instances
        }
}

fn ours(events: &[Event]) -> BTreeMap<u64, Frame> {
    let mut by_frame: BTreeMap<u64, Frame> = BTreeMap::new();
    for e in events {
        let otwatch::event::Pdu::Enip(p) = &e.pdu else {
            continue;
        };
        if let Some(io) = &p.io {
            let f = by_frame.entry(e.frame).or_default();
            f.io.push((io.connection_id, io.sequence));
            continue;
        }
        let Some(command) = p.command else { continue };
        let f = by_frame.entry(e.frame).or_default();
        f.encaps
            .push((command, p.session.unwrap_or(0), p.status.unwrap_or(0)));
        if let Some(c) = &p.cip {
            push_cip(c, f);
            if let Some(k) = &c.connection {
                let us = |ms: f64| (ms * 1000.0).round() as u32;
                f.connections
                    .push((k.o_t_id, k.t_o_id, us(k.o_t_rpi_ms), us(k.t_o_rpi_ms)));
            }
        }
        f.identities.extend(p.identity.iter().map(|i| {
            (
                i.vendor,
                i.device_type,
                i.product_code,
                i.serial,
                i.product_name.clone(),
            )
        }));
    }
    by_frame
}

#[test]
fn enip_agrees_with_tshark() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    if !common::tshark_or_skip() {
        return;
    }
    let mut problems = Vec::new();
    // Every capture of enip/, those of other/ that carry ENIP, and the scenario captures made
    // with cpppo (fixtures/scenarios).
    let mut paths: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir.join("enip"))
        .expect("enip dir")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (format!("enip/{name}"), e.path())
        })
        .collect();
    paths.sort();
    paths.extend(OTHER.iter().map(|rel| (rel.to_string(), dir.join(rel))));
    paths.extend(common::scenario_captures("enip_"));
    for (rel, path) in &paths {
        let rel = rel.as_str();
        let (events, report) = common::replay_file(path);
        if let Some(e) = report.errors().next() {
            problems.push(format!("{rel}: replay error: {e}"));
        }
        let (a, b) = (ours(&events), tshark(path));
        let known: BTreeSet<u64> = KNOWN_ENIP
            .iter()
            .filter(|k| k.0 == rel)
            .map(|k| k.1)
            .collect();
        let (mut agreeing, mut frames) = (0, 0);
        for f in a.keys().chain(b.keys()).copied().collect::<BTreeSet<u64>>() {
            let empty = Frame::default();
            let (x, y) = (a.get(&f).unwrap_or(&empty), b.get(&f).unwrap_or(&empty));
            frames += 1;
            if known.contains(&f) {
                if agree(x, y) {
                    problems.push(format!("{rel} frame {f}: listed as known but now agrees"));
                }
                continue;
            }
            if agree(x, y) {
                agreeing += 1;
            } else {
                problems.push(format!(
                    "{rel} frame {f}:\n  otwatch {x:?}\n  tshark  {y:?}"
                ));
            }
        }
        if frames == 0 {
            problems.push(format!("{rel}: no ENIP frame on either side"));
        }
        eprintln!(
            "{rel}: {agreeing}/{frames} frames agree; {} known to differ",
            known.len()
        );
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Detection on a real capture: an engineering station polls a controller for 7.6 s, then
/// tries to change its clock (Set_Attribute_List on the Time Sync object, class 0x8B). Learning
/// the first 5 s, that attempt is the one alert: an unauthorized write, on its frame.
#[test]
fn enip_change_date_attempt_is_an_unauthorized_write() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    let path = dir.join("enip/EIP-ChangeDateAttempt.pcap");
    let (alerts, _) = common::detect_files(common::Learn::For(5.0), &[(&path, &|_| true)]);
    let first: Vec<_> = alerts
        .iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
        .map(|a| (a.r#type, a.frames.to_vec()))
        .collect();
    assert_eq!(
        first,
        vec![("unauthorized_write", vec![138])],
        "{alerts:#?}"
    );
}

/// A message with an unknown command in the middle of a stream is reported and stepped over:
/// the write that follows it in the same segment is still seen.
/// An encapsulation message: command, session handle, data (status 0, zero context).
fn encap(command: u16, session: u32, data: &[u8]) -> Vec<u8> {
    let mut v = command.to_le_bytes().to_vec();
    v.extend_from_slice(&(data.len() as u16).to_le_bytes());
    v.extend_from_slice(&session.to_le_bytes());
    v.extend_from_slice(&[0; 16]);
    v.extend_from_slice(data);
    v
}

/// A SendRRData CPF: a null address item and one unconnected data item per message.
fn send_rr(cips: &[&[u8]]) -> Vec<u8> {
    let mut rr = vec![0, 0, 0, 0, 10, 0];
    rr.extend_from_slice(&(1 + cips.len() as u16).to_le_bytes());
    rr.extend_from_slice(&[0, 0, 0, 0]);
    for cip in cips {
        rr.extend_from_slice(&[0xb2, 0]);
        rr.extend_from_slice(&(cip.len() as u16).to_le_bytes());
        rr.extend_from_slice(cip);
    }
    rr
}

/// The packets of one TCP conversation between 10.0.0.1:40000 and 10.0.0.2:`port`, with no
/// handshake (picked up mid-stream): (milliseconds, from the client, payload).
fn tcp_session(
    port: u16,
    segments: &[(u64, bool, Vec<u8>)],
) -> Vec<(std::time::Duration, Vec<u8>)> {
    tcp_conversation(port, false, segments)
}

/// As [`tcp_session`], with the handshake first when `handshake`.
fn tcp_conversation(
    port: u16,
    handshake: bool,
    segments: &[(u64, bool, Vec<u8>)],
) -> Vec<(std::time::Duration, Vec<u8>)> {
    let mut packets = Vec::new();
    let mut seq = [1000u32, 5000u32];
    if handshake {
        // SYN, SYN-ACK, ACK: each side's data starts one after its ISN.
        let (c, v) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let base = || etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let steps = [
            base()
                .ipv4(c, v, 64)
                .tcp(40000, port, seq[0] - 1, 8192)
                .syn(),
            base()
                .ipv4(v, c, 64)
                .tcp(port, 40000, seq[1] - 1, 8192)
                .syn()
                .ack(seq[0]),
            base()
                .ipv4(c, v, 64)
                .tcp(40000, port, seq[0], 8192)
                .ack(seq[1]),
        ];
        for b in steps {
            let mut out = Vec::new();
            b.write(&mut out, &[]).expect("packet");
            packets.push((std::time::Duration::from_millis(1_700_000_000_000), out));
        }
    }
    for (t, from_client, payload) in segments {
        let (src, dst, sp, dp) = if *from_client {
            ([10, 0, 0, 1], [10, 0, 0, 2], 40000, port)
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1], port, 40000)
        };
        let i = usize::from(!from_client);
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq[i], 8192)
            .ack(seq[1 - i]);
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("packet");
        seq[i] = seq[i].wrapping_add(payload.len() as u32);
        packets.push((std::time::Duration::from_millis(1_700_000_000_000 + t), out));
    }
    packets
}

#[test]
fn enip_an_unknown_command_does_not_hide_what_follows() {
    // Set_Attribute_Single class 1 instance 1 attribute 7, in SendRRData.
    let cip = [0x10, 0x03, 0x20, 0x01, 0x24, 0x01, 0x30, 0x07, 0x41, 0x42];
    let mut seg = encap(0x00c8, 7, &[]);
    seg.extend(encap(0x006f, 7, &send_rr(&[&cip])));
    let packets = tcp_session(
        44818,
        &[
            (0, true, encap(0x0065, 0, &[1, 0, 0, 0])),
            (10, false, encap(0x0065, 7, &[1, 0, 0, 0])),
            (20, true, seg),
        ],
    );
    let enip = enip_events("enip-unknown", &packets);
    assert_eq!(
        enip,
        vec![
            (Some(0x65), None, None),
            (Some(0x65), None, None),
            (Some(0xc8), Some("unknown_command"), None),
            (Some(0x6f), None, Some(0x10)),
        ]
    );
}

/// Who a device says it is reaches its asset in the baseline, from a ListIdentity reply
/// (enip.pcap, over TCP). A Get_Attributes_All reply of the Identity object that came through an
/// Unconnected Send (cip.pcap: the controller in a slot behind 192.168.1.10's Ethernet module)
/// is in the events, marked routed, and not put on the asset: it is the module's identity.
#[test]
fn enip_identity_on_the_asset() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    for (file, ip, identity, routed) in [
        (
            "enip/enip.pcap",
            "192.168.166.120",
            Some(
                "1756-L61/B LOGIX5561 (vendor 1, device type 14, product code 54, revision \
                 20.11, serial 0x006c061a)",
            ),
            0,
        ),
        ("enip/cip.pcap", "192.168.1.10", None, 35),
    ] {
        let path = dir.join(file);
        let (events, _) = common::replay_file(&path);
        let n = events
            .iter()
            .filter(|e| {
                matches!(&e.pdu, otwatch::event::Pdu::Enip(p)
                    if p.identity.as_ref().is_some_and(|i| i.routed))
            })
            .count();
        assert_eq!(n, routed, "{file}: routed identities");
        let baseline = common::learn_files(&[(&path, &common::all_frames)]);
        let asset = baseline
            .assets
            .iter()
            .find(|a| a.ip.to_string() == ip)
            .unwrap_or_else(|| panic!("{file}: no asset {ip}: {:#?}", baseline.assets));
        assert_eq!(asset.identity.as_deref(), identity, "{file}");
    }
}

/// Tag values decoded from real Read Tag replies (cpppo, fixtures/scenarios/enip_steady.pcap):
/// the controller serves Temp[i] as a sine of amplitude 0.5 + 0.1 i around 20 + i (noise
/// ±0.05) and Setpoint as zeros (contrib/scenarios/enip_server.py).
#[test]
fn enip_tag_values_from_a_real_controller() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios/enip_steady.pcap");
    let (events, _) = common::replay_file(&path);
    let (mut temps, mut setpoints) = (0, 0);
    for e in &events {
        let otwatch::event::Pdu::Enip(p) = &e.pdu else {
            continue;
        };
        let Some(c) = &p.cip else { continue };
        let Some(values) = &c.values else { continue };
        assert!(c.response, "frame {}: values on a read request", e.frame);
        assert_eq!((values.len(), c.member), (4, Some(0)), "frame {}", e.frame);
        match c.tag.as_deref() {
            Some("Temp") => {
                temps += 1;
                for (i, v) in values.iter().enumerate() {
                    let (mid, amp) = (20.0 + i as f64, 0.5 + 0.1 * i as f64 + 0.05);
                    assert!(
                        (v - mid).abs() <= amp + 1e-6,
                        "frame {}: Temp[{i}] = {v}",
                        e.frame
                    );
                }
            }
            Some("Setpoint") => {
                setpoints += 1;
                assert_eq!(values, &[0.0; 4], "frame {}", e.frame);
            }
            other => panic!("frame {}: values for {other:?}", e.frame),
        }
    }
    assert_eq!((temps, setpoints), (120, 120));
}

/// Connected I/O is cyclic: every packet of a connection comes one RPI after the last. An
/// adapter (10.0.0.2) produces on connection 0x1111 every 100 ms and its scanner (10.0.0.1) on
/// 0x2222. Learning the first 60 s, the same cycles raise nothing; the adapter stopping for 2 s
/// (while its scanner goes on) is found, on the adapter. (Cycles faster than 50 ms are not
/// modelled as polls, docs/alerts.md: their producer's silence still is.)
#[test]
fn enip_io_cycles_are_learned_and_a_break_is_found() {
    let io = |from_adapter: bool, seq: u32| {
        let conn: u32 = if from_adapter { 0x1111 } else { 0x2222 };
        let mut data = (seq as u16).to_le_bytes().to_vec();
        data.extend([1, 2, 3, 4]);
        io_packet(from_adapter, conn, seq, &data)
    };
    let dir = common::scratch("enip-io");
    let mut found = Vec::new();
    for gap in [false, true] {
        let mut packets = Vec::new();
        for k in 0..3000u32 {
            let t = std::time::Duration::from_millis(1_700_000_000_000 + 100 * u64::from(k));
            packets.push((t, io(false, k)));
            if !(gap && (2000..2020).contains(&k)) {
                packets.push((t + std::time::Duration::from_millis(2), io(true, k)));
            }
        }
        let path = dir.join(format!("io-{gap}.pcap"));
        common::write_pcap_at(&path, &packets);
        let (events, _) = common::replay_file(&path);
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(&e.pdu, otwatch::event::Pdu::Enip(p) if p.io.is_some()))
                .count(),
            packets.len()
        );
        let (alerts, _) =
            common::detect_files(common::Learn::For(60.0), &[(&path, &common::all_frames)]);
        found.push(alerts);
    }
    assert!(found[0].is_empty(), "steady cycles: {:#?}", found[0]);
    let broken: Vec<_> = found[1]
        .iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
        .collect();
    assert!(!broken.is_empty(), "the adapter's silence raised nothing");
    for a in &broken {
        assert!(
            matches!(a.r#type, "poll_cycle_broken" | "device_silent"),
            "{a:?}"
        );
        assert_eq!(a.src_ip.to_string(), "10.0.0.2", "{a:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Mode changes from the corpus: Stop (0x07) and Start (0x06) of the controller object (class
/// 0x8E), each one frame, raise `plc_stop` and `plc_start` on it, whatever was learned.
#[test]
fn enip_stop_and_start_of_the_controller_from_the_corpus() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    for (file, kind) in [
        ("other/cip_stop_plc.pcap", "plc_stop"),
        ("enip/cip_start_plc.pcap", "plc_start"),
    ] {
        let path = dir.join(file);
        let (alerts, _) =
            common::detect_files(common::Learn::Everything, &[(&path, &common::all_frames)]);
        let first: Vec<_> = alerts
            .iter()
            .filter(|a| a.state == otwatch_models::AlertState::First)
            .map(|a| (a.r#type, a.frames.to_vec()))
            .collect();
        assert_eq!(first, [(kind, vec![1])], "{file}");
    }
}

/// A Forward Open's reply ties the connected I/O that follows to its connection: each I/O packet
/// between the same two hosts on one of the reply's connection ids carries the interval (API)
/// the reply agreed for its direction; an id no Forward Open opened carries none.
#[test]
fn enip_io_is_tied_to_its_forward_open() {
    fn send_rr_data(cip: &[u8]) -> Vec<u8> {
        // Interface handle, timeout, two CPF items: null address, unconnected data.
        let mut data = vec![0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0xb2, 0];
        data.extend((cip.len() as u16).to_le_bytes());
        data.extend(cip);
        let mut e = vec![0x6f, 0];
        e.extend((data.len() as u16).to_le_bytes());
        e.extend(7u32.to_le_bytes()); // session
        e.extend([0; 4]); // status
        e.extend([1, 2, 3, 4, 5, 6, 7, 8]); // sender context
        e.extend([0; 4]); // options
        e.extend(data);
        e
    }
    // Forward Open to the Connection Manager (class 6, instance 1): the originator proposes
    // T->O id 0x2222; RPIs of 100 ms.
    let mut open = vec![0x54, 2, 0x20, 0x06, 0x24, 0x01, 0x0a, 0x0e];
    open.extend(0u32.to_le_bytes());
    open.extend(0x2222u32.to_le_bytes());
    open.extend(7u16.to_le_bytes());
    open.extend(1u16.to_le_bytes());
    open.extend(99u32.to_le_bytes());
    open.extend([1, 0, 0, 0]);
    open.extend(100_000u32.to_le_bytes());
    open.extend(0x4800u16.to_le_bytes());
    open.extend(100_000u32.to_le_bytes());
    open.extend(0x4800u16.to_le_bytes());
    open.extend([1, 3, 0x20, 0x04, 0x24, 0x01, 0x2c, 0x65]);
    // Its reply: the target chose O->T id 0x1111; APIs 100 ms (O->T) and 50 ms (T->O).
    let mut reply = vec![0xd4, 0, 0, 0];
    reply.extend(0x1111u32.to_le_bytes());
    reply.extend(0x2222u32.to_le_bytes());
    reply.extend(7u16.to_le_bytes());
    reply.extend(1u16.to_le_bytes());
    reply.extend(99u32.to_le_bytes());
    reply.extend(100_000u32.to_le_bytes());
    reply.extend(50_000u32.to_le_bytes());
    reply.extend([0, 0]);
    let (scanner, adapter) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let tcp = |from_scanner: bool, seq: u32, ack: u32, payload: &[u8]| {
        let (src, dst, sp, dp) = if from_scanner {
            (scanner, adapter, 50000, 44818)
        } else {
            (adapter, scanner, 44818, 50000)
        };
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 8192)
            .ack(ack)
            .psh();
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("packet");
        out
    };
    let io =
        |from_adapter: bool, conn: u32, seq: u32| io_packet(from_adapter, conn, seq, &[1, 0, 9, 9]);
    let (req, rep) = (send_rr_data(&open), send_rr_data(&reply));
    let t = |ms: u64| std::time::Duration::from_millis(1_700_000_000_000 + ms);
    let packets = vec![
        (t(0), tcp(true, 1000, 5000, &req)),
        (t(2), tcp(false, 5000, 1000 + req.len() as u32, &rep)),
        (t(10), io(true, 0x2222, 1)),
        (t(12), io(false, 0x1111, 1)),
        (t(20), io(true, 0x3333, 1)),
        // 0x2222 is the adapter's connection: from the scanner it is no connection of theirs.
        (t(22), io(false, 0x2222, 2)),
    ];
    let events = replay_packets("enip-io-tie", &packets);
    let opened: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.pdu {
            otwatch::event::Pdu::Enip(p) => p.cip.as_ref()?.connection.clone(),
            _ => None,
        })
        .map(|c| (c.o_t_id, c.t_o_id, c.o_t_rpi_ms, c.t_o_rpi_ms))
        .collect();
    assert_eq!(
        opened,
        [(0, 0x2222, 100.0, 100.0), (0x1111, 0x2222, 100.0, 50.0)]
    );
    let tied: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.pdu {
            otwatch::event::Pdu::Enip(p) => p.io.as_ref(),
            _ => None,
        })
        .map(|io| (io.connection_id, io.api_ms))
        .collect();
    assert_eq!(
        tied,
        [
            (0x2222, Some(50.0)),
            (0x1111, Some(100.0)),
            (0x3333, None),
            (0x2222, None)
        ]
    );
}

/// The events of a capture of `packets` (written to a scratch directory, then removed).
fn replay_packets(name: &str, packets: &[(std::time::Duration, Vec<u8>)]) -> Vec<Event> {
    let dir = common::scratch(name);
    let path = dir.join("capture.pcap");
    common::write_pcap_at(&path, packets);
    let (events, _) = common::replay_file(&path);
    let _ = std::fs::remove_dir_all(dir);
    events
}

/// A connected I/O packet on UDP 2222, from the adapter 10.0.0.2 to its scanner 10.0.0.1 or the
/// other way: a CPF of a sequenced address item (connection id, sequence) and connected data.
fn io_packet(from_adapter: bool, conn: u32, seq: u32, data: &[u8]) -> Vec<u8> {
    let mut p = vec![2, 0, 0x02, 0x80, 8, 0];
    p.extend(conn.to_le_bytes());
    p.extend(seq.to_le_bytes());
    p.extend([0xb1, 0]);
    p.extend((data.len() as u16).to_le_bytes());
    p.extend(data);
    let (src, dst) = if from_adapter {
        ([10, 0, 0, 2], [10, 0, 0, 1])
    } else {
        ([10, 0, 0, 1], [10, 0, 0, 2])
    };
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(2222, 2222);
    let mut out = Vec::new();
    b.write(&mut out, &p).expect("packet");
    out
}

/// The ENIP events of `packets`: (command, error, CIP service).
fn enip_events(
    name: &str,
    packets: &[(std::time::Duration, Vec<u8>)],
) -> Vec<(Option<u16>, Option<&'static str>, Option<u8>)> {
    replay_packets(name, packets)
        .iter()
        .filter_map(|e| match &e.pdu {
            otwatch::event::Pdu::Enip(p) => {
                Some((p.command, p.error, p.cip.as_ref().map(|c| c.service)))
            }
            _ => None,
        })
        .collect()
}

/// A flow picked up mid-stream (no handshake seen) whose first segment starts with zeros and
/// a chance header, then real replies: the zeros are not taken for NOPs that lock the flow onto
/// the garbage (a made-up length swallowed half the replies and raised a false malformed PDU).
#[test]
fn enip_a_flow_picked_up_mid_stream_resynchronises_on_real_messages() {
    // Read Tag reply (success, DINT 42).
    let reply = [0xcc, 0, 0, 0, 0xc4, 0, 42, 0, 0, 0];
    let mut first = vec![0u8; 48];
    first.extend([0x6f, 0, 0x1b, 0x04, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut segments = vec![(0, false, first)];
    for i in 1..=20u64 {
        segments.push((10 * i, false, encap(0x6f, 7, &send_rr(&[&reply]))));
    }
    let enip = enip_events("enip-midstream", &tcp_session(44818, &segments));
    assert_eq!(enip, vec![(Some(0x6f), None, Some(0x4c)); 20]);
}

/// TCP port 2222 is not EtherNet/IP (its connected I/O is UDP only): an SSH session to a
/// device's port 2222 is a conversation of its own, a new talker, as on port 2223.
#[test]
fn enip_tcp_2222_is_a_conversation_of_its_own() {
    for port in [2222, 2223] {
        let packets = tcp_session(
            port,
            &[
                (0, false, b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec()),
                (10, true, b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
            ],
        );
        let events = replay_packets("enip-tcp-2222", &packets);
        assert!(
            events.len() == 1
                && matches!(
                    events[0].pdu,
                    otwatch::event::Pdu::Conversation { udp: false }
                ),
            "port {port}: {events:?}"
        );
    }
}

/// A SendRRData with two data items (a client sends one), a Stop of the controller in the
/// first and a harmless read in the second: malformed, and the Stop is still seen.
#[test]
fn enip_a_stop_in_an_extra_data_item_is_seen() {
    let stop = [0x07, 0x02, 0x20, 0x8e, 0x24, 0x01];
    let get = [0x0e, 0x03, 0x20, 0x01, 0x24, 0x01, 0x30, 0x07];
    let packets = tcp_session(
        44818,
        &[
            (0, true, encap(0x0065, 0, &[1, 0, 0, 0])),
            (10, false, encap(0x0065, 7, &[1, 0, 0, 0])),
            (20, true, encap(0x006f, 7, &send_rr(&[&stop, &get]))),
        ],
    );
    let dir = common::scratch("enip-two-items");
    let path = dir.join("capture.pcap");
    common::write_pcap_at(&path, &packets);
    let (alerts, _) =
        common::detect_files(common::Learn::Everything, &[(&path, &common::all_frames)]);
    let types: BTreeSet<&str> = alerts.iter().map(|a| a.r#type).collect();
    assert_eq!(types, BTreeSet::from(["plc_stop", "malformed_pdu"]));
    // Counted so whoever reads the records: nobody (dissection alone counts the messages
    // without making their events), or an events output.
    for sink in [
        &mut otwatch::event::NullSink as &mut dyn otwatch::event::EventSink,
        &mut otwatch::event::VecSink::default(),
    ] {
        let mut pipeline = otwatch::pipeline::Pipeline::new();
        let _ = otwatch::replay::replay(std::slice::from_ref(&path), sink, &mut pipeline);
        let enip = &pipeline.stats[otwatch::dissect::registry::ENIP];
        assert_eq!(enip.parse_errors.get("several_data_items"), Some(&1));
        assert_eq!((enip.pdus[0x07], enip.pdus[0x0e]), (1, 1));
    }
}

/// On a connection whose handshake was seen, the stream starts at a message: a NOP first (a
/// target ignores it), then RegisterSession and a Stop of the controller, in one segment, raise
/// the PLC stop (a flow picked up mid-stream resynchronises; this one need not).
#[test]
fn enip_a_stop_after_a_nop_on_a_new_connection_is_seen() {
    let stop = [0x07, 0x02, 0x20, 0x8e, 0x24, 0x01];
    let mut seg = encap(0x0000, 0, &[]);
    seg.extend(encap(0x0065, 0, &[1, 0, 0, 0]));
    seg.extend(encap(0x006f, 7, &send_rr(&[&stop])));
    let packets = tcp_conversation(44818, true, &[(10, true, seg)]);
    let dir = common::scratch("enip-nop-first");
    let path = dir.join("capture.pcap");
    common::write_pcap_at(&path, &packets);
    let (_, report) = common::replay_file(&path);
    assert_eq!(
        report.stats.tcp.midstream_pickups, 0,
        "the handshake was seen"
    );
    let (alerts, _) =
        common::detect_files(common::Learn::Everything, &[(&path, &common::all_frames)]);
    let types: BTreeSet<&str> = alerts.iter().map(|a| a.r#type).collect();
    assert_eq!(types, BTreeSet::from(["plc_stop"]));
}

/// A ListIdentity exchange over UDP with 44818 at both ends (a scanner that sends from the
/// port): whichever datagram comes first, the device is the server, its reply a response. The
/// first datagram's sender was taken for the client, so a capture that began with a reply read
/// the device as a client sending requests.
#[test]
fn enip_udp_list_identity_between_two_44818_ports_keeps_the_device_the_server() {
    let datagram = |from_device: bool, payload: &[u8]| {
        let (scanner, device) = ([10, 0, 0, 9], [10, 0, 0, 5]);
        let (src, dst) = if from_device {
            (device, scanner)
        } else {
            (scanner, device)
        };
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .udp(44818, 44818)
            .write(&mut out, payload)
            .expect("packet");
        out
    };
    let request = encap(0x63, 0, &[]);
    let reply = encap(0x63, 0, &[0, 0]);
    for reply_first in [true, false] {
        let mut packets = vec![datagram(true, &reply), datagram(false, &request)];
        if !reply_first {
            packets.reverse();
        }
        let at = |i: u64| std::time::Duration::from_millis(1_700_000_000_000 + i);
        let packets: Vec<_> = (0..).map(at).zip(packets).collect();
        let events = replay_packets("enip-udp-both", &packets);
        let seen: Vec<_> = events
            .iter()
            .filter(|e| matches!(e.pdu, otwatch::event::Pdu::Enip(_)))
            .map(|e| (e.src_ip.to_string(), e.direction.name()))
            .collect();
        let mut want = vec![
            ("10.0.0.5".to_string(), "response"),
            ("10.0.0.9".to_string(), "request"),
        ];
        if !reply_first {
            want.reverse();
        }
        assert_eq!(seen, want, "reply first: {reply_first}");
    }
}

/// A CIP reply is matched to its request (the sender context of SendRRData), so ENIP channels
/// learn their latency and get response timeouts: on the cpppo scenario the learned latency is
/// tshark's `enip.time`, sample for sample (240 replies, median 3.535 ms, max 10.432 ms).
#[test]
fn enip_replies_are_matched_and_their_latency_is_tsharks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios/enip_steady.pcap");
    let baseline = common::learn_files(&[(&path, &common::all_frames)]);
    let latency = baseline
        .channels
        .iter()
        .filter(|c| c.channel.proto == otwatch_models::Proto::Enip)
        .find_map(|c| c.latency.clone())
        .expect("an ENIP channel with a latency");
    let mut tshark: Vec<f64> = if common::tshark_or_skip() {
        common::tshark_fields(&path, "enip.time", &["enip.time"])
            .iter()
            .filter_map(|f| f.first()?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    tshark.sort_by(f64::total_cmp);
    if !tshark.is_empty() {
        assert_eq!(latency.samples as usize, tshark.len());
        assert!(
            (latency.max - tshark[tshark.len() - 1]).abs() < 1e-6,
            "{latency:?}"
        );
    }
    assert_eq!(latency.samples, 240);
    assert!((latency.p50 - 0.003535).abs() < 1e-6, "{latency:?}");
    assert!((latency.max - 0.010432).abs() < 1e-6, "{latency:?}");
}

/// An encapsulation error reply without data (a bad session handle, what a PLC that restarted
/// answers) answers its SendRRData request: they share the sender context, and detection
/// matches them (it raised `response_timeout` for requests answered within milliseconds).
#[test]
fn enip_an_error_reply_answers_its_request() {
    // Get_Attribute_Single of the Identity object's vendor (class 1, instance 1, attribute 1).
    let get = [0x0e, 0x03, 0x20, 0x01, 0x24, 0x01, 0x30, 0x01];
    let mut request = encap(0x6f, 7, &send_rr(&[&get]));
    request[12..20].copy_from_slice(&42u64.to_le_bytes());
    let mut reply = encap(0x6f, 7, &[]);
    reply[8..12].copy_from_slice(&0x64u32.to_le_bytes());
    reply[12..20].copy_from_slice(&42u64.to_le_bytes());
    let packets = tcp_conversation(44818, true, &[(0, true, request), (2, false, reply)]);
    let events = replay_packets("enip-error-reply", &packets);
    let obs: Vec<_> = events
        .iter()
        .filter_map(otwatch::detection::observe::observe)
        .filter(|o| o.channel.proto == otwatch_models::Proto::Enip)
        .map(|o| (o.kind, o.corr, o.exception))
        .collect();
    use otwatch_models::Kind;
    assert_eq!(obs.len(), 2, "{obs:?}");
    assert_eq!((obs[0].0, obs[1].0), (Kind::Request, Kind::Response));
    assert!(obs[0].1.is_some() && obs[0].1 == obs[1].1, "{obs:?}");
    assert!(obs[1].2, "the error reply is an exception");
}
