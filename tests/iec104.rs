//! IEC 60870-5-104 against tshark (Wireshark's dissector), frame by frame, on every capture of
//! the corpus that carries it (../shared/pcaps/iec104 and the 104 captures of other/): the APCI
//! of every APDU (format, send and receive sequence numbers, U function), every ASDU's header
//! (type id, cause, P/N, test, originator, common address, number of objects), every
//! information object address, and the values tshark decodes (floats, normalized and scaled
//! values, single and double points).
//!
//! Disagreements that were examined are listed in `KNOWN_IEC104` with the reason; the test fails
//! on any other, and on a listed one that no longer happens.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use otwatch::event::Event;

const CAPTURES: &[&str] = &[
    "iec104/ndpi_IEC104.pcap",
    "other/090813_diverse.pcap",
    "other/IEC104_SQ.pcapng",
    "other/JavaRMI_and_IEC_Misc.pcap",
    "other/TestDissectIec104.pcap",
];

/// Disagreements with tshark that were examined and are explained. (file, frame, reason)
///
/// TestDissectIec104.pcap is Wireshark's own test capture of damaged APDUs: a few bytes of
/// garbage, then an APDU whose octets are one value repeated. Both tools skip the garbage and
/// agree on what follows, except where the APDU itself is broken:
const KNOWN_IEC104: &[(&str, u64, &str)] = &[
    (
        "other/TestDissectIec104.pcap",
        36,
        "U frame with two function bits (0x17) and a 1-octet ASDU: tshark shows U type 5 (<ERR>); otwatch reports bad_u_function and no function",
    ),
    (
        "other/TestDissectIec104.pcap",
        41,
        "I frame with a 2-octet ASDU: tshark decodes type 24 from it and flags it malformed; otwatch reports short_asdu",
    ),
    (
        "other/TestDissectIec104.pcap",
        58,
        "the same APDU as frame 41 on another connection",
    ),
    (
        "other/TestDissectIec104.pcap",
        83,
        "I frame with a 4-octet ASDU: tshark decodes type, VSQ, COT and originator from it and flags it malformed; otwatch reports short_asdu",
    ),
    (
        "other/TestDissectIec104.pcap",
        96,
        "the same APDU as frame 83 on another connection",
    ),
];

#[derive(Debug, Default, PartialEq)]
struct Frame {
    /// `I tx rx`, `S rx`, `U function` per APDU.
    apdus: Vec<String>,
    /// (type id, cause, negative, test, originator, common address, objects) per ASDU.
    asdus: Vec<(u8, u8, bool, bool, u8, u16, u8)>,
    ioas: Vec<u32>,
    /// Float, normalized and scaled values, single and double points, in order.
    floats: Vec<f64>,
    normalized: Vec<f64>,
    scaled: Vec<i64>,
    points: Vec<i64>,
}

fn list<T: std::str::FromStr>(field: &str) -> Vec<T> {
    field
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn hex(field: &str) -> Vec<u32> {
    field
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .collect()
}

fn tshark(path: &Path) -> BTreeMap<u64, Frame> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args([
            "-Y",
            "iec60870_104",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ])
        .args(
            [
                "frame.number",
                "iec60870_104.type",
                "iec60870_104.tx",
                "iec60870_104.rx",
                "iec60870_104.utype",
                "iec60870_asdu.typeid",
                "iec60870_asdu.causetx",
                "iec60870_asdu.nega",
                "iec60870_asdu.test",
                "iec60870_asdu.oa",
                "iec60870_asdu.addr",
                "iec60870_asdu.numix",
                "iec60870_asdu.ioa",
                "iec60870_asdu.float",
                "iec60870_asdu.normval",
                "iec60870_asdu.scalval",
                "iec60870_asdu.siq.spi",
                "iec60870_asdu.diq.dpi",
            ]
            .iter()
            .flat_map(|f| ["-e", f]),
        )
        .output()
        .expect("run tshark");
    let mut by_frame = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 18 {
            continue;
        }
        let Ok(frame) = f[0].parse::<u64>() else {
            continue;
        };
        let (types, mut tx, mut rx, mut ut) = (
            hex(f[1]),
            list::<u16>(f[2]).into_iter(),
            list::<u16>(f[3]).into_iter(),
            hex(f[4]).into_iter(),
        );
        let mut apdus = Vec::new();
        for t in types {
            apdus.push(match t {
                0 => format!(
                    "I {} {}",
                    tx.next().unwrap_or(u16::MAX),
                    rx.next().unwrap_or(u16::MAX)
                ),
                1 => format!("S {}", rx.next().unwrap_or(u16::MAX)),
                _ => format!("U {:#x}", ut.next().unwrap_or(0)),
            });
        }
        let ty: Vec<u8> = list(f[5]);
        let cot: Vec<u8> = list(f[6]);
        let neg: Vec<u8> = list(f[7]);
        let test: Vec<u8> = list(f[8]);
        let oa: Vec<u8> = list(f[9]);
        let addr: Vec<u16> = list(f[10]);
        let n: Vec<u8> = list(f[11]);
        let asdus = (0..ty.len())
            .map(|i| {
                (
                    ty[i],
                    cot.get(i).copied().unwrap_or(0),
                    neg.get(i) == Some(&1),
                    test.get(i) == Some(&1),
                    oa.get(i).copied().unwrap_or(0),
                    addr.get(i).copied().unwrap_or(0),
                    n.get(i).copied().unwrap_or(0),
                )
            })
            .collect();
        let mut points: Vec<i64> = list::<i64>(f[16]);
        points.extend(list::<i64>(f[17]));
        by_frame.insert(
            frame,
            Frame {
                apdus,
                asdus,
                ioas: list(f[12]),
                floats: list(f[13]),
                normalized: list(f[14]),
                scaled: list(f[15]),
                points,
            },
        );
    }
    by_frame
}

fn ours(events: &[Event]) -> BTreeMap<u64, Frame> {
    let mut by_frame: BTreeMap<u64, Frame> = BTreeMap::new();
    let mut singles = BTreeMap::<u64, Vec<i64>>::new();
    let mut doubles = BTreeMap::<u64, Vec<i64>>::new();
    for e in events {
        let otwatch::event::Pdu::Iec104(p) = &e.pdu else {
            continue;
        };
        if p.format.is_empty() {
            continue; // bytes that did not frame: no APDU
        }
        if p.format == "U" && p.u_function.is_none() {
            // A U frame whose function is not one bit: no function to compare.
            by_frame
                .entry(e.frame)
                .or_default()
                .apdus
                .push("U ?".into());
            continue;
        }
        let f = by_frame.entry(e.frame).or_default();
        f.apdus.push(match p.format {
            "I" => format!("I {} {}", p.tx_seq.unwrap_or(0), p.rx_seq.unwrap_or(0)),
            "S" => format!("S {}", p.rx_seq.unwrap_or(0)),
            _ => {
                let bits = match p.u_function {
                    Some("startdt_act") => 0x04,
                    Some("startdt_con") => 0x08,
                    Some("stopdt_act") => 0x10,
                    Some("stopdt_con") => 0x20,
                    Some("testfr_act") => 0x40,
                    _ => 0x80,
                };
                format!("U {:#x}", bits >> 2)
            }
        });
        let Some(t) = p.type_id else { continue };
        if p.error.is_some() {
            continue;
        }
        f.asdus.push((
            t,
            p.cot.unwrap_or(0),
            p.negative == Some(true),
            p.test == Some(true),
            p.originator.unwrap_or(0),
            p.common_address.unwrap_or(0),
            p.count.unwrap_or(0),
        ));
        for o in p.objects.iter().flatten() {
            f.ioas.push(o.ioa);
            let Some(v) = o.value else { continue };
            match t {
                13 | 14 | 36 | 50 | 63 | 112 => f.floats.push(v.number()),
                9 | 10 | 34 | 21 | 48 | 61 | 110 => f.normalized.push(v.number()),
                11 | 12 | 35 | 49 | 62 | 111 => f.scaled.push(v.number() as i64),
                1 | 2 | 30 => singles.entry(e.frame).or_default().push(v.number() as i64),
                3 | 4 | 31 => doubles.entry(e.frame).or_default().push(v.number() as i64),
                _ => {}
            }
        }
    }
    // tshark lists the single points' values of a frame, then its double points'.
    for (frame, f) in by_frame.iter_mut() {
        f.points.extend(singles.remove(frame).unwrap_or_default());
        f.points.extend(doubles.remove(frame).unwrap_or_default());
    }
    by_frame
}

/// tshark prints floats with 6 significant digits.
fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1e-3))
}

fn agree(a: &Frame, b: &Frame) -> bool {
    a.apdus == b.apdus
        && a.asdus == b.asdus
        && a.ioas == b.ioas
        && close(&a.floats, &b.floats)
        && close(&a.normalized, &b.normalized)
        && a.scaled == b.scaled
        && a.points == b.points
}

#[test]
fn iec104_agrees_with_tshark() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    if !common::tshark_or_skip() {
        return;
    }
    let mut problems = Vec::new();
    for rel in CAPTURES {
        let path = dir.join(rel);
        let (events, report) = common::replay_file(&path);
        if let Some(e) = report.errors().next() {
            problems.push(format!("{rel}: replay error: {e}"));
        }
        let (a, b) = (ours(&events), tshark(&path));
        let known: BTreeSet<u64> = KNOWN_IEC104
            .iter()
            .filter(|k| k.0 == *rel)
            .map(|k| k.1)
            .collect();
        let (mut apdus, mut asdus, mut objects) = (0, 0, 0);
        for f in a.keys().chain(b.keys()).copied().collect::<BTreeSet<u64>>() {
            let empty = Frame::default();
            let (x, y) = (a.get(&f).unwrap_or(&empty), b.get(&f).unwrap_or(&empty));
            let same = agree(x, y);
            if known.contains(&f) {
                if same {
                    problems.push(format!("{rel} frame {f}: listed as known but now agrees"));
                }
                continue;
            }
            if !same {
                problems.push(format!(
                    "{rel} frame {f}:\n  otwatch {x:?}\n  tshark  {y:?}"
                ));
            } else {
                apdus += x.apdus.len();
                asdus += x.asdus.len();
                objects += x.ioas.len();
            }
        }
        eprintln!(
            "{rel}: agreeing {apdus} APDUs, {asdus} ASDUs, {objects} information objects; {} frames known to differ",
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
