//! Fuzzes every public S7 entry point: TPKT framing with resynchronisation and COTP decoding
//! as a dissector drives them, COTP reassembly within its bound, and S7comm / S7comm-plus
//! decoding with every view walked to its end. Any panic is a bug: the parsers promise to be
//! panic-free on arbitrary input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_parsers::s7::{
    created_objects, find_tpkt_resync, parse_cotp, parse_s7_payload, parse_s7comm, parse_s7plus,
    parse_s7plus_message, parse_tpkt, request_target, requested_cpu_state, s7plus_piece, varint32,
    CotpBody, CotpReassembler, DataItems, PlusArea, PlusFunction, PlusTarget, Reassembled, S7Body,
    S7Payload, S7Pdu, S7PlusBody, S7PlusPdu, TpktResult, Userdata, UserdataBody, VarSpecs,
    RESYNC_PROBE_LEN, S7COMM_PROTOCOL_ID, S7PLUS_PROTOCOL_ID, TPKT_HEADER_LEN, TPKT_MAX_LEN,
};

/// A small bound, so that the fuzzer reaches the overflow path.
const REASSEMBLY_LIMIT: usize = 2048;

fuzz_target!(|data: &[u8]| {
    walk_stream(data);
    walk_plus_payload(data);
    // The input as a bare TPDU and as a bare payload too, so the decoders see lengths framing
    // would not let through.
    if let Ok(tpdu) = parse_cotp(data) {
        if let Some((payload, _)) = tpdu.body.data() {
            walk_payload(payload);
        }
    }
    walk_payload(data);
    // The input cut into DT payloads at every 0xFF byte, through a reassembler.
    let mut reassembler = CotpReassembler::with_limit(REASSEMBLY_LIMIT);
    for piece in data.split(|&b| b == 0xFF) {
        let eot = piece.first().is_some_and(|&b| b & 1 == 1);
        if let Reassembled::Complete(tsdu) = reassembler.push(piece, eot) {
            assert!(tsdu.len() <= REASSEMBLY_LIMIT);
            walk_payload(tsdu);
        }
        assert!(reassembler.buffered() <= REASSEMBLY_LIMIT);
    }
});

fn walk_stream(mut input: &[u8]) {
    let mut reassembler = CotpReassembler::with_limit(REASSEMBLY_LIMIT);
    loop {
        match parse_tpkt(input) {
            TpktResult::Complete { tpkt, consumed } => {
                assert_eq!(consumed, usize::from(tpkt.header.length));
                assert_eq!(tpkt.tpdu.len() + TPKT_HEADER_LEN, consumed);
                match parse_cotp(tpkt.tpdu) {
                    Ok(tpdu) => {
                        let _ = tpdu.pdu_type.name();
                        match tpdu.body {
                            CotpBody::ConnectionRequest(c) | CotpBody::ConnectionConfirm(c) => {
                                let _ = (c.class(), c.tpdu_size(), c.calling_tsap());
                                let _ = c
                                    .called_tsap()
                                    .map(|t| (t.rack_slot(), t.connection_type()));
                                for param in c.params {
                                    let _ = (param.code.name(), param.value.len());
                                }
                            }
                            CotpBody::Data { payload, eot, .. } => {
                                match reassembler.push(payload, eot) {
                                    Reassembled::Complete(tsdu) => walk_payload(tsdu),
                                    Reassembled::Discarded(reason) => {
                                        let _ = reason.as_str();
                                    }
                                    Reassembled::InProgress => {}
                                }
                                assert!(reassembler.buffered() <= REASSEMBLY_LIMIT);
                            }
                            _ => {}
                        }
                    }
                    Err(error) => {
                        assert!(error.offset <= tpkt.tpdu.len());
                        let _ = (error.to_string(), error.kind.as_str());
                    }
                }
                input = &input[consumed..];
            }
            TpktResult::Incomplete { needed } => {
                assert!(needed > 0 && input.len() + needed <= TPKT_MAX_LEN);
                return;
            }
            TpktResult::Invalid(error) => {
                let _ = (error.to_string(), error.as_str());
                // Skip at least one byte, as a dissector must, then look for a new start.
                let Some(rest) = input.get(1..) else { return };
                match find_tpkt_resync(rest) {
                    Some(offset) => {
                        assert!(offset + RESYNC_PROBE_LEN <= rest.len());
                        input = &rest[offset..];
                    }
                    None => return,
                }
            }
        }
    }
}

fn walk_payload(payload: &[u8]) {
    match parse_s7_payload(payload) {
        Ok(S7Payload::S7comm(pdu)) => walk_s7(&pdu),
        Ok(S7Payload::S7commPlus(pdu)) => walk_plus(&pdu),
        Ok(S7Payload::Other(first)) => {
            assert!(first != S7COMM_PROTOCOL_ID && first != S7PLUS_PROTOCOL_ID);
        }
        Err(error) => {
            assert!(error.offset <= payload.len());
            let _ = (error.to_string(), error.kind.as_str());
        }
    }
    // Forced through each parser whatever the first byte says.
    let _ = parse_s7comm(payload).map(|pdu| walk_s7(&pdu));
    let _ = parse_s7plus(payload).map(|pdu| walk_plus(&pdu));
}

/// Touches every accessor and runs every iterator to its end, checking the counts agree.
fn walk_s7(pdu: &S7Pdu<'_>) {
    let _ = (pdu.function(), pdu.error(), pdu.header.rosctr.to_string());
    assert_eq!(
        pdu.header.pdu_len(),
        pdu.header.header_len() + pdu.params.len() + pdu.data.len()
    );
    match pdu.body {
        S7Body::ReadVarRequest { items } => walk_specs(items),
        S7Body::WriteVarRequest { items, values } => {
            walk_specs(items);
            walk_items(values);
        }
        S7Body::ReadVarResponse { items } => walk_items(items),
        S7Body::WriteVarResponse { return_codes } => {
            assert_eq!(return_codes.iter().count(), return_codes.len());
        }
        S7Body::BlockControl(control) => {
            let _ = (
                control.more_follows(),
                control.block(),
                control.payload.map(<[u8]>::len),
            );
        }
        S7Body::PiService(pi) => {
            let _ = (pi.service_str(), pi.argument());
            if let Some(blocks) = pi.blocks() {
                assert_eq!(blocks.iter().count(), blocks.len());
            }
        }
        S7Body::Userdata(userdata) => walk_userdata(&userdata),
        _ => {}
    }
}

fn walk_specs(specs: VarSpecs<'_>) {
    let mut n = 0;
    for spec in specs {
        if let Some(any) = spec.any() {
            let _ = (
                any.byte_address(),
                any.bit(),
                any.byte_len(),
                any.area.name(),
            );
        }
        if let Some(areas) = spec.dbread_areas() {
            let _ = areas.map(|a| usize::from(a.length)).sum::<usize>();
        }
        n += 1;
    }
    assert_eq!(n, specs.len());
}

fn walk_items(items: DataItems<'_>) {
    let mut n = 0;
    let mut bytes = 0;
    for item in items {
        if item.return_code.carries_data() {
            assert_eq!(item.data.len(), item.transport_size.data_len(item.length));
        }
        let _ = item.bit_len();
        bytes += 4 + item.data.len() + usize::from(item.fill.is_some());
        n += 1;
    }
    assert_eq!(n, items.len());
    assert_eq!(bytes, items.as_bytes().len());
}

fn walk_userdata(userdata: &Userdata<'_>) {
    let _ = (
        userdata.param.subfunction_name(),
        userdata.param.more_follows(),
    );
    if let Some(data) = userdata.data {
        assert_eq!(usize::from(data.length), data.data.len());
    }
    match userdata.body {
        UserdataBody::SzlResponse(list) => {
            let count = list.records.iter().count();
            assert_eq!(count, list.records.len());
            let _ = (
                list.order_number(),
                list.firmware_version(),
                list.serial_number(),
            );
            if let Some(records) = list.module_identification() {
                for record in records.iter() {
                    let _ = (
                        record.order_number(),
                        record.version().map(|v| v.to_string()),
                    );
                }
            }
            if let Some(records) = list.component_identification() {
                for record in records.iter() {
                    let _ = (record.text(), record.index_name());
                }
            }
        }
        UserdataBody::BlockCounts(counts) => {
            assert_eq!(counts.iter().count(), counts.len());
        }
        UserdataBody::BlockEntries(entries) => {
            assert_eq!(entries.iter().count(), entries.len());
        }
        UserdataBody::Tis(job) => {
            for a in job.iter() {
                let _ = (a.area.area(), a.area.transport_size(), a.bit(), a.count());
            }
            let values = job.values.iter().count();
            assert!(values <= job.values.len() && job.values.len() <= job.addresses.len());
        }
        _ => {}
    }
}

fn walk_plus(pdu: &S7PlusPdu<'_>) {
    let _ = (pdu.is_integrity_protected(), pdu.version.name());
    if let Some(message) = pdu.message() {
        let _ = (
            message.function.map(|f| f.to_string()),
            message.opcode.name(),
        );
        let _ = (message.sequence, message.session_id, message.payload.len());
        walk_plus_payload(message.payload);
    }
}

/// What a request addresses and a CreateObject reply hands out, the bytes read as each
/// function's.
fn walk_plus_payload(payload: &[u8]) {
    for f in [
        PlusFunction::SET_MULTI_VARIABLES,
        PlusFunction::GET_MULTI_VARIABLES,
        PlusFunction::SET_VARIABLE,
        PlusFunction::DELETE_OBJECT,
    ] {
        match request_target(f, payload) {
            Some(Ok(PlusTarget::Items(items))) => {
                for item in items.flatten() {
                    let _ = item.lids().count();
                    let _ = PlusArea::of(item.access_area);
                }
            }
            Some(Ok(PlusTarget::Object { attributes, .. })) => {
                assert!(attributes.count() <= payload.len());
            }
            Some(Err(e)) => assert!(e.offset <= payload.len()),
            None => unreachable!(),
        }
    }
    // As a message joined from pieces, and as a piece.
    if let Ok(S7PlusBody::Message(m)) = parse_s7plus_message(payload) {
        assert!(m.payload.len() < payload.len());
    }
    if let Some((_, data, _)) = s7plus_piece(payload) {
        assert!(data.len() <= payload.len());
    }
    if let Some(ids) = created_objects(payload) {
        let _ = ids.count();
    }
    // The CPU operating state a Set asks for, and the signed VLQ anywhere.
    for f in [
        PlusFunction::SET_VARIABLE,
        PlusFunction::SET_MULTI_VARIABLES,
    ] {
        let _ = requested_cpu_state(f, payload);
    }
    let mut at = 0;
    while varint32(payload, &mut at).is_some() {}
    assert!(at <= payload.len());
}
