//! Detection end to end: every alert type raised from a capture (the scenarios generated with
//! real peers in fixtures/scenarios, real corpus captures, or a generated capture where no real
//! one exists), and not raised by the same traffic without the anomaly (the capture cut just
//! before it, or its clean counterpart).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use otwatch_models::Alert;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn types(alerts: &[Alert]) -> BTreeSet<&'static str> {
    alerts.iter().map(|a| a.r#type).collect()
}

/// Alerts of `file` with learning or detection as given, keeping frames up to `last`.
fn run(learn: Learn, file: &Path, last: Option<u64>) -> Vec<Alert> {
    let keep = move |f: u64| last.is_none_or(|l| f <= l);
    detect_files(learn, &[(file, &keep)]).0
}

fn strs(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

/// Capture time of a frame (`i64::MAX` past the end).
fn frame_ts(path: &Path, frame: u64) -> i64 {
    use otwatch::capture::{CaptureFile, PacketSource};
    let mut cap = CaptureFile::open(path).expect("open");
    while let Some(p) = cap.next_packet() {
        let p = p.expect("packet");
        if p.frame == frame {
            return p.ts_nanos;
        }
    }
    i64::MAX
}

fn labels() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("scenarios/labels.json")).expect("labels.json");
    serde_json::from_str(&text).expect("labels parse")
}

/// What otwatch raises instead of a labelled alert type on the same PDU (one PDU, one account:
/// a new device's channel is new; an unauthorized write is also a new function and a write
/// outside the learned ranges).
fn satisfied(expected: &str, raised: &BTreeSet<&str>) -> bool {
    raised.contains(expected)
        || match expected {
            "new_channel" => raised.contains("new_asset"),
            "new_function_code" | "address_out_of_range" => raised.contains("unauthorized_write"),
            _ => false,
        }
}

/// Types a labelled episode may also raise beyond the label's own lists: a scan that walks unit
/// ids reads addresses no learned channel read, and unanswered probes time out; a written value
/// far outside a point's envelope shows up again in the polls that read it back.
fn also_acceptable(expected: &[&str]) -> &'static [&'static str] {
    if expected.contains(&"scan") {
        &["address_out_of_range", "response_timeout"]
    } else if expected.contains(&"unauthorized_write") {
        &["value_out_of_range"]
    } else {
        &[]
    }
}

/// Every scenario: learn the 60-s clean prefix, then every episode raises its expected alerts
/// (within the episode, or for timers, by its end), nothing else is raised, and the capture cut
/// before the first episode raises nothing at all.
#[test]
fn scenarios_raise_their_labelled_alerts_and_nothing_else() {
    let labels = labels();
    let caps = labels["captures"].as_object().expect("captures");
    let mut checked = 0;
    for (name, cap) in caps {
        let path = fixture(&format!(
            "scenarios/{}",
            cap["file"].as_str().expect("file")
        ));
        let learn_for = cap["clean_prefix"]["end_s"].as_f64().expect("end_s");
        let alerts = run(Learn::For(learn_for), &path, None);
        let episodes = cap["episodes"].as_array().expect("episodes");
        if episodes.is_empty() {
            assert!(
                alerts.is_empty(),
                "{name}: clean capture raised {:?}",
                types(&alerts)
            );
            checked += 1;
            continue;
        }
        let first_episode_frame = episodes
            .iter()
            .filter_map(|e| e["first_frame"].as_u64())
            .min()
            .expect("frames");
        let before = run(Learn::For(learn_for), &path, Some(first_episode_frame - 1));
        assert!(
            before.is_empty(),
            "{name}: the traffic before the anomaly raised {:?}",
            types(&before)
        );
        let mut allowed = BTreeSet::new();
        for (i, ep) in episodes.iter().enumerate() {
            let first = ep["first_frame"].as_u64().expect("first_frame");
            let last = ep["last_frame"].as_u64().expect("last_frame");
            let next_first = episodes
                .get(i + 1)
                .and_then(|e| e["first_frame"].as_u64())
                .unwrap_or(u64::MAX);
            // An alert belongs to the episode when a frame it names lies between the episode's
            // first frame and the next episode's, or when it was raised in that time (a silence
            // names the last frame before it).
            let (from, to) = (frame_ts(&path, first), frame_ts(&path, next_first));
            let raised: BTreeSet<&str> = alerts
                .iter()
                .filter(|a| {
                    a.frames.iter().any(|&f| f >= first && f < next_first)
                        || (a.ts >= from && a.ts < to)
                })
                .map(|a| a.r#type)
                .collect();
            let expected = strs(&ep["expected_alerts"]);
            for e in &expected {
                assert!(
                    satisfied(e, &raised),
                    "{name} episode {i} ({first}..{last}): expected {e}, raised {raised:?}"
                );
            }
            allowed.extend(expected.iter().map(|s| s.to_string()));
            allowed.extend(strs(&ep["acceptable_alerts"]).iter().map(|s| s.to_string()));
            allowed.extend(also_acceptable(&expected).iter().map(|s| s.to_string()));
        }
        for a in &alerts {
            assert!(
                allowed.contains(a.r#type),
                "{name}: unexpected {} alert: {}",
                a.r#type,
                a.message
            );
        }
        checked += 1;
    }
    assert_eq!(checked, caps.len(), "every scenario checked");
}

/// The real-peer scenarios of the protocols added last, IEC 104 (c104) and EtherNet/IP (cpppo):
/// learning the clean 60 s, each raises exactly these alert types, each first raised inside its
/// labelled episode (by a frame it names or by its time), and the steady captures raise nothing.
#[test]
fn iec104_and_enip_scenarios_raise_exactly_their_alerts() {
    use otwatch_models::AlertState;
    let labels = labels();
    for (name, expected) in [
        ("iec104_steady", &[][..]),
        ("iec104_command", &["new_asset", "unauthorized_write"][..]),
        ("iec104_silent", &["device_silent"][..]),
        ("enip_steady", &[][..]),
        (
            "enip_write",
            &["new_asset", "unauthorized_write", "value_out_of_range"][..],
        ),
        ("enip_reset", &["device_restart_command"][..]),
        ("enip_silent", &["device_silent"][..]),
    ] {
        let path = fixture(&format!("scenarios/{name}.pcap"));
        // Read whole, and dissected: well over 100 PDUs of the protocol.
        let (events, report) = replay_file(&path);
        assert!(report.errors().next().is_none(), "{name}");
        let pdus = events
            .iter()
            .filter(|e| e.proto == name.split('_').next().unwrap_or_default())
            .count();
        assert!(pdus > 100, "{name}: {pdus} events");
        let alerts = run(Learn::For(60.0), &path, None);
        let first: Vec<&Alert> = alerts
            .iter()
            .filter(|a| a.state == AlertState::First)
            .collect();
        assert_eq!(
            first.iter().map(|a| a.r#type).collect::<BTreeSet<_>>(),
            expected.iter().copied().collect::<BTreeSet<_>>(),
            "{name}: {first:#?}"
        );
        let episodes = labels["captures"][name]["episodes"]
            .as_array()
            .expect("episodes");
        assert_eq!(episodes.len(), usize::from(!expected.is_empty()), "{name}");
        let Some(ep) = episodes.first() else { continue };
        let frame = |k: &str| ep[k].as_u64().expect("frame");
        let (f0, f1) = (frame("first_frame"), frame("last_frame"));
        let (from, to) = (frame_ts(&path, f0), frame_ts(&path, f1));
        for a in first {
            assert!(
                a.frames.iter().any(|f| (f0..=f1).contains(f)) || (from..=to).contains(&a.ts),
                "{name}: {a:?} outside frames {f0}..{f1}"
            );
        }
    }
}

/// The behaviour model flags the flood's windows, and passes every window of the clean capture
/// (learned from the clean capture's first minute).
#[test]
fn behaviour_anomaly_flags_the_flood_not_steady_polling() {
    let flood = run(
        Learn::For(60.0),
        &fixture("scenarios/modbus_flood.pcap"),
        None,
    );
    let b = flood
        .iter()
        .find(|a| a.r#type == "behaviour_anomaly")
        .expect("behaviour_anomaly on the flood");
    assert!(
        b.observed["distance"].as_f64().unwrap_or(0.0)
            > b.learned["threshold"].as_f64().unwrap_or(f64::MAX)
    );
    let steady = run(
        Learn::For(60.0),
        &fixture("scenarios/modbus_steady.pcap"),
        None,
    );
    assert!(!types(&steady).contains("behaviour_anomaly"));
}

/// A baseline saved and loaded detects exactly as the one learned in the same run.
#[test]
fn a_saved_baseline_detects_like_a_learned_one() {
    let steady = fixture("scenarios/modbus_steady.pcap");
    let write = fixture("scenarios/modbus_write.pcap");
    let baseline = learn_files(&[(&steady, &all_frames)]);
    let dir = scratch("baseline-roundtrip");
    let path = dir.join("b.json");
    baseline.save(&path).expect("save");
    let loaded = otwatch_models::Baseline::load(&path).expect("load");
    assert_eq!(loaded, baseline);
    let a = run(Learn::Baseline(Box::new(baseline)), &write, None);
    let b = run(Learn::Baseline(Box::new(loaded)), &write, None);
    let key = |v: &[Alert]| {
        v.iter()
            .map(|a| (a.r#type, a.frames.to_vec(), a.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b));
    assert!(types(&a).contains("unauthorized_write"));
    // A foreign file is refused with its name in the message.
    std::fs::write(dir.join("x.json"), "{\"format\":\"other\",\"version\":9}").expect("write");
    let err = otwatch_models::Baseline::load(&dir.join("x.json"))
        .expect_err("foreign file")
        .to_string();
    assert!(err.contains("x.json") && err.contains("version 9"), "{err}");
    // A version 2 file (UMAS and CIP object-specific functions of another meaning) is refused,
    // and the message says what to do.
    let saved = std::fs::read_to_string(dir.join("b.json")).expect("saved");
    let v1 = saved.replacen("\"version\": 3,", "\"version\": 2,", 1);
    assert_ne!(saved, v1, "the saved file says version 3");
    std::fs::write(dir.join("v1.json"), v1).expect("write");
    let err = otwatch_models::Baseline::load(&dir.join("v1.json"))
        .expect_err("version 2")
        .to_string();
    assert!(
        err.contains("version 2") && err.contains("learn the baseline again"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A hand-edited baseline is checked when it is read: it loads as detection can use it, or is
/// refused with what is wrong. Ranges in any order are merged (before, `[[100,200],[0,9]]`
/// raised `address_out_of_range` for reads of 0..9); a misspelt key (`lateny`, which dropped
/// the latency model), a channel listed twice (the last entry won), a range that ends before it
/// starts and a behaviour model without centroids (an anomaly on every window) are refused.
#[test]
fn a_hand_edited_baseline_is_checked_when_read() {
    let steady = fixture("scenarios/modbus_steady.pcap");
    let baseline = learn_files(&[(&steady, &all_frames)]);
    let text = serde_json::to_value(&baseline).expect("json");
    let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = text.clone();
        edit(&mut v);
        otwatch_models::Baseline::from_json(&v.to_string(), "edited.json")
    };
    let with_reads = |v: &mut serde_json::Value| -> usize {
        let channels = v["channels"].as_array().expect("channels");
        channels
            .iter()
            .position(|c| c["reads"].as_object().is_some_and(|r| !r.is_empty()))
            .expect("a channel with reads")
    };
    // Reads listed out of order and overlapping: the same set once merged.
    let b = edited(&|v| {
        let i = with_reads(v);
        let reads = v["channels"][i]["reads"].as_object_mut().expect("reads");
        for r in reads.values_mut() {
            let mut ranges = r.as_array().expect("ranges").clone();
            ranges.reverse();
            ranges.extend(ranges.clone());
            *r = serde_json::Value::Array(ranges);
        }
    })
    .expect("ranges in any order load");
    assert_eq!(b, baseline);
    let refused = |edit: &dyn Fn(&mut serde_json::Value), says: &str| {
        let err = edited(edit).expect_err(says).to_string();
        assert!(
            err.contains("edited.json") && err.contains(says),
            "{says}: {err}"
        );
    };
    refused(
        &|v| {
            let i = with_reads(v);
            let c = v["channels"][i].as_object_mut().expect("channel");
            let latency = c
                .remove("latency")
                .unwrap_or(serde_json::json!({"p50": 0.001}));
            c.insert("lateny".into(), latency);
        },
        "lateny",
    );
    refused(
        &|v| {
            let first = v["channels"][0].clone();
            v["channels"].as_array_mut().expect("channels").push(first);
        },
        "listed twice",
    );
    refused(
        &|v| {
            let i = with_reads(v);
            let reads = v["channels"][i]["reads"].as_object_mut().expect("reads");
            for r in reads.values_mut() {
                *r = serde_json::json!([[9, 0]]);
            }
        },
        "ends before it starts",
    );
    if baseline.behaviour.is_some() {
        refused(
            &|v| v["behaviour"]["centroids"] = serde_json::json!([]),
            "centroid",
        );
    }
}

/// Alerts that need no baseline, from fixtures: the first frame that raises them, and the same
/// capture cut just before that frame raises none.
#[test]
fn command_and_protocol_alerts_from_fixtures() {
    for (file, kind, frame) in [
        ("s7comm_downloading_block_db1.pcap", "program_download", 43),
        ("s7ident.pcap", "program_upload", 20),
        (
            "cold_restart_and_response.pcap",
            "device_restart_command",
            4,
        ),
        ("full_exchange.pcap", "device_restarted", 4),
        ("modbus.pcap", "malformed_pdu", 32),
        ("modbus.pcap", "device_restart_command", 8),
    ] {
        check_first_frame(&fixture(file), kind, frame);
    }
}

fn check_first_frame(path: &Path, kind: &str, frame: u64) {
    let alerts = run(Learn::Everything, path, None);
    let first = alerts
        .iter()
        .filter(|a| a.r#type == kind)
        .map(|a| a.frames[0])
        .min();
    assert_eq!(first, Some(frame), "{}: first {kind}", path.display());
    let before = run(Learn::Everything, path, Some(frame - 1));
    assert!(
        !types(&before).contains(kind),
        "{}: {kind} before frame {frame}",
        path.display()
    );
}

/// S7 PLC stop and start, and DNP3 file transfer, from the corpus.
#[test]
fn plc_stop_start_and_dnp3_file_transfer_from_the_corpus() {
    let Some(dir) = corpus_dir() else { return };
    for (file, kind, frame) in [
        ("s7/snap7_s300_everything.pcapng", "plc_stop", 57),
        ("s7/snap7_s300_everything.pcapng", "plc_start", 63),
        ("s7/step7_s300_stop.pcapng", "plc_stop", 1),
        ("dnp3/dnp3_file_read.pcap", "program_upload", 7),
        ("dnp3/dnp3_file_write.pcap", "program_download", 13),
        ("dnp3/DNP3-Malformed.pcap", "malformed_pdu", 2),
    ] {
        let path = dir.join(file);
        if frame == 1 {
            let alerts = run(Learn::Everything, &path, None);
            assert!(types(&alerts).contains(kind), "{file}: {kind}");
        } else {
            check_first_frame(&path, kind, frame);
        }
    }
}

/// Lemay's Modbus scan of RTU .104 by .101 against a baseline of the site's clean traffic: a new
/// channel between known devices, a new function code, reads outside the learned ranges, an
/// exception burst and a scan; and the MS08-067 exploit's new TCP conversations.
#[test]
fn lemay_scan_and_exploit_against_the_sites_clean_traffic() {
    let Some(dir) = corpus_dir() else { return };
    let l = dir.join("labelled");
    let clean = l.join("moving_two_files_modbus_6RTU.pcap");
    let labelled = read_lemay_labels(&l.join("moving_two_files_modbus_6RTU_labeled.csv"));
    let keep = |f: u64| !labelled.contains(&f);
    let baseline = learn_files(&[(&clean, &keep)]);
    let scan = run(
        Learn::Baseline(Box::new(baseline.clone())),
        &l.join("characterization_modbus_6RTU_with_operate.pcap"),
        None,
    );
    let t = types(&scan);
    for kind in [
        "new_channel",
        "new_function_code",
        "address_out_of_range",
        "exception_burst",
        "scan",
    ] {
        assert!(
            t.contains(kind),
            "characterization: no {kind}; raised {t:?}"
        );
    }
    let exploit = run(
        Learn::Baseline(Box::new(baseline.clone())),
        &l.join("exploit_ms08_netapi_modbus_6RTU_with_operate.pcap"),
        None,
    );
    let port_4444 = exploit
        .iter()
        .any(|a| a.r#type == "new_channel" && a.message.contains("port 4444"));
    assert!(
        port_4444,
        "exploit: no new_channel for port 4444: {:?}",
        types(&exploit)
    );
    // The clean traffic itself raises nothing against its own baseline.
    let again = run(Learn::Baseline(Box::new(baseline)), &clean, None);
    let own: Vec<&Alert> = again
        .iter()
        .filter(|a| a.frames.iter().all(|f| keep(*f)))
        .collect();
    assert!(
        own.is_empty(),
        "clean frames raised {:?}",
        own.iter().map(|a| &a.message).collect::<Vec<_>>()
    );
}

pub fn read_lemay_labels(path: &Path) -> BTreeSet<u64> {
    let text = std::fs::read_to_string(path).expect("labels");
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().split(';');
            let frame = it.next()?.trim().parse().ok()?;
            (it.next()?.trim() == "1").then_some(frame)
        })
        .collect()
}

/// Evidence: each alert's pcap holds the packets it names, readable by a pcap reader.
#[test]
fn evidence_pcaps_hold_the_alerts_packets() {
    use otwatch::detection::{DetectSink, Detection};
    use otwatch_models::{Engine, EngineConfig};
    let dir = scratch("evidence");
    let engine = Engine::learning(EngineConfig {
        learn_for: Some(60_000_000_000),
        ..EngineConfig::default()
    });
    let mut det = Detection::new(engine, None);
    det.kept = Some(Vec::new());
    let mut pipeline = otwatch::pipeline::Pipeline::new();
    pipeline.evidence = Some(det.with_evidence(&dir).expect("evidence dir"));
    let mut null = otwatch::event::NullSink;
    let path = fixture("scenarios/modbus_write.pcap");
    {
        let mut sink = DetectSink {
            detection: &mut det,
            inner: &mut null,
        };
        otwatch::replay::replay(&[path], &mut sink, &mut pipeline);
    }
    let _ = det.finish();
    let alerts = det.kept.take().unwrap_or_default();
    let write = alerts
        .iter()
        .find(|a| a.r#type == "unauthorized_write")
        .expect("unauthorized_write");
    let file = write.evidence.as_ref().expect("evidence path");
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(file).expect("open evidence"))
        .expect("pcap");
    let mut n = 0;
    while let Some(p) = r.next_packet() {
        p.expect("packet");
        n += 1;
    }
    assert_eq!(
        n,
        write.frames.len(),
        "evidence holds exactly the named frames"
    );
    assert_eq!(
        det.evidence_written as usize,
        alerts
            .iter()
            .filter(|a| !a.repeat && a.evidence.is_some())
            .count()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A known device answering from another Ethernet address (replaced hardware, or someone else
/// answering for its IP) is a `new_asset`; the unmodified capture raises nothing.
#[test]
fn a_known_ip_behind_a_new_mac_is_reported() {
    use otwatch::capture::{CaptureFile, PacketSource};
    let steady = fixture("scenarios/modbus_steady.pcap");
    let server_mac = [0x02, 0x77, 0, 0, 0, 0x02];
    let mut cap = CaptureFile::open(&steady).expect("open");
    let mut first_ts = None;
    let mut frames = Vec::new();
    let mut changed = 0;
    while let Some(p) = cap.next_packet() {
        let p = p.expect("packet");
        let t0 = *first_ts.get_or_insert(p.ts_nanos);
        let mut data = p.data.to_vec();
        // After the 60-s learning window, the server's frames come from another NIC.
        if p.ts_nanos - t0 > 70_000_000_000 && data.get(6..12) == Some(&server_mac[..]) {
            data[11] = 0x99;
            changed += 1;
        }
        frames.push((std::time::Duration::from_nanos(p.ts_nanos as u64), data));
    }
    assert!(changed > 10);
    let dir = scratch("mac-change");
    let path = dir.join("mac.pcap");
    write_pcap_at(&path, &frames);
    let alerts: Vec<Alert> = run(Learn::For(60.0), &path, None)
        .into_iter()
        .filter(|a| !a.repeat)
        .collect();
    let mac: Vec<&Alert> = alerts.iter().filter(|a| a.r#type == "new_asset").collect();
    assert_eq!(
        mac.len(),
        1,
        "{:?}",
        alerts.iter().map(|a| &a.message).collect::<Vec<_>>()
    );
    assert!(
        mac[0].message.contains("02:77:00:00:00:99")
            && mac[0].message.contains("02:77:00:00:00:02"),
        "{}",
        mac[0].message
    );
    assert_eq!(
        alerts.len(),
        1,
        "nothing else: {:?}",
        alerts.iter().map(|a| &a.message).collect::<Vec<_>>()
    );
    assert!(run(Learn::For(60.0), &steady, None).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// Modbus encapsulated interface transport (43) is one function per MEI type: a client that
/// read the device identification (14) in learning and then speaks CANopen's general reference
/// (13), which reaches the object dictionary, uses a new function.
#[test]
fn modbus_43_is_a_function_per_mei_type() {
    let adu = |tid: u16, pdu: &[u8]| {
        let mut a = tid.to_be_bytes().to_vec();
        a.extend_from_slice(&[0, 0]);
        a.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
        a.push(1);
        a.extend_from_slice(pdu);
        a
    };
    let segments: Vec<Segment> = [
        adu(1, &[43, 14, 1, 0]),
        adu(2, &[43, 13, 0, 0, 1, 0x10, 0x18, 0, 0, 0]),
    ]
    .into_iter()
    .scan(0, |off, data| {
        let s = Segment {
            from: Side::Client,
            offset: *off,
            data,
            captured: true,
        };
        *off += s.data.len();
        Some(s)
    })
    .collect();
    let dir = scratch("mb43");
    let path = dir.join("mb43.pcap");
    write_conversation(&path, true, &segments);
    let (events, _) = replay_file(&path);
    let functions: Vec<u32> = events
        .iter()
        .filter_map(otwatch::detection::observe::observe)
        .filter(|o| o.channel.proto == otwatch_models::Proto::Modbus)
        .map(|o| o.function)
        .collect();
    assert_eq!(functions, [43 | 14 << 8, 43 | 13 << 8]);
}

/// The client's side of a Modbus/TCP conversation: one segment per ADU, back to back.
fn client_stream(adus: impl IntoIterator<Item = Vec<u8>>) -> Vec<Segment> {
    let mut offset = 0;
    adus.into_iter()
        .map(|data| {
            let at = offset;
            offset += data.len();
            Segment {
                from: Side::Client,
                offset: at,
                data,
                captured: true,
            }
        })
        .collect()
}

/// Schneider UMAS (Modbus function code 90) is many functions by its own code: a PLC stop,
/// a start, a program download and an upload from a programming station are the commands
/// they are (raised while learning too), each its own function (`90 | umas << 8`).
#[test]
fn umas_stop_start_download_and_upload_are_commands() {
    let umas = |tid: u16, f: u8| {
        let mut adu = tid.to_be_bytes().to_vec();
        adu.extend_from_slice(&[0, 0, 0, 5, 0, 0x5A, 0x01, f, 0x00]);
        adu
    };
    let segs = client_stream(
        [(1, 0x12), (2, 0x41), (3, 0x30), (4, 0x33), (5, 0x40)].map(|(tid, f)| umas(tid, f)),
    );
    let dir = scratch("umas");
    let path = dir.join("umas.pcap");
    write_conversation(&path, true, &segs);
    let (events, _) = replay_file(&path);
    let named: Vec<_> = events
        .iter()
        .filter_map(|e| e.modbus()?.subfunction_name)
        .collect();
    assert_eq!(
        named,
        [
            "keep_alive",
            "stop_plc",
            "initialize_download",
            "initialize_upload",
            "start_plc"
        ]
    );
    let alerts = run(Learn::Everything, &path, None);
    let raised: Vec<_> = alerts
        .iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
        .map(|a| (a.r#type, a.observed["function"].as_u64()))
        .collect();
    assert_eq!(
        raised,
        [
            ("plc_stop", Some(90 | 0x41 << 8)),
            ("program_download", Some(90 | 0x30 << 8)),
            ("program_upload", Some(90 | 0x33 << 8)),
            ("plc_start", Some(90 | 0x40 << 8)),
        ]
    );
}

/// Modbus write file record (21) writes records: one address each in the file records space
/// (`file << 16 | record`). The client that wrote file 4 record 1 while learning writes it
/// again (nothing), then file 9 record 7, far from anything written (`address_out_of_range`).
#[test]
fn file_record_writes_are_checked_where_they_write() {
    let write = |tid: u16, file: u16, record: u16| {
        let mut pdu = vec![0x15, 9, 6];
        for v in [file, record, 1, 0x1234] {
            pdu.extend_from_slice(&v.to_be_bytes());
        }
        let mut adu = tid.to_be_bytes().to_vec();
        adu.extend_from_slice(&[0, 0, 0, pdu.len() as u8 + 1, 1]);
        adu.extend_from_slice(&pdu);
        adu
    };
    let capture = |name: &str, writes: &[(u16, u16)]| {
        let segs = client_stream(
            writes
                .iter()
                .enumerate()
                .map(|(k, &(file, record))| write(k as u16 + 1, file, record)),
        );
        let dir = scratch(name);
        let path = dir.join("fc21.pcap");
        write_conversation(&path, true, &segs);
        (dir, path)
    };
    let (_d1, learned) = capture("fc21-learn", &[(4, 1), (4, 1)]);
    let (_d2, later) = capture("fc21-detect", &[(4, 1), (9, 7)]);
    let baseline = learn_files(&[(&learned, &all_frames)]);
    let alerts = run(Learn::Baseline(Box::new(baseline)), &later, None);
    let out: Vec<_> = alerts
        .iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
        .map(|a| {
            (
                a.r#type,
                a.observed["space"].clone(),
                a.observed["start"].clone(),
            )
        })
        .collect();
    assert_eq!(
        out,
        [(
            "address_out_of_range",
            serde_json::json!("file_records"),
            serde_json::json!(9 << 16 | 7)
        )]
    );
}

/// Detection learning for the first minute of capture time, keeping its alert lines, with
/// batches of `batch` observations.
fn learning_a_minute(batch: usize) -> otwatch::detection::Detection {
    use otwatch_models::{Engine, EngineConfig};
    let mut det = otwatch::detection::Detection::new(
        Engine::learning(EngineConfig {
            learn_for: Some(60_000_000_000),
            ..EngineConfig::default()
        }),
        None,
    );
    det.kept = Some(Vec::new());
    det.batch = batch;
    det
}

/// The scenarios `names` merged into one capture at `out`: each shifted to start when the
/// first does, the packets in time order. Their flows are apart (each protocol its port), so
/// the observations some dissectors build and the events others emit come interleaved.
fn merged(names: &[&str], out: &Path) -> PathBuf {
    use otwatch::capture::{CaptureFile, PacketSource};
    let mut packets: Vec<(i64, usize, Vec<u8>)> = Vec::new();
    let mut start = None;
    for (n, name) in names.iter().enumerate() {
        let mut cap = CaptureFile::open(&fixture(&format!("scenarios/{name}.pcap"))).expect("open");
        let mut shift = None;
        while let Some(p) = cap.next_packet() {
            let p = p.expect("packet");
            let first = *start.get_or_insert(p.ts_nanos);
            let d = *shift.get_or_insert(first - p.ts_nanos);
            packets.push((p.ts_nanos + d, n, p.data.to_vec()));
        }
    }
    packets.sort_by_key(|p| (p.0, p.1));
    let timed: Vec<_> = packets
        .into_iter()
        .map(|(ts, _, data)| (std::time::Duration::from_nanos(ts as u64), data))
        .collect();
    write_pcap_at(out, &timed);
    out.to_path_buf()
}

/// One pipeline's detection takes its observations in batches (`Detection::batch`): held,
/// then run before the clock ticks, before the metrics publish or sample, before an event, when
/// the batch is full, at a new capture and at the end. The alert lines are the same, in the same
/// order, as with each observation run at once (ids and times included), and so are what the
/// engine has seen when the replay ends and every OpenMetrics sample (per-channel series and alerts by type at each capture time): on every
/// scenario (the hour-long ones too), learning its clean first minute, timers among the alerts,
/// a flood among the captures; on four protocols' scenarios merged into one capture
/// (observations held while events come); and on two captures, the later one first (a new
/// capture, and the clock stepping back).
#[test]
fn batches_of_observations_raise_the_same_lines_in_the_same_order() {
    use otwatch::detection::{alert_json, DetectSink, MetricsHub};
    let dir = scratch("batches");
    let run = |paths: &[PathBuf], batch: usize, metrics: bool| -> (Vec<String>, String) {
        let mut det = learning_a_minute(batch);
        let om = dir.join("samples.om");
        if metrics {
            let mut hub = MetricsHub::new(64);
            hub.recorder = Some(otwatch::metrics::OpenMetricsRecorder::new(10.0));
            hub.recorder_path = Some(om.clone());
            det.metrics = Some(hub);
        }
        let mut pipeline = otwatch::pipeline::Pipeline::new();
        let mut null = otwatch::event::NullSink;
        {
            let mut sink = DetectSink {
                detection: &mut det,
                inner: &mut null,
            };
            otwatch::replay::replay(paths, &mut sink, &mut pipeline);
        }
        // What the summary reads before the outputs finish (whether learning ended): the
        // engine has seen every observation once the replay is over.
        let engine = det.engine.as_ref().expect("engine");
        let mut samples = format!("{} {}\n", engine.observations, engine.is_learning());
        let _ = det.finish();
        if metrics {
            det.finish_metrics(&pipeline.stats, 0)
                .expect("OpenMetrics file");
            samples += &std::fs::read_to_string(&om).expect("OpenMetrics file");
        }
        let kept = det.kept.take().unwrap_or_default();
        (
            kept.iter().map(|a| alert_json(a).to_string()).collect(),
            samples,
        )
    };
    let mut runs: Vec<Vec<PathBuf>> = std::fs::read_dir(fixture("scenarios"))
        .expect("scenarios")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.to_string_lossy().ends_with(".pcap") || p.to_string_lossy().ends_with(".pcap.gz")
        })
        .map(|p| vec![p])
        .collect();
    runs.sort();
    let scenarios = runs.len();
    let mixed = ["modbus_write", "enip_write", "iec104_command", "s7_write"];
    runs.push(vec![merged(&mixed, &dir.join("mixed.pcap"))]);
    runs.push(vec![
        fixture("scenarios/modbus_flood.pcap"),
        fixture("scenarios/modbus_steady.pcap"),
    ]);
    let (mut all, mut timers) = (0, 0);
    for paths in &runs {
        let name = format!("{paths:?}");
        let one = run(paths, 1, false);
        for batch in [2, 7, otwatch::detection::DEFAULT_BATCH] {
            assert_eq!(run(paths, batch, false), one, "{name}, batch {batch}");
        }
        let with_metrics = run(paths, 1, true);
        assert_eq!(with_metrics.0, one.0, "{name}: metrics on");
        assert!(
            with_metrics.1.contains("otwatch_requests_total{"),
            "{name}: no per-channel series"
        );
        let batched = run(paths, otwatch::detection::DEFAULT_BATCH, true);
        assert_eq!(batched, with_metrics, "{name}: batched, metrics on");
        all += one.0.len();
        timers += one
            .0
            .iter()
            .filter(|l| l.contains("\"device_silent\"") || l.contains("\"response_timeout\""))
            .count();
    }
    let mixed_lines = run(&runs[scenarios], 1, false).0;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        scenarios >= 25 && all > 0,
        "{scenarios} scenarios, {all} lines"
    );
    assert!(timers > 0, "no timer among {all} lines");
    for proto in ["modbus", "enip", "iec104", "s7comm"] {
        assert!(
            mixed_lines
                .iter()
                .any(|l| l.contains(&format!("\"proto\":\"{proto}\""))),
            "the merged capture raises nothing of {proto}: {mixed_lines:?}"
        );
    }
}

/// A live link's packets, then one turn with none (the link gone quiet), then the end.
struct QuietAfter {
    packets: Vec<(i64, u64, Vec<u8>)>,
    at: usize,
    idled: bool,
    source: std::sync::Arc<str>,
}

impl otwatch::run::Feed for QuietAfter {
    type Handle = ();
    const LIVE: bool = true;

    fn next<T>(&mut self, _: std::time::Duration, mut take: T) -> bool
    where
        T: FnMut(otwatch::run::Next<'_, ()>) -> Option<()>,
    {
        if let Some((ts, frame, data)) = self.packets.get(self.at) {
            self.at += 1;
            let pkt = otwatch::capture::Packet {
                ts_nanos: *ts,
                frame: *frame,
                linktype: otwatch::capture::LinkType::ETHERNET,
                orig_len: data.len() as u32,
                data,
                csum_not_ready: false,
            };
            let source = &self.source;
            take(otwatch::run::Next::Packet {
                pkt: &pkt,
                source,
                handle: (),
                restart: false,
            });
            return true;
        }
        if std::mem::replace(&mut self.idled, true) {
            return false;
        }
        take(otwatch::run::Next::Idle);
        true
    }
}

/// Live, with one worker, detection holds its observations for a batch: when the link goes
/// quiet, its idle tick runs what is held. The PDU that raised a scenario's first alert,
/// the last one sent in a burst, has its alert written before the capture ends, as with
/// each observation run at once.
#[test]
fn a_quiet_live_link_runs_the_held_observations() {
    use otwatch::capture::{CaptureFile, PacketSource};
    use otwatch::detection::{alert_json, DetectSink};
    let path = fixture("scenarios/modbus_write.pcap");
    let mut cap = CaptureFile::open(&path).expect("open");
    let mut packets = Vec::new();
    while let Some(p) = cap.next_packet() {
        let p = p.expect("packet");
        packets.push((p.ts_nanos, p.frame, p.data.to_vec()));
    }
    // The alerts raised up to the idle tick, by a run over `packets` with `batch`.
    let alerts = |packets: &[(i64, u64, Vec<u8>)], batch: usize| {
        let mut det = learning_a_minute(batch);
        let mut pipeline = otwatch::pipeline::Pipeline::new();
        let mut null = otwatch::event::NullSink;
        let mut sink = DetectSink {
            detection: &mut det,
            inner: &mut null,
        };
        let mut feed = QuietAfter {
            packets: packets.to_vec(),
            at: 0,
            idled: false,
            source: std::sync::Arc::from("live"),
        };
        otwatch::run::Inline::new(&mut pipeline, &mut sink).run(&mut feed);
        det.kept.take().unwrap_or_default()
    };
    let all = alerts(&packets, 1);
    let first = all
        .iter()
        .find(|a| a.r#type == "unauthorized_write")
        .expect("the scenario's write");
    let last = *first.frames.iter().max().expect("its frames");
    // Its last 20 packets a millisecond apart: the detection clock does not tick among
    // them (every 250 ms of capture time), so their observations wait in the batch.
    let mut sent = packets[..last as usize].to_vec();
    let from = sent.len().saturating_sub(20);
    let start = sent[from].0;
    for (k, p) in sent[from..].iter_mut().enumerate() {
        p.0 = start + k as i64 * 1_000_000;
    }
    let sent = &sent[..];
    let last_ts = sent[sent.len() - 1].0;
    // The idle tick's own alerts fall at the wall clock's time: only those before it.
    let lines = |batch| -> Vec<String> {
        alerts(sent, batch)
            .iter()
            .filter(|a| a.ts <= last_ts)
            .map(|a| alert_json(a).to_string())
            .collect()
    };
    let at_once = lines(1);
    assert!(
        at_once.iter().any(|l| l.contains("unauthorized_write")),
        "{at_once:?}"
    );
    assert_eq!(lines(otwatch::detection::DEFAULT_BATCH), at_once);
}
