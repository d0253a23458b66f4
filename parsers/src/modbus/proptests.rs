//! Properties over arbitrary and generated input: nothing panics, framing arithmetic holds,
//! every view of an accepted PDU walks to its end, and well-formed PDUs round-trip.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Walks everything a decoded PDU exposes, checking the views agree with their lengths.
fn walk_pdu(pdu: &ModbusPdu<'_>) {
    let _ = (
        pdu.exception(),
        pdu.address(),
        pdu.quantity(),
        pdu.function.name(),
    );
    let _ = pdu.body.coil_on();
    match pdu.body {
        PduBody::ReadBitsResponse { bits } | PduBody::WriteMultipleCoilsRequest { bits, .. } => {
            assert_eq!(bits.iter().count(), bits.len());
            assert!(bits.len() <= bits.bytes().len() * 8);
            // with_count widens as well as narrows, up to what the bytes hold.
            let capacity = bits.bytes().len() * 8;
            assert_eq!(bits.with_count(3).iter().count(), capacity.min(3));
        }
        PduBody::ReadRegistersResponse { registers }
        | PduBody::WriteMultipleRegistersRequest { registers, .. }
        | PduBody::ReadWriteMultipleRequest { registers, .. }
        | PduBody::ReadFifoQueueResponse { registers } => {
            assert_eq!(registers.iter().count(), registers.len());
            assert_eq!(registers.as_bytes().len(), registers.len() * 2);
        }
        PduBody::ReadFileRecordRequest { records } => {
            assert_eq!(records.iter().count(), records.len());
        }
        PduBody::ReadFileRecordResponse { records } => {
            let mut n = 0;
            for data in records {
                assert_eq!(data.iter().count(), data.len());
                n += 1;
            }
            assert_eq!(n, records.len());
        }
        PduBody::WriteFileRecord { records } => {
            let mut n = 0;
            for record in records {
                assert_eq!(record.data.len(), usize::from(record.record_length));
                assert_eq!(record.data.iter().count(), record.data.len());
                n += 1;
            }
            assert_eq!(n, records.len());
        }
        PduBody::ReadDeviceIdResponse { objects, .. } => {
            let mut n = 0;
            for object in objects {
                let _ = (object.name(), object.value.len());
                n += 1;
            }
            assert_eq!(n, objects.len());
        }
        PduBody::Diagnostics { data, subfunction } => {
            assert_eq!(data.len() % 2, 0);
            let _ = (subfunction.name(), subfunction.changes_state());
        }
        PduBody::Exception { code } => {
            // Function code 0 may carry an exception: the answer to a function-code scan.
            assert!(!pdu.function.is_exception());
            let _ = code.name();
        }
        _ => {}
    }
}

pub(super) fn walk_both_directions(pdu: &[u8]) {
    for dir in [Direction::Request, Direction::Response] {
        match parse_pdu(pdu, dir) {
            Ok(decoded) => {
                // Resync's cheap length test must never turn down a PDU that decodes.
                assert!(pdu::plausible_pdu_len(pdu[0], pdu.len()), "{pdu:02x?}");
                walk_pdu(&decoded);
            }
            Err(e) => {
                assert!(
                    e.offset <= pdu.len(),
                    "{e:?} past the end of {} bytes",
                    pdu.len()
                );
                let _ = (e.to_string(), e.kind.as_str());
            }
        }
    }
}

/// Frames a stream the way a dissector would: consume complete ADUs, resync past invalid ones.
fn walk_stream(mut input: &[u8]) -> usize {
    let mut adus = 0;
    loop {
        match parse_adu(input) {
            AduResult::Complete { adu, consumed } => {
                assert_eq!(consumed, 6 + usize::from(adu.header.length));
                assert!(consumed <= input.len());
                assert_eq!(adu.pdu.len() + 1, usize::from(adu.header.length));
                assert_eq!(adu.header.protocol_id, 0);
                walk_both_directions(adu.pdu);
                input = &input[consumed..];
                adus += 1;
            }
            AduResult::Incomplete { needed } => {
                assert!(needed > 0 && input.len() + needed <= MAX_ADU_LEN);
                return adus;
            }
            AduResult::Invalid(e) => {
                let _ = (e.to_string(), e.as_str());
                // Skip at least one byte, as a dissector must, so this always terminates.
                match find_resync(&input[1..]) {
                    Some(offset) => input = &input[1 + offset..],
                    None => return adus,
                }
            }
        }
    }
}

fn adu(transaction_id: u16, unit_id: u8, pdu: &[u8]) -> Vec<u8> {
    let length = u16::try_from(pdu.len() + 1).unwrap();
    let header = MbapHeader {
        transaction_id,
        protocol_id: 0,
        length,
        unit_id,
    };
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(pdu);
    bytes
}

fn fc16_request(address: u16, values: &[u16]) -> Vec<u8> {
    let quantity = u16::try_from(values.len()).unwrap();
    let mut pdu = vec![0x10];
    pdu.extend_from_slice(&address.to_be_bytes());
    pdu.extend_from_slice(&quantity.to_be_bytes());
    pdu.push(u8::try_from(values.len() * 2).unwrap());
    for value in values {
        pdu.extend_from_slice(&value.to_be_bytes());
    }
    pdu
}

/// Function codes with a decoder, to steer random bodies past the dispatch.
const DECODED: [u8; 19] = [
    1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        walk_stream(&bytes);
        if let Some(offset) = find_resync(&bytes) {
            prop_assert!(offset + MBAP_HEADER_LEN <= bytes.len());
            prop_assert!(!matches!(parse_adu(&bytes[offset..]), AduResult::Invalid(_)));
        }
        walk_both_directions(&bytes);
    }

    #[test]
    fn framed_random_pdus_never_panic(
        transaction_id in any::<u16>(),
        unit_id in any::<u8>(),
        code in prop::sample::select(&DECODED[..]),
        exception in any::<bool>(),
        body in vec(any::<u8>(), 0..40),
        tail in vec(any::<u8>(), 0..20),
    ) {
        let mut pdu = vec![if exception { code | 0x80 } else { code }];
        pdu.extend_from_slice(&body);
        let mut stream = adu(transaction_id, unit_id, &pdu);
        let framed_len = stream.len();
        stream.extend_from_slice(&tail);
        match parse_adu(&stream) {
            AduResult::Complete { adu, consumed } => {
                prop_assert_eq!(consumed, framed_len);
                prop_assert_eq!(adu.pdu, &pdu[..]);
                prop_assert_eq!(adu.header.transaction_id, transaction_id);
                prop_assert_eq!(adu.header.unit_id, unit_id);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        walk_stream(&stream);
        walk_both_directions(&pdu);
    }

    #[test]
    fn split_adu_is_incomplete_until_whole(
        values in vec(any::<u16>(), 1..=123),
        cut in any::<prop::sample::Index>(),
    ) {
        let stream = adu(7, 1, &fc16_request(0, &values));
        let cut = cut.index(stream.len());
        match parse_adu(&stream[..cut]) {
            AduResult::Incomplete { needed } => {
                prop_assert!(needed >= 1 && cut + needed <= stream.len());
                if cut >= 6 {
                    prop_assert_eq!(cut + needed, stream.len());
                }
            }
            other => prop_assert!(false, "cut at {}: {:?}", cut, other),
        }
    }

    #[test]
    fn write_multiple_registers_round_trip(
        address in any::<u16>(),
        values in vec(any::<u16>(), 1..=123),
    ) {
        let pdu = fc16_request(address, &values);
        walk_both_directions(&pdu);
        let decoded = parse_pdu(&pdu, Direction::Request).unwrap();
        let PduBody::WriteMultipleRegistersRequest { address: a, quantity, registers } =
            decoded.body
        else {
            return Err(TestCaseError::fail(format!("{decoded:?}")));
        };
        prop_assert_eq!(a, address);
        prop_assert_eq!(usize::from(quantity), values.len());
        prop_assert_eq!(registers.iter().collect::<Vec<_>>(), values);
    }

    #[test]
    fn write_multiple_coils_round_trip(
        address in any::<u16>(),
        coils in vec(any::<bool>(), 1..=1968),
    ) {
        let mut packed = vec![0u8; coils.len().div_ceil(8)];
        for (i, &on) in coils.iter().enumerate() {
            packed[i / 8] |= u8::from(on) << (i % 8);
        }
        let mut pdu = vec![0x0F];
        pdu.extend_from_slice(&address.to_be_bytes());
        pdu.extend_from_slice(&u16::try_from(coils.len()).unwrap().to_be_bytes());
        pdu.push(u8::try_from(packed.len()).unwrap());
        pdu.extend_from_slice(&packed);
        walk_both_directions(&pdu);
        let decoded = parse_pdu(&pdu, Direction::Request).unwrap();
        let PduBody::WriteMultipleCoilsRequest { address: a, bits, .. } = decoded.body else {
            return Err(TestCaseError::fail(format!("{decoded:?}")));
        };
        prop_assert_eq!(a, address);
        prop_assert_eq!(bits.iter().collect::<Vec<_>>(), coils);
    }

    #[test]
    fn read_registers_response_round_trip(values in vec(any::<u16>(), 1..=125)) {
        let mut pdu = vec![0x03, u8::try_from(values.len() * 2).unwrap()];
        for value in &values {
            pdu.extend_from_slice(&value.to_be_bytes());
        }
        walk_both_directions(&pdu);
        let decoded = parse_pdu(&pdu, Direction::Response).unwrap();
        let PduBody::ReadRegistersResponse { registers } = decoded.body else {
            return Err(TestCaseError::fail(format!("{decoded:?}")));
        };
        prop_assert_eq!(registers.iter().collect::<Vec<_>>(), values);
    }

    #[test]
    fn stream_of_adus_parses_back_in_order(
        requests in vec((any::<u16>(), any::<u8>(), any::<u16>(), vec(any::<u16>(), 1..=20)), 1..8),
    ) {
        let mut stream = Vec::new();
        for (transaction_id, unit_id, address, values) in &requests {
            stream.extend(adu(*transaction_id, *unit_id, &fc16_request(*address, values)));
        }
        let mut rest = &stream[..];
        for (transaction_id, unit_id, address, values) in &requests {
            let AduResult::Complete { adu, consumed } = parse_adu(rest) else {
                return Err(TestCaseError::fail("expected a complete ADU"));
            };
            prop_assert_eq!(adu.header.transaction_id, *transaction_id);
            prop_assert_eq!(adu.header.unit_id, *unit_id);
            let decoded = adu.parse_pdu(Direction::Request).unwrap();
            prop_assert_eq!(decoded.address(), Some(*address));
            prop_assert_eq!(decoded.quantity(), u16::try_from(values.len()).ok());
            rest = &rest[consumed..];
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn resync_finds_an_adu_behind_garbage(
        garbage in vec(any::<u8>(), 0..100),
        values in vec(any::<u16>(), 1..=10),
    ) {
        let mut stream = garbage.clone();
        stream.extend(adu(1, 1, &fc16_request(0x100, &values)));
        // The ADU itself qualifies, so resync lands on it or on an earlier plausible start.
        let found = find_resync(&stream);
        prop_assert!(matches!(found, Some(offset) if offset <= garbage.len()), "{:?}", found);
    }
}
