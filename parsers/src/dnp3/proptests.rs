//! Properties over arbitrary and generated input: nothing panics, framing arithmetic holds,
//! every iterator walks to its end within its bounds, and built frames round-trip.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Walks every object and point of a fragment, checking the walk's own bookkeeping.
fn walk_fragment(fragment: &[u8]) {
    let Ok(app) = parse_app_fragment(fragment) else {
        assert!(fragment.len() < 4);
        return;
    };
    let _ = (
        app.function.name(),
        app.function.to_string(),
        app.control.seq(),
    );
    if let Some(iin) = app.iin {
        assert!(iin.names().count() <= 16);
        let _ = iin.to_string();
    }
    let mut expected_offset = app.header_len();
    let mut walk = app.objects();
    for result in walk.by_ref() {
        match result {
            Ok(object) => {
                assert_eq!(object.offset, expected_offset);
                expected_offset += object.wire_len();
                assert!(expected_offset <= fragment.len());
                let mut points = 0usize;
                for point in object.points() {
                    points += 1;
                    let _ = point.time.and_then(|t| t.absolute_ms());
                    if let PointValue::Analog { value, .. } = point.value {
                        let _ = value.as_f64();
                    }
                }
                // Packed bits are the densest encoding: never more points than data bits.
                assert!(points <= object.data().len() * 8, "{object:?}");
                if object.has_values() {
                    assert!(object.count().is_some_and(|c| c == points as u64));
                }
            }
            Err(error) => {
                assert!(error.offset() == expected_offset, "{error:?}");
                let _ = (error.to_string(), error.as_str(), error.object());
            }
        }
    }
    assert!(walk.next().is_none(), "fused after the end or an error");
}

/// Frames a stream as a dissector would and feeds the segments through one reassembler.
fn walk_stream(mut input: &[u8]) {
    let mut reassembler = TransportReassembler::with_max_fragment_len(600);
    loop {
        match parse_link_frame(input) {
            LinkResult::Complete { frame, consumed } => {
                assert_eq!(consumed, frame.header.frame_len());
                assert!(consumed <= input.len() && consumed <= MAX_LINK_FRAME_LEN);
                let mut buf = [0; MAX_USER_DATA_LEN];
                let data = frame.user_data_into(&mut buf);
                assert_eq!(data.len(), frame.user_data_len());
                if let Some(contiguous) = frame.contiguous_user_data() {
                    assert_eq!(contiguous, data);
                }
                assert_eq!(frame.data_crc_ok, frame.blocks().all(|block| block.crc_ok));
                let _ = (frame.function().name(), frame.carries_user_data());
                if let Some(fragment) = reassembler.push(data).fragment() {
                    walk_fragment(fragment);
                }
                assert!(reassembler.pending_len() <= reassembler.max_fragment_len());
                input = &input[consumed..];
            }
            LinkResult::Incomplete { needed } => {
                assert!(needed > 0 && input.len() + needed <= MAX_LINK_FRAME_LEN);
                return;
            }
            LinkResult::Invalid(error) => {
                let _ = (error.to_string(), error.as_str());
                // Skip at least one octet, as a dissector must, so this always terminates.
                match find_link_resync(&input[1..]) {
                    Some(offset) => {
                        let rest = &input[1 + offset..];
                        assert!(!matches!(parse_link_frame(rest), LinkResult::Invalid(_)));
                        input = rest;
                    }
                    None => return,
                }
            }
        }
    }
}

/// Object headers the table knows, so random bodies get past the size lookup.
fn known_object() -> impl Strategy<Value = (u8, u8)> {
    let known: Vec<(u8, u8)> = (0..=u8::MAX)
        .flat_map(|g| (0..=u8::MAX).map(move |v| (g, v)))
        .filter(|&(g, v)| object_type(g, v).is_some())
        .collect();
    prop::sample::select(known)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..700)) {
        walk_stream(&bytes);
        walk_fragment(&bytes);
        if let Some(offset) = find_link_resync(&bytes) {
            prop_assert!(offset < bytes.len());
            prop_assert!(!matches!(parse_link_frame(&bytes[offset..]), LinkResult::Invalid(_)));
        }
        let mut reassembler = TransportReassembler::new();
        for segment in bytes.chunks(97) {
            let _ = reassembler.push(segment);
            prop_assert!(reassembler.buffer_capacity() <= DEFAULT_MAX_FRAGMENT_LEN);
        }
    }

    #[test]
    fn random_objects_in_every_function_never_panic(
        function in any::<u8>(),
        headers in vec((known_object(), any::<u8>(), vec(any::<u8>(), 0..24)), 1..6),
    ) {
        let mut fragment = vec![0xC0, function];
        if function >= 129 {
            fragment.extend_from_slice(&[0x00, 0x00]);
        }
        for ((group, variation), qualifier, body) in &headers {
            // Keep the qualifier's reserved bits mostly clear, so most headers get walked.
            let qualifier = if *qualifier & 0x80 != 0 { *qualifier & 0x7F } else { *qualifier };
            fragment.extend_from_slice(&[*group, *variation, qualifier]);
            fragment.extend_from_slice(body);
        }
        walk_fragment(&fragment);
    }

    #[test]
    fn link_frames_round_trip(
        control in any::<u8>(),
        destination in any::<u16>(),
        source in any::<u16>(),
        user_data in vec(any::<u8>(), 0..=MAX_USER_DATA_LEN),
        tail in vec(any::<u8>(), 0..20),
    ) {
        let mut out = [0; MAX_LINK_FRAME_LEN];
        let frame = encode_link_frame(LinkControl(control), destination, source, &user_data, &mut out)
            .expect("fits");
        let frame_len = frame.len();
        prop_assert_eq!(
            frame_len,
            10 + user_data.len() + 2 * user_data.len().div_ceil(16)
        );
        let mut stream = frame.to_vec();
        stream.extend_from_slice(&tail);
        let LinkResult::Complete { frame, consumed } = parse_link_frame(&stream) else {
            return Err(TestCaseError::fail("not complete"));
        };
        prop_assert_eq!(consumed, frame_len);
        prop_assert!(frame.data_crc_ok);
        prop_assert_eq!(frame.header.control, LinkControl(control));
        prop_assert_eq!((frame.header.destination, frame.header.source), (destination, source));
        let mut buf = [0; MAX_USER_DATA_LEN];
        prop_assert_eq!(frame.user_data_into(&mut buf), &user_data[..]);
        prop_assert_eq!(find_link_resync(&stream), Some(0));
        // Every cut of the frame is incomplete by exactly what is missing (once the length
        // octet is there).
        for cut in 3..frame_len {
            prop_assert_eq!(
                parse_link_frame(&stream[..cut]),
                LinkResult::Incomplete { needed: frame_len - cut }
            );
        }
    }

    #[test]
    fn any_flipped_octet_is_caught(
        user_data in vec(any::<u8>(), 1..=MAX_USER_DATA_LEN),
        at in any::<prop::sample::Index>(),
        flip in 1..=u8::MAX,
    ) {
        let mut out = [0; MAX_LINK_FRAME_LEN];
        let mut frame = encode_link_frame(LinkControl(0x44), 1, 10, &user_data, &mut out)
            .expect("fits")
            .to_vec();
        let at = at.index(frame.len());
        frame[at] ^= flip;
        // A CRC-16 catches every burst of up to 16 bits: a changed header octet makes the
        // front invalid, a changed data or block CRC octet flags the frame.
        match parse_link_frame(&frame) {
            LinkResult::Invalid(_) => prop_assert!(at < LINK_HEADER_LEN),
            LinkResult::Complete { frame: parsed, consumed } => {
                prop_assert!(at >= LINK_HEADER_LEN);
                prop_assert_eq!(consumed, frame.len());
                prop_assert!(!parsed.data_crc_ok);
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    #[test]
    fn segmented_fragments_reassemble(
        fragment in vec(any::<u8>(), 0..2048),
        first_seq in 0..64u8,
        segment_len in 1..=MAX_SEGMENT_PAYLOAD,
    ) {
        let mut reassembler = TransportReassembler::new();
        let pieces: Vec<&[u8]> = if fragment.is_empty() {
            vec![&[]]
        } else {
            fragment.chunks(segment_len).collect()
        };
        let mut seq = first_seq;
        let mut result = None;
        for (i, piece) in pieces.iter().enumerate() {
            let mut header = seq;
            if i == 0 {
                header |= TransportHeader::FIR;
            }
            if i + 1 == pieces.len() {
                header |= TransportHeader::FIN;
            }
            let mut segment = vec![header];
            segment.extend_from_slice(piece);
            match reassembler.push(&segment) {
                TransportOutcome::Complete { fragment, segments, discarded } => {
                    prop_assert_eq!(segments, pieces.len());
                    prop_assert_eq!(discarded, None);
                    result = Some(fragment.to_vec());
                }
                TransportOutcome::InProgress { segments, .. } => prop_assert_eq!(segments, i + 1),
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
            seq = (seq + 1) & 0x3F;
        }
        prop_assert_eq!(result, Some(fragment));
        prop_assert!(reassembler.buffer_capacity() <= DEFAULT_MAX_FRAGMENT_LEN);
    }

    #[test]
    fn resync_finds_a_frame_behind_garbage(
        garbage in vec(any::<u8>(), 0..100),
        user_data in vec(any::<u8>(), 0..40),
    ) {
        let mut out = [0; MAX_LINK_FRAME_LEN];
        let frame = encode_link_frame(LinkControl(0xC4), 10, 1, &user_data, &mut out).unwrap();
        let mut stream = garbage.clone();
        stream.extend_from_slice(frame);
        let found = find_link_resync(&stream);
        prop_assert!(matches!(found, Some(offset) if offset <= garbage.len()), "{:?}", found);
    }
}
