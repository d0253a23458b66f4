//! Events (the dissectors' silver tier) into observations for the detection engine.

use std::net::IpAddr;

use otwatch_models::obs::S7_BIT_SPACE;
use otwatch_models::{Access, Channel, Command, Kind, Observation, Proto, ValuesAt};
use otwatch_parsers::s7::{
    PlusFunction, PlusOpcode, UserdataType, CPU_EXEC_UNIT, OPERATING_STATE_REQ,
};

use crate::dissect::dnp3::Dnp3Event;
use crate::dissect::s7::{S7Event, S7PlusEvent, S7PlusItem};
use crate::event::{Direction, Event, ModbusEvent, Pdu, Values};

/// The observation an event stands for; `None` for events detection has no use for (COTP
/// connection setup, DNP3 link-layer housekeeping with good CRCs, S7comm-plus keep-alives).
pub fn observe(ev: &Event) -> Option<Observation> {
    let mut o = observe_pdu(ev)?;
    o.identity = identity(ev);
    o.src_mac = ev.src_mac.map(|m| m.0);
    o.ports = Some(ports_of(
        (ev.src_ip, ev.src_port),
        (ev.dst_ip, ev.dst_port),
        ev.transport == crate::event::L4::Udp,
        o.src(),
    ));
    Some(o)
}

/// An observation's ports, from `obs_src` ([`Observation::src`]) to its other end, for a PDU
/// sent from `src` to `dst` (over UDP, else TCP): the same two ends, in the same order or the
/// other.
#[inline]
pub fn ports_of(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    udp: bool,
    obs_src: IpAddr,
) -> otwatch_models::Ports {
    let ports = otwatch_models::Ports {
        src: src.1,
        dst: dst.1,
        udp,
    };
    if src.0 == obs_src {
        ports
    } else {
        ports.reversed()
    }
}

fn observe_pdu(ev: &Event) -> Option<Observation> {
    let request = ev.direction == Direction::Request;
    let (client, server) = if request {
        (ev.src_ip, ev.dst_ip)
    } else {
        (ev.dst_ip, ev.src_ip)
    };
    let channel = |proto, unit| Channel {
        proto,
        client,
        server,
        unit,
    };
    let kind = if request {
        Kind::Request
    } else {
        Kind::Response
    };
    let base = |proto, unit, kind, function| {
        Observation::new(
            ev.ts.0,
            ev.source.clone(),
            ev.frame,
            channel(proto, unit),
            kind,
            function,
        )
    };
    match &ev.pdu {
        Pdu::Modbus(m) => {
            let mut o = base(
                Proto::Modbus,
                u32::from(m.unit_id),
                kind,
                u32::from(m.function_code),
            );
            let values = match &m.values {
                Some(Values::Registers(r)) => ValuesAt::push_u16s(&mut o.bytes, r.iter().copied()),
                Some(Values::Bits(b)) => ValuesAt::push_bits(&mut o.bytes, b.iter().copied()),
                None => ValuesAt::NONE,
            };
            modbus(&ModbusHead::of(m), values, &mut o);
            if let Some(records) = &m.file_records {
                file_record_writes(
                    records.iter().map(|r| (r.file_number, r.record_number)),
                    &mut o,
                );
            }
            Some(o)
        }
        Pdu::Dnp3(d) => dnp3(d, ev, base),
        Pdu::S7comm(s) => {
            let mut o = base(Proto::S7comm, 0, kind, 0);
            s7(&S7Head::of(s), s.items.iter().map(S7ItemView::of), &mut o);
            Some(o)
        }
        Pdu::S7commplus(p) => {
            let mut o = base(Proto::S7commplus, 0, kind, 0);
            s7plus(p, &mut o).then_some(o)
        }
        Pdu::Cotp(_) => None,
        Pdu::Iec104(p) => crate::dissect::iec104::observe(p, request, base),
        Pdu::Enip(p) => crate::dissect::enip::observe(p, request, base),
        Pdu::Conversation { udp } => {
            let proto = if *udp { Proto::Udp } else { Proto::Tcp };
            Some(base(proto, u32::from(ev.dst_port), Kind::Conversation, 0))
        }
    }
}

/// The observation of a PDU of `proto` from its event: made by `base` (unit 0, a request or a
/// response as `request` says), then filled in by `fill`, the dissector's own (which says
/// whether the PDU has one); the dissector fills the same in its own box when it builds the
/// observation itself ([`crate::dissect::Ctx::emit_record`]).
pub(crate) fn observe_with(
    proto: Proto,
    request: bool,
    base: impl Fn(Proto, u32, Kind, u32) -> Observation,
    fill: impl FnOnce(&mut Observation) -> bool,
) -> Option<Observation> {
    let kind = if request {
        Kind::Request
    } else {
        Kind::Response
    };
    let mut o = base(proto, 0, kind, 0);
    fill(&mut o).then_some(o)
}

/// A PDU that did not decode (`error`; none without one), in `o` as the dissector's
/// `observe_into` received it (its kind the direction's): function 0x100, malformed.
pub(crate) fn malformed_into(o: &mut Observation, error: Option<&'static str>) -> bool {
    let Some(e) = error else {
        return false;
    };
    o.function = 0x100;
    o.malformed = Some(e);
    true
}

/// What a Modbus PDU's observation reads: its event object's header fields, or the same made
/// from the parser's record when the dissector builds the observation itself.
pub(crate) struct ModbusHead {
    pub function_code: u8,
    pub function: Option<&'static str>,
    pub transaction_id: u16,
    pub response_time: Option<f64>,
    pub exception: bool,
    pub error: Option<&'static str>,
    pub subfunction: Option<u16>,
    /// Encapsulated interface transport's (43) MEI type.
    pub mei_type: Option<u8>,
    pub address: Option<u16>,
    pub quantity: Option<u16>,
    pub write_address: Option<u16>,
    pub write_quantity: Option<u16>,
}

impl ModbusHead {
    pub(crate) fn of(m: &ModbusEvent) -> Self {
        ModbusHead {
            function_code: m.function_code,
            function: m.function,
            transaction_id: m.transaction_id,
            response_time: m.response_time,
            exception: m.exception_code.is_some(),
            error: m.error,
            subfunction: m.subfunction,
            mei_type: m.mei_type,
            address: m.address,
            quantity: m.quantity,
            write_address: m.write_address,
            write_quantity: m.write_quantity,
        }
    }
}

/// A Modbus PDU's observation from its head, `values` being where the values it carries (the
/// event's, or the parser's when the dissector builds the observation itself) are in
/// `o.bytes` (registers as big-endian words, coils a byte each). Inlined with the dissector's
/// `head`, whose fields then go straight into the observation.
#[inline(always)]
pub(crate) fn modbus(m: &ModbusHead, values: ValuesAt, o: &mut Observation) {
    o.function_name = m.function;
    o.corr = Some(u32::from(m.transaction_id));
    o.latency = m.response_time;
    o.exception = m.exception;
    o.malformed = m.error;
    let request = o.kind == Kind::Request;
    let fc = m.function_code;
    // Encapsulated interface transport is several functions by its MEI type: reading the
    // device identification (14) is not CANopen's general reference (13), which reaches the
    // object dictionary. The function is `43 | mei << 8`.
    if let (43, Some(mei)) = (fc, m.mei_type) {
        o.function = 43 | u32::from(mei) << 8;
    }
    o.write = request && matches!(fc, 5 | 6 | 15 | 16 | 21 | 22 | 23);
    // Schneider UMAS (90) is many functions by its own code (`90 | umas << 8`): the PLC's
    // programming, start and stop among them.
    if let (90, Some(umas), true) = (fc, m.subfunction, request) {
        o.function = 90 | u32::from(umas) << 8;
        o.function_name = otwatch_parsers::modbus::umas_function_name(umas as u8);
        o.command = match umas {
            0x30..=0x32 => Some(Command::ProgramDownload),
            0x33..=0x35 => Some(Command::ProgramUpload),
            0x40 => Some(Command::PlcStart),
            0x41 => Some(Command::PlcStop),
            _ => None,
        };
        // Writes of variables, coils and registers, and of I/O objects; and what changes the
        // program or the PLC's state.
        o.write = matches!(umas, 0x23 | 0x25 | 0x71 | 0x30..=0x32 | 0x40 | 0x41);
    }
    // Diagnostics: restart communications (1) and force listen-only mode (4) take a device off
    // the bus.
    if request && fc == 8 && matches!(m.subfunction, Some(1 | 4)) {
        o.command = Some(Command::Restart);
    }
    if o.exception || m.error.is_some() {
        return;
    }
    let space = match fc {
        1 | 5 | 15 => 0,
        2 => 1,
        4 => 3,
        3 | 6 | 16 | 22 | 23 => 4,
        _ => return,
    };
    let Some(address) = m.address else { return };
    let address = u32::from(address);
    let write = matches!(fc, 5 | 6 | 15 | 16 | 22);
    // Write responses echo the request: the request already told what was written.
    if !request && write {
        return;
    }
    let count = m.quantity.map_or(values.len.max(1), u32::from).max(1);
    if fc == 23 {
        if request {
            if let (Some(wa), Some(wq)) = (m.write_address, m.write_quantity) {
                o.accesses.push(Access {
                    space,
                    start: u32::from(wa),
                    count: u32::from(wq).max(1),
                    write: true,
                    values,
                });
            }
            o.accesses.push(Access {
                space,
                start: address,
                count,
                write: false,
                values: ValuesAt::NONE,
            });
        } else {
            o.accesses.push(Access {
                space,
                start: address,
                count,
                write: false,
                values,
            });
        }
        return;
    }
    o.accesses.push(Access {
        space,
        start: address,
        count,
        write,
        values: if request && !write {
            ValuesAt::NONE
        } else {
            values
        },
    });
}

/// The records a Modbus write file record request (21) writes, `(file, record)`, as accesses
/// of the file records space (6), one address each: `file << 16 | record` (a record's
/// registers are no one point: no values). Nothing for other PDUs, responses (they echo the
/// request) or a malformed request.
pub(crate) fn file_record_writes(records: impl Iterator<Item = (u16, u16)>, o: &mut Observation) {
    if o.function != 21 || o.kind != Kind::Request || o.malformed.is_some() {
        return;
    }
    for (file, record) in records {
        o.accesses.push(Access {
            space: 6,
            start: u32::from(file) << 16 | u32::from(record),
            count: 1,
            write: true,
            values: ValuesAt::NONE,
        });
    }
}

/// Modbus device identification (43/14) objects, by id and value, joined: vendor, product
/// code, revision.
pub(crate) fn modbus_identity<S: AsRef<str>>(
    objects: impl Iterator<Item = (u8, S)>,
) -> Option<String> {
    let mut joined: Option<String> = None;
    for (_, v) in objects.filter(|(id, _)| *id <= 2) {
        match &mut joined {
            Some(s) => {
                s.push(' ');
                s.push_str(v.as_ref());
            }
            None => joined = Some(v.as_ref().to_owned()),
        }
    }
    joined
}

fn identity(ev: &Event) -> Option<String> {
    let u = match &ev.pdu {
        Pdu::Modbus(m) => {
            let objects = m.objects.as_ref()?;
            return modbus_identity(objects.iter().map(|o| (o.id, o.value.as_str())));
        }
        // A routed reply's identity is a module's behind the device: not the asset's.
        Pdu::Enip(e) => {
            return e
                .identity
                .as_ref()
                .filter(|i| !i.routed)
                .map(|i| i.describe())
        }
        Pdu::S7comm(s) => s.userdata.as_ref()?,
        _ => return None,
    };
    match (&u.order_number, &u.firmware_version) {
        (Some(o), Some(f)) => Some(format!("{o} firmware {f}")),
        (Some(o), None) => Some(o.clone()),
        (None, Some(f)) => Some(format!("firmware {f}")),
        (None, None) => None,
    }
}

/// DNP3 internal indications.
const IIN_DEVICE_RESTART: u16 = 0x8000;
/// IIN2.0–2.2: function not supported, object unknown, parameter error.
const IIN_REQUEST_ERRORS: u16 = 0x0007;

fn dnp3(
    d: &Dnp3Event,
    ev: &Event,
    base: impl Fn(Proto, u32, Kind, u32) -> Observation,
) -> Option<Observation> {
    let (master, outstation) = if d.from_master {
        (d.link_src, d.link_dst)
    } else {
        (d.link_dst, d.link_src)
    };
    let unit = u32::from(master) << 16 | u32::from(outstation);
    let Some(fc) = d.app_function else {
        // Link-only frames matter only when broken.
        if d.crc_ok && d.error.is_none() {
            return None;
        }
        let kind = if ev.direction == Direction::Request {
            Kind::Request
        } else {
            Kind::Response
        };
        let mut o = base(Proto::Dnp3, unit, kind, 0x100 | u32::from(d.link_function));
        o.crc_error = !d.crc_ok;
        o.malformed = d.error;
        return Some(o);
    };
    let mut o = base(Proto::Dnp3, unit, dnp3_kind(fc), u32::from(fc));
    // The master is the client, whoever opened the connection (an outstation dialling out to a
    // master listening on 20000 makes the master the port's server): the DIR bit says who sent.
    (o.channel.client, o.channel.server) = if d.from_master {
        (ev.src_ip, ev.dst_ip)
    } else {
        (ev.dst_ip, ev.src_ip)
    };
    let head = Dnp3Head {
        function_name: d.app_function_name,
        seq: d.app_seq,
        crc_ok: d.crc_ok,
        error: d.error,
        iin: d.iin,
    };
    let objects = d.objects.iter().flatten();
    let files = objects.clone().any(|ob| ob.group == 70);
    let views = objects.map(|ob| Dnp3ObjectView {
        group: ob.group,
        variation: ob.variation,
        start: ob.start,
        stop: ob.stop,
        count: ob.count,
        points: ob
            .points
            .iter()
            .map(|p| (p.index, p.value.as_ref().map(|_| p.number()))),
    });
    dnp3_app(&head, files, views, &mut o);
    Some(o)
}

/// The kind of a DNP3 application PDU by its function.
pub(crate) fn dnp3_kind(fc: u8) -> Kind {
    // IEEE 1815-2012 4.2.2.5: 129 and up are the outstation's (131, authenticate response,
    // answers the master's authentication requests); 130 arrives unasked.
    match fc {
        130 => Kind::Unsolicited,
        129.. => Kind::Response,
        _ => Kind::Request,
    }
}

/// What a DNP3 application PDU's observation reads of it besides its objects: from its event,
/// or from the parser's records when the dissector builds the observation itself.
pub(crate) struct Dnp3Head {
    pub function_name: Option<&'static str>,
    pub seq: Option<u8>,
    pub crc_ok: bool,
    pub error: Option<&'static str>,
    pub iin: Option<u16>,
}

/// One DNP3 object as its observation reads it: the header's group, variation and range, and
/// each point's index and value (`None`: no value; `Some(None)`: a value that is not a
/// number, such as a double-bit state).
pub(crate) struct Dnp3ObjectView<P> {
    pub group: u8,
    pub variation: u8,
    pub start: Option<u32>,
    pub stop: Option<u32>,
    pub count: Option<u64>,
    pub points: P,
}

/// Fills in the observation of a DNP3 application PDU, `o` being its header's (its function
/// code, [`dnp3_kind`], the master as client): `files` says whether an object is of group 70.
pub(crate) fn dnp3_app<P>(
    h: &Dnp3Head,
    files: bool,
    objects: impl Iterator<Item = Dnp3ObjectView<P>>,
    o: &mut Observation,
) where
    P: Iterator<Item = (u32, Option<Option<f64>>)>,
{
    let fc = o.function;
    let kind = o.kind;
    o.function_name = h.function_name;
    o.corr = if kind == Kind::Unsolicited {
        None
    } else {
        h.seq.map(u32::from)
    };
    o.crc_error = !h.crc_ok;
    o.malformed = h.error;
    let iin = h.iin.unwrap_or(0);
    o.device_restarted = iin & IIN_DEVICE_RESTART != 0;
    o.exception = iin & IIN_REQUEST_ERRORS != 0;
    let request = kind == Kind::Request;
    // Writes, operates, freeze-and-clears, application control, files. Enabling or disabling
    // unsolicited responses and assigning classes (20-22) change what the outstation reports,
    // but masters send them at every start, and outstations refuse them often (a refused
    // write makes no writer): they are functions, new ones raised as such, not writes.
    o.write = request && matches!(fc, 2..=6 | 9 | 10 | 15..=19 | 25 | 27 | 31);
    o.command = match fc {
        13 | 14 => Some(Command::Restart),
        18 => Some(Command::PlcStop),
        17 => Some(Command::PlcStart),
        // Opening a file is neither yet: the reads or writes that follow say which.
        27 | 31 => Some(Command::ProgramDownload),
        2 if files => Some(Command::ProgramDownload),
        1 if files => Some(Command::ProgramUpload),
        _ => None,
    };
    if o.exception {
        return;
    }
    for ob in objects {
        let space = u32::from(ob.group);
        let mut with_values = false;
        let write = request && o.write;
        // A point without a value still names its index (a control relay output block, a
        // point a read asks for by index); times, classes, files and authentication have none.
        let addressable = !matches!(ob.group, 50..=52 | 60 | 70 | 120..=122);
        // Consecutive indexes with numeric values make one access (a range response is one), as
        // do consecutive indexes without values.
        let mut run: Option<Access> = None;
        let mut run_index_only = false;
        for (index, value) in ob.points {
            let index_only = value.is_none();
            if index_only && !addressable {
                continue;
            }
            // A float that is not a number (NaN, infinite: an analog's own encoding allows
            // them) is a value: learning takes no sample of it (an envelope holds finite
            // bounds), and detection finds it outside every envelope of a checked point (a NaN
            // setpoint makes every comparison in the outstation's logic false).
            let v = value.flatten();
            with_values = true;
            match (&mut run, v) {
                // The run's values are the last in `o.values`: it grows in place.
                (Some(a), Some(v))
                    if a.values.len == a.count
                        && a.start.wrapping_add(a.count) == index
                        && a.values.at as usize + a.values.len as usize == o.values.len() =>
                {
                    o.values.push(v);
                    a.values.len += 1;
                    a.count += 1;
                }
                (Some(a), None)
                    if index_only && run_index_only && a.start.wrapping_add(a.count) == index =>
                {
                    a.count += 1;
                }
                _ => {
                    run_index_only = index_only;
                    o.accesses.extend(run.take());
                    run = Some(Access {
                        space,
                        start: index,
                        count: 1,
                        write,
                        values: ValuesAt::push(&mut o.values, v),
                    });
                }
            }
        }
        o.accesses.extend(run);
        if with_values {
            continue;
        }
        let (start, count) = match (ob.start, ob.stop, ob.count) {
            (Some(s), Some(e), _) if e >= s => (s, (e - s).saturating_add(1)),
            (_, _, Some(c)) => (ob.start.unwrap_or(0), c.min(u64::from(u32::MAX)) as u32),
            // "All objects" of the group (class polls): one pseudo-space per group.
            _ => {
                o.accesses.push(Access {
                    space: space | 0x1_0000,
                    start: u32::from(ob.variation),
                    count: 1,
                    write: request && o.write,
                    values: ValuesAt::NONE,
                });
                continue;
            }
        };
        o.accesses.push(Access {
            space,
            start,
            count: count.max(1),
            write: request && o.write,
            values: ValuesAt::NONE,
        });
    }
}

/// What detection reads of an S7 item: its address, its return code, and its data (the first
/// [`crate::dissect::s7::MAX_VALUE_BYTES`], as an event shows them).
pub(crate) struct S7ItemView<'a> {
    pub addr: S7Address,
    pub dbread: &'a [crate::dissect::s7::S7DbRead],
    /// An address of another syntax than S7ANY (Sinumerik NCK, Drive ES, symbolic): its
    /// syntax id and its bytes as hex.
    pub raw: Option<(u8, &'a str)>,
    pub return_code: Option<u8>,
    pub bytes: &'a [u8],
}

/// Where an S7 item points (an S7ANY address), as its event's item says.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct S7Address {
    pub area: Option<u8>,
    pub db: Option<u16>,
    pub address: Option<u32>,
    pub bit: Option<u8>,
    pub transport_size: Option<u8>,
    pub length: Option<u32>,
}

impl S7Address {
    pub fn of(item: &crate::dissect::s7::S7Item) -> Self {
        S7Address {
            area: item.area,
            db: item.db,
            address: item.address,
            bit: item.bit,
            transport_size: item.transport_size,
            length: item.length,
        }
    }
}

impl<'a> S7ItemView<'a> {
    /// An event's item.
    pub fn of(item: &'a crate::dissect::s7::S7Item) -> Self {
        S7ItemView {
            addr: S7Address::of(item),
            dbread: &item.dbread,
            raw: item.syntax_id.zip(item.raw_address.as_deref()),
            return_code: item.return_code,
            bytes: item.value.as_ref().map_or(&[], |h| &h.0),
        }
    }
}

/// What an S7comm PDU's observation reads of its event object besides the items.
pub(crate) struct S7Head<'a> {
    pub rosctr: u8,
    pub pdu_ref: u16,
    pub function: Option<u8>,
    pub function_name: Option<&'static str>,
    pub error_class: Option<u8>,
    pub error: Option<&'static str>,
    pub userdata: Option<&'a crate::dissect::s7::S7Userdata>,
    pub pi_service: Option<&'a str>,
}

impl<'a> S7Head<'a> {
    /// An event's.
    pub fn of(s: &'a S7Event) -> Self {
        S7Head {
            rosctr: s.rosctr,
            pdu_ref: s.pdu_ref,
            function: s.function,
            function_name: s.function_name,
            error_class: s.error_class,
            error: s.error,
            userdata: s.userdata.as_ref(),
            pi_service: s.pi_service.as_deref(),
        }
    }
}

/// An S7comm PDU's observation from its event object (`s`, the head of it, and `items`), or
/// from the parser's records when the dissector builds the observation itself.
pub(crate) fn s7<'a>(
    s: &S7Head<'_>,
    mut items: impl Iterator<Item = S7ItemView<'a>>,
    o: &mut Observation,
) {
    o.corr = Some(u32::from(s.pdu_ref));
    o.malformed = s.error;
    match s.userdata {
        Some(u) => {
            o.function = 0x1000 | u32::from(u.group & 0xf) << 8 | u32::from(u.subfunction);
            o.function_name = u.subfunction_name;
            o.kind = match u.type_code {
                Some(UserdataType::REQUEST | UserdataType::NC_REQUEST) => Kind::Request,
                Some(UserdataType::PUSH | UserdataType::NC_PUSH) => Kind::Unsolicited,
                _ => Kind::Response,
            };
            o.exception = u.error_code.is_some_and(|e| e != 0);
            let request = o.kind == Kind::Request;
            // A replace job is the job it carries.
            let (group, sub) = (u.group & 0xf, u.job_subfunction.unwrap_or(u.subfunction));
            // Programmer commands that change the process (modify variable, force) or erase
            // the program (memory reset), and NC program transfers. Setting the clock is
            // routine (as IEC 104's clock synchronisation is): not a write.
            o.write =
                request && matches!((group, sub), (0x1, 0x08 | 0x09 | 0x0c) | (0xf, 0x01..=0x04));
            if request {
                o.command = match (group, sub) {
                    (0x1, 0x0c) | (0xf, 0x01..=0x04) => Some(Command::ProgramDownload),
                    (0xf, 0x06..=0x08) => Some(Command::ProgramUpload),
                    _ => None,
                };
                // Modify variable and force write the PLC's memory as write var jobs name it,
                // checked against the same learned ranges. Their values are taken for bits
                // and bytes only: a TIS address says word or double word, not INT, DINT or
                // REAL. (Variable status reads: an engineering station's table, not checked.)
                if group == 0x1 && matches!(sub, 0x08 | 0x09) {
                    o.accesses
                        .reserve(crate::dissect::s7::claimed_room(items.size_hint()));
                    for mut item in items {
                        if !matches!(item.addr.transport_size, Some(1 | 2)) {
                            item.bytes = &[];
                        }
                        s7_item(&item, true, o);
                    }
                }
            }
            return;
        }
        None => {
            o.function = u32::from(s.function.unwrap_or(0));
            o.function_name = s.function_name;
            o.kind = match s.rosctr {
                1 => Kind::Request,
                _ => Kind::Response,
            };
        }
    }
    let request = o.kind == Kind::Request;
    let f = s.function.unwrap_or(0);
    o.write = request && matches!(f, 0x05 | 0x1a..=0x1c | 0x28 | 0x29);
    if request {
        o.command = match f {
            0x29 => Some(Command::PlcStop),
            0x1a..=0x1c => Some(Command::ProgramDownload),
            0x1d..=0x1f => Some(Command::ProgramUpload),
            0x28 => match s.pi_service {
                Some("P_PROGRAM") => Some(Command::PlcStart),
                // Insert, delete, and copy RAM to ROM (the program kept as the PLC's own).
                Some("_INSE" | "_INS2" | "_DELE" | "_MODU") => Some(Command::ProgramDownload),
                _ => None,
            },
            _ => None,
        };
    }
    // A return code is a response's: the data items of a Write Var request carry a reserved
    // 0x00 in its place (Wireshark: "Reserved (0x00)"), which is no error.
    let failed = |i: &S7ItemView<'_>| !request && i.return_code.is_some_and(|r| r != 0xff);
    let header_error = s.error_class.is_some_and(|c| c != 0);
    let write = f == 0x05;
    // Accesses of reads and writes (an ack to a write has none: the job already told what was
    // written), built in the same pass that looks for a failed item; none if anything failed.
    let ack_to_write = !request && write;
    if matches!(f, 0x04 | 0x05) && !header_error && !ack_to_write {
        // Room for one access per item the PDU claims, at once; an item of several elements
        // reserves its own.
        o.accesses
            .reserve(crate::dissect::s7::claimed_room(items.size_hint()));
        let mut any_failed = false;
        for item in items {
            any_failed |= failed(&item);
            s7_item(&item, write, o);
        }
        o.exception = any_failed;
        if any_failed {
            // None of them (the room stays with the box, as `Observation::reset` bounds it).
            o.accesses.clear();
            o.values.clear();
            o.bytes.clear();
        }
    } else {
        o.exception = header_error || items.any(|i| failed(&i));
    }
}

/// The area of S7 addresses of another syntax than S7ANY (no S7ANY area has this code): their
/// space is `S7_RAW_AREA << 16 | syntax id`.
pub const S7_RAW_AREA: u32 = 0xff;

/// A stable number for a name or an address's bytes (32-bit FNV-1a): Logix tags and S7
/// addresses of other syntaxes are addressed by it.
pub(crate) fn fnv1a(bytes: &[u8]) -> u32 {
    fnv1a_of(bytes.iter().copied())
}

/// [`fnv1a`] of bytes as they come, with nothing collected.
fn fnv1a_of(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// One S7 item as accesses: bits by bit address (`byte * 8 + bit`), other transport sizes by
/// byte address, one access per element with its decoded value (BYTE/CHAR, WORD, INT, DWORD,
/// DINT, REAL); bytes read are one access for the run.
fn s7_item(item: &S7ItemView<'_>, write: bool, o: &mut Observation) {
    if !item.dbread.is_empty() {
        return dbread(item, o);
    }
    let (out, buf) = (&mut o.accesses, &mut o.values);
    let a = &item.addr;
    let (Some(area), Some(address)) = (a.area, a.address) else {
        // Another syntax's address: one address, its bytes' hash, in a space of its syntax,
        // so that a write to an address never written is one all the same.
        if let Some((syntax, raw)) = item.raw {
            out.push(Access {
                space: S7_RAW_AREA << 16 | u32::from(syntax),
                start: fnv1a(raw.as_bytes()),
                count: 1,
                write,
                values: ValuesAt::NONE,
            });
        }
        return;
    };
    let space = u32::from(area) << 16 | u32::from(a.db.unwrap_or(0));
    let bytes = item.bytes;
    let length = a.length.unwrap_or(1).max(1);
    let transport = a.transport_size.unwrap_or(2);
    if matches!(transport, 0x1c..=0x1f) {
        // Timers and counters are numbered: one address each, whatever their bytes (two, an
        // S5TIME or BCD count: no value learned).
        out.push(Access {
            space,
            start: address,
            count: length,
            write,
            values: ValuesAt::NONE,
        });
        return;
    }
    if transport == 1 {
        out.push(Access {
            space: space | S7_BIT_SPACE,
            start: address.saturating_mul(8) | u32::from(a.bit.unwrap_or(0) & 7),
            count: 1,
            write,
            values: ValuesAt::push(buf, bytes.first().map(|b| f64::from(b & 1))),
        });
        return;
    }
    let size: u32 = match transport {
        4 | 5 => 2,
        6..=8 => 4,
        _ => 1,
    };
    let decode = |c: &[u8]| -> f64 {
        match (transport, c) {
            (4, [a, b]) => f64::from(u16::from_be_bytes([*a, *b])),
            (5, [a, b]) => f64::from(i16::from_be_bytes([*a, *b])),
            (6, [a, b, c, d]) => f64::from(u32::from_be_bytes([*a, *b, *c, *d])),
            (7, [a, b, c, d]) => f64::from(i32::from_be_bytes([*a, *b, *c, *d])),
            (8, [a, b, c, d]) => f64::from(f32::from_be_bytes([*a, *b, *c, *d])),
            _ => c.first().map_or(0.0, |&b| f64::from(b)),
        }
    };
    // One access per decoded element (events carry at most the first 64 bytes of a value),
    // and one without values for the rest of the item's range.
    let total = length.saturating_mul(size);
    let mut covered: u32 = 0;
    if size == 1 && !bytes.is_empty() {
        // Bytes, read or written: one access for the run (a point per byte address all the
        // same). A write's run is checked as one range and counts as one new address for
        // scans: one write job, however many bytes it carries.
        covered = bytes.len() as u32;
        // Room for the rest of the range too (values shown are at most the first 64 bytes).
        out.reserve(1 + usize::from(total > covered));
        out.push(Access {
            space,
            start: address,
            count: covered,
            write,
            values: ValuesAt::push_bytes(&mut o.bytes, bytes),
        });
    } else {
        let elements = bytes.chunks_exact(size as usize);
        out.reserve(elements.len() + 1);
        buf.reserve(elements.len());
        for chunk in elements {
            let v = decode(chunk);
            out.push(Access {
                space,
                start: address.saturating_add(covered),
                count: size,
                write,
                // A REAL that is NaN or infinite is a value too (as the DNP3 floats above).
                values: ValuesAt::push(buf, [v]),
            });
            covered = covered.saturating_add(size);
        }
    }
    if total > covered {
        out.push(Access {
            space,
            start: address.saturating_add(covered),
            count: total - covered,
            write,
            values: ValuesAt::NONE,
        });
    }
}

/// A DBREAD item (read only): one access per area, a DB's bytes from its start address, with
/// the response's bytes shared out to the areas in order (as BYTE reads: one point per byte).
fn dbread(item: &S7ItemView<'_>, o: &mut Observation) {
    /// Area code of data blocks, as an S7ANY address of a DB gives it.
    const DB_AREA: u32 = 0x84;
    let mut bytes = item.bytes;
    for a in item.dbread {
        let count = u32::from(a.length).max(1);
        let (mine, rest) = bytes.split_at(bytes.len().min(usize::from(a.length)));
        bytes = rest;
        let values = ValuesAt::push_bytes(&mut o.bytes, mine);
        o.accesses.push(Access {
            space: DB_AREA << 16 | u32::from(a.db),
            start: u32::from(a.start),
            count,
            write: false,
            values,
        });
    }
}

/// Fills in an S7comm-plus PDU's observation, `o` being its header's
/// ([`crate::dissect::Ctx::observation`]); false (and `o` of no use) for what is not a message.
pub(crate) fn s7plus(p: &S7PlusEvent, o: &mut Observation) -> bool {
    if !p.is_message {
        return false;
    }
    o.kind = match p.opcode.map(PlusOpcode) {
        Some(PlusOpcode::REQUEST) => Kind::Request,
        Some(PlusOpcode::NOTIFICATION) => Kind::Unsolicited,
        _ => Kind::Response,
    };
    o.function = u32::from(p.function.unwrap_or(0));
    o.function_name = p.function_name;
    o.malformed = p.malformed;
    // An Explore (browsing the PLC's objects) is answered with a large response split over
    // many PDUs, which can pass the joining bound (256 KiB) or start before a capture does: it is
    // not awaited (no timeout, no latency), so that an answer not joined is no timeout.
    o.corr = if p.function == Some(PlusFunction::EXPLORE.0) {
        None
    } else {
        p.sequence.map(u32::from)
    };
    if p.session_life {
        // The session's creation, set-up and close: one function, no write.
        (o.function, o.function_name) = (S7PLUS_SESSION, Some("session"));
        return true;
    }
    let set = o.kind == Kind::Request && p.function.is_some_and(|f| PlusFunction(f).is_write());
    o.write = set;
    if o.kind != Kind::Request {
        // The values a GetMultiVariables response reads, by its request's variables: checked
        // against their envelopes (no range: a hashed address has no neighbourhood).
        for item in &p.items {
            if let (Some(space), Some(v)) = (variable_space(item), item.value) {
                o.push_access(space, variable_address(space, item), 1, false, [v]);
            }
        }
        return true;
    }
    if p.cpu_state_request {
        // The CPU's operating state asked for: run (3, or 4 redundant) is a start; stop (1),
        // a reset of the retentive data (2, in stop), and any other value or one that does not
        // decode (the PLC refuses it, but it was an attempt) are a stop. A command, as
        // S7comm's PLC stop: a write; whatever else the request sets is checked as below.
        o.command = Some(match p.requested_state {
            Some(3 | 4) => Command::PlcStart,
            _ => Command::PlcStop,
        });
    }
    // The state request itself is the command, not an object's attribute written.
    let state_request = |area: u32, first: Option<&u32>| {
        p.cpu_state_request && area == CPU_EXEC_UNIT && first == Some(&OPERATING_STATE_REQ)
    };
    // PLC variables written (SetMultiVariables of object id 0): an access each, in the space of
    // its area (DB n, I, Q, M, C, T, as S7comm's), addressed by its LIDs, with the value written
    // when it is one number; the attributes set of an object not the connection's session are
    // accesses of the `objects` space. A read's addresses are not checked (its values are, on
    // its response): a hashed address has no neighbourhood, and an HMI opening a screen reads
    // variables it never read before.
    let subscription = |attributes: &[u32]| {
        !attributes.is_empty() && attributes.iter().all(|a| SUBSCRIPTION.contains(a))
    };
    for item in p
        .items
        .iter()
        .filter(|i| set && !state_request(i.access_area, i.lids.first()))
    {
        let space = match variable_space(item) {
            Some(space) => space,
            None => match item.own_object {
                Some("session") => continue,
                Some(_) if subscription(&item.lids[..item.lids.len().min(1)]) => continue,
                _ => S7PLUS_OBJECTS << 16,
            },
        };
        o.push_access(space, variable_address(space, item), 1, true, item.value);
    }
    if let Some(id) = p.object_id {
        // Housekeeping, no write to the plant: setting up, changing or closing the session;
        // deleting an object the PLC created for this connection, or changing a subscription's
        // settings (attributes 1048-1053) on one; on a connection picked up after its start
        // (nothing created seen), a subscription's settings on any object. Anything the
        // request names that did not decode (a SetVariable's attributes after the first) is
        // not housekeeping.
        let delete = p.function == Some(PlusFunction::DELETE_OBJECT.0);
        let settings = || subscription(&p.attributes);
        let housekeeping = p.error.is_none()
            && match p.own_object {
                Some("session") => true,
                Some(_) => delete || settings(),
                None => p.nothing_created && settings(),
            };
        if housekeeping {
            o.write = false;
        } else if set {
            let attributes: &[u32] = if p.attributes.is_empty() {
                &[0]
            } else {
                &p.attributes
            };
            for a in attributes.iter().filter(|a| !state_request(id, Some(a))) {
                let key = [id.to_be_bytes(), a.to_be_bytes()].concat();
                o.accesses.push(Access {
                    space: S7PLUS_OBJECTS << 16,
                    start: fnv1a(&key),
                    count: 1,
                    write: true,
                    values: Default::default(),
                });
            }
        }
    } else if !p.items.is_empty() && p.error.is_none() {
        // Variables only: a write if it wrote anything not the connection's own (or the
        // state request).
        o.write = set && (!o.accesses.is_empty() || p.cpu_state_request);
    }
    true
}

/// The S7 space of an S7comm-plus item's PLC variable (DB n, I, Q, M, C, T, as S7comm's);
/// `None` for an object's attribute.
fn variable_space(item: &S7PlusItem) -> Option<u32> {
    Some(match item.area {
        "DB" => 0x84 << 16 | u32::from(item.db.unwrap_or(0)),
        "I" => 0x81 << 16,
        "Q" => 0x82 << 16,
        "M" => 0x83 << 16,
        "C" => 0x1c << 16,
        "T" => 0x1d << 16,
        _ => return None,
    })
}

/// An S7comm-plus item's address in its space: the FNV-1a hash of its LIDs (an object's
/// attribute: of the object id and its LIDs).
fn variable_address(space: u32, item: &S7PlusItem) -> u32 {
    let object = (space == S7PLUS_OBJECTS << 16).then(|| item.access_area.to_be_bytes());
    let lids = item.lids.iter().flat_map(|l| l.to_be_bytes());
    fnv1a_of(object.into_iter().flatten().chain(lids))
}

/// The function of an S7comm-plus session's own life (creation, set-up, close).
pub use otwatch_models::obs::S7PLUS_SESSION;

/// The S7 area code of the S7comm-plus `objects` space: attributes of the PLC's objects that a
/// request sets or deletes, each addressed by the FNV-1a hash of the object id and attribute.
pub const S7PLUS_OBJECTS: u32 = 0xfe;

/// S7comm-plus attributes of subscriptions (the plugin's `id_number_names`): the set of
/// addresses (1048), the update rate (1049), unsubscribe (1051) and the number of updates
/// sent unasked (1053), which an HMI sets again and again on its own subscription.
const SUBSCRIPTION: [u32; 4] = [1048, 1049, 1051, 1053];
