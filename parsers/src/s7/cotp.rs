//! COTP, the connection-oriented transport protocol of ISO 8073 / X.224, in the class 0 form
//! RFC 1006 carries: one TPDU per TPKT. S7 uses connection request/confirm (with TSAPs naming
//! rack and slot), data TPDUs, and disconnects.
//!
//! [`parse_cotp`] decodes one TPDU; [`CotpReassembler`] joins the payloads of data TPDUs until
//! the one with the end-of-TSDU bit, within a byte bound.

use core::fmt;
use core::iter::FusedIterator;

use super::field::cotp as field;
use super::{be_u16, CotpParamCode, CotpPduType};

/// Why a TPDU was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CotpErrorKind {
    /// No length indicator.
    Empty,
    /// Length indicator 255 (reserved, X.224 §13.2.1) or larger than the TPDU.
    LengthIndicator,
    /// The header is shorter than its PDU type's fixed part.
    Truncated,
    /// Parameters that do not exactly fill the variable part.
    BadParameters,
}

impl CotpErrorKind {
    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::LengthIndicator => "bad_length_indicator",
            Self::Truncated => "truncated",
            Self::BadParameters => "bad_parameters",
        }
    }
}

/// A rejected TPDU: what was wrong, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CotpError {
    pub kind: CotpErrorKind,
    /// Offset in the TPDU (0 = length indicator) of the offending field, or where the missing
    /// bytes would start.
    pub offset: usize,
}

impl fmt::Display for CotpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "COTP TPDU: {} at offset {}",
            self.kind.as_str(),
            self.offset
        )
    }
}

impl core::error::Error for CotpError {}

/// One decoded TPDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CotpTpdu<'a> {
    /// The type byte's high nibble (low nibble cleared).
    pub pdu_type: CotpPduType,
    /// The type byte's low nibble: the credit of CR, CC, AK and RJ (0 in class 0).
    pub credit: u8,
    pub body: CotpBody<'a>,
}

/// TPDU contents by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CotpBody<'a> {
    /// CR.
    ConnectionRequest(CotpConnection<'a>),
    /// CC.
    ConnectionConfirm(CotpConnection<'a>),
    /// DR.
    DisconnectRequest {
        dst_ref: u16,
        src_ref: u16,
        reason: u8,
        params: CotpParams<'a>,
        user_data: &'a [u8],
    },
    /// DC.
    DisconnectConfirm {
        dst_ref: u16,
        src_ref: u16,
        params: CotpParams<'a>,
    },
    /// DT: a piece of a TSDU. `eot` marks the last piece.
    Data {
        tpdu_number: u8,
        eot: bool,
        payload: &'a [u8],
    },
    /// ED (not in class 0, kept for completeness).
    ExpeditedData {
        dst_ref: u16,
        number: u8,
        payload: &'a [u8],
    },
    /// AK (not in class 0).
    DataAck { dst_ref: u16, next_number: u8 },
    /// ER: the peer rejected a TPDU; the cause and usually the offending header.
    Error {
        dst_ref: u16,
        cause: u8,
        params: CotpParams<'a>,
    },
    /// EA, RJ and unassigned types: the header after the type byte, and any data.
    Other { header: &'a [u8], data: &'a [u8] },
}

impl CotpBody<'_> {
    /// The DT payload and EOT bit, `None` for other TPDUs.
    pub fn data(&self) -> Option<(&[u8], bool)> {
        match *self {
            Self::Data { payload, eot, .. } => Some((payload, eot)),
            _ => None,
        }
    }
}

/// Fields of a connection request or confirm (X.224 §13.3, §13.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CotpConnection<'a> {
    pub dst_ref: u16,
    pub src_ref: u16,
    /// Protocol class in the high nibble (0 for RFC 1006), options in the low one.
    pub class_options: u8,
    pub params: CotpParams<'a>,
    /// Connection user data after the header (none in class 0).
    pub user_data: &'a [u8],
}

impl<'a> CotpConnection<'a> {
    pub const fn class(&self) -> u8 {
        self.class_options >> 4
    }

    /// The first parameter with `code`.
    pub fn param(&self, code: CotpParamCode) -> Option<&'a [u8]> {
        self.params
            .iter()
            .find(|param| param.code == code)
            .map(|param| param.value)
    }

    /// TSAP of the initiator (the PG, HMI or SCADA client in a request).
    pub fn calling_tsap(&self) -> Option<Tsap<'a>> {
        self.param(CotpParamCode::CALLING_TSAP).map(Tsap)
    }

    /// TSAP of the responder: for S7, connection type and the PLC's rack and slot.
    pub fn called_tsap(&self) -> Option<Tsap<'a>> {
        self.param(CotpParamCode::CALLED_TSAP).map(Tsap)
    }

    /// Maximum TPDU size in bytes (2^code), from a one-byte size parameter of 7..=13.
    pub fn tpdu_size(&self) -> Option<u16> {
        match self.param(CotpParamCode::TPDU_SIZE)? {
            &[code @ 7..=13] => Some(1 << code),
            _ => None,
        }
    }
}

/// A transport service access point as carried in CR/CC.
///
/// S7 classic uses two bytes: the connection type (1 = PG, 2 = OP/HMI, 3 = S7 basic, 0x10 and
/// up for other resources) and, in the called TSAP, `rack << 5 | slot`. S7-1200/1500 and OPC
/// stacks also use text TSAPs ("SIMATIC-ROOT-OTH").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tsap<'a>(pub &'a [u8]);

/// The PLC an S7 connection addresses, from a two-byte called TSAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RackSlot {
    /// Bits 7-5 of the TSAP's second byte.
    pub rack: u8,
    /// Bits 4-0.
    pub slot: u8,
}

impl<'a> Tsap<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Connection type and rack/slot byte of a two-byte TSAP; `None` for any other length.
    pub fn s7_pair(&self) -> Option<(u8, u8)> {
        match *self.0 {
            [connection_type, rack_slot] => Some((connection_type, rack_slot)),
            _ => None,
        }
    }

    /// First byte of a two-byte TSAP: 1 = PG, 2 = OP, 3 = S7 basic.
    pub fn connection_type(&self) -> Option<u8> {
        self.s7_pair().map(|(connection_type, _)| connection_type)
    }

    /// Rack (byte >> 5) and slot (byte & 0x1F) from the second byte of a two-byte TSAP.
    /// Meaningful on the called TSAP, the PLC's.
    pub fn rack_slot(&self) -> Option<RackSlot> {
        self.s7_pair().map(|(_, byte)| RackSlot {
            rack: byte >> 5,
            slot: byte & 0x1F,
        })
    }
}

/// One parameter of a TPDU's variable part: code, length, value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CotpParam<'a> {
    pub code: CotpParamCode,
    pub value: &'a [u8],
}

/// The parameters of a TPDU, checked by [`parse_cotp`] to fill the variable part exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CotpParams<'a> {
    bytes: &'a [u8],
}

impl<'a> CotpParams<'a> {
    /// `None` unless `bytes` is a whole number of parameters.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (_, tail) = split_param(rest)?;
            rest = tail;
        }
        Some(Self { bytes })
    }

    /// The variable part as on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn iter(&self) -> CotpParamsIter<'a> {
        CotpParamsIter { rest: self.bytes }
    }
}

impl<'a> IntoIterator for CotpParams<'a> {
    type Item = CotpParam<'a>;
    type IntoIter = CotpParamsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct CotpParamsIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for CotpParamsIter<'a> {
    type Item = CotpParam<'a>;

    fn next(&mut self) -> Option<CotpParam<'a>> {
        match split_param(self.rest) {
            Some((param, rest)) => {
                self.rest = rest;
                Some(param)
            }
            None => {
                self.rest = &[];
                None
            }
        }
    }
}

impl FusedIterator for CotpParamsIter<'_> {}

fn split_param(bytes: &[u8]) -> Option<(CotpParam<'_>, &[u8])> {
    let ([code, len], rest) = bytes.split_first_chunk::<2>()?;
    let (value, rest) = rest.split_at_checked(usize::from(*len))?;
    Some((
        CotpParam {
            code: CotpParamCode(*code),
            value,
        },
        rest,
    ))
}

/// Length indicator 255 is reserved (X.224 §13.2.1).
const LI_RESERVED: u8 = 255;
/// Length indicator of a class 0 data TPDU: type byte and EOT/number byte.
const DT_CLASS0_LI: u8 = 2;
const EOT_BIT: u8 = 0x80;

/// The smallest length indicator each type's fixed part needs, `None` for types not decoded.
fn fixed_li(pdu_type: CotpPduType) -> Option<usize> {
    Some(match pdu_type {
        CotpPduType::CONNECTION_REQUEST | CotpPduType::CONNECTION_CONFIRM => 6,
        CotpPduType::DISCONNECT_REQUEST => 6,
        CotpPduType::DISCONNECT_CONFIRM => 5,
        CotpPduType::DATA => 2,
        CotpPduType::EXPEDITED_DATA | CotpPduType::DATA_ACK | CotpPduType::TPDU_ERROR => 4,
        CotpPduType::EXPEDITED_DATA_ACK | CotpPduType::REJECT => 4,
        _ => return None,
    })
}

/// Decodes one TPDU (the bytes of a TPKT after its header).
///
/// The length indicator must fit, the type's fixed part must fit in it, and the parameters of
/// CR, CC, DR, DC and ER must fill the variable part exactly. A data TPDU's header may be longer
/// than class 0's (other classes add fields or a checksum parameter); the payload starts after
/// whatever the length indicator covers.
pub fn parse_cotp(tpdu: &[u8]) -> Result<CotpTpdu<'_>, CotpError> {
    let err = |kind, offset| CotpError { kind, offset };
    let Some(&li) = tpdu.first() else {
        return Err(err(CotpErrorKind::Empty, 0));
    };
    if li == 0 || li == LI_RESERVED {
        return Err(err(CotpErrorKind::LengthIndicator, field::LI));
    }
    let header_len = usize::from(li) + 1;
    let Some((header, data)) = tpdu.split_at_checked(header_len) else {
        return Err(err(CotpErrorKind::LengthIndicator, field::LI));
    };
    // li >= 1, so the type byte is inside the header.
    let type_byte = header.get(field::TYPE).copied().unwrap_or_default();
    let pdu_type = CotpPduType(type_byte & 0xF0);
    let credit = type_byte & 0x0F;
    let fixed_end = match fixed_li(pdu_type) {
        Some(fixed) if usize::from(li) < fixed => {
            return Err(err(CotpErrorKind::Truncated, header_len));
        }
        Some(fixed) => fixed + 1,
        None => header_len,
    };
    // Offsets below are within the fixed part, which the check above proved present.
    let u16_at = |range| be_u16(header, range).unwrap_or_default();
    let u8_at = |at: usize| header.get(at).copied().unwrap_or_default();
    let params_from = |at: usize| {
        let bytes = header.get(at..).unwrap_or_default();
        CotpParams::new(bytes).ok_or(err(CotpErrorKind::BadParameters, at))
    };
    let body = match pdu_type {
        CotpPduType::CONNECTION_REQUEST | CotpPduType::CONNECTION_CONFIRM => {
            let connection = CotpConnection {
                dst_ref: u16_at(field::DST_REF),
                src_ref: u16_at(field::SRC_REF),
                class_options: u8_at(field::CLASS),
                params: params_from(field::CONN_PARAMS)?,
                user_data: data,
            };
            if pdu_type == CotpPduType::CONNECTION_REQUEST {
                CotpBody::ConnectionRequest(connection)
            } else {
                CotpBody::ConnectionConfirm(connection)
            }
        }
        CotpPduType::DISCONNECT_REQUEST => CotpBody::DisconnectRequest {
            dst_ref: u16_at(field::DST_REF),
            src_ref: u16_at(field::SRC_REF),
            reason: u8_at(field::DR_REASON),
            params: params_from(field::DR_PARAMS)?,
            user_data: data,
        },
        CotpPduType::DISCONNECT_CONFIRM => CotpBody::DisconnectConfirm {
            dst_ref: u16_at(field::DST_REF),
            src_ref: u16_at(field::SRC_REF),
            params: params_from(field::DC_PARAMS)?,
        },
        CotpPduType::DATA => {
            let nr = u8_at(field::DT_NR);
            CotpBody::Data {
                tpdu_number: nr & !EOT_BIT,
                eot: nr & EOT_BIT != 0,
                payload: data,
            }
        }
        CotpPduType::EXPEDITED_DATA => CotpBody::ExpeditedData {
            dst_ref: u16_at(field::DST_REF),
            number: u8_at(field::AFTER_DST_REF) & !EOT_BIT,
            payload: data,
        },
        CotpPduType::DATA_ACK => CotpBody::DataAck {
            dst_ref: u16_at(field::DST_REF),
            next_number: u8_at(field::AFTER_DST_REF),
        },
        CotpPduType::TPDU_ERROR => CotpBody::Error {
            dst_ref: u16_at(field::DST_REF),
            cause: u8_at(field::AFTER_DST_REF),
            params: params_from(field::ER_PARAMS)?,
        },
        _ => CotpBody::Other {
            header: header.get(field::TYPE + 1..fixed_end).unwrap_or_default(),
            data,
        },
    };
    Ok(CotpTpdu {
        pdu_type,
        credit,
        body,
    })
}

/// Whether `tpdu` (possibly cut short by the end of the input) starts like a TPDU of a packet
/// whose TPDU is `tpdu_len` bytes: a known type, its fixed part within the length indicator,
/// the length indicator within the packet, and for data the class 0 length indicator. For
/// resynchronisation: needs only the first two bytes.
pub(super) fn plausible_tpdu_header(tpdu: &[u8], tpdu_len: usize) -> bool {
    let (Some(&li), Some(&type_byte)) = (tpdu.first(), tpdu.get(field::TYPE)) else {
        return false;
    };
    if li == LI_RESERVED || usize::from(li) + 1 > tpdu_len {
        return false;
    }
    let pdu_type = CotpPduType(type_byte & 0xF0);
    if pdu_type == CotpPduType::DATA {
        return li == DT_CLASS0_LI && type_byte == CotpPduType::DATA.0;
    }
    match fixed_li(pdu_type) {
        Some(fixed) => usize::from(li) >= fixed && parse_complete_or_cut(tpdu, tpdu_len),
        None => false,
    }
}

/// A whole TPDU must decode; a cut one is given the benefit of the doubt.
fn parse_complete_or_cut(tpdu: &[u8], tpdu_len: usize) -> bool {
    match tpdu.get(..tpdu_len) {
        Some(whole) => parse_cotp(whole).is_ok(),
        None => true,
    }
}

/// Default bound of [`CotpReassembler`]: 64 KiB.
///
/// An S7comm PDU is at most the PDU size negotiated by setup communication (240 to 960 bytes on
/// S7-300/400, up to 1920 on S7-1500) and S7comm-plus fragments large messages itself, one TPKT
/// each; a single TPDU can be at most 65531 bytes (RFC 1006). So a legitimate TSDU split over
/// data TPDUs stays far below 64 KiB, and a peer that sends more without ever setting EOT is
/// misbehaving or attacking: the reassembler drops its data rather than grow.
pub const DEFAULT_REASSEMBLY_LIMIT: usize = 64 * 1024;

/// Why [`CotpReassembler::push`] threw data away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardReason {
    /// This piece would have taken the TSDU past the bound: everything collected so far is
    /// dropped, and so are the following pieces up to and including the next EOT. Reported
    /// once per oversized TSDU: count it.
    Overflow,
    /// A later piece of a TSDU already dropped for [`DiscardReason::Overflow`].
    RestOfOverflowed,
}

impl DiscardReason {
    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Overflow => "overflow",
            Self::RestOfOverflowed => "rest_of_overflowed",
        }
    }
}

/// Outcome of [`CotpReassembler::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reassembled<'a> {
    /// A whole TSDU: the pushed payload itself when it was the only piece (no copy), else the
    /// reassembler's buffer.
    Complete(&'a [u8]),
    /// Not the last piece: collected, more needed.
    InProgress,
    /// Data thrown away to keep within the bound.
    Discarded(DiscardReason),
}

/// Joins the payloads of one direction's data TPDUs into TSDUs, within a byte bound.
///
/// Pure state: the caller feeds it the DT payloads of one connection direction in order. A TSDU
/// carried by a single DT with EOT (what S7 sends almost always) is returned without a copy;
/// only multi-TPDU TSDUs are copied into the buffer, which never holds more than the limit.
/// Empty DTs without EOT, which Step 7 and libnodave send between PDUs, change nothing.
#[derive(Debug, Clone)]
pub struct CotpReassembler {
    buf: Vec<u8>,
    limit: usize,
    /// Dropping the rest of an oversized TSDU until its EOT.
    skipping: bool,
    /// `buf` holds a TSDU already returned: clear it before the next piece.
    delivered: bool,
}

impl Default for CotpReassembler {
    fn default() -> Self {
        Self::new()
    }
}

impl CotpReassembler {
    /// A reassembler bounded by [`DEFAULT_REASSEMBLY_LIMIT`].
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_REASSEMBLY_LIMIT)
    }

    /// A reassembler that never holds a TSDU longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            skipping: false,
            delivered: false,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes of an unfinished TSDU held.
    pub fn buffered(&self) -> usize {
        if self.delivered {
            0
        } else {
            self.buf.len()
        }
    }

    /// Forgets any partial TSDU: after a gap in the TCP stream the pieces no longer join up.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.skipping = false;
        self.delivered = false;
    }

    /// Adds one DT's payload; `eot` is its end-of-TSDU bit.
    pub fn push<'a>(&'a mut self, payload: &'a [u8], eot: bool) -> Reassembled<'a> {
        if self.delivered {
            self.buf.clear();
            self.delivered = false;
        }
        if self.skipping {
            if eot {
                self.skipping = false;
            }
            return Reassembled::Discarded(DiscardReason::RestOfOverflowed);
        }
        let total = self.buf.len().saturating_add(payload.len());
        if total > self.limit {
            self.buf.clear();
            // Release the memory an attacker made us take; a legitimate peer rarely needs it.
            self.buf.shrink_to(self.limit.min(4096));
            self.skipping = !eot;
            return Reassembled::Discarded(DiscardReason::Overflow);
        }
        if eot && self.buf.is_empty() {
            return Reassembled::Complete(payload);
        }
        self.buf.extend_from_slice(payload);
        if eot {
            self.delivered = true;
            Reassembled::Complete(&self.buf)
        } else {
            Reassembled::InProgress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s7::testutil::hex;

    fn tpdu_of(tcp_payload: &[u8]) -> &[u8] {
        &tcp_payload[4..]
    }

    #[test]
    fn connection_request_with_tsaps() {
        // s7ident.pcap frame 4: CR from a client to rack 0, slot 1.
        let bytes = hex("0300001611e00000000100c0010ac1020100c2020101");
        let tpdu = parse_cotp(tpdu_of(&bytes)).unwrap();
        assert_eq!(tpdu.pdu_type, CotpPduType::CONNECTION_REQUEST);
        assert_eq!(tpdu.credit, 0);
        let CotpBody::ConnectionRequest(cr) = tpdu.body else {
            panic!("{tpdu:?}")
        };
        assert_eq!((cr.dst_ref, cr.src_ref, cr.class()), (0x0000, 0x0001, 0));
        assert_eq!(cr.tpdu_size(), Some(1024));
        assert_eq!(cr.calling_tsap(), Some(Tsap(&[0x01, 0x00])));
        let called = cr.called_tsap().unwrap();
        assert_eq!(called.connection_type(), Some(1));
        assert_eq!(called.rack_slot(), Some(RackSlot { rack: 0, slot: 1 }));
        assert_eq!(cr.params.iter().count(), 3);
        assert!(cr.user_data.is_empty());
    }

    #[test]
    fn connection_confirm_with_tsaps() {
        // s7comm_downloading_block_db1.pcap frame 6: CC from the PLC in slot 2.
        let bytes = hex("0300001611d00007000300c0010ac1020100c2020102");
        let tpdu = parse_cotp(tpdu_of(&bytes)).unwrap();
        let CotpBody::ConnectionConfirm(cc) = tpdu.body else {
            panic!("{tpdu:?}")
        };
        assert_eq!((cc.dst_ref, cc.src_ref), (0x0007, 0x0003));
        let codes: Vec<_> = cc.params.iter().map(|p| p.code).collect();
        assert_eq!(
            codes,
            [
                CotpParamCode::TPDU_SIZE,
                CotpParamCode::CALLING_TSAP,
                CotpParamCode::CALLED_TSAP
            ]
        );
        assert_eq!(
            cc.called_tsap().and_then(|t| t.rack_slot()),
            Some(RackSlot { rack: 0, slot: 2 })
        );
    }

    #[test]
    fn text_tsaps_have_no_rack_slot() {
        // S7-1511_db6w0_HMI.pcap frame 4: an S7-1500 CR with text TSAPs (S7comm-plus).
        let bytes = hex("030000322de00000008200c110534e4f50434330303032303030303031\
             c21053494d415449432d524f4f542d4f5448c0010a");
        let tpdu = parse_cotp(tpdu_of(&bytes)).unwrap();
        let CotpBody::ConnectionRequest(cr) = tpdu.body else {
            panic!("{tpdu:?}")
        };
        assert_eq!(cr.called_tsap().unwrap().bytes(), b"SIMATIC-ROOT-OTH");
        assert_eq!(cr.calling_tsap().unwrap().bytes(), b"SNOPCC0002000001");
        assert_eq!(cr.called_tsap().unwrap().rack_slot(), None);
        assert_eq!(cr.tpdu_size(), Some(1024));
    }

    #[test]
    fn data_with_and_without_eot() {
        // s7ident.pcap frame 8 (EOT) and mb2.pcap frame 87 (empty, no EOT).
        let bytes = hex("0300001902f08032010000000000080000f0000001000101e0");
        let tpdu = parse_cotp(tpdu_of(&bytes)).unwrap();
        assert_eq!(tpdu.pdu_type, CotpPduType::DATA);
        assert_eq!(tpdu.body.data(), Some((&bytes[7..], true)));
        let empty = hex("0300000702f000");
        let tpdu = parse_cotp(tpdu_of(&empty)).unwrap();
        assert_eq!(
            tpdu.body,
            CotpBody::Data {
                tpdu_number: 0,
                eot: false,
                payload: &[]
            }
        );
    }

    #[test]
    fn other_tpdu_types() {
        // Built after X.224 §13: DR with reason 0x80 (normal), DC, ER, AK, ED.
        let dr = [6, 0x80, 0x00, 0x01, 0x00, 0x02, 0x80];
        assert_eq!(
            parse_cotp(&dr).unwrap().body,
            CotpBody::DisconnectRequest {
                dst_ref: 1,
                src_ref: 2,
                reason: 0x80,
                params: CotpParams::default(),
                user_data: &[]
            }
        );
        let dc = [5, 0xC0, 0x00, 0x01, 0x00, 0x02];
        assert!(matches!(
            parse_cotp(&dc).unwrap().body,
            CotpBody::DisconnectConfirm {
                dst_ref: 1,
                src_ref: 2,
                ..
            }
        ));
        let er = [7, 0x70, 0x00, 0x01, 0x02, 0xC1, 0x01, 0xE0];
        let CotpBody::Error { cause, params, .. } = parse_cotp(&er).unwrap().body else {
            panic!()
        };
        assert_eq!(cause, 2);
        assert_eq!(params.iter().next().map(|p| p.value), Some(&[0xE0][..]));
        let ak = [4, 0x61, 0x00, 0x01, 0x05];
        let tpdu = parse_cotp(&ak).unwrap();
        assert_eq!(tpdu.credit, 1);
        assert_eq!(
            tpdu.body,
            CotpBody::DataAck {
                dst_ref: 1,
                next_number: 5
            }
        );
        let ed = [4, 0x10, 0x00, 0x01, 0x80, 0xAA];
        assert_eq!(
            parse_cotp(&ed).unwrap().body,
            CotpBody::ExpeditedData {
                dst_ref: 1,
                number: 0,
                payload: &[0xAA]
            }
        );
        let unknown = [2, 0x30, 0x01, 0x99];
        assert_eq!(
            parse_cotp(&unknown).unwrap().body,
            CotpBody::Other {
                header: &[0x01],
                data: &[0x99]
            }
        );
    }

    #[test]
    fn malformed_tpdus() {
        let e = |kind, offset| Err(CotpError { kind, offset });
        assert_eq!(parse_cotp(&[]), e(CotpErrorKind::Empty, 0));
        assert_eq!(parse_cotp(&[0]), e(CotpErrorKind::LengthIndicator, 0));
        assert_eq!(
            parse_cotp(&[255, 0xF0]),
            e(CotpErrorKind::LengthIndicator, 0)
        );
        assert_eq!(parse_cotp(&[2, 0xF0]), e(CotpErrorKind::LengthIndicator, 0));
        assert_eq!(parse_cotp(&[1, 0xF0]), e(CotpErrorKind::Truncated, 2));
        // A CR whose last parameter claims more bytes than the header holds.
        let bad = [8, 0xE0, 0, 0, 0, 1, 0, 0xC0, 0x05];
        assert_eq!(parse_cotp(&bad), e(CotpErrorKind::BadParameters, 7));
        assert_eq!(
            CotpError {
                kind: CotpErrorKind::Truncated,
                offset: 3
            }
            .to_string(),
            "COTP TPDU: truncated at offset 3"
        );
    }

    #[test]
    fn reassembly_of_a_single_eot_tpdu_borrows_the_input() {
        let mut r = CotpReassembler::new();
        let payload = [0x32, 0x01, 0x02];
        match r.push(&payload, true) {
            Reassembled::Complete(tsdu) => assert!(core::ptr::eq(tsdu, &payload[..])),
            other => panic!("{other:?}"),
        }
        // An empty DT without EOT first (mb2.pcap frames 87-151) changes nothing.
        assert_eq!(r.push(&[], false), Reassembled::InProgress);
        match r.push(&payload, true) {
            Reassembled::Complete(tsdu) => assert!(core::ptr::eq(tsdu, &payload[..])),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn reassembly_across_tpdus() {
        // The read var ack_data of s7comm_varservice_libnodavedemo.pcap frame 14 split over
        // three DTs, as a small negotiated TPDU size splits a larger PDU: no capture in the
        // corpus has a TSDU whose data spans more than one DT (only empty non-EOT DTs, which
        // the test above covers).
        let pdu = hex("320300000001000200140000 0401 ff040080a9100000000001010000000000000000");
        let mut r = CotpReassembler::new();
        assert_eq!(r.push(&pdu[..5], false), Reassembled::InProgress);
        assert_eq!(r.buffered(), 5);
        assert_eq!(r.push(&pdu[5..12], false), Reassembled::InProgress);
        assert_eq!(r.push(&pdu[12..], true), Reassembled::Complete(&pdu[..]));
        assert_eq!(r.buffered(), 0);
        // The buffer is reused for the next TSDU.
        assert_eq!(r.push(&pdu[..3], false), Reassembled::InProgress);
        assert_eq!(r.push(&pdu[3..], true), Reassembled::Complete(&pdu[..]));
    }

    #[test]
    fn reassembly_bound_holds_under_endless_non_eot_data() {
        let mut r = CotpReassembler::with_limit(1000);
        let piece = [0xAB; 300];
        let mut overflows = 0;
        for _ in 0..10_000 {
            match r.push(&piece, false) {
                Reassembled::InProgress => {}
                Reassembled::Discarded(DiscardReason::Overflow) => overflows += 1,
                Reassembled::Discarded(DiscardReason::RestOfOverflowed) => {}
                Reassembled::Complete(_) => panic!("no EOT was sent"),
            }
            assert!(r.buffered() <= 1000);
            assert!(r.buf.capacity() <= 4096);
        }
        // Only the first oversized piece reports an overflow; the rest of that TSDU is skipped.
        assert_eq!(overflows, 1);
        // Its EOT ends the skipping, and the next TSDU reassembles normally.
        assert_eq!(
            r.push(&piece, true),
            Reassembled::Discarded(DiscardReason::RestOfOverflowed)
        );
        assert_eq!(r.push(&[1, 2], true), Reassembled::Complete(&[1, 2]));
        // An EOT piece that alone exceeds the bound is dropped without skipping what follows.
        assert_eq!(
            r.push(&[0; 1001], true),
            Reassembled::Discarded(DiscardReason::Overflow)
        );
        assert_eq!(r.push(&[3], true), Reassembled::Complete(&[3]));
        assert_eq!(DiscardReason::Overflow.as_str(), "overflow");
    }

    #[test]
    fn reset_forgets_a_partial_tsdu() {
        let mut r = CotpReassembler::default();
        assert_eq!(r.limit(), DEFAULT_REASSEMBLY_LIMIT);
        assert_eq!(r.push(&[1, 2, 3], false), Reassembled::InProgress);
        r.reset();
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.push(&[4], true), Reassembled::Complete(&[4]));
    }

    #[test]
    fn plausible_headers() {
        assert!(plausible_tpdu_header(&[2, 0xF0], 3));
        assert!(plausible_tpdu_header(&[2, 0xF0, 0x80], 30));
        assert!(!plausible_tpdu_header(&[2, 0xF1], 3));
        assert!(!plausible_tpdu_header(&[2], 3));
        assert!(!plausible_tpdu_header(&[0x11, 0xE0], 3));
        assert!(plausible_tpdu_header(&[0x11, 0xE0], 18));
        assert!(!plausible_tpdu_header(&[0x11, 0x30], 18));
    }
}
