//! Modbus/TCP: pure, zero-copy, panic-free parsing of MBAP framing and Modbus PDUs.
//!
//! Layers, from the TCP byte stream inwards:
//! - [`parse_adu`] frames one MBAP ADU at the front of a reassembled byte stream and answers in
//!   the streaming style (complete + consumed, incomplete + needed, invalid); [`find_resync`]
//!   finds where framing can restart after a gap or garbage.
//! - [`parse_pdu`] decodes one PDU for a known [`Direction`] into a [`ModbusPdu`] whose variable
//!   parts are borrowed views ([`Bits`], [`Registers`], file-record and device-identification
//!   iterators), all validated up front so walking them cannot fail.
//!
//! Decoding is strict on purpose: TCP port 502 carries non-Modbus bytes in real captures, and
//! failing validation is how they are told apart. Code points stay open ([`FunctionCode`] and
//! friends wrap any byte), so unknown but well-framed traffic is kept, not rejected.
//!
//! References cited in comments: "AP §x" is the MODBUS Application Protocol Specification
//! V1.1b3, "TCP §x" the MODBUS Messaging on TCP/IP Implementation Guide V1.0b.

mod codes;
mod data;
mod frame;
mod pdu;
#[cfg(test)]
mod proptests;

pub use codes::{umas_function_name, DiagnosticSubfunction, ExceptionCode, FunctionCode};
pub use data::{
    Bits, BitsIter, DeviceIdObject, DeviceIdObjects, DeviceIdObjectsIter, FileRecord,
    FileRecordRef, FileRecordRequests, FileRecordRequestsIter, FileRecordResponses,
    FileRecordResponsesIter, FileRecordWrites, FileRecordWritesIter, Registers, RegistersIter,
};
pub use frame::{find_resync, parse_adu, AduResult, FrameError, MbapHeader, ModbusAdu};
pub use pdu::{
    parse_pdu, Direction, ModbusPdu, PduBody, PduError, PduErrorKind, COIL_OFF, COIL_ON,
    FILE_REFERENCE_TYPE, MAX_COMM_EVENTS, MAX_FIFO_COUNT, MAX_READ_BITS, MAX_READ_REGISTERS,
    MAX_RW_WRITE_REGISTERS, MAX_WRITE_BITS, MAX_WRITE_REGISTERS, MEI_CANOPEN_GENERAL_REFERENCE,
    MEI_READ_DEVICE_ID,
};

/// MBAP header: transaction id, protocol id, length, unit id (TCP §3.1.3).
pub const MBAP_HEADER_LEN: usize = 7;
/// Largest PDU: inherited from the 256-byte serial line ADU minus address and CRC (AP §4.1).
pub const MAX_PDU_LEN: usize = 253;
/// Largest PDU framing accepts: one more than the specification, as real devices send
/// (Schneider UMAS, fc 90). Public function codes are still held to [`MAX_PDU_LEN`].
pub const MAX_FRAMED_PDU_LEN: usize = MAX_PDU_LEN + 1;
/// Largest ADU framing accepts: the header and the largest framed PDU.
pub const MAX_ADU_LEN: usize = MBAP_HEADER_LEN + MAX_FRAMED_PDU_LEN;
/// Smallest ADU: the header and a lone function code.
pub const MIN_ADU_LEN: usize = MBAP_HEADER_LEN + 1;
/// Registered TCP port of Modbus/TCP (TCP §4.2).
pub const DEFAULT_PORT: u16 = 502;

/// Byte offsets of every fixed field, smoltcp style: a parser checks a length once (or reads
/// through `get`) and then names fields instead of doing arithmetic on the fly.
mod field {
    use core::ops::Range;

    pub type Field = Range<usize>;

    // MBAP header, offsets within the ADU (TCP §3.1.3): transaction id 0..2, then these, then
    // the unit id at 6 (`MbapHeader::from_bytes` destructures all seven bytes at once).
    pub const PROTOCOL_ID: Field = 2..4;
    /// Counts the unit id and the PDU: everything after this field.
    pub const LENGTH: Field = 4..6;
    /// The function code, first byte of the PDU.
    pub const ADU_FUNCTION: usize = 7;

    // PDU, offsets from its function code byte (AP §6).
    pub const FUNCTION: usize = 0;
    /// Starting address; also the diagnostics sub-function, the event counter status word and
    /// the FIFO pointer address, which sit at the same place.
    pub const ADDRESS: Field = 1..3;
    /// Quantity; also the value of single writes, the AND mask and the event count.
    pub const QUANTITY: Field = 3..5;
    pub const OR_MASK: Field = 5..7;
    /// Byte count and values of fc 15/16 requests.
    pub const WRITE_BYTE_COUNT: usize = 5;
    pub const WRITE_VALUES: usize = 6;
    /// Byte count of responses and of fc 20/21 requests, and the data it counts.
    pub const BYTE_COUNT: usize = 1;
    pub const DATA: usize = 2;
    /// The one-byte payloads: exception code, exception status.
    pub const SINGLE_BYTE: usize = 1;
    /// Data of diagnostics, after the sub-function.
    pub const DIAGNOSTIC_DATA: usize = 3;

    // fc 12 response, after the byte count.
    pub const LOG_STATUS: Field = 2..4;
    pub const LOG_EVENT_COUNT: Field = 4..6;
    pub const LOG_MESSAGE_COUNT: Field = 6..8;
    pub const LOG_EVENTS: usize = 8;

    // fc 23 request, after the read address and quantity.
    pub const RW_WRITE_ADDRESS: Field = 5..7;
    pub const RW_WRITE_QUANTITY: Field = 7..9;
    pub const RW_BYTE_COUNT: usize = 9;
    pub const RW_VALUES: usize = 10;

    // fc 24 response: the byte count is 16 bits here and counts the FIFO count too.
    pub const FIFO_BYTE_COUNT: Field = 1..3;
    pub const FIFO_COUNT: Field = 3..5;
    pub const FIFO_VALUES: usize = 5;

    // fc 43.
    pub const MEI_TYPE: usize = 1;
    pub const MEI_DATA: usize = 2;
    pub const READ_DEVICE_ID_CODE: usize = 2;
    pub const OBJECT_ID: usize = 3;
    pub const CONFORMITY_LEVEL: usize = 3;
    pub const MORE_FOLLOWS: usize = 4;
    pub const NEXT_OBJECT_ID: usize = 5;
    pub const NUMBER_OF_OBJECTS: usize = 6;
    pub const OBJECTS: usize = 7;

    // File record sub-request (fc 20 request, fc 21), offsets within the sub-request.
    pub const SUB_FILE_NUMBER: Field = 1..3;
    pub const SUB_RECORD_NUMBER: Field = 3..5;
    pub const SUB_RECORD_LENGTH: Field = 5..7;
    pub const SUB_REQUEST_LEN: usize = 7;
}
