//! S7comm (protocol id 0x32): header, the job and ack_data bodies of every documented function,
//! and the borrowed views over their items.
//!
//! Layouts follow Wireshark's reverse-engineered `packet-s7comm.c`; each is checked against the
//! bytes present before a view is handed out, so the iterators here never meet malformed data.
//! Should one be built by hand over bad bytes anyway, it stops early instead of panicking.

use core::iter::FusedIterator;

use super::field::{data_item, param, s7 as field, var_spec};
use super::userdata::{parse_userdata, Userdata};
use super::{
    ascii_decimal, be_u16, be_u24, be_u32, Area, BlockType, DataTransportSize, ErrorClass,
    FunctionCode, ParamErrorCode, ReturnCode, Rosctr, S7Error, S7ErrorKind, SyntaxId,
    TransportSize, S7COMM_PROTOCOL_ID, S7_ACK_HEADER_LEN, S7_HEADER_LEN,
};

/// The S7comm header as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct S7Header {
    pub rosctr: Rosctr,
    /// Reserved; 0 in practice.
    pub redundancy_id: u16,
    /// Chosen by the requester, echoed in the response: pairs jobs with their acks.
    pub pdu_ref: u16,
    pub param_len: u16,
    pub data_len: u16,
    /// Error class and code: ack (2) and ack_data (3) only.
    pub error: Option<HeaderError>,
}

impl S7Header {
    /// Reads the header at the front of `pdu`: 12 bytes for ack and ack_data, 10 otherwise.
    /// `None` if they are not all there or the protocol id is not 0x32.
    pub fn read(pdu: &[u8]) -> Option<Self> {
        if *pdu.first()? != S7COMM_PROTOCOL_ID {
            return None;
        }
        let rosctr = Rosctr(*pdu.get(field::ROSCTR)?);
        let error = if rosctr.has_error_fields() {
            Some(HeaderError {
                class: ErrorClass(*pdu.get(field::ERROR_CLASS)?),
                code: *pdu.get(field::ERROR_CODE)?,
            })
        } else {
            None
        };
        Some(Self {
            rosctr,
            redundancy_id: be_u16(pdu, field::REDUNDANCY_ID)?,
            pdu_ref: be_u16(pdu, field::PDU_REF)?,
            param_len: be_u16(pdu, field::PARAM_LEN)?,
            data_len: be_u16(pdu, field::DATA_LEN)?,
            error,
        })
    }

    /// Header bytes: 12 with the error fields, 10 without.
    pub fn header_len(&self) -> usize {
        if self.error.is_some() {
            S7_ACK_HEADER_LEN
        } else {
            S7_HEADER_LEN
        }
    }

    /// Bytes of the whole PDU this header announces.
    pub fn pdu_len(&self) -> usize {
        self.header_len() + usize::from(self.param_len) + usize::from(self.data_len)
    }
}

/// Error fields of an ack or ack_data header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderError {
    pub class: ErrorClass,
    pub code: u8,
}

impl HeaderError {
    /// Class and code read as one 16-bit code, the way Wireshark names them (0xD241: the
    /// protection level does not allow the function).
    pub const fn combined(&self) -> ParamErrorCode {
        ParamErrorCode((self.class.0 as u16) << 8 | self.code as u16)
    }

    pub const fn is_error(&self) -> bool {
        self.class.0 != 0 || self.code != 0
    }
}

/// A decoded S7comm PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S7Pdu<'a> {
    pub header: S7Header,
    /// The parameter part, exactly `header.param_len` bytes.
    pub params: &'a [u8],
    /// The data part, exactly `header.data_len` bytes.
    pub data: &'a [u8],
    pub body: S7Body<'a>,
}

impl<'a> S7Pdu<'a> {
    /// The function of a job, ack or ack_data (first parameter byte); `None` for userdata and
    /// for PDUs without parameters.
    pub fn function(&self) -> Option<FunctionCode> {
        if self.header.rosctr == Rosctr::USERDATA {
            return None;
        }
        self.params.first().map(|&code| FunctionCode(code))
    }

    /// The header's error, when it is one (class or code non-zero).
    pub fn error(&self) -> Option<ParamErrorCode> {
        self.header
            .error
            .filter(HeaderError::is_error)
            .map(|error| error.combined())
    }

    /// The userdata body, for ROSCTR 7.
    pub fn userdata(&self) -> Option<Userdata<'a>> {
        match self.body {
            S7Body::Userdata(userdata) => Some(userdata),
            _ => None,
        }
    }
}

/// Decoded PDU contents, by ROSCTR and function. Everything variable is borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S7Body<'a> {
    /// An ack or ack_data without parameters: the PLC refused; the header says why.
    NoParameters,
    /// The ack_data of PI service and PLC stop: the function byte and, with an error, the
    /// function status (0x02 = error, with header error 0xD2A9 in
    /// tia_s300_downloadHwConfig.pcapng frame 81).
    FunctionAck { status: Option<u8> },
    /// 0xF0, job and ack_data.
    SetupCommunication(SetupCommunication),
    /// 0x04 job.
    ReadVarRequest { items: VarSpecs<'a> },
    /// 0x04 ack_data: one data item per requested variable, in order.
    ReadVarResponse { items: DataItems<'a> },
    /// 0x05 job: the variables and, in the data part, their new values.
    WriteVarRequest {
        items: VarSpecs<'a>,
        values: DataItems<'a>,
    },
    /// 0x05 ack_data: one return code per written variable.
    WriteVarResponse { return_codes: ReturnCodes<'a> },
    /// 0x1A-0x1F, job and ack_data.
    BlockControl(BlockControl<'a>),
    /// 0x28 job.
    PiService(PiService<'a>),
    /// 0x29 job.
    PlcStop(PlcStop<'a>),
    /// ROSCTR 7.
    Userdata(Userdata<'a>),
    /// Any other function, ROSCTR or layout this crate does not decode (CPU services, NCK
    /// address arrays, ...): [`S7Pdu::params`] and [`S7Pdu::data`] hold it raw.
    Other,
}

/// Setup communication: what each side offers and the negotiated PDU size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetupCommunication {
    /// Parallel jobs the calling side accepts unacknowledged.
    pub max_amq_calling: u16,
    pub max_amq_called: u16,
    /// Largest S7 PDU, in bytes: proposed in the job, granted in the ack_data.
    pub pdu_length: u16,
}

/// Decodes one S7comm PDU: the COTP data payload, protocol id 0x32 first.
///
/// The header's parameter and data lengths must account for every byte of the payload; each
/// documented function's parameter layout must fill its parameter part exactly, and its items
/// their data part. Unknown functions and ROSCTRs are kept as [`S7Body::Other`].
pub fn parse_s7comm(pdu: &[u8]) -> Result<S7Pdu<'_>, S7Error> {
    let err = S7Error::new;
    match pdu.first() {
        None => return Err(err(S7ErrorKind::Empty, 0)),
        Some(&S7COMM_PROTOCOL_ID) => {}
        Some(_) => return Err(err(S7ErrorKind::ProtocolId, field::PROTOCOL_ID)),
    }
    let Some(header) = S7Header::read(pdu) else {
        return Err(err(S7ErrorKind::Truncated, pdu.len()));
    };
    let header_len = header.header_len();
    let params_end = header_len + usize::from(header.param_len);
    let pdu_end = params_end + usize::from(header.data_len);
    if pdu.len() < pdu_end {
        return Err(err(S7ErrorKind::Truncated, pdu.len()));
    }
    if pdu.len() > pdu_end {
        return Err(err(S7ErrorKind::TrailingBytes, pdu_end));
    }
    let params = pdu.get(header_len..params_end).unwrap_or_default();
    let data = pdu.get(params_end..).unwrap_or_default();
    let parts = Parts {
        params,
        data,
        params_at: header_len,
        data_at: params_end,
    };
    let body = match header.rosctr {
        Rosctr::JOB => job(&parts)?,
        Rosctr::ACK | Rosctr::ACK_DATA => ack_data(&parts)?,
        Rosctr::USERDATA => S7Body::Userdata(parse_userdata(params, data, header_len)?),
        _ => S7Body::Other,
    };
    Ok(S7Pdu {
        header,
        params,
        data,
        body,
    })
}

/// The parameter and data parts, with their offsets in the PDU for error reports.
struct Parts<'a> {
    params: &'a [u8],
    data: &'a [u8],
    params_at: usize,
    data_at: usize,
}

impl<'a> Parts<'a> {
    fn param_err(&self, kind: S7ErrorKind, at: usize) -> S7Error {
        S7Error::new(kind, self.params_at + at)
    }

    fn data_err(&self, kind: S7ErrorKind, at: usize) -> S7Error {
        S7Error::new(kind, self.data_at + at)
    }

    /// Parameters must end exactly at `len`.
    fn params_exactly(&self, len: usize) -> Result<(), S7Error> {
        if self.params.len() < len {
            return Err(self.param_err(S7ErrorKind::Truncated, self.params.len()));
        }
        if self.params.len() > len {
            return Err(self.param_err(S7ErrorKind::TrailingBytes, len));
        }
        Ok(())
    }

    fn no_data(&self) -> Result<(), S7Error> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(self.data_err(S7ErrorKind::TrailingBytes, 0))
        }
    }

    fn param_u8(&self, at: usize) -> Result<u8, S7Error> {
        self.params
            .get(at)
            .copied()
            .ok_or(self.param_err(S7ErrorKind::Truncated, self.params.len()))
    }

    fn param_u16(&self, at: core::ops::Range<usize>) -> Result<u16, S7Error> {
        be_u16(self.params, at).ok_or(self.param_err(S7ErrorKind::Truncated, self.params.len()))
    }

    fn param_u32(&self, at: core::ops::Range<usize>) -> Result<u32, S7Error> {
        be_u32(self.params, at).ok_or(self.param_err(S7ErrorKind::Truncated, self.params.len()))
    }

    /// A length byte at `at` and that many bytes after it; returns them and where they end.
    fn param_counted(&self, at: usize) -> Result<(&'a [u8], usize), S7Error> {
        let len = usize::from(self.param_u8(at)?);
        let start = at + 1;
        let bytes = self
            .params
            .get(start..start + len)
            .ok_or(self.param_err(S7ErrorKind::Truncated, self.params.len()))?;
        Ok((bytes, start + len))
    }
}

// `job` and `ack_data` are inlined into `parse_s7comm`, their one caller: called, each body
// came back through memory and was copied whole into the PDU just after it was written field
// by field (a store-forwarding stall, 3% of steady-site's dissection).
#[inline(always)]
fn job<'a>(p: &Parts<'a>) -> Result<S7Body<'a>, S7Error> {
    let Some(&function) = p.params.get(param::FUNCTION) else {
        return Err(p.param_err(S7ErrorKind::Truncated, 0));
    };
    let function = FunctionCode(function);
    Ok(match function {
        FunctionCode::SETUP_COMMUNICATION => {
            p.no_data()?;
            S7Body::SetupCommunication(setup_communication(p)?)
        }
        FunctionCode::READ_VAR => {
            p.no_data()?;
            S7Body::ReadVarRequest {
                items: var_specs(p)?,
            }
        }
        FunctionCode::WRITE_VAR => {
            let items = var_specs(p)?;
            let values = data_items(p, items.count)?;
            S7Body::WriteVarRequest { items, values }
        }
        f if f.is_block_transfer() => S7Body::BlockControl(block_control_job(p, function)?),
        FunctionCode::PI_SERVICE => {
            p.no_data()?;
            S7Body::PiService(pi_service(p)?)
        }
        FunctionCode::PLC_STOP => {
            p.no_data()?;
            S7Body::PlcStop(plc_stop(p)?)
        }
        _ => S7Body::Other,
    })
}

#[inline(always)]
fn ack_data<'a>(p: &Parts<'a>) -> Result<S7Body<'a>, S7Error> {
    let Some(&function) = p.params.get(param::FUNCTION) else {
        p.no_data()?;
        return Ok(S7Body::NoParameters);
    };
    let function = FunctionCode(function);
    Ok(match function {
        FunctionCode::SETUP_COMMUNICATION => {
            p.no_data()?;
            S7Body::SetupCommunication(setup_communication(p)?)
        }
        FunctionCode::READ_VAR => {
            p.params_exactly(param::ITEMS)?;
            let count = p.param_u8(param::ITEM_COUNT)?;
            // Sinumerik NCK answers some reads with an array of NCK addresses instead of data
            // items (transport size 0x11/0x12): a different layout, kept raw.
            let nck = p.data.get(data_item::TRANSPORT_SIZE).is_some_and(|&size| {
                matches!(
                    DataTransportSize(size),
                    DataTransportSize::NCK_ADDRESS_1 | DataTransportSize::NCK_ADDRESS_2
                )
            });
            if nck {
                return Ok(S7Body::Other);
            }
            S7Body::ReadVarResponse {
                items: data_items(p, count)?,
            }
        }
        FunctionCode::WRITE_VAR => {
            p.params_exactly(param::ITEMS)?;
            let count = p.param_u8(param::ITEM_COUNT)?;
            if p.data.len() != usize::from(count) {
                return Err(p.param_err(S7ErrorKind::LengthMismatch, param::ITEM_COUNT));
            }
            S7Body::WriteVarResponse {
                return_codes: ReturnCodes(p.data),
            }
        }
        f if f.is_block_transfer() => S7Body::BlockControl(block_control_ack(p, function)?),
        FunctionCode::PI_SERVICE | FunctionCode::PLC_STOP if p.params.len() <= 2 => {
            p.no_data()?;
            S7Body::FunctionAck {
                status: p.params.get(param::BLOCK_STATUS).copied(),
            }
        }
        _ => S7Body::Other,
    })
}

fn setup_communication(p: &Parts<'_>) -> Result<SetupCommunication, S7Error> {
    p.params_exactly(param::SETUP_LEN)?;
    Ok(SetupCommunication {
        max_amq_calling: p.param_u16(param::SETUP_MAX_AMQ_CALLING)?,
        max_amq_called: p.param_u16(param::SETUP_MAX_AMQ_CALLED)?,
        pdu_length: p.param_u16(param::SETUP_PDU_LEN)?,
    })
}

/// Read/write job parameters: function, item count, then exactly that many specifications.
fn var_specs<'a>(p: &Parts<'a>) -> Result<VarSpecs<'a>, S7Error> {
    let count = p.param_u8(param::ITEM_COUNT)?;
    let bytes = p.params.get(param::ITEMS..).unwrap_or_default();
    let mut rest = bytes;
    for _ in 0..count {
        let at = param::ITEMS + (bytes.len() - rest.len());
        let Some((_, tail)) = split_var_spec(rest) else {
            let kind = if rest.len() < 2 {
                S7ErrorKind::Truncated
            } else {
                S7ErrorKind::LengthMismatch
            };
            return Err(p.param_err(kind, at));
        };
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(p.param_err(S7ErrorKind::TrailingBytes, p.params.len() - rest.len()));
    }
    Ok(VarSpecs { bytes, count })
}

/// Data items of a write job or read response: exactly `count` of them fill the data part.
fn data_items<'a>(p: &Parts<'a>, count: u8) -> Result<DataItems<'a>, S7Error> {
    let mut rest = p.data;
    for index in 0..count {
        let at = p.data.len() - rest.len();
        let is_last = index + 1 == count;
        let Some((_, tail)) = split_data_item(rest, is_last) else {
            return Err(p.data_err(S7ErrorKind::Truncated, at));
        };
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(p.data_err(S7ErrorKind::TrailingBytes, p.data.len() - rest.len()));
    }
    Ok(DataItems {
        bytes: p.data,
        count,
    })
}

/// One variable specification of a read or write job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarSpec<'a> {
    /// 0x12 ("variable specification") in every capture seen.
    pub spec_type: u8,
    pub syntax_id: SyntaxId,
    pub address: VarAddress<'a>,
}

impl VarSpec<'_> {
    /// The S7ANY address, `None` for other syntax ids.
    pub fn any(&self) -> Option<AnyPointer> {
        match self.address {
            VarAddress::Any(any) => Some(any),
            VarAddress::Raw(_) => None,
        }
    }

    /// The areas of a DBREAD specification (syntax id 0xB0, as S7-400 HMIs such as WinCC
    /// send): a count, then per area the bytes to read (1), the DB number (2) and the start
    /// byte address (2), as Wireshark's `s7comm.param.item.dbread.*` fields. `None` for other
    /// syntax ids, or when the count does not fill the specification exactly.
    pub fn dbread_areas(&self) -> Option<impl Iterator<Item = DbReadArea> + '_> {
        let VarAddress::Raw(raw) = self.address else {
            return None;
        };
        let (&n, areas) = raw.split_first()?;
        if self.syntax_id != SyntaxId::DBREAD || areas.len() != usize::from(n) * 5 {
            return None;
        }
        Some(areas.chunks_exact(5).map(|a| DbReadArea {
            length: a[0],
            db: u16::from_be_bytes([a[1], a[2]]),
            start: u16::from_be_bytes([a[3], a[4]]),
        }))
    }
}

/// One area of a DBREAD specification: `length` bytes of DB `db` from byte `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DbReadArea {
    pub length: u8,
    pub db: u16,
    pub start: u16,
}

/// The address part of a variable specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarAddress<'a> {
    /// Syntax id 0x10 with the 10-byte layout.
    Any(AnyPointer),
    /// Any other syntax id (DBREAD, 1200 symbolic, NCK, DRIVEESANY...): the bytes after the
    /// syntax id, as many as the specification's length declares.
    Raw(&'a [u8]),
}

/// An S7ANY address: `count` elements of `transport_size` at `area`, DB `db`, bit address
/// `address` (byte << 3 | bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnyPointer {
    pub transport_size: TransportSize,
    /// Number of elements (the "length" of the address).
    pub count: u16,
    /// Meaningful for data blocks (0x84, 0x85) only.
    pub db: u16,
    pub area: Area,
    /// Bit address: byte address << 3 | bit number, 24 bits on the wire.
    pub address: u32,
}

impl AnyPointer {
    /// Timers and counters are numbered, not addressed by byte and bit: their address is the
    /// number (Wireshark for S7's 0x1C/0x1D: "Number (T/C/BLOCK)"; the S7-200's IEC timers and
    /// counters, 0x1E/0x1F, which tshark shows as byte.bit, are addressed by number by libnodave
    /// and snap7 too).
    const fn numbered(&self) -> bool {
        matches!(self.area.0, 0x1c..=0x1f)
    }

    /// The byte address, or a timer's or counter's number.
    pub const fn byte_address(&self) -> u32 {
        if self.numbered() {
            self.address
        } else {
            self.address >> 3
        }
    }

    pub const fn bit(&self) -> u8 {
        if self.numbered() {
            0
        } else {
            (self.address & 0x7) as u8
        }
    }

    /// Bytes the elements occupy, when the transport size has a known width.
    pub fn byte_len(&self) -> Option<usize> {
        self.transport_size
            .element_len()
            .map(|width| width * usize::from(self.count))
    }
}

/// Splits one variable specification off the front: type, length, then `length` bytes
/// starting with the syntax id.
#[inline]
fn split_var_spec(bytes: &[u8]) -> Option<(VarSpec<'_>, &[u8])> {
    let spec_type = *bytes.get(var_spec::SPEC_TYPE)?;
    let length = *bytes.get(var_spec::LENGTH)?;
    let (spec, rest) = bytes.split_at_checked(var_spec::SYNTAX_ID + usize::from(length))?;
    let syntax_id = SyntaxId(*spec.get(var_spec::SYNTAX_ID)?);
    let any = spec_type == 0x12 && length == var_spec::ANY_LENGTH && syntax_id == SyntaxId::S7ANY;
    let address = if any {
        VarAddress::Any(AnyPointer {
            transport_size: TransportSize(*spec.get(var_spec::ANY_TRANSPORT_SIZE)?),
            count: be_u16(spec, var_spec::ANY_COUNT)?,
            db: be_u16(spec, var_spec::ANY_DB)?,
            area: Area(*spec.get(var_spec::ANY_AREA)?),
            address: be_u24(spec, var_spec::ANY_ADDRESS)?,
        })
    } else {
        VarAddress::Raw(spec.get(var_spec::ADDRESS..)?)
    };
    let spec = VarSpec {
        spec_type,
        syntax_id,
        address,
    };
    Some((spec, rest))
}

/// The variable specifications of a read or write job, checked by the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VarSpecs<'a> {
    bytes: &'a [u8],
    count: u8,
}

impl<'a> VarSpecs<'a> {
    /// Up to `count` specifications from `bytes`; iteration stops early on malformed bytes.
    pub fn new(bytes: &'a [u8], count: u8) -> Self {
        Self { bytes, count }
    }

    /// The item count the job declared (and the parser verified).
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> VarSpecsIter<'a> {
        VarSpecsIter {
            rest: self.bytes,
            left: self.count,
        }
    }
}

impl<'a> IntoIterator for VarSpecs<'a> {
    type Item = VarSpec<'a>;
    type IntoIter = VarSpecsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct VarSpecsIter<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for VarSpecsIter<'a> {
    type Item = VarSpec<'a>;

    // Inlined into its callers (another crate's dissector): called, the item came back through
    // memory and was read whole just after it was written in pieces (a store-forwarding stall
    // an item).
    #[inline]
    fn next(&mut self) -> Option<VarSpec<'a>> {
        if self.left == 0 {
            return None;
        }
        match split_var_spec(self.rest) {
            Some((spec, rest)) => {
                self.rest = rest;
                self.left -= 1;
                Some(spec)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

impl FusedIterator for VarSpecsIter<'_> {}

/// One data item: a value read or to be written, or the error for a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataItem<'a> {
    pub return_code: ReturnCode,
    pub transport_size: DataTransportSize,
    /// The length field as sent: bits or bytes, see [`DataTransportSize::length_in_bits`].
    pub length: u16,
    /// The value bytes; empty for items whose return code carries no data.
    pub data: &'a [u8],
    /// The byte that pads an odd-length item to even length, present on every item but the
    /// last (Wireshark: "the PLC places extra bytes at the end of all but last result").
    pub fill: Option<u8>,
}

impl DataItem<'_> {
    /// The value's length in bits, whatever unit the length field uses.
    pub fn bit_len(&self) -> u32 {
        let length = u32::from(self.length);
        if self.transport_size.length_in_bits() {
            length
        } else {
            length * 8
        }
    }
}

/// Splits one data item off the front. The walk follows Wireshark: a four-byte head; data only
/// when the return code carries it (success, or reserved in write jobs), `length` bits or bytes
/// by transport size; a fill byte after odd-length data unless this is the last item.
#[inline]
fn split_data_item(bytes: &[u8], is_last: bool) -> Option<(DataItem<'_>, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<{ data_item::DATA }>()?;
    let return_code = ReturnCode(*head.get(data_item::RETURN_CODE)?);
    let transport_size = DataTransportSize(*head.get(data_item::TRANSPORT_SIZE)?);
    let length = be_u16(head, data_item::LENGTH)?;
    if !return_code.carries_data() {
        let item = DataItem {
            return_code,
            transport_size,
            length,
            data: &[],
            fill: None,
        };
        return Some((item, rest));
    }
    let data_len = transport_size.data_len(length);
    let (data, mut rest) = rest.split_at_checked(data_len)?;
    let mut fill = None;
    if data_len % 2 == 1 && !is_last {
        let (&byte, tail) = rest.split_first()?;
        fill = Some(byte);
        rest = tail;
    }
    let item = DataItem {
        return_code,
        transport_size,
        length,
        data,
        fill,
    };
    Some((item, rest))
}

/// The data items of a write job or read response, checked by the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataItems<'a> {
    bytes: &'a [u8],
    count: u8,
}

impl<'a> DataItems<'a> {
    /// Up to `count` items from `bytes`; iteration stops early on malformed bytes.
    pub fn new(bytes: &'a [u8], count: u8) -> Self {
        Self { bytes, count }
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The data part as on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn iter(&self) -> DataItemsIter<'a> {
        DataItemsIter {
            rest: self.bytes,
            left: self.count,
        }
    }
}

impl<'a> IntoIterator for DataItems<'a> {
    type Item = DataItem<'a>;
    type IntoIter = DataItemsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct DataItemsIter<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for DataItemsIter<'a> {
    type Item = DataItem<'a>;

    // Inlined, as `VarSpecsIter::next` is.
    #[inline]
    fn next(&mut self) -> Option<DataItem<'a>> {
        if self.left == 0 {
            return None;
        }
        match split_data_item(self.rest, self.left == 1) {
            Some((item, rest)) => {
                self.rest = rest;
                self.left -= 1;
                Some(item)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

impl FusedIterator for DataItemsIter<'_> {}

/// Return codes of a write response, one per item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReturnCodes<'a>(pub &'a [u8]);

impl<'a> ReturnCodes<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(
        &self,
    ) -> impl ExactSizeIterator<Item = ReturnCode> + DoubleEndedIterator + Clone + 'a {
        self.0.iter().map(|&code| ReturnCode(code))
    }
}

/// A block named in a file name or block list: type, number, file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    pub block_type: BlockType,
    pub number: u32,
    /// Destination file system: 'P' passive (copied, not linked), 'A' active, 'B' both.
    pub filesystem: u8,
}

impl BlockRef {
    /// From the 8 characters "TTNNNNNF": type as two hex digits, five decimal digits, file
    /// system, as PI services and block info requests write them.
    pub fn parse(entry: &[u8]) -> Option<Self> {
        let &[t0, t1, n0, n1, n2, n3, n4, filesystem] = entry else {
            return None;
        };
        Some(Self {
            block_type: BlockType::from_ascii([t0, t1])?,
            number: ascii_decimal(&[n0, n1, n2, n3, n4])?,
            filesystem,
        })
    }
}

/// The file name of a block transfer ("_0A00001P": complete module, DB 1, passive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockFile<'a> {
    /// The name as sent.
    pub name: &'a [u8],
    /// First character of a nine-character name: '_' complete module, '$' header for upload.
    pub attribute: Option<u8>,
    /// The block, when the name has the nine-character S7 layout. NC file transfers use
    /// other names ("_N_...").
    pub block: Option<BlockRef>,
}

impl<'a> BlockFile<'a> {
    pub fn parse(name: &'a [u8]) -> Self {
        let (attribute, block) = match name.split_first() {
            Some((&attribute, entry)) if name.len() == 9 => {
                (Some(attribute), BlockRef::parse(entry))
            }
            _ => (None, None),
        };
        Self {
            name,
            attribute,
            block,
        }
    }
}

/// Request download, download block, download ended, start upload, upload, end upload: the
/// fields each carries (Wireshark `s7comm_decode_plc_controls_updownload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockControl<'a> {
    pub function: FunctionCode,
    /// Function status: bit 0 more data follows, bit 1 error. In every job; in ack_data when
    /// the parameters go past the function byte.
    pub status: Option<u8>,
    /// Start upload (job and ack_data), upload and end upload jobs: the id the PLC assigned.
    pub upload_id: Option<u32>,
    /// End upload and download ended jobs.
    pub error_code: Option<ParamErrorCode>,
    /// Request download, download block, download ended and start upload jobs.
    pub file: Option<BlockFile<'a>>,
    /// Request download job: length of the block in load memory, as sent in ASCII digits.
    pub load_memory_len: Option<u32>,
    /// Request download job: length of the block's MC7 code.
    pub mc7_len: Option<u32>,
    /// Start upload ack_data: length of the whole block to come.
    pub block_len: Option<u32>,
    /// Upload and download block ack_data: the block bytes of this PDU.
    pub payload: Option<&'a [u8]>,
}

impl BlockControl<'_> {
    /// `function` with every field still absent.
    const fn bare(function: FunctionCode) -> Self {
        Self {
            function,
            status: None,
            upload_id: None,
            error_code: None,
            file: None,
            load_memory_len: None,
            mc7_len: None,
            block_len: None,
            payload: None,
        }
    }

    /// Bit 0 of the function status: more PDUs of this block follow.
    pub fn more_follows(&self) -> bool {
        self.status.is_some_and(|status| status & 0x01 != 0)
    }

    /// The block transferred, when the file name says.
    pub fn block(&self) -> Option<BlockRef> {
        self.file.and_then(|file| file.block)
    }
}

/// Length of the request download job's second part: '1', then two six-digit lengths.
const DOWNLOAD_LENGTHS_LEN: usize = 13;
/// Marker of the upload/download block data: length u16, then this u16, then the bytes.
const BLOCK_DATA_HEAD: usize = 4;

fn block_control_job<'a>(
    p: &Parts<'a>,
    function: FunctionCode,
) -> Result<BlockControl<'a>, S7Error> {
    let mut control = BlockControl {
        status: Some(p.param_u8(param::BLOCK_STATUS)?),
        ..BlockControl::bare(function)
    };
    let id = p.param_u32(param::BLOCK_ID)?;
    let mut end = param::BLOCK_ID.end;
    match function {
        FunctionCode::UPLOAD => control.upload_id = Some(id),
        FunctionCode::END_UPLOAD => {
            control.error_code = Some(ParamErrorCode(p.param_u16(param::BLOCK_ERROR_CODE)?));
            control.upload_id = Some(id);
        }
        _ => {
            if function == FunctionCode::START_UPLOAD {
                control.upload_id = Some(id);
            }
            if function == FunctionCode::DOWNLOAD_ENDED {
                control.error_code = Some(ParamErrorCode(p.param_u16(param::BLOCK_ERROR_CODE)?));
            }
            let (name, name_end) = p.param_counted(param::BLOCK_FILENAME_LEN)?;
            control.file = Some(BlockFile::parse(name));
            end = name_end;
            if function == FunctionCode::REQUEST_DOWNLOAD && p.params.len() > end {
                let (lengths, lengths_end) = p.param_counted(end)?;
                if let Some((_, digits)) = lengths
                    .split_first()
                    .filter(|_| lengths.len() == DOWNLOAD_LENGTHS_LEN)
                {
                    let (load, mc7) = digits.split_at(6);
                    control.load_memory_len = ascii_decimal(load);
                    control.mc7_len = ascii_decimal(mc7);
                }
                end = lengths_end;
            }
        }
    }
    p.params_exactly(end)?;
    p.no_data()?;
    Ok(control)
}

fn block_control_ack<'a>(
    p: &Parts<'a>,
    function: FunctionCode,
) -> Result<BlockControl<'a>, S7Error> {
    let mut control = BlockControl {
        status: p.params.get(param::BLOCK_STATUS).copied(),
        ..BlockControl::bare(function)
    };
    match function {
        FunctionCode::START_UPLOAD => {
            control.upload_id = Some(p.param_u32(param::BLOCK_ID)?);
            let mut end = param::BLOCK_ID.end;
            if p.params.len() > end {
                let (digits, digits_end) = p.param_counted(end)?;
                control.block_len = ascii_decimal(digits);
                end = digits_end;
            }
            p.params_exactly(end)?;
            p.no_data()?;
        }
        FunctionCode::UPLOAD | FunctionCode::DOWNLOAD_BLOCK => {
            if p.params.len() > param::BLOCK_STATUS + 1 {
                return Err(p.param_err(S7ErrorKind::TrailingBytes, param::BLOCK_STATUS + 1));
            }
            if !p.data.is_empty() {
                let declared =
                    be_u16(p.data, 0..2).ok_or(p.data_err(S7ErrorKind::Truncated, p.data.len()))?;
                let payload = p
                    .data
                    .get(BLOCK_DATA_HEAD..)
                    .ok_or(p.data_err(S7ErrorKind::Truncated, p.data.len()))?;
                if usize::from(declared) != payload.len() {
                    return Err(p.data_err(S7ErrorKind::LengthMismatch, 0));
                }
                control.payload = Some(payload);
            }
        }
        _ => {
            if p.params.len() > param::BLOCK_STATUS + 1 {
                return Err(p.param_err(S7ErrorKind::TrailingBytes, param::BLOCK_STATUS + 1));
            }
            p.no_data()?;
        }
    }
    Ok(control)
}

/// A PI service job (program invocation): the service name and its parameter block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiService<'a> {
    /// Seven bytes nobody has explained (00 00 00 00 00 00 FD in every capture seen).
    pub unknown: &'a [u8],
    /// The service's parameter block, raw.
    pub parameter: &'a [u8],
    /// "_INSE" activate block, "_DELE" delete block, "P_PROGRAM" start/stop, "_MODU" copy
    /// RAM to ROM, "_GARB" compress memory, "_N_..." Sinumerik NC services...
    pub service: &'a [u8],
}

impl<'a> PiService<'a> {
    /// The service name, when it is ASCII text.
    pub fn service_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.service).ok()
    }

    /// The blocks of a block service (_INSE, _INS2, _DELE): a count, a reserved byte, then one
    /// 8-character "TTNNNNNF" entry per block. `None` for other services or when the parameter
    /// block does not have exactly that layout.
    pub fn blocks(&self) -> Option<PiBlocks<'a>> {
        if !matches!(self.service, b"_INSE" | b"_INS2" | b"_DELE") {
            return None;
        }
        let (&[count, _reserved], entries) = self.parameter.split_first_chunk::<2>()?;
        let (entries, []) = entries.as_chunks::<PI_BLOCK_ENTRY_LEN>() else {
            return None;
        };
        (entries.len() == usize::from(count)).then_some(PiBlocks(entries))
    }

    /// The argument of services that take one string (P_PROGRAM, _MODU, _GARB): the whole
    /// parameter block, e.g. "EP" for _MODU; `None` for block services.
    pub fn argument(&self) -> Option<&'a [u8]> {
        match self.service {
            b"_INSE" | b"_INS2" | b"_DELE" => None,
            _ => Some(self.parameter),
        }
    }
}

const PI_BLOCK_ENTRY_LEN: usize = 8;

/// Block entries of an _INSE/_INS2/_DELE parameter block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiBlocks<'a>(&'a [[u8; PI_BLOCK_ENTRY_LEN]]);

impl<'a> PiBlocks<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> PiBlocksIter<'a> {
        PiBlocksIter(self.0.iter())
    }
}

impl<'a> IntoIterator for PiBlocks<'a> {
    type Item = Option<BlockRef>;
    type IntoIter = PiBlocksIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Yields each entry decoded, `None` for one that is not "TTNNNNNF".
#[derive(Debug, Clone)]
pub struct PiBlocksIter<'a>(core::slice::Iter<'a, [u8; PI_BLOCK_ENTRY_LEN]>);

impl Iterator for PiBlocksIter<'_> {
    type Item = Option<BlockRef>;

    fn next(&mut self) -> Option<Option<BlockRef>> {
        self.0.next().map(|entry| BlockRef::parse(entry))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for PiBlocksIter<'_> {}
impl FusedIterator for PiBlocksIter<'_> {}

/// PI service job: seven unknown bytes, parameter block (u16 length), name (u8 length).
fn pi_service<'a>(p: &Parts<'a>) -> Result<PiService<'a>, S7Error> {
    let unknown = p
        .params
        .get(param::PI_UNKNOWN)
        .ok_or(p.param_err(S7ErrorKind::Truncated, p.params.len()))?;
    let param_len = usize::from(p.param_u16(param::PI_PARAM_LEN)?);
    let param_end = param::PI_PARAM + param_len;
    let parameter = p
        .params
        .get(param::PI_PARAM..param_end)
        .ok_or(p.param_err(S7ErrorKind::Truncated, p.params.len()))?;
    let (service, end) = p.param_counted(param_end)?;
    p.params_exactly(end)?;
    Ok(PiService {
        unknown,
        parameter,
        service,
    })
}

/// A PLC stop job: the PI service named ("P_PROGRAM").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlcStop<'a> {
    /// Five bytes nobody has explained (zeros in every capture seen).
    pub unknown: &'a [u8],
    pub service: &'a [u8],
}

const _: () = assert!(param::STOP_NAME == param::STOP_NAME_LEN + 1);

fn plc_stop<'a>(p: &Parts<'a>) -> Result<PlcStop<'a>, S7Error> {
    let unknown = p
        .params
        .get(param::STOP_UNKNOWN)
        .ok_or(p.param_err(S7ErrorKind::Truncated, p.params.len()))?;
    let (service, end) = p.param_counted(param::STOP_NAME_LEN)?;
    p.params_exactly(end)?;
    Ok(PlcStop { unknown, service })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s7::testutil::{hex, s7_of};

    fn pdu_of(bytes: &[u8]) -> S7Pdu<'_> {
        parse_s7comm(s7_of(bytes)).unwrap()
    }

    /// Timer 10 and counter 10 are numbers (tshark: "(T 10)", "(C 10)"); M1.2 is byte 1, bit 2.
    #[test]
    fn timers_and_counters_are_numbered() {
        let at = |area: u8, address: u32| AnyPointer {
            transport_size: TransportSize(0x1d),
            count: 1,
            db: 0,
            area: Area(area),
            address,
        };
        for area in [0x1c, 0x1d, 0x1e, 0x1f] {
            assert_eq!((at(area, 10).byte_address(), at(area, 10).bit()), (10, 0));
        }
        assert_eq!((at(0x83, 10).byte_address(), at(0x83, 10).bit()), (1, 2));
    }

    #[test]
    fn setup_communication_job_and_ack_data() {
        // s7comm_downloading_block_db1.pcap frames 7 and 8: proposes 480 bytes, gets 240.
        let job = hex("0300001902f08032010000020000080000f0000001000101e0");
        let pdu = pdu_of(&job);
        assert_eq!(pdu.header.rosctr, Rosctr::JOB);
        // Wireshark shows 512: the reference is big-endian like every S7 field.
        assert_eq!(pdu.header.pdu_ref, 0x0200);
        assert_eq!(pdu.header.error, None);
        assert_eq!(pdu.function(), Some(FunctionCode::SETUP_COMMUNICATION));
        assert_eq!(
            pdu.body,
            S7Body::SetupCommunication(SetupCommunication {
                max_amq_calling: 1,
                max_amq_called: 1,
                pdu_length: 480
            })
        );
        let ack = hex("0300001b02f080320300000200000800000000f0000001000100f0");
        let pdu = pdu_of(&ack);
        assert_eq!(pdu.header.rosctr, Rosctr::ACK_DATA);
        assert_eq!(pdu.header.header_len(), 12);
        assert_eq!(pdu.header.pdu_len(), 20);
        assert_eq!(
            pdu.header.error,
            Some(HeaderError {
                class: ErrorClass::NO_ERROR,
                code: 0
            })
        );
        assert_eq!(pdu.error(), None);
        let S7Body::SetupCommunication(setup) = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        assert_eq!(setup.pdu_length, 240);
    }

    #[test]
    fn read_var_with_db_and_flag_items() {
        // wincc_s300_setup-alarm-read-write.pcapng frame 6: eight items, DB1 bit/real/dword/
        // word, M1.0 and M1.1, T0, C0; frame 9 the answer.
        let job = hex(
            "0300007302f080320100000002006200000408120a10010001000184000010120a1008000100018400\
             0040120a10060001000184000020120a10040001000184000000120a10010001000083000008120a10\
             010001000083000009120a101d000100001d000000120a101c000100001c000000",
        );
        let pdu = pdu_of(&job);
        let S7Body::ReadVarRequest { items } = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        assert_eq!(items.len(), 8);
        let anys: Vec<AnyPointer> = items.iter().map(|spec| spec.any().unwrap()).collect();
        assert_eq!(anys.len(), 8);
        let summary: Vec<(Area, u16, u32, u8, TransportSize)> = anys
            .iter()
            .map(|a| (a.area, a.db, a.byte_address(), a.bit(), a.transport_size))
            .collect();
        assert_eq!(
            summary,
            [
                (Area::DATA_BLOCKS, 1, 2, 0, TransportSize::BIT),
                (Area::DATA_BLOCKS, 1, 8, 0, TransportSize::REAL),
                (Area::DATA_BLOCKS, 1, 4, 0, TransportSize::DWORD),
                (Area::DATA_BLOCKS, 1, 0, 0, TransportSize::WORD),
                (Area::FLAGS, 0, 1, 0, TransportSize::BIT),
                (Area::FLAGS, 0, 1, 1, TransportSize::BIT),
                (Area::TIMERS, 0, 0, 0, TransportSize::TIMER),
                (Area::COUNTERS, 0, 0, 0, TransportSize::COUNTER),
            ]
        );
        assert_eq!(anys[1].byte_len(), Some(4));
        assert!(items.iter().all(|spec| spec.spec_type == 0x12));

        let ack = hex(
            "0300004902f0803203000000020002003400000408ff0300010100ff070004aabbccddff040020fead\
             beefff040010babeff0300010100ff0300010100ff0900022504ff0900020011",
        );
        let pdu = pdu_of(&ack);
        assert_eq!(pdu.header.pdu_ref, 2);
        let S7Body::ReadVarResponse { items } = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        let values: Vec<(ReturnCode, &[u8], Option<u8>, u32)> = items
            .iter()
            .map(|i| (i.return_code, i.data, i.fill, i.bit_len()))
            .collect();
        let ok = ReturnCode::SUCCESS;
        assert_eq!(
            values,
            [
                (ok, &[0x01][..], Some(0x00), 1),
                (ok, &[0xaa, 0xbb, 0xcc, 0xdd][..], None, 32),
                (ok, &[0xfe, 0xad, 0xbe, 0xef][..], None, 32),
                (ok, &[0xba, 0xbe][..], None, 16),
                (ok, &[0x01][..], Some(0x00), 1),
                (ok, &[0x01][..], Some(0x00), 1),
                (ok, &[0x25, 0x04][..], None, 16),
                (ok, &[0x00, 0x11][..], None, 16),
            ]
        );
        let sizes: Vec<_> = items.iter().map(|i| i.transport_size).collect();
        assert_eq!(sizes[1], DataTransportSize::REAL);
        assert_eq!(sizes[6], DataTransportSize::OCTET_STRING);
    }

    #[test]
    fn read_var_errors_carry_no_data() {
        // s7ident.pcap frames 31/32: five items (M, I, Q, T, C); the snap7 server answers each
        // with 0x0A, transport size 0 and a length of 4 but no data, which Wireshark reads as
        // four-byte items.
        let ack = hex(
            "0300002902f080320300000a0000020014000004050a0000040a0000040a0000040a0000040a000004",
        );
        let pdu = pdu_of(&ack);
        let S7Body::ReadVarResponse { items } = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        assert_eq!(items.iter().count(), 5);
        assert!(items
            .iter()
            .all(|i| i.return_code == ReturnCode::OBJECT_DOES_NOT_EXIST && i.data.is_empty()));
    }

    #[test]
    fn write_var_job_and_ack() {
        // s7comm_varservice_libnodavedemo.pcap frames 15 and 16: MD0 := 0xa9100001.
        let job =
            hex("0300002702f080320100000002000e00080501120a1002000400008300000000040020a9100001");
        let pdu = pdu_of(&job);
        let S7Body::WriteVarRequest { items, values } = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        let any = items.iter().next().unwrap().any().unwrap();
        assert_eq!(
            (any.area, any.byte_address(), any.count),
            (Area::FLAGS, 0, 4)
        );
        let value = values.iter().next().unwrap();
        assert_eq!(value.return_code, ReturnCode::RESERVED);
        assert_eq!(value.transport_size, DataTransportSize::BYTE_WORD_DWORD);
        assert_eq!(value.length, 32);
        assert_eq!(value.data, [0xa9, 0x10, 0x00, 0x01]);
        assert_eq!(value.fill, None);
        let ack = hex("0300001602f0803203000000020002000100000501ff");
        let pdu = pdu_of(&ack);
        let S7Body::WriteVarResponse { return_codes } = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        assert_eq!(
            return_codes.iter().collect::<Vec<_>>(),
            [ReturnCode::SUCCESS]
        );
    }

    #[test]
    fn write_var_of_bits_with_fill_bytes() {
        // mb2.pcap frame 80: four single-bit writes to DB1000 (DBX0.5, 1.0, 0.7, 1.1); every
        // one-byte value but the last is padded. Frame 86: all four succeed.
        let job = hex(
            "0300005a02f080320100000001003200170504120a1001000103e884000005120a1001000103e88400\
             0008120a1001000103e884000007120a1001000103e884000009000300010000000300010100000300\
             0101000003000101",
        );
        let pdu = pdu_of(&job);
        let S7Body::WriteVarRequest { items, values } = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        let addresses: Vec<(u16, u32, u8)> = items
            .iter()
            .filter_map(|s| s.any())
            .map(|a| (a.db, a.byte_address(), a.bit()))
            .collect();
        assert_eq!(
            addresses,
            [(1000, 0, 5), (1000, 1, 0), (1000, 0, 7), (1000, 1, 1)]
        );
        let bits: Vec<(&[u8], Option<u8>)> = values.iter().map(|v| (v.data, v.fill)).collect();
        assert_eq!(
            bits,
            [
                (&[0x00][..], Some(0)),
                (&[0x01][..], Some(0)),
                (&[0x01][..], Some(0)),
                (&[0x01][..], None)
            ]
        );
        let ack = hex("0300001902f0803203000000010002000400000504ffffffff");
        let S7Body::WriteVarResponse { return_codes } = pdu_of(&ack).body else {
            panic!()
        };
        assert_eq!(return_codes.len(), 4);
        // snap7_s300_everything.pcapng frame 54: two of five writes refused (0x03).
        let ack = hex("0300001a02f080320300001a000002000500000505ffffff0303");
        let S7Body::WriteVarResponse { return_codes } = pdu_of(&ack).body else {
            panic!()
        };
        assert_eq!(
            return_codes.iter().next_back(),
            Some(ReturnCode::ACCESS_DENIED)
        );
    }

    #[test]
    fn qut_attack_write_to_flags() {
        // 20161215172609.ConveyorBeltOff.master.pcap frame 1 (QUT S7 dataset, labelled attack):
        // the attacker writes 0x2a to MB816.
        let job = hex("0300002402f080320100001109000e00050501120a10020001000083000330000400082a");
        let pdu = pdu_of(&job);
        assert_eq!(pdu.header.pdu_ref, 0x1109);
        let S7Body::WriteVarRequest { items, values } = pdu.body else {
            panic!()
        };
        let any = items.iter().next().unwrap().any().unwrap();
        assert_eq!((any.area, any.byte_address()), (Area::FLAGS, 0x66));
        assert_eq!(values.iter().next().unwrap().data, [0x2a]);
    }

    #[test]
    fn non_s7any_items_are_kept_raw() {
        // Built by hand (no capture in the corpus has one): a read var job with an S7-400
        // DBREAD specification (syntax id 0xB0, length 7) and an S7-1200 symbolic one (0xB2,
        // length 14), in the header layout of s7comm_varservice_libnodavedemo.pcap frame 11.
        let mut pdu = hex("320100000000001b0000");
        pdu.extend_from_slice(&[0x04, 0x02]);
        pdu.extend_from_slice(&[0x12, 0x07, 0xB0, 0x01, 0x02, 0x00, 0x01, 0x00, 0x10]);
        pdu.extend_from_slice(&[
            0x12, 0x0E, 0xB2, 0x8A, 0x0E, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x02,
        ]);
        let pdu = parse_s7comm(&pdu).unwrap();
        let S7Body::ReadVarRequest { items } = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        let specs: Vec<VarSpec<'_>> = items.iter().collect();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].syntax_id, SyntaxId::DBREAD);
        assert_eq!(
            specs[0].address,
            VarAddress::Raw(&[0x01, 0x02, 0x00, 0x01, 0x00, 0x10])
        );
        let areas: Vec<DbReadArea> = specs[0].dbread_areas().unwrap().collect();
        assert_eq!(
            areas,
            [DbReadArea {
                length: 2,
                db: 1,
                start: 0x10
            }]
        );
        assert_eq!(specs[1].syntax_id, SyntaxId::S1200SYM);
        assert!(specs[1].any().is_none());
        assert!(specs[1].dbread_areas().is_none());
    }

    #[test]
    fn block_download_sequence() {
        // s7comm_downloading_block_db1.pcap: request download of DB1 (frame 43), its
        // ack_data (44), the PLC asking for the block (46), the block (48), download ended
        // (55, 57) and the PI service that activates it (58, 59).
        let request = hex(
            "0300003102f080320100000e00002000001a00010000000000095f30413030303031500d3130303035\
             3030303030343030",
        );
        let pdu = pdu_of(&request);
        let S7Body::BlockControl(control) = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        assert_eq!(control.function, FunctionCode::REQUEST_DOWNLOAD);
        assert_eq!(control.status, Some(0));
        assert_eq!(
            control.block(),
            Some(BlockRef {
                block_type: BlockType::DB,
                number: 1,
                filesystem: b'P'
            })
        );
        assert_eq!(control.file.unwrap().name, b"_0A00001P");
        assert_eq!(control.file.unwrap().attribute, Some(b'_'));
        assert_eq!(
            (control.load_memory_len, control.mc7_len),
            (Some(500), Some(400))
        );

        let ack = hex("0300001402f080320300000e000001000000001a");
        let pdu = pdu_of(&ack);
        let S7Body::BlockControl(control) = pdu.body else {
            panic!()
        };
        assert_eq!(
            (control.function, control.status),
            (FunctionCode::REQUEST_DOWNLOAD, None)
        );

        let download =
            hex("0300002302f080320100000100001200001b00000000000000095f3041303030303150");
        let S7Body::BlockControl(control) = pdu_of(&download).body else {
            panic!()
        };
        assert_eq!(control.function, FunctionCode::DOWNLOAD_BLOCK);
        assert_eq!(control.block().map(|b| b.number), Some(1));

        let block = hex(
            "030000f702f080320300000100000200e200001b0100de00fb70700101050a0001000001f4000000\
             00029147602bb5029147602bb5001c00000000019000000000000000000000000000000000000000\
             00000000000000000000000000000000000000000000000000000000000000000000000000000000\
             00000000000000000000000000000000000000000000000000000000000000000000000000000000\
             00000000000000000000000000000000000000000000000000000000000000000000000000000000\
             00000000000000000000000000000000000000000000000000000000000000000000000000000000\
             00000000000000",
        );
        let S7Body::BlockControl(control) = pdu_of(&block).body else {
            panic!()
        };
        assert!(control.more_follows());
        let payload = control.payload.unwrap();
        assert_eq!(payload.len(), 222);
        // MC7 block header magic "pp".
        assert_eq!(&payload[..2], b"pp");

        let ended = hex("0300002302f080320100000700001200001c00000000000000095f3041303030303150");
        let S7Body::BlockControl(control) = pdu_of(&ended).body else {
            panic!()
        };
        assert_eq!(control.function, FunctionCode::DOWNLOAD_ENDED);
        assert_eq!(control.error_code, Some(ParamErrorCode::NO_ERROR));
        assert_eq!(control.block().map(|b| b.block_type), Some(BlockType::DB));

        let pi = hex(
            "0300002b02f080320100000f00001a000028000000000000fd000a01003041303030303150055f494e\
             5345",
        );
        let S7Body::PiService(pi) = pdu_of(&pi).body else {
            panic!()
        };
        assert_eq!(pi.service_str(), Some("_INSE"));
        assert_eq!(pi.unknown, [0, 0, 0, 0, 0, 0, 0xfd]);
        let blocks: Vec<_> = pi.blocks().unwrap().iter().collect();
        assert_eq!(
            blocks,
            [Some(BlockRef {
                block_type: BlockType::DB,
                number: 1,
                filesystem: b'P'
            })]
        );
        assert_eq!(pi.argument(), None);
        // tia_s300_downloadOb1.pcapng frame 65: TIA Portal activating OB1 the same way.
        let ob1 = hex(
            "0300002b02f08032010000be0a001a000028000000000000fd000a01003038303030303150055f494e\
             5345",
        );
        let S7Body::PiService(pi) = pdu_of(&ob1).body else {
            panic!()
        };
        let block = pi.blocks().unwrap().iter().next().unwrap().unwrap();
        assert_eq!((block.block_type, block.number), (BlockType::OB, 1));
        let pi_ack = hex("0300001402f080320300000f0000010000000028");
        let pdu = pdu_of(&pi_ack);
        assert_eq!(pdu.body, S7Body::FunctionAck { status: None });
        assert_eq!(pdu.function(), Some(FunctionCode::PI_SERVICE));
    }

    #[test]
    fn refused_pi_service() {
        // tia_s300_downloadHwConfig.pcapng frame 81: _INSE of SDB4 refused while the CPU is
        // being assigned new parameters; the function status says "error".
        let ack = hex("0300001502f080320300007a0000020000d2a92802");
        let pdu = pdu_of(&ack);
        assert_eq!(pdu.body, S7Body::FunctionAck { status: Some(0x02) });
        assert_eq!(
            pdu.error(),
            Some(ParamErrorCode::NEW_PARAMETERS_BEING_ASSIGNED)
        );
    }

    #[test]
    fn pi_service_delete_and_string_arguments() {
        // tia_s300_downloadHwConfig.pcapng frame 60: _DELE of SDB 2000.
        let dele = hex(
            "0300002b02f080320100007400001a000028000000000000fd000a01003042303230303041055f44454c45",
        );
        let S7Body::PiService(pi) = pdu_of(&dele).body else {
            panic!()
        };
        assert_eq!(pi.service, b"_DELE");
        let block = pi.blocks().unwrap().iter().next().unwrap().unwrap();
        assert_eq!(
            (block.block_type, block.number, block.filesystem),
            (BlockType::SDB, 2000, b'A')
        );
        // step7_s300_copyRamToRom.pcapng frame 1: _MODU("EP"), copy RAM to ROM.
        let modu = hex("0300002302f080320100000a000012000028000000000000fd00024550055f4d4f4455");
        let S7Body::PiService(pi) = pdu_of(&modu).body else {
            panic!()
        };
        assert_eq!(
            (pi.service, pi.argument()),
            (&b"_MODU"[..], Some(&b"EP"[..]))
        );
        assert!(pi.blocks().is_none());
        // snap7_s300_everything.pcapng frame 61: _GARB(), compress memory; frame 63
        // P_PROGRAM("C "), a cold start.
        let garb = hex("0300002102f080320100001e000010000028000000000000fd0000055f47415242");
        let S7Body::PiService(pi) = pdu_of(&garb).body else {
            panic!()
        };
        assert_eq!((pi.service, pi.parameter), (&b"_GARB"[..], &b""[..]));
        let program =
            hex("0300002702f080320100001f000016000028000000000000fd0002432009505f50524f4752414d");
        let S7Body::PiService(pi) = pdu_of(&program).body else {
            panic!()
        };
        assert_eq!(
            (pi.service, pi.argument()),
            (&b"P_PROGRAM"[..], Some(&b"C "[..]))
        );
    }

    #[test]
    fn upload_sequence() {
        // snap7_s300_everything.pcapng frames 17-22: start upload of SDB0, upload, end upload.
        let start = hex("0300002302f080320100000800001200001d00000000000000095f3042303030303041");
        let S7Body::BlockControl(control) = pdu_of(&start).body else {
            panic!()
        };
        assert_eq!(control.function, FunctionCode::START_UPLOAD);
        assert_eq!(control.upload_id, Some(0));
        assert_eq!(
            control.block(),
            Some(BlockRef {
                block_type: BlockType::SDB,
                number: 0,
                filesystem: b'A'
            })
        );
        let started = hex("0300002302f0803203000008000010000000001d000100000000070730303030323136");
        let S7Body::BlockControl(control) = pdu_of(&started).body else {
            panic!()
        };
        assert_eq!((control.upload_id, control.block_len), (Some(7), Some(216)));
        let upload = hex("0300001902f080320100000900000800001e00000000000007");
        let S7Body::BlockControl(control) = pdu_of(&upload).body else {
            panic!()
        };
        assert_eq!(
            (control.function, control.upload_id),
            (FunctionCode::UPLOAD, Some(7))
        );
        let end = hex("0300001902f080320100000a00000800001f00000000000007");
        let S7Body::BlockControl(control) = pdu_of(&end).body else {
            panic!()
        };
        assert_eq!(
            (control.function, control.upload_id),
            (FunctionCode::END_UPLOAD, Some(7))
        );
        let ended = hex("0300001402f080320300000a000001000000001f");
        assert!(matches!(pdu_of(&ended).body, S7Body::BlockControl(_)));
    }

    #[test]
    fn refused_start_upload_is_an_ack_with_an_error() {
        // s7ident.pcap frame 21: ack without parameters, error 0xD241.
        let ack = hex("0300001302f08032020000060000000000d241");
        let pdu = pdu_of(&ack);
        assert_eq!(pdu.header.rosctr, Rosctr::ACK);
        assert_eq!(pdu.body, S7Body::NoParameters);
        assert_eq!(pdu.error(), Some(ParamErrorCode::PROTECTION_LEVEL));
        assert_eq!(pdu.function(), None);
        let error = pdu.header.error.unwrap();
        assert_eq!((error.class, error.code), (ErrorClass(0xd2), 0x41));
    }

    #[test]
    fn plc_stop_job_and_ack_data() {
        // snap7_s300_stop.pcapng frames 1 and 2.
        let job = hex("0300002102f0803201000000020010000029000000000009505f50524f4752414d");
        let pdu = pdu_of(&job);
        assert_eq!(pdu.function(), Some(FunctionCode::PLC_STOP));
        let S7Body::PlcStop(stop) = pdu.body else {
            panic!("{:?}", pdu.body)
        };
        assert_eq!(stop.service, b"P_PROGRAM");
        assert_eq!(stop.unknown, [0; 5]);
        let ack = hex("0300001402f08032030000000200010000000029");
        assert_eq!(pdu_of(&ack).body, S7Body::FunctionAck { status: None });
        // step7_s300_stop.pcapng frame 1: the same job from Step 7.
        let job = hex("0300002102f0803201000035000010000029000000000009505f50524f4752414d");
        let pdu = pdu_of(&job);
        assert_eq!(pdu.header.pdu_ref, 0x3500);
        assert!(matches!(
            pdu.body,
            S7Body::PlcStop(PlcStop {
                service: b"P_PROGRAM",
                ..
            })
        ));
    }

    #[test]
    fn malformed_pdus() {
        // Hand-built: the corpus has no malformed S7 PDU (every one decodes), so these are
        // real layouts with one field broken each.
        let e = |kind, offset| Err(S7Error::new(kind, offset));
        assert_eq!(parse_s7comm(&[]), e(S7ErrorKind::Empty, 0));
        assert_eq!(parse_s7comm(&[0x72, 0x01]), e(S7ErrorKind::ProtocolId, 0));
        // Header cut short, and parts longer than the payload.
        assert_eq!(
            parse_s7comm(&[0x32, 0x01, 0, 0]),
            e(S7ErrorKind::Truncated, 4)
        );
        let setup = hex("32010000000000080000f0000001000101e0");
        assert_eq!(parse_s7comm(&setup[..17]), e(S7ErrorKind::Truncated, 17));
        let mut long = setup.clone();
        long.push(0);
        assert_eq!(parse_s7comm(&long), e(S7ErrorKind::TrailingBytes, 18));
        // Setup communication with one parameter byte too few (the lengths agree).
        let short = hex("32010000000000070000f00000010001 01");
        assert_eq!(parse_s7comm(&short), e(S7ErrorKind::Truncated, 17));
        // A read job whose item count promises two items but holds one.
        let read = hex("32010000000000 0e 0000 0402 120a10020010000083000000");
        assert_eq!(parse_s7comm(&read), e(S7ErrorKind::Truncated, 24));
        // A write response with fewer return codes than items.
        let write_ack = hex("320300000000000200010000 0502 ff");
        assert_eq!(parse_s7comm(&write_ack), e(S7ErrorKind::LengthMismatch, 13));
        // A read response whose item runs past the data part.
        let read_ack = hex("320300000000000200060000 0401 ff040020aabb");
        assert_eq!(parse_s7comm(&read_ack), e(S7ErrorKind::Truncated, 14));
        // Upload block data whose length field disagrees.
        let upload = hex("320300000000000200060000 1e00 0003 00fb aabb");
        assert_eq!(parse_s7comm(&upload), e(S7ErrorKind::LengthMismatch, 14));
    }

    #[test]
    fn unknown_functions_and_rosctrs_are_kept() {
        let cpu = hex("320100000001000200000000");
        let pdu = parse_s7comm(&cpu).unwrap();
        assert_eq!(pdu.body, S7Body::Other);
        assert_eq!(pdu.function(), Some(FunctionCode::CPU_SERVICES));
        let odd = hex("32050000000100010000 99");
        let pdu = parse_s7comm(&odd).unwrap();
        assert_eq!((pdu.header.rosctr, pdu.body), (Rosctr(5), S7Body::Other));
    }

    #[test]
    fn walkers_stop_on_bad_bytes() {
        assert_eq!(VarSpecs::new(&[0x12, 0x0a, 0x10], 3).iter().count(), 0);
        assert_eq!(
            DataItems::new(&[0xff, 0x04, 0x00, 0x10, 0x01], 2)
                .iter()
                .count(),
            0
        );
        let items = DataItems::new(&[0xff, 0x09, 0x00, 0x01, 0xaa], 2);
        // The first item wants a fill byte that is not there.
        assert_eq!(items.iter().count(), 0);
        assert_eq!(BlockFile::parse(b"_N_TEST_MPF").block, None);
        assert_eq!(BlockRef::parse(b"0AXXXXXP"), None);
    }
}
