//! MBAP framing over a TCP byte stream (TCP §3.1.3), in the streaming style: look only at the
//! front of the input and say how much belongs to one ADU, or how much more is needed.

use core::fmt;

use super::data::be_u16;
use super::pdu::{parse_pdu, plausible_pdu_len, Direction, ModbusPdu, PduError};
use super::{field, FunctionCode, MAX_FRAMED_PDU_LEN, MBAP_HEADER_LEN, MIN_ADU_LEN};

/// Smallest `length`: the unit id and a function code.
const MIN_LENGTH: u16 = 2;
/// Largest `length`: the unit id and the largest PDU framing accepts, one byte more than the
/// specification's 253 because real devices send it (a Schneider PLC's UMAS, fc 90, with length
/// 255 in modicon_test.pcap, which tshark decodes too).
const MAX_LENGTH: u16 = 255;
const _: () = assert!(MAX_LENGTH as usize == 1 + MAX_FRAMED_PDU_LEN);

/// The MBAP header as read, not yet judged (see [`parse_adu`] for that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MbapHeader {
    pub transaction_id: u16,
    /// 0 for Modbus; anything else is not Modbus.
    pub protocol_id: u16,
    /// Bytes that follow this field: the unit id and the PDU.
    pub length: u16,
    pub unit_id: u8,
}

impl MbapHeader {
    /// Reads the header at the front of `bytes`; `None` if fewer than [`MBAP_HEADER_LEN`] bytes.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        bytes.first_chunk().map(Self::from_bytes)
    }

    /// Reads the header from exactly its bytes.
    pub fn from_bytes(bytes: &[u8; MBAP_HEADER_LEN]) -> Self {
        let [t0, t1, p0, p1, l0, l1, unit_id] = *bytes;
        Self {
            transaction_id: u16::from_be_bytes([t0, t1]),
            protocol_id: u16::from_be_bytes([p0, p1]),
            length: u16::from_be_bytes([l0, l1]),
            unit_id,
        }
    }

    /// Bytes of the whole ADU this header announces.
    pub fn adu_len(&self) -> usize {
        field::LENGTH.end + usize::from(self.length)
    }

    /// The header as on the wire.
    pub fn to_bytes(&self) -> [u8; MBAP_HEADER_LEN] {
        let [t0, t1] = self.transaction_id.to_be_bytes();
        let [p0, p1] = self.protocol_id.to_be_bytes();
        let [l0, l1] = self.length.to_be_bytes();
        [t0, t1, p0, p1, l0, l1, self.unit_id]
    }
}

/// One framed ADU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusAdu<'a> {
    pub header: MbapHeader,
    /// Function code byte and data: exactly `header.length - 1` bytes.
    pub pdu: &'a [u8],
}

impl<'a> ModbusAdu<'a> {
    /// The function code byte as sent, exception bit included.
    pub fn function_code(&self) -> Option<FunctionCode> {
        self.pdu.first().map(|&code| FunctionCode(code))
    }

    /// [`parse_pdu`] on this ADU's PDU.
    pub fn parse_pdu(&self, dir: Direction) -> Result<ModbusPdu<'a>, PduError> {
        parse_pdu(self.pdu, dir)
    }
}

/// Why the front of a stream cannot be an MBAP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Protocol id not 0.
    ProtocolId(u16),
    /// Length outside 2..=255.
    Length(u16),
}

impl FrameError {
    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::ProtocolId(_) => "bad_protocol_id",
            Self::Length(_) => "bad_length",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ProtocolId(id) => write!(f, "MBAP protocol id {id:#06x} is not 0 (Modbus)"),
            Self::Length(length) => write!(
                f,
                "MBAP length {length} outside {MIN_LENGTH}..={MAX_LENGTH} (unit id and PDU)"
            ),
        }
    }
}

impl core::error::Error for FrameError {}

/// Outcome of [`parse_adu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AduResult<'a> {
    /// One whole ADU at the front of the input; `consumed` bytes belong to it.
    Complete { adu: ModbusAdu<'a>, consumed: usize },
    /// The front of the input is a plausible but partial ADU: at least `needed` more bytes
    /// required. Exact once the length field has arrived; before that, a lower bound.
    Incomplete { needed: usize },
    /// The front of the input cannot be an MBAP header.
    Invalid(FrameError),
}

/// Frames the ADU at the front of `input`, looking at nothing past it.
///
/// Fields are judged as soon as they have arrived, in wire order: protocol id (must be 0),
/// length (2..=255). The unit id and the PDU, function code included, are not judged here:
/// that is [`parse_pdu`]'s job. Function code 0 is framed (a function-code scan sends it, and the
/// server answers with an exception): it is a malformed PDU, not a framing error.
pub fn parse_adu(input: &[u8]) -> AduResult<'_> {
    if let Some(protocol_id) = be_u16(input, field::PROTOCOL_ID) {
        if protocol_id != 0 {
            return AduResult::Invalid(FrameError::ProtocolId(protocol_id));
        }
    }
    let Some(length) = be_u16(input, field::LENGTH) else {
        return AduResult::Incomplete {
            needed: MIN_ADU_LEN.saturating_sub(input.len()),
        };
    };
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return AduResult::Invalid(FrameError::Length(length));
    }
    let adu_len = field::LENGTH.end + usize::from(length);
    // The ADU is at least MIN_ADU_LEN bytes, so once it is all there the header splits off.
    let framed = input.get(..adu_len).and_then(|adu| adu.split_first_chunk());
    let Some((header, pdu)) = framed else {
        return AduResult::Incomplete {
            needed: adu_len.saturating_sub(input.len()),
        };
    };
    let adu = ModbusAdu {
        header: MbapHeader::from_bytes(header),
        pdu,
    };
    AduResult::Complete {
        adu,
        consumed: adu_len,
    }
}

/// Where framing can restart after a gap or garbage: the smallest offset at which
/// - a complete ADU starts whose PDU decodes in at least one direction, and after which the
///   input either ends or continues with something [`parse_adu`] does not call invalid, or
/// - a whole header ([`MBAP_HEADER_LEN`] bytes) with a plausible protocol id and length starts
///   whose ADU runs past the end of the input, and, if its function code has arrived, the
///   announced PDU length suits that function code in some direction.
///
/// `None` when no offset qualifies: the caller then keeps at most the last
/// `MBAP_HEADER_LEN - 1` bytes, which may hold the start of a header this could not judge.
pub fn find_resync(input: &[u8]) -> Option<usize> {
    let last = input.len().checked_sub(MBAP_HEADER_LEN)?;
    (0..=last).find(|&offset| input.get(offset..).is_some_and(plausible_start))
}

fn plausible_start(input: &[u8]) -> bool {
    // Cheap filter first: most garbage offsets fail the two zero bytes of the protocol id.
    if be_u16(input, field::PROTOCOL_ID) != Some(0) {
        return false;
    }
    // Framing accepts function code 0 (a scan sends it), but it is no evidence of Modbus.
    if input
        .get(field::ADU_FUNCTION)
        .is_some_and(|&code| code & !FunctionCode::EXCEPTION_BIT == 0)
    {
        return false;
    }
    match parse_adu(input) {
        AduResult::Complete { adu, consumed } => {
            let decodes = parse_pdu(adu.pdu, Direction::Request).is_ok()
                || parse_pdu(adu.pdu, Direction::Response).is_ok();
            decodes
                && input
                    .get(consumed..)
                    .is_some_and(|next| !matches!(parse_adu(next), AduResult::Invalid(_)))
        }
        // A whole header, and once the function code is there, a PDU length that suits it:
        // garbage with two zero bytes in the right place is common enough (e.g. DCE/RPC on
        // port 502) that the header alone says little.
        AduResult::Incomplete { .. } => MbapHeader::read(input).is_some_and(|header| {
            let pdu_len = usize::from(header.length).saturating_sub(1);
            input
                .get(field::ADU_FUNCTION)
                .is_none_or(|&code| plausible_pdu_len(code, pdu_len))
        }),
        AduResult::Invalid(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::{PduBody, MAX_ADU_LEN};

    // Real request/response pairs from modbus_example.pcap (CISA ICSNPP test trace, frames
    // 4, 6 and 20): read coils 1 x1 from unit 4, its response, read holding registers.
    static READ_COILS_ADU: [u8; 12] = [
        0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x04, 0x01, 0x00, 0x01, 0x00, 0x01,
    ];
    static READ_COILS_RESPONSE_ADU: [u8; 10] =
        [0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x04, 0x01, 0x01, 0x01];
    static READ_HOLDING_ADU: [u8; 12] = [
        0x00, 0x05, 0x00, 0x00, 0x00, 0x06, 0x04, 0x03, 0x00, 0x01, 0x00, 0x01,
    ];

    fn complete(input: &[u8]) -> (ModbusAdu<'_>, usize) {
        match parse_adu(input) {
            AduResult::Complete { adu, consumed } => (adu, consumed),
            other => panic!("expected a complete ADU, got {other:?}"),
        }
    }

    #[test]
    fn single_adu() {
        let (adu, consumed) = complete(&READ_COILS_ADU);
        assert_eq!(consumed, 12);
        assert_eq!(
            adu.header,
            MbapHeader {
                transaction_id: 1,
                protocol_id: 0,
                length: 6,
                unit_id: 4
            }
        );
        assert_eq!(adu.pdu, [0x01, 0x00, 0x01, 0x00, 0x01]);
        assert_eq!(adu.function_code(), Some(FunctionCode::READ_COILS));
        assert_eq!(adu.header.adu_len(), 12);
        assert_eq!(adu.header.to_bytes(), READ_COILS_ADU[..7]);
        let pdu = adu.parse_pdu(Direction::Request).unwrap();
        assert_eq!(
            pdu.body,
            PduBody::ReadRequest {
                address: 1,
                quantity: 1
            }
        );
    }

    #[test]
    fn adus_back_to_back() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&READ_COILS_ADU);
        stream.extend_from_slice(&READ_COILS_RESPONSE_ADU);
        stream.extend_from_slice(&READ_HOLDING_ADU);
        let mut rest = &stream[..];
        let mut seen = Vec::new();
        while let AduResult::Complete { adu, consumed } = parse_adu(rest) {
            seen.push((adu.header.transaction_id, adu.pdu[0], consumed));
            rest = &rest[consumed..];
        }
        assert_eq!(seen, [(1, 1, 12), (1, 1, 10), (5, 3, 12)]);
        assert_eq!(
            parse_adu(rest),
            AduResult::Incomplete {
                needed: MIN_ADU_LEN
            }
        );
    }

    #[test]
    fn split_adu_says_how_much_is_missing() {
        // Before the length field arrives only the minimum ADU is known to be missing...
        assert_eq!(parse_adu(&[]), AduResult::Incomplete { needed: 8 });
        assert_eq!(
            parse_adu(&READ_HOLDING_ADU[..3]),
            AduResult::Incomplete { needed: 5 }
        );
        assert_eq!(
            parse_adu(&READ_HOLDING_ADU[..5]),
            AduResult::Incomplete { needed: 3 }
        );
        // ...after it, exactly how much.
        for cut in 6..READ_HOLDING_ADU.len() {
            assert_eq!(
                parse_adu(&READ_HOLDING_ADU[..cut]),
                AduResult::Incomplete { needed: 12 - cut },
                "cut at {cut}"
            );
        }
        // The second part of a split then completes the ADU.
        let mut stream = READ_HOLDING_ADU[..9].to_vec();
        stream.extend_from_slice(&READ_HOLDING_ADU[9..]);
        assert_eq!(complete(&stream).1, 12);
    }

    #[test]
    fn trailing_bytes_are_left_for_the_next_call() {
        let mut stream = READ_COILS_ADU.to_vec();
        stream.extend_from_slice(&[0x00, 0x02, 0x00]);
        let (_, consumed) = complete(&stream);
        assert_eq!(consumed, 12);
        assert_eq!(
            parse_adu(&stream[consumed..]),
            AduResult::Incomplete { needed: 5 }
        );
    }

    #[test]
    fn invalid_headers() {
        // A TLS ClientHello on port 502 (modbus-and-non-modbus-p502.pcap, frame 49).
        let tls = [
            0x16, 0x03, 0x01, 0x00, 0x85, 0x01, 0x00, 0x00, 0x81, 0x03, 0x03,
        ];
        assert_eq!(
            parse_adu(&tls),
            AduResult::Invalid(FrameError::ProtocolId(0x0100))
        );
        // Judged as soon as the protocol id has arrived.
        assert_eq!(
            parse_adu(&tls[..4]),
            AduResult::Invalid(FrameError::ProtocolId(0x0100))
        );
        let zero_length = [0x00, 0x01, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(
            parse_adu(&zero_length),
            AduResult::Invalid(FrameError::Length(0))
        );
        let unit_id_only = [0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01];
        assert_eq!(
            parse_adu(&unit_id_only),
            AduResult::Invalid(FrameError::Length(1))
        );
        let too_long = [0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x03];
        assert_eq!(
            parse_adu(&too_long),
            AduResult::Invalid(FrameError::Length(256))
        );
        // Function code 0 and its exception form, as sent by a function code scan
        // (modbus_test_data_part2.pcap, frames 6 and 9): framed; the PDU judges them.
        let fc0 = [
            0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let (adu, _) = complete(&fc0);
        assert!(parse_pdu(adu.pdu, Direction::Request).is_err());
        let fc80 = [0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x01, 0x80, 0x01];
        let (adu, _) = complete(&fc80);
        let pdu = parse_pdu(adu.pdu, Direction::Response).expect("exception to fc 0");
        assert_eq!(pdu.function, FunctionCode(0));
        assert_eq!(pdu.exception(), Some(super::super::ExceptionCode(1)));
    }

    #[test]
    fn largest_adu_frames() {
        let mut adu = vec![0x00, 0x07, 0x00, 0x00, 0x00, 0xFF, 0x01, 0x5A];
        adu.resize(MAX_ADU_LEN, 0xAA);
        let (framed, consumed) = complete(&adu);
        assert_eq!(consumed, MAX_ADU_LEN);
        assert_eq!(framed.pdu.len(), MAX_FRAMED_PDU_LEN);
    }

    #[test]
    fn frame_error_text() {
        assert_eq!(
            FrameError::ProtocolId(0x1603).to_string(),
            "MBAP protocol id 0x1603 is not 0 (Modbus)"
        );
        assert_eq!(
            FrameError::Length(300).to_string(),
            "MBAP length 300 outside 2..=255 (unit id and PDU)"
        );
        assert_eq!(FrameError::Length(0).as_str(), "bad_length");
    }

    #[test]
    fn resync_after_garbage() {
        // An HTTP request line then a Modbus request: framing restarts at the request.
        let mut stream = b"GET / HTTP/1.1\r\n".to_vec();
        let garbage = stream.len();
        stream.extend_from_slice(&READ_COILS_ADU);
        stream.extend_from_slice(&READ_HOLDING_ADU);
        assert_eq!(find_resync(&stream), Some(garbage));
    }

    #[test]
    fn resync_at_zero_when_already_aligned() {
        assert_eq!(find_resync(&READ_COILS_ADU), Some(0));
        let mut stream = READ_COILS_ADU.to_vec();
        stream.extend_from_slice(&READ_COILS_RESPONSE_ADU);
        assert_eq!(find_resync(&stream), Some(0));
    }

    #[test]
    fn resync_on_a_header_cut_by_the_end_of_input() {
        let mut stream = vec![0xDE, 0xAD, 0xBE, 0xEF];
        stream.extend_from_slice(&READ_HOLDING_ADU[..7]);
        assert_eq!(find_resync(&stream), Some(4));
        // Fewer than a header's worth: the caller's kept tail covers it, not find_resync.
        assert_eq!(find_resync(&READ_HOLDING_ADU[..6]), None);
    }

    #[test]
    fn resync_rejects_a_plausible_header_with_an_undecodable_pdu() {
        // Header fine, but read holding registers with a 3-byte PDU decodes in neither
        // direction; the real ADU right after it is where framing restarts.
        let mut stream = vec![0x00, 0x09, 0x00, 0x00, 0x00, 0x04, 0x01, 0x03, 0x00, 0x01];
        stream.extend_from_slice(&READ_HOLDING_ADU);
        assert_eq!(find_resync(&stream), Some(10));
    }

    #[test]
    fn resync_rejects_an_adu_followed_by_an_invalid_header() {
        // A decodable ADU followed by bytes that cannot be a header is a coincidence.
        let mut stream = READ_COILS_ADU.to_vec();
        stream.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x00, 0x06, 0x01, 0x03]);
        assert_eq!(find_resync(&stream), None);
    }

    #[test]
    fn resync_rejects_a_cut_header_whose_length_does_not_suit_its_function_code() {
        // DCE/RPC bind on port 502 (modbus-and-non-modbus-p502.pcap, frame 29): at offset 11
        // sits a header with protocol id 0 and length 184, cut by the end of the segment, but
        // its function code 0xB8 is an exception, which is always 2 bytes.
        let dcerpc = [
            0x05, 0x00, 0x0b, 0x03, 0x10, 0x00, 0x00, 0x00, 0x48, 0x00, 0x00, 0x00, 0x01, 0x00,
            0x00, 0x00, 0xb8, 0x10, 0xb8, 0x10, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x01, 0x00, 0x08, 0x83, 0xaf, 0xe1, 0x1f, 0x5d, 0xc9, 0x11, 0x91, 0xa4,
            0x08, 0x00, 0x2b, 0x14, 0xa0, 0xfa, 0x03, 0x00, 0x00, 0x00, 0x04, 0x5d, 0x88, 0x8a,
            0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60, 0x02, 0x00,
            0x00, 0x00,
        ];
        assert_eq!(find_resync(&dcerpc), None);
        // The same cut header with a function code that can be that long does qualify.
        let mut plausible = READ_HOLDING_ADU[..7].to_vec();
        plausible[5] = 0x20;
        plausible.push(0x03);
        assert_eq!(find_resync(&plausible), Some(0));
        plausible[7] = 0x06;
        assert_eq!(find_resync(&plausible), None);
    }

    #[test]
    fn resync_on_pure_garbage() {
        assert_eq!(
            find_resync(b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.1\r\n"),
            None
        );
        assert_eq!(find_resync(&[0xAA; 64]), None);
        assert_eq!(find_resync(&[0x00; 64]), None);
        assert_eq!(find_resync(&[]), None);
        assert_eq!(find_resync(&[0x00, 0x01, 0x00]), None);
    }
}
