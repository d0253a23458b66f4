//! DNP3 (IEEE 1815-2012): pure, zero-copy, panic-free parsing of the data link layer, the
//! transport function and the application layer.
//!
//! Layers, from the TCP/UDP byte stream inwards:
//! - [`parse_link_frame`] frames one data link frame (header CRC checked, data blocks CRC
//!   checked but not rejected) at the front of the stream in the streaming style (complete +
//!   consumed, incomplete + needed, invalid); [`find_link_resync`] finds where framing can
//!   restart after a gap or garbage. [`LinkFrame::user_data_into`] strips the block CRCs into a
//!   caller buffer; [`LinkFrame::contiguous_user_data`] borrows them when the frame has a
//!   single block.
//! - [`TransportReassembler`] (one per link source, destination and direction; the caller keeps
//!   the map) turns transport segments into application fragments under a byte bound.
//! - [`parse_app_fragment`] reads the application header ([`AppControl`], [`AppFunction`],
//!   [`Iin`] on responses) and hands out [`Objects`], a validating iterator over the object
//!   headers; each [`Object`] walks its [`Points`]. Object sizes come from one table,
//!   [`object_type`].
//!
//! Code points stay open ([`AppFunction`], [`PrimaryFunction`], [`CommandStatus`]...): an
//! unknown value survives into events. Nothing allocates except the reassembler's fragment
//! buffer, which multi-segment fragments need by nature.
//!
//! Choices where the standard leaves room, or where tshark reads otherwise:
//! - A bad header CRC makes the front of the stream invalid (that is how resync tells a frame
//!   from noise); a bad data block CRC does not: the frame is complete and flagged.
//! - Transport sequence numbers wrap modulo 64 (tshark fails to reassemble across the wrap).
//! - Qualifier range codes 3-5 are start *and* stop virtual addresses, as IEEE 1815-2012 says
//!   (tshark reads one "absolute address" field, the DNP 3.00 Basic 4 reading). Prefix and
//!   range codes combine mechanically; reserved codes and bit 7 are errors for the header.
//! - An object size prefix means data follows whatever the function (a read of g70v5 carries
//!   its handle and block); otherwise read, freeze, assign class and unsolicited control name
//!   points only, and function codes without a definition are assumed to carry data.
//! - Objects whose size is unknown stop the walk ([`ObjectError::UnknownObject`]) only when
//!   data must be skipped; variation 0 of g110-g113 never carries data, which rules out
//!   zero-length objects (a write of g112v0 over 0..65535 would otherwise be 65536 points).
//!
//! References cited in comments: "§x" and "clause x" are clauses of IEEE 1815-2012 (4: the
//! application layer, 8: the transport function, 9: the data link layer); objects are named
//! "gGvV" (group G, variation V) as in its Annex A.

mod app;
mod codes;
mod crc;
mod link;
mod objects;
mod points;
#[cfg(test)]
mod proptests;
mod table;
mod transport;

pub use app::{parse_app_fragment, AppControl, AppError, AppFragment, Iin, IinNames};
pub use codes::{
    AppFunction, CommandStatus, ControlCode, DoubleBitState, Flags, LinkFunction, PrimaryFunction,
    SecondaryFunction,
};
pub use crc::{crc16, crc_matches};
pub use link::{
    encode_link_frame, find_link_resync, parse_link_frame, DataBlock, DataBlocks, LinkControl,
    LinkError, LinkFrame, LinkHeader, LinkResult,
};
pub use objects::{Object, ObjectError, ObjectHeader, Objects, PrefixCode, Qualifier, Range};
pub use points::{
    AnalogValue, Crob, FileAuthentication, FileCommand, FileCommandStatus, FileDescriptor,
    FileTransport, FileTransportStatus, Point, PointValue, Points, Timestamp,
};
pub use table::{object_type, NumKind, ObjectSize, ObjectType, TimeField, ValueKind};
pub use transport::{
    Discard, DiscardReason, TransportHeader, TransportOutcome, TransportReassembler,
    DEFAULT_MAX_FRAGMENT_LEN, MAX_FRAGMENT_LEN_LIMIT, MIN_FRAGMENT_LEN_LIMIT,
};

/// Registered TCP and UDP port of DNP3 (IEEE 1815-2012 Annex E, IANA "dnp").
pub const DEFAULT_PORT: u16 = 20000;

/// The two start octets of every data link frame (clause 9).
pub const LINK_START: [u8; 2] = [0x05, 0x64];
/// Start, length, control, destination, source and the header CRC.
pub const LINK_HEADER_LEN: usize = 10;
/// Smallest length field: control, destination and source, no user data.
pub const MIN_LINK_LENGTH: u8 = 5;
/// Most user data one frame carries: 255 (largest length) minus the five header octets the
/// length counts.
pub const MAX_USER_DATA_LEN: usize = 250;
/// User data travels in blocks of up to this many octets, each followed by its CRC.
pub const LINK_BLOCK_LEN: usize = 16;
/// A CRC on the wire, least significant octet first.
pub const CRC_LEN: usize = 2;
/// Largest frame on the wire: header, 250 octets of user data and 16 block CRCs.
pub const MAX_LINK_FRAME_LEN: usize =
    LINK_HEADER_LEN + MAX_USER_DATA_LEN + CRC_LEN * MAX_USER_DATA_LEN.div_ceil(LINK_BLOCK_LEN);
const _: () = assert!(MAX_LINK_FRAME_LEN == 292);
/// The transport header: one octet in front of every segment (clause 8).
pub const TRANSPORT_HEADER_LEN: usize = 1;
/// Most application octets one segment carries.
pub const MAX_SEGMENT_PAYLOAD: usize = MAX_USER_DATA_LEN - TRANSPORT_HEADER_LEN;

/// Byte offsets of every fixed field, smoltcp style: a parser checks a length once (or reads
/// through `get`) and then names fields instead of doing arithmetic on the fly.
mod field {
    use core::ops::Range;

    pub type Field = Range<usize>;

    // Data link header (clause 9).
    pub const START: Field = 0..2;
    /// Counts control, destination, source and user data; not the CRCs.
    pub const LENGTH: usize = 2;
    pub const CONTROL: usize = 3;
    pub const DESTINATION: Field = 4..6;
    pub const SOURCE: Field = 6..8;
    /// Covers the eight octets before it.
    pub const HEADER_CRC: Field = 8..10;

    // Application header (§4.2.2): control, function, then IIN on responses only.
    pub const APP_CONTROL: usize = 0;
    pub const APP_FUNCTION: usize = 1;
    pub const IIN: Field = 2..4;
    pub const REQUEST_HEADER_LEN: usize = 2;
    pub const RESPONSE_HEADER_LEN: usize = 4;

    // Object header (§4.2.2.7): group, variation, qualifier, then a range field whose length
    // the qualifier says.
    pub const GROUP: usize = 0;
    pub const VARIATION: usize = 1;
    pub const QUALIFIER: usize = 2;
    pub const RANGE: usize = 3;
}

/// Reads the little-endian `N` octets at `at` (DNP3 is little-endian throughout).
fn le<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..)?.first_chunk().copied()
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    le(bytes, at).map(u16::from_le_bytes)
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    le(bytes, at).map(u32::from_le_bytes)
}

/// DNP3 time ("DNP3TIME"): milliseconds since 1970-01-01 UTC in 48 bits.
fn le_u48(bytes: &[u8], at: usize) -> Option<u64> {
    let [a, b, c, d, e, f] = le::<6>(bytes, at)?;
    Some(u64::from_le_bytes([a, b, c, d, e, f, 0, 0]))
}

/// Fixture helpers: captures are cited as tshark prints them (`-e tcp.payload`), in hex.
#[cfg(test)]
pub(crate) mod testutil {
    /// The octets of a hex string, at compile time; a malformed string fails the build.
    pub(crate) const fn hex<const N: usize>(s: &str) -> [u8; N] {
        const fn nibble(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("not a hex digit"),
            }
        }
        let s = s.as_bytes();
        assert!(
            s.len() == 2 * N,
            "hex string length does not match the array"
        );
        let mut out = [0; N];
        let mut i = 0;
        while i < N {
            out[i] = nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]);
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    //! Across the layers: link frames to transport segments to application fragments to
    //! points, as a dissector drives them.

    use super::testutil::hex;
    use super::*;

    // dnp3_udp_select_operate.pcap (Zeek test trace, DNP3 over UDP) frames 6, 7 and 8:
    // outstation 1 answers master 100's read with one fragment in three segments (transport
    // 0x72: FIR seq 50; 0x33: seq 51; 0xB4: FIN seq 52): IIN 0x9000 and 512 binary output
    // statuses (g10v2, qualifier 0x01, 0..511). tshark: point 1 on, the rest off, all online.
    static SEGMENT_1: [u8; 292] = hex(concat!(
        "0564ff4464000100ff2f72cb8190000a02010000ff0101810101bcb801010101010101010101010101010101",
        "bbc301010101010101010101010101010101bbc301010101010101010101010101010101bbc3010101010101",
        "01010101010101010101bbc301010101010101010101010101010101bbc30101010101010101010101010101",
        "0101bbc301010101010101010101010101010101bbc301010101010101010101010101010101bbc301010101",
        "010101010101010101010101bbc301010101010101010101010101010101bbc3010101010101010101010101",
        "01010101bbc301010101010101010101010101010101bbc301010101010101010101010101010101bbc30101",
        "0101010101010101010101010101bbc3010101010101010101018d7b"
    ));
    static SEGMENT_2: [u8; 292] = hex(concat!(
        "0564ff4464000100ff2f330101010101010101010101010101013df501010101010101010101010101010101",
        "bbc301010101010101010101010101010101bbc301010101010101010101010101010101bbc3010101010101",
        "01010101010101010101bbc301010101010101010101010101010101bbc30101010101010101010101010101",
        "0101bbc301010101010101010101010101010101bbc301010101010101010101010101010101bbc301010101",
        "010101010101010101010101bbc301010101010101010101010101010101bbc3010101010101010101010101",
        "01010101bbc301010101010101010101010101010101bbc301010101010101010101010101010101bbc30101",
        "0101010101010101010101010101bbc3010101010101010101018d7b"
    ));
    static SEGMENT_3: [u8; 40] =
        hex("05641f44640001008361b4010101010101010101010101010101ec6f010101010101010101018d7b");

    /// One link frame's user data, CRCs stripped.
    fn user_data(frame: &[u8]) -> Vec<u8> {
        let LinkResult::Complete { frame, consumed } = parse_link_frame(frame) else {
            panic!("not a complete frame");
        };
        assert!(frame.data_crc_ok && frame.carries_user_data());
        assert_eq!((frame.header.source, frame.header.destination), (1, 100));
        let _ = consumed;
        let mut buf = [0; MAX_USER_DATA_LEN];
        frame.user_data_into(&mut buf).to_vec()
    }

    fn check_512_binary_outputs(fragment: &[u8]) {
        let app = parse_app_fragment(fragment).expect("application header");
        assert_eq!(app.function, AppFunction::RESPONSE);
        let iin = app.iin.expect("a response carries IIN");
        assert_eq!(
            iin.names().collect::<Vec<_>>(),
            ["need_time", "device_restart"]
        );
        let objects: Vec<Object<'_>> = app.objects().collect::<Result<_, _>>().unwrap();
        assert_eq!(objects.len(), 1);
        let outputs = &objects[0];
        assert_eq!((outputs.header.group, outputs.header.variation), (10, 2));
        assert_eq!(
            outputs.header.range,
            Range::StartStop {
                start: 0,
                stop: 511
            }
        );
        let mut count = 0;
        for point in outputs.points() {
            let PointValue::Binary {
                flags: Some(flags),
                state,
            } = point.value
            else {
                panic!("{point:?}");
            };
            assert_eq!(point.index, count);
            assert!(flags.online());
            assert_eq!(state, point.index == 1);
            count += 1;
        }
        assert_eq!(count, 512);
    }

    #[test]
    fn response_in_three_segments() {
        let segments = [
            user_data(&SEGMENT_1),
            user_data(&SEGMENT_2),
            user_data(&SEGMENT_3),
        ];
        assert_eq!(
            segments.iter().map(Vec::len).collect::<Vec<_>>(),
            [250, 250, 26]
        );
        let mut reassembler = TransportReassembler::new();
        assert!(matches!(
            reassembler.push(&segments[0]),
            TransportOutcome::InProgress {
                len: 249,
                segments: 1,
                discarded: None
            }
        ));
        assert!(matches!(
            reassembler.push(&segments[1]),
            TransportOutcome::InProgress {
                len: 498,
                segments: 2,
                discarded: None
            }
        ));
        let outcome = reassembler.push(&segments[2]);
        let TransportOutcome::Complete {
            fragment,
            segments: 3,
            discarded: None,
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        assert_eq!(fragment.len(), 523);
        check_512_binary_outputs(fragment);
    }

    #[test]
    fn lost_segment_loses_the_fragment() {
        let mut reassembler = TransportReassembler::new();
        let first = user_data(&SEGMENT_1);
        let last = user_data(&SEGMENT_3);
        let _ = reassembler.push(&first);
        assert_eq!(
            reassembler.push(&last),
            TransportOutcome::Discarded(Discard {
                reason: DiscardReason::SequenceError,
                octets: 249 + 25
            })
        );
    }

    /// The three frames as one byte stream, cut into chunks of every size from 1 to 300: a
    /// dissector that keeps the unconsumed tail gets the same frames and the same fragment.
    #[test]
    fn streamed_in_any_chunking() {
        let stream = [&SEGMENT_1[..], &SEGMENT_2[..], &SEGMENT_3[..]].concat();
        for chunk in 1..=300 {
            let mut pending: Vec<u8> = Vec::new();
            let mut reassembler = TransportReassembler::new();
            let mut fragments = 0;
            for piece in stream.chunks(chunk) {
                pending.extend_from_slice(piece);
                loop {
                    match parse_link_frame(&pending) {
                        LinkResult::Complete { frame, consumed } => {
                            let mut buf = [0; MAX_USER_DATA_LEN];
                            let data = frame.user_data_into(&mut buf);
                            if let Some(fragment) = reassembler.push(data).fragment() {
                                check_512_binary_outputs(fragment);
                                fragments += 1;
                            }
                            pending.drain(..consumed);
                        }
                        LinkResult::Incomplete { needed } => {
                            assert!(needed > 0 && pending.len() + needed <= MAX_LINK_FRAME_LEN);
                            break;
                        }
                        LinkResult::Invalid(error) => panic!("chunk {chunk}: {error}"),
                    }
                }
            }
            assert_eq!((fragments, pending.len()), (1, 0), "chunk {chunk}");
        }
    }

    #[test]
    fn resync_into_the_middle_of_a_response() {
        // A capture that starts inside the first frame: resync lands on the second, whose
        // segment has no FIR, so the fragment is lost and the next one is awaited.
        let stream = [&SEGMENT_1[100..], &SEGMENT_2[..], &SEGMENT_3[..]].concat();
        assert!(matches!(
            parse_link_frame(&stream),
            LinkResult::Invalid(LinkError::Start { .. })
        ));
        let offset = find_link_resync(&stream).expect("the second frame");
        assert_eq!(offset, SEGMENT_1.len() - 100);
        let mut reassembler = TransportReassembler::new();
        let second = user_data(&stream[offset..offset + SEGMENT_2.len()]);
        assert_eq!(
            reassembler.push(&second).discard().map(|d| d.reason),
            Some(DiscardReason::NoFirst)
        );
    }

    // dnp3_example.pcap (CISA ICSNPP trace) frames 17 and 18: a response in two segments whose
    // transport sequence wraps from 63 (0x7F: FIR, seq 63) to 0 (0x80: FIN, seq 0). tshark
    // does not reassemble it ("Unreassembled fragment 63", then "fragment 0"), and later
    // mistakes frame 311's FIR+FIN segment for a confirm; sequence numbers are modulo 64.
    static WRAP_1: [u8; 292] = hex(concat!(
        "0564ff446400050035187fc881000001020000778101010101011e0e01010101010101010101010101010101",
        "bbc301010101010101010101010101010101bbc3010101010101010101010000000000001a13000000000000",
        "00000000000000000000ffff00000000000000000000000000000000ffff0000000000000000000000000000",
        "0000ffff00000000000000000000000000000000ffff00000a02000021000000000000000000857700000000",
        "000000000000000000000000ffff0000000000000000001e0200001300c088fc0300df0400d30400e7040070",
        "03004605720e00660300000000000000000000000000a49d00000000000000000000000000000000ffff0000",
        "00000000000000002802000013002ebd00000000000000000000ffff"
    ));
    static WRAP_2: [u8; 68] = hex(concat!(
        "0564374464000500173d80000000000000000000000000000000f3c800000000000000000000000000000000",
        "ffff00000000000000000000000000000000ffff0000ffff"
    ));

    #[test]
    fn transport_sequence_wraps_from_63_to_0() {
        let mut reassembler = TransportReassembler::new();
        let mut fragment = None;
        for frame in [&WRAP_1[..], &WRAP_2[..]] {
            let LinkResult::Complete { frame, .. } = parse_link_frame(frame) else {
                panic!("not a frame");
            };
            let mut buf = [0; MAX_USER_DATA_LEN];
            if let Some(done) = reassembler.push(frame.user_data_into(&mut buf)).fragment() {
                fragment = Some(done.to_vec());
            }
        }
        let fragment = fragment.expect("reassembled across the wrap");
        let app = parse_app_fragment(&fragment).unwrap();
        let counts: Vec<(u8, u8, usize)> = app
            .objects()
            .map(|object| {
                let object = object.unwrap();
                let (group, variation) = (object.header.group, object.header.variation);
                (group, variation, object.points().count())
            })
            .collect();
        // tshark, on the same objects in frame 15: 120, 34, 20 and 20 points.
        assert_eq!(counts, [(1, 2, 120), (10, 2, 34), (30, 2, 20), (40, 2, 20)]);
    }

    #[test]
    fn default_port() {
        assert_eq!(DEFAULT_PORT, 20000);
        assert_eq!(MAX_LINK_FRAME_LEN, 292);
        assert_eq!(MAX_SEGMENT_PAYLOAD, 249);
    }
}
