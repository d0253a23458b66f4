//! IEC 60870-5-104 flow state: APDU framing over the reassembled TCP stream, resync after gaps
//! and garbage, the send sequence number checked per direction, and one event per APDU.
//!
//! A stream is trusted once it framed as 104: at its start and after every gap the first bytes
//! must be a complete APDU with a valid control field, so other bytes on port 2404 (TLS, say)
//! produce no 104 events; they are counted as resync bytes and the flow as unidentified. Once a
//! flow is 104, bytes that do not frame are counted and reported once per episode, and an ASDU
//! whose objects do not match their type's length is an event with `error` (and a counter).
//!
//! Sequence numbers: each direction's I frames must count up by one (modulo 2^15) from the
//! first one seen; a number that jumps ahead is a `gap`, one already seen a `duplicate`
//! (`seq_error` on the event, and counters). A TCP gap (capture loss) forgets the expectation,
//! so lost packets are not reported as the protocol's.

use otwatch_parsers::iec104::{
    self, Apci, Asdu, Cp56, Framed, TypeId, Value as IecValue, SEQ_MODULO,
};
use serde::Serialize;

use super::{Ctx, Dir};
use crate::dissect::registry::IEC104;

/// The port controlled stations listen on (104 §10).
pub const DEFAULT_PORT: u16 = 2404;
/// The most bytes the dissector may leave unconsumed: one partial APDU.
pub const MAX_BUFFERED: usize = 2 + iec104::MAX_LEN;

/// The `iec104` object of an event (docs/events.md).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Iec104Event {
    /// `I`, `S` or `U`.
    pub format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_seq: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_seq: Option<u16>,
    /// U format: `startdt_act`, `startdt_con`, `stopdt_act`, `stopdt_con`, `testfr_act`,
    /// `testfr_con`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u_function: Option<&'static str>,
    /// I format: the send sequence number is not the one expected (`gap`, `duplicate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<&'static str>,
    /// SQ: one address and consecutive elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sq: Option<bool>,
    /// The number of information objects (or elements, with `sq`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u8>,
    /// Cause of transmission, the number without the P/N and test bits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cot: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cot_name: Option<&'static str>,
    /// P/N: a negative confirmation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub originator: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_address: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<Iec104Object>>,
    /// Why the APDU or its ASDU could not be decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// One information object.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Iec104Object {
    pub ioa: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<ObjValue>,
    /// The quality descriptor octet (QDS, the quality bits of SIQ/DIQ, QDP, or a counter's
    /// sequence octet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// A command's qualifier (QU, QL), or a system command's (QOI, QCC, QRP, COI, QPM, QPA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<u8>,
    /// A command's S/E bit: select (true) or execute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub select: Option<bool>,
    /// CP56Time2a, as `YYYY-MM-DDTHH:MM:SS.mmm` (the century is taken as 2000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// CP24Time2a: milliseconds within the minute and the minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_minute: Option<u8>,
    /// The time tag's IV bit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_invalid: Option<bool>,
}

/// A value as JSON has it: a boolean, an integer or a number.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ObjValue {
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl ObjValue {
    pub fn number(self) -> f64 {
        match self {
            ObjValue::Bool(b) => f64::from(u8::from(b)),
            ObjValue::Int(i) => i as f64,
            ObjValue::Float(f) => f,
        }
    }
}

/// The global (broadcast) common address: a station answers with its own.
pub const BROADCAST: u16 = 0xffff;

/// Objects listed per event; an ASDU holds at most 127.
pub const MAX_OBJECTS_PER_EVENT: usize = 127;

#[derive(Debug)]
pub struct Iec104Flow {
    /// An APDU framed well on this flow: it is 104.
    confirmed: bool,
    /// Per direction: the next bytes must frame before they are trusted.
    resync: [bool; 2],
    /// Per direction: a framing error was reported in the current episode.
    garbage_reported: [bool; 2],
    /// Per direction: the send sequence number the next I frame should carry.
    expect_tx: [Option<u16>; 2],
    /// The common address of the flow's last ASDU, for events of frames that carry none.
    common_address: Option<u16>,
}

impl Default for Iec104Flow {
    fn default() -> Self {
        Iec104Flow {
            confirmed: false,
            resync: [true, true],
            garbage_reported: [false, false],
            expect_tx: [None, None],
            common_address: None,
        }
    }
}

fn cp56_text(t: &Cp56) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
        2000 + u32::from(t.year),
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.ms / 1000,
        t.ms % 1000
    )
}

impl super::Dissector for Iec104Flow {
    fn on_stream_data(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) -> usize {
        let d = dir.index();
        let mut off = 0;
        while off < data.len() {
            let rest = &data[off..];
            if self.resync[d] {
                // The first place where an APDU with a valid length and control field starts,
                // which must then frame whole to be trusted.
                let Some(at) = iec104::find_resync(rest, 0) else {
                    // Keep the last byte: an APDU may start with it.
                    let skip = rest.len().saturating_sub(1);
                    ctx.stats[IEC104].resync_skipped_bytes += skip as u64;
                    return off + skip;
                };
                let cand = &rest[at..];
                // Followed by the next APDU's start octet, or by nothing yet.
                let chained = |n: usize| cand.get(n).is_none_or(|&b| b == iec104::START);
                let accept = match iec104::parse_apdu(cand) {
                    Framed::Complete { apdu, consumed } => {
                        chained(consumed)
                            && (apdu.asdu.is_empty() || iec104::parse_asdu(apdu.asdu).is_ok())
                    }
                    // On a flow known to be 104, a frame whose content is wrong for its format,
                    // in a chain: the main loop reports it.
                    Framed::Invalid {
                        error:
                            iec104::ApciError::MissingAsdu | iec104::ApciError::UnexpectedAsdu { .. },
                        skip,
                    } => self.confirmed && chained(skip),
                    Framed::Incomplete { .. } => {
                        ctx.stats[IEC104].resync_skipped_bytes += at as u64;
                        return off + at;
                    }
                    Framed::Invalid { .. } => false,
                };
                if accept {
                    ctx.stats[IEC104].resync_skipped_bytes += at as u64;
                    off += at;
                    self.resync[d] = false;
                    self.garbage_reported[d] = false;
                } else {
                    ctx.stats[IEC104].resync_skipped_bytes += at as u64 + 1;
                    off += at + 1;
                }
                continue;
            }
            match iec104::parse_apdu(rest) {
                Framed::Complete { apdu, consumed } => {
                    self.confirmed = true;
                    self.garbage_reported[d] = false;
                    self.on_apdu(ctx, dir, &apdu);
                    off += consumed;
                }
                Framed::Incomplete { .. } => break,
                Framed::Invalid { error, skip } => {
                    ctx.stats[IEC104].count_error(error.reason());
                    if self.confirmed && !self.garbage_reported[d] {
                        self.garbage_reported[d] = true;
                        if ctx.sink.wants_events() {
                            let mut m = malformed(rest, error);
                            m.common_address = self.common_address;
                            emit(ctx, dir, m);
                        }
                    }
                    // A bad control field with a good length: skip the APDU and go on; a bad
                    // start or length: look for the next one.
                    match error {
                        iec104::ApciError::BadStart(_) | iec104::ApciError::BadLength(_) => {
                            self.resync[d] = true;
                        }
                        _ => off += skip.min(rest.len()),
                    }
                }
            }
        }
        off
    }

    fn on_gap(&mut self, _ctx: &mut Ctx<'_>, dir: Dir) {
        self.resync[dir.index()] = true;
        self.expect_tx[dir.index()] = None;
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>) {
        if !self.confirmed {
            ctx.stats[IEC104].unidentified_flows += 1;
        }
    }
}

/// The event of bytes that did not make an APDU: what the control field says, when the frame
/// had a valid start and length (an I frame without an ASDU, an S or U frame with one, a U
/// frame whose function is not one bit).
fn malformed(rest: &[u8], error: iec104::ApciError) -> Iec104Event {
    let mut ev = Iec104Event {
        format: "",
        error: Some(error.reason()),
        ..Default::default()
    };
    let Some(c) = rest.get(2..6) else { return ev };
    let seq = |lo: u8, hi: u8| (u16::from(lo) >> 1) | (u16::from(hi) << 7);
    match error {
        iec104::ApciError::BadStart(_) | iec104::ApciError::BadLength(_) => {}
        _ if c[0] & 0x01 == 0 => {
            ev.format = "I";
            ev.tx_seq = Some(seq(c[0], c[1]));
            ev.rx_seq = Some(seq(c[2], c[3]));
        }
        _ if c[0] & 0x03 == 0x01 => {
            ev.format = "S";
            ev.rx_seq = Some(seq(c[2], c[3]));
        }
        _ => ev.format = "U",
    }
    ev
}

impl Iec104Flow {
    fn on_apdu(&mut self, ctx: &mut Ctx<'_>, dir: Dir, apdu: &iec104::Apdu<'_>) {
        let mut ev = Iec104Event {
            format: apdu.apci.format(),
            ..Default::default()
        };
        match apdu.apci {
            Apci::U { function } => {
                ctx.stats[IEC104].count(function.name().unwrap_or("u_other"));
                ev.u_function = function.name();
            }
            Apci::S { rx_seq } => {
                ctx.stats[IEC104].count("s_frames");
                ev.rx_seq = Some(rx_seq);
            }
            Apci::I { tx_seq, rx_seq } => {
                ev.tx_seq = Some(tx_seq);
                ev.rx_seq = Some(rx_seq);
                let d = dir.index();
                if let Some(want) = self.expect_tx[d] {
                    if tx_seq != want {
                        // Behind what was expected (within half the sequence space): sent again.
                        let behind = want.wrapping_sub(tx_seq) % SEQ_MODULO;
                        let what = if behind < SEQ_MODULO / 2 {
                            "duplicate"
                        } else {
                            "gap"
                        };
                        ctx.stats[IEC104].count(if what == "gap" {
                            "seq_gaps"
                        } else {
                            "seq_duplicates"
                        });
                        ev.seq_error = Some(what);
                    }
                }
                if ev.seq_error != Some("duplicate") {
                    self.expect_tx[d] = Some((tx_seq + 1) % SEQ_MODULO);
                }
                self.asdu(ctx, apdu.asdu, &mut ev);
            }
        }
        if ctx.sink.wants_events() {
            emit(ctx, dir, ev);
        }
    }

    fn asdu(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8], ev: &mut Iec104Event) {
        let Some(&t) = bytes.first() else { return };
        ctx.stats[IEC104].count_pdu(t);
        let asdu = match iec104::parse_asdu(bytes) {
            Ok(a) => a,
            Err(e) => {
                ctx.stats[IEC104].count_error(e.reason());
                ev.type_id = Some(t);
                ev.type_name = TypeId(t).name();
                ev.error = Some(e.reason());
                // What there is of the header still says what it was (as tshark shows it).
                if let Some(&v) = bytes.get(1) {
                    ev.sq = Some(v & 0x80 != 0);
                    ev.count = Some(v & 0x7f);
                }
                if let Some(&c) = bytes.get(2) {
                    ev.cot = Some(c & 0x3f);
                    ev.cot_name = iec104::Cause(c & 0x3f).name();
                    ev.negative = Some(c & 0x40 != 0);
                    ev.test = Some(c & 0x80 != 0);
                }
                ev.originator = bytes.get(3).copied();
                ev.common_address = bytes.get(4..6).map(|h| u16::from_le_bytes([h[0], h[1]]));
                return;
            }
        };
        if asdu.negative {
            ctx.stats[IEC104].exceptions += 1;
        }
        if asdu.common_address != BROADCAST {
            self.common_address = Some(asdu.common_address);
        }
        fill(ev, &asdu, ctx.sink.wants_detail());
    }
}

/// A short float as the f64 of its shortest decimal (0.16875, not the 0.16875000298023224 of its
/// exact widening): what parsing its `Display` text gives, as events have always shown it.
/// `Display` took about 1 000 instructions a value (40% of detection on an IEC 104 site's
/// periodic float reports); ryu finds the same shortest digits in a few tens. The two differ
/// only where the float lies exactly halfway between two shortest candidates (473.453125:
/// `Display` writes 473.45313, ryu the even 473.45312): those take `Display`'s way.
fn shortest(f: f32) -> f64 {
    let mut buffer = ryu::Buffer::new();
    match f.is_finite().then(|| decimal(buffer.format(f))) {
        Some((digits, e)) if !halfway_above(f, digits, e) => {
            let magnitude = match e {
                // Clinger's fast path: the digits (at most nine) and 10^|e| are exact in an
                // f64, so one multiplication or division rounds once, to the nearest: the
                // f64 that parsing the text gives.
                0..=22 => digits as f64 * POWERS_OF_TEN[e as usize],
                -22..=-1 => digits as f64 / POWERS_OF_TEN[e.unsigned_abs() as usize],
                // (Digits and an exponent always parse; were they not to, the exact
                // widening, as the old formula fell back to.)
                _ => format!("{digits}e{e}")
                    .parse()
                    .unwrap_or(f64::from(f.abs())),
            };
            if f.is_sign_negative() {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => f.to_string().parse().unwrap_or(f64::from(f)),
    }
}

/// 10^0 to 10^22, each exact in an f64.
const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// ryu's text of a finite float as D × 10^e, D without trailing zeros (0 for zero).
fn decimal(text: &str) -> (u64, i32) {
    // ryu writes `-`, digits, a point and an exponent `e-7` or `e30`: the exponent always
    // parses (0 would only make a wrong "halfway", which takes `Display`'s way, never a value).
    let (mantissa, exponent) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (mut digits, mut e, mut after_point) = (0u64, exponent, false);
    for c in mantissa.bytes() {
        match c {
            b'0'..=b'9' => {
                digits = digits * 10 + u64::from(c - b'0');
                e -= i32::from(after_point);
            }
            b'.' => after_point = true,
            _ => {}
        }
    }
    while digits != 0 && digits.is_multiple_of(10) {
        digits /= 10;
        e += 1;
    }
    (digits, e)
}

/// Whether `f` lies exactly halfway between its shortest decimal D × 10^e and the next one up
/// in its last digit, (2D + 1) / 2 × 10^e: integer arithmetic on the float's odd mantissa.
fn halfway_above(f: f32, digits: u64, e: i32) -> bool {
    if digits == 0 {
        return false;
    }
    // |f| = odd × 2^q.
    let bits = f.to_bits();
    let (biased, fraction) = ((bits >> 23) & 0xff, u64::from(bits & 0x7f_ffff));
    let (m, mut q) = match biased {
        0 => (fraction, -149i32),
        _ => (fraction | 1 << 23, biased as i32 - 150),
    };
    let odd = m >> m.trailing_zeros();
    q += m.trailing_zeros() as i32;
    let n = 2 * digits + 1;
    // odd × 2^(q + 1) = n × 10^e, n odd: the powers of two are equal, and the odd parts.
    if e >= 0 {
        // n × 5^e × 2^e: q + 1 = e and odd = n × 5^e.
        q + 1 == e && 5u64.checked_pow(e as u32).and_then(|p| p.checked_mul(n)) == Some(odd)
    } else {
        // odd × 2^(q + 1) × 2^-e × 5^-e = n: q + 1 - e = 0 and odd × 5^-e = n.
        q + 1 - e == 0
            && 5u64
                .checked_pow(e.unsigned_abs())
                .and_then(|p| p.checked_mul(odd))
                == Some(n)
    }
}

/// The event's ASDU members; the objects only when someone reads them (`detail`).
fn fill(ev: &mut Iec104Event, a: &Asdu<'_>, detail: bool) {
    ev.type_id = Some(a.type_id.0);
    ev.type_name = a.type_id.name();
    ev.sq = Some(a.sequence);
    ev.count = Some(a.count);
    ev.cot = Some(a.cause.0);
    ev.cot_name = a.cause.name();
    ev.negative = Some(a.negative);
    ev.test = Some(a.test);
    ev.originator = Some(a.originator);
    ev.common_address = Some(a.common_address);
    if !detail || a.type_id.spec().is_none() {
        return;
    }
    let objects = a
        .objects()
        .take(MAX_OBJECTS_PER_EVENT)
        .map(|o| {
            let mut obj = Iec104Object {
                ioa: o.ioa,
                ..Default::default()
            };
            if let Some(e) = iec104::decode_element(a.type_id, o.element) {
                obj.value = e.value.map(|v| match v {
                    IecValue::Bool(b) => ObjValue::Bool(b),
                    IecValue::Int(i) => ObjValue::Int(i),
                    // A short float, written as its shortest decimal (0.16875, not the
                    // 0.16875000298023224 of its exact widening).
                    IecValue::Float(f) => ObjValue::Float(shortest(f as f32)),
                });
                obj.quality = e.quality;
                obj.qualifier = e.qualifier;
                obj.select = e.select;
                if let Some(t) = e.cp56 {
                    obj.time = Some(cp56_text(&t));
                    obj.time_invalid = Some(t.invalid);
                }
                if let Some(t) = e.cp24 {
                    obj.time_ms = Some(t.ms);
                    obj.time_minute = Some(t.minute);
                    obj.time_invalid = Some(t.invalid);
                }
            }
            obj
        })
        .collect();
    ev.objects = Some(objects);
}

/// Address spaces of IEC 104 observations: the monitor type of the information (its type id
/// without time tag: single points 1, double points 3, step positions 5, bitstrings 7,
/// normalized 9, scaled 11, floats 13, counters 15, …), and for commands the command type
/// without time tag (45–51). One point answers in one space whatever its time tag.
pub fn space(t: u8) -> u32 {
    u32::from(match t {
        2 | 30 => 1,
        4 | 31 => 3,
        6 | 32 => 5,
        8 | 33 => 7,
        10 | 34 | 21 => 9,
        12 | 35 => 11,
        14 | 36 => 13,
        16 | 37 => 15,
        17 | 38 => 17,
        18 | 39 => 18,
        19 | 40 => 19,
        58..=64 => t - 13,
        other => other,
    })
}

/// A frame's record to the sink ([`Ctx::emit_record`]): with detection and no events output,
/// an I frame's (or a malformed frame's) observation straight from the record; S and U frames,
/// which have none, only counted.
fn emit(ctx: &mut Ctx<'_>, dir: Dir, p: Iec104Event) {
    let fill = |p: &Iec104Event, o: &mut _| observe_into(p, dir == Dir::ToServer, o);
    let what = (otwatch_models::Proto::Iec104, "iec104");
    ctx.emit_record(dir, what, p, fill, crate::event::Pdu::Iec104);
}

/// The observation an IEC 104 event stands for: I frames only (S and U frames are the link's
/// housekeeping), or a frame that did not decode.
pub fn observe(
    p: &Iec104Event,
    request: bool,
    base: impl Fn(otwatch_models::Proto, u32, otwatch_models::Kind, u32) -> otwatch_models::Observation,
) -> Option<otwatch_models::Observation> {
    let fill = |o: &mut _| observe_into(p, request, o);
    crate::detection::observe::observe_with(otwatch_models::Proto::Iec104, request, base, fill)
}

/// [`observe`] into `o`, an observation of the PDU's connection (IEC 104, unit 0) as its
/// direction makes it (a request from the controlling station, a response from the
/// controlled one) with every other field empty: whether the frame has one. The dissector
/// builds it this way in the box it keeps, with no event.
pub fn observe_into(p: &Iec104Event, request: bool, o: &mut otwatch_models::Observation) -> bool {
    use otwatch_models::{Access, Command, Kind, ValuesAt};
    let malformed = p.error.or(p.seq_error.map(|e| match e {
        "gap" => "sequence_gap",
        _ => "sequence_duplicate",
    }));
    let Some(t) = p.type_id else {
        // A frame that did not frame: malformed, on the connection's unit 0.
        return crate::detection::observe::malformed_into(o, p.error);
    };
    let cot = p.cot.unwrap_or(0);
    // From the controlling station: a request. From the controlled station: the confirmation
    // of an activation or deactivation answers it; everything else (spontaneous, cyclic,
    // interrogated data, termination) arrives unasked.
    let kind = match (request, cot) {
        (true, _) => Kind::Request,
        // Confirmations, and the station's negative mirrors of what it does not know.
        (false, 7 | 9 | 44..=47) => Kind::Response,
        _ => Kind::Unsolicited,
    };
    let unit = u32::from(p.common_address.unwrap_or(0));
    (o.kind, o.function, o.channel.unit) = (kind, u32::from(t), unit);
    o.function_name = p.type_name;
    o.malformed = malformed;
    o.exception = p.negative == Some(true) || (44..=47).contains(&cot);
    let id = TypeId(t);
    // An activation and its confirmation: the same type and first address.
    let first_ioa = p
        .objects
        .as_ref()
        .and_then(|v| v.first())
        .map_or(0, |ob| ob.ioa);
    // A broadcast activation is answered by each station with its own address: it cannot be
    // matched on the channel it was sent on.
    if matches!(cot, 6..=9 | 44..=47) && p.common_address != Some(BROADCAST) {
        o.corr = Some(u32::from(t) << 24 | (first_ioa & 0x00ff_ffff));
    }
    let qualifier = p
        .objects
        .as_ref()
        .and_then(|v| v.first())
        .and_then(|ob| ob.qualifier);
    o.command = match (t, qualifier) {
        // Reset process: QRP 1 restarts the process; 2 only clears the event buffer.
        (105, Some(1)) if request => Some(Command::Restart),
        // File transfer (101 §7.4.11.2), as DNP3's file objects are taken: the controlling
        // station writes a file to the station with file ready, section ready, segments and
        // last section in the control direction, or deletes one (F_SC_NA_1, SCQ 4)...
        (120 | 121 | 123 | 125, _) | (122, Some(4)) if request => Some(Command::ProgramDownload),
        // ... and reads one by selecting or calling a file or a section (SCQ 1, 2, 5, 6), or
        // an archive file by querying a log (F_SC_NB_1). Calling the directory is neither.
        (122, Some(1 | 2 | 5 | 6)) | (127, _) if request => Some(Command::ProgramUpload),
        _ => None,
    };
    // Clock synchronisation is routine (at every connection, or on a schedule): not a write.
    // A counter interrogation that resets the counters (QCC FRZ 2, freeze with reset, or 3,
    // reset) changes the station's totals, as DNP3's freeze-and-clear does.
    o.write = request
        && (id.is_process_command()
            || id.is_parameter()
            || t == 105
            || (t == 101 && qualifier.is_some_and(|qcc| qcc >> 6 >= 2))
            || o.command == Some(Command::ProgramDownload));
    // End of initialisation: the station (re)started.
    o.device_restarted = !request && t == 70;
    if o.exception || p.error.is_some() {
        return true;
    }
    let space = space(t);
    let measured = !request && t < 45;
    // Normalized values go to detection as their raw 16-bit integers, so that the envelope's
    // margins mean the same as for scaled values; counters only grow, and have no envelope.
    let scale = if matches!(space, 9 | 48 | 110) {
        32768.0
    } else {
        1.0
    };
    for ob in p.objects.iter().flatten() {
        if !measured && !o.write {
            continue;
        }
        let values = match ob.value {
            _ if space == 15 => Default::default(),
            // A short float that is NaN or infinite is a value too (outside every envelope).
            Some(v) => ValuesAt::push(&mut o.values, [v.number() * scale]),
            _ => Default::default(),
        };
        o.accesses.push(Access {
            space,
            start: ob.ioa,
            count: 1,
            write: o.write,
            values,
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::shortest;

    /// A float as events had it before ryu: the f64 its `Display` text parses to.
    fn displayed(f: f32) -> f64 {
        f.to_string().parse().unwrap_or(f64::from(f))
    }

    /// Every exponent with its edge mantissas, both signs, some decimals, and 200 000
    /// pseudo-random bit patterns; all 2^32 floats with `OTWATCH_EXHAUSTIVE=1` (tens of
    /// minutes, even in a release build).
    #[test]
    fn short_floats_read_as_their_display_text() {
        let check = |bits: u32| {
            let f = f32::from_bits(bits);
            let (ours, shown) = (shortest(f), displayed(f));
            assert!(
                ours.to_bits() == shown.to_bits() || ours.is_nan() && shown.is_nan(),
                "{f:?} ({bits:#010x}): {ours:?} against {shown:?}"
            );
        };
        for exponent in 0..256u32 {
            for mantissa in [0, 1, 2, 0x3f_ffff, 0x40_0000, 0x7f_fffe, 0x7f_ffff] {
                for sign in [0, 1 << 31] {
                    check(sign | exponent << 23 | mantissa);
                }
            }
        }
        // Halfway floats, 473.453125 and 2097152.25: `Display` writes 473.45313 and
        // 2097152.3, ryu the even 473.45312 and 2097152.2.
        let halfway = [f32::from_bits(0x43ec_ba00), f32::from_bits(0x4a00_0001)];
        assert_eq!(halfway.map(|f| f.to_string()), ["473.45313", "2097152.3"]);
        assert_eq!(halfway.map(f64::from), [473.453125, 2_097_152.25]);
        for v in [0.1f32, 0.16875, 21.5, 1e7, 1e-7, 16_777_217.0, 123_456.79]
            .into_iter()
            .chain(halfway)
        {
            check(v.to_bits());
            check((-v).to_bits());
        }
        if std::env::var_os("OTWATCH_EXHAUSTIVE").is_some() {
            (0..=u32::MAX).for_each(check);
        } else {
            let mut x = 0x9e37_79b9u32;
            for _ in 0..200_000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                check(x);
            }
        }
    }
}
