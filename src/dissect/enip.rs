//! EtherNet/IP flow state: encapsulation messages over TCP 44818 (and in UDP datagrams on
//! 44818), the CIP messages they carry (unconnected in SendRRData, connected in SendUnitData),
//! the embedded services of Multiple Service Packet and Unconnected Send, ListIdentity's
//! Identity, Forward Open's connection, and connected I/O on UDP 2222.
//!
//! A flow is ENIP only once a message framed with a known command and zero options: TLS or
//! anything else on 44818 gives no events (its bytes are counted as skipped, the flow as
//! unidentified). Encapsulation has no start marker, so after a gap or a bad header the flow
//! waits for data that frames at its first byte again.
//!
//! A response names no path: the request's class, instance, attribute and tag are carried over,
//! matched by the sender context (SendRRData) or the connection's sequence count (SendUnitData),
//! from a bounded table per flow.

use std::collections::VecDeque;
use std::net::IpAddr;

use otwatch_parsers::enip::{
    self, parse_cip, Cip, Command, Epath, Framed, ItemType, Segment, Service,
};
use serde::Serialize;

use super::{Ctx, Dir};
use crate::dissect::registry::ENIP;

pub const DEFAULT_PORT: u16 = enip::PORT;
/// The most bytes the dissector may leave unconsumed: one partial message.
pub const MAX_BUFFERED: usize = enip::MAX_MESSAGE_LEN;
/// Requests remembered per flow for their responses.
pub const MAX_PENDING: usize = 64;
/// Embedded services listed per event.
pub const MAX_ITEMS: usize = 64;

/// The `enip` object of an event (docs/events.md).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EnipEvent {
    /// Encapsulation command (absent for connected I/O on UDP 2222).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cip: Option<CipEvent>,
    /// The device's Identity object, from a ListIdentity reply, or a Get_Attributes_All or
    /// Get_Attribute_List reply of the Identity object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityEvent>,
    /// Connected I/O (UDP 2222): the connection id and sequence number of the packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<IoEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// What ties a reply to its request for detection (the sender context of SendRRData, the
    /// connection's sequence count of SendUnitData), folded to 32 bits: response timeouts and
    /// latencies. Not in the event (its JSON is unchanged).
    #[serde(skip)]
    pub corr: Option<u32>,
}

/// A CIP message.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CipEvent {
    /// The service code without the response bit.
    pub service: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<&'static str>,
    pub response: bool,
    /// Responses: the general status (0 success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<u32>,
    /// A symbolic path: a tag name, its segments joined with `.`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Unconnected Send: the route to the target (port/link pairs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Forward Open: the connection it asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionEvent>,
    /// Multiple Service Packet's services, or Unconnected Send's embedded request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<CipEvent>>,
    /// Embedded messages past what `items` lists (beyond [`MAX_ITEMS`] in all, or nested
    /// deeper than events show), flattened and without values: for detection only, so that a
    /// Stop or a write behind 64 harmless services is still seen. Not in events.
    #[serde(skip)]
    pub hidden: Vec<CipEvent>,
    /// The values of atomic Logix types a Write Tag request writes or a Read Tag reply of a
    /// tag reads (the first [`MAX_TAG_VALUES`]), from the element the path names on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// A Forward Open's connection: in the request, the ids proposed and the intervals asked for
/// (RPI); in its successful reply, the ids in use and the intervals agreed (API).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ConnectionEvent {
    pub o_t_id: u32,
    pub t_o_id: u32,
    pub o_t_rpi_ms: f64,
    pub t_o_rpi_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IdentityEvent {
    pub vendor: u16,
    pub device_type: u16,
    pub product_code: u16,
    pub revision: String,
    pub serial: u32,
    pub product_name: String,
    /// The reply came through an Unconnected Send or a connection: the identity of the module
    /// at the route's end, which need not be the device that owns the IP address. Not put on
    /// the asset.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub routed: bool,
}

fn identity_event(id: &enip::Identity<'_>) -> IdentityEvent {
    IdentityEvent {
        vendor: id.vendor,
        device_type: id.device_type,
        product_code: id.product_code,
        revision: format!("{}.{}", id.revision.0, id.revision.1),
        serial: id.serial,
        product_name: String::from_utf8_lossy(id.product_name).into_owned(),
        routed: false,
    }
}

impl IdentityEvent {
    /// One line for the asset: the product name, then the numbers that identify the product.
    pub fn describe(&self) -> String {
        format!(
            "{} (vendor {}, device type {}, product code {}, revision {}, serial {:#010x})",
            self.product_name.trim(),
            self.vendor,
            self.device_type,
            self.product_code,
            self.revision,
            self.serial
        )
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IoEvent {
    pub connection_id: u32,
    pub sequence: u32,
    pub length: usize,
    /// The interval (ms) the connection's Forward Open reply agreed for this direction (its
    /// API), when this pipeline saw that reply between the same two hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_ms: Option<f64>,
}

/// Connections whose Forward Open reply was seen: (producer, consumer, connection id) to the
/// interval agreed, in ms. At most [`MAX_CONNECTIONS`], the oldest forgotten first.
#[derive(Debug, Default)]
pub struct Connections {
    api_ms: std::collections::HashMap<(IpAddr, IpAddr, u32), f64, foldhash::fast::RandomState>,
    order: VecDeque<(IpAddr, IpAddr, u32)>,
}

/// Connections remembered per pipeline.
pub const MAX_CONNECTIONS: usize = 4096;

impl Connections {
    fn insert(&mut self, producer: IpAddr, consumer: IpAddr, id: u32, api_ms: f64) {
        let key = (producer, consumer, id);
        if self.api_ms.insert(key, api_ms).is_none() {
            self.order.push_back(key);
            if self.order.len() > MAX_CONNECTIONS {
                if let Some(old) = self.order.pop_front() {
                    self.api_ms.remove(&old);
                }
            }
        }
    }

    /// The interval agreed for packets from `producer` to `consumer` on connection `id`.
    pub fn api_ms(&self, producer: IpAddr, consumer: IpAddr, id: u32) -> Option<f64> {
        self.api_ms.get(&(producer, consumer, id)).copied()
    }

    /// A Forward Open reply between `originator` and `target`: its O->T connection is produced
    /// by the originator, its T->O connection by the target.
    fn opened(&mut self, originator: IpAddr, target: IpAddr, c: &ConnectionEvent) {
        self.insert(originator, target, c.o_t_id, c.o_t_rpi_ms);
        self.insert(target, originator, c.t_o_id, c.t_o_rpi_ms);
    }
}

/// What a request said, for its response.
#[derive(Debug, Clone)]
struct Pending {
    key: u64,
    path: PathOf,
    /// The embedded requests' paths, one level down.
    items: Option<Vec<PathOf>>,
}

/// What a pending request keeps of a message: its service and path (a whole `CipEvent`
/// cloned per embedded request, and dropped, cost more than the rest of its reading).
#[derive(Debug, Clone)]
struct PathOf {
    service: u8,
    class: Option<u32>,
    instance: Option<u32>,
    attribute: Option<u32>,
    member: Option<u32>,
    tag: Option<String>,
}

impl PathOf {
    fn of(c: &CipEvent) -> PathOf {
        PathOf {
            service: c.service,
            class: c.class,
            instance: c.instance,
            attribute: c.attribute,
            member: c.member,
            tag: c.tag.clone(),
        }
    }

    /// The request's path on its reply, whose service is then named by it.
    fn put_on(self, c: &mut CipEvent) {
        c.class = self.class;
        c.instance = self.instance;
        c.attribute = self.attribute;
        c.member = self.member;
        c.tag = self.tag;
        c.service_name = name_of(c.service, c.class, c.tag.is_some());
    }
}

/// A request's embedded messages as a pending entry keeps them: their paths, not their own
/// embedded messages (bounded memory).
fn summaries(items: &Option<Vec<CipEvent>>) -> Option<Vec<PathOf>> {
    items.as_ref().map(|v| v.iter().map(PathOf::of).collect())
}

#[derive(Debug, Default)]
pub struct EnipFlow {
    confirmed: bool,
    /// Per direction: the next bytes must frame at their first byte before they are trusted.
    /// Set after a gap, and from the start of a stream picked up mid-stream (no handshake seen:
    /// it may start anywhere in a message, and zeros or a chance header must not lock it onto
    /// garbage). A stream whose SYN was seen starts at a message.
    resync: [bool; 2],
    pending: VecDeque<Pending>,
}

fn name_of(service: u8, class: Option<u32>, symbolic: bool) -> Option<&'static str> {
    let s = Service(service);
    match class {
        Some(6) => s.connection_manager_name().or(s.name()),
        Some(0x6b) => s.logix_name().or(s.name()),
        _ if symbolic => s.logix_name().or(s.name()),
        _ => s.name(),
    }
}

/// Values kept per message, for events and detection.
pub const MAX_TAG_VALUES: usize = 64;

/// A reply's values stay only where it answers a read of a tag (here and in its items).
fn tagged_values(c: &mut CipEvent) {
    if c.response && c.tag.is_none() && c.class != Some(TAG_SPACE) {
        c.values = None;
    }
    for i in c.items.iter_mut().flatten() {
        tagged_values(i);
    }
}

/// What walking a message's embedded messages may still list in the event (`items`) and
/// keep for detection beyond that (`hidden`).
struct Budget {
    items: usize,
    hidden: usize,
}

/// Embedded messages kept for detection past what the event lists, per PDU in all: beyond it,
/// or nested deeper than [`HIDDEN_DEPTH`], the message is malformed (`too_many_items`,
/// `too_deep`). A 64 KiB message holds at most about 16 000 embedded messages.
pub const MAX_HIDDEN: usize = 16_384;

/// Levels of embedding walked for detection past the two the event lists (ten below the
/// message in all): no real device nests Multiple Service Packets and Unconnected Sends this
/// deep.
pub const HIDDEN_DEPTH: u8 = 8;

/// A message's embedded messages: Multiple Service Packet's services (requests and replies) and
/// an Unconnected Send request's message, with its route path. `Err` names what is malformed
/// (with the messages still found: an Unconnected Send whose route does not parse still
/// carries its request, as a target that ignores the route would run it).
type Embedded<'a> = (Vec<&'a [u8]>, Option<Epath<'a>>);

fn embedded<'a>(
    m: &Cip<'a>,
    class: Option<u32>,
) -> Result<Embedded<'a>, (&'static str, Embedded<'a>)> {
    if m.service == Service::MULTIPLE_SERVICE_PACKET && !m.data.is_empty() {
        // (An error reply carries no embedded replies.)
        return enip::multiple_service(m.data)
            .map(|parts| (parts, None))
            .ok_or(("embedded_length", (Vec::new(), None)));
    }
    if !m.response && m.service == Service::UNCONNECTED_SEND && class == Some(6) {
        return match enip::unconnected_send(m.data) {
            Some((inner, route)) => Ok((vec![inner], Some(route))),
            None => Err((
                "unconnected_send",
                (
                    enip::unconnected_send_message(m.data).into_iter().collect(),
                    None,
                ),
            )),
        };
    }
    Ok((Vec::new(), None))
}

/// The event of a message that failed to parse inside another.
fn unparsed(body: &[u8], err: enip::CipError) -> CipEvent {
    CipEvent {
        service: body.first().map_or(0, |b| b & 0x7f),
        response: body.first().is_some_and(|b| b & 0x80 != 0),
        error: Some(err.reason()),
        ..Default::default()
    }
}

/// Embedded messages past what the event lists go to `out`, flattened and without values:
/// what detection needs of them (their services, classes and tags: a Stop or a write behind
/// 64 harmless services is still seen). Returns what is malformed among them.
fn hidden_messages(
    parts: &[&[u8]],
    levels: u8,
    budget: &mut Budget,
    out: &mut Vec<CipEvent>,
    seen: &mut HiddenSeen,
) -> Option<&'static str> {
    let mut err = None;
    // Kept when detection reads it, once (thousands of the same write in one packet are one
    // write for detection); the others are only walked.
    let keep = |e: CipEvent, out: &mut Vec<CipEvent>, seen: &mut HiddenSeen| {
        if !matters(&e) {
            return;
        }
        let key = (
            e.service,
            e.response,
            e.class,
            e.instance,
            e.attribute,
            e.member,
            e.tag.clone(),
            e.error,
        );
        if seen.insert(key) {
            out.push(e);
        }
    };
    for p in parts {
        if budget.hidden == 0 {
            return Some("too_many_items");
        }
        budget.hidden -= 1;
        let inner = match parse_cip(p) {
            Ok(inner) => inner,
            Err(e) => {
                keep(unparsed(p, e), out, seen);
                continue;
            }
        };
        let mut e = cip_event(
            &inner,
            0,
            &mut Budget {
                items: 0,
                hidden: 0,
            },
        );
        e.values = None;
        let nested = match embedded(&inner, e.class) {
            Ok((nested, _)) => nested,
            Err((x, (nested, _))) => {
                err = err.or(Some(x));
                nested
            }
        };
        keep(e, out, seen);
        if !nested.is_empty() {
            if levels == 0 {
                err = err.or(Some("too_deep"));
            } else {
                err = err.or(hidden_messages(&nested, levels - 1, budget, out, seen));
            }
        }
    }
    err
}

/// The event of one CIP message, its embedded messages too (listed to `depth`, and at most
/// [`MAX_ITEMS`] embedded messages in all: `budget.items`; those past that are kept for
/// detection only, in `hidden`).
fn cip_event(m: &Cip<'_>, depth: u8, budget: &mut Budget) -> CipEvent {
    let mut e = CipEvent {
        service: m.service.0,
        response: m.response,
        status: m.general_status,
        ..Default::default()
    };
    if let Some(p) = &m.path {
        // The tag: the symbolic segments joined with `.` (`Program:Main.Counter`).
        let mut tag: Option<String> = None;
        let l = p.logical(|part| {
            let text = String::from_utf8_lossy(part);
            match &mut tag {
                Some(t) => {
                    t.push('.');
                    t.push_str(&text);
                }
                None => tag = Some(text.into_owned()),
            }
        });
        (e.class, e.instance, e.attribute, e.member) = (l.class, l.instance, l.attribute, l.member);
        e.tag = tag;
    }
    e.service_name = name_of(e.service, e.class, e.tag.is_some());
    // Tag values: a Write Tag request's; a Read Tag reply's (kept once the reply is known to
    // answer a read of a tag: `tagged_values`).
    let values = match (m.response, m.service.0) {
        (false, 0x4d) if e.tag.is_some() || e.class == Some(TAG_SPACE) => {
            enip::write_tag_values(m.data)
        }
        (true, 0x4c) if m.general_status == Some(0) => enip::read_tag_values(m.data),
        _ => None,
    };
    e.values = values.map(|v| v.iter().take(MAX_TAG_VALUES).collect());
    if budget.hidden == 0 && budget.items == 0 {
        // A message kept for detection only ([`hidden_messages`] walks its embedded ones).
        return e;
    }
    let (parts, route) = match embedded(m, e.class) {
        Ok(found) => found,
        Err((err, found)) => {
            e.error = Some(err);
            found
        }
    };
    if let Some(route) = route {
        e.route = Some(route_text(&route));
    }
    if !parts.is_empty() {
        let mut items = Vec::with_capacity(parts.len().min(budget.items));
        let mut rest: &[&[u8]] = &[];
        if depth == 0 {
            rest = &parts;
        } else {
            for (i, p) in parts.iter().enumerate() {
                if budget.items == 0 {
                    rest = &parts[i..];
                    break;
                }
                budget.items -= 1;
                items.push(match parse_cip(p) {
                    Ok(inner) => cip_event(&inner, depth - 1, budget),
                    Err(err) => unparsed(p, err),
                });
            }
            e.items = Some(items);
        }
        if !rest.is_empty() {
            let mut hidden = Vec::new();
            // The levels past those the event lists, the first of them being `rest`.
            let mut seen = HiddenSeen::default();
            let err = hidden_messages(rest, HIDDEN_DEPTH - 1, budget, &mut hidden, &mut seen);
            e.error = e.error.or(err);
            e.hidden = hidden;
        }
    }
    if !m.response
        && e.class == Some(6)
        && matches!(
            m.service,
            Service::FORWARD_OPEN | Service::LARGE_FORWARD_OPEN
        )
    {
        if let Some(f) = enip::parse_forward_open(m.data, m.service == Service::LARGE_FORWARD_OPEN)
        {
            e.connection = Some(ConnectionEvent {
                o_t_id: f.o_t_connection_id,
                t_o_id: f.t_o_connection_id,
                o_t_rpi_ms: f64::from(f.o_t_rpi_us) / 1000.0,
                t_o_rpi_ms: f64::from(f.t_o_rpi_us) / 1000.0,
            });
        }
    }
    e
}

/// An Unconnected Send's route as events show it: its port segments as `port/link`, the
/// link address's bytes in decimal joined with `.`, the segments joined with `,`
/// (`1/0,2/10.0.0.5`). Written into one string: a string per byte and per segment, joined,
/// cost about 1 200 instructions a message (8% of detection's instructions on the EtherNet/IP
/// scenario's steady hour, whose requests all go through an Unconnected Send).
fn route_text(route: &Epath<'_>) -> String {
    let mut text = String::new();
    for segment in route.segments() {
        if let Segment::Port { port, link } = segment {
            if !text.is_empty() {
                text.push(',');
            }
            push_decimal(&mut text, u32::from(port));
            text.push('/');
            for (i, b) in link.iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                push_decimal(&mut text, u32::from(*b));
            }
        }
    }
    text
}

/// `n` in decimal at the end of `text`.
fn push_decimal(text: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        text.push(char::from(d));
    }
}

/// What a successful reply says once its request is known (`c` has the request's path): who
/// the device is (Get_Attributes_All or Get_Attribute_List of the Identity object's instance
/// 1), or the connection a Forward Open opened (the ids in use, the intervals agreed).
fn replied(c: &mut CipEvent, ev: &mut EnipEvent, data: &[u8], routed: bool) {
    match (c.class, c.service) {
        (Some(1), 0x01 | 0x03) if c.instance == Some(1) => {
            let id = if c.service == 0x01 {
                enip::parse_identity_attributes(data)
            } else {
                enip::parse_identity_attribute_list(data)
            };
            ev.identity = id.map(|id| IdentityEvent {
                routed,
                ..identity_event(&id)
            });
        }
        (Some(6), 0x54 | 0x5b) => {
            if let Some(f) = enip::parse_forward_open_reply(data) {
                c.connection = Some(ConnectionEvent {
                    o_t_id: f.o_t_connection_id,
                    t_o_id: f.t_o_connection_id,
                    o_t_rpi_ms: f64::from(f.o_t_api_us) / 1000.0,
                    t_o_rpi_ms: f64::from(f.t_o_api_us) / 1000.0,
                });
            }
        }
        _ => {}
    }
}

/// A message good enough to resynchronise on: not a NOP, and send-data with a CPF that parses.
fn plausible(e: &enip::Encap<'_>) -> bool {
    match e.command {
        Command::NOP => false,
        Command::SEND_RR_DATA | Command::SEND_UNIT_DATA => enip::parse_send_data(e.data).is_ok(),
        _ => true,
    }
}

impl super::Dissector for EnipFlow {
    fn on_stream_data(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) -> usize {
        let d = dir.index();
        let mut off = 0;
        while off < data.len() {
            let rest = &data[off..];
            match enip::parse_encap(rest) {
                Framed::Complete { encap, consumed } => {
                    if self.resync[d] && !plausible(&encap) {
                        // Resynchronising: zeros frame as NOPs, and a header by chance as
                        // anything; wait for a message that says more.
                        ctx.stats[ENIP].resync_skipped_bytes += rest.len() as u64;
                        return data.len();
                    }
                    self.resync[d] = false;
                    self.confirmed = true;
                    self.on_message(ctx, dir, &encap);
                    off += consumed;
                }
                Framed::Incomplete { .. } => break,
                Framed::Invalid(err) if self.confirmed && !self.resync[d] => {
                    // In step with a flow known to be ENIP: a message with an unknown command
                    // or options is reported and stepped over by its length, as a target
                    // does, so that what follows it is still seen.
                    let Some(n) = enip::declared_len(rest) else {
                        self.resync[d] = true;
                        ctx.stats[ENIP].count_error(err.reason());
                        ctx.stats[ENIP].resync_skipped_bytes += rest.len() as u64;
                        return data.len();
                    };
                    if n > rest.len() {
                        break;
                    }
                    ctx.stats[ENIP].count_error(err.reason());
                    if ctx.sink.wants_events() {
                        let command = rest.get(..2).map(|c| u16::from_le_bytes([c[0], c[1]]));
                        emit(
                            ctx,
                            dir,
                            EnipEvent {
                                command,
                                error: Some(err.reason()),
                                ..Default::default()
                            },
                        );
                    }
                    off += n;
                }
                Framed::Invalid(_) => {
                    // Not in step (or not yet ENIP), and no start marker to look for: drop what
                    // is here and wait for data that frames at its first byte.
                    self.resync[d] = true;
                    ctx.stats[ENIP].resync_skipped_bytes += rest.len() as u64;
                    return data.len();
                }
            }
        }
        off
    }

    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) {
        // Encapsulation when either end is 44818; connected I/O otherwise (both ends of an I/O
        // flow are often 2222).
        if ctx.endpoints.server.1 != enip::PORT && ctx.endpoints.client.1 != enip::PORT {
            self.on_io(ctx, dir, data);
            return;
        }
        if let Framed::Complete { encap, .. } = enip::parse_encap(data) {
            self.confirmed = true;
            self.on_message(ctx, dir, &encap);
        }
    }

    fn on_gap(&mut self, _ctx: &mut Ctx<'_>, dir: Dir) {
        self.resync[dir.index()] = true;
    }

    fn on_midstream(&mut self, dir: Dir) {
        self.resync[dir.index()] = true;
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>) {
        if !self.confirmed {
            ctx.stats[ENIP].unidentified_flows += 1;
        }
    }
}

impl EnipFlow {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, dir: Dir, encap: &enip::Encap<'_>) {
        let mut ev = EnipEvent {
            command: Some(encap.command.0),
            command_name: encap.command.name(),
            session: Some(encap.session),
            status: Some(encap.status),
            ..Default::default()
        };
        let request = dir == Dir::ToServer;
        // An unconnected request and its reply share the sender context, an error reply
        // without data too (a bad session handle after a restart): it answers its request.
        if encap.command == Command::SEND_RR_DATA {
            let key = u64::from_le_bytes(encap.context);
            ev.corr = Some((key ^ key >> 32) as u32);
        }
        if encap.status != 0 {
            // An encapsulation error reply (bad session, unsupported command): an exception,
            // whatever it carries.
            ctx.stats[ENIP].exceptions += 1;
        }
        match encap.command {
            Command::SEND_RR_DATA | Command::SEND_UNIT_DATA
                if encap.status == 0 || !encap.data.is_empty() =>
            {
                match enip::parse_send_data(encap.data) {
                    Ok((_, _, cpf)) if !ctx.sink.wants_events() => count_messages(ctx, &cpf),
                    Ok((_, _, cpf)) => {
                        let mut seq = None;
                        for item in cpf.items() {
                            let body = match item.kind {
                                ItemType::UNCONNECTED_DATA => item.data,
                                ItemType::CONNECTED_DATA => {
                                    seq = item
                                        .data
                                        .get(..2)
                                        .map(|s| u16::from_le_bytes([s[0], s[1]]));
                                    item.data.get(2..).unwrap_or(&[])
                                }
                                _ => continue,
                            };
                            if body.is_empty() {
                                continue;
                            }
                            let key = match seq {
                                Some(s) => 1 << 32 | u64::from(s),
                                None => u64::from_le_bytes(encap.context),
                            };
                            ev.corr = Some((key ^ key >> 32) as u32);
                            let c = match parse_cip(body) {
                                Ok(m) => {
                                    count_message(ctx, &m);
                                    let mut budget = Budget {
                                        items: MAX_ITEMS,
                                        hidden: MAX_HIDDEN,
                                    };
                                    let mut c = cip_event(&m, 2, &mut budget);
                                    // Through an Unconnected Send's route or a connection's
                                    // path, the reply may come from a module behind the
                                    // device (a backplane slot).
                                    let routed =
                                        self.match_request(&mut c, key, request) || seq.is_some();
                                    tagged_values(&mut c);
                                    if c.response && c.status == Some(0) {
                                        replied(&mut c, &mut ev, m.data, routed);
                                        if let Some(k) = &c.connection {
                                            let (o, t) =
                                                (ctx.endpoints.client.0, ctx.endpoints.server.0);
                                            ctx.shared.enip.opened(o, t, k);
                                        }
                                    }
                                    c
                                }
                                Err(e) => {
                                    ctx.stats[ENIP].count_error(e.reason());
                                    unparsed(body, e)
                                }
                            };
                            ev.cip = Some(match ev.cip.take() {
                                None => c,
                                Some(earlier) => {
                                    // A second data item (a CPF carries one): not what a
                                    // client sends. The event shows the last, detection sees
                                    // them all.
                                    ctx.stats[ENIP].count_error("several_data_items");
                                    let mut c = c;
                                    c.error = c.error.or(Some("several_data_items"));
                                    let mut all = Vec::new();
                                    all_messages(&earlier, &mut all);
                                    let flat = all.into_iter().map(|m| CipEvent {
                                        items: None,
                                        hidden: Vec::new(),
                                        ..m.clone()
                                    });
                                    c.hidden.extend(flat.collect::<Vec<_>>());
                                    c
                                }
                            });
                        }
                    }
                    Err(e) => {
                        ctx.stats[ENIP].count_error(e.reason());
                        ev.error = Some(e.reason());
                    }
                }
            }
            Command::LIST_IDENTITY if !encap.data.is_empty() => {
                ctx.stats[ENIP].count("list_identity");
                if let Ok(cpf) = enip::parse_cpf(encap.data) {
                    for item in cpf.items().filter(|i| i.kind == ItemType::IDENTITY) {
                        if let Some(id) = enip::parse_identity(item.data) {
                            ev.identity = Some(identity_event(&id));
                        }
                    }
                }
            }
            c => ctx.stats[ENIP].count(c.name().unwrap_or("other_command")),
        }
        if ctx.sink.wants_events() {
            emit(ctx, dir, ev);
        }
    }

    /// A request is remembered; a response takes its path (and its items' paths) from it.
    /// Returns whether the response answers an Unconnected Send (a routed request).
    fn match_request(&mut self, c: &mut CipEvent, key: u64, request: bool) -> bool {
        // Only a message with the response bit answers a request (an adapter that answers
        // without it sends, as far as CIP goes, a request of its own).
        if !c.response {
            if !request {
                return false;
            }
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
            }
            self.pending.push_back(Pending {
                key,
                path: PathOf::of(c),
                items: summaries(&c.items),
            });
            return false;
        }
        // An Unconnected Send's reply is its embedded request's reply.
        let unconnected = |p: &Pending| {
            p.path.service == 0x52
                && p.path.class == Some(6)
                && p.items
                    .as_ref()
                    .and_then(|v| v.first())
                    .is_some_and(|i| i.service == c.service)
        };
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.key == key && (p.path.service == c.service || unconnected(p)))
        else {
            return false;
        };
        let Some(p) = self.pending.remove(i) else {
            return false;
        };
        // Older requests with the same key were never answered: they cannot be any more.
        let mut k = 0;
        self.pending.retain(|q| {
            k += 1;
            k > i || q.key != key
        });
        let routed = unconnected(&p);
        let Pending {
            mut path, items, ..
        } = p;
        let items = if routed {
            if let Some(inner) = items.and_then(|v| v.into_iter().next()) {
                path = inner;
            }
            None
        } else {
            items
        };
        path.put_on(c);
        if let (Some(replies), Some(requests)) = (&mut c.items, items) {
            for (r, q) in replies.iter_mut().zip(requests) {
                if r.service == q.service {
                    q.put_on(r);
                }
            }
        }
        routed
    }

    /// Connected I/O on UDP 2222: a CPF of a sequenced address item and connected data.
    fn on_io(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) {
        let Ok(cpf) = enip::parse_cpf(data) else {
            ctx.stats[ENIP].count_error("io_cpf");
            if ctx.sink.wants_events() {
                let error = Some("io_cpf");
                emit(
                    ctx,
                    dir,
                    EnipEvent {
                        error,
                        ..Default::default()
                    },
                );
            }
            return;
        };
        self.confirmed = true;
        ctx.stats[ENIP].count("io_packets");
        let mut io = IoEvent::default();
        for item in cpf.items() {
            match item.kind {
                ItemType::SEQUENCED_ADDRESS if item.data.len() >= 8 => {
                    let d = item.data;
                    io.connection_id = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
                    io.sequence = u32::from_le_bytes([d[4], d[5], d[6], d[7]]);
                }
                ItemType::CONNECTED_DATA => io.length = item.data.len(),
                _ => {}
            }
        }
        let (client, server) = (ctx.endpoints.client.0, ctx.endpoints.server.0);
        let (from, to) = match dir {
            Dir::ToServer => (client, server),
            Dir::ToClient => (server, client),
        };
        io.api_ms = ctx.shared.enip.api_ms(from, to, io.connection_id);
        if ctx.sink.wants_events() {
            let io = Some(io);
            emit(
                ctx,
                dir,
                EnipEvent {
                    io,
                    ..Default::default()
                },
            );
        }
    }
}

/// A PDU's record to the sink ([`Ctx::emit_record`]): with detection and no events output,
/// its observation straight from the record, as Modbus, S7 and DNP3 build theirs.
fn emit(ctx: &mut Ctx<'_>, dir: Dir, p: EnipEvent) {
    let fill = |p: &EnipEvent, o: &mut otwatch_models::Observation| {
        // A routed reply's identity is a module's behind the device: not the asset's.
        o.identity = p
            .identity
            .as_ref()
            .filter(|i| !i.routed)
            .map(|i| i.describe());
        observe_into(p, dir == Dir::ToServer, o)
    };
    let what = (otwatch_models::Proto::Enip, "enip");
    ctx.emit_record(dir, what, p, fill, crate::event::Pdu::Enip);
}

/// A CIP message's counts: its service, and an exception where its status is one.
fn count_message(ctx: &mut Ctx<'_>, m: &Cip<'_>) {
    ctx.stats[ENIP].count_pdu(m.service.0);
    // 0x06 (partial transfer) is how fragmented reads go.
    if m.general_status.is_some_and(|s| s != 0 && s != 0x06) {
        ctx.stats[ENIP].exceptions += 1;
    }
}

/// The counts of a send-data message's CIP messages when nobody reads its record (no events,
/// no detection): what [`EnipFlow::on_message`] counts of them, without making their events.
/// The walk of embedded messages, the tag values and the matching of replies to requests feed
/// only the records, and are skipped.
fn count_messages(ctx: &mut Ctx<'_>, cpf: &enip::Cpf<'_>) {
    let mut items = 0;
    for item in cpf.items() {
        let body = match item.kind {
            ItemType::UNCONNECTED_DATA => item.data,
            ItemType::CONNECTED_DATA => item.data.get(2..).unwrap_or(&[]),
            _ => continue,
        };
        if body.is_empty() {
            continue;
        }
        match parse_cip(body) {
            Ok(m) => count_message(ctx, &m),
            Err(e) => ctx.stats[ENIP].count_error(e.reason()),
        }
        items += 1;
        if items > 1 {
            ctx.stats[ENIP].count_error("several_data_items");
        }
    }
}

/// A message that writes: Set_Attribute_Single/All/List, Create, Delete, Set_Member, and the
/// Logix tag writes.
fn writes(e: &CipEvent) -> bool {
    let tagged = e.tag.is_some() || e.class == Some(TAG_SPACE);
    matches!(e.service, 0x02 | 0x04 | 0x08 | 0x09 | 0x10 | 0x19)
        || (tagged && matches!(e.service, 0x4d | 0x4e | 0x53))
}

/// What detection reads of a message kept for it only ([`hidden_messages`]): a request's write
/// or command (0x05-0x07: reset, start, stop, or a write on other objects), an object-specific
/// service on a class (a function of its own, [`cip_function`]), or an error.
fn matters(e: &CipEvent) -> bool {
    e.error.is_some()
        || !e.response
            && (writes(e)
                || matches!(e.service, 0x05..=0x07)
                || cip_function(e) != u32::from(e.service))
}

/// The hidden messages kept so far, by identity: the same one again adds nothing for
/// detection.
type HiddenSeen = std::collections::HashSet<HiddenKey, foldhash::fast::RandomState>;

/// A hidden message's identity.
type HiddenKey = (
    u8,
    bool,
    Option<u32>,
    Option<u32>,
    Option<u32>,
    Option<u32>,
    Option<String>,
    Option<&'static str>,
);

/// Every message of a CIP message, the embedded ones at every depth, in order.
fn all_messages<'e>(c: &'e CipEvent, out: &mut Vec<&'e CipEvent>) {
    out.push(c);
    for i in c.items.iter().flatten() {
        all_messages(i, out);
    }
    out.extend(&c.hidden);
}

/// A stable number for a tag name (FNV-1a), its address in the tag space.
fn tag_address(tag: &str) -> u32 {
    crate::detection::observe::fnv1a(tag.as_bytes())
}

/// Logix tags, as an address space of their own.
pub const TAG_SPACE: u32 = 0x6b;

/// The function of a ListIdentity reply: encapsulation commands sit above CIP's 7-bit services
/// (0x100 is a message too broken to have one).
const LIST_IDENTITY_FUNCTION: u32 = 0x1_0000 | 0x63;

/// The function of a connected I/O packet (UDP 2222), and the address space of its data (from
/// 0, its length).
const IO_FUNCTION: u32 = 0x2_0000;
pub const IO_SPACE: u32 = 0x2222;

// Object-specific services (CIP Vol 1, A-3: 0x4B-0x63) mean what their class says: 0x4C is
// Read Tag on a symbolic path and an unlock on the Logix controller object (0x8E); 0x4B and 0x4F
// walk Logix programs and routines (0x68-0x70) in an upload. Such a service is its own function
// per class, `OBJECT_SERVICE | class << 8 | service` (classes above 0xFFFF folded to 16 bits).
// A symbolic path's (Logix tag services), the tag object's (0x6B) and the Connection
// Manager's (class 6: Forward Open, Unconnected Send) keep their service code.
use otwatch_models::obs::CIP_OBJECT_SERVICE as OBJECT_SERVICE;

/// Distinct functions of the services one request carries that detection checks; one more is
/// malformed (`too_many_functions`).
const MAX_MEMBERS: usize = 64;

/// The function detection keys a CIP message by ([`OBJECT_SERVICE`]).
fn cip_function(e: &CipEvent) -> u32 {
    match e.class {
        Some(class)
            if (0x4b..=0x63).contains(&e.service)
                && e.tag.is_none()
                && class != 6
                && class != TAG_SPACE =>
        {
            OBJECT_SERVICE | (class & 0xffff) << 8 | u32::from(e.service)
        }
        _ => u32::from(e.service),
    }
}

/// The observation an ENIP event stands for: CIP messages (the function is the service of the
/// innermost request an Unconnected Send carries, else the message's own), malformed messages,
/// ListIdentity replies (the identity), and connected I/O packets; other encapsulation
/// housekeeping is not observed.
///
/// An I/O packet is one cycle of its connection, sent by its producer: a request from the
/// sender to the receiver that awaits no answer, addressed by the length of its data (its
/// connection id changes with every Forward Open), so the poll model learns each connection's
/// period (its RPI) and a broken cycle or a silent producer is found as for a polling master.
/// The direction of a UDP datagram from port 44818 to port 44818, by its encapsulation header:
/// a ListIdentity, ListServices or ListInterfaces request carries no data, its reply does
/// (CIP Vol 2, 2-4). `Some(true)`: the sender is the client (the scanner).
pub fn udp_direction(payload: &[u8]) -> Option<bool> {
    let h = payload.get(..24)?;
    let command = u16::from_le_bytes([h[0], h[1]]);
    let length = usize::from(u16::from_le_bytes([h[2], h[3]]));
    let list = matches!(command, 0x0004 | 0x0063 | 0x0064);
    (list && payload.len() == 24 + length).then_some(length == 0)
}

pub fn observe(
    p: &EnipEvent,
    request: bool,
    base: impl Fn(otwatch_models::Proto, u32, otwatch_models::Kind, u32) -> otwatch_models::Observation,
) -> Option<otwatch_models::Observation> {
    let fill = |o: &mut _| observe_into(p, request, o);
    crate::detection::observe::observe_with(otwatch_models::Proto::Enip, request, base, fill)
}

/// [`observe`] into `o`, an observation of the PDU's channel (EtherNet/IP, unit 0) as its
/// direction makes it (a request from the client, a response from the server) with every
/// other field empty: whether the PDU has one. The dissector builds it this way in the box it
/// keeps, with no event ([`emit`]).
pub fn observe_into(p: &EnipEvent, request: bool, o: &mut otwatch_models::Observation) -> bool {
    use otwatch_models::{Access, Command as Cmd, Kind};
    let kind = if request {
        Kind::Request
    } else {
        Kind::Response
    };
    if let Some(io) = &p.io {
        (o.kind, o.function) = (Kind::Request, IO_FUNCTION);
        if !request {
            // The channel goes from the sender (both ends of an I/O flow are often 2222).
            o.channel = otwatch_models::Channel {
                client: o.channel.server,
                server: o.channel.client,
                ..o.channel
            };
        }
        o.function_name = Some("io");
        // Connection ids change with every Forward Open (a restart, a lost link): the size of
        // the data is what stays, so a connection's cycle is keyed by it.
        o.accesses.push(Access {
            space: IO_SPACE,
            start: 0,
            count: (io.length as u32).max(1),
            write: false,
            values: Default::default(),
        });
        return true;
    }
    let Some(c) = &p.cip else {
        // A ListIdentity reply: the device says who it is (the asset's identity).
        if p.identity.is_some() && !request {
            (o.kind, o.function) = (Kind::Response, LIST_IDENTITY_FUNCTION);
            o.function_name = Some("list_identity");
            return true;
        }
        // An encapsulation error reply (a bad session handle, an unsupported command or
        // protocol version: what session guessing gets back): an exception of its command.
        if let (false, Some(status), Some(command)) = (request, p.status, p.command) {
            if status != 0 && p.error.is_none() {
                (o.kind, o.function) = (Kind::Response, 0x1_0000 | u32::from(command));
                o.function_name = p.command_name;
                o.exception = true;
                o.corr = p.corr;
                return true;
            }
        }
        return crate::detection::observe::malformed_into(o, p.error);
    };
    let mut all = Vec::new();
    all_messages(c, &mut all);
    // Through Unconnected Sends to the request they carry.
    let mut inner = c;
    while inner.service == 0x52 && inner.class == Some(6) {
        match inner.items.as_ref().and_then(|v| v.first()) {
            Some(i) => inner = i,
            None => break,
        }
    }
    (o.kind, o.function) = (kind, cip_function(inner));
    o.function_name = inner.service_name;
    o.corr = p.corr;
    o.malformed = c.error.or(all.iter().find_map(|e| e.error));
    // The services a Multiple Service Packet carries are functions of the channel too (a
    // Logix program upload is object-specific services inside them).
    if request {
        for e in &all {
            let carrier = e.service == 0x0a || e.service == 0x52 && e.class == Some(6);
            let f = cip_function(e);
            if carrier || f == o.function || o.members.contains(&f) {
                continue;
            }
            if o.members.len() == MAX_MEMBERS {
                // More distinct services in one request than any client sends.
                o.malformed = o.malformed.or(Some("too_many_functions"));
                break;
            }
            o.members.push(f);
        }
    }
    o.exception = c.status.is_some_and(|s| s != 0 && s != 0x06)
        || !request && p.status.is_some_and(|s| s != 0);
    o.write = request && all.iter().any(|e| writes(e));
    // Reset of the Identity object restarts the device; Stop and Start of the controller
    // object (0x8E, as Logix and the corpus's start-PLC capture use it) change its mode.
    // The same services on other objects (a drive's Control Supervisor, say) are plain writes.
    o.command = if !request {
        None
    } else if all.iter().any(|e| e.service == 0x05 && e.class == Some(1)) {
        Some(Cmd::Restart)
    } else if all
        .iter()
        .any(|e| e.service == 0x07 && e.class == Some(0x8e))
    {
        Some(Cmd::PlcStop)
    } else if all
        .iter()
        .any(|e| e.service == 0x06 && e.class == Some(0x8e))
    {
        Some(Cmd::PlcStart)
    } else {
        None
    };
    if request && all.iter().any(|e| matches!(e.service, 0x05..=0x07)) && o.command.is_none() {
        o.write = true;
    }
    // What requests write, and the values replies report for the tags they read.
    let carries = |e: &&&CipEvent| {
        if request {
            writes(e)
        } else {
            e.values.is_some()
        }
    };
    for e in all.iter().filter(carries) {
        let (space, start) = match &e.tag {
            // An array's element (the path's member segment) is the tag's address plus its index.
            Some(t) => (
                TAG_SPACE,
                tag_address(t).wrapping_add(e.member.unwrap_or(0)),
            ),
            None => (
                e.class.unwrap_or(0),
                match (e.instance.unwrap_or(0), e.attribute.unwrap_or(0)) {
                    (i, a) if i <= 0xffff && a <= 0xffff => i << 16 | a,
                    (i, a) => tag_address(&format!("{i}/{a}")),
                },
            ),
        };
        // The values from the element on, as one run; a REAL that is NaN or infinite is a
        // value too (outside every envelope; learning takes no sample of it).
        let values = e.values.as_deref().unwrap_or_default();
        o.push_access(
            space,
            start,
            values.len().max(1) as u32,
            request,
            values.iter().copied(),
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use otwatch_models::{Command as Cmd, Kind, Observation, Proto};

    fn base(proto: Proto, unit: u32, kind: Kind, f: u32) -> Observation {
        Observation::new(
            0,
            std::sync::Arc::from("t"),
            1,
            otwatch_models::Channel {
                proto,
                client: "10.0.0.1".parse().unwrap(),
                server: "10.0.0.2".parse().unwrap(),
                unit,
            },
            kind,
            f,
        )
    }

    fn msg(service: u8, class: Option<u32>, items: Option<Vec<CipEvent>>) -> CipEvent {
        CipEvent {
            service,
            class,
            instance: Some(1),
            items,
            ..Default::default()
        }
    }

    #[test]
    fn routes_read_as_port_and_link_pairs() {
        // As the text was made before: a string per byte and per segment, joined.
        fn joined(route: &Epath<'_>) -> String {
            route
                .segments()
                .filter_map(|s| match s {
                    Segment::Port { port, link } => Some(format!(
                        "{port}/{}",
                        link.iter()
                            .map(|b| b.to_string())
                            .collect::<Vec<_>>()
                            .join(".")
                    )),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(",")
        }
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut checked = 0;
        for _ in 0..5000 {
            // Random paths, mostly port segments (short and extended link addresses, ports
            // up to 0xFFFF), with logical segments among them.
            let mut path = Vec::new();
            for _ in 0..next() % 5 {
                match next() % 4 {
                    0 => path.extend([0x20, (next() % 256) as u8]),
                    1 => path.extend([(next() % 15) as u8 + 1, (next() % 256) as u8]),
                    2 => {
                        let link: Vec<u8> =
                            (0..next() % 17).map(|_| (next() % 256) as u8).collect();
                        path.extend([0x1f, link.len() as u8]);
                        path.extend((next() % 0x1_0000).to_le_bytes().iter().take(2));
                        path.extend(&link);
                        if link.len() % 2 == 1 {
                            path.push(0);
                        }
                    }
                    _ => {
                        let link: Vec<u8> =
                            (0..next() % 17).map(|_| (next() % 256) as u8).collect();
                        path.extend([0x10 | ((next() % 15) as u8 + 1), link.len() as u8]);
                        path.extend(&link);
                        if link.len() % 2 == 1 {
                            path.push(0);
                        }
                    }
                }
            }
            if let Ok(route) = Epath::parse(&path) {
                assert_eq!(route_text(&route), joined(&route), "{path:02x?}");
                checked += 1;
            }
        }
        assert!(checked > 2500, "only {checked} paths parsed");
        let route = Epath::parse(&[0x01, 0x00, 0x12, 0x04, 10, 0, 0, 5]).expect("a route");
        assert_eq!(route_text(&route), "1/0,2/10.0.0.5");
    }

    #[test]
    fn tag_values_are_accesses_at_their_elements() {
        // A Read Tag reply of Temp[2..4], and a Write Tag of Setpoint[1].
        let read = CipEvent {
            service: 0x4c,
            response: true,
            status: Some(0),
            member: Some(2),
            tag: Some("Temp".into()),
            values: Some(vec![20.5, 21.5]),
            ..Default::default()
        };
        let ev = EnipEvent {
            cip: Some(read),
            ..Default::default()
        };
        let o = observe(&ev, false, base).unwrap();
        assert_eq!(o.accesses.len(), 1);
        let a = &o.accesses[0];
        assert_eq!(
            (a.space, a.start, a.count, a.write),
            (TAG_SPACE, tag_address("Temp") + 2, 2, false)
        );
        assert_eq!(o.values_of(a).to_vec(), [20.5, 21.5]);
        let write = CipEvent {
            service: 0x4d,
            member: Some(1),
            tag: Some("Setpoint".into()),
            values: Some(vec![150.0]),
            ..Default::default()
        };
        let ev = EnipEvent {
            cip: Some(write),
            ..Default::default()
        };
        let o = observe(&ev, true, base).unwrap();
        let a = &o.accesses[0];
        assert_eq!(
            (a.start, a.count, a.write, o.values_of(a).to_vec()),
            (tag_address("Setpoint") + 1, 1, true, vec![150.0])
        );
        // NaN and infinities are values too, in their places (detection finds them outside
        // every envelope; learning takes no sample of them).
        let read = CipEvent {
            service: 0x4c,
            response: true,
            status: Some(0),
            tag: Some("R".into()),
            values: Some(vec![1.0, 2.0, f64::NAN, f64::INFINITY, 5.0]),
            ..Default::default()
        };
        let ev = EnipEvent {
            cip: Some(read),
            ..Default::default()
        };
        let o = observe(&ev, false, base).unwrap();
        let r = tag_address("R");
        let got: Vec<_> = o
            .accesses
            .iter()
            .map(|a| {
                let values: Vec<_> = o.values_of(a).iter().map(|v| format!("{v}")).collect();
                (a.start - r, a.count, values)
            })
            .collect();
        let want: Vec<String> = ["1", "2", "NaN", "inf", "5"].map(String::from).to_vec();
        assert_eq!(got, [(0, 5, want)]);
    }

    #[test]
    fn writes_and_commands_are_found_at_any_depth() {
        // Unconnected Send carrying a Multiple Service Packet carrying a Write Tag.
        let write = CipEvent {
            service: 0x4d,
            tag: Some("Line1.Speed".into()),
            ..Default::default()
        };
        let msp = msg(0x0a, Some(2), Some(vec![msg(0x0e, Some(1), None), write]));
        let us = msg(0x52, Some(6), Some(vec![msp]));
        let ev = EnipEvent {
            cip: Some(us),
            ..Default::default()
        };
        let o = observe(&ev, true, base).unwrap();
        assert!(o.write);
        assert_eq!(
            o.function, 0x0a,
            "the function is the request the Unconnected Send carries"
        );
        assert_eq!(o.accesses.len(), 1);
        assert_eq!(o.accesses[0].space, TAG_SPACE);
        assert_eq!(o.accesses[0].start, tag_address("Line1.Speed"));
        // Reset: a restart only on the Identity object; Stop: a PLC stop only on the controller.
        let reset_identity = EnipEvent {
            cip: Some(msg(0x05, Some(1), None)),
            ..Default::default()
        };
        assert_eq!(
            observe(&reset_identity, true, base).unwrap().command,
            Some(Cmd::Restart)
        );
        let stop_drive = EnipEvent {
            cip: Some(msg(0x07, Some(0x29), None)),
            ..Default::default()
        };
        let o = observe(&stop_drive, true, base).unwrap();
        assert_eq!(o.command, None);
        assert!(o.write, "a drive's stop is still a write");
        let stop_plc = EnipEvent {
            cip: Some(msg(0x07, Some(0x8e), None)),
            ..Default::default()
        };
        assert_eq!(
            observe(&stop_plc, true, base).unwrap().command,
            Some(Cmd::PlcStop)
        );
    }
    /// A CIP request: service, path (class, instance), data.
    fn req(service: u8, class: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![service, 2, 0x20, class, 0x24, 1];
        v.extend_from_slice(data);
        v
    }

    /// A Multiple Service Packet (to the Message Router) of `parts`.
    fn msp(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut d = (parts.len() as u16).to_le_bytes().to_vec();
        let mut at = 2 + 2 * parts.len();
        for p in parts {
            d.extend((at as u16).to_le_bytes());
            at += p.len();
        }
        for p in parts {
            d.extend(p);
        }
        req(0x0a, 2, &d)
    }

    /// An Unconnected Send of `msg` through `route` (padded, as a word count).
    fn us(msg: &[u8], route: &[u8]) -> Vec<u8> {
        let mut d = vec![0x0a, 0x0e];
        d.extend((msg.len() as u16).to_le_bytes());
        d.extend(msg);
        if msg.len() % 2 == 1 {
            d.push(0);
        }
        d.extend([(route.len() / 2) as u8, 0]);
        d.extend(route);
        req(0x52, 6, &d)
    }

    /// What detection makes of a request message of `bytes`, walked as the dissector does.
    fn observed(bytes: &[u8]) -> Observation {
        let m = parse_cip(bytes).expect("a CIP message");
        let mut budget = Budget {
            items: MAX_ITEMS,
            hidden: MAX_HIDDEN,
        };
        let ev = EnipEvent {
            cip: Some(cip_event(&m, 2, &mut budget)),
            ..Default::default()
        };
        observe(&ev, true, base).expect("an observation")
    }

    /// A Stop of the controller behind 64 harmless services, or nested deeper than events
    /// show (Multiple Service Packets in each other, Unconnected Sends in each other), is
    /// still a PLC stop; nesting past eight levels is malformed; an Unconnected Send whose
    /// route does not parse is malformed and its request still seen. The events list no more
    /// than before.
    #[test]
    fn a_stop_behind_the_events_limits_is_still_seen() {
        let stop = req(0x07, 0x8e, &[]);
        let get = req(0x0e, 1, &[0x30, 7]);
        let mut parts = vec![get.clone(); MAX_ITEMS];
        parts.push(stop.clone());
        let o = observed(&msp(&parts));
        assert_eq!(o.command, Some(Cmd::PlcStop));
        assert_eq!(o.malformed, None);
        let bytes = msp(&parts);
        let m = parse_cip(&bytes).unwrap();
        let mut budget = Budget {
            items: MAX_ITEMS,
            hidden: MAX_HIDDEN,
        };
        let e = cip_event(&m, 2, &mut budget);
        assert_eq!(e.items.as_ref().map(Vec::len), Some(MAX_ITEMS));
        assert!(!serde_json::to_string(&e).unwrap().contains("hidden"));

        let nested = msp(&[msp(&[msp(&[get.clone(), stop.clone()])])]);
        assert_eq!(observed(&nested).command, Some(Cmd::PlcStop));
        let routed = us(&us(&msp(std::slice::from_ref(&stop)), &[1, 0]), &[1, 0]);
        let o = observed(&routed);
        assert_eq!((o.command, o.malformed), (Some(Cmd::PlcStop), None));

        // Eleven levels below the top: the Stop at the bottom is past the walk; the message
        // is malformed.
        let mut deep = stop.clone();
        for _ in 0..11 {
            deep = msp(&[deep]);
        }
        assert_eq!(observed(&deep).malformed, Some("too_deep"));
        // Ten levels below the top one are walked (2 listed, 8 more).
        let mut fits = stop.clone();
        for _ in 0..10 {
            fits = msp(&[fits]);
        }
        let o = observed(&fits);
        assert_eq!((o.command, o.malformed), (Some(Cmd::PlcStop), None));

        // A route path with a reserved segment type (0xE0).
        let o = observed(&us(&stop, &[1, 0, 0xe0, 0]));
        assert_eq!(o.command, Some(Cmd::PlcStop));
        assert_eq!(o.malformed, Some("unconnected_send"));
    }

    /// An object-specific service is a function per class: the unlock of a Logix controller
    /// (0x4C on class 0x8E, cip_unlock_cpu.pcap) is not the Read Tag of a symbolic path, nor
    /// the same service on a program object; common services, the Connection Manager's and
    /// the tag object's keep their code, through an Unconnected Send too.
    #[test]
    fn object_specific_services_are_functions_per_class() {
        let unlock = observed(&req(0x4c, 0x8e, &[]));
        assert_eq!(unlock.function, OBJECT_SERVICE | 0x8e << 8 | 0x4c);
        let mut read_tag = vec![0x4c, 3, 0x91, 4];
        read_tag.extend(b"Temp");
        read_tag.extend([1, 0]);
        assert_eq!(observed(&read_tag).function, 0x4c);
        let program = observed(&req(0x4b, 0x68, &[]));
        assert_eq!(program.function, OBJECT_SERVICE | 0x68 << 8 | 0x4b);
        assert_ne!(program.function, observed(&req(0x4b, 0x6d, &[])).function);
        assert_eq!(observed(&req(0x55, 0x6b, &[])).function, 0x55);
        assert_eq!(observed(&req(0x54, 6, &[])).function, 0x54);
        assert_eq!(observed(&req(0x0e, 0x8e, &[1, 0])).function, 0x0e);
        let routed = observed(&us(&req(0x4c, 0x8e, &[]), &[1, 0]));
        assert_eq!(routed.function, unlock.function);
        // A Multiple Service Packet is its own function; what it carries are its members,
        // each once.
        let get = req(0x0e, 1, &[0x30, 7]);
        let packet = observed(&msp(&[req(0x4c, 0x8e, &[]), get.clone(), get]));
        assert_eq!(packet.function, 0x0a);
        assert_eq!(packet.members, [unlock.function, 0x0e]);
        // Behind the 64 messages events list, an object-specific service is still a member.
        let mut parts = vec![req(0x0e, 1, &[0x30, 7]); MAX_ITEMS];
        parts.push(req(0x4c, 0x8e, &[]));
        assert_eq!(observed(&msp(&parts)).members, [0x0e, unlock.function]);
        // More distinct services than any client sends in one request is malformed.
        let many: Vec<_> = (0..=MAX_MEMBERS as u8)
            .map(|c| req(0x4b, 0x20 + c, &[]))
            .collect();
        let o = observed(&msp(&many));
        assert_eq!(
            (o.members.len(), o.malformed),
            (MAX_MEMBERS, Some("too_many_functions"))
        );
        let fits = observed(&msp(&many[..MAX_MEMBERS]));
        assert_eq!((fits.members.len(), fits.malformed), (MAX_MEMBERS, None));
        // Alert texts name the service and the class.
        assert_eq!(
            Proto::Enip.function_text(unlock.function, unlock.function_name),
            "0x1008e4c (service 0x4c of class 0x8e)"
        );
        assert_eq!(
            Proto::Enip.function_text(0x4c, Some("read_tag")),
            "76 (read_tag)"
        );
    }

    /// An encapsulation error reply (status 0x64, invalid session handle: what session
    /// guessing gets back) is an exception of its command.
    #[test]
    fn an_encapsulation_error_reply_is_an_exception() {
        let ev = EnipEvent {
            command: Some(0x6f),
            command_name: Some("send_rr_data"),
            session: Some(0x1234),
            status: Some(0x64),
            ..Default::default()
        };
        let o = observe(&ev, false, base).expect("an observation");
        assert!(o.exception);
        assert_eq!((o.kind, o.function), (Kind::Response, 0x1_006f));
        let ok = EnipEvent {
            status: Some(0),
            ..ev
        };
        assert!(observe(&ok, false, base).is_none());
    }
}
