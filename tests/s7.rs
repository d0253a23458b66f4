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
    // snap7's everything: copy RAM to ROM (_MODU, frame 59) is a program download, as the
    // stop (57) and the start (63) are commands; compressing memory (_GARB, 61) is neither.
    let path = s7dir.join("snap7_s300_everything.pcapng");
    let alerts = common::detect_files(common::Learn::Everything, &[(&path, &common::all_frames)]).0;
    let commands: Vec<_> = alerts
        .iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
        .filter_map(|a| Some((a.r#type, *a.frames.first()?)))
        .filter(|(t, _)| ["plc_stop", "plc_start", "program_download"].contains(t))
        .collect();
    assert_eq!(
        commands,
        [
            ("plc_stop", 57),
            ("program_download", 59),
            ("plc_start", 63)
        ]
    );
}

/// TCP packets of one ISO-on-TCP conversation (port 102): each payload an S7 PDU in a COTP data
/// TPDU, the client's and the server's in turn as given.
fn iso_conversation(pdus: &[(bool, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut seqs = (1u32, 1u32);
    pdus.iter()
        .map(|(from_client, s7)| iso_segment(*from_client, s7, &mut seqs))
        .collect()
}

/// One packet of the ISO-on-TCP conversation of 10.0.7.1:40002 with 10.0.7.2:102: an S7 PDU in
/// a COTP data TPDU, from the client or the server; `seqs` are their next sequence numbers.
fn iso_segment(from_client: bool, s7: &[u8], seqs: &mut (u32, u32)) -> Vec<u8> {
    let (client, server) = (([10, 0, 7, 1], 40002u16), ([10, 0, 7, 2], 102u16));
    let mut p = vec![3, 0, 0, 0, 0x02, 0xf0, 0x80];
    p.extend_from_slice(s7);
    let len = (p.len() as u16).to_be_bytes();
    p[2..4].copy_from_slice(&len);
    let (src, dst, seq) = if from_client {
        (client, server, &mut seqs.0)
    } else {
        (server, client, &mut seqs.1)
    };
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 7, 1], [2, 0, 0, 0, 7, 2])
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, *seq, 8192)
        .write(&mut out, &p)
        .unwrap();
    *seq += p.len() as u32;
    out
}

/// The S7 dissector's observations of reads leave boxes a worker keeps as spares, however much
/// data a read carries: the room it makes for a response's bytes at once is bounded by what a
/// spare may hold (`BYTES_AT_ONCE`, src/shards.rs), not by the PDU's data (a 3000-byte item
/// shows 64 values; room for 3000 would have such a box freed, not kept, at every read).
#[test]
fn an_s7_read_of_much_data_makes_room_for_what_a_spare_holds() {
    struct Room(Vec<(usize, usize)>);
    impl otwatch::event::EventSink for Room {
        fn emit(&mut self, _event: Event) {}
        fn observed(
            &mut self,
            _key: otwatch::event::FlushKey,
            obs: &mut Box<otwatch_models::Observation>,
        ) {
            self.0.push((obs.bytes.len(), obs.bytes.capacity()));
        }
        fn wants_observations(&self) -> bool {
            true
        }
        fn wants_event_out(&self) -> bool {
            false
        }
    }
    let mut pdus = Vec::new();
    for (pdu_ref, bytes) in [(1u16, 3000u16), (2, 200)] {
        // Read Var of DB1.DBB0, `bytes` bytes; the answer: success, `bytes` bytes.
        let [hi, lo] = bytes.to_be_bytes();
        let item = [0x12, 0x0a, 0x10, 0x02, hi, lo, 0, 1, 0x84, 0, 0, 0];
        let mut param = vec![0x04, 1];
        param.extend_from_slice(&item);
        let [bh, bl] = (bytes * 8).to_be_bytes();
        let mut data = vec![0xff, 0x04, bh, bl];
        data.extend((0..bytes).map(|b| b as u8));
        pdus.push((true, s7_pdu(1, pdu_ref, &param, &[])));
        pdus.push((false, s7_pdu(3, pdu_ref, &[0x04, 1], &data)));
    }
    let mut pipeline = otwatch::pipeline::Pipeline::new();
    let mut sink = Room(Vec::new());
    let source: std::sync::Arc<str> = "t".into();
    for (k, data) in iso_conversation(&pdus).iter().enumerate() {
        let pkt = otwatch::capture::Packet {
            ts_nanos: 1_700_000_000_000_000_000 + k as i64 * 1_000_000,
            frame: k as u64 + 1,
            linktype: otwatch::capture::LinkType::ETHERNET,
            orig_len: data.len() as u32,
            data,
            csum_not_ready: false,
        };
        pipeline.process(&pkt, &source, &mut sink);
    }
    // Two jobs (no values) and two answers (the first 64 bytes of each item shown, as bytes).
    let values: Vec<usize> = sink.0.iter().map(|(v, _)| *v).collect();
    assert_eq!(values, [0, 64, 0, 64]);
    assert!(
        sink.0
            .iter()
            .all(|(_, room)| *room <= otwatch_models::obs::BYTES_AT_ONCE),
        "{:?}",
        sink.0
    );
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

/// A capture of write jobs at the given seconds of capture time (`job(k, reference)`, the
/// references 1, 2, ...), each acknowledged 20 ms later, in one ISO-on-TCP conversation.
fn write_jobs(
    name: &str,
    times: &[u64],
    job: impl Fn(usize, u16) -> Vec<u8>,
) -> (common::Scratch, PathBuf) {
    let ack = |pdu_ref: u16| s7_pdu(3, pdu_ref, &[0x05, 1], &[0xff]);
    let mut seqs = (1u32, 1u32);
    let mut packets = Vec::new();
    let t0 = common::packet_time(0);
    for (k, at) in times.iter().enumerate() {
        let ts = t0 + std::time::Duration::from_secs(*at);
        let r = k as u16 + 1;
        packets.push((ts, iso_segment(true, &job(k, r), &mut seqs)));
        let later = ts + std::time::Duration::from_millis(20);
        packets.push((later, iso_segment(false, &ack(r), &mut seqs)));
    }
    let dir = common::scratch(name);
    let path = dir.join("jobs.pcap");
    common::write_pcap_at(&path, &packets);
    (dir, path)
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

/// Each alert's type and its first frame.
fn type_frame(alerts: &[otwatch_models::Alert]) -> Vec<(&'static str, Option<u64>)> {
    alerts
        .iter()
        .map(|a| (a.r#type, a.frames.first().copied()))
        .collect()
}

/// Each alert's type, the space it names, and its first frame.
fn type_space_frame(
    alerts: &[otwatch_models::Alert],
) -> Vec<(&'static str, serde_json::Value, Option<u64>)> {
    alerts
        .iter()
        .map(|a| {
            (
                a.r#type,
                a.observed["space"].clone(),
                a.frames.first().copied(),
            )
        })
        .collect()
}

/// The first line of each cause detection raises on `path`, learning its first 60 s.
fn first_lines_learning_60s(path: &Path) -> Vec<otwatch_models::Alert> {
    use common::{all_frames, detect_files, Learn};
    detect_files(Learn::For(60.0), &[(path, &all_frames)])
        .0
        .into_iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
        .collect()
}

/// A userdata test job of the programmer commands (group 1): variable status (0x02), modify
/// variable (0x08) or force (0x09), with its TIS addresses `(area code, repetition factor or
/// bit, DB, byte address)` and, for modify and force, one value each.
fn tis_job(pdu_ref: u16, sub: u8, items: &[(u8, u8, u16, u16, &[u8])]) -> Vec<u8> {
    tis_userdata(pdu_ref, sub, tis_body(sub, items))
}

/// A replace job (programmer commands 0x12) carrying the job [`tis_job`] would send.
fn tis_replace(pdu_ref: u16, sub: u8, items: &[(u8, u8, u16, u16, &[u8])]) -> Vec<u8> {
    let mut block = vec![0x00, 0x00, sub, 0x01];
    block.extend_from_slice(&tis_body(sub, items));
    let mut body = vec![0x00, 0x00];
    body.extend_from_slice(&(block.len() as u16).to_be_bytes());
    body.extend_from_slice(&block);
    tis_userdata(pdu_ref, 0x12, body)
}

/// A test job's sizes, parameters and data.
fn tis_body(sub: u8, items: &[(u8, u8, u16, u16, &[u8])]) -> Vec<u8> {
    let params = [0u8, 0, 0, 1, 0, 1, 0, 6, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0];
    let mut tis = (items.len() as u16).to_be_bytes().to_vec();
    for &(area, rep, db, start, _) in items {
        tis.extend_from_slice(&[area, rep]);
        tis.extend_from_slice(&db.to_be_bytes());
        tis.extend_from_slice(&start.to_be_bytes());
    }
    if sub != 0x02 {
        for &(.., value) in items {
            tis.extend_from_slice(&[0x00, 0x09]);
            tis.extend_from_slice(&(value.len() as u16).to_be_bytes());
            tis.extend_from_slice(value);
            if value.len() % 2 == 1 {
                tis.push(0);
            }
        }
    }
    let mut body = (params.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&(tis.len() as u16).to_be_bytes());
    body.extend_from_slice(&params);
    body.extend_from_slice(&tis);
    body
}

/// A programmer commands request with subfunction `sub` and its data part's `body`.
fn tis_userdata(pdu_ref: u16, sub: u8, body: Vec<u8>) -> Vec<u8> {
    let mut data = vec![0xff, 0x09];
    data.extend_from_slice(&(body.len() as u16).to_be_bytes());
    data.extend_from_slice(&body);
    s7_pdu(
        7,
        pdu_ref,
        &[0x00, 0x01, 0x12, 0x08, 0x12, 0x41, sub, 0, 0, 0, 0, 0],
        &data,
    )
}

/// The PLC's answer to a test job (as step7_s300_rwVarTab.pcapng's: "object does not exist",
/// the results follow in a push).
fn tis_answer(pdu_ref: u16, sub: u8) -> Vec<u8> {
    let param = [0x00, 0x01, 0x12, 0x08, 0x12, 0x81, sub, 2, 0, 0, 0, 0];
    s7_pdu(7, pdu_ref, &param, &[0x0a, 0x00, 0x00, 0x00])
}

/// A variable table at work: the addresses of variable status, modify variable and force jobs
/// are decoded (Wireshark's TIS items) as the S7ANY addresses of the same memory, and detection
/// checks those modify and force write against the learned ranges as it checks write jobs.
/// The engineering station that modified MW4 while learning modifies it again (nothing), then
/// a word of DB 7, forces Q0.3 (a function it never used), modifies timer 7, and replaces a job
/// with a modify of DB 9 (also new): four writes outside everything learned.
#[test]
fn modify_and_force_are_checked_where_they_write() {
    let mut jobs: Vec<(f64, Vec<u8>)> = Vec::new();
    for k in 0..20u16 {
        // Variable status of MB0..MB5 every 5 s.
        jobs.push((
            1.0 + 5.0 * f64::from(k),
            tis_job(k, 0x02, &[(0x01, 6, 0, 0, &[])]),
        ));
    }
    let mw4 = |r: u16| tis_job(r, 0x08, &[(0x02, 1, 0, 4, &[0xde, 0xad])]);
    jobs.push((12.0, mw4(100)));
    jobs.push((32.0, mw4(101)));
    jobs.push((70.0, mw4(102)));
    let db7 = tis_job(103, 0x08, &[(0x72, 1, 7, 300, &[0x00, 0x2a])]);
    jobs.push((80.0, db7));
    jobs.push((90.0, tis_job(104, 0x09, &[(0x20, 3, 0, 0, &[0x01])])));
    jobs.push((95.0, tis_job(105, 0x08, &[(0x54, 1, 0, 7, &[0x12, 0x34])])));
    // A modify of DB 9 carried by a replace job.
    jobs.push((97.0, tis_replace(106, 0x08, &[(0x72, 1, 9, 40, &[0, 1])])));
    jobs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut seqs = (1u32, 1u32);
    let mut packets = Vec::new();
    let t0 = common::packet_time(0);
    for (at, job) in &jobs {
        let (pdu_ref, sub) = (u16::from_be_bytes([job[4], job[5]]), job[16]);
        let ts = t0 + std::time::Duration::from_secs_f64(*at);
        packets.push((ts, iso_segment(true, job, &mut seqs)));
        let answer = tis_answer(pdu_ref, sub);
        let later = ts + std::time::Duration::from_millis(20);
        packets.push((later, iso_segment(false, &answer, &mut seqs)));
    }
    let dir = common::scratch("s7-tis");
    let path = dir.join("tis.pcap");
    common::write_pcap_at(&path, &packets);

    // The events: the addresses as Wireshark shows them, in S7ANY terms.
    let (events, _) = replay_file(&path);
    let modify = s7(&events)
        .map(|(_, s)| s)
        .find(|s| s.pdu_ref == 103)
        .expect("the modify of DB 7");
    let i = &modify.items[0];
    assert_eq!(
        (i.tis_area, i.area, i.db, i.address, i.transport_size),
        (Some(0x72), Some(0x84), Some(7), Some(300), Some(4))
    );
    let force = s7(&events).map(|(_, s)| s).find(|s| s.pdu_ref == 104);
    let i = &force.expect("the force").items[0];
    assert_eq!((i.area, i.address, i.bit), (Some(0x82), Some(0), Some(3)));
    // What detection takes: writes; a word's value is not taken (INT? a REAL's half?), a
    // bit's is; the variable status reads nothing it checks.
    let accesses = |pdu_ref: u16| {
        let e = s7(&events)
            .find(|(_, s)| s.pdu_ref == pdu_ref)
            .expect("pdu")
            .0;
        let o = otwatch::detection::observe::observe(e).expect("observation");
        o.accesses
            .iter()
            .map(|a| (a.start, a.count, a.write, o.values_of(a).to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(accesses(103), [(300, 2, true, vec![])]);
    assert_eq!(accesses(104), [(3, 1, true, vec![1.0])]);
    // A timer is one address, whatever its two bytes.
    assert_eq!(accesses(105), [(7, 1, true, vec![])]);
    // A replace job writes what the job it carries writes.
    assert_eq!(accesses(106), [(40, 2, true, vec![])]);
    let replace = s7(&events)
        .find(|(_, s)| s.pdu_ref == 106)
        .expect("replace")
        .1;
    let u = replace.userdata.as_ref().expect("userdata");
    assert_eq!(
        (u.subfunction_name, u.job_subfunction_name),
        (Some("replace_job"), Some("modify_variable"))
    );
    assert_eq!(accesses(0), []);

    let alerts = first_lines_learning_60s(&path);
    let out: Vec<_> = alerts
        .iter()
        .filter(|a| a.r#type == "address_out_of_range")
        .map(|a| (a.observed["space"].clone(), a.observed["start"].clone()))
        .collect();
    assert_eq!(out.len(), 4, "{alerts:#?}");
    assert_eq!(out[0].1, 300, "{alerts:#?}");
    assert_eq!(out[1].1, 3, "Q0.3 as bit address 3: {alerts:#?}");
    assert_eq!(
        (&out[2].0, &out[2].1),
        (&serde_json::json!("T"), &serde_json::json!(7))
    );
    assert_eq!(
        (&out[3].0, &out[3].1),
        (&serde_json::json!("DB9"), &serde_json::json!(40))
    );
    let other: Vec<_> = alerts
        .iter()
        .filter(|a| a.r#type != "address_out_of_range")
        .map(|a| a.r#type)
        .collect();
    // Forcing and replacing a job are new for this station too.
    assert_eq!(other, ["new_function_code", "new_function_code"]);
}

/// Write var jobs to addresses of another syntax than S7ANY (here Sinumerik NCK, syntax id
/// 0x82: area and unit, column, line, module, line count) are checked too, each address by its
/// bytes' hash: the station that wrote one NCK variable while learning writes it again
/// (nothing), then another (`address_out_of_range`).
#[test]
fn writes_to_addresses_of_other_syntaxes_are_checked() {
    let nck_write = |pdu_ref: u16, column: u16| {
        let mut param = vec![0x05, 1, 0x12, 0x08, 0x82, 0x41];
        param.extend_from_slice(&column.to_be_bytes());
        param.extend_from_slice(&[0x00, 0x01, 0x7f, 0x01]);
        s7_pdu(1, pdu_ref, &param, &[0x00, 0x04, 0x00, 0x10, 0x12, 0x34])
    };
    // Reads of one NCK variable every 5 s would be a poll; writes are sparse: at 10, 30, 50 s
    // while learning, then at 70 s (the same) and 80 s (column 9, never written).
    let columns = [1, 1, 1, 1, 9];
    let (_dir, path) = write_jobs("s7-nck", &[10, 30, 50, 70, 80], |k, r| {
        nck_write(r, columns[k])
    });
    let (events, _) = replay_file(&path);
    let job = s7(&events)
        .find(|(_, s)| s.pdu_ref == 5)
        .expect("the last write")
        .1;
    assert_eq!(job.items[0].syntax_id, Some(0x82));
    assert!(job.items[0].raw_address.is_some());
    let alerts = first_lines_learning_60s(&path);
    let out = type_space_frame(&alerts);
    assert_eq!(
        out,
        [(
            "address_out_of_range",
            serde_json::json!("syntax0x82"),
            Some(9)
        )],
        "{alerts:#?}"
    );
}

/// A REAL written as NaN to a DB word learned from finite writes is outside its envelope
/// (`value_out_of_range`: a NaN setpoint makes every comparison in the PLC's logic false); a
/// finite write inside it after raises nothing.
#[test]
fn a_real_written_as_nan_is_out_of_range() {
    // Write Var of one REAL (S7ANY, transport size REAL), DB5.DBD4.
    let write = |pdu_ref: u16, v: f32| {
        let param = [
            0x05, 1, 0x12, 0x0a, 0x10, 0x08, 0x00, 0x01, 0x00, 0x05, 0x84, 0x00, 0x00, 0x20,
        ];
        let mut data = vec![0x00, 0x07, 0x00, 0x04];
        data.extend_from_slice(&v.to_be_bytes());
        s7_pdu(1, pdu_ref, &param, &data)
    };
    let values = [20.0, 20.5, 21.0, 20.5, 20.0, f32::NAN, 20.5];
    let times = [10, 20, 30, 40, 50, 70, 80];
    let (_dir, path) = write_jobs("s7-real-nan", &times, |k, r| write(r, values[k]));
    let alerts = first_lines_learning_60s(&path);
    assert_eq!(
        type_space_frame(&alerts),
        [("value_out_of_range", serde_json::json!("DB5"), Some(11))],
        "{alerts:#?}"
    );
}

/// An S7comm-plus V2 PDU around a data part.
fn plus_pdu(data: &[u8]) -> Vec<u8> {
    let mut p = vec![0x72, 0x02];
    p.extend_from_slice(&(data.len() as u16).to_be_bytes());
    p.extend_from_slice(data);
    p.extend_from_slice(&[0x72, 0x02, 0x00, 0x00]);
    p
}

/// An S7comm-plus request: function, sequence number, session id, then `payload` (what the
/// request addresses, and its object qualifier).
fn plus_request(function: u16, seq: u16, session: u32, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0x31, 0, 0];
    d.extend_from_slice(&function.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&session.to_be_bytes());
    d.push(0x34);
    d.extend_from_slice(payload);
    d.extend_from_slice(&[0x00, 0x00, 0x04, 0xe8, 0x00, 0x00, 0x00, 0x00]);
    plus_pdu(&d)
}

/// Its response: `payload`, which starts with the return value; none is return value 0 (success).
fn plus_response(function: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0x32, 0, 0];
    d.extend_from_slice(&function.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&seq.to_be_bytes());
    d.push(0x34);
    if payload.is_empty() {
        d.push(0x00);
    }
    d.extend_from_slice(payload);
    plus_pdu(&d)
}

const SET_MULTI: u16 = 0x0542;
const GET_MULTI: u16 = 0x054c;
const SET_VARIABLE: u16 = 0x04f2;
const CREATE_OBJECT: u16 = 0x04ca;

/// Get/SetMultiVariables of one variable of DB3 (symbol CRC 0, the values' sub-area 0x9F6, one
/// LID); a set writes BOOL true.
fn db3_variable(set: bool, lid: u8) -> Vec<u8> {
    let mut p = vec![
        0, 0, 0, 0, 1, 5, 0x00, 0x88, 0xd0, 0xb8, 0x80, 0x03, 0x02, 0x93, 0x76, lid,
    ];
    if set {
        p.extend_from_slice(&[0x01, 0x00, 0x01, 0x01]);
    }
    p
}

/// An S7comm-plus request and its reply: at (seconds), function, session id, the request's
/// payload, the reply's.
type PlusExchange = (u64, u16, u32, Vec<u8>, Vec<u8>);

/// A capture of one HMI session with an S7-1500 at `requests`' times (seconds): each request
/// answered 20 ms later.
fn plus_conversation(name: &str, requests: &[PlusExchange]) -> (common::Scratch, PathBuf) {
    plus_conversation_split(name, requests, None)
}

/// The PDUs of an S7comm-plus data part sent in pieces, cut at `cuts` (offsets into the data
/// part), each piece a PDU of `version` (V3: opening with a 32-byte digest) and the last with
/// the trailer.
fn plus_pieces(version: u8, data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(data.len());
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let mut part = Vec::new();
            if version == 3 {
                part.push(32);
                part.extend_from_slice(&[0xa5; 32]);
            }
            part.extend_from_slice(&data[w[0]..w[1]]);
            let mut p = vec![0x72, version];
            p.extend_from_slice(&(part.len() as u16).to_be_bytes());
            p.extend_from_slice(&part);
            if i + 2 == bounds.len() {
                p.extend_from_slice(&[0x72, version, 0x00, 0x00]);
            }
            p
        })
        .collect()
}

/// [`plus_conversation`], the request at `split.0` s sent in pieces of version `split.1`, cut
/// at `split.2` ([`plus_pieces`]), each in a COTP data TPDU of its own, 1 ms apart.
fn plus_conversation_split(
    name: &str,
    requests: &[PlusExchange],
    split: Option<(u64, u8, &[usize])>,
) -> (common::Scratch, PathBuf) {
    let mut pdus = Vec::new();
    for (k, (at, function, session, request, reply)) in requests.iter().enumerate() {
        let mut ms = at * 1000;
        let seq = k as u16 + 1;
        let pdu = plus_request(*function, seq, *session, request);
        match split {
            Some((when, version, cuts)) if when == *at => {
                for piece in plus_pieces(version, &pdu[4..pdu.len() - 4], cuts) {
                    pdus.push((ms, true, piece));
                    ms += 1;
                }
            }
            _ => pdus.push((ms, true, pdu)),
        }
        pdus.push((ms + 20, false, plus_response(*function, seq, reply)));
    }
    plus_capture(name, &pdus)
}

/// A capture of S7comm-plus PDUs on one connection: (milliseconds, from the client, the TPKT
/// payload), in order.
fn plus_capture(name: &str, pdus: &[(u64, bool, Vec<u8>)]) -> (common::Scratch, PathBuf) {
    let mut seqs = (1u32, 1u32);
    let t0 = common::packet_time(0);
    let packets: Vec<_> = pdus
        .iter()
        .map(|(ms, client, pdu)| {
            let ts = t0 + std::time::Duration::from_millis(*ms);
            (ts, iso_segment(*client, pdu, &mut seqs))
        })
        .collect();
    let dir = common::scratch(name);
    let path = dir.join("plus.pcap");
    common::write_pcap_at(&path, &packets);
    (dir, path)
}

/// An HMI's reads of one DB3 variable every 5 s from 5 s to 65 s, in `session`.
fn hmi_polls(session: u32) -> impl Iterator<Item = PlusExchange> {
    (5..=65)
        .step_by(5)
        .map(move |at| (at, GET_MULTI, session, db3_variable(false, 0x0a), vec![]))
}

/// An HMI's learning: its session created (the reply hands out 0x388, the session, and
/// 0x389), the session's attributes set, a subscription's settings (attribute 1053) on the
/// object created for it, and reads of one DB3 variable every 5 s to 65 s; then `after`.
fn hmi_session(after: Vec<PlusExchange>) -> Vec<PlusExchange> {
    let session = 0x388;
    let mut requests = vec![
        (
            1,
            CREATE_OBJECT,
            0x120,
            vec![0, 0, 1, 0x1d, 0],
            vec![0x00, 0x02, 0x87, 0x08, 0x87, 0x09],
        ),
        (
            2,
            SET_MULTI,
            session,
            vec![0, 0, 3, 0x88, 1, 1, 0x82, 0x32, 1, 0, 4, 1],
            vec![],
        ),
        (
            30,
            SET_VARIABLE,
            session,
            vec![0, 0, 3, 0x89, 1, 0x88, 0x1d, 0, 7, 0, 6],
            vec![],
        ),
    ];
    requests.extend(hmi_polls(session));
    requests.extend(after);
    requests.sort_by_key(|r| r.0);
    requests
}

/// The first-line alerts of `requests`, learning 60 s, as (type, first frame), with the frame
/// of the request at `at` s.
fn plus_alerts(
    name: &str,
    requests: &[PlusExchange],
    at: u64,
) -> (Vec<(&'static str, Option<u64>)>, u64) {
    let k = requests
        .iter()
        .position(|r| r.0 == at)
        .expect("a request then");
    let (_dir, path) = plus_conversation(name, requests);
    let alerts = first_lines_learning_60s(&path);
    let out = type_frame(&alerts);
    (out, 2 * k as u64 + 1)
}

/// An HMI's S7comm-plus housekeeping makes it no writer: setting its session's attributes
/// (the session is the first object the CreateObject reply hands out) and a subscription's
/// settings (attribute 1053) on an object created for it. Its first write of a PLC variable
/// after learning is then an `unauthorized_write`. (Before, every SetVariable,
/// SetMultiVariables and DeleteObject was a write: every HMI was a writer.)
#[test]
fn s7commplus_session_housekeeping_is_no_write() {
    let session = 0x388;
    let write = (70, SET_MULTI, session, db3_variable(true, 0x0a), vec![]);
    let requests = hmi_session(vec![write]);
    let (_dir, path) = plus_conversation("s7plus-housekeeping", &requests);
    let (events, _) = replay_file(&path);
    let plus: Vec<_> = events.iter().filter_map(|e| e.s7commplus()).collect();
    assert_eq!(plus[1].created_objects, [0x388, 0x389]);
    let own: Vec<_> = plus
        .iter()
        .filter_map(|p| Some((p.object_id?, p.own_object?)))
        .collect();
    assert_eq!(own, [(0x388, "session"), (0x389, "created")]);
    let last = plus.iter().rev().find(|p| p.opcode == Some(0x31)).unwrap();
    assert_eq!((last.items[0].area, last.items[0].db), ("DB", Some(3)));
    assert_eq!(last.items[0].lids, [0x9f6, 0x0a]);
    let (out, frame) = plus_alerts("s7plus-housekeeping", &requests, 70);
    assert_eq!(out, [("unauthorized_write", Some(frame))]);
}

/// What cannot pass for housekeeping (the review of 2026-12-06): a SetVariable of an object
/// created for the connection whose first attribute is a subscription setting and whose second
/// (not decoded) may be anything; a DeleteObject of DB1 whose request names DB1 as its session (the
/// session is what the CreateObject reply handed out, not what a request says); a
/// subscription's settings on an object not created for this connection (another HMI's); and
/// any other attribute of an object created for it. Each is an `unauthorized_write`.
#[test]
fn s7commplus_housekeeping_cannot_hide_a_write() {
    let session = 0x388;
    let attacks = [
        (
            "two attributes",
            (
                SET_VARIABLE,
                session,
                vec![
                    0, 0, 3, 0x89, 2, 0x88, 0x1d, 0, 7, 0, 6, 0x9d, 0x18, 0, 4, 1,
                ],
            ),
        ),
        (
            "forged session",
            (0x04d4, 0x8a0e_0001, vec![0x8a, 0x0e, 0, 1]),
        ),
        (
            "another's subscription",
            (
                SET_VARIABLE,
                session,
                vec![0x10, 0, 0, 0x6a, 1, 0x88, 0x1b, 0, 1, 1],
            ),
        ),
        (
            "created object's other attribute",
            (
                SET_VARIABLE,
                session,
                vec![0, 0, 3, 0x89, 1, 0xa7, 0x08, 0, 4, 1],
            ),
        ),
    ];
    for (what, (function, header_session, payload)) in attacks {
        let requests = hmi_session(vec![(70, function, header_session, payload, vec![])]);
        let (out, frame) = plus_alerts("s7plus-attack", &requests, 70);
        assert_eq!(out, [("unauthorized_write", Some(frame))], "{what}");
    }
}

/// A connection picked up after its start (no CreateObject seen): its session is the one its
/// first request names, and a subscription's settings on any object are housekeeping (the
/// subscription's creation was not seen); a DB write after learning is `unauthorized_write`.
#[test]
fn s7commplus_mid_session_housekeeping() {
    let session = 0x7000_0e4d;
    let mut requests = vec![(
        3,
        SET_VARIABLE,
        session,
        vec![0x70, 0, 0x0e, 0x51, 1, 0x88, 0x1d, 0, 7, 0, 6],
        vec![],
    )];
    requests.extend(hmi_polls(session));
    requests.push((70, SET_MULTI, session, db3_variable(true, 0x0a), vec![]));
    let (out, frame) = plus_alerts("s7plus-midstream", &requests, 70);
    assert_eq!(out, [("unauthorized_write", Some(frame))]);
}

/// A writer's session (0x388, created at 1 s) and its writes of one DB3 variable at `times`
/// (seconds).
fn db3_writer(times: &[u64]) -> Vec<PlusExchange> {
    let mut requests = vec![(
        1,
        CREATE_OBJECT,
        0x120,
        vec![0, 0, 1, 0x1d, 0],
        vec![0x00, 0x01, 0x87, 0x08],
    )];
    for &at in times {
        requests.push((at, SET_MULTI, 0x388, db3_variable(true, 0x0a), vec![]));
    }
    requests
}

/// A learned S7comm-plus writer's writes are checked by variable (its DB and LIDs): the one
/// it wrote while learning again (nothing), then another of the same DB
/// (`address_out_of_range`, space DB3). Its reads of 20 variables never read are not checked.
#[test]
fn s7commplus_variable_writes_are_checked() {
    let session = 0x388;
    let mut requests = db3_writer(&[10, 30, 50, 70]);
    // Reads are learned as a function (not as addresses).
    requests.push((55, GET_MULTI, session, db3_variable(false, 0x0a), vec![]));
    requests.sort_by_key(|r| r.0);
    requests.push((80, SET_MULTI, session, db3_variable(true, 0x0b), vec![]));
    // Reads of variables never read are not checked (no address_out_of_range, no scan).
    for (k, lid) in (0x20..0x34).enumerate() {
        let read = db3_variable(false, lid);
        requests.push((85 + k as u64, GET_MULTI, session, read, vec![]));
    }
    let (_dir, path) = plus_conversation("s7plus-writes", &requests);
    let alerts = first_lines_learning_60s(&path);
    let out = type_space_frame(&alerts);
    assert_eq!(
        out,
        [("address_out_of_range", serde_json::json!("DB3"), Some(13))],
        "{alerts:#?}"
    );
    assert!(
        alerts[0].message.contains("write of DB3 variable #"),
        "{}",
        alerts[0].message
    );
}

/// On a connection picked up after its start, the session is one the PLC accepted: a request
/// that names DB1 as its session, which the PLC refuses, does not make DB1 the session, and
/// deleting DB1 then is a write. Once the session is known, a request must name it as its own
/// for its settings to be housekeeping, and a later CreateObject (a subscription) does not
/// replace it.
#[test]
fn s7commplus_a_refused_session_is_not_pinned() {
    let db1 = 0x8a0e_0001;
    let refused = vec![0x9c, 0x4d];
    let mut requests = vec![(3, GET_MULTI, db1, db3_variable(false, 0x0a), refused)];
    requests.extend(hmi_polls(0x999));
    let delete = (70, 0x04d4, db1, vec![0x8a, 0x0e, 0, 1], vec![]);
    requests.push(delete);
    let (out, frame) = plus_alerts("s7plus-refused-pin", &requests, 70);
    assert_eq!(out, [("unauthorized_write", Some(frame))]);

    // Session 0x999 accepted; a subscription created at 30 s (not the session); its session's
    // close at 70 s is housekeeping; a SetVariable of the session's object sent under another
    // session id is not.
    let mut requests = vec![(
        30,
        CREATE_OBJECT,
        0x999,
        vec![0, 0, 0x09, 0x99, 0],
        vec![0x00, 0x01, 0x87, 0x10],
    )];
    requests.extend(hmi_polls(0x999));
    requests.sort_by_key(|r| r.0);
    let mut close = requests.clone();
    close.push((70, 0x04d4, 0x999, vec![0, 0, 0x09, 0x99], vec![]));
    let (out, _) = plus_alerts("s7plus-pinned-close", &close, 70);
    assert_eq!(
        out,
        [],
        "the session's close (a function of every client's)"
    );
    let mut other = requests;
    let set = vec![0, 0, 0x09, 0x99, 1, 0x82, 0x32, 0, 4, 1];
    other.push((70, SET_VARIABLE, 0x777, set, vec![]));
    let (out, frame) = plus_alerts("s7plus-pinned-other", &other, 70);
    assert_eq!(out, [("unauthorized_write", Some(frame))]);
}

/// A write split over several PDUs (as a message too large for one is) is joined as the
/// s7commwireshark plugin joins it and checked: the HMI's first DB write is an
/// `unauthorized_write`, stamped with the frame of the last piece. Wherever the cuts fall: a
/// piece may start with an opcode-like byte (0x31, 0x32: a continuation all the same, or a
/// client could make the joiner drop the header it already holds), and V3 pieces each open
/// with their digest.
#[test]
fn s7commplus_split_messages_are_joined() {
    // LIDs 0x31 and 0x32: the opcodes of a request and a response, at data offsets 29 and 39
    // of a two-item write.
    let mut write = vec![0, 0, 0, 0, 2, 10];
    for lid in [0x31, 0x32] {
        write.extend_from_slice(&[0x00, 0x88, 0xd0, 0xb8, 0x80, 0x03, 0x02, 0x93, 0x76, lid]);
    }
    write.extend_from_slice(&[0x01, 0x00, 0x01, 0x01, 0x02, 0x00, 0x01, 0x01]);
    let cases: [(u8, &[usize]); 5] = [
        (2, &[6]),
        (2, &[14]),
        (2, &[10, 29]),
        (2, &[29, 39]),
        (3, &[7, 29, 40]),
    ];
    for (version, cuts) in cases {
        let what = format!("V{version} cut at {cuts:?}");
        let requests = hmi_session(vec![(70, SET_MULTI, 0x388, write.clone(), vec![])]);
        let k = requests.iter().position(|r| r.0 == 70).unwrap() as u64;
        let split = Some((70, version, cuts));
        let (_dir, path) = plus_conversation_split("s7plus-split", &requests, split);
        let (events, report) = replay_file(&path);
        let plus: Vec<_> = events.iter().filter_map(|e| e.s7commplus()).collect();
        // The pieces before the last, the joined message, its answer.
        let n = cuts.len();
        let kinds: Vec<_> = plus[plus.len() - n - 2..].iter().map(|p| p.kind).collect();
        let mut expected = vec!["fragment"; n];
        expected.extend(["message", "message"]);
        assert_eq!(kinds, expected, "{what}");
        let joined = plus[plus.len() - 2];
        assert_eq!(joined.function_name, Some("set_multi_variables"), "{what}");
        let lids: Vec<_> = joined.items.iter().map(|i| i.lids.clone()).collect();
        assert_eq!(lids, [[0x9f6, 0x31], [0x9f6, 0x32]], "{what}");
        let counters = &report.stats[otwatch::dissect::registry::S7COMMPLUS].counters;
        assert_eq!(counters.get("joined_messages"), Some(&1), "{what}");
        let alerts = first_lines_learning_60s(&path);
        let out = type_frame(&alerts);
        // The request's pieces are frames 2k+1 to 2k+1+n.
        let last = 2 * k + 1 + n as u64;
        assert_eq!(out, [("unauthorized_write", Some(last))], "{what}");
    }
}

/// The packets of `requests`, each answered 20 ms later ([`plus_conversation`]), the TCP
/// sequence numbers from `seqs`.
fn plus_exchanges(
    requests: &[PlusExchange],
    seqs: &mut (u32, u32),
) -> Vec<(std::time::Duration, Vec<u8>)> {
    let t0 = common::packet_time(0);
    let mut packets = Vec::new();
    for (k, (at, function, session, request, reply)) in requests.iter().enumerate() {
        let ts = t0 + std::time::Duration::from_secs(*at);
        let pdu = plus_request(*function, k as u16 + 1, *session, request);
        packets.push((ts, iso_segment(true, &pdu, seqs)));
        let answer = plus_response(*function, k as u16 + 1, reply);
        let later = ts + std::time::Duration::from_millis(20);
        packets.push((later, iso_segment(false, &answer, seqs)));
    }
    packets
}

/// A message longer than the joining bound (256 KiB) cannot be checked: from the client it is a
/// malformed request (`malformed_pdu`, stamped with the piece that passed the bound), its
/// later pieces are skipped to its end, and what follows is dissected again.
#[test]
fn s7commplus_a_message_too_long_to_join_is_malformed() {
    // A GetMultiVariables (a function learned) padded past the bound.
    let piece = 65_000;
    let head = plus_request(GET_MULTI, 800, 0x388, &db3_variable(false, 0x0a));
    let mut data = head[4..head.len() - 4].to_vec();
    // The piece that passes the bound, counted from 1; two more after it.
    let over = otwatch::dissect::s7::MAX_PLUS_MESSAGE / piece + 1;
    data.resize((over + 2) * piece + 10, 0);
    let cuts: Vec<usize> = (1..=over + 2).map(|i| i * piece).collect();
    let mut requests = hmi_session(vec![]);
    requests.retain(|r| r.0 <= 65);
    let dir = common::scratch("s7plus-long");
    // The learning's packets, then the long message at 70 s and a DB write at 75 s.
    let mut seqs = (1u32, 1u32);
    let mut packets = plus_exchanges(&requests, &mut seqs);
    let t0 = common::packet_time(0);
    let mut ts = t0 + std::time::Duration::from_secs(70);
    let passed = packets.len() as u64 + over as u64;
    for p in plus_pieces(2, &data, &cuts) {
        packets.push((ts, iso_segment(true, &p, &mut seqs)));
        ts += std::time::Duration::from_millis(1);
    }
    let write = plus_request(SET_MULTI, 900, 0x388, &db3_variable(true, 0x0a));
    let ts = t0 + std::time::Duration::from_secs(75);
    packets.push((ts, iso_segment(true, &write, &mut seqs)));
    let path = dir.join("long.pcap");
    common::write_pcap_at(&path, &packets);
    let (_, report) = replay_file(&path);
    let counters = &report.stats[otwatch::dissect::registry::S7COMMPLUS].counters;
    assert_eq!(counters.get("message_reassembly_bound_drops"), Some(&1));
    let alerts = first_lines_learning_60s(&path);
    let out = type_frame(&alerts);
    assert_eq!(
        out,
        [
            ("malformed_pdu", Some(passed)),
            ("unauthorized_write", Some(packets.len() as u64))
        ],
        "{alerts:#?}"
    );
}

/// A client cannot make the session of a connection picked up mid-session an object of its
/// choice by sending, under the sequence number of a good request, another that names the
/// object as its session: an answer matched to two requests naming different ids confirms
/// neither. The session is then the id the HMI's answered reads name, and a stop of the CPU
/// object (0x34) sent under the object's id as session is an `unauthorized_write`.
#[test]
fn s7commplus_a_session_cannot_be_pinned_by_a_repeated_sequence() {
    let (hmi, target) = (0x999, 0x34);
    let mut seqs = (1u32, 1u32);
    let mut packets = Vec::new();
    let t0 = common::packet_time(0);
    let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
    let read = db3_variable(false, 0x0a);
    for (k, seq) in (7u16..10).enumerate() {
        let ms = 1000 * k as u64 + 1000;
        let good = plus_request(GET_MULTI, seq, hmi, &read);
        packets.push((at(ms), iso_segment(true, &good, &mut seqs)));
        let forged = plus_request(GET_MULTI, seq, target, &read);
        packets.push((at(ms + 1), iso_segment(true, &forged, &mut seqs)));
        let answer = plus_response(GET_MULTI, seq, &[]);
        packets.push((at(ms + 20), iso_segment(false, &answer, &mut seqs)));
    }
    for (k, s) in (5..=65).step_by(5).enumerate() {
        let seq = 100 + k as u16;
        let good = plus_request(GET_MULTI, seq, hmi, &read);
        packets.push((at(s * 1000), iso_segment(true, &good, &mut seqs)));
        let answer = plus_response(GET_MULTI, seq, &[]);
        packets.push((at(s * 1000 + 20), iso_segment(false, &answer, &mut seqs)));
    }
    let stop = vec![0, 0, 0, 0x34, 1, 0x9d, 0x18, 0, 4, 1];
    let request = plus_request(SET_VARIABLE, 200, target, &stop);
    packets.push((at(70_000), iso_segment(true, &request, &mut seqs)));
    let dir = common::scratch("s7plus-forged-pin");
    let path = dir.join("pin.pcap");
    common::write_pcap_at(&path, &packets);
    let (events, _) = replay_file(&path);
    let last = events
        .iter()
        .filter_map(|e| e.s7commplus())
        .next_back()
        .unwrap();
    assert_eq!((last.object_id, last.own_object), (Some(0x34), None));
    let alerts = first_lines_learning_60s(&path);
    let out = type_frame(&alerts);
    assert_eq!(
        out,
        [("unauthorized_write", Some(packets.len() as u64))],
        "{alerts:#?}"
    );
}

/// A V3 message whose next piece does not frame as a piece (no digest where one belongs) is a
/// failed join: from the client, a malformed request of the function its first piece named,
/// not silence.
#[test]
fn s7commplus_a_v3_piece_that_does_not_frame_is_malformed() {
    let mut requests = hmi_session(vec![]);
    requests.retain(|r| r.0 <= 65);
    let write = plus_request(SET_MULTI, 900, 0x388, &db3_variable(true, 0x0a));
    let data = &write[4..write.len() - 4];
    // The first piece with its digest; the last without one (its first byte, 0xff, read as a
    // digest length, runs past it).
    let first = plus_pieces(3, &data[..20], &[]).remove(0);
    let first = first[..first.len() - 4].to_vec();
    let mut last = vec![0x72, 0x03];
    let rest: Vec<u8> = std::iter::once(0xff)
        .chain(data[20..].iter().copied())
        .collect();
    last.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    last.extend_from_slice(&rest);
    last.extend_from_slice(&[0x72, 0x03, 0x00, 0x00]);
    let dir = common::scratch("s7plus-v3-broken");
    let mut seqs = (1u32, 1u32);
    let mut packets = plus_exchanges(&requests, &mut seqs);
    let t0 = common::packet_time(0);
    let ts = t0 + std::time::Duration::from_secs(70);
    packets.push((ts, iso_segment(true, &first, &mut seqs)));
    let ts = ts + std::time::Duration::from_millis(1);
    packets.push((ts, iso_segment(true, &last, &mut seqs)));
    let path = dir.join("v3.pcap");
    common::write_pcap_at(&path, &packets);
    let alerts = first_lines_learning_60s(&path);
    let out = type_frame(&alerts);
    // The first piece named SetMultiVariables: a write that could not be checked, by a
    // client that never wrote.
    let frame = Some(packets.len() as u64);
    assert_eq!(
        out,
        [("malformed_pdu", frame), ("unauthorized_write", frame)],
        "{alerts:#?}"
    );
}

/// A SetVariable of the CPU's operating state request (object 52, attribute 2167, a DINT), as
/// Thomas Wiens' S7CommPlusDriver's `SetPlcOperatingState` sends it.
fn cpu_state(value: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0x34, 1, 0x90, 0x77, 0x00];
    p.extend_from_slice(value);
    p
}

/// The operating states the S7comm-plus requests of a capture ask for (one per request that
/// sets the state request).
fn states_asked(path: &Path) -> Vec<Option<i64>> {
    let (events, _) = replay_file(path);
    events
        .iter()
        .filter_map(|e| e.s7commplus())
        .filter(|p| p.cpu_state_request)
        .map(|p| p.requested_state)
        .collect()
}

/// S7comm-plus's PLC stop and start (the CPU's operating state asked for: 1 stop, 3 run, 4 run
/// redundant) are `plc_stop` and `plc_start`, in learning as after it, and say nothing else
/// (the HMI that sends them never wrote: the write is the command). A reset of the retentive
/// data (2) and a value that is no integer (a REAL) are stops, and so is a stop as a
/// SetVariable's second item (the review of 2026-12-06). The events carry the state asked
/// for.
#[test]
fn s7commplus_plc_stop_and_start() {
    let session = 0x388;
    let stop = cpu_state(&[0x08, 0x01]);
    let run = cpu_state(&[0x08, 0x03]);
    let reset = cpu_state(&[0x08, 0x02]);
    let real = cpu_state(&[0x0e, 0x3f, 0x80, 0, 0]);
    let redundant = cpu_state(&[0x08, 0x04]);
    // Two items: attribute 1053 (an INT 0), then the state request (stop).
    let second = vec![
        0, 0, 0, 0x34, 2, 0x88, 0x1d, 0, 7, 0, 0, 0x90, 0x77, 0, 8, 1,
    ];
    let requests = hmi_session(vec![
        (41, SET_VARIABLE, session, stop.clone(), vec![]),
        (43, SET_VARIABLE, session, run.clone(), vec![]),
        (70, SET_VARIABLE, session, stop, vec![]),
        (72, SET_VARIABLE, session, run, vec![]),
        (74, SET_VARIABLE, session, reset, vec![]),
        (76, SET_VARIABLE, session, real, vec![]),
        (78, SET_VARIABLE, session, redundant, vec![]),
        (80, SET_VARIABLE, session, second, vec![]),
    ]);
    let (_dir, path) = plus_conversation("s7plus-cpu-state", &requests);
    let asked = states_asked(&path);
    assert_eq!(
        asked,
        [
            Some(1),
            Some(3),
            Some(1),
            Some(3),
            Some(2),
            None,
            Some(4),
            Some(1)
        ]
    );
    let frame = |at: u64| 2 * requests.iter().position(|r| r.0 == at).unwrap() as u64 + 1;
    use common::{all_frames, detect_files, Learn};
    let alerts = detect_files(Learn::For(60.0), &[(&path, &all_frames)]).0;
    let firsts: Vec<_> = alerts
        .iter()
        .filter(|a| a.state == otwatch_models::AlertState::First)
        .cloned()
        .collect();
    // One cause per command and channel: the first lines are the stop and start in learning,
    // and the last lines count every one.
    assert_eq!(
        type_frame(&firsts),
        [
            ("plc_stop", Some(frame(41))),
            ("plc_start", Some(frame(43)))
        ],
        "{alerts:#?}"
    );
    let ends: Vec<_> = alerts
        .iter()
        .filter(|a| a.state == otwatch_models::AlertState::End)
        .map(|a| (a.r#type, a.count))
        .collect();
    assert_eq!(ends, [("plc_stop", 5), ("plc_start", 3)], "{alerts:#?}");
}

/// The state request set by SetMultiVariables is the same command: of object id 0 beside a
/// DB3 variable (a learned writer's variable never written, which the command accounts for, as
/// any command's writes), and of the object 52 itself (run: `plc_start`).
#[test]
fn s7commplus_a_state_request_in_a_set_multi_variables() {
    let session = 0x388;
    let mut requests = db3_writer(&[10, 30, 50, 60]);
    let mut with_write = vec![0, 0, 0, 0, 2, 9];
    with_write.extend_from_slice(&[0x00, 0x88, 0xd0, 0xb8, 0x80, 0x03, 0x02, 0x93, 0x76, 0x0b]);
    with_write.extend_from_slice(&[0x00, 0x34, 0x01, 0x90, 0x77]);
    with_write.extend_from_slice(&[0x01, 0x00, 0x01, 0x01, 0x02, 0x00, 0x08, 0x01]);
    let run = vec![0, 0, 0, 0x34, 1, 1, 0x90, 0x77, 0x01, 0x00, 0x08, 0x03];
    requests.push((70, SET_MULTI, session, with_write, vec![]));
    requests.push((72, SET_MULTI, session, run, vec![]));
    let (_dir, path) = plus_conversation("s7plus-multi-state", &requests);
    let asked = states_asked(&path);
    assert_eq!(asked, [Some(1), Some(3)]);
    let alerts = first_lines_learning_60s(&path);
    let mut out = type_space_frame(&alerts);
    out.sort_by_key(|a| a.0);
    assert_eq!(
        out,
        [
            ("plc_start", serde_json::json!(null), Some(13)),
            ("plc_stop", serde_json::json!(null), Some(11)),
        ],
        "{alerts:#?}"
    );
}

/// A GetMultiVariables or SetMultiVariables of the DB3 variable of LID `lid` (symbol CRC 0, one
/// item); a set writes the INT `value`.
fn db3_int(set: bool, lid: u8, value: i16) -> Vec<u8> {
    let mut p = db3_variable(false, lid);
    if set {
        p.extend_from_slice(&[0x01, 0x00, 0x07]);
        p.extend_from_slice(&value.to_be_bytes());
    }
    p
}

/// A GetMultiVariables response: return value 0, item 1 an INT `value`, the list's end, no
/// errors.
fn int_reply(value: i16) -> Vec<u8> {
    let mut p = vec![0x00, 0x01, 0x00, 0x07];
    p.extend_from_slice(&value.to_be_bytes());
    p.extend_from_slice(&[0x00, 0x00]);
    p
}

/// S7comm-plus values are checked against the envelopes learned from them: an HMI reads a DB3
/// INT (100 to 106) every 5 s and writes it (103) while learning; after learning, a read of
/// 5000 and a write of 9000 are each `value_out_of_range` (a read and a write, two causes),
/// and a read and a write inside the envelope raise nothing. The events carry the values, the
/// response's on its request's items.
#[test]
fn s7commplus_values_are_checked_against_envelopes() {
    let session = 0x388;
    let mut requests = db3_writer(&[]);
    let read = |at: u64, value: i16| {
        (
            at,
            GET_MULTI,
            session,
            db3_int(false, 0x0a, 0),
            int_reply(value),
        )
    };
    let write = |at: u64, value: i16| (at, SET_MULTI, session, db3_int(true, 0x0a, value), vec![]);
    for at in (5..=65).step_by(5) {
        requests.push(read(at, 100 + (at % 7) as i16));
    }
    for at in [12, 32, 52] {
        requests.push(write(at, 103));
    }
    requests.sort_by_key(|r| r.0);
    requests.extend([
        read(70, 104),
        write(72, 101),
        read(75, 5000),
        write(80, 9000),
    ]);
    let (_dir, path) = plus_conversation("s7plus-values", &requests);
    let (events, _) = replay_file(&path);
    let values: Vec<_> = events
        .iter()
        .filter_map(|e| e.s7commplus())
        .filter_map(|p| Some((p.opcode?, p.items.first()?.value?)))
        .collect();
    assert_eq!(values[..3], [(0x32, 105.0), (0x32, 103.0), (0x31, 103.0)]);
    assert_eq!(values[values.len() - 2..], [(0x32, 5000.0), (0x31, 9000.0)]);
    let k = |at: u64| requests.iter().position(|r| r.0 == at).unwrap() as u64;
    let alerts = first_lines_learning_60s(&path);
    assert_eq!(
        type_space_frame(&alerts),
        [
            (
                "value_out_of_range",
                serde_json::json!("DB3"),
                Some(2 * k(75) + 2)
            ),
            (
                "value_out_of_range",
                serde_json::json!("DB3"),
                Some(2 * k(80) + 1)
            ),
        ],
        "{alerts:#?}"
    );
    // The address is the hash of the variable's LIDs, and the text says so.
    let texts: Vec<_> = alerts.iter().map(|a| a.message.as_str()).collect();
    assert!(
        texts.iter().all(|t| t.contains(" DB3 variable #")),
        "{texts:?}"
    );
}

/// A GetMultiVariables response's values go to its own request's items (the reviews of
/// 2026-12-06): a "response" the client sends is not the PLC's (its 101 is no reading, and the
/// PLC's 5000 that follows is checked); a sequence number asked three times before its answers
/// matches no answer (a REAL's 21.0 is not read as the INT's); a REAL NaN written is outside
/// the envelope (`value_out_of_range`).
#[test]
fn s7commplus_values_match_their_requests() {
    let session = 0x388;
    let read = |seq: u16, lid: u8| plus_request(GET_MULTI, seq, session, &db3_int(false, lid, 0));
    let answer = |seq: u16, value: i16| plus_response(GET_MULTI, seq, &int_reply(value));
    let mut pdus = Vec::new();
    for (k, at) in (5..=65).step_by(5).enumerate() {
        let seq = k as u16 + 1;
        pdus.push((at * 1000, true, read(seq, 0x0a)));
        pdus.push((at * 1000 + 20, false, answer(seq, 100 + (at % 7) as i16)));
    }
    // The client answers its own request, then the PLC does.
    pdus.push((70_000, true, read(100, 0x0a)));
    pdus.push((70_010, true, answer(100, 101)));
    pdus.push((70_020, false, answer(100, 5000)));
    // Sequence 200 asked three times before its answers: a REAL of DB3 (LID 0x0b), again, then
    // the DB3 INT; the REAL's answers come first (21.0), then the INT's.
    let real = [0x00, 0x01, 0x00, 0x0e, 0x41, 0xa8, 0x00, 0x00, 0x00, 0x00];
    pdus.push((75_000, true, read(200, 0x0b)));
    pdus.push((75_001, true, read(200, 0x0b)));
    pdus.push((75_002, true, read(200, 0x0a)));
    pdus.push((75_020, false, plus_response(GET_MULTI, 200, &real)));
    pdus.push((75_021, false, plus_response(GET_MULTI, 200, &real)));
    pdus.push((75_022, false, answer(200, -30000)));
    // A REAL NaN written.
    let mut nan = db3_variable(false, 0x0a);
    nan.extend_from_slice(&[0x01, 0x00, 0x0e, 0x7f, 0xc0, 0x00, 0x00]);
    pdus.push((80_000, true, plus_request(SET_MULTI, 300, session, &nan)));
    pdus.push((80_020, false, plus_response(SET_MULTI, 300, &[])));
    let (_dir, path) = plus_capture("s7plus-matching", &pdus);
    let (events, _) = replay_file(&path);
    // The values of the last requests and answers (a NaN shown as "NaN").
    let late: Vec<_> = events
        .iter()
        .filter_map(|e| e.s7commplus())
        .filter(|p| p.sequence >= Some(100))
        .map(|p| {
            let values = p.items.iter().map(|i| i.value.map(|v| format!("{v}")));
            (p.opcode, values.collect::<Vec<_>>())
        })
        .collect();
    let v = |x: &str| vec![Some(x.to_string())];
    assert_eq!(
        late,
        [
            (Some(0x31), vec![None]),
            (Some(0x32), vec![]),
            (Some(0x32), v("5000")),
            (Some(0x31), vec![None]),
            (Some(0x31), vec![None]),
            (Some(0x31), vec![None]),
            (Some(0x32), vec![]),
            (Some(0x32), vec![]),
            (Some(0x32), vec![]),
            (Some(0x31), v("NaN")),
            (Some(0x32), vec![]),
        ]
    );
    let alerts = first_lines_learning_60s(&path);
    let out: Vec<_> = type_space_frame(&alerts)
        .into_iter()
        .filter(|a| a.0 == "value_out_of_range")
        .collect();
    assert_eq!(
        out,
        [
            ("value_out_of_range", serde_json::json!("DB3"), Some(29)),
            ("value_out_of_range", serde_json::json!("DB3"), Some(36)),
        ],
        "{alerts:#?}"
    );
}

/// What S7comm-plus reads awaiting their answers hold is bounded by their LIDs too (the
/// review of 2026-12-06: a LID path is as long as the message, and 64 requests of one item
/// each held 70 MB): a request of one item with 1100 LIDs is not held (counted), its response
/// carries no items; two of 600 LIDs each, the first is forgotten (counted) and the second's
/// response gets its value.
#[test]
fn s7commplus_reads_held_are_bounded_by_their_lids() {
    let session = 0x388;
    let deep = |lids: usize, seq: u16| {
        let mut p = vec![0, 0, 0, 0, 1, 5, 0x00, 0x88, 0xd0, 0xb8, 0x80, 0x03];
        let count = lids as u16 + 1;
        p.extend_from_slice(&[0x80 | (count >> 7) as u8, (count & 0x7f) as u8, 0x93, 0x76]);
        p.extend(std::iter::repeat_n(0x01, lids));
        plus_request(GET_MULTI, seq, session, &p)
    };
    let pdus = vec![
        (1_000, true, deep(1100, 1)),
        (1_020, false, plus_response(GET_MULTI, 1, &int_reply(7))),
        (2_000, true, deep(600, 2)),
        (2_001, true, deep(600, 3)),
        (2_020, false, plus_response(GET_MULTI, 3, &int_reply(8))),
    ];
    let (_dir, path) = plus_capture("s7plus-deep", &pdus);
    let (events, report) = replay_file(&path);
    let st = &report.stats[otwatch::dissect::registry::S7COMMPLUS];
    assert_eq!(st.outstanding_bound_drops, 2);
    let answers: Vec<_> = events
        .iter()
        .filter_map(|e| e.s7commplus())
        .filter(|p| p.opcode == Some(0x32))
        .map(|p| p.items.iter().map(|i| i.value).collect::<Vec<_>>())
        .collect();
    assert_eq!(answers, [vec![], vec![Some(8.0)]]);
}
