//! IEC 60870-5-104: pure, zero-copy, panic-free parsing of APDUs from a TCP byte stream.
//!
//! - [`parse_apdu`] frames one APDU at the front of a reassembled stream in the streaming style
//!   (complete + consumed, incomplete + needed, invalid) and decodes its APCI: I format (with its
//!   send and receive sequence numbers), S format (receive sequence number) or U format
//!   (STARTDT, STOPDT, TESTFR, act or con). [`find_resync`] finds where framing can restart.
//! - [`parse_asdu`] decodes the ASDU of an I-format APDU: type identification, variable
//!   structure qualifier, cause of transmission with its P/N and test bits, originator address
//!   and common address (the 104 sizes: COT 2 octets, common address 2, IOA 3), and validates
//!   the information objects against the type's element length, so that walking them
//!   ([`Asdu::objects`]) cannot fail.
//! - [`decode_element`] reads one information element: value, quality descriptor, command
//!   qualifier, and its CP24Time2a or CP56Time2a time tag.
//!
//! Strict about structure (the APDU length, the element lengths), lenient about values: a type
//! id or cause this crate has no name for is kept; an ASDU of an unknown type keeps its objects
//! as raw bytes. References: "101" is IEC 60870-5-101 (ASDU and information elements), "104" is
//! IEC 60870-5-104 (APCI).

mod codes;
#[cfg(test)]
mod proptests;

pub use codes::{Cause, Layout, TimeTag, TypeId, TypeSpec, UFunction};

/// Start octet of every APDU (104 §5.1).
pub const START: u8 = 0x68;
/// The length octet counts the four control octets and the ASDU: 4 to 253 (104 §5.1).
pub const MIN_LEN: usize = 4;
pub const MAX_LEN: usize = 253;
/// Sequence numbers are 15 bits (104 §5.1).
pub const SEQ_MODULO: u16 = 1 << 15;
/// The fixed part of an ASDU in 104: type, VSQ, COT (2), common address (2).
pub const ASDU_HEADER: usize = 6;
/// An information object address is 3 octets in 104.
pub const IOA_LEN: usize = 3;

/// The APCI's format and what its control field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apci {
    /// Information transfer: carries an ASDU.
    I { tx_seq: u16, rx_seq: u16 },
    /// Numbered supervisory: acknowledges I frames up to `rx_seq`.
    S { rx_seq: u16 },
    /// Unnumbered control function.
    U { function: UFunction },
}

impl Apci {
    /// `I`, `S` or `U`.
    pub const fn format(&self) -> &'static str {
        match self {
            Apci::I { .. } => "I",
            Apci::S { .. } => "S",
            Apci::U { .. } => "U",
        }
    }
}

/// One APDU: its APCI and, for the I format, the ASDU's bytes (decode with [`parse_asdu`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Apdu<'a> {
    pub apci: Apci,
    pub asdu: &'a [u8],
}

/// Why bytes at the front of a stream are not an APDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApciError {
    /// The first octet is not 0x68.
    BadStart(u8),
    /// The length octet is below 4 or above 253.
    BadLength(u8),
    /// A U-format control field with no function bit, several, or non-zero octets 2–4.
    BadUFunction([u8; 4]),
    /// An S or U frame that carries an ASDU.
    UnexpectedAsdu { format: &'static str, len: u8 },
    /// An I frame without one.
    MissingAsdu,
}

impl ApciError {
    /// A short snake_case reason, for counters and events.
    pub const fn reason(&self) -> &'static str {
        match self {
            ApciError::BadStart(_) => "bad_start",
            ApciError::BadLength(_) => "bad_length",
            ApciError::BadUFunction(_) => "bad_u_function",
            ApciError::UnexpectedAsdu { .. } => "unexpected_asdu",
            ApciError::MissingAsdu => "missing_asdu",
        }
    }
}

/// The result of framing the front of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed<'a> {
    /// An APDU, and the bytes it took (2 + its length octet).
    Complete { apdu: Apdu<'a>, consumed: usize },
    /// Not enough bytes yet: at least `needed` in all.
    Incomplete { needed: usize },
    /// Not an APDU; the length octet (when it could be read) tells how far the damage goes:
    /// `skip` bytes (at least 1).
    Invalid { error: ApciError, skip: usize },
}

/// Frames the APDU at the front of `buf` (104 §5).
pub fn parse_apdu(buf: &[u8]) -> Framed<'_> {
    let Some(&first) = buf.first() else {
        return Framed::Incomplete { needed: 2 };
    };
    if first != START {
        return Framed::Invalid {
            error: ApciError::BadStart(first),
            skip: 1,
        };
    }
    let Some(&len) = buf.get(1) else {
        return Framed::Incomplete { needed: 2 };
    };
    if !(MIN_LEN..=MAX_LEN).contains(&usize::from(len)) {
        return Framed::Invalid {
            error: ApciError::BadLength(len),
            skip: 2,
        };
    }
    let total = 2 + usize::from(len);
    let Some(frame) = buf.get(..total) else {
        return Framed::Incomplete { needed: total };
    };
    let c = [frame[2], frame[3], frame[4], frame[5]];
    let asdu = &frame[6..];
    let apci = match decode_control(c) {
        Ok(a) => a,
        Err(error) => return Framed::Invalid { error, skip: total },
    };
    let error = match (&apci, asdu.is_empty()) {
        (Apci::I { .. }, true) => Some(ApciError::MissingAsdu),
        (Apci::S { .. } | Apci::U { .. }, false) => Some(ApciError::UnexpectedAsdu {
            format: apci.format(),
            len,
        }),
        _ => None,
    };
    if let Some(error) = error {
        return Framed::Invalid { error, skip: total };
    }
    Framed::Complete {
        apdu: Apdu { apci, asdu },
        consumed: total,
    }
}

/// The four control octets (104 §5.1–5.3).
fn decode_control(c: [u8; 4]) -> Result<Apci, ApciError> {
    let seq = |lo: u8, hi: u8| (u16::from(lo) >> 1) | (u16::from(hi) << 7);
    if c[0] & 0x01 == 0 {
        return Ok(Apci::I {
            tx_seq: seq(c[0], c[1]),
            rx_seq: seq(c[2], c[3]),
        });
    }
    if c[0] & 0x03 == 0x01 {
        return Ok(Apci::S {
            rx_seq: seq(c[2], c[3]),
        });
    }
    let bits = c[0] & 0xfc;
    if bits.count_ones() != 1 || c[1] != 0 || c[2] != 0 || c[3] != 0 {
        return Err(ApciError::BadUFunction(c));
    }
    Ok(Apci::U {
        function: UFunction(bits),
    })
}

/// A control field that decodes and whose reserved bits are clear (104 §5.1: bit 1 of the
/// third octet in I and S frames, the whole second octet of an S frame).
fn plausible_control(c: [u8; 4]) -> bool {
    match decode_control(c) {
        Ok(Apci::I { .. }) => c[2] & 0x01 == 0,
        Ok(Apci::S { .. }) => c[1] == 0 && c[2] & 0x01 == 0,
        Ok(Apci::U { .. }) => true,
        Err(_) => false,
    }
}

/// Where framing can restart in `buf` after a gap or garbage: the first 0x68 from `from` on
/// whose length octet is valid and whose control field decodes with its reserved bits clear
/// (or that is too near the end to tell). `None` when there is none. A caller should still
/// check that the frame there is whole and followed by another start octet (or the end).
pub fn find_resync(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find(|&i| {
        buf[i] == START
            && match buf.get(i + 1) {
                None => true,
                Some(&len) if !(MIN_LEN..=MAX_LEN).contains(&usize::from(len)) => false,
                Some(_) => match buf.get(i + 2..i + 6) {
                    Some(c) => plausible_control([c[0], c[1], c[2], c[3]]),
                    None => true,
                },
            }
    })
}

/// A decoded ASDU header with its validated information objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asdu<'a> {
    pub type_id: TypeId,
    /// SQ: one address, then `count` elements of consecutive addresses.
    pub sequence: bool,
    /// The number of information objects (or elements, with SQ).
    pub count: u8,
    pub cause: Cause,
    /// P/N: a negative confirmation.
    pub negative: bool,
    /// T: a test ASDU.
    pub test: bool,
    pub originator: u8,
    pub common_address: u16,
    /// The information objects' bytes, validated against the type's element length (raw for a
    /// type this crate has no layout for: [`Asdu::objects`] yields nothing then).
    pub body: &'a [u8],
}

/// Why an ASDU does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsduError {
    /// Fewer than the 6 octets of the fixed part.
    Short(usize),
    /// The objects' bytes do not match the count and the type's element length.
    Length { expected: usize, actual: usize },
    /// A file segment whose length octet runs past the end.
    Segment,
}

impl AsduError {
    pub const fn reason(&self) -> &'static str {
        match self {
            AsduError::Short(_) => "short_asdu",
            AsduError::Length { .. } => "object_length",
            AsduError::Segment => "segment_length",
        }
    }
}

/// Decodes an I frame's ASDU (101 §7.1–7.2 with the 104 field sizes).
pub fn parse_asdu(b: &[u8]) -> Result<Asdu<'_>, AsduError> {
    let Some(h) = b.get(..ASDU_HEADER) else {
        return Err(AsduError::Short(b.len()));
    };
    let type_id = TypeId(h[0]);
    let sequence = h[1] & 0x80 != 0;
    let count = h[1] & 0x7f;
    let body = &b[ASDU_HEADER..];
    let asdu = Asdu {
        type_id,
        sequence,
        count,
        cause: Cause(h[2] & 0x3f),
        negative: h[2] & 0x40 != 0,
        test: h[2] & 0x80 != 0,
        originator: h[3],
        common_address: u16::from_le_bytes([h[4], h[5]]),
        body,
    };
    let n = usize::from(count);
    let expected = match type_id.spec() {
        None => return Ok(asdu),
        Some(TypeSpec {
            layout: Layout::Segment,
            ..
        }) => {
            // IOA, NOF (2), NOS (1), LOS (1), then LOS octets of segment.
            let los = body.get(IOA_LEN + 3).ok_or(AsduError::Segment)?;
            IOA_LEN + 4 + usize::from(*los)
        }
        Some(_) => {
            let size = type_id.element_len().unwrap_or(0);
            if n == 0 {
                0
            } else if sequence {
                IOA_LEN + n * size
            } else {
                n * (IOA_LEN + size)
            }
        }
    };
    if body.len() != expected {
        return Err(AsduError::Length {
            expected,
            actual: body.len(),
        });
    }
    Ok(asdu)
}

/// One information object: its address and its element's bytes (time tag included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoObject<'a> {
    pub ioa: u32,
    pub element: &'a [u8],
}

fn ioa(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16
}

impl<'a> Asdu<'a> {
    /// The information objects, in order (nothing for a type this crate has no layout for).
    pub fn objects(&self) -> impl Iterator<Item = InfoObject<'a>> + 'a {
        let body = self.body;
        let size = match self.type_id.spec() {
            None => None,
            Some(TypeSpec {
                layout: Layout::Segment,
                ..
            }) => Some(body.len().saturating_sub(IOA_LEN)),
            Some(_) => self.type_id.element_len(),
        };
        let n = if size.is_some() {
            usize::from(self.count)
        } else {
            0
        };
        let n = if matches!(
            self.type_id.spec(),
            Some(TypeSpec {
                layout: Layout::Segment,
                ..
            })
        ) {
            n.min(1)
        } else {
            n
        };
        let size = size.unwrap_or(0);
        let sequence = self.sequence;
        (0..n).filter_map(move |i| {
            if sequence {
                let base = ioa(body.get(..IOA_LEN)?);
                let at = IOA_LEN + i * size;
                Some(InfoObject {
                    ioa: base.wrapping_add(i as u32) & 0x00ff_ffff,
                    element: body.get(at..at + size)?,
                })
            } else {
                let at = i * (IOA_LEN + size);
                Some(InfoObject {
                    ioa: ioa(body.get(at..at + IOA_LEN)?),
                    element: body.get(at + IOA_LEN..at + IOA_LEN + size)?,
                })
            }
        })
    }
}

/// A value carried by an information element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// CP24Time2a: minutes and milliseconds (101 §7.2.6.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cp24 {
    pub ms: u16,
    pub minute: u8,
    pub invalid: bool,
}

/// CP56Time2a: a full date and time (101 §7.2.6.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cp56 {
    pub ms: u16,
    pub minute: u8,
    pub invalid: bool,
    pub hour: u8,
    pub summer: bool,
    pub day: u8,
    pub dow: u8,
    pub month: u8,
    /// 0–99 (years of the century).
    pub year: u8,
}

impl Cp56 {
    pub fn parse(b: &[u8; 7]) -> Cp56 {
        Cp56 {
            ms: u16::from_le_bytes([b[0], b[1]]),
            minute: b[2] & 0x3f,
            invalid: b[2] & 0x80 != 0,
            hour: b[3] & 0x1f,
            summer: b[3] & 0x80 != 0,
            day: b[4] & 0x1f,
            dow: b[4] >> 5,
            month: b[5] & 0x0f,
            year: b[6] & 0x7f,
        }
    }
}

/// One information element, decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Element {
    /// The value: a point's state, a measured value, a counter, a command's state or
    /// set-point, an interrogation's qualifier is in `qualifier`, not here.
    pub value: Option<Value>,
    /// The quality descriptor octet (SIQ/DIQ without the value bits, QDS, QDP, or the counter's
    /// sequence octet), as sent.
    pub quality: Option<u8>,
    /// A command's or system command's qualifier: QU of SCO/DCO/RCO, QL of QOS, QOI, QCC,
    /// QRP, COI, QPM, QPA.
    pub qualifier: Option<u8>,
    /// S/E of a command or set-point: select (true) or execute.
    pub select: Option<bool>,
    pub cp24: Option<Cp24>,
    pub cp56: Option<Cp56>,
}

fn f32_at(b: &[u8], at: usize) -> Option<f64> {
    let v = b.get(at..at + 4)?;
    Some(f64::from(f32::from_le_bytes([v[0], v[1], v[2], v[3]])))
}

fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    let v = b.get(at..at + 2)?;
    Some(i16::from_le_bytes([v[0], v[1]]))
}

/// Decodes an information element of type `t` (101 §7.3). `None` when the bytes do not have
/// the type's length (never for the objects of a parsed [`Asdu`]) or the type has no layout.
pub fn decode_element(t: TypeId, b: &[u8]) -> Option<Element> {
    let spec = t.spec()?;
    if spec.layout != Layout::Segment && Some(b.len()) != t.element_len() {
        return None;
    }
    let mut e = Element {
        value: None,
        quality: None,
        qualifier: None,
        select: None,
        cp24: None,
        cp56: None,
    };
    let norm = |raw: i16| Value::Float(f64::from(raw) / 32768.0);
    let first = b.first().copied().unwrap_or(0);
    match spec.layout {
        Layout::Single => {
            e.value = Some(Value::Bool(first & 0x01 != 0));
            e.quality = Some(first & 0xf0);
        }
        Layout::Double => {
            e.value = Some(Value::Int(i64::from(first & 0x03)));
            e.quality = Some(first & 0xf0);
        }
        Layout::Step => {
            // VTI: a 7-bit signed value and the transient bit.
            let v = ((first << 1) as i8) >> 1;
            e.value = Some(Value::Int(i64::from(v)));
            e.quality = b.get(1).copied();
        }
        Layout::Bitstring => {
            let v = b.get(..4)?;
            e.value = Some(Value::Int(i64::from(u32::from_le_bytes([
                v[0], v[1], v[2], v[3],
            ]))));
            e.quality = b.get(4).copied();
        }
        Layout::Normalized => {
            e.value = Some(norm(i16_at(b, 0)?));
            e.quality = b.get(2).copied();
        }
        Layout::NormalizedNoQuality => e.value = Some(norm(i16_at(b, 0)?)),
        Layout::Scaled => {
            e.value = Some(Value::Int(i64::from(i16_at(b, 0)?)));
            e.quality = b.get(2).copied();
        }
        Layout::Float => {
            e.value = Some(Value::Float(f32_at(b, 0)?));
            e.quality = b.get(4).copied();
        }
        Layout::Counter => {
            let v = b.get(..4)?;
            e.value = Some(Value::Int(i64::from(i32::from_le_bytes([
                v[0], v[1], v[2], v[3],
            ]))));
            e.quality = b.get(4).copied();
        }
        Layout::ProtectionEvent => {
            e.value = Some(Value::Int(i64::from(first & 0x03)));
            e.quality = Some(first & 0xf8);
        }
        Layout::ProtectionPacked => {
            e.value = Some(Value::Int(i64::from(first)));
            e.quality = b.get(1).copied();
        }
        Layout::PackedSingle => {
            let v = b.get(..4)?;
            e.value = Some(Value::Int(i64::from(u32::from_le_bytes([
                v[0], v[1], v[2], v[3],
            ]))));
            e.quality = b.get(4).copied();
        }
        Layout::SingleCommand => {
            e.value = Some(Value::Bool(first & 0x01 != 0));
            e.qualifier = Some((first >> 2) & 0x1f);
            e.select = Some(first & 0x80 != 0);
        }
        Layout::DoubleCommand | Layout::StepCommand => {
            e.value = Some(Value::Int(i64::from(first & 0x03)));
            e.qualifier = Some((first >> 2) & 0x1f);
            e.select = Some(first & 0x80 != 0);
        }
        Layout::SetpointNormalized | Layout::SetpointScaled | Layout::SetpointFloat => {
            let (value, qos) = match spec.layout {
                Layout::SetpointNormalized => (norm(i16_at(b, 0)?), *b.get(2)?),
                Layout::SetpointScaled => (Value::Int(i64::from(i16_at(b, 0)?)), *b.get(2)?),
                _ => (Value::Float(f32_at(b, 0)?), *b.get(4)?),
            };
            e.value = Some(value);
            e.qualifier = Some(qos & 0x7f);
            e.select = Some(qos & 0x80 != 0);
        }
        Layout::BitstringCommand => {
            let v = b.get(..4)?;
            e.value = Some(Value::Int(i64::from(u32::from_le_bytes([
                v[0], v[1], v[2], v[3],
            ]))));
        }
        Layout::EndOfInit
        | Layout::Interrogation
        | Layout::CounterInterrogation
        | Layout::ResetProcess
        | Layout::ParameterActivation => e.qualifier = Some(first),
        Layout::ParameterNormalized | Layout::ParameterScaled | Layout::ParameterFloat => {
            let (value, qpm) = match spec.layout {
                Layout::ParameterNormalized => (norm(i16_at(b, 0)?), *b.get(2)?),
                Layout::ParameterScaled => (Value::Int(i64::from(i16_at(b, 0)?)), *b.get(2)?),
                _ => (Value::Float(f32_at(b, 0)?), *b.get(4)?),
            };
            e.value = Some(value);
            e.qualifier = Some(qpm);
        }
        Layout::Test | Layout::TestTime | Layout::Delay => {
            e.value = Some(Value::Int(i64::from(u16::from_le_bytes([
                first,
                *b.get(1)?,
            ]))));
        }
        Layout::ClockSync => {
            let t: &[u8; 7] = b.get(..7)?.try_into().ok()?;
            e.cp56 = Some(Cp56::parse(t));
        }
        // F_SC_NA_1's select and call qualifier (SCQ, its low four bits: 1 select file, 2 call
        // file, 3 deactivate, 4 delete file, 5 select section, 6 call section, 7 deactivate
        // section), after the file's name (2 octets) and the section's (1).
        Layout::File if t.0 == 122 => e.qualifier = Some(*b.get(3)? & 0x0f),
        Layout::Read | Layout::File | Layout::Segment => {}
    }
    let tag = &b[spec.size.min(b.len())..];
    match spec.time {
        TimeTag::None => {}
        TimeTag::Cp24 => {
            let t = tag.get(..3)?;
            e.cp24 = Some(Cp24 {
                ms: u16::from_le_bytes([t[0], t[1]]),
                minute: t[2] & 0x3f,
                invalid: t[2] & 0x80 != 0,
            });
        }
        TimeTag::Cp56 => {
            let t: &[u8; 7] = tag.get(..7)?.try_into().ok()?;
            e.cp56 = Some(Cp56::parse(t));
        }
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u_frames() {
        let b = [0x68, 0x04, 0x07, 0x00, 0x00, 0x00];
        assert_eq!(
            parse_apdu(&b),
            Framed::Complete {
                apdu: Apdu {
                    apci: Apci::U {
                        function: UFunction::STARTDT_ACT
                    },
                    asdu: &[]
                },
                consumed: 6
            }
        );
        // Two function bits at once.
        assert!(matches!(
            parse_apdu(&[0x68, 0x04, 0x0f, 0, 0, 0]),
            Framed::Invalid {
                error: ApciError::BadUFunction(_),
                skip: 6
            }
        ));
        assert_eq!(parse_apdu(&[0x68]), Framed::Incomplete { needed: 2 });
        // 254 and 255 are beyond the largest APDU (found by the fuzzer).
        assert!(matches!(
            parse_apdu(&[0x68, 0xff, 0xff, 0x68, 0x71, 0x0a, 0x2c]),
            Framed::Invalid {
                error: ApciError::BadLength(0xff),
                ..
            }
        ));
        assert_eq!(
            parse_apdu(&[0x68, 10, 0]),
            Framed::Incomplete { needed: 12 }
        );
    }

    #[test]
    fn s_and_i_sequence_numbers() {
        // S frame acknowledging 0x1234 (rx = 0x1234 << 1).
        let rx = 0x1234u16 << 1;
        let b = [0x68, 0x04, 0x01, 0x00, rx as u8, (rx >> 8) as u8];
        match parse_apdu(&b) {
            Framed::Complete { apdu, .. } => assert_eq!(apdu.apci, Apci::S { rx_seq: 0x1234 }),
            other => panic!("{other:?}"),
        }
        // I frame tx 32767, rx 1, with a C_IC_NA_1 (interrogation, QOI 20) to CA 1.
        let b = [
            0x68, 0x0e, 0xfe, 0xff, 0x02, 0x00, 100, 0x01, 0x06, 0x00, 0x01, 0x00, 0, 0, 0, 20,
        ];
        let Framed::Complete { apdu, consumed } = parse_apdu(&b) else {
            panic!()
        };
        assert_eq!(consumed, 16);
        assert_eq!(
            apdu.apci,
            Apci::I {
                tx_seq: 32767,
                rx_seq: 1
            }
        );
        let asdu = parse_asdu(apdu.asdu).unwrap();
        assert_eq!(asdu.type_id, TypeId::C_IC_NA_1);
        assert_eq!(asdu.cause, Cause::ACTIVATION);
        assert_eq!(asdu.common_address, 1);
        let objs: Vec<_> = asdu.objects().collect();
        assert_eq!(objs.len(), 1);
        let e = decode_element(asdu.type_id, objs[0].element).unwrap();
        assert_eq!(e.qualifier, Some(20));
    }

    #[test]
    fn float_with_cp56_and_sequences() {
        // M_ME_TF_1, SQ=0, two objects.
        let mut b = vec![36, 2, 3, 0, 0x0a, 0x00];
        for (ioa, v) in [(0x010203u32, 1.5f32), (7, -2.0)] {
            b.extend_from_slice(&ioa.to_le_bytes()[..3]);
            b.extend_from_slice(&v.to_le_bytes());
            b.push(0x80); // QDS: invalid
            b.extend_from_slice(&[0xe8, 0x03, 0x05, 0x8a, 0x23, 0x0b, 0x18]);
        }
        let a = parse_asdu(&b).unwrap();
        let objs: Vec<_> = a.objects().collect();
        assert_eq!(objs[0].ioa, 0x010203);
        let e = decode_element(a.type_id, objs[1].element).unwrap();
        assert_eq!(e.value, Some(Value::Float(-2.0)));
        assert_eq!(e.quality, Some(0x80));
        let t = e.cp56.unwrap();
        assert_eq!((t.ms, t.minute, t.hour, t.summer), (1000, 5, 10, true));
        assert_eq!((t.day, t.dow, t.month, t.year), (3, 1, 11, 24));
        // The same with one byte short is a length error.
        assert_eq!(
            parse_asdu(&b[..b.len() - 1]),
            Err(AsduError::Length {
                expected: 30,
                actual: 29
            })
        );
        // SQ=1: one address, consecutive elements.
        let b = [1, 0x83, 20, 0, 1, 0, 10, 0, 0, 0x01, 0x00, 0x81];
        let a = parse_asdu(&b).unwrap();
        let objs: Vec<_> = a.objects().collect();
        assert_eq!(
            objs.iter().map(|o| o.ioa).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
        let e = decode_element(a.type_id, objs[2].element).unwrap();
        assert_eq!((e.value, e.quality), (Some(Value::Bool(true)), Some(0x80)));
    }

    #[test]
    fn commands_and_unknown_types() {
        // C_SC_NA_1 select, on.
        let e = decode_element(TypeId(45), &[0x81]).unwrap();
        assert_eq!(
            (e.value, e.select, e.qualifier),
            (Some(Value::Bool(true)), Some(true), Some(0))
        );
        // C_SE_NC_1 execute 12.5, QL 0.
        let mut b = 12.5f32.to_le_bytes().to_vec();
        b.push(0x00);
        let e = decode_element(TypeId(50), &b).unwrap();
        assert_eq!((e.value, e.select), (Some(Value::Float(12.5)), Some(false)));
        // A private type keeps its bytes and yields no object.
        let a = parse_asdu(&[200, 1, 3, 0, 1, 0, 9, 9, 9, 9]).unwrap();
        assert_eq!(a.objects().count(), 0);
        assert_eq!(a.body.len(), 4);
        // A step position of -3.
        let e = decode_element(TypeId(5), &[0x7d, 0]).unwrap();
        assert_eq!(e.value, Some(Value::Int(-3)));
    }

    #[test]
    fn resync_skips_garbage() {
        let b = [0x00, 0x68, 0x02, 0x68, 0x04, 0x43, 0, 0, 0];
        assert_eq!(find_resync(&b, 0), Some(3));
        assert_eq!(find_resync(&b, 4), None);
    }
}
