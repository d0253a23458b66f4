//! S7 through the whole replay path on real captures: identity from SZL reads, COTP rack and
//! slot, a block download with its PI service, S7comm-plus sessions, and (with the corpus) PLC
//! stop, upload and the other block-transfer captures: the events must say what happened.

mod common;

use std::path::{Path, PathBuf};

use common::replay_file;
use otwatch::event::Event;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn s7(events: &[Event]) -> impl Iterator<Item = (&Event, &otwatch::dissect::s7::S7Event)> {
    events.iter().filter_map(|e| e.s7comm().map(|s| (e, s)))
}

#[test]
fn identity_and_rack_slot_from_s7ident() {
    let (events, report) = replay_file(&fixture("s7ident.pcap"));
    assert!(report.errors().next().is_none());
    let cr = events.iter().find_map(|e| e.cotp()).expect("COTP connect");
    assert_eq!(
        (cr.pdu_type_name, cr.rack, cr.slot),
        (Some("connection_request"), Some(0), Some(1))
    );
    let ud: Vec<_> = s7(&events)
        .filter_map(|(_, s)| s.userdata.as_ref())
        .collect();
    let module = ud
        .iter()
        .find(|u| u.order_number.is_some())
        .expect("SZL 0x0011");
    assert_eq!(module.order_number.as_deref(), Some("6ES7 315-2EH14-0AB0"));
    assert_eq!(module.firmware_version.as_deref(), Some("V3.2.6"));
    assert_eq!(module.szl_id, Some(0x0011));
    let components = ud
        .iter()
        .find_map(|u| u.components.as_ref())
        .expect("SZL 0x001C");
    let get = |name: &str| {
        components
            .iter()
            .find(|c| c.name == Some(name))
            .map(|c| c.value.as_str())
    };
    assert_eq!(get("module_name"), Some("CPU 315-2 PN/DP"));
    assert_eq!(get("serial_number"), Some("S C-C2UR28922012"));
    // A refused upload start: the ack carries the error class and code.
    let upload = s7(&events)
        .find(|(_, s)| s.function_name == Some("start_upload"))
        .expect("upload");
    assert_eq!(upload.1.block_type, Some("sdb"));
}

#[test]
fn block_download_says_which_block() {
    let (events, _) = replay_file(&fixture("s7comm_downloading_block_db1.pcap"));
    let names: Vec<_> = s7(&events)
        .filter(|(_, s)| s.rosctr == 1)
        .filter_map(|(_, s)| s.function_name.map(|f| (f, s.block_type, s.block_number)))
        .filter(|(f, ..)| f.contains("download"))
        .collect();
    assert!(
        names.contains(&("request_download", Some("db"), Some(1))),
        "{names:?}"
    );
    assert!(names.contains(&("download_block", Some("db"), Some(1))));
    assert!(names.contains(&("download_ended", Some("db"), Some(1))));
    let inse = s7(&events)
        .find(|(_, s)| s.pi_service.as_deref() == Some("_INSE"))
        .expect("PI _INSE");
    assert_eq!(inse.1.pi_blocks.len(), 1);
    assert_eq!(
        (
            inse.1.pi_blocks[0].block_type,
            inse.1.pi_blocks[0].block_number
        ),
        (Some("db"), 1)
    );
}

#[test]
fn s7commplus_sessions() {
    let (events, report) = replay_file(&fixture("s7comm_plus.pcap"));
    let plus: Vec<_> = events.iter().filter_map(|e| e.s7commplus()).collect();
    assert!(!plus.is_empty());
    assert!(plus.iter().any(|p| p.function_name == Some("set_variable")));
    assert!(plus.iter().all(|p| p.version >= 1));
    assert!(
        report.stats[otwatch::dissect::registry::S7COMMPLUS]
            .counters
            .get("set_variable")
            .copied()
            .unwrap_or(0)
            > 0
    );
    // The same capture also carries classic S7comm read/write jobs, matched to their acks.
    let reads = s7(&events).filter(|(_, s)| s.function_name == Some("read_var") && s.rosctr == 3);
    for (_, ack) in reads {
        assert!(ack.request_frame.is_some());
        assert!(ack
            .items
            .iter()
            .all(|i| i.area.is_some() && i.return_code.is_some()));
    }
}

#[test]
fn plc_stop_upload_and_pi_services_in_the_corpus() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    let s7dir = dir.join("s7");
    for stop in ["snap7_s300_stop.pcapng", "step7_s300_stop.pcapng"] {
        let (events, _) = replay_file(&s7dir.join(stop));
        let job = s7(&events).find(|(_, s)| s.function_name == Some("plc_stop") && s.rosctr == 1);
        let (_, job) = job.unwrap_or_else(|| panic!("{stop}: no PLC stop job"));
        assert_eq!(job.pi_service.as_deref(), Some("P_PROGRAM"), "{stop}");
    }
    let (events, _) = replay_file(&s7dir.join("tia_s300_downloadOb1.pcapng"));
    assert!(s7(&events)
        .any(|(_, s)| s.function_name == Some("request_download") && s.block_type == Some("ob")));
    assert!(s7(&events).any(|(_, s)| s.pi_service.as_deref() == Some("_INSE")));
    let (events, _) = replay_file(&dir.join("s7/S7-1200-Uploading-OB1-TIAV12.pcap"));
    assert!(events.iter().any(|e| e.s7commplus().is_some()));
}
