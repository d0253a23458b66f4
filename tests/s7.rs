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
    // Every S7 PDU is counted, as tshark counts them (6 jobs, 4 acks, 2 ack_data, 10
    // userdata): those without a function code by their kind.
    let st = &report.stats[otwatch::dissect::registry::S7COMM];
    assert_eq!(st.total_pdus(), 22);
    let other: Vec<_> = st.other_pdus.iter().map(|(k, n)| (k, *n)).collect();
    assert_eq!(other, [("ack", 4), ("userdata", 10)]);
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

/// TCP packets of one ISO-on-TCP conversation (port 102): each payload an S7 PDU in a COTP data
/// TPDU, the client's and the server's in turn as given.
fn iso_conversation(pdus: &[(bool, Vec<u8>)]) -> Vec<Vec<u8>> {
    let (client, server) = (([10, 0, 7, 1], 40002u16), ([10, 0, 7, 2], 102u16));
    let (mut cseq, mut sseq) = (1u32, 1u32);
    pdus.iter()
        .map(|(from_client, s7)| {
            let mut p = vec![3, 0, 0, 0, 0x02, 0xf0, 0x80];
            p.extend_from_slice(s7);
            let len = (p.len() as u16).to_be_bytes();
            p[2..4].copy_from_slice(&len);
            let (src, dst, seq) = if *from_client {
                (client, server, &mut cseq)
            } else {
                (server, client, &mut sseq)
            };
            let mut out = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 7, 1], [2, 0, 0, 0, 7, 2])
                .ipv4(src.0, dst.0, 64)
                .tcp(src.1, dst.1, *seq, 8192)
                .write(&mut out, &p)
                .unwrap();
            *seq += p.len() as u32;
            out
        })
        .collect()
}

/// An S7comm PDU: header (ROSCTR, reference), parameter, data.
fn s7_pdu(rosctr: u8, pdu_ref: u16, param: &[u8], data: &[u8]) -> Vec<u8> {
    let mut p = vec![0x32, rosctr, 0, 0];
    p.extend_from_slice(&pdu_ref.to_be_bytes());
    p.extend_from_slice(&(param.len() as u16).to_be_bytes());
    p.extend_from_slice(&(data.len() as u16).to_be_bytes());
    if rosctr == 2 || rosctr == 3 {
        p.extend_from_slice(&[0, 0]);
    }
    p.extend_from_slice(param);
    p.extend_from_slice(data);
    p
}

/// A job the parser rejects keeps the function its parameter starts with: a PLC stop with a
/// byte too many (tshark: "PLC Stop") is still a PLC stop, and malformed. Programmer commands
/// that change the process (modify variable, force) or erase the program (memory reset) are
/// writes, the last a program download; reading a variable's status is neither.
#[test]
fn a_malformed_stop_is_a_stop_and_programmer_commands_that_change_the_plc_are_writes() {
    let mut stop = vec![0x29, 0, 0, 0, 0, 0, 9];
    stop.extend_from_slice(b"P_PROGRAM");
    stop.push(0);
    // Userdata request, programmer commands (group 1), the subfunction; a data part that is
    // only its header.
    let userdata = |sub: u8, pdu_ref: u16| {
        s7_pdu(
            7,
            pdu_ref,
            &[0x00, 0x01, 0x12, 0x04, 0x11, 0x41, sub, 0x00],
            &[0xff, 0x09, 0x00, 0x00],
        )
    };
    let pdus = [
        (true, s7_pdu(1, 1, &[0xf0, 0, 0, 1, 0, 1, 0x01, 0xe0], &[])),
        (true, s7_pdu(1, 2, &stop, &[])),
        (true, userdata(0x08, 3)),
        (true, userdata(0x09, 4)),
        (true, userdata(0x0c, 5)),
        (true, userdata(0x02, 6)),
    ];
    let dir = common::scratch("s7-commands");
    let path = dir.join("s7.pcap");
    common::write_pcap(&path, &iso_conversation(&pdus));
    let (events, _) = replay_file(&path);
    let obs: Vec<_> = s7(&events)
        .filter_map(|(e, _)| otwatch::detection::observe::observe(e))
        .map(|o| (o.function, o.write, o.command, o.malformed.is_some()))
        .collect();
    use otwatch_models::Command;
    assert_eq!(
        obs,
        [
            (0xf0, false, None, false),
            (0x29, true, Some(Command::PlcStop), true),
            (0x1108, true, None, false),
            (0x1109, true, None, false),
            (0x110c, true, Some(Command::ProgramDownload), false),
            (0x1102, false, None, false),
        ]
    );
}

/// Jobs waiting for their acks are bounded by their items too, not only their number (64 jobs
/// of 256 items each held 10 MB per flow): past 1024 items the oldest job is forgotten and
/// counted, and a later job's ack still finds its job.
#[test]
fn remembered_jobs_are_bounded_by_their_items() {
    let read = |pdu_ref: u16| {
        let mut param = vec![0x04, 200];
        for i in 0..200u32 {
            param.extend_from_slice(&[0x12, 0x0a, 0x10, 0x02, 0, 1, 0, 1, 0x84]);
            param.extend_from_slice(&(i << 3).to_be_bytes()[1..]);
        }
        s7_pdu(1, pdu_ref, &param, &[])
    };
    let mut pdus: Vec<(bool, Vec<u8>)> = (1..=10).map(|r| (true, read(r))).collect();
    // The ack of the last job: one byte per item.
    let mut data = Vec::new();
    for _ in 0..200 {
        data.extend_from_slice(&[0xff, 0x04, 0x00, 0x08, 0x2a, 0x00]);
    }
    data.pop(); // no fill byte after the last item
    pdus.push((false, s7_pdu(3, 10, &[0x04, 200], &data)));
    let dir = common::scratch("s7-jobs");
    let path = dir.join("s7.pcap");
    common::write_pcap(&path, &iso_conversation(&pdus));
    let (events, report) = replay_file(&path);
    let st = &report.stats[otwatch::dissect::registry::S7COMM];
    assert_eq!(st.outstanding_bound_drops, 5, "jobs 1 to 5 forgotten");
    let ack = s7(&events).last().expect("the ack").1;
    assert_eq!(ack.request_frame, Some(10), "the last job still matched");
    assert_eq!(ack.items.len(), 200);
    assert!(ack.items.iter().all(|i| i.area == Some(0x84)));
}
