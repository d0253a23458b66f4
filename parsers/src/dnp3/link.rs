//! Data link frames over a byte stream (IEEE 1815-2012 clause 9), in the streaming style: look only at the front of
//! the input and say how much belongs to one frame, or how much more is needed.
//!
//! A frame is a 10-octet header (start 05 64, length, control, destination, source, CRC) and
//! up to 250 octets of user data sent in blocks of 16, each block followed by its CRC.

use core::fmt;
use core::iter::FusedIterator;

use super::crc::{crc16, crc_matches};
use super::field;
use super::{
    le, le_u16, LinkFunction, PrimaryFunction, SecondaryFunction, CRC_LEN, LINK_BLOCK_LEN,
    LINK_HEADER_LEN, LINK_START, MAX_LINK_FRAME_LEN, MAX_USER_DATA_LEN, MIN_LINK_LENGTH,
};

/// Control octet of the link header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkControl(pub u8);

impl LinkControl {
    /// Set on frames from the master, clear on frames from the outstation.
    pub const DIR: u8 = 0x80;
    /// Set on primary frames (requests), clear on secondary frames (answers).
    pub const PRM: u8 = 0x40;
    /// Frame count bit: alternates between confirmed primary frames, to spot duplicates.
    pub const FCB: u8 = 0x20;
    /// Primary frames: FCB is valid.
    pub const FCV: u8 = 0x10;
    /// Secondary frames, same bit: data flow control, the receiver's buffers are full.
    pub const DFC: u8 = 0x10;
    pub const FUNCTION_MASK: u8 = 0x0F;

    pub const fn dir(&self) -> bool {
        self.0 & Self::DIR != 0
    }

    pub const fn prm(&self) -> bool {
        self.0 & Self::PRM != 0
    }

    /// Meaningful on primary frames only.
    pub const fn fcb(&self) -> bool {
        self.prm() && self.0 & Self::FCB != 0
    }

    /// Meaningful on primary frames only.
    pub const fn fcv(&self) -> bool {
        self.prm() && self.0 & Self::FCV != 0
    }

    /// Meaningful on secondary frames only.
    pub const fn dfc(&self) -> bool {
        !self.prm() && self.0 & Self::DFC != 0
    }

    pub const fn function(&self) -> LinkFunction {
        let code = self.0 & Self::FUNCTION_MASK;
        if self.prm() {
            LinkFunction::Primary(PrimaryFunction(code))
        } else {
            LinkFunction::Secondary(SecondaryFunction(code))
        }
    }
}

/// The link header as read, CRC aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkHeader {
    /// Octets of control, destination, source and user data: 5..=255 in a valid frame.
    pub length: u8,
    pub control: LinkControl,
    pub destination: u16,
    pub source: u16,
}

impl LinkHeader {
    /// Reads the fields at the front of `bytes` without judging start octets, length or CRC;
    /// `None` if fewer than the 8 octets before the CRC.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            length: *bytes.get(field::LENGTH)?,
            control: LinkControl(*bytes.get(field::CONTROL)?),
            destination: le_u16(bytes, field::DESTINATION.start)?,
            source: le_u16(bytes, field::SOURCE.start)?,
        })
    }

    /// Octets of user data: the length minus control, destination and source.
    pub fn user_data_len(&self) -> usize {
        usize::from(self.length).saturating_sub(usize::from(MIN_LINK_LENGTH))
    }

    /// Octets of the whole frame on the wire, block CRCs included.
    pub fn frame_len(&self) -> usize {
        frame_len(self.length)
    }

    /// The header as on the wire, CRC computed.
    pub fn to_bytes(&self) -> [u8; LINK_HEADER_LEN] {
        let [d0, d1] = self.destination.to_le_bytes();
        let [s0, s1] = self.source.to_le_bytes();
        let [start0, start1] = LINK_START;
        let body = [start0, start1, self.length, self.control.0, d0, d1, s0, s1];
        let [c0, c1] = crc16(&body).to_le_bytes();
        [
            start0,
            start1,
            self.length,
            self.control.0,
            d0,
            d1,
            s0,
            s1,
            c0,
            c1,
        ]
    }
}

/// Octets on the wire of a frame whose length field is `length`.
fn frame_len(length: u8) -> usize {
    let user = usize::from(length).saturating_sub(usize::from(MIN_LINK_LENGTH));
    LINK_HEADER_LEN + user + CRC_LEN * user.div_ceil(LINK_BLOCK_LEN)
}

/// One framed data link frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFrame<'a> {
    pub header: LinkHeader,
    /// Every data block's CRC matched. A frame with a bad block is still framed (the header
    /// CRC vouches for its length): the caller reports it, as tshark does.
    pub data_crc_ok: bool,
    /// User data blocks with their CRCs, exactly as framed (invariant: the layout
    /// `header.user_data_len()` implies).
    blocks: &'a [u8],
}

impl<'a> LinkFrame<'a> {
    pub fn function(&self) -> LinkFunction {
        self.header.control.function()
    }

    pub fn user_data_len(&self) -> usize {
        self.header.user_data_len()
    }

    /// A primary frame with confirmed or unconfirmed user data, and some data: its user data
    /// is a transport segment.
    pub fn carries_user_data(&self) -> bool {
        matches!(self.function(), LinkFunction::Primary(f) if f.carries_user_data())
            && self.user_data_len() > 0
    }

    /// The user data blocks with their CRCs interleaved, as on the wire.
    pub fn raw_blocks(&self) -> &'a [u8] {
        self.blocks
    }

    /// The user data blocks, each with its CRC verdict.
    pub fn blocks(&self) -> DataBlocks<'a> {
        DataBlocks { rest: self.blocks }
    }

    /// The user data without CRCs, borrowed: only possible when it fits one block (16 octets
    /// or fewer, as in most requests). `None` for longer frames: use [`Self::user_data_into`].
    pub fn contiguous_user_data(&self) -> Option<&'a [u8]> {
        let mut blocks = self.blocks();
        match (blocks.next(), blocks.next()) {
            (Some(block), None) => Some(block.data),
            (None, _) => Some(&[]),
            _ => None,
        }
    }

    /// Copies the user data without CRCs into `out` and returns it. `out` always has room: a
    /// frame carries at most [`MAX_USER_DATA_LEN`] octets.
    pub fn user_data_into<'b>(&self, out: &'b mut [u8; MAX_USER_DATA_LEN]) -> &'b [u8] {
        let mut len = 0;
        for block in self.blocks() {
            let end = len + block.data.len();
            // Never fails for a parsed frame; stops short instead of panicking otherwise.
            let Some(dest) = out.get_mut(len..end) else {
                break;
            };
            dest.copy_from_slice(block.data);
            len = end;
        }
        out.get(..len).unwrap_or_default()
    }
}

/// One user data block of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataBlock<'a> {
    /// 1..=16 octets of user data.
    pub data: &'a [u8],
    pub crc_ok: bool,
}

/// Iterator over the user data blocks of a [`LinkFrame`].
#[derive(Debug, Clone)]
pub struct DataBlocks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for DataBlocks<'a> {
    type Item = DataBlock<'a>;

    fn next(&mut self) -> Option<DataBlock<'a>> {
        let block_len = self.rest.len().min(LINK_BLOCK_LEN + CRC_LEN);
        let (block, rest) = self.rest.split_at_checked(block_len)?;
        let (data, crc) = block.split_last_chunk::<CRC_LEN>()?;
        if data.is_empty() {
            self.rest = &[];
            return None;
        }
        self.rest = rest;
        Some(DataBlock {
            data,
            crc_ok: crc_matches(data, *crc),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let blocks = self.rest.len().div_ceil(LINK_BLOCK_LEN + CRC_LEN);
        (0, Some(blocks))
    }
}

impl FusedIterator for DataBlocks<'_> {}

/// Why the front of a stream cannot be a data link frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkError {
    /// The octet at `offset` (0 or 1) is not the start octet 0x05 / 0x64.
    Start { offset: usize, octet: u8 },
    /// Length below 5: not even control, destination and source.
    Length(u8),
    /// The header CRC does not match: the usual sign of a false start.
    HeaderCrc { expected: u16, received: u16 },
}

impl LinkError {
    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Start { .. } => "bad_start",
            Self::Length(_) => "bad_length",
            Self::HeaderCrc { .. } => "bad_header_crc",
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start { offset, octet } => write!(
                f,
                "DNP3 start octet {offset} is {octet:#04x}, not {:#04x}",
                LINK_START.get(*offset).copied().unwrap_or_default()
            ),
            Self::Length(length) => {
                write!(f, "DNP3 link length {length} below {MIN_LINK_LENGTH}")
            }
            Self::HeaderCrc { expected, received } => write!(
                f,
                "DNP3 link header CRC {received:#06x}, expected {expected:#06x}"
            ),
        }
    }
}

impl core::error::Error for LinkError {}

/// Outcome of [`parse_link_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkResult<'a> {
    /// One whole frame at the front of the input; `consumed` octets belong to it.
    Complete {
        frame: LinkFrame<'a>,
        consumed: usize,
    },
    /// The front of the input is a plausible but partial frame: at least `needed` more octets
    /// required. Exact once the length octet has arrived; before that, a lower bound (the
    /// shortest frame).
    Incomplete { needed: usize },
    /// The front of the input cannot be a frame.
    Invalid(LinkError),
}

/// Frames the data link frame at the front of `input`, looking at nothing past it.
///
/// Fields are judged as soon as they have arrived, in wire order: start octets, length
/// (5..=255), header CRC. Data block CRCs do not make a frame invalid: they are reported in
/// [`LinkFrame::data_crc_ok`] and per block.
pub fn parse_link_frame(input: &[u8]) -> LinkResult<'_> {
    if let Err(error) = check_header_prefix(input) {
        return LinkResult::Invalid(error);
    }
    let Some(&length) = input.get(field::LENGTH) else {
        return LinkResult::Incomplete {
            needed: LINK_HEADER_LEN.saturating_sub(input.len()),
        };
    };
    let total = frame_len(length);
    let Some((head, rest)) = input.split_first_chunk::<LINK_HEADER_LEN>() else {
        return LinkResult::Incomplete {
            needed: total.saturating_sub(input.len()),
        };
    };
    let Some(header) = LinkHeader::read(head) else {
        // Unreachable: the chunk holds all eight octets.
        return LinkResult::Incomplete {
            needed: total.saturating_sub(input.len()),
        };
    };
    let Some(blocks) = rest.get(..total - LINK_HEADER_LEN) else {
        return LinkResult::Incomplete {
            needed: total.saturating_sub(input.len()),
        };
    };
    let frame = LinkFrame {
        header,
        data_crc_ok: DataBlocks { rest: blocks }.all(|block| block.crc_ok),
        blocks,
    };
    LinkResult::Complete {
        frame,
        consumed: total,
    }
}

/// Judges as much of a header as has arrived: start octets, length, and the CRC once all ten
/// octets are there.
fn check_header_prefix(input: &[u8]) -> Result<(), LinkError> {
    for (offset, &expected) in field::START.zip(LINK_START.iter()) {
        match input.get(offset) {
            Some(&octet) if octet != expected => {
                return Err(LinkError::Start { offset, octet });
            }
            _ => {}
        }
    }
    if let Some(&length) = input.get(field::LENGTH) {
        if length < MIN_LINK_LENGTH {
            return Err(LinkError::Length(length));
        }
    }
    let covered = input.get(..field::HEADER_CRC.start);
    if let (Some(covered), Some(crc)) = (covered, le::<CRC_LEN>(input, field::HEADER_CRC.start)) {
        if !crc_matches(covered, crc) {
            return Err(LinkError::HeaderCrc {
                expected: crc16(covered),
                received: u16::from_le_bytes(crc),
            });
        }
    }
    Ok(())
}

/// Where framing can restart after a gap or garbage: the smallest offset at which
/// [`parse_link_frame`] would not answer `Invalid`, i.e. where either a whole header with start
/// octets, a sane length and a matching CRC begins, or the input ends inside something that
/// can still become one (05 64 and a sane length so far, or a lone 05 as the last octet).
///
/// A false start needs 05 64 and a 1-in-65536 CRC coincidence, so no look-ahead past the
/// header is needed (unlike MBAP, whose header has no check). `None` when no offset qualifies:
/// nothing in `input` need be kept.
pub fn find_link_resync(input: &[u8]) -> Option<usize> {
    (0..input.len()).find(|&offset| {
        input.get(offset..).is_some_and(|rest| {
            rest.first() == Some(&LINK_START[0]) && check_header_prefix(rest).is_ok()
        })
    })
}

/// Builds a frame around `user_data` into `out`: header with its CRC, data in blocks of 16,
/// each with its CRC. Returns the frame, or `None` when `user_data` exceeds
/// [`MAX_USER_DATA_LEN`]. For tests, simulators and evidence; the sensor never sends.
pub fn encode_link_frame<'b>(
    control: LinkControl,
    destination: u16,
    source: u16,
    user_data: &[u8],
    out: &'b mut [u8; MAX_LINK_FRAME_LEN],
) -> Option<&'b [u8]> {
    let user_len = u8::try_from(user_data.len())
        .ok()
        .filter(|&len| usize::from(len) <= MAX_USER_DATA_LEN)?;
    let header = LinkHeader {
        length: MIN_LINK_LENGTH + user_len,
        control,
        destination,
        source,
    };
    out.get_mut(..LINK_HEADER_LEN)?
        .copy_from_slice(&header.to_bytes());
    let mut at = LINK_HEADER_LEN;
    for chunk in user_data.chunks(LINK_BLOCK_LEN) {
        let data_end = at + chunk.len();
        out.get_mut(at..data_end)?.copy_from_slice(chunk);
        out.get_mut(data_end..data_end + CRC_LEN)?
            .copy_from_slice(&crc16(chunk).to_le_bytes());
        at = data_end + CRC_LEN;
    }
    out.get(..at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// read_and_response.pcap frame 4: master 1 -> outstation 10, unconfirmed user data, a
    /// class 0123 read (user data: 20 - 5 = 15 octets, one block).
    pub(crate) static CLASS_READ_FRAME: [u8; 27] = [
        0x05, 0x64, 0x14, 0xC4, 0x0A, 0x00, 0x01, 0x00, 0x8F, 0xED, 0xC0, 0xC0, 0x01, 0x3C, 0x02,
        0x06, 0x3C, 0x03, 0x06, 0x3C, 0x04, 0x06, 0x3C, 0x01, 0x06, 0x8A, 0x51,
    ];
    /// dnp3_read.pcap frame 6 (Zeek test trace): response from outstation 2 to master 3, with g1v2, g10v2, g30v1;
    /// 116 - 5 = 111 octets of user data in 7 blocks (6 of 16 and one of 15).
    pub(crate) static READ_RESPONSE_FRAME: [u8; 135] = [
        0x05, 0x64, 0x74, 0x44, 0x03, 0x00, 0x02, 0x00, 0x68, 0x54, 0xF4, 0xC8, 0x81, 0x00, 0x00,
        0x01, 0x02, 0x00, 0x00, 0x08, 0x81, 0x01, 0x81, 0x01, 0x01, 0x01, 0xD3, 0x74, 0x01, 0x01,
        0x01, 0x0A, 0x02, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x1E, 0x6C,
        0xA4, 0x01, 0x00, 0x00, 0x0E, 0x01, 0xEF, 0x03, 0x00, 0x00, 0x01, 0x03, 0x00, 0x00, 0x00,
        0x01, 0xED, 0x21, 0x78, 0x03, 0x00, 0x00, 0x01, 0x2B, 0xD1, 0xFF, 0xFF, 0x01, 0xED, 0x03,
        0x00, 0x00, 0x01, 0xE6, 0x2E, 0x41, 0xC9, 0x00, 0x00, 0x01, 0x17, 0x0D, 0x02, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0xB5, 0x0C, 0x02, 0xC6, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x8A, 0x0D, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x93, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF,
    ];
    /// dnp3_udp_select_operate.pcap frame 9: request link status (PRM, function 9), 1 -> 100.
    static REQUEST_LINK_STATUS_FRAME: [u8; 10] =
        [0x05, 0x64, 0x05, 0x49, 0x64, 0x00, 0x01, 0x00, 0x7E, 0x5F];
    /// dnp3_udp_select_operate.pcap frame 10: the link status answer, 100 -> 1.
    static LINK_STATUS_FRAME: [u8; 10] =
        [0x05, 0x64, 0x05, 0x8B, 0x01, 0x00, 0x64, 0x00, 0xA0, 0x97];

    fn complete(input: &[u8]) -> (LinkFrame<'_>, usize) {
        match parse_link_frame(input) {
            LinkResult::Complete { frame, consumed } => (frame, consumed),
            other => panic!("expected a complete frame, got {other:?}"),
        }
    }

    #[test]
    fn single_block_request() {
        let (frame, consumed) = complete(&CLASS_READ_FRAME);
        assert_eq!(consumed, 27);
        assert_eq!(
            frame.header,
            LinkHeader {
                length: 20,
                control: LinkControl(0xC4),
                destination: 10,
                source: 1,
            }
        );
        assert!(frame.header.control.dir() && frame.header.control.prm());
        assert!(!frame.header.control.fcb() && !frame.header.control.fcv());
        assert_eq!(
            frame.function(),
            LinkFunction::Primary(PrimaryFunction::UNCONFIRMED_USER_DATA)
        );
        assert!(frame.data_crc_ok && frame.carries_user_data());
        assert_eq!(frame.user_data_len(), 15);
        let data = frame.contiguous_user_data().unwrap();
        assert_eq!(data, &CLASS_READ_FRAME[10..25]);
        let mut buf = [0; MAX_USER_DATA_LEN];
        assert_eq!(frame.user_data_into(&mut buf), data);
        assert_eq!(frame.header.to_bytes(), CLASS_READ_FRAME[..10]);
    }

    #[test]
    fn multi_block_response() {
        let (frame, consumed) = complete(&READ_RESPONSE_FRAME);
        assert_eq!(consumed, 135);
        assert_eq!((frame.header.source, frame.header.destination), (2, 3));
        assert!(!frame.header.control.dir() && frame.header.control.prm());
        assert!(frame.data_crc_ok);
        assert_eq!(frame.user_data_len(), 111);
        assert_eq!(frame.contiguous_user_data(), None);
        let lens: Vec<usize> = frame.blocks().map(|b| b.data.len()).collect();
        assert_eq!(lens, [16, 16, 16, 16, 16, 16, 15]);
        let mut buf = [0; MAX_USER_DATA_LEN];
        let data = frame.user_data_into(&mut buf);
        assert_eq!(data.len(), 111);
        // Transport FIR+FIN seq 52, then response, IIN 0000, g1v2 q00 0..8.
        assert_eq!(
            data[..9],
            [0xF4, 0xC8, 0x81, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00]
        );
        // The second block starts right after the first block's CRC.
        assert_eq!(data[16], READ_RESPONSE_FRAME[28]);
        assert_eq!(*data.last().unwrap(), 0x00);
    }

    #[test]
    fn link_only_frames() {
        let (frame, consumed) = complete(&REQUEST_LINK_STATUS_FRAME);
        assert_eq!(consumed, 10);
        assert_eq!(
            frame.function(),
            LinkFunction::Primary(PrimaryFunction::REQUEST_LINK_STATUS)
        );
        assert_eq!(frame.function().name(), Some("request_link_status"));
        assert!(!frame.carries_user_data());
        assert_eq!(frame.contiguous_user_data(), Some(&[][..]));
        assert_eq!(frame.blocks().count(), 0);
        let (frame, _) = complete(&LINK_STATUS_FRAME);
        assert!(frame.header.control.dir() && !frame.header.control.prm());
        assert_eq!(
            frame.function(),
            LinkFunction::Secondary(SecondaryFunction::LINK_STATUS)
        );
        assert!(!frame.header.control.dfc());
        // The textbook reset link states, 1 -> 1024 (header CRC E9 21).
        let reset = [0x05, 0x64, 0x05, 0xC0, 0x01, 0x00, 0x00, 0x04, 0xE9, 0x21];
        let (frame, _) = complete(&reset);
        assert_eq!(
            frame.function(),
            LinkFunction::Primary(PrimaryFunction::RESET_LINK_STATES)
        );
        assert_eq!((frame.header.destination, frame.header.source), (1, 1024));
    }

    #[test]
    fn frames_back_to_back() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&CLASS_READ_FRAME);
        stream.extend_from_slice(&READ_RESPONSE_FRAME);
        stream.extend_from_slice(&REQUEST_LINK_STATUS_FRAME);
        stream.extend_from_slice(&LINK_STATUS_FRAME);
        let mut rest = &stream[..];
        let mut seen = Vec::new();
        while let LinkResult::Complete { frame, consumed } = parse_link_frame(rest) {
            seen.push((frame.header.source, frame.function().code(), consumed));
            rest = &rest[consumed..];
        }
        assert_eq!(seen, [(1, 4, 27), (2, 4, 135), (1, 9, 10), (100, 11, 10)]);
        assert_eq!(
            parse_link_frame(rest),
            LinkResult::Incomplete { needed: 10 }
        );
    }

    #[test]
    fn split_frame_says_how_much_is_missing() {
        // Before the length octet only the shortest frame is known to be missing...
        assert_eq!(parse_link_frame(&[]), LinkResult::Incomplete { needed: 10 });
        assert_eq!(
            parse_link_frame(&READ_RESPONSE_FRAME[..1]),
            LinkResult::Incomplete { needed: 9 }
        );
        assert_eq!(
            parse_link_frame(&READ_RESPONSE_FRAME[..2]),
            LinkResult::Incomplete { needed: 8 }
        );
        // ...after it, exactly how much, header CRC or not.
        for cut in 3..READ_RESPONSE_FRAME.len() {
            assert_eq!(
                parse_link_frame(&READ_RESPONSE_FRAME[..cut]),
                LinkResult::Incomplete { needed: 135 - cut },
                "cut at {cut}"
            );
        }
        let mut stream = READ_RESPONSE_FRAME[..50].to_vec();
        stream.extend_from_slice(&READ_RESPONSE_FRAME[50..]);
        assert_eq!(complete(&stream).1, 135);
    }

    #[test]
    fn bad_header_crc_is_invalid() {
        let mut frame = CLASS_READ_FRAME;
        frame[4] = 0x0B; // destination 11: the CRC no longer matches
        assert_eq!(
            parse_link_frame(&frame),
            LinkResult::Invalid(LinkError::HeaderCrc {
                expected: crc16(&frame[..8]),
                received: 0xED8F,
            })
        );
        // Judged as soon as the CRC has arrived, before the user data.
        assert!(matches!(
            parse_link_frame(&frame[..10]),
            LinkResult::Invalid(LinkError::HeaderCrc { .. })
        ));
        assert_eq!(parse_link_frame(&frame[..10]), parse_link_frame(&frame));
    }

    #[test]
    fn bad_data_crc_is_complete_but_flagged() {
        let mut frame = READ_RESPONSE_FRAME;
        frame[40] ^= 0xFF; // inside the second block (octets 28..44)
        let (parsed, consumed) = complete(&frame);
        assert_eq!(consumed, 135);
        assert!(!parsed.data_crc_ok);
        let verdicts: Vec<bool> = parsed.blocks().map(|b| b.crc_ok).collect();
        assert_eq!(verdicts, [true, false, true, true, true, true, true]);
        // A broken CRC octet, not data, is just as bad.
        let mut frame = CLASS_READ_FRAME;
        frame[26] ^= 0x01;
        assert!(!complete(&frame).0.data_crc_ok);
    }

    #[test]
    fn invalid_starts_and_lengths() {
        assert_eq!(
            parse_link_frame(&[0x06]),
            LinkResult::Invalid(LinkError::Start {
                offset: 0,
                octet: 0x06
            })
        );
        // dnp3.pcap frame 19: a corrupted start, 05 05.
        let corrupted = [
            0x05, 0x05, 0x11, 0xC4, 0x04, 0x00, 0x03, 0x00, 0x46, 0xA2, 0xC2, 0xC2, 0x14,
        ];
        assert_eq!(
            parse_link_frame(&corrupted),
            LinkResult::Invalid(LinkError::Start {
                offset: 1,
                octet: 0x05
            })
        );
        // DNP3-Malformed.pcap frame 1: length 2.
        let short = [0x05, 0x64, 0x02, 0xC4, 0x0A, 0x00, 0x01, 0x00, 0x97, 0xFE];
        assert_eq!(
            parse_link_frame(&short),
            LinkResult::Invalid(LinkError::Length(2))
        );
        assert_eq!(
            parse_link_frame(&short[..3]),
            LinkResult::Invalid(LinkError::Length(2))
        );
        assert_eq!(LinkError::Length(2).as_str(), "bad_length");
        assert_eq!(
            LinkError::Start {
                offset: 1,
                octet: 5
            }
            .to_string(),
            "DNP3 start octet 1 is 0x05, not 0x64"
        );
        assert_eq!(
            LinkError::HeaderCrc {
                expected: 0x21E9,
                received: 0
            }
            .to_string(),
            "DNP3 link header CRC 0x0000, expected 0x21e9"
        );
    }

    #[test]
    fn length_shorter_than_the_data_that_follows() {
        // opendnp3-conformance-6.6.2.3_dump.pcap frame 4: length 5 but a read follows. The
        // frame is the 10-octet header; what follows is garbage to resynchronise past.
        let segment = [
            0x05, 0x64, 0x05, 0xC4, 0x01, 0x04, 0x01, 0x00, 0x27, 0xB9, 0xC0, 0xC0, 0x01, 0x3C,
            0x02, 0x06, 0x3C, 0x03, 0x06, 0x3C, 0x04, 0x06, 0x9E, 0x30,
        ];
        let (frame, consumed) = complete(&segment);
        assert_eq!((consumed, frame.user_data_len()), (10, 0));
        assert!(!frame.carries_user_data());
        assert!(matches!(
            parse_link_frame(&segment[10..]),
            LinkResult::Invalid(LinkError::Start { offset: 0, .. })
        ));
        assert_eq!(find_link_resync(&segment[10..]), None);
    }

    #[test]
    fn resync_after_garbage() {
        let mut stream = b"\x05\x64garbage\x05\x64\x03".to_vec();
        let garbage = stream.len();
        stream.extend_from_slice(&CLASS_READ_FRAME);
        stream.extend_from_slice(&LINK_STATUS_FRAME);
        assert_eq!(find_link_resync(&stream), Some(garbage));
        assert!(matches!(
            parse_link_frame(&stream[garbage..]),
            LinkResult::Complete { consumed: 27, .. }
        ));
        // Already aligned.
        assert_eq!(find_link_resync(&CLASS_READ_FRAME), Some(0));
        // A header with a bad CRC is skipped; the real one after it is found.
        let mut bad = CLASS_READ_FRAME[..10].to_vec();
        bad[5] = 0x01;
        bad.extend_from_slice(&LINK_STATUS_FRAME);
        assert_eq!(find_link_resync(&bad), Some(10));
    }

    #[test]
    fn resync_on_a_partial_header_at_the_end() {
        let mut stream = vec![0xAA, 0xBB, 0xCC];
        stream.extend_from_slice(&READ_RESPONSE_FRAME[..7]);
        assert_eq!(find_link_resync(&stream), Some(3));
        assert_eq!(find_link_resync(&[0x00, 0x05]), Some(1));
        assert_eq!(find_link_resync(&[0x00, 0x05, 0x64]), Some(1));
        // Sane length required even in a partial header.
        assert_eq!(find_link_resync(&[0x00, 0x05, 0x64, 0x04]), None);
        assert_eq!(find_link_resync(&[0x05, 0x65]), None);
    }

    #[test]
    fn resync_on_pure_garbage() {
        assert_eq!(find_link_resync(&[]), None);
        assert_eq!(find_link_resync(&[0xAA; 64]), None);
        assert_eq!(find_link_resync(b"GET / HTTP/1.1\r\n"), None);
        // Start octets everywhere but never a matching CRC.
        let mut starts: Vec<u8> = [0x05, 0x64, 0x05, 0x64, 0x08].repeat(20);
        starts.extend_from_slice(&[0xAA; 10]);
        assert_eq!(find_link_resync(&starts), None);
    }

    #[test]
    fn encode_round_trips_real_frames() {
        let mut out = [0; MAX_LINK_FRAME_LEN];
        let (frame, _) = complete(&READ_RESPONSE_FRAME);
        let mut buf = [0; MAX_USER_DATA_LEN];
        let data = frame.user_data_into(&mut buf);
        let encoded = encode_link_frame(LinkControl(0x44), 3, 2, data, &mut out).expect("fits");
        assert_eq!(encoded, READ_RESPONSE_FRAME);
        let encoded = encode_link_frame(LinkControl(0x49), 100, 1, &[], &mut out).unwrap();
        assert_eq!(encoded, REQUEST_LINK_STATUS_FRAME);
        assert_eq!(
            encode_link_frame(LinkControl(0x44), 1, 2, &[0; 251], &mut out),
            None
        );
        let largest = encode_link_frame(LinkControl(0x44), 1, 2, &[7; 250], &mut out).unwrap();
        assert_eq!(largest.len(), MAX_LINK_FRAME_LEN);
    }
}
