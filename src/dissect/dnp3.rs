//! DNP3 (IEEE 1815) flow state: link frames over the reassembled TCP stream (or in UDP
//! datagrams), transport reassembly per (link source, link destination, direction), application
//! fragments with their objects and point values, and events.
//!
//! One event per application fragment (stamped with the frame that completed it) and one per
//! link frame that carries no application data (link resets, status requests, ACKs). A frame with
//! a bad data CRC is reported (`crc_ok: false`) and counted, and its data is not used. Transport
//! segments that complete nothing produce no event; lost or out-of-sequence segments discard the
//! partial fragment, counted by reason.

use crate::dissect::registry::DNP3;
use std::collections::{HashMap, HashSet};

use otwatch_parsers::dnp3::{
    self, AppFragment, DiscardReason, DoubleBitState, LinkFrame, LinkResult, Object, Point,
    PointValue, Range, Timestamp, TransportOutcome, TransportReassembler, LINK_HEADER_LEN,
    MAX_USER_DATA_LEN,
};
use serde::Serialize;

use otwatch_models::{Observation, Proto};

use super::{hex, lossy_text as text, Ctx, Dir};

/// The port its servers (outstations) listen on.
pub const DEFAULT_PORT: u16 = dnp3::DEFAULT_PORT;
/// The most bytes the dissector may leave unconsumed: one partial link frame.
pub const MAX_BUFFERED: usize = dnp3::MAX_LINK_FRAME_LEN;
/// Transport reassemblers per flow (one per link source, destination and direction). A TCP
/// connection normally carries one master-outstation pair; a gateway a handful.
pub const MAX_CHANNELS: usize = 16;
/// Largest application fragment reassembled. IEEE 1815 devices default to 2048 octets, but
/// masters and outstations may be configured larger, and an oversized write is exactly what a
/// monitor must see (the corpus has an 8200-octet one): 16 KiB, with an event when it is hit.
pub const MAX_FRAGMENT_LEN: usize = 16 * 1024;
/// Reassembly buffer memory across all DNP3 flows of a pipeline; beyond it, the channel that
/// asked for more is reset (counted).
pub const MAX_REASSEMBLY_BYTES_TOTAL: u64 = 64 * 1024 * 1024;
/// Points listed per event; beyond this they are counted in `points_omitted`.
pub const MAX_POINTS_PER_EVENT: usize = 1024;

/// The `dnp3` object of an event (docs/events.md).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Dnp3Event {
    pub link_src: u16,
    pub link_dst: u16,
    /// Link function code of the frame (meaning depends on `primary`).
    pub link_function: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_function_name: Option<&'static str>,
    /// DIR bit: sent by the master.
    pub from_master: bool,
    /// PRM bit: a primary (initiating) frame.
    pub primary: bool,
    /// Every CRC of the frame (header and data blocks) matched.
    pub crc_ok: bool,
    /// Transport segments that made up the application fragment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_function: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_function_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_seq: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fir: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fin: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub con: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsolicited: Option<bool>,
    /// Internal indications (responses): IIN1 in the high byte, IIN2 in the low byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iin: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iin_flags: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<Dnp3Object>>,
    /// Why the frame or fragment could not be fully decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
}

/// One object header of a fragment and its points.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Dnp3Object {
    pub group: u8,
    pub variation: u8,
    pub qualifier: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<Dnp3Point>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_omitted: Option<u64>,
}

#[derive(Debug)]
pub struct Dnp3Flow {
    /// Per direction: the next bytes must be searched for a link header.
    resync: [bool; 2],
    reassemblers: HashMap<(u16, u16, bool), TransportReassembler, foldhash::fast::RandomState>,
    /// Channels whose current fragment overflowed (reported once).
    overflowing: HashSet<(u16, u16, bool), foldhash::fast::RandomState>,
}

impl Default for Dnp3Flow {
    fn default() -> Self {
        Dnp3Flow {
            resync: [true, true],
            reassemblers: HashMap::default(),
            overflowing: HashSet::default(),
        }
    }
}

/// Whether a flow's first payload is DNP3 (start octets and a valid header CRC), and if so
/// whether it was sent by the master (DIR bit).
pub fn probe(payload: &[u8]) -> Option<bool> {
    match dnp3::parse_link_frame(payload) {
        LinkResult::Complete { frame, .. } => Some(frame.header.control.dir()),
        LinkResult::Incomplete { .. } if payload.len() >= LINK_HEADER_LEN => {
            // The whole header is there (its CRC was checked): only the data is missing.
            dnp3::LinkHeader::read(payload).map(|h| h.control.dir())
        }
        _ => None,
    }
}

impl super::Dissector for Dnp3Flow {
    fn on_stream_data(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) -> usize {
        let d = dir.index();
        let mut off = 0;
        while off < data.len() {
            let rest = &data[off..];
            if self.resync[d] {
                // Where a frame is expected (a segment start), a header with the right start
                // octets but a bad CRC is a damaged frame: report it, then search past it.
                let from = if self.bad_header_crc(ctx, dir, rest) {
                    1
                } else {
                    0
                };
                match rest.get(from..).and_then(dnp3::find_link_resync) {
                    Some(skip) => {
                        ctx.stats[DNP3].resync_skipped_bytes += (from + skip) as u64;
                        off += from + skip;
                        self.resync[d] = false;
                    }
                    None => {
                        let skip = rest.len().saturating_sub(LINK_HEADER_LEN - 1);
                        ctx.stats[DNP3].resync_skipped_bytes += skip as u64;
                        return off + skip;
                    }
                }
                continue;
            }
            match dnp3::parse_link_frame(rest) {
                LinkResult::Complete { frame, consumed } => {
                    self.on_frame(ctx, dir, &frame);
                    off += consumed;
                }
                LinkResult::Incomplete { .. } => break,
                LinkResult::Invalid(err) => {
                    if self.bad_header_crc(ctx, dir, rest) {
                        // Reported: the search starts past its first octet, where it would
                        // otherwise find and report the same header again.
                        ctx.stats[DNP3].resync_skipped_bytes += 1;
                        off += 1;
                    } else {
                        ctx.stats[DNP3].count_error(err.as_str());
                    }
                    self.resync[d] = true;
                }
            }
        }
        off
    }

    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) {
        // One or more whole link frames per datagram.
        self.resync[dir.index()] = true;
        let used = self.on_stream_data(ctx, dir, data);
        if used < data.len() {
            ctx.stats[DNP3].count("datagram_bytes_unframed");
        }
    }

    fn on_gap(&mut self, _ctx: &mut Ctx<'_>, dir: Dir) {
        self.resync[dir.index()] = true;
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>) {
        for r in self.reassemblers.values() {
            if r.pending_len() > 0 {
                ctx.stats[DNP3].count("fragments_unfinished_at_close");
            }
            let held = &mut ctx.stats.tcp.dnp3_reassembly_bytes;
            *held = held.saturating_sub(r.buffer_capacity() as u64);
        }
        self.reassemblers.clear();
    }
}

impl Dnp3Flow {
    /// `rest` starts with a link header whose start octets are right but whose CRC is not:
    /// report the frame (`crc_ok: false`, `error: "header_crc"`) and count it.
    fn bad_header_crc(&mut self, ctx: &mut Ctx<'_>, dir: Dir, rest: &[u8]) -> bool {
        if !matches!(
            dnp3::parse_link_frame(rest),
            LinkResult::Invalid(dnp3::LinkError::HeaderCrc { .. })
        ) {
            return false;
        }
        let Some(header) = dnp3::LinkHeader::read(rest) else {
            return false;
        };
        ctx.stats[DNP3].count_error("bad_header_crc");
        ctx.stats[DNP3].count("crc_errors");
        let function = header.control.function();
        let mut ev = Dnp3Event {
            link_src: header.source,
            link_dst: header.destination,
            link_function: function.code(),
            link_function_name: function.name(),
            from_master: header.control.dir(),
            primary: header.control.prm(),
            crc_ok: false,
            error: Some("header_crc"),
            ..Default::default()
        };
        self.emit(ctx, dir, &mut ev, None);
        true
    }

    fn on_frame(&mut self, ctx: &mut Ctx<'_>, dir: Dir, frame: &LinkFrame<'_>) {
        ctx.stats[DNP3].count("link_frames");
        let mut ev = link_event(frame);
        if !frame.data_crc_ok {
            ctx.stats[DNP3].count("crc_errors");
            ev.error = Some("data_crc");
        }
        if !frame.carries_user_data() {
            ctx.stats[DNP3].count("link_only_frames");
            self.emit(ctx, dir, &mut ev, None);
            return;
        }
        if !frame.data_crc_ok {
            // Corrupt bytes must not reach the application layer: report the frame alone.
            self.emit(ctx, dir, &mut ev, None);
            return;
        }
        let key = (
            frame.header.source,
            frame.header.destination,
            frame.header.control.dir(),
        );
        let mut buf = [0u8; MAX_USER_DATA_LEN];
        let user_data = match frame.contiguous_user_data() {
            Some(d) => d,
            None => frame.user_data_into(&mut buf),
        };
        if !self.reassemblers.contains_key(&key) && self.reassemblers.len() >= MAX_CHANNELS {
            // Make room: forget a channel with nothing in progress.
            let idle = self
                .reassemblers
                .iter()
                .find(|(_, r)| r.pending_len() == 0)
                .map(|(k, _)| *k);
            match idle {
                Some(k) => {
                    if let Some(r) = self.reassemblers.remove(&k) {
                        let held = &mut ctx.stats.tcp.dnp3_reassembly_bytes;
                        *held = held.saturating_sub(r.buffer_capacity() as u64);
                    }
                }
                None => {
                    // Every channel is mid-fragment. A whole fragment in one segment needs no
                    // state; anything else is refused, visibly.
                    ctx.stats[DNP3].count("channel_bound_drops");
                    if user_data.first().is_some_and(|&th| th & 0xC0 == 0xC0) {
                        let mut scratch = TransportReassembler::new();
                        let mut direct = None;
                        if let TransportOutcome::Complete {
                            fragment, segments, ..
                        } = scratch.push(user_data)
                        {
                            ev.segments = Some(segments);
                            direct = app_event(&mut ev, fragment, ctx, dir);
                        }
                        self.emit(ctx, dir, &mut ev, direct);
                    } else {
                        ev.error = Some("channel_bound");
                        self.emit(ctx, dir, &mut ev, None);
                    }
                    return;
                }
            }
        }
        let reassembler = self
            .reassemblers
            .entry(key)
            .or_insert_with(|| TransportReassembler::with_max_fragment_len(MAX_FRAGMENT_LEN));
        let before = reassembler.buffer_capacity() as u64;
        let outcome = reassembler.push(user_data);
        let mut overflow = false;
        if let Some(discard) = outcome.discard() {
            ctx.stats[DNP3].count(discard.reason.as_str());
            overflow = discard.reason == DiscardReason::Overflow;
        }
        let mut complete = None;
        match outcome {
            TransportOutcome::Complete {
                fragment, segments, ..
            } => {
                ev.segments = Some(segments);
                // Emitted below: the fragment borrows the reassembler until then.
                complete = Some(app_event(&mut ev, fragment, ctx, dir));
                self.overflowing.remove(&key);
            }
            TransportOutcome::InProgress { .. } => {
                self.overflowing.remove(&key);
            }
            TransportOutcome::Discarded(_) => {}
        }
        // Account the buffer's growth; past the global budget this channel starts over.
        let after = reassembler.buffer_capacity() as u64;
        let held = &mut ctx.stats.tcp.dnp3_reassembly_bytes;
        *held = (*held + after).saturating_sub(before);
        let peak = &mut ctx.stats.tcp.dnp3_reassembly_peak;
        *peak = (*peak).max(*held);
        let held = &mut ctx.stats.tcp.dnp3_reassembly_bytes;
        if *held > MAX_REASSEMBLY_BYTES_TOTAL {
            *held = held.saturating_sub(after);
            reassembler.shrink();
            ctx.stats[DNP3].count("reassembly_budget_drops");
        }
        if let Some(direct) = complete {
            self.emit(ctx, dir, &mut ev, direct);
        } else if overflow && self.overflowing.insert(key) {
            // A fragment larger than anything reassembled: say so once, it may be an attack.
            ev.error = Some("fragment_too_large");
            self.emit(ctx, dir, &mut ev, None);
        }
    }

    /// The event of a frame, or `direct`, the observation [`app_event`] built in its place.
    fn emit(
        &mut self,
        ctx: &mut Ctx<'_>,
        dir: Dir,
        ev: &mut Dnp3Event,
        direct: Option<Box<Observation>>,
    ) {
        if !ctx.sink.wants_events() {
            return;
        }
        if let Some(o) = direct {
            ctx.emit_observed(dir, o);
            return;
        }
        // `direction` follows the flow's roles (the outstation serves); the DIR bit, which any
        // sender can set, stays in `from_master`.
        let mut event = ctx.event("dnp3", dir);
        // Taken only here: moved into every call, the event was copied twice a frame.
        event.pdu = crate::event::Pdu::Dnp3(std::mem::take(ev));
        ctx.emit(event);
    }
}

fn link_event(frame: &LinkFrame<'_>) -> Dnp3Event {
    let function = frame.function();
    Dnp3Event {
        link_src: frame.header.source,
        link_dst: frame.header.destination,
        link_function: function.code(),
        link_function_name: function.name(),
        from_master: frame.header.control.dir(),
        primary: frame.header.control.prm(),
        crc_ok: frame.data_crc_ok,
        ..Default::default()
    }
}

/// Decode an application fragment into the event, counting it. Detection without an events
/// output gets the PDU's observation instead of the event's objects and points: returned, to
/// be emitted in the event's place ([`app_observation`]).
fn app_event(
    ev: &mut Dnp3Event,
    fragment: &[u8],
    ctx: &mut Ctx<'_>,
    dir: Dir,
) -> Option<Box<Observation>> {
    let app: AppFragment<'_> = match dnp3::parse_app_fragment(fragment) {
        Ok(app) => app,
        Err(err) => {
            ctx.stats[DNP3].count_error(err.as_str());
            ev.error = Some(err.as_str());
            ev.error_detail = Some(err.to_string());
            return None;
        }
    };
    ctx.stats[DNP3].count_pdu(app.function.0);
    ev.app_function = Some(app.function.0);
    ev.app_function_name = app.function.name();
    ev.app_seq = Some(app.control.seq());
    ev.fir = Some(app.control.fir());
    ev.fin = Some(app.control.fin());
    ev.con = Some(app.control.con());
    ev.unsolicited = Some(app.control.uns());
    let direct = ctx.wants_observations() && !ctx.wants_event_out();
    if let Some(iin) = app.iin {
        ev.iin = Some(iin.0);
        if ctx.sink.wants_events() && !direct {
            ev.iin_flags = Some(iin.names().collect());
        }
    }
    if !ctx.sink.wants_events() || direct {
        // Still walk the objects: malformed ones are counted either way (and the observation
        // says so, as the event would).
        let mut whole = 0;
        for obj in app.objects() {
            if let Err(err) = obj {
                ctx.stats[DNP3].count_error(err.as_str());
                if direct {
                    ev.error = Some(err.as_str());
                }
                break;
            }
            whole += 1;
        }
        return direct.then(|| app_observation(ev, &app, whole, ctx, dir));
    }
    let mut objects = Vec::new();
    // Without detail (per-channel metrics only) the object headers are kept, not the points.
    let mut budget = if ctx.sink.wants_detail() {
        MAX_POINTS_PER_EVENT
    } else {
        0
    };
    for obj in app.objects() {
        match obj {
            Ok(obj) => objects.push(object_json(&obj, &mut budget)),
            Err(err) => {
                // Object parsing stops at the first header it cannot read.
                ctx.stats[DNP3].count_error(err.as_str());
                ev.error = Some(err.as_str());
                ev.error_detail = Some(err.to_string());
                break;
            }
        }
    }
    ev.objects = Some(objects);
    None
}

/// The observation of an application PDU (its event's header `ev`, its first `whole` objects,
/// those before any that does not parse), as [`crate::detection::observe`] makes it of the
/// event: the points straight from the parser, at most [`MAX_POINTS_PER_EVENT`] as the event
/// lists, without the event's point records.
fn app_observation(
    ev: &Dnp3Event,
    app: &AppFragment<'_>,
    whole: usize,
    ctx: &mut Ctx<'_>,
    dir: Dir,
) -> Box<Observation> {
    use crate::detection::observe::{dnp3_app, dnp3_kind, Dnp3Head, Dnp3ObjectView};
    let (master, outstation) = if ev.from_master {
        (ev.link_src, ev.link_dst)
    } else {
        (ev.link_dst, ev.link_src)
    };
    let unit = u32::from(master) << 16 | u32::from(outstation);
    let fc = app.function.0;
    let mut o = ctx.observation(Proto::Dnp3, unit, dir, u32::from(fc));
    o.kind = dnp3_kind(fc);
    // The master is the client, as the DIR bit says (see `observe`).
    let sender = match dir {
        Dir::ToServer => (ctx.endpoints.client.0, ctx.endpoints.server.0),
        Dir::ToClient => (ctx.endpoints.server.0, ctx.endpoints.client.0),
    };
    (o.channel.client, o.channel.server) = if ev.from_master {
        sender
    } else {
        (sender.1, sender.0)
    };
    let head = Dnp3Head {
        function_name: ev.app_function_name,
        seq: ev.app_seq,
        crc_ok: ev.crc_ok,
        error: ev.error,
        iin: ev.iin,
    };
    let objects = || app.objects().take(whole).filter_map(Result::ok);
    let files = objects().any(|obj| obj.header.group == 70);
    // Points beyond the event's budget are not listed, so not observed either.
    let budget = std::cell::Cell::new(if ctx.sink.wants_detail() {
        MAX_POINTS_PER_EVENT
    } else {
        0
    });
    let budget = &budget;
    let views = objects().map(|obj| {
        let h = &obj.header;
        let (start, stop) = match h.range {
            Range::StartStop { start, stop } | Range::VirtualStartStop { start, stop } => {
                (Some(start), Some(stop))
            }
            _ => (None, None),
        };
        let points = obj.has_items().then(|| obj.points()).into_iter().flatten();
        Dnp3ObjectView {
            group: h.group,
            variation: h.variation,
            start,
            stop,
            count: obj.count(),
            points: points
                .filter(move |_| match budget.get() {
                    0 => false,
                    n => {
                        budget.set(n - 1);
                        true
                    }
                })
                .map(|p| (p.index, point_number(&p.value))),
        }
    });
    dnp3_app(&head, files, views, &mut o);
    o
}

/// Whether a point has a value in its event, and the number detection reads of it: what
/// [`point_record`] puts in `value`, as [`Dnp3Point::number`] reads it back. `None`: no
/// value; `Some(None)`: a value that is not a number (a double-bit state, octets).
fn point_number(v: &PointValue<'_>) -> Option<Option<f64>> {
    match v {
        PointValue::Binary { state, .. } | PointValue::BinaryCommandEvent { state, .. } => {
            Some(Some(f64::from(u8::from(*state))))
        }
        PointValue::Counter { value, .. } => Some(Some(u64::from(*value) as f64)),
        PointValue::Analog { value, .. }
        | PointValue::AnalogOutput { value, .. }
        | PointValue::Deadband { value } => Some(Some(value.as_f64())),
        PointValue::DoubleBit { .. }
        | PointValue::DeviceAttribute { .. }
        | PointValue::OctetString(_)
        | PointValue::VirtualTerminal(_)
        | PointValue::FileSpec(_) => Some(None),
        PointValue::IndexOnly
        | PointValue::Crob(_)
        | PointValue::Time { .. }
        | PointValue::TimeAndInterval { .. }
        | PointValue::IndexedTime { .. }
        | PointValue::Cto { .. }
        | PointValue::TimeDelay { .. }
        | PointValue::Raw(_)
        | PointValue::FileAuthentication(_)
        | PointValue::FileCommand(_)
        | PointValue::FileCommandStatus(_)
        | PointValue::FileTransport(_)
        | PointValue::FileTransportStatus(_)
        | PointValue::FileDescriptor(_) => None,
    }
}

fn object_json(obj: &Object<'_>, budget: &mut usize) -> Dnp3Object {
    let h = &obj.header;
    let (start, stop) = match h.range {
        Range::StartStop { start, stop } | Range::VirtualStartStop { start, stop } => {
            (Some(start), Some(stop))
        }
        _ => (None, None),
    };
    let mut out = Dnp3Object {
        group: h.group,
        variation: h.variation,
        qualifier: h.qualifier.0,
        start,
        stop,
        count: obj.count(),
        ..Default::default()
    };
    if obj.has_items() {
        let mut omitted = 0u64;
        // Room for every point at once, up to the budget: the parser holds the count to the
        // object's bytes (zero-length objects are ruled out there), and a point record is
        // large, so growing the list step by step copied each event's points several times
        // over. At most the budget's 1024 records (about 440 KB) whatever the count says.
        out.points
            .reserve(obj.points().size_hint().1.unwrap_or(0).min(*budget));
        for point in obj.points() {
            if *budget == 0 {
                // Points beyond the budget are counted, not decoded further.
                omitted += 1;
                continue;
            }
            *budget -= 1;
            // Filled where it lies: a point record is 432 bytes, and copying it twice per
            // point was most of a DNP3 event's cost.
            out.points.push(Dnp3Point::default());
            if let Some(r) = out.points.last_mut() {
                point_record(&point, r);
            }
        }
        if omitted > 0 {
            out.points_omitted = Some(omitted);
        }
    }
    out
}

/// The value of a point, as JSON: a state, a number or a name/hex text.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Dnp3Value {
    Bool(bool),
    Int(u64),
    Float(f64),
    Text(String),
}

/// One point: `index`, then what its object carries. A typed record rather than a JSON map, so
/// building events for detection costs no map per point.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Dnp3Point {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Dnp3Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_units: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synchronized: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_type: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_key: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_type: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

impl Dnp3Point {
    /// The value as a number (states as 0/1), for detection.
    pub fn number(&self) -> Option<f64> {
        match self.value.as_ref()? {
            Dnp3Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Dnp3Value::Int(n) => Some(*n as f64),
            Dnp3Value::Float(f) => Some(*f),
            Dnp3Value::Text(_) => None,
        }
    }
}

fn point_record(p: &Point<'_>, r: &mut Dnp3Point) {
    use Dnp3Value::{Bool, Float, Int, Text};
    r.index = p.index;
    let flags = |f: &Option<_>| f.map(|f: otwatch_parsers::dnp3::Flags| f.0);
    match &p.value {
        PointValue::IndexOnly => {}
        PointValue::Binary { flags: f, state } => {
            r.value = Some(Bool(*state));
            r.flags = flags(f);
        }
        PointValue::DoubleBit { flags: f, state } => {
            let name = match state {
                DoubleBitState::Intermediate => "intermediate",
                DoubleBitState::Off => "off",
                DoubleBitState::On => "on",
                DoubleBitState::Indeterminate => "indeterminate",
            };
            r.value = Some(Text(name.into()));
            r.flags = flags(f);
        }
        PointValue::BinaryCommandEvent { state, status } => {
            r.value = Some(Bool(*state));
            r.status = Some(u64::from(status.0));
        }
        PointValue::Crob(c) => {
            r.control_code = Some(c.control.0);
            r.operation = c.control.op_type_name();
            r.count = Some(u64::from(c.count));
            r.on_time_ms = Some(u64::from(c.on_time_ms));
            r.off_time_ms = Some(u64::from(c.off_time_ms));
            r.status = Some(u64::from(c.status.0));
        }
        PointValue::Counter { flags: f, value } => {
            r.value = Some(Int(u64::from(*value)));
            r.flags = flags(f);
        }
        PointValue::Analog { flags: f, value } => {
            r.value = Some(Float(value.as_f64()));
            r.flags = flags(f);
        }
        PointValue::AnalogOutput { value, status } => {
            r.value = Some(Float(value.as_f64()));
            r.status = Some(u64::from(status.0));
        }
        PointValue::Deadband { value } => r.value = Some(Float(value.as_f64())),
        PointValue::Time { ms } => r.time_ms = Some(*ms),
        PointValue::TimeAndInterval { ms, interval_ms } => {
            r.time_ms = Some(*ms);
            r.interval_ms = Some(u64::from(*interval_ms));
        }
        PointValue::IndexedTime {
            ms,
            interval_count,
            interval_units,
        } => {
            r.time_ms = Some(*ms);
            r.interval_count = Some(u64::from(*interval_count));
            r.interval_units = Some(u64::from(*interval_units));
        }
        PointValue::Cto { ms, synchronized } => {
            r.time_ms = Some(*ms);
            r.synchronized = Some(*synchronized);
        }
        PointValue::TimeDelay { ms } => r.delay_ms = Some(u64::from(*ms)),
        PointValue::DeviceAttribute { data_type, value } => {
            r.data_type = Some(u64::from(*data_type));
            r.value = Some(Text(hex(value)));
        }
        PointValue::OctetString(d) | PointValue::VirtualTerminal(d) | PointValue::FileSpec(d) => {
            r.value = Some(Text(hex(d)))
        }
        PointValue::Raw(d) => r.raw = Some(hex(d)),
        PointValue::FileAuthentication(f) => {
            r.auth_key = Some(u64::from(f.auth_key));
            r.username = Some(text(f.username));
        }
        PointValue::FileCommand(f) => {
            r.file_name = Some(text(f.name));
            r.mode = Some(u64::from(f.mode));
            r.file_size = Some(u64::from(f.file_size));
            r.request_id = Some(u64::from(f.request_id));
        }
        PointValue::FileCommandStatus(f) => {
            r.handle = Some(u64::from(f.handle));
            r.file_size = Some(u64::from(f.file_size));
            r.status = Some(u64::from(f.status));
        }
        PointValue::FileTransport(f) => {
            r.handle = Some(u64::from(f.handle));
            r.block = Some(u64::from(f.block));
            r.last = Some(f.last);
            r.length = Some(f.data.len() as u64);
        }
        PointValue::FileTransportStatus(f) => {
            r.handle = Some(u64::from(f.handle));
            r.block = Some(u64::from(f.block));
            r.last = Some(f.last);
            r.status = Some(u64::from(f.status));
        }
        PointValue::FileDescriptor(f) => {
            r.file_name = Some(text(f.name));
            r.file_type = Some(u64::from(f.file_type));
            r.file_size = Some(u64::from(f.file_size));
        }
    }
    match p.time {
        Some(Timestamp::Absolute(ms)) => r.time_ms = Some(ms),
        Some(t @ Timestamp::Relative { offset_ms, .. }) => {
            r.relative_ms = Some(u64::from(offset_ms));
            if let Some(abs) = t.absolute_ms() {
                r.time_ms = Some(abs);
            }
        }
        None => {}
    }
}
