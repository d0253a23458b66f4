//! Fuzzes every public Modbus entry point: streaming framing with resynchronisation, as a
//! dissector drives it, and PDU decoding in both directions with every view walked to its end.
//! Any panic is a bug: the parsers promise to be panic-free on arbitrary input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_parsers::modbus::{
    find_resync, parse_adu, parse_pdu, AduResult, Direction, ModbusPdu, PduBody, MAX_ADU_LEN,
    MBAP_HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    walk_stream(data);
    // The input as a bare PDU too, so the decoders see lengths framing would not let through.
    walk_pdu_both_directions(data);
});

fn walk_stream(mut input: &[u8]) {
    loop {
        match parse_adu(input) {
            AduResult::Complete { adu, consumed } => {
                assert_eq!(consumed, 6 + usize::from(adu.header.length));
                assert!(consumed <= input.len() && consumed <= MAX_ADU_LEN);
                assert_eq!(adu.pdu.len() + 1, usize::from(adu.header.length));
                walk_pdu_both_directions(adu.pdu);
                input = &input[consumed..];
            }
            AduResult::Incomplete { needed } => {
                assert!(needed > 0 && input.len() + needed <= MAX_ADU_LEN);
                return;
            }
            AduResult::Invalid(error) => {
                let _ = (error.to_string(), error.as_str());
                // Skip at least one byte, as a dissector must, then look for a new start.
                let Some(rest) = input.get(1..) else { return };
                match find_resync(rest) {
                    Some(offset) => {
                        assert!(offset + MBAP_HEADER_LEN <= rest.len());
                        input = &rest[offset..];
                    }
                    None => return,
                }
            }
        }
    }
}

fn walk_pdu_both_directions(pdu: &[u8]) {
    for dir in [Direction::Request, Direction::Response] {
        match parse_pdu(pdu, dir) {
            Ok(decoded) => walk_pdu(&decoded),
            Err(error) => {
                assert!(error.offset <= pdu.len());
                let _ = (error.to_string(), error.kind.as_str());
            }
        }
    }
}

/// Touches every accessor and runs every iterator to its end, checking the counts agree.
fn walk_pdu(pdu: &ModbusPdu<'_>) {
    let _ = (
        pdu.exception(),
        pdu.address(),
        pdu.quantity(),
        pdu.body.coil_on(),
    );
    let _ = (pdu.function.name(), pdu.function.to_string());
    match pdu.body {
        PduBody::ReadBitsResponse { bits } | PduBody::WriteMultipleCoilsRequest { bits, .. } => {
            assert_eq!(bits.iter().count(), bits.len());
            assert_eq!(bits.with_count(7).iter().count(), bits.with_count(7).len());
        }
        PduBody::ReadRegistersResponse { registers }
        | PduBody::WriteMultipleRegistersRequest { registers, .. }
        | PduBody::ReadWriteMultipleRequest { registers, .. }
        | PduBody::ReadFifoQueueResponse { registers } => {
            assert_eq!(registers.iter().count(), registers.len());
            assert_eq!(registers.iter().rev().count(), registers.len());
        }
        PduBody::ReadFileRecordRequest { records } => {
            assert_eq!(records.iter().count(), records.len());
        }
        PduBody::ReadFileRecordResponse { records } => {
            let mut walked = 0;
            for data in records {
                assert_eq!(data.iter().count(), data.len());
                walked += 1;
            }
            assert_eq!(walked, records.len());
        }
        PduBody::WriteFileRecord { records } => {
            let mut walked = 0;
            for record in records {
                assert_eq!(record.data.len(), usize::from(record.record_length));
                assert_eq!(record.data.iter().count(), record.data.len());
                walked += 1;
            }
            assert_eq!(walked, records.len());
        }
        PduBody::ReadDeviceIdResponse { objects, .. } => {
            let mut walked = 0;
            for object in objects {
                let _ = (object.name(), object.value.len());
                walked += 1;
            }
            assert_eq!(walked, objects.len());
        }
        PduBody::Diagnostics { subfunction, data } => {
            assert_eq!(data.len() % 2, 0);
            let _ = (subfunction.name(), subfunction.changes_state());
        }
        PduBody::Exception { code } => {
            let _ = code.name();
        }
        _ => {}
    }
}
