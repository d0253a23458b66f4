//! Fuzzes every public DNP3 entry point: link framing with resynchronisation as a dissector
//! drives it, transport reassembly of the framed segments, and application parsing with every
//! object and point iterator walked to its end; the raw input also goes straight to the
//! reassembler and the application parser, so they see what framing would not let through.
//! Any panic is a bug: the parsers promise to be panic-free on arbitrary input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_parsers::dnp3::{
    find_link_resync, parse_app_fragment, parse_link_frame, LinkResult, PointValue,
    TransportReassembler, MAX_LINK_FRAME_LEN, MAX_USER_DATA_LEN,
};

fuzz_target!(|data: &[u8]| {
    walk_stream(data);
    walk_fragment(data);
    // The input as a run of transport segments (the first octet sets their length), through
    // a reassembler with a small bound so that overflow is reached too.
    if let Some((&len, rest)) = data.split_first() {
        let mut reassembler = TransportReassembler::with_max_fragment_len(300);
        for segment in rest.chunks(usize::from(len).max(1)) {
            if let Some(fragment) = reassembler.push(segment).fragment() {
                walk_fragment(fragment);
            }
            assert!(reassembler.buffer_capacity() <= reassembler.max_fragment_len());
        }
    }
});

fn walk_stream(mut input: &[u8]) {
    let mut reassembler = TransportReassembler::new();
    loop {
        match parse_link_frame(input) {
            LinkResult::Complete { frame, consumed } => {
                assert!(consumed <= input.len() && consumed <= MAX_LINK_FRAME_LEN);
                assert_eq!(consumed, frame.header.frame_len());
                let mut buf = [0; MAX_USER_DATA_LEN];
                let user_data = frame.user_data_into(&mut buf);
                assert_eq!(user_data.len(), frame.user_data_len());
                if let Some(contiguous) = frame.contiguous_user_data() {
                    assert_eq!(contiguous, user_data);
                }
                assert_eq!(frame.data_crc_ok, frame.blocks().all(|block| block.crc_ok));
                let _ = (frame.function().name(), frame.carries_user_data());
                let outcome = reassembler.push(user_data);
                let _ = outcome.discard().map(|discard| discard.reason.as_str());
                if let Some(fragment) = outcome.fragment() {
                    walk_fragment(fragment);
                }
                input = &input[consumed..];
            }
            LinkResult::Incomplete { needed } => {
                assert!(needed > 0 && input.len() + needed <= MAX_LINK_FRAME_LEN);
                return;
            }
            LinkResult::Invalid(error) => {
                let _ = (error.to_string(), error.as_str());
                // Skip at least one octet, as a dissector must, then look for a new start.
                let Some(rest) = input.get(1..) else { return };
                match find_link_resync(rest) {
                    Some(offset) => {
                        assert!(offset < rest.len());
                        input = &rest[offset..];
                        assert!(!matches!(parse_link_frame(input), LinkResult::Invalid(_)));
                    }
                    None => return,
                }
            }
        }
    }
}

/// Touches every accessor and runs every iterator to its end, checking the walk's bookkeeping.
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
        let _ = (iin.names().count(), iin.to_string());
    }
    let mut offset = app.header_len();
    for result in app.objects() {
        match result {
            Ok(object) => {
                assert_eq!(object.offset, offset);
                offset += object.wire_len();
                assert!(offset <= fragment.len());
                let mut points = 0usize;
                for point in object.points() {
                    points += 1;
                    let _ = point.time.and_then(|time| time.absolute_ms());
                    if let PointValue::Analog { value, .. } = point.value {
                        let _ = value.as_f64();
                    }
                }
                assert!(points <= object.data().len() * 8);
            }
            Err(error) => {
                assert_eq!(error.offset(), offset);
                let _ = (error.to_string(), error.as_str(), error.object());
            }
        }
    }
}
