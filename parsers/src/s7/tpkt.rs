//! TPKT framing over a TCP byte stream (RFC 1006 §6), in the streaming style: look only at the
//! front of the input and say how much belongs to one packet, or how much more is needed.

use core::fmt;

use super::cotp::plausible_tpdu_header;
use super::field::tpkt as field;
use super::{be_u16, TPKT_HEADER_LEN, TPKT_MIN_LEN, TPKT_VERSION};

/// The TPKT header as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TpktHeader {
    /// Always 3.
    pub version: u8,
    /// Always 0.
    pub reserved: u8,
    /// Bytes of the whole packet, header included.
    pub length: u16,
}

impl TpktHeader {
    /// Reads the header at the front of `bytes`; `None` if fewer than four bytes.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        let &[version, reserved, l0, l1] = bytes.first_chunk::<TPKT_HEADER_LEN>()?;
        Some(Self {
            version,
            reserved,
            length: u16::from_be_bytes([l0, l1]),
        })
    }

    /// The header as on the wire.
    pub fn to_bytes(&self) -> [u8; TPKT_HEADER_LEN] {
        let [l0, l1] = self.length.to_be_bytes();
        [self.version, self.reserved, l0, l1]
    }
}

/// One framed TPKT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tpkt<'a> {
    pub header: TpktHeader,
    /// The COTP TPDU: exactly `header.length - 4` bytes, for [`super::parse_cotp`].
    pub tpdu: &'a [u8],
}

/// Why the front of a stream cannot be a TPKT header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TpktError {
    /// Version not 3.
    Version(u8),
    /// Reserved byte not 0.
    Reserved(u8),
    /// Length below 7, too short for a header and a TPDU.
    Length(u16),
}

impl TpktError {
    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Version(_) => "bad_version",
            Self::Reserved(_) => "bad_reserved",
            Self::Length(_) => "bad_length",
        }
    }
}

impl fmt::Display for TpktError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version(v) => write!(f, "TPKT version {v} is not 3"),
            Self::Reserved(r) => write!(f, "TPKT reserved byte {r:#04x} is not 0"),
            Self::Length(l) => write!(f, "TPKT length {l} below {TPKT_MIN_LEN}"),
        }
    }
}

impl core::error::Error for TpktError {}

/// Outcome of [`parse_tpkt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpktResult<'a> {
    /// One whole packet at the front of the input; `consumed` bytes belong to it.
    Complete { tpkt: Tpkt<'a>, consumed: usize },
    /// The front of the input is a plausible but partial packet: at least `needed` more bytes
    /// required. Exact once the length field has arrived; before that, a lower bound.
    Incomplete { needed: usize },
    /// The front of the input cannot be a TPKT header.
    Invalid(TpktError),
}

/// Frames the TPKT at the front of `input`, looking at nothing past it.
///
/// Fields are judged as soon as they have arrived, in wire order: version (3), reserved (0),
/// length (7..=65535, the upper bound being the field's own). The TPDU is not judged here: that
/// is [`super::parse_cotp`]'s job. Memory: a caller buffering an incomplete packet never holds
/// more than [`super::TPKT_MAX_LEN`] bytes for it.
pub fn parse_tpkt(input: &[u8]) -> TpktResult<'_> {
    if let Some(&version) = input.get(field::VERSION) {
        if version != TPKT_VERSION {
            return TpktResult::Invalid(TpktError::Version(version));
        }
    }
    if let Some(&reserved) = input.get(field::RESERVED) {
        if reserved != 0 {
            return TpktResult::Invalid(TpktError::Reserved(reserved));
        }
    }
    let Some(length) = be_u16(input, field::LENGTH) else {
        return TpktResult::Incomplete {
            needed: TPKT_MIN_LEN.saturating_sub(input.len()),
        };
    };
    let packet_len = usize::from(length);
    if packet_len < TPKT_MIN_LEN {
        return TpktResult::Invalid(TpktError::Length(length));
    }
    let framed = input
        .get(..packet_len)
        .and_then(|packet| packet.split_first_chunk::<TPKT_HEADER_LEN>());
    let Some((header, tpdu)) = framed else {
        return TpktResult::Incomplete {
            needed: packet_len.saturating_sub(input.len()),
        };
    };
    let [version, reserved, l0, l1] = *header;
    let header = TpktHeader {
        version,
        reserved,
        length: u16::from_be_bytes([l0, l1]),
    };
    TpktResult::Complete {
        tpkt: Tpkt { header, tpdu },
        consumed: packet_len,
    }
}

/// Bytes [`find_tpkt_resync`] needs at an offset to judge it: the TPKT header, the COTP length
/// indicator and PDU type.
pub const RESYNC_PROBE_LEN: usize = TPKT_HEADER_LEN + 2;

/// Where framing can restart after a gap or garbage: the smallest offset at which
/// - `03 00` and a length of at least 7 start, followed by a plausible COTP header (a known
///   PDU type whose fixed part fits the length indicator, and a length indicator that fits in
///   the packet; a data TPDU must use the class 0 header, LI 2), and
/// - if the whole packet is present and more bytes follow it, they do not start with something
///   [`parse_tpkt`] calls invalid.
///
/// `None` when no offset qualifies: the caller then keeps at most the last
/// [`RESYNC_PROBE_LEN`]` - 1` bytes, which may hold the start of a header this could not judge.
pub fn find_tpkt_resync(input: &[u8]) -> Option<usize> {
    let last = input.len().checked_sub(RESYNC_PROBE_LEN)?;
    (0..=last).find(|&offset| input.get(offset..).is_some_and(plausible_start))
}

fn plausible_start(input: &[u8]) -> bool {
    // Cheap filter first: most garbage offsets fail the version and reserved bytes.
    if input.get(..2) != Some(&[TPKT_VERSION, 0][..]) {
        return false;
    }
    let Some(header) = TpktHeader::read(input) else {
        return false;
    };
    let packet_len = usize::from(header.length);
    if packet_len < TPKT_MIN_LEN {
        return false;
    }
    let tpdu = input.get(TPKT_HEADER_LEN..).unwrap_or_default();
    if !plausible_tpdu_header(tpdu, packet_len - TPKT_HEADER_LEN) {
        return false;
    }
    match input.get(packet_len..) {
        Some(next) => !matches!(parse_tpkt(next), TpktResult::Invalid(_)),
        // The packet runs past the end of the input: the header is all there is to judge.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s7::testutil::hex;
    use crate::s7::TPKT_MAX_LEN;

    fn complete(input: &[u8]) -> (Tpkt<'_>, usize) {
        match parse_tpkt(input) {
            TpktResult::Complete { tpkt, consumed } => (tpkt, consumed),
            other => panic!("expected a complete TPKT, got {other:?}"),
        }
    }

    // mb2.pcap frame 271: two TPKTs in one TCP segment, an empty DT without EOT (what Step 7
    // and libnodave send between PDUs) and a read var job.
    const BACK_TO_BACK: &str = "0300000702f000\
        0300002b02f080320100000003001a00000402120a1002000203e884000000120a1002000203e984000000";

    #[test]
    fn single_packet() {
        // s7ident.pcap frame 8: setup communication job.
        let bytes = hex("0300001902f08032010000000000080000f0000001000101e0");
        let (tpkt, consumed) = complete(&bytes);
        assert_eq!(consumed, 25);
        assert_eq!(
            tpkt.header,
            TpktHeader {
                version: 3,
                reserved: 0,
                length: 25
            }
        );
        assert_eq!(tpkt.tpdu, &bytes[4..]);
        assert_eq!(tpkt.header.to_bytes(), bytes[..4]);
        assert_eq!(TpktHeader::read(&bytes[..3]), None);
    }

    #[test]
    fn packets_back_to_back() {
        let stream = hex(BACK_TO_BACK);
        let mut rest = &stream[..];
        let mut lengths = Vec::new();
        while let TpktResult::Complete { tpkt, consumed } = parse_tpkt(rest) {
            lengths.push((consumed, tpkt.tpdu.len()));
            rest = &rest[consumed..];
        }
        assert_eq!(lengths, [(7, 3), (43, 39)]);
        assert_eq!(parse_tpkt(rest), TpktResult::Incomplete { needed: 7 });
    }

    #[test]
    fn split_packet_says_exactly_how_much_is_missing() {
        let bytes = hex("0300001902f08032010000000000080000f0000001000101e0");
        // Before the length field: the minimum packet is the lower bound.
        assert_eq!(parse_tpkt(&[]), TpktResult::Incomplete { needed: 7 });
        assert_eq!(
            parse_tpkt(&bytes[..1]),
            TpktResult::Incomplete { needed: 6 }
        );
        assert_eq!(
            parse_tpkt(&bytes[..3]),
            TpktResult::Incomplete { needed: 4 }
        );
        // After it, exact.
        for cut in 4..bytes.len() {
            assert_eq!(
                parse_tpkt(&bytes[..cut]),
                TpktResult::Incomplete { needed: 25 - cut },
                "cut at {cut}"
            );
        }
        // A TCP segment boundary in the middle, as a reassembler would join it.
        let mut joined = bytes[..11].to_vec();
        joined.extend_from_slice(&bytes[11..]);
        assert_eq!(complete(&joined).1, 25);
    }

    #[test]
    fn invalid_headers() {
        // A TLS record on port 102: version byte 0x16.
        assert_eq!(
            parse_tpkt(&[0x16, 0x03, 0x01, 0x00, 0x85]),
            TpktResult::Invalid(TpktError::Version(0x16))
        );
        // Judged as soon as the byte arrives.
        assert_eq!(
            parse_tpkt(&[0x02]),
            TpktResult::Invalid(TpktError::Version(2))
        );
        assert_eq!(
            parse_tpkt(&[0x03, 0x01]),
            TpktResult::Invalid(TpktError::Reserved(1))
        );
        assert_eq!(
            parse_tpkt(&[0x03, 0x00, 0x00, 0x06, 0x02, 0xf0]),
            TpktResult::Invalid(TpktError::Length(6))
        );
        // The TCP keep-alive byte in s7comm_plus.pcap frame 14.
        assert_eq!(
            parse_tpkt(&[0x00]),
            TpktResult::Invalid(TpktError::Version(0))
        );
        assert_eq!(TpktError::Length(3).as_str(), "bad_length");
        assert_eq!(
            TpktError::Reserved(1).to_string(),
            "TPKT reserved byte 0x01 is not 0"
        );
        assert_eq!(TpktError::Version(4).to_string(), "TPKT version 4 is not 3");
    }

    #[test]
    fn largest_packet_frames() {
        let mut packet = vec![0x03, 0x00, 0xFF, 0xFF, 0x02, 0xF0, 0x80];
        packet.resize(TPKT_MAX_LEN, 0xAA);
        let (tpkt, consumed) = complete(&packet);
        assert_eq!(consumed, TPKT_MAX_LEN);
        assert_eq!(tpkt.tpdu.len(), TPKT_MAX_LEN - 4);
    }

    #[test]
    fn resync_after_garbage() {
        let mut stream = b"\x00\x00garbage\x03\x00".to_vec();
        let garbage = stream.len();
        stream.extend_from_slice(&hex(BACK_TO_BACK));
        assert_eq!(find_tpkt_resync(&stream), Some(garbage));
    }

    #[test]
    fn resync_at_zero_when_aligned_and_on_a_cut_packet() {
        let stream = hex(BACK_TO_BACK);
        assert_eq!(find_tpkt_resync(&stream), Some(0));
        // A header cut by the end of the input still qualifies once the COTP header is there.
        let tail = &stream[7..7 + RESYNC_PROBE_LEN];
        assert_eq!(find_tpkt_resync(tail), Some(0));
        assert_eq!(find_tpkt_resync(&tail[..RESYNC_PROBE_LEN - 1]), None);
    }

    #[test]
    fn resync_rejects_implausible_cotp() {
        // 03 00 and a sane length, but COTP type 0x30 is not a TPDU type.
        assert_eq!(
            find_tpkt_resync(&[0x03, 0x00, 0x00, 0x10, 0x02, 0x30, 0x80]),
            None
        );
        // A DT with an extended-format length indicator: not class 0, not S7.
        assert_eq!(
            find_tpkt_resync(&[0x03, 0x00, 0x00, 0x10, 0x05, 0xF0, 0x80]),
            None
        );
        // A length indicator that does not fit in the packet.
        assert_eq!(
            find_tpkt_resync(&[0x03, 0x00, 0x00, 0x07, 0x11, 0xE0, 0x00]),
            None
        );
        // A complete packet followed by bytes that cannot be a TPKT is a coincidence.
        let mut stream = hex("0300000702f080");
        stream.extend_from_slice(&[0x17, 0x03, 0x03]);
        assert_eq!(find_tpkt_resync(&stream), None);
    }

    #[test]
    fn resync_on_pure_garbage() {
        assert_eq!(find_tpkt_resync(b"SSH-2.0-OpenSSH_8.9p1\r\n"), None);
        assert_eq!(find_tpkt_resync(&[0x03; 64]), None);
        assert_eq!(find_tpkt_resync(&[0x00; 64]), None);
        assert_eq!(find_tpkt_resync(&[]), None);
    }
}
