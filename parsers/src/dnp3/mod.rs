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
//! References cited in comments: "§x" is a clause of IEEE 1815-2012, "A.x" an object
//! definition of its Annex A.

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
    AppFunction, CommandStatus, ControlCode, DoubleBitState, Flags, LinkFunction,
    PrimaryFunction, SecondaryFunction,
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

/// The two start octets of every data link frame (§9.2.4.1.1).
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
/// The transport header: one octet in front of every segment (§8.2.1).
pub const TRANSPORT_HEADER_LEN: usize = 1;
/// Most application octets one segment carries.
pub const MAX_SEGMENT_PAYLOAD: usize = MAX_USER_DATA_LEN - TRANSPORT_HEADER_LEN;

/// Byte offsets of every fixed field, smoltcp style: a parser checks a length once (or reads
/// through `get`) and then names fields instead of doing arithmetic on the fly.
mod field {
    use core::ops::Range;

    pub type Field = Range<usize>;

    // Data link header (§9.2.4.1).
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

/// Reads the little-endian `N` octets at `at` (DNP3 is little-endian throughout, §4.2.2.7).
fn le<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..)?.first_chunk().copied()
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    le(bytes, at).map(u16::from_le_bytes)
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    le(bytes, at).map(u32::from_le_bytes)
}

/// DNP3 time (§11.6.2, "DNP3TIME"): milliseconds since 1970-01-01 UTC in 48 bits.
fn le_u48(bytes: &[u8], at: usize) -> Option<u64> {
    let [a, b, c, d, e, f] = le::<6>(bytes, at)?;
    Some(u64::from_le_bytes([a, b, c, d, e, f, 0, 0]))
}
