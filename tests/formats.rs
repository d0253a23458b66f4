//! Capture formats and link types: the same real traffic rewritten into every supported container
//! and link layer must give exactly the same events. Plus bad input: missing, empty, not a capture,
//! truncated, zero packets.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use otwatch::capture::CaptureError;
use otwatch::event::Event;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/modbus_example.pcap");

struct Rec {
    sec: u32,
    usec: u32,
    orig: u32,
    data: Vec<u8>,
}

/// Read the little-endian microsecond fixture with a tiny independent reader.
fn records() -> (u32, Vec<Rec>) {
    let b = std::fs::read(FIXTURE).expect("fixture");
    assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    let le = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let link = le(20);
    let mut out = Vec::new();
    let mut o = 24;
    while o + 16 <= b.len() {
        let cap = le(o + 8) as usize;
        out.push(Rec {
            sec: le(o),
            usec: le(o + 4),
            orig: le(o + 12),
            data: b[o + 16..o + 16 + cap].to_vec(),
        });
        o += 16 + cap;
    }
    (link, out)
}

fn write_pcap_custom(path: &Path, big_endian: bool, nanos: bool, link: u32, recs: &[Rec]) {
    let w32 = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let w16 = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut out = Vec::new();
    out.extend_from_slice(&w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    out.extend_from_slice(&w16(2));
    out.extend_from_slice(&w16(4));
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&w32(65535));
    out.extend_from_slice(&w32(link));
    for r in recs {
        out.extend_from_slice(&w32(r.sec));
        out.extend_from_slice(&w32(if nanos { r.usec * 1000 } else { r.usec }));
        out.extend_from_slice(&w32(r.data.len() as u32));
        out.extend_from_slice(&w32(
            r.orig + (r.data.len() as u32).saturating_sub(r.orig.min(r.data.len() as u32))
        ));
        out.extend_from_slice(&r.data);
    }
    std::fs::write(path, out).expect("write pcap");
}

/// pcapng writer for tests, in either byte order.
struct Ng {
    be: bool,
    out: Vec<u8>,
}

impl Ng {
    fn u16(&self, v: u16) -> [u8; 2] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u32(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn block(&mut self, kind: u32, body: &[u8]) {
        let pad = (4 - body.len() % 4) % 4;
        let total = (12 + body.len() + pad) as u32;
        let (k, t) = (self.u32(kind), self.u32(total));
        self.out.extend_from_slice(&k);
        self.out.extend_from_slice(&t);
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(&vec![0; pad]);
        self.out.extend_from_slice(&t);
    }
    fn shb(&mut self) {
        let mut b = self.u32(0x1A2B_3C4D).to_vec();
        b.extend_from_slice(&self.u16(1));
        b.extend_from_slice(&self.u16(0));
        b.extend_from_slice(&[0xff; 8]);
        self.block(0x0A0D_0D0A, &b);
    }
    fn idb(&mut self, link: u16, tsresol: u8) {
        let mut b = self.u16(link).to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.u32(65535));
        b.extend_from_slice(&self.u16(9));
        b.extend_from_slice(&self.u16(1));
        b.extend_from_slice(&[tsresol, 0, 0, 0, 0, 0, 0, 0]);
        self.block(1, &b);
    }
    fn epb(&mut self, if_id: u32, ticks: u64, r: &Rec) {
        let mut b = self.u32(if_id).to_vec();
        b.extend_from_slice(&self.u32((ticks >> 32) as u32));
        b.extend_from_slice(&self.u32(ticks as u32));
        b.extend_from_slice(&self.u32(r.data.len() as u32));
        b.extend_from_slice(&self.u32(r.orig.max(r.data.len() as u32)));
        b.extend_from_slice(&r.data);
        b.extend_from_slice(&vec![0; (4 - r.data.len() % 4) % 4]);
        self.block(6, &b);
    }
}

/// Two sections (the second in the other byte order when `swap`); the second has two interfaces
/// (one unused, nanosecond resolution on the other).
fn write_pcapng(path: &Path, recs: &[Rec], first_be: bool, swap: bool) {
    let half = recs.len() / 2;
    let mut ng = Ng {
        be: first_be,
        out: Vec::new(),
    };
    ng.shb();
    ng.idb(1, 6);
    for r in &recs[..half] {
        ng.epb(0, u64::from(r.sec) * 1_000_000 + u64::from(r.usec), r);
    }
    ng.be = first_be ^ swap;
    ng.shb();
    ng.idb(228, 6);
    ng.idb(1, 9);
    for r in &recs[half..] {
        ng.epb(
            1,
            u64::from(r.sec) * 1_000_000_000 + u64::from(r.usec) * 1000,
            r,
        );
    }
    std::fs::write(path, ng.out).expect("write pcapng");
}

fn relink(recs: &[Rec], f: impl Fn(&[u8]) -> Vec<u8>) -> Vec<Rec> {
    recs.iter()
        .map(|r| {
            let data = f(&r.data);
            let orig = r.orig + data.len() as u32 - r.data.len() as u32;
            Rec {
                sec: r.sec,
                usec: r.usec,
                orig,
                data,
            }
        })
        .collect()
}

/// Events without the `source` field (the file name differs between variants).
fn events_of(path: &Path) -> Vec<Event> {
    let (mut events, report) = replay_file(path);
    assert!(report.errors().next().is_none(), "{:?}", report.files);
    for e in &mut events {
        e.source = std::sync::Arc::from("");
    }
    events
}

#[test]
fn every_container_and_link_type_gives_the_same_events() {
    let dir = scratch("formats");
    let (link, recs) = records();
    assert_eq!(link, 1);
    let reference = events_of(Path::new(FIXTURE));
    assert_eq!(
        reference.len(),
        48,
        "the fixture holds 48 Modbus PDUs (tshark agrees)"
    );

    let mut variants: Vec<(&str, PathBuf)> = Vec::new();
    let mut add = |name: &'static str| {
        let p = dir.join(name);
        variants.push((name, p.clone()));
        p
    };
    write_pcap_custom(&add("be.pcap"), true, false, 1, &recs);
    write_pcap_custom(&add("ns.pcap"), false, true, 1, &recs);
    write_pcap_custom(&add("be-ns.pcap"), true, true, 1, &recs);
    write_pcapng(&add("multi.pcapng"), &recs, false, false);
    write_pcapng(&add("multi-be.pcapng"), &recs, true, false);
    write_pcapng(&add("mixed-order.pcapng"), &recs, false, true);
    {
        let p = add("fixture.pcap.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&p).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(&std::fs::read(FIXTURE).unwrap()).unwrap();
        gz.finish().unwrap();
    }
    let sll = relink(&recs, |d| {
        let mut v = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        v.extend_from_slice(&d[12..14]);
        v.extend_from_slice(&d[14..]);
        v
    });
    write_pcap_custom(&add("sll.pcap"), false, false, 113, &sll);
    let sll2 = relink(&recs, |d| {
        let mut v = d[12..14].to_vec();
        v.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        v.extend_from_slice(&d[14..]);
        v
    });
    write_pcap_custom(&add("sll2.pcap"), false, false, 276, &sll2);
    // NULL: address family in the capturing host's byte order (little endian here).
    let null = relink(&recs, |d| {
        let mut v = 2u32.to_le_bytes().to_vec();
        v.extend_from_slice(&d[14..]);
        v
    });
    write_pcap_custom(&add("null.pcap"), false, false, 0, &null);
    let raw = relink(&recs, |d| d[14..].to_vec());
    write_pcap_custom(&add("raw.pcap"), false, false, 101, &raw);
    let vlan = relink(&recs, |d| {
        let mut v = d[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        v.extend_from_slice(&d[12..]);
        v
    });
    write_pcap_custom(&add("vlan.pcap"), false, false, 1, &vlan);
    let qinq = relink(&recs, |d| {
        let mut v = d[..12].to_vec();
        v.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64]);
        v.extend_from_slice(&d[12..]);
        v
    });
    write_pcap_custom(&add("qinq.pcap"), false, false, 1, &qinq);

    for (name, path) in &variants {
        let got = events_of(path);
        assert_eq!(got.len(), reference.len(), "{name}");
        // Only Ethernet frames carry MAC addresses: the other link types have none to report.
        let ethernet = !matches!(
            *name,
            "sll.pcap" | "sll2.pcap" | "null.pcap" | "raw.pcap" | "loop.pcap"
        );
        for (a, b) in got.iter().zip(&reference) {
            let mut b = b.clone();
            if !ethernet {
                assert!(a.src_mac.is_none() && a.dst_mac.is_none(), "{name}");
                (b.src_mac, b.dst_mac) = (None, None);
            }
            assert_eq!(a, &b, "{name}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn truncated_capture_is_read_up_to_the_damage() {
    let dir = scratch("truncated");
    let full = std::fs::read(FIXTURE).unwrap();
    let (_, recs) = records();
    // Cut the file 10 bytes into the 40th record's data.
    let offset_40: usize = 24 + recs[..39].iter().map(|r| 16 + r.data.len()).sum::<usize>();
    let path = dir.join("cut.pcap");
    std::fs::write(&path, &full[..offset_40 + 16 + 10]).unwrap();
    let (events, report) = replay_file(&path);
    let reference = events_of(Path::new(FIXTURE));
    let before: Vec<_> = reference.iter().filter(|e| e.frame < 40).collect();
    assert_eq!(events.len(), before.len());
    assert_eq!(report.stats.packets, 39);
    let err = report.errors().next().expect("an error");
    match err {
        CaptureError::Truncated {
            offset, packets, ..
        } => {
            assert_eq!(*offset, offset_40 as u64);
            assert_eq!(*packets, 39);
        }
        other => panic!("wrong error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("cut.pcap") && msg.contains(&format!("offset {offset_40}")),
        "{msg}"
    );
    // A record whose captured length is absurd, in the middle of the file: corruption, not
    // truncation, reported at that record, with everything before it processed.
    let mut bad = full.clone();
    bad[offset_40 + 8..offset_40 + 12].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let corrupt = dir.join("corrupt.pcap");
    std::fs::write(&corrupt, &bad).unwrap();
    let (_, report) = replay_file(&corrupt);
    assert_eq!(report.stats.packets, 39);
    match report.errors().next() {
        Some(CaptureError::Corrupt { offset, .. }) => assert_eq!(*offset, offset_40 as u64),
        other => panic!("wrong error {other:?}"),
    }
    // A gzip stream cut short: same story, offset counted in decompressed bytes.
    let gz_path = dir.join("cut.pcap.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&full).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(&gz_path, &gz[..gz.len() * 2 / 3]).unwrap();
    let (_, report) = replay_file(&gz_path);
    assert!(report.stats.packets > 0);
    let msg = report.errors().next().expect("gzip error").to_string();
    assert!(
        msg.contains("cut.pcap.gz") && msg.contains("offset"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_files_are_one_line_errors() {
    let dir = scratch("bad");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "this is not a capture\n").unwrap();
    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, "").unwrap();
    let header_only = dir.join("zero.pcap");
    std::fs::write(&header_only, &std::fs::read(FIXTURE).unwrap()[..24]).unwrap();
    let missing = dir.join("missing.pcap");

    let (_, r) = replay_file(&text);
    assert!(matches!(
        r.errors().next(),
        Some(CaptureError::NotACapture { .. })
    ));
    let (_, r) = replay_file(&empty);
    assert!(matches!(
        r.errors().next(),
        Some(CaptureError::NotACapture { .. })
    ));
    let (_, r) = replay_file(&missing);
    assert!(matches!(r.errors().next(), Some(CaptureError::Open { .. })));
    // A pipe or a device is not read as an empty file: it is named for what it is.
    let (_, r) = replay_file(std::path::Path::new("/dev/zero"));
    let e = r.errors().next().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("/dev/zero") && e.contains("not a regular file"),
        "{e}"
    );
    let (ev, r) = replay_file(&header_only);
    assert!(r.errors().next().is_none() && ev.is_empty() && r.stats.packets == 0);

    // The binary: one line on stderr per bad file, exit status 1, never a panic; good files still run.
    let bin = env!("CARGO_BIN_EXE_otwatch");
    let out = std::process::Command::new(bin)
        .args(["replay", "--quiet"])
        .arg(&text)
        .arg(&missing)
        .arg(FIXTURE)
        .arg("--events")
        .arg(dir.join("ev.jsonl"))
        .output()
        .expect("run otwatch");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains("notes.txt") && lines[0].contains("not a pcap or pcapng"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("missing.pcap") && lines[1].contains("cannot open"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    let written = std::fs::read_to_string(dir.join("ev.jsonl")).unwrap();
    assert_eq!(written.lines().count(), 48);
    let out = std::process::Command::new(bin)
        .args(["replay"])
        .arg(&header_only)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("contains no packets"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unrelated_captures_in_one_run_are_not_stitched_together() {
    // The same capture twice: the second starts before the first ended, so it is a different
    // capture, and its flows start afresh instead of looking like retransmissions of the first.
    let mut sink = otwatch::event::VecSink::default();
    let mut pipeline = otwatch::pipeline::Pipeline::new();
    let files = [PathBuf::from(FIXTURE), PathBuf::from(FIXTURE)];
    let report = otwatch::replay::replay(&files, &mut sink, &mut pipeline);
    assert_eq!(sink.0.len(), 2 * 48);
    assert_eq!(report.stats.tcp.retransmitted_segments, 0);
    assert_eq!(report.stats.tcp.gaps, 0);
    assert_eq!(report.stats.flows.created, 4);
}
