//! Modbus/TCP flow state: framing over the reassembled stream, validation, resync after gaps and
//! garbage, request/response matching by transaction id, and event building.
//!
//! A stream is probed before it is trusted: at its start and after every gap the first bytes must
//! be a complete, valid ADU ([`modbus::find_resync`]), so non-Modbus bytes on port 502 produce no
//! Modbus events. Once a flow has produced a valid ADU, later ADUs with a sane MBAP header but an
//! invalid PDU are reported as malformed events (and counted); framing garbage is skipped, counted,
//! and reported once per episode.

use crate::dissect::registry::MODBUS;
use std::collections::VecDeque;

use otwatch_parsers::modbus::{
    self, umas_function_name, AduResult, Direction, FunctionCode, MbapHeader, ModbusAdu, ModbusPdu,
    PduBody, MBAP_HEADER_LEN,
};

use super::{hex, Ctx, Dir};
use crate::event::{DeviceIdObject, Event, FileRecord, ModbusEvent, Values};
use otwatch_models::{Observation, Proto, ValuesAt};
use otwatch_parsers::modbus::{Bits, Registers};

/// Requests remembered per flow while waiting for their response. Modbus/TCP clients pipeline a
/// handful at most; the oldest is forgotten (and counted) beyond this.
pub const MAX_OUTSTANDING: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Pending {
    transaction_id: u16,
    unit_id: u8,
    function: u8,
    address: Option<u16>,
    quantity: Option<u16>,
    ts_nanos: i64,
    frame: u64,
}

/// Malformed PDUs held back before the flow proved to be Modbus, at most this many.
pub const MAX_DEFERRED: usize = 16;

/// A malformed PDU seen before the flow proved to be Modbus: reported only if it does.
#[derive(Debug)]
struct Deferred {
    function: u8,
    reason: &'static str,
    event: Option<Event>,
}

#[derive(Debug)]
pub struct ModbusFlow {
    /// The flow is Modbus: a PDU fully validated, or two ADUs in a row were well framed in one
    /// direction (chained MBAP headers are evidence of their own). Until then malformed PDUs are
    /// held back, so bytes on port 502 that merely look framed once never become Modbus events.
    confirmed: bool,
    /// Per direction: well-framed ADUs in a row since the last resync.
    framed_in_row: [u8; 2],
    deferred: Vec<Deferred>,
    /// Per direction: the next bytes must be probed before they are trusted.
    resync: [bool; 2],
    /// Per direction: a malformed-framing event was already emitted for the current episode.
    garbage_reported: [bool; 2],
    outstanding: VecDeque<Pending>,
}

impl Default for ModbusFlow {
    fn default() -> Self {
        ModbusFlow {
            confirmed: false,
            framed_in_row: [0, 0],
            deferred: Vec::new(),
            resync: [true, true],
            garbage_reported: [false, false],
            outstanding: VecDeque::new(),
        }
    }
}

fn direction(dir: Dir) -> Direction {
    match dir {
        Dir::ToServer => Direction::Request,
        Dir::ToClient => Direction::Response,
    }
}

impl super::Dissector for ModbusFlow {
    fn on_stream_data(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) -> usize {
        let d = dir.index();
        let mut off = 0;
        while off < data.len() {
            let rest = &data[off..];
            if self.resync[d] {
                // Segments almost always start on an ADU boundary, so well-framed bytes at the
                // resync point are taken as they are (their PDU may still be malformed: that is
                // an event). Otherwise search for a complete ADU whose PDU also validates.
                let framed = matches!(modbus::parse_adu(rest), AduResult::Complete { .. });
                let found = if framed {
                    Some(0)
                } else {
                    modbus::find_resync(rest)
                };
                match found {
                    Some(skip) => {
                        self.skipped(ctx, dir, skip);
                        off += skip;
                        self.resync[d] = false;
                        self.garbage_reported[d] = false;
                    }
                    None => {
                        // Keep a short tail: a header may start in it.
                        let skip = rest.len().saturating_sub(MBAP_HEADER_LEN - 1);
                        self.skipped(ctx, dir, skip);
                        return off + skip;
                    }
                }
                continue;
            }
            // Read in place, as the PDU below (a store-forwarding stall an ADU when moved).
            match &modbus::parse_adu(rest) {
                AduResult::Complete { adu, consumed } => {
                    self.on_adu(ctx, dir, adu);
                    off += consumed;
                }
                AduResult::Incomplete { .. } => break,
                AduResult::Invalid(err) => {
                    if self.confirmed && !self.garbage_reported[d] {
                        self.garbage_reported[d] = true;
                        ctx.stats[MODBUS].count_error(err.as_str());
                        if ctx.sink.wants_events() {
                            let mut ev = ctx.event("modbus", dir);
                            let tid = rest
                                .get(..2)
                                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                            ev.pdu = crate::event::Pdu::Modbus(ModbusEvent {
                                transaction_id: tid,
                                unit_id: rest.get(6).copied().unwrap_or(0),
                                function_code: rest.get(7).copied().unwrap_or(0) & 0x7f,
                                error: Some(err.as_str()),
                                ..Default::default()
                            });
                            ctx.sink.emit(ev);
                            ctx.stats.events += 1;
                        }
                    }
                    self.resync[d] = true;
                    self.framed_in_row[d] = 0;
                }
            }
        }
        off
    }

    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) {
        // Modbus over UDP: one or more whole ADUs per datagram, never split.
        self.resync[dir.index()] = true;
        self.framed_in_row[dir.index()] = 0;
        let used = self.on_stream_data(ctx, dir, data);
        if used < data.len() {
            ctx.stats[MODBUS].resync_skipped_bytes += (data.len() - used) as u64;
        }
    }

    fn on_gap(&mut self, _ctx: &mut Ctx<'_>, dir: Dir) {
        self.resync[dir.index()] = true;
        self.framed_in_row[dir.index()] = 0;
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>) {
        if !self.confirmed {
            ctx.stats[MODBUS].unidentified_flows += 1;
            ctx.stats[MODBUS].unconfirmed_pdus_discarded += self.deferred.len() as u64;
            self.deferred.clear();
        }
    }
}

impl ModbusFlow {
    /// The flow just proved to be Modbus: report what was held back, in order.
    fn confirm(&mut self, ctx: &mut Ctx<'_>) {
        self.confirmed = true;
        for d in std::mem::take(&mut self.deferred) {
            self.confirmed_malformed(ctx, d);
        }
    }

    fn skipped(&mut self, ctx: &mut Ctx<'_>, _dir: Dir, n: usize) {
        ctx.stats[MODBUS].resync_skipped_bytes += n as u64;
    }

    fn on_adu(&mut self, ctx: &mut Ctx<'_>, dir: Dir, adu: &ModbusAdu<'_>) {
        let raw_fc = adu.pdu.first().copied().unwrap_or(0);
        let fc = raw_fc & 0x7f;
        let row = &mut self.framed_in_row[dir.index()];
        *row = row.saturating_add(1);
        if *row >= 2 && !self.confirmed {
            self.confirm(ctx);
        }
        // Read in place: moved out, the parser's record was copied whole just after it was
        // written field by field (a store-forwarding stall a PDU).
        match &modbus::parse_pdu(adu.pdu, direction(dir)) {
            Ok(pdu) => {
                if !self.confirmed {
                    self.confirm(ctx);
                }
                ctx.stats[MODBUS].count_pdu(fc);
                if pdu.exception().is_some() {
                    ctx.stats[MODBUS].exceptions += 1;
                }
                let pending = match dir {
                    Dir::ToServer => {
                        self.remember(ctx, &adu.header, fc, pdu.address(), pdu.quantity());
                        None
                    }
                    Dir::ToClient => self.take_pending(ctx, &adu.header, fc),
                };
                if ctx.wants_records() {
                    if !ctx.wants_event_out() && ctx.wants_observations() {
                        // Detection without an events output: the observation straight from
                        // the parser's record, without the event's values, strings and lists.
                        let unit = u32::from(adu.header.unit_id);
                        let mut o = ctx.observation(Proto::Modbus, unit, dir, 0);
                        observe_into(&mut o, ctx.ts_nanos, dir, adu, pdu, pending.as_ref());
                        ctx.emit_observed(dir, o);
                    } else {
                        pdu_event(ctx, dir, adu, pdu, pending.as_ref());
                    }
                }
            }
            Err(err) => self.malformed(ctx, dir, adu, err),
        }
    }

    /// A PDU that did not parse ([`ModbusFlow::on_adu`]): counted, its event kept back until
    /// the flow is known to be Modbus. Out of line, as [`pdu_event`].
    #[inline(never)]
    fn malformed(
        &mut self,
        ctx: &mut Ctx<'_>,
        dir: Dir,
        adu: &ModbusAdu<'_>,
        err: &otwatch_parsers::modbus::PduError,
    ) {
        let raw_fc = adu.pdu.first().copied().unwrap_or(0);
        let fc = raw_fc & 0x7f;
        let address = raw_address(adu.pdu, dir);
        // A malformed request is still answered (usually with an exception): remember
        // it so the answer is matched.
        let pending = match dir {
            Dir::ToServer => {
                self.remember(ctx, &adu.header, fc, address, None);
                None
            }
            Dir::ToClient => self.take_pending(ctx, &adu.header, fc),
        };
        let event = ctx.sink.wants_events().then(|| {
            let mut ev = ctx.event("modbus", dir);
            ev.pdu = crate::event::Pdu::Modbus(ModbusEvent {
                transaction_id: adu.header.transaction_id,
                unit_id: adu.header.unit_id,
                function_code: fc,
                function: FunctionCode(fc).name(),
                address: address.or(pending.and_then(|p| p.address)),
                // An exception response with junk after its code still says which.
                exception_code: (raw_fc & 0x80 != 0)
                    .then(|| adu.pdu.get(1).copied())
                    .flatten(),
                request_frame: pending.map(|p| p.frame),
                response_time: pending.map(|p| seconds_between(p.ts_nanos, ctx.ts_nanos)),
                error: Some(err.kind.as_str()),
                error_offset: Some(err.offset),
                ..Default::default()
            });
            ev
        });
        let d = Deferred {
            function: fc,
            reason: err.kind.as_str(),
            event,
        };
        if self.confirmed {
            self.confirmed_malformed(ctx, d);
        } else if self.deferred.len() < MAX_DEFERRED {
            self.deferred.push(d);
        } else {
            ctx.stats[MODBUS].unconfirmed_pdus_discarded += 1;
        }
    }

    fn confirmed_malformed(&mut self, ctx: &mut Ctx<'_>, d: Deferred) {
        ctx.stats[MODBUS].count_pdu(d.function);
        ctx.stats[MODBUS].count_error(d.reason);
        if let Some(ev) = d.event {
            ctx.sink.emit(ev);
            ctx.stats.events += 1;
        }
    }

    /// Remember a request until its response; a reused transaction id replaces the older one.
    fn remember(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &MbapHeader,
        function: u8,
        address: Option<u16>,
        quantity: Option<u16>,
    ) {
        // At most one is held under an id (this replacement keeps it so): found and removed,
        // not a walk that rebuilds the queue (`retain`'s code, on every request).
        if let Some(i) = self
            .outstanding
            .iter()
            .position(|p| p.transaction_id == header.transaction_id)
        {
            self.outstanding.remove(i);
        }
        if self.outstanding.len() >= MAX_OUTSTANDING {
            self.outstanding.pop_front();
            ctx.stats[MODBUS].outstanding_bound_drops += 1;
        }
        self.outstanding.push_back(Pending {
            transaction_id: header.transaction_id,
            unit_id: header.unit_id,
            function,
            address,
            quantity,
            ts_nanos: ctx.ts_nanos,
            frame: ctx.frame,
        });
    }

    fn take_pending(&mut self, ctx: &mut Ctx<'_>, header: &MbapHeader, fc: u8) -> Option<Pending> {
        let i = self.outstanding.iter().position(|p| {
            p.transaction_id == header.transaction_id
                && p.unit_id == header.unit_id
                && p.function == fc
        });
        let found = i.and_then(|i| super::take_answered(&mut self.outstanding, i));
        if found.is_none() {
            ctx.stats[MODBUS].unmatched_responses += 1;
        }
        found
    }
}

/// The start address of a PDU that failed to parse, where the function puts one at a fixed place
/// (bytes 1-2): requests of reads and writes, and the echoing write responses. A malformed PDU
/// still says what it was aimed at.
fn raw_address(pdu: &[u8], dir: Dir) -> Option<u16> {
    let fc = *pdu.first()?;
    let has = match dir {
        Dir::ToServer => matches!(fc, 1..=6 | 15 | 16 | 22..=24),
        Dir::ToClient => matches!(fc, 5 | 6 | 15 | 16 | 22),
    };
    let b = pdu.get(1..3)?;
    has.then(|| u16::from_be_bytes([b[0], b[1]]))
}

/// Seconds from `earlier` to `later`; hostile timestamps cannot overflow it.
fn seconds_between(earlier: i64, later: i64) -> f64 {
    later.saturating_sub(earlier) as f64 / 1e9
}

fn device_object_name(id: u8) -> Option<&'static str> {
    Some(match id {
        0x00 => "vendor_name",
        0x01 => "product_code",
        0x02 => "major_minor_revision",
        0x03 => "vendor_url",
        0x04 => "product_name",
        0x05 => "model_name",
        0x06 => "user_application_name",
        _ => return None,
    })
}

/// The values a PDU carries, read from the packet: registers, or coils and discrete inputs.
enum Carried<'a> {
    Registers(Registers<'a>),
    Bits(Bits<'a>),
    Register(u16),
    Coil(bool),
}

/// What `pdu` carries (a bit read response's bits narrowed to its request's quantity).
fn carried<'a>(pdu: &ModbusPdu<'a>, req: Option<&Pending>) -> Option<Carried<'a>> {
    Some(match pdu.body {
        PduBody::ReadBitsResponse { bits } => Carried::Bits(match req.and_then(|r| r.quantity) {
            Some(q) => bits.with_count(usize::from(q)),
            None => bits,
        }),
        PduBody::ReadRegistersResponse { registers }
        | PduBody::ReadFifoQueueResponse { registers }
        | PduBody::WriteMultipleRegistersRequest { registers, .. }
        | PduBody::ReadWriteMultipleRequest { registers, .. } => Carried::Registers(registers),
        PduBody::WriteMultipleCoilsRequest { bits, .. } => Carried::Bits(bits),
        PduBody::WriteSingleCoil { value, .. } => Carried::Coil(value == modbus::COIL_ON),
        PduBody::WriteSingleRegister { value, .. } => Carried::Register(value),
        _ => return None,
    })
}

impl Carried<'_> {
    /// As an event has them.
    fn values(self) -> Values {
        match self {
            Carried::Registers(r) => Values::Registers(r.iter().collect()),
            Carried::Bits(b) => Values::Bits(b.iter().collect()),
            Carried::Register(v) => Values::Registers(vec![v]),
            Carried::Coil(v) => Values::Bits(vec![v]),
        }
    }

    /// As an observation has them: as they came on the wire, in its bytes (registers as
    /// big-endian words, bits a byte each).
    fn held(self, o: &mut Observation) -> ValuesAt {
        match self {
            Carried::Registers(r) => ValuesAt::push_words(&mut o.bytes, r.as_bytes().as_chunks().0),
            Carried::Bits(b) => ValuesAt::push_bits(&mut o.bytes, b.iter()),
            Carried::Register(v) => ValuesAt::push_words(&mut o.bytes, &[v.to_be_bytes()]),
            Carried::Coil(v) => ValuesAt::push_bits(&mut o.bytes, [v]),
        }
    }
}

/// The event of a well-formed PDU ([`ModbusFlow::on_adu`]). Out of line: with detection and no
/// events output every PDU takes the observation's way instead, and this code among it spread
/// that path over more instruction cache lines than the cache holds with the other
/// dissectors' (steady-site, one worker with detection: callgrind's L1i misses).
#[inline(never)]
fn pdu_event(
    ctx: &mut Ctx<'_>,
    dir: Dir,
    adu: &ModbusAdu<'_>,
    pdu: &ModbusPdu<'_>,
    pending: Option<&Pending>,
) {
    let mut ev = ctx.event("modbus", dir);
    let request = dir == Dir::ToServer;
    let mut m = build_event(adu, pdu, pending, ctx.ts_nanos, request, true);
    m.values = carried(pdu, pending).map(Carried::values);
    ev.pdu = crate::event::Pdu::Modbus(m);
    ctx.emit(ev);
}

/// The observation of a well-formed PDU, from the parser's record: what
/// [`crate::detection::observe::observe`] makes of its event, without building the event (its
/// values, strings and lists). Filled in where the caller made it ([`Ctx::observation`]): an
/// observation returned was copied whole on its way.
fn observe_into(
    o: &mut Observation,
    now: i64,
    dir: Dir,
    adu: &ModbusAdu<'_>,
    pdu: &ModbusPdu<'_>,
    req: Option<&Pending>,
) {
    let m = head(adu, pdu, req, now, dir == Dir::ToServer);
    o.function = u32::from(m.function_code);
    let values = carried(pdu, req).map_or(ValuesAt::NONE, |c| c.held(o));
    crate::detection::observe::modbus(&m, values, o);
    if let PduBody::WriteFileRecord { records } = &pdu.body {
        crate::detection::observe::file_record_writes(
            records.iter().map(|r| (r.file_number, r.record_number)),
            o,
        );
    }
    if let PduBody::ReadDeviceIdResponse { objects, .. } = &pdu.body {
        o.identity = crate::detection::observe::modbus_identity(
            objects
                .iter()
                .map(|ob| (ob.id, String::from_utf8_lossy(ob.value))),
        );
    }
}

/// What the observation of a well-formed PDU reads; [`build_event`] starts from it too.
/// `request`: sent to the server. Inlined, as [`crate::detection::observe::modbus`] is: the
/// head is then never built whole on the way into the observation (mbtcp-steady's detection
/// 1.7% fewer instructions built with the `dist` profile, one codegen unit; benches/README.md,
/// session 34).
#[inline(always)]
fn head(
    adu: &ModbusAdu<'_>,
    pdu: &ModbusPdu<'_>,
    req: Option<&Pending>,
    now: i64,
    request: bool,
) -> crate::detection::observe::ModbusHead {
    let (write_address, write_quantity) = match &pdu.body {
        PduBody::ReadWriteMultipleRequest {
            write_address,
            write_quantity,
            ..
        } => (Some(*write_address), Some(*write_quantity)),
        _ => (None, None),
    };
    crate::detection::observe::ModbusHead {
        function_code: pdu.function.0,
        function: pdu.function.name(),
        transaction_id: adu.header.transaction_id,
        response_time: req.map(|r| seconds_between(r.ts_nanos, now)),
        exception: pdu.exception().is_some(),
        error: None,
        subfunction: match &pdu.body {
            PduBody::Diagnostics { subfunction, .. } => Some(subfunction.0),
            // Schneider UMAS: a request's second byte (after the session key) is its function;
            // a response's is its status.
            PduBody::Other { data } if pdu.function == FunctionCode::UMAS && request => {
                data.get(1).map(|&f| u16::from(f))
            }
            _ => None,
        },
        mei_type: match &pdu.body {
            PduBody::ReadDeviceIdRequest { .. } | PduBody::ReadDeviceIdResponse { .. } => {
                Some(0x0E)
            }
            PduBody::EncapsulatedOther { mei_type, .. } => Some(*mei_type),
            _ => None,
        },
        // Responses that do not repeat the address carry their request's.
        address: pdu.address().or(req.and_then(|r| r.address)),
        quantity: pdu.quantity().or(req.and_then(|r| r.quantity)),
        write_address,
        write_quantity,
    }
}

/// A PDU's event object. `detail`: with its data as text and its lists (file records, device
/// identification objects); values are added by the caller ([`carried`]).
fn build_event(
    adu: &ModbusAdu<'_>,
    pdu: &ModbusPdu<'_>,
    req: Option<&Pending>,
    now: i64,
    request: bool,
    detail: bool,
) -> ModbusEvent {
    // What an observation reads, made once for both (`head`).
    let h = head(adu, pdu, req, now, request);
    let mut ev = ModbusEvent {
        transaction_id: h.transaction_id,
        unit_id: adu.header.unit_id,
        function_code: h.function_code,
        function: h.function,
        address: h.address,
        quantity: h.quantity,
        response_time: h.response_time,
        request_frame: req.map(|r| r.frame),
        write_address: h.write_address,
        write_quantity: h.write_quantity,
        subfunction: h.subfunction,
        ..Default::default()
    };
    if let Some(code) = pdu.exception() {
        ev.exception_code = Some(code.0);
        ev.exception = code.name();
    }
    match &pdu.body {
        PduBody::MaskWriteRegister {
            and_mask, or_mask, ..
        } => {
            ev.and_mask = Some(*and_mask);
            ev.or_mask = Some(*or_mask);
        }
        PduBody::ReadExceptionStatusResponse { status } => ev.status = Some(u16::from(*status)),
        PduBody::Diagnostics { subfunction, data } => {
            ev.subfunction_name = subfunction.name();
            ev.data = detail.then(|| hex(data));
        }
        PduBody::CommEventCounterResponse {
            status,
            event_count,
        } => {
            ev.status = Some(*status);
            ev.event_count = Some(*event_count);
        }
        PduBody::CommEventLogResponse {
            status,
            event_count,
            message_count,
            events,
        } => {
            ev.status = Some(*status);
            ev.event_count = Some(*event_count);
            ev.message_count = Some(*message_count);
            ev.data = detail.then(|| hex(events));
        }
        PduBody::ReportServerIdResponse { data } | PduBody::Other { data } => {
            if pdu.function == FunctionCode::UMAS {
                ev.subfunction_name = h.subfunction.and_then(|f| umas_function_name(f as u8));
            }
            ev.data = detail.then(|| hex(data))
        }
        PduBody::ReadFileRecordRequest { records } if detail => {
            ev.file_records = Some(
                records
                    .iter()
                    .map(|r| FileRecord {
                        file_number: r.file_number,
                        record_number: r.record_number,
                        record_length: r.record_length,
                        values: None,
                    })
                    .collect(),
            );
        }
        PduBody::ReadFileRecordResponse { records } if detail => {
            ev.file_records = Some(
                records
                    .iter()
                    .map(|r| FileRecord {
                        file_number: 0,
                        record_number: 0,
                        record_length: r.len() as u16,
                        values: Some(r.iter().collect()),
                    })
                    .collect(),
            );
        }
        PduBody::WriteFileRecord { records } if detail => {
            ev.file_records = Some(
                records
                    .iter()
                    .map(|r| FileRecord {
                        file_number: r.file_number,
                        record_number: r.record_number,
                        record_length: r.record_length,
                        values: Some(r.data.iter().collect()),
                    })
                    .collect(),
            );
        }
        PduBody::ReadDeviceIdRequest {
            read_device_id_code,
            object_id,
        } => {
            ev.mei_type = Some(0x0E);
            ev.read_device_id_code = Some(*read_device_id_code);
            ev.object_id = Some(*object_id);
        }
        PduBody::ReadDeviceIdResponse {
            read_device_id_code,
            conformity_level,
            more_follows,
            next_object_id,
            objects,
        } => {
            ev.mei_type = Some(0x0E);
            ev.read_device_id_code = Some(*read_device_id_code);
            ev.conformity_level = Some(*conformity_level);
            ev.more_follows = Some(*more_follows);
            ev.object_id = Some(*next_object_id);
            ev.objects = detail.then(|| {
                objects
                    .iter()
                    .map(|o| DeviceIdObject {
                        id: o.id,
                        name: device_object_name(o.id),
                        value: String::from_utf8_lossy(o.value).into_owned(),
                    })
                    .collect()
            });
        }
        PduBody::EncapsulatedOther { mei_type, data } => {
            ev.mei_type = Some(*mei_type);
            ev.data = detail.then(|| hex(data));
        }
        _ => {}
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use otwatch_models::{Channel, Kind, Values as ObsValues};

    /// Registers are held as big-endian words and coils as bytes (0 or 1 each), as they came
    /// on the wire (not a number of eight bytes each), each access reading back the values the
    /// PDU carried.
    #[test]
    fn registers_are_words_and_coils_are_bytes() {
        let channel = Channel {
            proto: Proto::Modbus,
            client: [10, 0, 0, 1].into(),
            server: [10, 0, 0, 2].into(),
            unit: 1,
        };
        let mut o = Observation::new(0, "t".into(), 1, channel, Kind::Response, 1);
        let registers = Registers::new(&[0x01, 0x02, 0xff, 0xff]).unwrap();
        let r = Carried::Registers(registers).held(&mut o);
        let b = Carried::Bits(Bits::new(&[0b0000_0101, 0b1], 9)).held(&mut o);
        let c = Carried::Coil(true).held(&mut o);
        let w = Carried::Register(7).held(&mut o);
        let of = |values| {
            o.values_of(&otwatch_models::Access {
                space: 0,
                start: 0,
                count: 1,
                write: false,
                values,
            })
        };
        assert_eq!(of(r), ObsValues::Words(&[[1, 2], [0xff, 0xff]]));
        assert_eq!(of(r).to_vec(), [258.0, 65535.0]);
        assert_eq!(of(b), ObsValues::Bytes(&[1, 0, 1, 0, 0, 0, 0, 0, 1]));
        assert_eq!(of(c), ObsValues::Bytes(&[1]));
        assert_eq!(of(w), ObsValues::Words(&[[0, 7]]));
        assert_eq!(
            of(b).to_vec(),
            [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        );
    }
}
