//! Siemens S7 over ISO-on-TCP: pure, zero-copy, panic-free parsing of TPKT (RFC 1006), COTP
//! (ISO 8073 class 0), S7comm (protocol id 0x32, including userdata and SZL identity lists) and
//! the framing of S7comm-plus (protocol id 0x72).
//!
//! Layers, from the TCP byte stream inwards:
//! - [`parse_tpkt`] frames one TPKT at the front of a reassembled byte stream in the streaming
//!   style (complete + consumed, incomplete + needed, invalid); [`find_tpkt_resync`] finds where
//!   framing can restart after a gap or garbage.
//! - [`parse_cotp`] decodes the TPDU inside: connection request/confirm with their parameters
//!   (TSAPs, from which S7 rack and slot are read), disconnects, errors, and data TPDUs, whose
//!   payloads [`CotpReassembler`] joins until end-of-TSDU, within a fixed bound.
//! - [`parse_s7_payload`] tells S7comm from S7comm-plus from other ISO-on-TCP users and decodes
//!   the PDU: [`parse_s7comm`] and [`parse_s7plus`] are the per-protocol entry points.
//!
//! Every variable part (read/write items, data items, SZL records, block lists) is a borrowed
//! view validated up front, so walking it cannot fail. Code points are open newtypes: unknown
//! values survive parsing. Nothing allocates except the reassembler's buffer.
//!
//! Decoding is strict about structure (declared lengths must match the bytes present) and lenient
//! about values: a function, area or syntax id this crate has no name for is kept, not rejected.
//! Layouts nobody has documented (S7comm-plus object trees, NC file transfer, alarm payloads) are
//! kept as borrowed raw bytes.
//!
//! References cited in comments: "RFC 1006" (ISO transport on TCP), "X.224" (ITU-T X.224 /
//! ISO 8073, the connection-mode transport protocol), and "Wireshark" for the reverse-engineered
//! S7comm layouts of Wireshark's `packet-s7comm.c` and the S7comm-plus layouts of the
//! s7commwireshark plugin's `packet-s7comm_plus.c` (both by Thomas Wiens); ideas only, no code.

mod codes;
mod cotp;
mod plusobj;
#[cfg(test)]
mod proptests;
mod s7comm;
mod s7plus;
mod szl;
mod tis;
mod tpkt;
mod userdata;

pub use codes::{
    Area, BlockType, CotpParamCode, CotpPduType, DataTransportSize, ErrorClass, FunctionCode,
    FunctionGroup, ParamErrorCode, PlusFunction, PlusOpcode, PlusVersion, ReturnCode, Rosctr,
    Subfunction, SyntaxId, SzlId, TisArea, TransportSize, UserdataMethod, UserdataType,
};
pub use cotp::{
    parse_cotp, CotpBody, CotpConnection, CotpError, CotpErrorKind, CotpParam, CotpParams,
    CotpParamsIter, CotpReassembler, CotpTpdu, DiscardReason, RackSlot, Reassembled, Tsap,
    DEFAULT_REASSEMBLY_LIMIT,
};
pub use plusobj::{
    created_objects, get_multi_values, request_target, requested_cpu_state, set_multi_values,
    varint32, varuint32, PlusArea, PlusAttributes, PlusItemAddress, PlusItems, PlusTarget,
    PlusValue, PlusValues, CPU_EXEC_UNIT, DB_AREA, DB_VALUES, IQMCT_VALUES, OPERATING_STATE_REQ,
};
pub use s7comm::{
    parse_s7comm, AnyPointer, BlockControl, BlockFile, BlockRef, DataItem, DataItems,
    DataItemsIter, DbReadArea, HeaderError, PiBlocks, PiBlocksIter, PiService, PlcStop,
    ReturnCodes, S7Body, S7Header, S7Pdu, SetupCommunication, VarAddress, VarSpec, VarSpecs,
    VarSpecsIter,
};
pub use s7plus::{
    parse_s7plus, parse_s7plus_message, s7plus_piece, S7PlusBody, S7PlusMessage, S7PlusPdu,
};
pub use szl::{
    ComponentIdRecord, ComponentIdRecords, ModuleIdRecord, ModuleIdRecords, ModuleVersion, SzlList,
    SzlRecords, SzlRecordsIter,
};
pub use tis::{TisAddress, TisJob, TisValue, TisValues, TisValuesIter, TIS_ADDRESS_LEN};
pub use tpkt::{
    find_tpkt_resync, parse_tpkt, Tpkt, TpktError, TpktHeader, TpktResult, RESYNC_PROBE_LEN,
};
pub use userdata::{
    BlockCount, BlockCounts, BlockCountsIter, BlockEntries, BlockEntriesIter, BlockEntry,
    BlockRecords, BlockRecordsIter, S7DateTime, Userdata, UserdataBody, UserdataData,
    UserdataParam,
};

use core::fmt;

/// Registered TCP port of ISO-on-TCP (RFC 1006), which S7comm and S7comm-plus use.
pub const DEFAULT_PORT: u16 = 102;
/// TPKT header: version, reserved, length (RFC 1006 §6).
pub const TPKT_HEADER_LEN: usize = 4;
/// Smallest TPKT length RFC 1006 allows: the header and a 3-byte TPDU.
pub const TPKT_MIN_LEN: usize = 7;
/// Largest TPKT: the length field is 16 bits and counts the header (RFC 1006 §6).
pub const TPKT_MAX_LEN: usize = 65535;
/// TPKT version: always 3 (RFC 1006 §6).
pub const TPKT_VERSION: u8 = 3;
/// Protocol id, first byte of an S7comm PDU.
pub const S7COMM_PROTOCOL_ID: u8 = 0x32;
/// Protocol id, first byte of an S7comm-plus PDU.
pub const S7PLUS_PROTOCOL_ID: u8 = 0x72;
/// S7comm header without the error fields (job, userdata).
pub const S7_HEADER_LEN: usize = 10;
/// S7comm header of ack (2) and ack_data (3), with error class and error code.
pub const S7_ACK_HEADER_LEN: usize = 12;

/// What a reassembled COTP data payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S7Payload<'a> {
    /// Protocol id 0x32.
    S7comm(S7Pdu<'a>),
    /// Protocol id 0x72.
    S7commPlus(S7PlusPdu<'a>),
    /// Another ISO-on-TCP user (MMS, ICCP, RDP's X.224 data...), by its first byte; not decoded.
    Other(u8),
}

/// Decodes a reassembled COTP data payload (one TSDU): S7comm when it starts with 0x32,
/// S7comm-plus when it starts with 0x72, [`S7Payload::Other`] for any other first byte.
///
/// An error means the payload claimed to be S7comm or S7comm-plus and is not well formed.
pub fn parse_s7_payload(payload: &[u8]) -> Result<S7Payload<'_>, S7Error> {
    match payload.first() {
        None => Err(S7Error::new(S7ErrorKind::Empty, 0)),
        Some(&S7COMM_PROTOCOL_ID) => parse_s7comm(payload).map(S7Payload::S7comm),
        Some(&S7PLUS_PROTOCOL_ID) => parse_s7plus(payload).map(S7Payload::S7commPlus),
        Some(&other) => Ok(S7Payload::Other(other)),
    }
}

/// Why an S7comm or S7comm-plus PDU was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S7ErrorKind {
    /// No bytes at all.
    Empty,
    /// The first byte is not the protocol id the parser was asked for.
    ProtocolId,
    /// The PDU ends before its structure does.
    Truncated,
    /// Bytes after the end of a complete structure.
    TrailingBytes,
    /// A length or count field disagrees with the bytes present.
    LengthMismatch,
    /// A field holding a value the layout does not allow.
    InvalidValue,
}

impl S7ErrorKind {
    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::ProtocolId => "bad_protocol_id",
            Self::Truncated => "truncated",
            Self::TrailingBytes => "trailing_bytes",
            Self::LengthMismatch => "length_mismatch",
            Self::InvalidValue => "invalid_value",
        }
    }
}

impl fmt::Display for S7ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty payload",
            Self::ProtocolId => "wrong protocol id",
            Self::Truncated => "truncated",
            Self::TrailingBytes => "trailing bytes",
            Self::LengthMismatch => "length mismatch",
            Self::InvalidValue => "invalid value",
        })
    }
}

/// A rejected S7comm or S7comm-plus PDU: what was wrong, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct S7Error {
    pub kind: S7ErrorKind,
    /// Offset in the payload (0 = protocol id). For `Truncated` where the missing bytes would
    /// start; for `TrailingBytes` the first byte not accounted for; otherwise the first byte of
    /// the offending field.
    pub offset: usize,
}

impl S7Error {
    pub(crate) const fn new(kind: S7ErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }
}

impl fmt::Display for S7Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S7 PDU: {} at offset {}", self.kind, self.offset)
    }
}

impl core::error::Error for S7Error {}

/// Byte offsets of fixed fields, smoltcp style, one sub-module per layer.
mod field {
    use core::ops::Range;

    pub type Field = Range<usize>;

    /// RFC 1006 §6, offsets within the TPKT.
    pub mod tpkt {
        use super::Field;
        pub const VERSION: usize = 0;
        pub const RESERVED: usize = 1;
        /// Counts the whole packet, header included.
        pub const LENGTH: Field = 2..4;
    }

    /// X.224 §13, offsets within the TPDU.
    pub mod cotp {
        use super::Field;
        /// Length indicator: header bytes after this one.
        pub const LI: usize = 0;
        /// PDU type in the high nibble, credit (CR, CC, AK, RJ) in the low one.
        pub const TYPE: usize = 1;
        pub const DST_REF: Field = 2..4;
        pub const SRC_REF: Field = 4..6;
        /// CR, CC: class and options.
        pub const CLASS: usize = 6;
        /// CR, CC: first parameter.
        pub const CONN_PARAMS: usize = 7;
        /// DR: disconnect reason.
        pub const DR_REASON: usize = 6;
        pub const DR_PARAMS: usize = 7;
        /// DC: first parameter.
        pub const DC_PARAMS: usize = 6;
        /// DT (class 0 normal format), ED: EOT bit and TPDU number.
        pub const DT_NR: usize = 2;
        /// ED, AK, RJ, ER: byte after the destination reference.
        pub const AFTER_DST_REF: usize = 4;
        /// ER: first parameter.
        pub const ER_PARAMS: usize = 5;
    }

    /// S7comm header (Wireshark), offsets within the PDU.
    pub mod s7 {
        use super::Field;
        pub const PROTOCOL_ID: usize = 0;
        pub const ROSCTR: usize = 1;
        pub const REDUNDANCY_ID: Field = 2..4;
        pub const PDU_REF: Field = 4..6;
        pub const PARAM_LEN: Field = 6..8;
        pub const DATA_LEN: Field = 8..10;
        /// Ack and ack_data only.
        pub const ERROR_CLASS: usize = 10;
        pub const ERROR_CODE: usize = 11;
    }

    /// Offsets within the parameter part of job and ack_data PDUs.
    pub mod param {
        use super::Field;
        pub const FUNCTION: usize = 0;
        /// Read/write var: item count, then the items.
        pub const ITEM_COUNT: usize = 1;
        pub const ITEMS: usize = 2;
        /// Setup communication.
        pub const SETUP_MAX_AMQ_CALLING: Field = 2..4;
        pub const SETUP_MAX_AMQ_CALLED: Field = 4..6;
        pub const SETUP_PDU_LEN: Field = 6..8;
        pub const SETUP_LEN: usize = 8;
        /// Block transfer: function status, then the per-function fields.
        pub const BLOCK_STATUS: usize = 1;
        /// Upload id of start upload, upload and end upload jobs.
        pub const BLOCK_ID: Field = 4..8;
        /// End upload / download ended jobs: an error code; the other jobs have two unexplained
        /// bytes here.
        pub const BLOCK_ERROR_CODE: Field = 2..4;
        pub const BLOCK_FILENAME_LEN: usize = 8;
        /// PI service: 7 bytes nobody has explained, then the parameter block length.
        pub const PI_UNKNOWN: Field = 1..8;
        pub const PI_PARAM_LEN: Field = 8..10;
        pub const PI_PARAM: usize = 10;
        /// PLC stop: 5 unexplained bytes, then the service name length.
        pub const STOP_UNKNOWN: Field = 1..6;
        pub const STOP_NAME_LEN: usize = 6;
        pub const STOP_NAME: usize = 7;
    }

    /// One variable specification of a read/write job (Wireshark `s7comm_decode_param_item`).
    pub mod var_spec {
        use super::Field;
        pub const SPEC_TYPE: usize = 0;
        /// Bytes after this one: syntax id and address.
        pub const LENGTH: usize = 1;
        pub const SYNTAX_ID: usize = 2;
        pub const ADDRESS: usize = 3;
        /// S7ANY address, offsets within the specification.
        pub const ANY_TRANSPORT_SIZE: usize = 3;
        pub const ANY_COUNT: Field = 4..6;
        pub const ANY_DB: Field = 6..8;
        pub const ANY_AREA: usize = 8;
        pub const ANY_ADDRESS: Field = 9..12;
        /// The length byte's value for an S7ANY specification.
        pub const ANY_LENGTH: u8 = 10;
    }

    /// One data item: return code, transport size, length, data.
    pub mod data_item {
        use super::Field;
        pub const RETURN_CODE: usize = 0;
        pub const TRANSPORT_SIZE: usize = 1;
        pub const LENGTH: Field = 2..4;
        pub const DATA: usize = 4;
    }

    /// Userdata parameter part (Wireshark `s7comm_decode_ud`).
    pub mod ud_param {
        use super::Field;
        pub const HEAD: Field = 0..3;
        pub const LENGTH: usize = 3;
        pub const METHOD: usize = 4;
        /// Type in the high nibble, function group in the low one.
        pub const TYPE_GROUP: usize = 5;
        pub const SUBFUNCTION: usize = 6;
        pub const SEQUENCE: usize = 7;
        pub const SHORT_LEN: usize = 8;
        /// Responses and follow-up requests only.
        pub const DATA_UNIT_REF: usize = 8;
        pub const LAST_DATA_UNIT: usize = 9;
        pub const ERROR_CODE: Field = 10..12;
        pub const LONG_LEN: usize = 12;
    }

    /// SZL response data, after the userdata data header.
    pub mod szl {
        use super::Field;
        pub const ID: Field = 0..2;
        pub const INDEX: Field = 2..4;
        pub const RECORD_LEN: Field = 4..6;
        pub const RECORD_COUNT: Field = 6..8;
        pub const RECORDS: usize = 8;
    }

    /// S7comm-plus (s7commwireshark), offsets within the PDU.
    pub mod plus {
        use super::Field;
        pub const PROTOCOL_ID: usize = 0;
        pub const VERSION: usize = 1;
        pub const DATA_LEN: Field = 2..4;
        pub const DATA: usize = 4;
        /// Keep-alive (version 0xFF): sequence number where the length would be.
        pub const KEEPALIVE_SEQ: usize = 2;
        pub const HEADER_LEN: usize = 4;
        pub const TRAILER_LEN: usize = 4;
    }
}

/// Reads the big-endian u16 at `range` of `bytes`; `None` if it is not there.
pub(crate) fn be_u16(bytes: &[u8], range: core::ops::Range<usize>) -> Option<u16> {
    let pair: [u8; 2] = bytes.get(range)?.try_into().ok()?;
    Some(u16::from_be_bytes(pair))
}

/// Reads the big-endian u32 at `range` of `bytes`; `None` if it is not there.
pub(crate) fn be_u32(bytes: &[u8], range: core::ops::Range<usize>) -> Option<u32> {
    let quad: [u8; 4] = bytes.get(range)?.try_into().ok()?;
    Some(u32::from_be_bytes(quad))
}

/// Reads the big-endian 24-bit number at `range` of `bytes`; `None` if it is not there.
pub(crate) fn be_u24(bytes: &[u8], range: core::ops::Range<usize>) -> Option<u32> {
    let [a, b, c]: [u8; 3] = bytes.get(range)?.try_into().ok()?;
    Some(u32::from_be_bytes([0, a, b, c]))
}

/// `bytes` without trailing NULs and spaces: how S7 pads its fixed-width text fields.
pub fn trim_text(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |last| last + 1);
    bytes.get(..end).unwrap_or_default()
}

/// A decimal number written in ASCII digits (block numbers, lengths in block transfer); `None`
/// for an empty field, any other character, or a value beyond u32.
pub(crate) fn ascii_decimal(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u32, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(digit)
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Decodes a hex string as tshark prints `tcp.payload`; test fixtures only.
    pub fn hex(text: &str) -> Vec<u8> {
        let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        assert!(clean.len().is_multiple_of(2), "odd hex length");
        clean
            .chunks(2)
            .map(|pair| {
                let s = core::str::from_utf8(pair).expect("ascii");
                u8::from_str_radix(s, 16).expect("hex digit")
            })
            .collect()
    }

    /// The COTP DT payload of one TPKT (header 4 + DT 3 bytes stripped): S7 fixtures are
    /// recorded as whole TCP payloads, as tshark shows them.
    pub fn s7_of(tcp_payload: &[u8]) -> &[u8] {
        &tcp_payload[7..]
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{hex, s7_of};
    use super::*;

    #[test]
    fn payload_dispatch() {
        // s7ident.pcap frame 8: setup communication job.
        let s7 = hex("0300001902f08032010000000000080000f0000001000101e0");
        assert!(matches!(
            parse_s7_payload(s7_of(&s7)),
            Ok(S7Payload::S7comm(_))
        ));
        // S7-1511_db6w0_HMI.pcap frame 10: S7comm-plus V2 response.
        let plus = hex("0300002002f08072020011320000054200000002340000000000000072020000");
        assert!(matches!(
            parse_s7_payload(s7_of(&plus)),
            Ok(S7Payload::S7commPlus(_))
        ));
        assert_eq!(parse_s7_payload(&[0x61, 0x01]), Ok(S7Payload::Other(0x61)));
        assert_eq!(
            parse_s7_payload(&[]),
            Err(S7Error::new(S7ErrorKind::Empty, 0))
        );
        assert_eq!(
            parse_s7_payload(&[0x32, 0x01]),
            Err(S7Error::new(S7ErrorKind::Truncated, 2))
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(trim_text(b"CPU 315-2 PN/DP\0\0\0"), b"CPU 315-2 PN/DP");
        assert_eq!(trim_text(b"6ES7 315-2EH14-0AB0 "), b"6ES7 315-2EH14-0AB0");
        assert_eq!(trim_text(b"    \0"), b"");
        assert_eq!(trim_text(b""), b"");
        assert_eq!(ascii_decimal(b"00001"), Some(1));
        assert_eq!(ascii_decimal(b"000216"), Some(216));
        assert_eq!(ascii_decimal(b"0x1"), None);
        assert_eq!(ascii_decimal(b""), None);
        assert_eq!(ascii_decimal(b"99999999999"), None);
        assert_eq!(be_u24(&[0, 0, 0x2b], 0..3), Some(0x2b));
        assert_eq!(be_u32(&[1, 2, 3], 0..4), None);
        assert_eq!(
            S7Error::new(S7ErrorKind::LengthMismatch, 6).to_string(),
            "S7 PDU: length mismatch at offset 6"
        );
        assert_eq!(S7ErrorKind::TrailingBytes.as_str(), "trailing_bytes");
    }
}
