//! Fuzzes every public IEC 60870-5-104 entry point: APDU framing with resynchronisation as a
//! dissector drives it, the ASDU of every I frame with its information objects walked and every
//! element decoded; the raw input also goes straight to the ASDU parser and to the element
//! decoder of every type id, so they see what framing would not let through. Any panic is a
//! bug: the parser promises to be panic-free on arbitrary input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_parsers::iec104::{
    decode_element, find_resync, parse_apdu, parse_asdu, Framed, TypeId, MAX_LEN, MIN_LEN,
};

fuzz_target!(|data: &[u8]| {
    walk_stream(data);
    walk_asdu(data);
    for t in 0..=255u8 {
        let _ = decode_element(TypeId(t), data);
    }
});

fn walk_stream(mut input: &[u8]) {
    loop {
        match parse_apdu(input) {
            Framed::Complete { apdu, consumed } => {
                assert!(consumed >= 2 + MIN_LEN && consumed <= 2 + MAX_LEN);
                assert!(consumed <= input.len());
                let _ = apdu.apci.format();
                if !apdu.asdu.is_empty() {
                    walk_asdu(apdu.asdu);
                }
                input = &input[consumed..];
            }
            Framed::Incomplete { needed } => {
                assert!(needed > input.len() && needed <= 2 + MAX_LEN);
                return;
            }
            Framed::Invalid { error, skip } => {
                let _ = error.reason();
                assert!(skip >= 1);
                match find_resync(input, 1) {
                    Some(offset) => {
                        assert!(offset >= 1 && offset < input.len());
                        input = &input[offset..];
                    }
                    None => return,
                }
            }
        }
    }
}

fn walk_asdu(bytes: &[u8]) {
    let Ok(asdu) = parse_asdu(bytes) else { return };
    let _ = (asdu.type_id.name(), asdu.cause.name());
    let mut n = 0;
    for o in asdu.objects() {
        n += 1;
        assert!(o.ioa <= 0x00ff_ffff);
        if asdu.type_id.element_len().is_some() {
            assert!(decode_element(asdu.type_id, o.element).is_some());
        }
    }
    assert!(n <= usize::from(asdu.count));
}
