//! Properties over arbitrary and generated input: nothing panics, framing arithmetic holds,
//! every view of an accepted PDU walks to its end, and reassembly round-trips.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Walks everything a decoded S7comm PDU exposes, checking the views agree with their counts.
fn walk_s7(pdu: &S7Pdu<'_>) {
    let _ = (pdu.function(), pdu.error(), pdu.userdata());
    let _ = (
        pdu.header.rosctr.name(),
        pdu.header.header_len(),
        pdu.header.pdu_len(),
    );
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
            for code in return_codes.iter() {
                let _ = (code.is_success(), code.carries_data());
            }
        }
        S7Body::BlockControl(control) => {
            let _ = (
                control.more_follows(),
                control.block(),
                control.function.name(),
            );
            if let Some(file) = control.file {
                assert!(file.block.is_none() || file.name.len() == 9);
            }
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
        let _ = spec.syntax_id.to_string();
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
        } else {
            assert!(item.data.is_empty());
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
        userdata.param.error(),
        userdata.param.group.to_string(),
    );
    if let Some(data) = userdata.data {
        assert_eq!(usize::from(data.length), data.data.len());
    }
    match userdata.body {
        UserdataBody::SzlResponse(list) => {
            let count = list.records.iter().count();
            assert_eq!(count, list.records.len());
            assert!(count <= usize::from(list.record_count));
            let _ = (
                list.order_number(),
                list.firmware_version(),
                list.serial_number(),
            );
            if let Some(records) = list.module_identification() {
                for record in records.iter() {
                    let _ = (record.order_number(), record.version(), record.index_name());
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
            for count in counts {
                let _ = count.block_type();
            }
        }
        UserdataBody::BlockEntries(entries) => assert_eq!(entries.iter().count(), entries.len()),
        _ => {}
    }
}

fn walk_plus(pdu: &S7PlusPdu<'_>) {
    let _ = (
        pdu.message(),
        pdu.is_integrity_protected(),
        pdu.version.name(),
    );
    if let Some(message) = pdu.message() {
        let _ = (
            message.function.map(|f| f.to_string()),
            message.opcode.name(),
        );
        assert!(message.session_id.is_none() || message.opcode == PlusOpcode::REQUEST);
        walk_plus_payload(message.payload);
    }
}

/// What requests address and CreateObject replies hand out, read from any bytes as each
/// function's: every walk ends within the bytes.
pub(super) fn walk_plus_payload(payload: &[u8]) {
    for f in [
        PlusFunction::SET_MULTI_VARIABLES,
        PlusFunction::GET_MULTI_VARIABLES,
        PlusFunction::SET_VARIABLE,
        PlusFunction::DELETE_OBJECT,
    ] {
        match super::request_target(f, payload) {
            Some(Ok(super::PlusTarget::Items(items))) => {
                for item in items.flatten() {
                    let _ = item.lids().count();
                    let _ = super::PlusArea::of(item.access_area);
                }
            }
            Some(Ok(super::PlusTarget::Object { attributes, .. })) => {
                assert!(attributes.count() <= payload.len());
            }
            Some(Err(e)) => assert!(e.offset <= payload.len()),
            None => unreachable!("{f} has a target"),
        }
    }
    // As a message joined from pieces, and as a piece.
    if let Ok(super::S7PlusBody::Message(m)) = super::parse_s7plus_message(payload) {
        assert!(m.payload.len() < payload.len());
    }
    if let Some((_, data, _)) = super::s7plus_piece(payload) {
        assert!(data.len() <= payload.len());
    }
    if let Some(ids) = super::created_objects(payload) {
        let _ = ids.count();
    }
    // The CPU operating state a Set asks for, and the signed VLQ anywhere.
    for f in [
        PlusFunction::SET_VARIABLE,
        PlusFunction::SET_MULTI_VARIABLES,
    ] {
        let _ = super::requested_cpu_state(f, payload);
    }
    let mut at = 0;
    while super::varint32(payload, &mut at).is_some() {}
    assert!(at <= payload.len());
}

/// Any payload through the dispatcher, and through both parsers directly.
pub(super) fn walk_payload(payload: &[u8]) {
    match parse_s7_payload(payload) {
        Ok(S7Payload::S7comm(pdu)) => walk_s7(&pdu),
        Ok(S7Payload::S7commPlus(pdu)) => walk_plus(&pdu),
        Ok(S7Payload::Other(first)) => {
            assert!(first != S7COMM_PROTOCOL_ID && first != S7PLUS_PROTOCOL_ID)
        }
        Err(e) => {
            assert!(
                e.offset <= payload.len(),
                "{e:?} past {} bytes",
                payload.len()
            );
            let _ = (e.to_string(), e.kind.as_str());
        }
    }
    if let Ok(pdu) = parse_s7comm(payload) {
        walk_s7(&pdu);
    }
    if let Ok(pdu) = parse_s7plus(payload) {
        walk_plus(&pdu);
    }
}

/// Frames a stream the way a dissector would: TPKT, COTP, reassembly, S7; resync past
/// invalid headers.
fn walk_stream(mut input: &[u8]) -> usize {
    let mut reassembler = CotpReassembler::with_limit(4096);
    let mut packets = 0;
    loop {
        match parse_tpkt(input) {
            TpktResult::Complete { tpkt, consumed } => {
                assert_eq!(consumed, usize::from(tpkt.header.length));
                assert_eq!(tpkt.tpdu.len() + TPKT_HEADER_LEN, consumed);
                match parse_cotp(tpkt.tpdu) {
                    Ok(tpdu) => {
                        if let CotpBody::ConnectionRequest(c) | CotpBody::ConnectionConfirm(c) =
                            tpdu.body
                        {
                            let _ = (c.calling_tsap(), c.tpdu_size(), c.class());
                            let _ = c
                                .called_tsap()
                                .map(|t| (t.rack_slot(), t.connection_type()));
                            assert!(c.params.iter().count() <= c.params.as_bytes().len() / 2);
                        }
                        if let Some((payload, eot)) = tpdu.body.data() {
                            if let Reassembled::Complete(tsdu) = reassembler.push(payload, eot) {
                                walk_payload(tsdu);
                            }
                            assert!(reassembler.buffered() <= reassembler.limit());
                        }
                    }
                    Err(e) => {
                        assert!(e.offset <= tpkt.tpdu.len());
                        let _ = (e.to_string(), e.kind.as_str());
                    }
                }
                input = &input[consumed..];
                packets += 1;
            }
            TpktResult::Incomplete { needed } => {
                assert!(needed > 0 && input.len() + needed <= TPKT_MAX_LEN);
                return packets;
            }
            TpktResult::Invalid(e) => {
                let _ = (e.to_string(), e.as_str());
                // Skip at least one byte, as a dissector must, so this always terminates.
                match find_tpkt_resync(&input[1..]) {
                    Some(offset) => input = &input[1 + offset..],
                    None => return packets,
                }
            }
        }
    }
}

/// Wraps an S7 payload in TPKT and a class 0 DT with EOT.
fn tpkt_dt(payload: &[u8], eot: bool) -> Vec<u8> {
    let length = u16::try_from(TPKT_HEADER_LEN + 3 + payload.len()).unwrap();
    let mut bytes = TpktHeader {
        version: TPKT_VERSION,
        reserved: 0,
        length,
    }
    .to_bytes()
    .to_vec();
    bytes.extend_from_slice(&[0x02, 0xF0, if eot { 0x80 } else { 0x00 }]);
    bytes.extend_from_slice(payload);
    bytes
}

/// An S7comm PDU with consistent header lengths around arbitrary parameters and data.
fn s7_pdu(rosctr: u8, pdu_ref: u16, params: &[u8], data: &[u8]) -> Vec<u8> {
    let mut pdu = vec![S7COMM_PROTOCOL_ID, rosctr, 0, 0];
    pdu.extend_from_slice(&pdu_ref.to_be_bytes());
    pdu.extend_from_slice(&u16::try_from(params.len()).unwrap().to_be_bytes());
    pdu.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    if rosctr == 2 || rosctr == 3 {
        pdu.extend_from_slice(&[0, 0]);
    }
    pdu.extend_from_slice(params);
    pdu.extend_from_slice(data);
    pdu
}

/// Functions with a decoder, to steer random parameters past the dispatch.
const FUNCTIONS: [u8; 12] = [
    0x00, 0x04, 0x05, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F, 0x28, 0x29, 0xF0,
];

fn s7any(area: u8, db: u16, byte: u32, bit: u8, size: u8, count: u16) -> Vec<u8> {
    let address = (byte << 3 | u32::from(bit & 7)).to_be_bytes();
    let mut spec = vec![0x12, 0x0A, 0x10, size];
    spec.extend_from_slice(&count.to_be_bytes());
    spec.extend_from_slice(&db.to_be_bytes());
    spec.push(area);
    spec.extend_from_slice(&address[1..]);
    spec
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        walk_stream(&bytes);
        if let Some(offset) = find_tpkt_resync(&bytes) {
            prop_assert!(offset + RESYNC_PROBE_LEN <= bytes.len());
            prop_assert!(!matches!(parse_tpkt(&bytes[offset..]), TpktResult::Invalid(_)));
        }
        let _ = parse_cotp(&bytes);
        walk_payload(&bytes);
        let mut s7 = vec![S7COMM_PROTOCOL_ID];
        s7.extend_from_slice(&bytes);
        walk_payload(&s7);
        s7[0] = S7PLUS_PROTOCOL_ID;
        walk_payload(&s7);
        walk_plus_payload(&bytes);
    }

    /// Requests of small counts and VLQs, which arbitrary bytes seldom make: object id 0 or
    /// not, then VLQ-shaped bytes.
    #[test]
    fn s7plus_targets_end_within_their_bytes(
        object in prop_oneof![Just(0u32), any::<u32>()],
        counts in vec(0u8..6, 2),
        vlqs in vec(prop_oneof![0u8..0x80, 0x80u8..=0xff], 0..80),
    ) {
        let mut b = object.to_be_bytes().to_vec();
        b.extend(counts);
        b.extend(vlqs);
        walk_plus_payload(&b);
    }

    #[test]
    fn framed_random_s7_pdus_never_panic(
        rosctr in prop::sample::select(&[1u8, 2, 3, 7][..]),
        pdu_ref in any::<u16>(),
        function in prop::sample::select(&FUNCTIONS[..]),
        params in vec(any::<u8>(), 0..40),
        data in vec(any::<u8>(), 0..60),
    ) {
        let mut p = vec![function];
        p.extend_from_slice(&params);
        let pdu = s7_pdu(rosctr, pdu_ref, &p, &data);
        walk_payload(&pdu);
        // Userdata: a plausible parameter head and random data.
        let mut ud = vec![0x00, 0x01, 0x12, 0x04, 0x11];
        ud.extend(params.iter().take(3).copied());
        while ud.len() < 8 {
            ud.push(0x01);
        }
        let mut ud_data = vec![0xFF, 0x09];
        ud_data.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        ud_data.extend_from_slice(&data);
        walk_payload(&s7_pdu(7, pdu_ref, &ud, &ud_data));
        let stream = tpkt_dt(&pdu, true);
        prop_assert_eq!(walk_stream(&stream), 1);
    }

    #[test]
    fn read_var_round_trip(
        items in vec((prop::sample::select(&[0x81u8, 0x82, 0x83, 0x84, 0x1C, 0x1D][..]),
                      any::<u16>(), 0u32..0x1F_FFFF, 0u8..8, 1u8..=8, 1u16..200), 1..20),
    ) {
        let mut params = vec![0x04, u8::try_from(items.len()).unwrap()];
        for &(area, db, byte, bit, size, count) in &items {
            params.extend(s7any(area, db, byte, bit, size, count));
        }
        let pdu = s7_pdu(1, 1, &params, &[]);
        walk_payload(&pdu);
        let decoded = parse_s7comm(&pdu).unwrap();
        let S7Body::ReadVarRequest { items: specs } = decoded.body else {
            return Err(TestCaseError::fail(format!("{decoded:?}")));
        };
        let got: Vec<_> = specs
            .iter()
            .map(|s| s.any().map(|a| (a.area.0, a.db, a.byte_address(), a.bit(), a.transport_size.0, a.count)))
            .collect();
        // Timers and counters are numbered: the 24 bits are the number.
        let want: Vec<_> = items
            .iter()
            .map(|&(area, db, byte, bit, size, count)| match area {
                0x1C | 0x1D => Some((area, db, byte << 3 | u32::from(bit), 0, size, count)),
                _ => Some((area, db, byte, bit, size, count)),
            })
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn read_response_round_trip(values in vec(vec(any::<u8>(), 0..12), 1..12)) {
        // Octet strings (byte lengths) and byte/word/dword items (bit lengths), padded.
        let mut data = Vec::new();
        for (i, value) in values.iter().enumerate() {
            let bits = i % 2 == 0;
            data.push(0xFF);
            data.push(if bits { 0x04 } else { 0x09 });
            let length = if bits { value.len() * 8 } else { value.len() };
            data.extend_from_slice(&u16::try_from(length).unwrap().to_be_bytes());
            data.extend_from_slice(value);
            if value.len() % 2 == 1 && i + 1 < values.len() {
                data.push(0);
            }
        }
        let params = [0x04, u8::try_from(values.len()).unwrap()];
        let pdu = s7_pdu(3, 9, &params, &data);
        walk_payload(&pdu);
        let decoded = parse_s7comm(&pdu).unwrap();
        let S7Body::ReadVarResponse { items } = decoded.body else {
            return Err(TestCaseError::fail(format!("{decoded:?}")));
        };
        let got: Vec<Vec<u8>> = items.iter().map(|i| i.data.to_vec()).collect();
        prop_assert_eq!(got, values);
    }

    #[test]
    fn split_tpkt_is_incomplete_until_whole(
        payload in vec(any::<u8>(), 0..300),
        cut in any::<prop::sample::Index>(),
    ) {
        let stream = tpkt_dt(&payload, true);
        let cut = cut.index(stream.len());
        match parse_tpkt(&stream[..cut]) {
            TpktResult::Incomplete { needed } => {
                prop_assert!(needed >= 1 && cut + needed <= stream.len().max(TPKT_MIN_LEN));
                if cut >= 4 {
                    prop_assert_eq!(cut + needed, stream.len());
                }
            }
            other => prop_assert!(false, "cut at {}: {:?}", cut, other),
        }
    }

    #[test]
    fn cotp_reassembly_round_trip(
        tsdus in vec((vec(any::<u8>(), 0..400), vec(any::<prop::sample::Index>(), 0..6)), 1..6),
    ) {
        let mut reassembler = CotpReassembler::new();
        for (tsdu, cuts) in &tsdus {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(tsdu.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts {
                pieces.push(&tsdu[start..cut]);
                start = cut;
            }
            pieces.push(&tsdu[start..]);
            // Through TPKT and COTP, as on the wire.
            let mut stream = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                stream.extend(tpkt_dt(piece, i + 1 == pieces.len()));
            }
            let mut rest = &stream[..];
            let mut out = None;
            while let TpktResult::Complete { tpkt, consumed } = parse_tpkt(rest) {
                let tpdu = parse_cotp(tpkt.tpdu).unwrap();
                let (payload, eot) = tpdu.body.data().unwrap();
                match reassembler.push(payload, eot) {
                    Reassembled::Complete(whole) => out = Some(whole.to_vec()),
                    Reassembled::InProgress => prop_assert!(!eot),
                    Reassembled::Discarded(reason) => prop_assert!(false, "{:?}", reason),
                }
                rest = &rest[consumed..];
            }
            prop_assert!(rest.is_empty());
            prop_assert_eq!(out.as_ref(), Some(tsdu));
            prop_assert_eq!(reassembler.buffered(), 0);
        }
    }

    #[test]
    fn reassembly_stays_within_its_bound(
        pieces in vec((vec(any::<u8>(), 0..300), any::<bool>()), 1..60),
        limit in 0usize..2000,
    ) {
        let mut reassembler = CotpReassembler::with_limit(limit);
        for (piece, eot) in &pieces {
            match reassembler.push(piece, *eot) {
                Reassembled::Complete(tsdu) => prop_assert!(tsdu.len() <= limit),
                Reassembled::InProgress => prop_assert!(!*eot),
                Reassembled::Discarded(_) => {}
            }
            prop_assert!(reassembler.buffered() <= limit);
        }
    }

    #[test]
    fn resync_finds_a_packet_behind_garbage(
        garbage in vec(any::<u8>(), 0..100),
        payload in vec(any::<u8>(), 0..50),
    ) {
        let mut stream = garbage.clone();
        stream.extend(tpkt_dt(&payload, true));
        let found = find_tpkt_resync(&stream);
        prop_assert!(matches!(found, Some(offset) if offset <= garbage.len()), "{:?}", found);
    }
}
