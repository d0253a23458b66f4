//! Strict decoding of one Modbus PDU (AP §6, §7) for a known direction.
//!
//! Every length and count is checked against the bytes actually present, so a PDU is either
//! accepted whole, with views that cannot fail later, or rejected with the reason and offset.

use core::fmt;

use super::data::{
    be_u16, split_device_id_object, split_file_sub_response, split_file_write, Bits,
    DeviceIdObjects, FileRecordRequests, FileRecordResponses, FileRecordWrites, Registers,
};
use super::field::{self, Field};
use super::{DiagnosticSubfunction, ExceptionCode, FunctionCode, MAX_FRAMED_PDU_LEN, MAX_PDU_LEN};

/// Quantity limits of AP §6, named after the request they bound.
pub const MAX_READ_BITS: u16 = 2000;
pub const MAX_READ_REGISTERS: u16 = 125;
pub const MAX_WRITE_BITS: u16 = 0x07B0;
pub const MAX_WRITE_REGISTERS: u16 = 0x7B;
/// Write half of read/write multiple registers (fc 23).
pub const MAX_RW_WRITE_REGISTERS: u16 = 0x79;
/// Registers a FIFO queue may hold (fc 24).
pub const MAX_FIFO_COUNT: u16 = 31;
/// Event bytes in a comm event log response (fc 12).
pub const MAX_COMM_EVENTS: usize = 64;

/// Write single coil values (AP §6.5); any other value is an illegal data value.
pub const COIL_ON: u16 = 0xFF00;
pub const COIL_OFF: u16 = 0x0000;

/// The only reference type of file record sub-requests and sub-responses (AP §6.14).
pub const FILE_REFERENCE_TYPE: u8 = 6;

/// MEI types of fc 43 (AP §6.19-§6.21).
pub const MEI_CANOPEN_GENERAL_REFERENCE: u8 = 0x0D;
pub const MEI_READ_DEVICE_ID: u8 = 0x0E;

/// Which side sent the PDU. Requests and responses of one function code differ in layout;
/// the caller knows which it has (by port, or by the TCP handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

impl Direction {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }

    pub const fn opposite(self) -> Self {
        match self {
            Self::Request => Self::Response,
            Self::Response => Self::Request,
        }
    }
}

/// Why a PDU was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PduErrorKind {
    /// No function code.
    Empty,
    /// The PDU ends before its structure does.
    Truncated,
    /// Bytes after the end of a complete structure.
    TrailingBytes,
    /// A byte count disagrees with the bytes present or with the quantity it must match.
    ByteCountMismatch,
    /// A quantity (or a byte count standing for one) outside the limits of AP §6.
    QuantityOutOfRange,
    /// A field holding a value the spec does not allow.
    InvalidValue,
}

impl PduErrorKind {
    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Truncated => "truncated",
            Self::TrailingBytes => "trailing_bytes",
            Self::ByteCountMismatch => "byte_count_mismatch",
            Self::QuantityOutOfRange => "quantity_out_of_range",
            Self::InvalidValue => "invalid_value",
        }
    }
}

impl fmt::Display for PduErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty PDU",
            Self::Truncated => "truncated",
            Self::TrailingBytes => "trailing bytes",
            Self::ByteCountMismatch => "byte count mismatch",
            Self::QuantityOutOfRange => "quantity out of range",
            Self::InvalidValue => "invalid value",
        })
    }
}

/// A rejected PDU: what was wrong, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PduError {
    /// Exception bit cleared; 0 for an empty PDU.
    pub function: FunctionCode,
    pub kind: PduErrorKind,
    /// Offset in the PDU (0 = function code). For `Truncated` the PDU length, where the missing
    /// bytes would start; for `TrailingBytes` the first byte not accounted for; otherwise the
    /// first byte of the offending field.
    pub offset: usize,
}

impl fmt::Display for PduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} PDU: {} at offset {}",
            self.function, self.kind, self.offset
        )
    }
}

impl core::error::Error for PduError {}

/// A decoded PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusPdu<'a> {
    /// Exception bit cleared: an exception response to read coils has function 1.
    pub function: FunctionCode,
    pub body: PduBody<'a>,
}

impl ModbusPdu<'_> {
    /// The exception code of an exception response.
    pub fn exception(&self) -> Option<ExceptionCode> {
        match self.body {
            PduBody::Exception { code } => Some(code),
            _ => None,
        }
    }

    pub fn is_exception(&self) -> bool {
        self.exception().is_some()
    }

    /// The (first) data address the PDU names: starting address of reads and writes, the read
    /// address of fc 23, the FIFO pointer of fc 24. Responses that name none give `None`.
    pub fn address(&self) -> Option<u16> {
        match self.body {
            PduBody::ReadRequest { address, .. }
            | PduBody::WriteSingleCoil { address, .. }
            | PduBody::WriteSingleRegister { address, .. }
            | PduBody::WriteMultipleCoilsRequest { address, .. }
            | PduBody::WriteMultipleRegistersRequest { address, .. }
            | PduBody::WriteMultipleResponse { address, .. }
            | PduBody::MaskWriteRegister { address, .. } => Some(address),
            PduBody::ReadWriteMultipleRequest { read_address, .. } => Some(read_address),
            PduBody::ReadFifoQueueRequest { fifo_address } => Some(fifo_address),
            _ => None,
        }
    }

    /// Number of coils or registers the PDU covers from [`Self::address`]: 1 for single
    /// writes and mask write, the read quantity of fc 23, the register count of register read
    /// responses. `None` for bit read responses, which only carry a byte count.
    pub fn quantity(&self) -> Option<u16> {
        match self.body {
            PduBody::ReadRequest { quantity, .. }
            | PduBody::WriteMultipleCoilsRequest { quantity, .. }
            | PduBody::WriteMultipleRegistersRequest { quantity, .. }
            | PduBody::WriteMultipleResponse { quantity, .. } => Some(quantity),
            PduBody::WriteSingleCoil { .. }
            | PduBody::WriteSingleRegister { .. }
            | PduBody::MaskWriteRegister { .. } => Some(1),
            PduBody::ReadWriteMultipleRequest { read_quantity, .. } => Some(read_quantity),
            PduBody::ReadRegistersResponse { registers }
            | PduBody::ReadFifoQueueResponse { registers } => u16::try_from(registers.len()).ok(),
            _ => None,
        }
    }
}

/// Decoded PDU contents, by function code and direction. Everything variable is borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduBody<'a> {
    /// fc 1-4 request. Quantity 1..=2000 (bits) or 1..=125 (registers).
    ReadRequest { address: u16, quantity: u16 },
    /// fc 1, 2 response: every bit of the data bytes; narrow with [`Bits::with_count`] once the
    /// request's quantity is known.
    ReadBitsResponse { bits: Bits<'a> },
    /// fc 3, 4, 23 response.
    ReadRegistersResponse { registers: Registers<'a> },
    /// fc 5 request and response; value is [`COIL_ON`] or [`COIL_OFF`].
    WriteSingleCoil { address: u16, value: u16 },
    /// fc 6 request and response.
    WriteSingleRegister { address: u16, value: u16 },
    /// fc 15 request: quantity 1..=1968, exactly `quantity` bits.
    WriteMultipleCoilsRequest {
        address: u16,
        quantity: u16,
        bits: Bits<'a>,
    },
    /// fc 16 request: quantity 1..=123, exactly `quantity` registers.
    WriteMultipleRegistersRequest {
        address: u16,
        quantity: u16,
        registers: Registers<'a>,
    },
    /// fc 15, 16 response.
    WriteMultipleResponse { address: u16, quantity: u16 },
    /// fc 7 response.
    ReadExceptionStatusResponse { status: u8 },
    /// fc 8 request and response; `data` has an even length (one word for sub-functions
    /// 1-4 and 10-20).
    Diagnostics {
        subfunction: DiagnosticSubfunction,
        data: &'a [u8],
    },
    /// fc 11 response.
    CommEventCounterResponse { status: u16, event_count: u16 },
    /// fc 12 response; `events` is at most 64 bytes, most recent first.
    CommEventLogResponse {
        status: u16,
        event_count: u16,
        message_count: u16,
        events: &'a [u8],
    },
    /// fc 17 response: device-specific server id, run indicator and additional data.
    ReportServerIdResponse { data: &'a [u8] },
    /// fc 20 request.
    ReadFileRecordRequest { records: FileRecordRequests<'a> },
    /// fc 20 response.
    ReadFileRecordResponse { records: FileRecordResponses<'a> },
    /// fc 21 request and response (the response echoes the request).
    WriteFileRecord { records: FileRecordWrites<'a> },
    /// fc 22 request and response.
    MaskWriteRegister {
        address: u16,
        and_mask: u16,
        or_mask: u16,
    },
    /// fc 23 request: read quantity 1..=125, write quantity 1..=121.
    ReadWriteMultipleRequest {
        read_address: u16,
        read_quantity: u16,
        write_address: u16,
        write_quantity: u16,
        registers: Registers<'a>,
    },
    /// fc 24 request.
    ReadFifoQueueRequest { fifo_address: u16 },
    /// fc 24 response: at most 31 registers.
    ReadFifoQueueResponse { registers: Registers<'a> },
    /// fc 43 / MEI 0x0E request. Read device id code 1..=4 (basic, regular, extended,
    /// individual object).
    ReadDeviceIdRequest {
        read_device_id_code: u8,
        object_id: u8,
    },
    /// fc 43 / MEI 0x0E response.
    ReadDeviceIdResponse {
        read_device_id_code: u8,
        conformity_level: u8,
        more_follows: bool,
        next_object_id: u8,
        objects: DeviceIdObjects<'a>,
    },
    /// fc 43 with any other MEI type, e.g. 0x0D CANopen general reference: kept raw.
    EncapsulatedOther { mei_type: u8, data: &'a [u8] },
    /// fc 7, 11, 12, 17 request: the function code alone.
    Empty,
    /// Exception response (function code with the exception bit set, AP §7).
    Exception { code: ExceptionCode },
    /// User-defined, reserved or unknown function code: the data after it, kept raw.
    Other { data: &'a [u8] },
}

impl PduBody<'_> {
    /// Whether a write single coil turns the coil on; `None` for any other body.
    pub fn coil_on(&self) -> Option<bool> {
        match self {
            Self::WriteSingleCoil { value, .. } => Some(*value == COIL_ON),
            _ => None,
        }
    }
}

/// Decodes a PDU (function code byte first) sent in direction `dir`.
///
/// Rejects what the spec does not allow rather than guess: wrong lengths, byte counts that
/// disagree, quantities beyond the limits of AP §6, and the few values the spec enumerates
/// (coil value, file reference type, device id code and more-follows flag, exception code 0).
/// Exception responses are rejected in the request direction. Function codes this crate has
/// no decoder for are not errors: they come back as [`PduBody::Other`].
pub fn parse_pdu(pdu: &[u8], dir: Direction) -> Result<ModbusPdu<'_>, PduError> {
    let Some(&code) = pdu.first() else {
        return Err(PduError {
            function: FunctionCode(0),
            kind: PduErrorKind::Empty,
            offset: 0,
        });
    };
    let sent = FunctionCode(code);
    let r = Reader {
        pdu,
        function: sent.without_exception_bit(),
    };
    // Functions without a public definition may use the one byte framing allows beyond the
    // specification (Schneider UMAS, fc 90); public ones are held to it.
    let limit = if r.function.name().is_some() {
        MAX_PDU_LEN
    } else {
        MAX_FRAMED_PDU_LEN
    };
    if pdu.len() > limit {
        return Err(r.error(PduErrorKind::TrailingBytes, limit));
    }
    // An exception to function code 0 is a server's proper answer to a function-code scan;
    // a request for function 0 is malformed.
    let body = if sent.is_exception() {
        exception(&r, dir)?
    } else if r.function.0 == 0 {
        return Err(r.error(PduErrorKind::InvalidValue, field::FUNCTION));
    } else {
        match dir {
            Direction::Request => request(&r)?,
            Direction::Response => response(&r)?,
        }
    };
    Ok(ModbusPdu {
        function: r.function,
        body,
    })
}

/// Whether a PDU of `len` bytes starting with function code byte `code` has a length that
/// could decode in at least one direction. A cheap necessary condition, for judging an ADU whose
/// PDU has not fully arrived (resynchronisation); every PDU [`parse_pdu`] accepts passes it.
pub(super) fn plausible_pdu_len(code: u8, len: usize) -> bool {
    let fc = FunctionCode(code);
    if fc.is_exception() {
        return len == field::SINGLE_BYTE + 1;
    }
    let (fixed, bits, regs) = (field::QUANTITY.end, field::DATA, field::DATA);
    let max_bits = usize::from(MAX_READ_BITS).div_ceil(8);
    let max_regs = 2 * usize::from(MAX_READ_REGISTERS);
    let max_write_bits = usize::from(MAX_WRITE_BITS).div_ceil(8);
    let max_write_regs = 2 * usize::from(MAX_WRITE_REGISTERS);
    let max_rw_regs = 2 * usize::from(MAX_RW_WRITE_REGISTERS);
    let max_fifo = 2 * usize::from(MAX_FIFO_COUNT);
    let either = |request: core::ops::RangeInclusive<usize>,
                  response: core::ops::RangeInclusive<usize>| {
        request.contains(&len) || response.contains(&len)
    };
    match fc {
        FunctionCode::READ_COILS | FunctionCode::READ_DISCRETE_INPUTS => {
            either(fixed..=fixed, bits + 1..=bits + max_bits)
        }
        FunctionCode::READ_HOLDING_REGISTERS | FunctionCode::READ_INPUT_REGISTERS => {
            either(fixed..=fixed, regs + 2..=regs + max_regs)
        }
        FunctionCode::WRITE_SINGLE_COIL | FunctionCode::WRITE_SINGLE_REGISTER => len == fixed,
        FunctionCode::READ_EXCEPTION_STATUS => either(1..=1, 2..=2),
        FunctionCode::DIAGNOSTICS => len >= field::DIAGNOSTIC_DATA && len % 2 == 1,
        FunctionCode::GET_COMM_EVENT_COUNTER => either(1..=1, fixed..=fixed),
        FunctionCode::GET_COMM_EVENT_LOG => either(
            1..=1,
            field::LOG_EVENTS..=field::LOG_EVENTS + MAX_COMM_EVENTS,
        ),
        FunctionCode::WRITE_MULTIPLE_COILS => either(
            field::WRITE_VALUES + 1..=field::WRITE_VALUES + max_write_bits,
            fixed..=fixed,
        ),
        FunctionCode::WRITE_MULTIPLE_REGISTERS => either(
            field::WRITE_VALUES + 2..=field::WRITE_VALUES + max_write_regs,
            fixed..=fixed,
        ),
        FunctionCode::MASK_WRITE_REGISTER => len == field::OR_MASK.end,
        FunctionCode::READ_WRITE_MULTIPLE_REGISTERS => either(
            field::RW_VALUES + 2..=field::RW_VALUES + max_rw_regs,
            regs + 2..=regs + max_regs,
        ),
        FunctionCode::READ_FIFO_QUEUE => either(
            field::ADDRESS.end..=field::ADDRESS.end,
            field::FIFO_VALUES..=field::FIFO_VALUES + max_fifo,
        ),
        FunctionCode::READ_FILE_RECORD
        | FunctionCode::WRITE_FILE_RECORD
        | FunctionCode::ENCAPSULATED_INTERFACE => (field::DATA..=MAX_PDU_LEN).contains(&len),
        // Other codes, and the fc 7/11/12/17 requests made of the function code alone.
        _ if fc.name().is_some() => (1..=MAX_PDU_LEN).contains(&len),
        // Undefined codes may use the extra byte framing allows (see `parse_pdu`).
        _ => (1..=MAX_FRAMED_PDU_LEN).contains(&len),
    }
}

/// The PDU being decoded, with checked accessors that turn missing bytes into errors.
struct Reader<'a> {
    pdu: &'a [u8],
    function: FunctionCode,
}

impl<'a> Reader<'a> {
    fn error(&self, kind: PduErrorKind, offset: usize) -> PduError {
        PduError {
            function: self.function,
            kind,
            offset,
        }
    }

    fn truncated(&self) -> PduError {
        self.error(PduErrorKind::Truncated, self.pdu.len())
    }

    /// `Err(kind at offset)` unless `ok`.
    fn ensure(&self, ok: bool, kind: PduErrorKind, offset: usize) -> Result<(), PduError> {
        if ok {
            Ok(())
        } else {
            Err(self.error(kind, offset))
        }
    }

    /// For fixed-layout PDUs: exactly `len` bytes.
    fn exact_len(&self, len: usize) -> Result<(), PduError> {
        self.min_len(len)?;
        self.ensure(self.pdu.len() == len, PduErrorKind::TrailingBytes, len)
    }

    fn min_len(&self, len: usize) -> Result<(), PduError> {
        if self.pdu.len() < len {
            return Err(self.truncated());
        }
        Ok(())
    }

    fn u8(&self, at: usize) -> Result<u8, PduError> {
        self.pdu.get(at).copied().ok_or_else(|| self.truncated())
    }

    fn u16(&self, at: Field) -> Result<u16, PduError> {
        be_u16(self.pdu, at).ok_or_else(|| self.truncated())
    }

    /// A quantity field, which must be in `1..=max`.
    fn quantity(&self, at: Field, max: u16) -> Result<u16, PduError> {
        let offset = at.start;
        let quantity = self.u16(at)?;
        self.ensure(
            (1..=max).contains(&quantity),
            PduErrorKind::QuantityOutOfRange,
            offset,
        )?;
        Ok(quantity)
    }

    fn rest(&self, from: usize) -> Result<&'a [u8], PduError> {
        self.pdu.get(from..).ok_or_else(|| self.truncated())
    }

    /// The bytes from `data_at` to the end, which the byte count at `count_at` must match.
    fn counted(&self, count_at: usize, data_at: usize, count: usize) -> Result<&'a [u8], PduError> {
        let data = self.rest(data_at)?;
        self.ensure(
            data.len() == count,
            PduErrorKind::ByteCountMismatch,
            count_at,
        )?;
        Ok(data)
    }

    /// The common "byte count, then exactly that many bytes" tail at offset 1.
    fn byte_counted(&self) -> Result<&'a [u8], PduError> {
        self.min_len(field::DATA)?;
        let count = self.u8(field::BYTE_COUNT)?;
        self.counted(field::BYTE_COUNT, field::DATA, usize::from(count))
    }

    fn registers(&self, bytes: &'a [u8], count_at: usize) -> Result<Registers<'a>, PduError> {
        Registers::new(bytes).ok_or_else(|| self.error(PduErrorKind::ByteCountMismatch, count_at))
    }
}

fn request<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    match r.function {
        FunctionCode::READ_COILS | FunctionCode::READ_DISCRETE_INPUTS => {
            read_request(r, MAX_READ_BITS)
        }
        FunctionCode::READ_HOLDING_REGISTERS | FunctionCode::READ_INPUT_REGISTERS => {
            read_request(r, MAX_READ_REGISTERS)
        }
        FunctionCode::WRITE_SINGLE_COIL => write_single_coil(r),
        FunctionCode::WRITE_SINGLE_REGISTER => write_single_register(r),
        FunctionCode::READ_EXCEPTION_STATUS
        | FunctionCode::GET_COMM_EVENT_COUNTER
        | FunctionCode::GET_COMM_EVENT_LOG
        | FunctionCode::REPORT_SERVER_ID => {
            r.exact_len(1)?;
            Ok(PduBody::Empty)
        }
        FunctionCode::DIAGNOSTICS => diagnostics(r),
        FunctionCode::WRITE_MULTIPLE_COILS => write_multiple_coils_request(r),
        FunctionCode::WRITE_MULTIPLE_REGISTERS => write_multiple_registers_request(r),
        FunctionCode::READ_FILE_RECORD => read_file_record_request(r),
        FunctionCode::WRITE_FILE_RECORD => write_file_record(r),
        FunctionCode::MASK_WRITE_REGISTER => mask_write_register(r),
        FunctionCode::READ_WRITE_MULTIPLE_REGISTERS => read_write_multiple_request(r),
        FunctionCode::READ_FIFO_QUEUE => {
            r.exact_len(field::ADDRESS.end)?;
            Ok(PduBody::ReadFifoQueueRequest {
                fifo_address: r.u16(field::ADDRESS)?,
            })
        }
        FunctionCode::ENCAPSULATED_INTERFACE => encapsulated(r, Direction::Request),
        _ => other(r),
    }
}

fn response<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    match r.function {
        FunctionCode::READ_COILS | FunctionCode::READ_DISCRETE_INPUTS => read_bits_response(r),
        FunctionCode::READ_HOLDING_REGISTERS
        | FunctionCode::READ_INPUT_REGISTERS
        | FunctionCode::READ_WRITE_MULTIPLE_REGISTERS => read_registers_response(r),
        FunctionCode::WRITE_SINGLE_COIL => write_single_coil(r),
        FunctionCode::WRITE_SINGLE_REGISTER => write_single_register(r),
        FunctionCode::READ_EXCEPTION_STATUS => {
            r.exact_len(field::SINGLE_BYTE + 1)?;
            Ok(PduBody::ReadExceptionStatusResponse {
                status: r.u8(field::SINGLE_BYTE)?,
            })
        }
        FunctionCode::DIAGNOSTICS => diagnostics(r),
        FunctionCode::GET_COMM_EVENT_COUNTER => {
            r.exact_len(field::QUANTITY.end)?;
            Ok(PduBody::CommEventCounterResponse {
                status: r.u16(field::ADDRESS)?,
                event_count: r.u16(field::QUANTITY)?,
            })
        }
        FunctionCode::GET_COMM_EVENT_LOG => comm_event_log_response(r),
        FunctionCode::WRITE_MULTIPLE_COILS => write_multiple_response(r, MAX_WRITE_BITS),
        FunctionCode::WRITE_MULTIPLE_REGISTERS => write_multiple_response(r, MAX_WRITE_REGISTERS),
        FunctionCode::REPORT_SERVER_ID => Ok(PduBody::ReportServerIdResponse {
            data: r.byte_counted()?,
        }),
        FunctionCode::READ_FILE_RECORD => read_file_record_response(r),
        FunctionCode::WRITE_FILE_RECORD => write_file_record(r),
        FunctionCode::MASK_WRITE_REGISTER => mask_write_register(r),
        FunctionCode::READ_FIFO_QUEUE => read_fifo_queue_response(r),
        FunctionCode::ENCAPSULATED_INTERFACE => encapsulated(r, Direction::Response),
        _ => other(r),
    }
}

fn other<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    Ok(PduBody::Other {
        data: r.rest(field::FUNCTION + 1)?,
    })
}

/// AP §7: function code | 0x80, then one exception code byte.
fn exception<'a>(r: &Reader<'a>, dir: Direction) -> Result<PduBody<'a>, PduError> {
    // Only servers send exceptions; from a client it is not Modbus as specified.
    r.ensure(
        dir == Direction::Response,
        PduErrorKind::InvalidValue,
        field::FUNCTION,
    )?;
    r.exact_len(field::SINGLE_BYTE + 1)?;
    let code = r.u8(field::SINGLE_BYTE)?;
    r.ensure(code != 0, PduErrorKind::InvalidValue, field::SINGLE_BYTE)?;
    Ok(PduBody::Exception {
        code: ExceptionCode(code),
    })
}

/// AP §6.1-§6.4 requests: address, quantity.
fn read_request<'a>(r: &Reader<'a>, max: u16) -> Result<PduBody<'a>, PduError> {
    r.exact_len(field::QUANTITY.end)?;
    let address = r.u16(field::ADDRESS)?;
    let quantity = r.quantity(field::QUANTITY, max)?;
    Ok(PduBody::ReadRequest { address, quantity })
}

/// AP §6.1, §6.2 responses: byte count, packed bits.
fn read_bits_response<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    let bytes = r.byte_counted()?;
    let max_bytes = usize::from(MAX_READ_BITS).div_ceil(8);
    let plausible = (1..=max_bytes).contains(&bytes.len());
    r.ensure(
        plausible,
        PduErrorKind::QuantityOutOfRange,
        field::BYTE_COUNT,
    )?;
    Ok(PduBody::ReadBitsResponse {
        bits: Bits::from_bytes(bytes),
    })
}

/// AP §6.3, §6.4, §6.17 responses: byte count (2 x N), registers.
fn read_registers_response<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    let bytes = r.byte_counted()?;
    let registers = r.registers(bytes, field::BYTE_COUNT)?;
    let plausible = (1..=usize::from(MAX_READ_REGISTERS)).contains(&registers.len());
    r.ensure(
        plausible,
        PduErrorKind::QuantityOutOfRange,
        field::BYTE_COUNT,
    )?;
    Ok(PduBody::ReadRegistersResponse { registers })
}

/// AP §6.5: the response echoes the request.
fn write_single_coil<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.exact_len(field::QUANTITY.end)?;
    let address = r.u16(field::ADDRESS)?;
    let value = r.u16(field::QUANTITY)?;
    let valid = value == COIL_ON || value == COIL_OFF;
    r.ensure(valid, PduErrorKind::InvalidValue, field::QUANTITY.start)?;
    Ok(PduBody::WriteSingleCoil { address, value })
}

/// AP §6.6: the response echoes the request.
fn write_single_register<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.exact_len(field::QUANTITY.end)?;
    let address = r.u16(field::ADDRESS)?;
    let value = r.u16(field::QUANTITY)?;
    Ok(PduBody::WriteSingleRegister { address, value })
}

/// AP §6.8, both directions: sub-function, data words.
fn diagnostics<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.min_len(field::DIAGNOSTIC_DATA)?;
    let subfunction = DiagnosticSubfunction(r.u16(field::ADDRESS)?);
    if subfunction.has_single_word_data() {
        r.exact_len(field::DIAGNOSTIC_DATA + 2)?;
    }
    let data = r.rest(field::DIAGNOSTIC_DATA)?;
    let odd_byte_at = r.pdu.len().saturating_sub(1);
    r.ensure(
        data.len() % 2 == 0,
        PduErrorKind::TrailingBytes,
        odd_byte_at,
    )?;
    Ok(PduBody::Diagnostics { subfunction, data })
}

/// AP §6.10 response: byte count, status, event count, message count, up to 64 event bytes.
fn comm_event_log_response<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    let counted = r.byte_counted()?;
    let fixed = field::LOG_EVENTS - field::DATA;
    r.ensure(
        counted.len() >= fixed,
        PduErrorKind::ByteCountMismatch,
        field::BYTE_COUNT,
    )?;
    let events = r.rest(field::LOG_EVENTS)?;
    let plausible = events.len() <= MAX_COMM_EVENTS;
    r.ensure(
        plausible,
        PduErrorKind::QuantityOutOfRange,
        field::BYTE_COUNT,
    )?;
    Ok(PduBody::CommEventLogResponse {
        status: r.u16(field::LOG_STATUS)?,
        event_count: r.u16(field::LOG_EVENT_COUNT)?,
        message_count: r.u16(field::LOG_MESSAGE_COUNT)?,
        events,
    })
}

/// AP §6.11 request: address, quantity, byte count, packed bits.
fn write_multiple_coils_request<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.min_len(field::WRITE_VALUES)?;
    let address = r.u16(field::ADDRESS)?;
    let quantity = r.quantity(field::QUANTITY, MAX_WRITE_BITS)?;
    let count = usize::from(r.u8(field::WRITE_BYTE_COUNT)?);
    let expected = usize::from(quantity).div_ceil(8);
    r.ensure(
        count == expected,
        PduErrorKind::ByteCountMismatch,
        field::WRITE_BYTE_COUNT,
    )?;
    let bytes = r.counted(field::WRITE_BYTE_COUNT, field::WRITE_VALUES, count)?;
    let bits = Bits::new(bytes, usize::from(quantity));
    Ok(PduBody::WriteMultipleCoilsRequest {
        address,
        quantity,
        bits,
    })
}

/// AP §6.12 request: address, quantity, byte count, registers.
fn write_multiple_registers_request<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.min_len(field::WRITE_VALUES)?;
    let address = r.u16(field::ADDRESS)?;
    let quantity = r.quantity(field::QUANTITY, MAX_WRITE_REGISTERS)?;
    let count = usize::from(r.u8(field::WRITE_BYTE_COUNT)?);
    let expected = usize::from(quantity) * 2;
    r.ensure(
        count == expected,
        PduErrorKind::ByteCountMismatch,
        field::WRITE_BYTE_COUNT,
    )?;
    let bytes = r.counted(field::WRITE_BYTE_COUNT, field::WRITE_VALUES, count)?;
    let registers = r.registers(bytes, field::WRITE_BYTE_COUNT)?;
    Ok(PduBody::WriteMultipleRegistersRequest {
        address,
        quantity,
        registers,
    })
}

/// AP §6.11, §6.12 responses: address, quantity.
fn write_multiple_response<'a>(r: &Reader<'a>, max: u16) -> Result<PduBody<'a>, PduError> {
    r.exact_len(field::QUANTITY.end)?;
    let address = r.u16(field::ADDRESS)?;
    let quantity = r.quantity(field::QUANTITY, max)?;
    Ok(PduBody::WriteMultipleResponse { address, quantity })
}

/// AP §6.14 request: byte count, then 7-byte sub-requests (reference type 6, file number,
/// record number, record length).
fn read_file_record_request<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    let bytes = r.byte_counted()?;
    let (groups, []) = bytes.as_chunks::<{ field::SUB_REQUEST_LEN }>() else {
        return Err(r.error(PduErrorKind::ByteCountMismatch, field::BYTE_COUNT));
    };
    // The response to all sub-requests must itself fit in a PDU (AP §6.14): function code,
    // byte count, and per sub-request a length byte, a reference type and the registers.
    let mut response_len = field::DATA;
    let mut at = field::DATA;
    for group in groups {
        let [reference_type, .., len_hi, len_lo] = *group;
        r.ensure(
            reference_type == FILE_REFERENCE_TYPE,
            PduErrorKind::InvalidValue,
            at,
        )?;
        let record_length = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        response_len = response_len.saturating_add(2 + 2 * record_length);
        let fits = response_len <= MAX_PDU_LEN;
        let length_at = at + field::SUB_RECORD_LENGTH.start;
        r.ensure(fits, PduErrorKind::QuantityOutOfRange, length_at)?;
        at += field::SUB_REQUEST_LEN;
    }
    Ok(PduBody::ReadFileRecordRequest {
        records: FileRecordRequests::new(groups),
    })
}

/// AP §6.14 response: byte count, then sub-responses (length, reference type 6, registers;
/// the length counts the reference type and the registers).
fn read_file_record_response<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    let bytes = r.byte_counted()?;
    let mut rest = bytes;
    let mut at = field::DATA;
    let mut count = 0;
    while let Some((&length, after)) = rest.split_first() {
        // Reference type plus whole registers: odd, and at least 1.
        r.ensure(length % 2 == 1, PduErrorKind::ByteCountMismatch, at)?;
        let Some(&reference_type) = after.first() else {
            return Err(r.truncated());
        };
        r.ensure(
            reference_type == FILE_REFERENCE_TYPE,
            PduErrorKind::InvalidValue,
            at + 1,
        )?;
        let Some((_, next)) = split_file_sub_response(rest) else {
            return Err(r.truncated());
        };
        at += 1 + usize::from(length);
        count += 1;
        rest = next;
    }
    Ok(PduBody::ReadFileRecordResponse {
        records: FileRecordResponses::new(bytes, count),
    })
}

/// AP §6.15, both directions: byte count, then sub-requests (reference type 6, file number,
/// record number, record length, registers).
fn write_file_record<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    let bytes = r.byte_counted()?;
    let mut rest = bytes;
    let mut at = field::DATA;
    let mut count = 0;
    while let Some(&reference_type) = rest.first() {
        r.ensure(
            reference_type == FILE_REFERENCE_TYPE,
            PduErrorKind::InvalidValue,
            at,
        )?;
        let Some((record, next)) = split_file_write(rest) else {
            return Err(r.truncated());
        };
        at += field::SUB_REQUEST_LEN + record.data.as_bytes().len();
        count += 1;
        rest = next;
    }
    Ok(PduBody::WriteFileRecord {
        records: FileRecordWrites::new(bytes, count),
    })
}

/// AP §6.16: the response echoes the request.
fn mask_write_register<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.exact_len(field::OR_MASK.end)?;
    Ok(PduBody::MaskWriteRegister {
        address: r.u16(field::ADDRESS)?,
        and_mask: r.u16(field::QUANTITY)?,
        or_mask: r.u16(field::OR_MASK)?,
    })
}

/// AP §6.17 request: read address and quantity, write address and quantity, byte count,
/// registers to write.
fn read_write_multiple_request<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.min_len(field::RW_VALUES)?;
    let read_address = r.u16(field::ADDRESS)?;
    let read_quantity = r.quantity(field::QUANTITY, MAX_READ_REGISTERS)?;
    let write_address = r.u16(field::RW_WRITE_ADDRESS)?;
    let write_quantity = r.quantity(field::RW_WRITE_QUANTITY, MAX_RW_WRITE_REGISTERS)?;
    let count = usize::from(r.u8(field::RW_BYTE_COUNT)?);
    let expected = usize::from(write_quantity) * 2;
    r.ensure(
        count == expected,
        PduErrorKind::ByteCountMismatch,
        field::RW_BYTE_COUNT,
    )?;
    let bytes = r.counted(field::RW_BYTE_COUNT, field::RW_VALUES, count)?;
    let registers = r.registers(bytes, field::RW_BYTE_COUNT)?;
    Ok(PduBody::ReadWriteMultipleRequest {
        read_address,
        read_quantity,
        write_address,
        write_quantity,
        registers,
    })
}

/// AP §6.18 response: 16-bit byte count (counting the FIFO count too), FIFO count, registers.
fn read_fifo_queue_response<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.min_len(field::FIFO_VALUES)?;
    let count_at = field::FIFO_BYTE_COUNT.start;
    let byte_count = usize::from(r.u16(field::FIFO_BYTE_COUNT)?);
    r.counted(count_at, field::FIFO_COUNT.start, byte_count)?;
    let fifo_count = r.u16(field::FIFO_COUNT)?;
    let plausible = fifo_count <= MAX_FIFO_COUNT;
    r.ensure(
        plausible,
        PduErrorKind::QuantityOutOfRange,
        field::FIFO_COUNT.start,
    )?;
    let expected = 2 + 2 * usize::from(fifo_count);
    r.ensure(
        byte_count == expected,
        PduErrorKind::ByteCountMismatch,
        count_at,
    )?;
    let registers = r.registers(r.rest(field::FIFO_VALUES)?, count_at)?;
    Ok(PduBody::ReadFifoQueueResponse { registers })
}

/// AP §6.19-§6.21: MEI type, then MEI-specific data.
fn encapsulated<'a>(r: &Reader<'a>, dir: Direction) -> Result<PduBody<'a>, PduError> {
    r.min_len(field::MEI_DATA)?;
    let mei_type = r.u8(field::MEI_TYPE)?;
    if mei_type != MEI_READ_DEVICE_ID {
        return Ok(PduBody::EncapsulatedOther {
            mei_type,
            data: r.rest(field::MEI_DATA)?,
        });
    }
    match dir {
        Direction::Request => read_device_id_request(r),
        Direction::Response => read_device_id_response(r),
    }
}

/// Basic, regular, extended, or one specific object (AP §6.21).
fn read_device_id_code(r: &Reader<'_>) -> Result<u8, PduError> {
    let code = r.u8(field::READ_DEVICE_ID_CODE)?;
    r.ensure(
        (1..=4).contains(&code),
        PduErrorKind::InvalidValue,
        field::READ_DEVICE_ID_CODE,
    )?;
    Ok(code)
}

fn read_device_id_request<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.exact_len(field::OBJECT_ID + 1)?;
    Ok(PduBody::ReadDeviceIdRequest {
        read_device_id_code: read_device_id_code(r)?,
        object_id: r.u8(field::OBJECT_ID)?,
    })
}

fn read_device_id_response<'a>(r: &Reader<'a>) -> Result<PduBody<'a>, PduError> {
    r.min_len(field::OBJECTS)?;
    let read_device_id_code = read_device_id_code(r)?;
    let more_follows = match r.u8(field::MORE_FOLLOWS)? {
        0x00 => false,
        0xFF => true,
        _ => return Err(r.error(PduErrorKind::InvalidValue, field::MORE_FOLLOWS)),
    };
    let count = r.u8(field::NUMBER_OF_OBJECTS)?;
    let objects = r.rest(field::OBJECTS)?;
    let mut rest = objects;
    for _ in 0..count {
        let Some((_, next)) = split_device_id_object(rest) else {
            return Err(r.truncated());
        };
        rest = next;
    }
    let trailing_at = r.pdu.len().saturating_sub(rest.len());
    r.ensure(rest.is_empty(), PduErrorKind::TrailingBytes, trailing_at)?;
    Ok(PduBody::ReadDeviceIdResponse {
        read_device_id_code,
        conformity_level: r.u8(field::CONFORMITY_LEVEL)?,
        more_follows,
        next_object_id: r.u8(field::NEXT_OBJECT_ID)?,
        objects: DeviceIdObjects::new(objects, count),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::{DeviceIdObject, FileRecordRef};
    use PduErrorKind::{
        ByteCountMismatch, InvalidValue, QuantityOutOfRange, TrailingBytes, Truncated,
    };

    fn request(pdu: &[u8]) -> ModbusPdu<'_> {
        assert!(plausible_pdu_len(pdu[0], pdu.len()), "{pdu:02x?}");
        parse_pdu(pdu, Direction::Request).unwrap_or_else(|e| panic!("request {pdu:02x?}: {e}"))
    }

    fn response(pdu: &[u8]) -> ModbusPdu<'_> {
        assert!(plausible_pdu_len(pdu[0], pdu.len()), "{pdu:02x?}");
        parse_pdu(pdu, Direction::Response).unwrap_or_else(|e| panic!("response {pdu:02x?}: {e}"))
    }

    fn error(pdu: &[u8], dir: Direction) -> (PduErrorKind, usize) {
        match parse_pdu(pdu, dir) {
            Ok(decoded) => panic!("{pdu:02x?} should not decode, got {decoded:?}"),
            Err(e) => (e.kind, e.offset),
        }
    }

    fn req_err(pdu: &[u8]) -> (PduErrorKind, usize) {
        error(pdu, Direction::Request)
    }

    fn resp_err(pdu: &[u8]) -> (PduErrorKind, usize) {
        error(pdu, Direction::Response)
    }

    fn registers(bytes: &[u8]) -> Registers<'_> {
        Registers::new(bytes).unwrap()
    }

    // The fixtures below are the worked examples of the MODBUS Application Protocol
    // Specification V1.1b3 (section given for each), unless a capture is named instead.

    // AP §6.1: read coils 20-38.
    static READ_COILS_REQUEST: [u8; 5] = [0x01, 0x00, 0x13, 0x00, 0x13];
    static READ_COILS_RESPONSE: [u8; 5] = [0x01, 0x03, 0xCD, 0x6B, 0x05];

    #[test]
    fn read_coils() {
        let pdu = request(&READ_COILS_REQUEST);
        assert_eq!(pdu.function, FunctionCode::READ_COILS);
        assert_eq!(
            pdu.body,
            PduBody::ReadRequest {
                address: 19,
                quantity: 19
            }
        );
        assert_eq!((pdu.address(), pdu.quantity()), (Some(19), Some(19)));

        let pdu = response(&READ_COILS_RESPONSE);
        let PduBody::ReadBitsResponse { bits } = pdu.body else {
            panic!("{pdu:?}")
        };
        assert_eq!(bits.len(), 24);
        assert_eq!(bits.bytes(), [0xCD, 0x6B, 0x05]);
        // Coils 27..20 = 1100 1101, 35..28 = 0110 1011, 38..36 = 101.
        let coils: Vec<bool> = bits.with_count(19).iter().collect();
        let expected = [
            1, 0, 1, 1, 0, 0, 1, 1, /* 28.. */ 1, 1, 0, 1, 0, 1, 1, 0, /* 36.. */ 1, 0, 1,
        ];
        assert_eq!(coils, expected.map(|b| b == 1));
        assert_eq!((pdu.address(), pdu.quantity()), (None, None));
    }

    // AP §6.2: read discrete inputs 197-218.
    static READ_DISCRETE_INPUTS_REQUEST: [u8; 5] = [0x02, 0x00, 0xC4, 0x00, 0x16];
    static READ_DISCRETE_INPUTS_RESPONSE: [u8; 5] = [0x02, 0x03, 0xAC, 0xDB, 0x35];

    #[test]
    fn read_discrete_inputs() {
        let pdu = request(&READ_DISCRETE_INPUTS_REQUEST);
        assert_eq!(pdu.function, FunctionCode::READ_DISCRETE_INPUTS);
        assert_eq!(
            pdu.body,
            PduBody::ReadRequest {
                address: 196,
                quantity: 22
            }
        );

        let pdu = response(&READ_DISCRETE_INPUTS_RESPONSE);
        let PduBody::ReadBitsResponse { bits } = pdu.body else {
            panic!("{pdu:?}")
        };
        let inputs = bits.with_count(22);
        assert_eq!(inputs.len(), 22);
        // Inputs 204..197 = 1010 1100; the last six, 218..213, = 11 0101.
        let first: Vec<bool> = inputs.iter().take(8).collect();
        assert_eq!(first, [false, false, true, true, false, true, false, true]);
        let last: Vec<bool> = inputs.iter().skip(16).collect();
        assert_eq!(last, [true, false, true, false, true, true]);
    }

    // AP §6.3: read holding registers 108-110.
    static READ_HOLDING_REGISTERS_REQUEST: [u8; 5] = [0x03, 0x00, 0x6B, 0x00, 0x03];
    static READ_HOLDING_REGISTERS_RESPONSE: [u8; 8] =
        [0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64];

    #[test]
    fn read_holding_registers() {
        let pdu = request(&READ_HOLDING_REGISTERS_REQUEST);
        assert_eq!(pdu.function, FunctionCode::READ_HOLDING_REGISTERS);
        assert_eq!(
            pdu.body,
            PduBody::ReadRequest {
                address: 107,
                quantity: 3
            }
        );

        let pdu = response(&READ_HOLDING_REGISTERS_RESPONSE);
        let PduBody::ReadRegistersResponse { registers } = pdu.body else {
            panic!("{pdu:?}")
        };
        assert_eq!(registers.iter().collect::<Vec<_>>(), [555, 0, 100]);
        assert_eq!(pdu.quantity(), Some(3));
    }

    // AP §6.4: read input register 9.
    static READ_INPUT_REGISTERS_REQUEST: [u8; 5] = [0x04, 0x00, 0x08, 0x00, 0x01];
    static READ_INPUT_REGISTERS_RESPONSE: [u8; 4] = [0x04, 0x02, 0x00, 0x0A];

    #[test]
    fn read_input_registers() {
        let pdu = request(&READ_INPUT_REGISTERS_REQUEST);
        assert_eq!(pdu.function, FunctionCode::READ_INPUT_REGISTERS);
        assert_eq!(
            pdu.body,
            PduBody::ReadRequest {
                address: 8,
                quantity: 1
            }
        );
        let pdu = response(&READ_INPUT_REGISTERS_RESPONSE);
        assert_eq!(
            pdu.body,
            PduBody::ReadRegistersResponse {
                registers: registers(&[0, 10])
            }
        );
    }

    // AP §6.5: coil 173 on; the response is an echo.
    static WRITE_SINGLE_COIL: [u8; 5] = [0x05, 0x00, 0xAC, 0xFF, 0x00];

    #[test]
    fn write_single_coil() {
        for pdu in [request(&WRITE_SINGLE_COIL), response(&WRITE_SINGLE_COIL)] {
            assert_eq!(pdu.function, FunctionCode::WRITE_SINGLE_COIL);
            assert_eq!(
                pdu.body,
                PduBody::WriteSingleCoil {
                    address: 172,
                    value: COIL_ON
                }
            );
            assert_eq!(pdu.body.coil_on(), Some(true));
            assert_eq!((pdu.address(), pdu.quantity()), (Some(172), Some(1)));
        }
        let off = request(&[0x05, 0x00, 0xAC, 0x00, 0x00]);
        assert_eq!(off.body.coil_on(), Some(false));
        // Anything but FF00 and 0000 is an illegal data value (AP §6.5).
        let bad = [0x05, 0x00, 0xAC, 0x00, 0x01];
        assert_eq!(req_err(&bad), (InvalidValue, 3));
    }

    // AP §6.6: register 2 set to 3; the response is an echo.
    static WRITE_SINGLE_REGISTER: [u8; 5] = [0x06, 0x00, 0x01, 0x00, 0x03];

    #[test]
    fn write_single_register() {
        for pdu in [
            request(&WRITE_SINGLE_REGISTER),
            response(&WRITE_SINGLE_REGISTER),
        ] {
            assert_eq!(pdu.function, FunctionCode::WRITE_SINGLE_REGISTER);
            assert_eq!(
                pdu.body,
                PduBody::WriteSingleRegister {
                    address: 1,
                    value: 3
                }
            );
        }
    }

    // AP §6.7.
    static READ_EXCEPTION_STATUS_REQUEST: [u8; 1] = [0x07];
    static READ_EXCEPTION_STATUS_RESPONSE: [u8; 2] = [0x07, 0x6D];

    #[test]
    fn read_exception_status() {
        let pdu = request(&READ_EXCEPTION_STATUS_REQUEST);
        assert_eq!(pdu.function, FunctionCode::READ_EXCEPTION_STATUS);
        assert_eq!(pdu.body, PduBody::Empty);
        let pdu = response(&READ_EXCEPTION_STATUS_RESPONSE);
        assert_eq!(
            pdu.body,
            PduBody::ReadExceptionStatusResponse { status: 0x6D }
        );
        assert_eq!(req_err(&[0x07, 0x00]), (TrailingBytes, 1));
        assert_eq!(resp_err(&[0x07]), (Truncated, 1));
    }

    // AP §6.8.1: return query data; the response is an echo.
    static DIAGNOSTICS_RETURN_QUERY_DATA: [u8; 5] = [0x08, 0x00, 0x00, 0xA5, 0x37];
    // modbus_test_data_part1.pcap (Digital Bond Quickdraw), frame 8: force listen only mode.
    static DIAGNOSTICS_FORCE_LISTEN_ONLY: [u8; 5] = [0x08, 0x00, 0x04, 0x00, 0x00];

    #[test]
    fn diagnostics() {
        for pdu in [
            request(&DIAGNOSTICS_RETURN_QUERY_DATA),
            response(&DIAGNOSTICS_RETURN_QUERY_DATA),
        ] {
            assert_eq!(pdu.function, FunctionCode::DIAGNOSTICS);
            assert_eq!(
                pdu.body,
                PduBody::Diagnostics {
                    subfunction: DiagnosticSubfunction::RETURN_QUERY_DATA,
                    data: &[0xA5, 0x37],
                }
            );
        }
        let pdu = request(&DIAGNOSTICS_FORCE_LISTEN_ONLY);
        let PduBody::Diagnostics { subfunction, data } = pdu.body else {
            panic!("{pdu:?}")
        };
        assert_eq!(subfunction, DiagnosticSubfunction::FORCE_LISTEN_ONLY_MODE);
        assert!(subfunction.changes_state());
        assert_eq!(data, [0, 0]);
        // Return query data echoes any number of words...
        let long = [0x08, 0x00, 0x00, 1, 2, 3, 4, 5, 6];
        assert!(matches!(
            request(&long).body,
            PduBody::Diagnostics {
                data: [1, 2, 3, 4, 5, 6],
                ..
            }
        ));
        // ...but not half a word, and the counters take exactly one word.
        let odd = [0x08, 0x00, 0x00, 1, 2, 3];
        assert_eq!(req_err(&odd), (TrailingBytes, 5));
        let long_counter = [0x08, 0x00, 0x0B, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(resp_err(&long_counter), (TrailingBytes, 5));
        assert_eq!(req_err(&[0x08, 0x00, 0x0B]), (Truncated, 3));
        assert_eq!(req_err(&[0x08, 0x00]), (Truncated, 2));
    }

    // AP §6.9.
    static GET_COMM_EVENT_COUNTER_REQUEST: [u8; 1] = [0x0B];
    static GET_COMM_EVENT_COUNTER_RESPONSE: [u8; 5] = [0x0B, 0xFF, 0xFF, 0x01, 0x08];

    #[test]
    fn get_comm_event_counter() {
        let pdu = request(&GET_COMM_EVENT_COUNTER_REQUEST);
        assert_eq!(
            (pdu.function, pdu.body),
            (FunctionCode::GET_COMM_EVENT_COUNTER, PduBody::Empty)
        );
        let pdu = response(&GET_COMM_EVENT_COUNTER_RESPONSE);
        assert_eq!(
            pdu.body,
            PduBody::CommEventCounterResponse {
                status: 0xFFFF,
                event_count: 0x0108
            }
        );
    }

    // AP §6.10.
    static GET_COMM_EVENT_LOG_REQUEST: [u8; 1] = [0x0C];
    static GET_COMM_EVENT_LOG_RESPONSE: [u8; 10] =
        [0x0C, 0x08, 0x00, 0x00, 0x01, 0x08, 0x01, 0x21, 0x20, 0x00];

    #[test]
    fn get_comm_event_log() {
        let pdu = request(&GET_COMM_EVENT_LOG_REQUEST);
        assert_eq!(
            (pdu.function, pdu.body),
            (FunctionCode::GET_COMM_EVENT_LOG, PduBody::Empty)
        );
        let pdu = response(&GET_COMM_EVENT_LOG_RESPONSE);
        assert_eq!(
            pdu.body,
            PduBody::CommEventLogResponse {
                status: 0,
                event_count: 0x0108,
                message_count: 0x0121,
                events: &[0x20, 0x00],
            }
        );
        // A byte count too small for the three fixed words.
        let short = [0x0C, 0x04, 0x00, 0x00, 0x01, 0x08];
        assert_eq!(resp_err(&short), (ByteCountMismatch, 1));
    }

    // AP §6.11: coils 20-29.
    static WRITE_MULTIPLE_COILS_REQUEST: [u8; 8] = [0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01];
    static WRITE_MULTIPLE_COILS_RESPONSE: [u8; 5] = [0x0F, 0x00, 0x13, 0x00, 0x0A];

    #[test]
    fn write_multiple_coils() {
        let pdu = request(&WRITE_MULTIPLE_COILS_REQUEST);
        assert_eq!(pdu.function, FunctionCode::WRITE_MULTIPLE_COILS);
        let PduBody::WriteMultipleCoilsRequest {
            address,
            quantity,
            bits,
        } = pdu.body
        else {
            panic!("{pdu:?}")
        };
        assert_eq!((address, quantity, bits.len()), (19, 10, 10));
        let values: Vec<bool> = bits.iter().collect();
        let expected = [1, 0, 1, 1, 0, 0, 1, 1, 1, 0].map(|b| b == 1);
        assert_eq!(values, expected);
        assert_eq!((pdu.address(), pdu.quantity()), (Some(19), Some(10)));

        let pdu = response(&WRITE_MULTIPLE_COILS_RESPONSE);
        assert_eq!(
            pdu.body,
            PduBody::WriteMultipleResponse {
                address: 19,
                quantity: 10
            }
        );
    }

    // AP §6.12: registers 2-3 set to 000A, 0102.
    static WRITE_MULTIPLE_REGISTERS_REQUEST: [u8; 10] =
        [0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02];
    static WRITE_MULTIPLE_REGISTERS_RESPONSE: [u8; 5] = [0x10, 0x00, 0x01, 0x00, 0x02];

    #[test]
    fn write_multiple_registers() {
        let pdu = request(&WRITE_MULTIPLE_REGISTERS_REQUEST);
        assert_eq!(pdu.function, FunctionCode::WRITE_MULTIPLE_REGISTERS);
        assert_eq!(
            pdu.body,
            PduBody::WriteMultipleRegistersRequest {
                address: 1,
                quantity: 2,
                registers: registers(&[0x00, 0x0A, 0x01, 0x02]),
            }
        );
        let pdu = response(&WRITE_MULTIPLE_REGISTERS_RESPONSE);
        assert_eq!(
            pdu.body,
            PduBody::WriteMultipleResponse {
                address: 1,
                quantity: 2
            }
        );
    }

    // AP §6.13 gives no bytes (the contents are device specific); this is
    // modbus_test_data_part1.pcap (Digital Bond Quickdraw), frames 40 and 41: server id 0x00,
    // run indicator 0xFF (on), then "Wingpath Limited".
    static REPORT_SERVER_ID_REQUEST: [u8; 1] = [0x11];
    static REPORT_SERVER_ID_RESPONSE: [u8; 20] = *b"\x11\x12\x00\xFFWingpath Limited";

    #[test]
    fn report_server_id() {
        let pdu = request(&REPORT_SERVER_ID_REQUEST);
        assert_eq!(
            (pdu.function, pdu.body),
            (FunctionCode::REPORT_SERVER_ID, PduBody::Empty)
        );
        let pdu = response(&REPORT_SERVER_ID_RESPONSE);
        assert_eq!(
            pdu.body,
            PduBody::ReportServerIdResponse {
                data: b"\x00\xFFWingpath Limited"
            }
        );
    }

    // AP §6.14: two groups, file 4 record 1 (2 registers) and file 3 record 9 (2 registers).
    static READ_FILE_RECORD_REQUEST: [u8; 16] = [
        0x14, 0x0E, 0x06, 0x00, 0x04, 0x00, 0x01, 0x00, 0x02, 0x06, 0x00, 0x03, 0x00, 0x09, 0x00,
        0x02,
    ];
    static READ_FILE_RECORD_RESPONSE: [u8; 14] = [
        0x14, 0x0C, 0x05, 0x06, 0x0D, 0xFE, 0x00, 0x20, 0x05, 0x06, 0x33, 0xCD, 0x00, 0x40,
    ];

    #[test]
    fn read_file_record() {
        let pdu = request(&READ_FILE_RECORD_REQUEST);
        assert_eq!(pdu.function, FunctionCode::READ_FILE_RECORD);
        let PduBody::ReadFileRecordRequest { records } = pdu.body else {
            panic!("{pdu:?}")
        };
        assert_eq!(records.len(), 2);
        let refs: Vec<FileRecordRef> = records.iter().collect();
        assert_eq!(
            refs,
            [
                FileRecordRef {
                    file_number: 4,
                    record_number: 1,
                    record_length: 2
                },
                FileRecordRef {
                    file_number: 3,
                    record_number: 9,
                    record_length: 2
                },
            ]
        );

        let pdu = response(&READ_FILE_RECORD_RESPONSE);
        let PduBody::ReadFileRecordResponse { records } = pdu.body else {
            panic!("{pdu:?}")
        };
        assert_eq!(records.len(), 2);
        let data: Vec<Vec<u16>> = records.iter().map(|r| r.iter().collect()).collect();
        assert_eq!(data, [vec![0x0DFE, 0x0020], vec![0x33CD, 0x0040]]);
    }

    #[test]
    fn read_file_record_errors() {
        // Reference type 7 in the second group.
        let mut bad = READ_FILE_RECORD_REQUEST;
        bad[9] = 7;
        assert_eq!(req_err(&bad), (InvalidValue, 9));
        // Byte count not a multiple of 7.
        let partial = [0x14, 0x03, 0x06, 0x00, 0x04];
        assert_eq!(req_err(&partial), (ByteCountMismatch, 1));
        // 200 registers would not fit in a response.
        let huge = [0x14, 0x07, 0x06, 0x00, 0x04, 0x00, 0x01, 0x00, 0xC8];
        assert_eq!(req_err(&huge), (QuantityOutOfRange, 7));
        // Sub-response length even (half a register) and sub-response longer than the PDU.
        let even = [0x14, 0x05, 0x04, 0x06, 0x0D, 0xFE, 0x00];
        assert_eq!(resp_err(&even), (ByteCountMismatch, 2));
        let overrun = [0x14, 0x04, 0x05, 0x06, 0x0D, 0xFE];
        assert_eq!(resp_err(&overrun), (Truncated, 6));
        let wrong_type = [0x14, 0x04, 0x03, 0x05, 0x0D, 0xFE];
        assert_eq!(resp_err(&wrong_type), (InvalidValue, 3));
    }

    #[test]
    fn file_records_without_groups() {
        // modbus_example.pcap (CISA ICSNPP trace), frames 64-70: a client sending fc 20 and 21
        // with no groups at all, and the server echoing them.
        for pdu in [[0x14, 0x00], [0x15, 0x00]] {
            assert!(request(&pdu).body != PduBody::Empty);
            assert!(response(&pdu).body != PduBody::Empty);
        }
        assert!(matches!(
            request(&[0x14, 0x00]).body,
            PduBody::ReadFileRecordRequest { records } if records.is_empty()
        ));
    }

    // AP §6.15: file 4, record 7, 3 registers; the response is an echo.
    static WRITE_FILE_RECORD: [u8; 15] = [
        0x15, 0x0D, 0x06, 0x00, 0x04, 0x00, 0x07, 0x00, 0x03, 0x06, 0xAF, 0x04, 0xBE, 0x10, 0x0D,
    ];

    #[test]
    fn write_file_record() {
        for pdu in [request(&WRITE_FILE_RECORD), response(&WRITE_FILE_RECORD)] {
            assert_eq!(pdu.function, FunctionCode::WRITE_FILE_RECORD);
            let PduBody::WriteFileRecord { records } = pdu.body else {
                panic!("{pdu:?}")
            };
            assert_eq!(records.len(), 1);
            let record = records.iter().next().unwrap();
            assert_eq!(
                record.reference(),
                FileRecordRef {
                    file_number: 4,
                    record_number: 7,
                    record_length: 3
                }
            );
            assert_eq!(
                record.data.iter().collect::<Vec<_>>(),
                [0x06AF, 0x04BE, 0x100D]
            );
        }
        // Record length 4 but only 3 registers present.
        let mut short = WRITE_FILE_RECORD;
        short[8] = 4;
        assert_eq!(req_err(&short), (Truncated, 15));
        let mut wrong_type = WRITE_FILE_RECORD;
        wrong_type[2] = 0;
        assert_eq!(req_err(&wrong_type), (InvalidValue, 2));
    }

    // AP §6.16: register 5 (address 4), AND 00F2, OR 0025; the response is an echo.
    static MASK_WRITE_REGISTER: [u8; 7] = [0x16, 0x00, 0x04, 0x00, 0xF2, 0x00, 0x25];

    #[test]
    fn mask_write_register() {
        for pdu in [
            request(&MASK_WRITE_REGISTER),
            response(&MASK_WRITE_REGISTER),
        ] {
            assert_eq!(pdu.function, FunctionCode::MASK_WRITE_REGISTER);
            assert_eq!(
                pdu.body,
                PduBody::MaskWriteRegister {
                    address: 4,
                    and_mask: 0x00F2,
                    or_mask: 0x0025
                }
            );
        }
    }

    // AP §6.17: read 6 registers from 4, write 3 registers (00FF each) from 15.
    static READ_WRITE_MULTIPLE_REGISTERS_REQUEST: [u8; 16] = [
        0x17, 0x00, 0x03, 0x00, 0x06, 0x00, 0x0E, 0x00, 0x03, 0x06, 0x00, 0xFF, 0x00, 0xFF, 0x00,
        0xFF,
    ];
    static READ_WRITE_MULTIPLE_REGISTERS_RESPONSE: [u8; 14] = [
        0x17, 0x0C, 0x00, 0xFE, 0x0A, 0xCD, 0x00, 0x01, 0x00, 0x03, 0x00, 0x0D, 0x00, 0xFF,
    ];

    #[test]
    fn read_write_multiple_registers() {
        let pdu = request(&READ_WRITE_MULTIPLE_REGISTERS_REQUEST);
        assert_eq!(pdu.function, FunctionCode::READ_WRITE_MULTIPLE_REGISTERS);
        assert_eq!(
            pdu.body,
            PduBody::ReadWriteMultipleRequest {
                read_address: 3,
                read_quantity: 6,
                write_address: 14,
                write_quantity: 3,
                registers: registers(&[0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF]),
            }
        );
        assert_eq!((pdu.address(), pdu.quantity()), (Some(3), Some(6)));

        let pdu = response(&READ_WRITE_MULTIPLE_REGISTERS_RESPONSE);
        let PduBody::ReadRegistersResponse { registers } = pdu.body else {
            panic!("{pdu:?}")
        };
        assert_eq!(
            registers.iter().collect::<Vec<_>>(),
            [0xFE, 0x0ACD, 1, 3, 0x0D, 0xFF]
        );
    }

    #[test]
    fn read_write_multiple_limits() {
        // 4SICS-GeekLounge-151022-min.pcap, frame 1 (start): a read quantity of 0.
        let zero_read = [0x17, 0x00, 0x00, 0x00, 0x00, 0x00, 0xDF, 0x21, 0x12, 0xBF];
        assert_eq!(req_err(&zero_read), (QuantityOutOfRange, 3));
        let mut many_writes = READ_WRITE_MULTIPLE_REGISTERS_REQUEST;
        many_writes[8] = 122;
        assert_eq!(req_err(&many_writes), (QuantityOutOfRange, 7));
        let mut wrong_count = READ_WRITE_MULTIPLE_REGISTERS_REQUEST;
        wrong_count[9] = 4;
        assert_eq!(req_err(&wrong_count), (ByteCountMismatch, 9));
    }

    // AP §6.18: FIFO at 04DE holding 01B8, 1284.
    static READ_FIFO_QUEUE_REQUEST: [u8; 3] = [0x18, 0x04, 0xDE];
    static READ_FIFO_QUEUE_RESPONSE: [u8; 9] =
        [0x18, 0x00, 0x06, 0x00, 0x02, 0x01, 0xB8, 0x12, 0x84];

    #[test]
    fn read_fifo_queue() {
        let pdu = request(&READ_FIFO_QUEUE_REQUEST);
        assert_eq!(pdu.function, FunctionCode::READ_FIFO_QUEUE);
        assert_eq!(
            pdu.body,
            PduBody::ReadFifoQueueRequest {
                fifo_address: 0x04DE
            }
        );
        assert_eq!(pdu.address(), Some(0x04DE));

        let pdu = response(&READ_FIFO_QUEUE_RESPONSE);
        assert_eq!(
            pdu.body,
            PduBody::ReadFifoQueueResponse {
                registers: registers(&[0x01, 0xB8, 0x12, 0x84])
            }
        );
        assert_eq!(pdu.quantity(), Some(2));
        // modbus_example.pcap, frame 90: an empty queue.
        let empty = response(&[0x18, 0x00, 0x02, 0x00, 0x00]);
        assert!(
            matches!(empty.body, PduBody::ReadFifoQueueResponse { registers } if registers.is_empty())
        );
        // FIFO count disagreeing with the byte count, and beyond 31.
        let mismatch = [0x18, 0x00, 0x06, 0x00, 0x01, 0x01, 0xB8, 0x12, 0x84];
        assert_eq!(resp_err(&mismatch), (ByteCountMismatch, 1));
        let mut too_many = vec![0x18, 0x00, 0x42, 0x00, 0x20];
        too_many.extend_from_slice(&[0; 64]);
        assert_eq!(resp_err(&too_many), (QuantityOutOfRange, 3));
    }

    // AP §6.21: read basic device identification, stream access.
    static READ_DEVICE_ID_REQUEST: [u8; 4] = [0x2B, 0x0E, 0x01, 0x00];
    // The response of the AP §6.21 example (conformity 01, three objects, all sent), with
    // object lengths matching the strings.
    static READ_DEVICE_ID_RESPONSE: [u8; 55] = *b"\x2B\x0E\x01\x01\x00\x00\x03\
        \x00\x16Company identification\
        \x01\x0FProduct code XX\
        \x02\x05V2.11";
    // modbus_example.pcap (CISA ICSNPP trace), frame 94: conformity 0x83.
    static READ_DEVICE_ID_RESPONSE_CAPTURED: [u8; 60] = *b"\x2B\x0E\x01\x83\x00\x00\x03\
        \x00\x10Zeek Modbus Test\
        \x01\x18Protocol Parsing is fun!\
        \x02\x071.2.3.6";

    #[test]
    fn read_device_identification() {
        let pdu = request(&READ_DEVICE_ID_REQUEST);
        assert_eq!(pdu.function, FunctionCode::ENCAPSULATED_INTERFACE);
        assert_eq!(
            pdu.body,
            PduBody::ReadDeviceIdRequest {
                read_device_id_code: 1,
                object_id: 0
            }
        );

        let pdu = response(&READ_DEVICE_ID_RESPONSE);
        let PduBody::ReadDeviceIdResponse {
            read_device_id_code,
            conformity_level,
            more_follows,
            next_object_id,
            objects,
        } = pdu.body
        else {
            panic!("{pdu:?}")
        };
        assert_eq!((read_device_id_code, conformity_level), (1, 0x01));
        assert_eq!((more_follows, next_object_id), (false, 0));
        assert_eq!(objects.len(), 3);
        let found: Vec<DeviceIdObject<'_>> = objects.iter().collect();
        assert_eq!(
            found,
            [
                DeviceIdObject {
                    id: 0,
                    value: b"Company identification"
                },
                DeviceIdObject {
                    id: 1,
                    value: b"Product code XX"
                },
                DeviceIdObject {
                    id: 2,
                    value: b"V2.11"
                },
            ]
        );
        let names: Vec<_> = found.iter().map(|o| o.name()).collect();
        assert_eq!(
            names,
            [
                Some("vendor_name"),
                Some("product_code"),
                Some("major_minor_revision")
            ]
        );

        let pdu = response(&READ_DEVICE_ID_RESPONSE_CAPTURED);
        let PduBody::ReadDeviceIdResponse {
            conformity_level,
            objects,
            ..
        } = pdu.body
        else {
            panic!("{pdu:?}")
        };
        assert_eq!(conformity_level, 0x83);
        let values: Vec<&[u8]> = objects.iter().map(|o| o.value).collect();
        assert_eq!(
            values,
            [
                &b"Zeek Modbus Test"[..],
                b"Protocol Parsing is fun!",
                b"1.2.3.6"
            ]
        );
    }

    #[test]
    fn read_device_identification_continued() {
        // Regular identification split over two transactions: more follows, resume at 0x04.
        let pdu = response(b"\x2B\x0E\x02\x82\xFF\x04\x01\x03\x0Dhttp://x.test");
        let PduBody::ReadDeviceIdResponse {
            more_follows,
            next_object_id,
            objects,
            ..
        } = pdu.body
        else {
            panic!("{pdu:?}")
        };
        assert!(more_follows);
        assert_eq!(next_object_id, 4);
        assert_eq!(
            objects.iter().next().and_then(|o| o.name()),
            Some("vendor_url")
        );
    }

    #[test]
    fn read_device_identification_errors() {
        // modbus-eit.pcap (Zeek btest), frame 2: "more follows" 0x4D.
        let eit = [
            0x2B, 0x0E, 0x01, 0x00, 0x4D, 0xB7, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(resp_err(&eit), (InvalidValue, 4));
        // modbus_test_data_part1.pcap, frame 32: one byte too many in the request.
        let long = [0x2B, 0x0E, 0x03, 0x01, 0x00];
        assert_eq!(req_err(&long), (TrailingBytes, 4));
        let code_zero = [0x2B, 0x0E, 0x00, 0x00];
        assert_eq!(req_err(&code_zero), (InvalidValue, 2));
        // Object count 3 but two objects; object count 1 but two objects.
        let missing = b"\x2B\x0E\x01\x01\x00\x00\x03\x00\x01A\x01\x01B";
        assert_eq!(resp_err(missing), (Truncated, 13));
        let extra = b"\x2B\x0E\x01\x01\x00\x00\x01\x00\x01A\x01\x01B";
        assert_eq!(resp_err(extra), (TrailingBytes, 10));
        let overlong = b"\x2B\x0E\x01\x01\x00\x00\x01\x00\x09A";
        assert_eq!(resp_err(overlong), (Truncated, 10));
        assert_eq!(req_err(&[0x2B]), (Truncated, 1));
    }

    // AP §6.19: CANopen general reference, MEI 0x0D, passed through raw.
    static CANOPEN_GENERAL_REFERENCE: [u8; 6] = [0x2B, 0x0D, 0x00, 0x01, 0x02, 0x03];

    #[test]
    fn other_mei_types() {
        for pdu in [
            request(&CANOPEN_GENERAL_REFERENCE),
            response(&CANOPEN_GENERAL_REFERENCE),
        ] {
            assert_eq!(
                pdu.body,
                PduBody::EncapsulatedOther {
                    mei_type: MEI_CANOPEN_GENERAL_REFERENCE,
                    data: &[0x00, 0x01, 0x02, 0x03],
                }
            );
        }
    }

    // AP §7: read coils at 1185 answered with illegal data address.
    static EXCEPTION_REQUEST: [u8; 5] = [0x01, 0x04, 0xA1, 0x00, 0x01];
    static EXCEPTION_RESPONSE: [u8; 2] = [0x81, 0x02];

    #[test]
    fn exception_response() {
        let pdu = request(&EXCEPTION_REQUEST);
        assert_eq!(
            pdu.body,
            PduBody::ReadRequest {
                address: 1185,
                quantity: 1
            }
        );
        let pdu = response(&EXCEPTION_RESPONSE);
        assert_eq!(pdu.function, FunctionCode::READ_COILS);
        assert_eq!(
            pdu.body,
            PduBody::Exception {
                code: ExceptionCode::ILLEGAL_DATA_ADDRESS
            }
        );
        assert_eq!(pdu.exception(), Some(ExceptionCode::ILLEGAL_DATA_ADDRESS));
        assert!(pdu.is_exception());
        assert_eq!((pdu.address(), pdu.quantity()), (None, None));
        // Exceptions of codes this crate does not decode are exceptions all the same
        // (modbus_test_data_part2.pcap, frame 32: fc 9 answered with illegal function).
        let pdu = response(&[0x89, 0x01]);
        assert_eq!(pdu.function, FunctionCode(9));
        assert_eq!(pdu.exception(), Some(ExceptionCode::ILLEGAL_FUNCTION));
    }

    #[test]
    fn exception_errors() {
        // modbus_test_data_part1.pcap, frame 91: one byte too many.
        assert_eq!(resp_err(&[0x81, 0x06, 0x00]), (TrailingBytes, 2));
        assert_eq!(resp_err(&[0x83]), (Truncated, 1));
        assert_eq!(resp_err(&[0x83, 0x00]), (InvalidValue, 1));
        // Clients do not send exceptions.
        assert_eq!(req_err(&EXCEPTION_RESPONSE), (InvalidValue, 0));
    }

    #[test]
    fn unknown_and_user_defined_codes_are_kept_raw() {
        // modicon_test.pcap, frame 4: Schneider UMAS (fc 90) request.
        let pdu = request(&[0x5A, 0x00, 0x02]);
        assert_eq!(pdu.function, FunctionCode(90));
        assert_eq!(
            pdu.body,
            PduBody::Other {
                data: &[0x00, 0x02]
            }
        );
        let pdu = response(&[0x41]);
        assert!(pdu.function.is_user_defined());
        assert_eq!(pdu.body, PduBody::Other { data: &[] });
    }

    #[test]
    fn read_request_limits() {
        let cases: [(&[u8], PduErrorKind, usize); 8] = [
            (&[0x01, 0x00, 0x00, 0x00, 0x00], QuantityOutOfRange, 3),
            (&[0x02, 0x00, 0x00, 0x07, 0xD1], QuantityOutOfRange, 3),
            (&[0x03, 0x00, 0x00, 0x00, 0x7E], QuantityOutOfRange, 3),
            (&[0x04, 0x00, 0x00, 0x00, 0x00], QuantityOutOfRange, 3),
            (&[0x03, 0x00, 0x00, 0x00], Truncated, 4),
            (&[0x03, 0x00, 0x00, 0x00, 0x01, 0x00], TrailingBytes, 5),
            (&[0x0F, 0x00, 0x00, 0x07, 0xB1, 0xF7], QuantityOutOfRange, 3),
            (&[0x10, 0x00, 0x00, 0x00, 0x7C, 0xF8], QuantityOutOfRange, 3),
        ];
        for (pdu, kind, offset) in cases {
            assert_eq!(req_err(pdu), (kind, offset), "{pdu:02x?}");
        }
        assert_eq!(
            request(&[0x01, 0x00, 0x00, 0x07, 0xD0]).quantity(),
            Some(2000)
        );
        assert_eq!(
            request(&[0x03, 0x00, 0x00, 0x00, 0x7D]).quantity(),
            Some(125)
        );
    }

    #[test]
    fn byte_count_errors() {
        // fc 15: 10 coils need 2 bytes, not 1; byte count 2 but one byte present.
        let wrong = [0x0F, 0x00, 0x13, 0x00, 0x0A, 0x01, 0xCD];
        assert_eq!(req_err(&wrong), (ByteCountMismatch, 5));
        let short = [0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD];
        assert_eq!(req_err(&short), (ByteCountMismatch, 5));
        let no_count = [0x10, 0x00, 0x01, 0x00, 0x02];
        assert_eq!(req_err(&no_count), (Truncated, 5));
        // fc 3 response: odd byte count, byte count beyond the data, zero registers.
        let odd = [0x03, 0x03, 0x00, 0x01, 0x02];
        assert_eq!(resp_err(&odd), (ByteCountMismatch, 1));
        let beyond = [0x03, 0x06, 0x00, 0x01];
        assert_eq!(resp_err(&beyond), (ByteCountMismatch, 1));
        assert_eq!(resp_err(&[0x03, 0x00]), (QuantityOutOfRange, 1));
        assert_eq!(resp_err(&[0x01, 0x00]), (QuantityOutOfRange, 1));
        assert_eq!(resp_err(&[0x01]), (Truncated, 1));
        // fc 17 with a byte count past the end.
        let server_id = [0x11, 0x05, 0x00, 0xFF];
        assert_eq!(resp_err(&server_id), (ByteCountMismatch, 1));
    }

    #[test]
    fn empty_and_invalid_function_codes() {
        let empty = parse_pdu(&[], Direction::Request).unwrap_err();
        assert_eq!(
            empty,
            PduError {
                function: FunctionCode(0),
                kind: PduErrorKind::Empty,
                offset: 0
            }
        );
        assert_eq!(req_err(&[0x00, 0x00]), (InvalidValue, 0));
        // The exception a server sends back to a function-code-0 request is well formed.
        let to_fc0 = parse_pdu(&[0x80, 0x01], Direction::Response).expect("exception to fc 0");
        assert_eq!(to_fc0.exception(), Some(ExceptionCode(1)));
        let mut oversized = [0x03; MAX_PDU_LEN + 1];
        assert_eq!(req_err(&oversized), (TrailingBytes, 253));
        // Undefined function codes get the one extra byte real devices use, no more.
        oversized[0] = 0x5A;
        assert!(parse_pdu(&oversized, Direction::Request).is_ok());
        let too_big = [0x5A; MAX_FRAMED_PDU_LEN + 1];
        assert_eq!(req_err(&too_big), (TrailingBytes, 254));
    }

    #[test]
    fn error_text() {
        let e = parse_pdu(&[0x03, 0x00, 0x00, 0x00], Direction::Request).unwrap_err();
        assert_eq!(
            e.to_string(),
            "read_holding_registers PDU: truncated at offset 4"
        );
        assert_eq!(e.kind.as_str(), "truncated");
        let kinds = [
            PduErrorKind::Empty,
            Truncated,
            TrailingBytes,
            ByteCountMismatch,
            QuantityOutOfRange,
            InvalidValue,
        ];
        let names = kinds.map(|k| k.as_str());
        assert_eq!(
            names,
            [
                "empty",
                "truncated",
                "trailing_bytes",
                "byte_count_mismatch",
                "quantity_out_of_range",
                "invalid_value"
            ]
        );
        assert_eq!(ByteCountMismatch.to_string(), "byte count mismatch");
        assert_eq!(Direction::Request.opposite().as_str(), "response");
    }

    /// Every valid fixture above, for mutation.
    static VALID: [&[u8]; 37] = [
        &READ_COILS_REQUEST,
        &READ_COILS_RESPONSE,
        &READ_DISCRETE_INPUTS_REQUEST,
        &READ_DISCRETE_INPUTS_RESPONSE,
        &READ_HOLDING_REGISTERS_REQUEST,
        &READ_HOLDING_REGISTERS_RESPONSE,
        &READ_INPUT_REGISTERS_REQUEST,
        &READ_INPUT_REGISTERS_RESPONSE,
        &WRITE_SINGLE_COIL,
        &WRITE_SINGLE_REGISTER,
        &READ_EXCEPTION_STATUS_REQUEST,
        &READ_EXCEPTION_STATUS_RESPONSE,
        &DIAGNOSTICS_RETURN_QUERY_DATA,
        &DIAGNOSTICS_FORCE_LISTEN_ONLY,
        &GET_COMM_EVENT_COUNTER_REQUEST,
        &GET_COMM_EVENT_COUNTER_RESPONSE,
        &GET_COMM_EVENT_LOG_REQUEST,
        &GET_COMM_EVENT_LOG_RESPONSE,
        &WRITE_MULTIPLE_COILS_REQUEST,
        &WRITE_MULTIPLE_COILS_RESPONSE,
        &WRITE_MULTIPLE_REGISTERS_REQUEST,
        &WRITE_MULTIPLE_REGISTERS_RESPONSE,
        &REPORT_SERVER_ID_REQUEST,
        &REPORT_SERVER_ID_RESPONSE,
        &READ_FILE_RECORD_REQUEST,
        &READ_FILE_RECORD_RESPONSE,
        &WRITE_FILE_RECORD,
        &MASK_WRITE_REGISTER,
        &READ_WRITE_MULTIPLE_REGISTERS_REQUEST,
        &READ_WRITE_MULTIPLE_REGISTERS_RESPONSE,
        &READ_FIFO_QUEUE_REQUEST,
        &READ_FIFO_QUEUE_RESPONSE,
        &READ_DEVICE_ID_REQUEST,
        &READ_DEVICE_ID_RESPONSE,
        &READ_DEVICE_ID_RESPONSE_CAPTURED,
        &CANOPEN_GENERAL_REFERENCE,
        &EXCEPTION_RESPONSE,
    ];

    #[test]
    fn every_fixture_decodes_in_some_direction() {
        for pdu in VALID {
            let decodes = parse_pdu(pdu, Direction::Request).is_ok()
                || parse_pdu(pdu, Direction::Response).is_ok();
            assert!(decodes, "{pdu:02x?}");
        }
    }

    proptest::proptest! {
        /// Random bytes rarely get past a byte count; valid PDUs with a byte changed, cut
        /// short or extended reach the sub-record and object walkers.
        #[test]
        fn mutated_fixtures_never_panic(
            fixture in proptest::sample::select(&VALID[..]),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
            keep in proptest::prelude::any::<proptest::sample::Index>(),
            extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4),
        ) {
            let mut pdu = fixture.to_vec();
            let at = at.index(pdu.len());
            pdu[at] = byte;
            pdu.truncate(1 + keep.index(pdu.len()));
            pdu.extend_from_slice(&extra);
            crate::modbus::proptests::walk_both_directions(&pdu);
        }
    }
}
