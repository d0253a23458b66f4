//! Properties over arbitrary and generated input: nothing panics, framing arithmetic holds, and
//! well-formed ASDUs of every standard type decode to as many objects as they declare.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Frames a stream to its end the way the dissector does, checking the arithmetic.
fn walk_stream(mut buf: &[u8]) {
    while !buf.is_empty() {
        match parse_apdu(buf) {
            Framed::Complete { apdu, consumed } => {
                assert!(consumed >= 2 + MIN_LEN && consumed <= buf.len());
                if let Ok(asdu) = parse_asdu(apdu.asdu) {
                    for o in asdu.objects() {
                        assert!(o.ioa <= 0x00ff_ffff);
                        let _ = decode_element(asdu.type_id, o.element);
                    }
                }
                buf = &buf[consumed..];
            }
            Framed::Incomplete { needed } => {
                assert!(needed > buf.len());
                return;
            }
            Framed::Invalid { skip, .. } => {
                assert!(skip >= 1);
                let next = find_resync(buf, 1).unwrap_or(buf.len());
                assert!(next >= 1);
                buf = &buf[next.min(buf.len())..];
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_streams_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        walk_stream(&bytes);
    }

    #[test]
    fn arbitrary_asdus_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        if let Ok(a) = parse_asdu(&bytes) {
            let n = a.objects().count();
            if a.type_id.spec().is_some() && a.type_id.spec().map(|s| s.layout) != Some(Layout::Segment) {
                prop_assert_eq!(n, usize::from(a.count));
            }
        }
        for t in 0..=255u8 {
            let _ = decode_element(TypeId(t), &bytes);
        }
    }

    /// A well-formed I frame of any standard type (but segments), with SQ or not, frames whole
    /// and yields its declared objects, each decoding.
    #[test]
    fn well_formed_frames_round_trip(
        t in prop::sample::select((0..=255u8).filter(|t| TypeId(*t).element_len().is_some()).collect::<Vec<_>>()),
        sequence in any::<bool>(),
        count in 1u8..8,
        fill in any::<u8>(),
        tx in 0u16..SEQ_MODULO,
        rx in 0u16..SEQ_MODULO,
    ) {
        let size = TypeId(t).element_len().unwrap_or(0);
        let objects = if sequence { IOA_LEN + usize::from(count) * size } else { usize::from(count) * (IOA_LEN + size) };
        prop_assume!(ASDU_HEADER + objects + 4 <= MAX_LEN);
        let mut asdu = vec![t, count | if sequence { 0x80 } else { 0 }, 6, 0, 1, 0];
        asdu.extend(std::iter::repeat_n(fill, objects));
        let len = 4 + asdu.len();
        let mut frame = vec![START, len as u8, (tx << 1) as u8, (tx >> 7) as u8, (rx << 1) as u8, (rx >> 7) as u8];
        frame.extend_from_slice(&asdu);
        let Framed::Complete { apdu, consumed } = parse_apdu(&frame) else { panic!("not framed") };
        prop_assert_eq!(consumed, frame.len());
        prop_assert_eq!(apdu.apci, Apci::I { tx_seq: tx, rx_seq: rx });
        let a = parse_asdu(apdu.asdu).expect("well-formed");
        prop_assert_eq!(a.objects().count(), usize::from(count));
        for o in a.objects() {
            prop_assert!(decode_element(a.type_id, o.element).is_some());
        }
    }
}
