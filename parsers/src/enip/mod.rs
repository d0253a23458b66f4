//! EtherNet/IP encapsulation and CIP: pure, zero-copy, panic-free parsing.
//!
//! - [`parse_encap`] frames one encapsulation message at the front of a TCP stream (or a UDP
//!   datagram) in the streaming style: complete + consumed, incomplete + needed, invalid. A
//!   message is taken only with a command this crate knows and zero options, so other bytes on
//!   port 44818 (TLS, say) are not mistaken for it.
//! - [`parse_cpf`] reads the common packet format of SendRRData, SendUnitData and the list
//!   replies: interface handle, timeout and items, validated so that walking them cannot fail.
//! - [`parse_cip`] decodes a CIP message (request or response: the service's high bit), with
//!   [`Epath`] decoding the request path (class, instance, attribute, member, connection point,
//!   symbolic segments, port segments), and the embedded messages of Multiple Service Packet
//!   ([`multiple_service`]) and Unconnected Send ([`unconnected_send`]).
//! - [`parse_forward_open`] and [`parse_identity`] read the Connection Manager's Forward Open
//!   (connection ids, RPIs) and the Identity object of a ListIdentity reply.
//!
//! References: "Vol 1" is THE CIP NETWORKS LIBRARY Volume 1 (CIP), "Vol 2" Volume 2
//! (EtherNet/IP adaptation); ODVA publishes both. Wireshark's `packet-enip.c` and
//! `packet-cip.c` were read for ideas, no code.

#[cfg(test)]
mod proptests;

/// The encapsulation header: 24 octets (Vol 2 §2-3).
pub const HEADER_LEN: usize = 24;
/// The largest encapsulation message: the length field is 16 bits.
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + 65_511;
/// TCP and UDP port of explicit messaging; implicit (I/O) messaging uses UDP 2222.
pub const PORT: u16 = 44818;
pub const IO_PORT: u16 = 2222;

/// An encapsulation command (Vol 2 §2-3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Command(pub u16);

impl Command {
    pub const NOP: Self = Self(0x0000);
    pub const LIST_SERVICES: Self = Self(0x0004);
    pub const LIST_IDENTITY: Self = Self(0x0063);
    pub const LIST_INTERFACES: Self = Self(0x0064);
    pub const REGISTER_SESSION: Self = Self(0x0065);
    pub const UNREGISTER_SESSION: Self = Self(0x0066);
    pub const SEND_RR_DATA: Self = Self(0x006f);
    pub const SEND_UNIT_DATA: Self = Self(0x0070);
    pub const INDICATE_STATUS: Self = Self(0x0072);
    pub const CANCEL: Self = Self(0x0073);

    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0x0000 => "nop",
            0x0004 => "list_services",
            0x0063 => "list_identity",
            0x0064 => "list_interfaces",
            0x0065 => "register_session",
            0x0066 => "unregister_session",
            0x006f => "send_rr_data",
            0x0070 => "send_unit_data",
            0x0072 => "indicate_status",
            0x0073 => "cancel",
            _ => return None,
        })
    }
}

/// The encapsulation header and the message's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap<'a> {
    pub command: Command,
    pub session: u32,
    pub status: u32,
    pub context: [u8; 8],
    pub options: u32,
    pub data: &'a [u8],
}

/// Why bytes at the front of a stream are not an encapsulation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapError {
    /// A command this crate does not know (Vol 2 reserves the rest).
    UnknownCommand(u16),
    /// Options must be zero (Vol 2 §2-3.1).
    Options(u32),
    /// A length beyond the 65511 octets of data a message may carry.
    Length(u16),
}

impl EncapError {
    pub const fn reason(&self) -> &'static str {
        match self {
            EncapError::UnknownCommand(_) => "unknown_command",
            EncapError::Options(_) => "nonzero_options",
            EncapError::Length(_) => "bad_length",
        }
    }
}

/// The result of framing the front of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed<'a> {
    Complete { encap: Encap<'a>, consumed: usize },
    Incomplete { needed: usize },
    Invalid(EncapError),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let v = b.get(at..at + 2)?;
    Some(u16::from_le_bytes([v[0], v[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let v = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
}

/// The declared length of the message whose header is at the front of `buf` (24 + data), when
/// the header is there: a caller can step over a message it does not accept.
pub fn declared_len(buf: &[u8]) -> Option<usize> {
    buf.get(..HEADER_LEN)?;
    let len = usize::from(u16_at(buf, 2)?);
    (len <= MAX_MESSAGE_LEN - HEADER_LEN).then_some(HEADER_LEN + len)
}

/// Frames the encapsulation message at the front of `buf`.
pub fn parse_encap(buf: &[u8]) -> Framed<'_> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        // The command can be judged before the whole header is there.
        if let Some(c) = u16_at(buf, 0) {
            if Command(c).name().is_none() {
                return Framed::Invalid(EncapError::UnknownCommand(c));
            }
        }
        return Framed::Incomplete { needed: HEADER_LEN };
    };
    let command = Command(u16::from_le_bytes([h[0], h[1]]));
    if command.name().is_none() {
        return Framed::Invalid(EncapError::UnknownCommand(command.0));
    }
    let options = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if options != 0 {
        return Framed::Invalid(EncapError::Options(options));
    }
    let len = usize::from(u16::from_le_bytes([h[2], h[3]]));
    if len > MAX_MESSAGE_LEN - HEADER_LEN {
        return Framed::Invalid(EncapError::Length(len as u16));
    }
    let total = HEADER_LEN + len;
    let Some(data) = buf.get(HEADER_LEN..total) else {
        return Framed::Incomplete { needed: total };
    };
    let mut context = [0u8; 8];
    context.copy_from_slice(&h[12..20]);
    Framed::Complete {
        encap: Encap {
            command,
            session: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            status: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
            context,
            options,
            data,
        },
        consumed: total,
    }
}

/// A common packet format item type (Vol 2 §2-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemType(pub u16);

impl ItemType {
    pub const NULL_ADDRESS: Self = Self(0x0000);
    pub const IDENTITY: Self = Self(0x000c);
    pub const CONNECTED_ADDRESS: Self = Self(0x00a1);
    pub const CONNECTED_DATA: Self = Self(0x00b1);
    pub const UNCONNECTED_DATA: Self = Self(0x00b2);
    pub const LIST_SERVICES: Self = Self(0x0100);
    pub const SOCKADDR_O_T: Self = Self(0x8000);
    pub const SOCKADDR_T_O: Self = Self(0x8001);
    pub const SEQUENCED_ADDRESS: Self = Self(0x8002);
}

/// One CPF item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    pub kind: ItemType,
    pub data: &'a [u8],
}

/// The common packet format: validated items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpf<'a> {
    /// The item bytes, validated: `count` items exactly fill them.
    items: &'a [u8],
    pub count: u16,
}

/// Why a CPF does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpfError {
    Short,
    /// An item's length runs past the end, or bytes are left over.
    ItemLength,
}

impl CpfError {
    pub const fn reason(&self) -> &'static str {
        match self {
            CpfError::Short => "short_cpf",
            CpfError::ItemLength => "cpf_item_length",
        }
    }
}

/// SendRRData / SendUnitData: interface handle (4), timeout (2), then the CPF.
pub fn parse_send_data(data: &[u8]) -> Result<(u32, u16, Cpf<'_>), CpfError> {
    let handle = u32_at(data, 0).ok_or(CpfError::Short)?;
    let timeout = u16_at(data, 4).ok_or(CpfError::Short)?;
    Ok((handle, timeout, parse_cpf(&data[6..])?))
}

/// A CPF: item count (2), then the items (Vol 2 §2-6.1).
pub fn parse_cpf(b: &[u8]) -> Result<Cpf<'_>, CpfError> {
    let count = u16_at(b, 0).ok_or(CpfError::Short)?;
    let items = &b[2..];
    let mut at = 0usize;
    for _ in 0..count {
        let len = usize::from(u16_at(items, at + 2).ok_or(CpfError::ItemLength)?);
        at += 4 + len;
        if at > items.len() {
            return Err(CpfError::ItemLength);
        }
    }
    if at != items.len() {
        return Err(CpfError::ItemLength);
    }
    Ok(Cpf { items, count })
}

impl<'a> Cpf<'a> {
    pub fn items(&self) -> impl Iterator<Item = Item<'a>> + 'a {
        let b = self.items;
        let mut at = 0usize;
        (0..self.count).filter_map(move |_| {
            let kind = ItemType(u16_at(b, at)?);
            let len = usize::from(u16_at(b, at + 2)?);
            let data = b.get(at + 4..at + 4 + len)?;
            at += 4 + len;
            Some(Item { kind, data })
        })
    }
}

/// A CIP service code without the response bit (Vol 1 Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service(pub u8);

impl Service {
    pub const GET_ATTRIBUTES_ALL: Self = Self(0x01);
    pub const SET_ATTRIBUTES_ALL: Self = Self(0x02);
    pub const GET_ATTRIBUTE_LIST: Self = Self(0x03);
    pub const SET_ATTRIBUTE_LIST: Self = Self(0x04);
    pub const RESET: Self = Self(0x05);
    pub const START: Self = Self(0x06);
    pub const STOP: Self = Self(0x07);
    pub const MULTIPLE_SERVICE_PACKET: Self = Self(0x0a);
    pub const GET_ATTRIBUTE_SINGLE: Self = Self(0x0e);
    pub const SET_ATTRIBUTE_SINGLE: Self = Self(0x10);
    pub const FORWARD_CLOSE: Self = Self(0x4e);
    pub const UNCONNECTED_SEND: Self = Self(0x52);
    pub const FORWARD_OPEN: Self = Self(0x54);
    pub const LARGE_FORWARD_OPEN: Self = Self(0x5b);

    /// The common services' names, and the Logix tag services' (which share the 0x4b–0x5f
    /// range with other objects' specific services: named here only with class 0x6b or a
    /// symbolic path, by the caller).
    pub const fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0x01 => "get_attributes_all",
            0x02 => "set_attributes_all",
            0x03 => "get_attribute_list",
            0x04 => "set_attribute_list",
            0x05 => "reset",
            0x06 => "start",
            0x07 => "stop",
            0x08 => "create",
            0x09 => "delete",
            0x0a => "multiple_service_packet",
            0x0d => "apply_attributes",
            0x0e => "get_attribute_single",
            0x10 => "set_attribute_single",
            0x11 => "find_next_object_instance",
            0x14 => "error_response",
            0x15 => "restore",
            0x16 => "save",
            0x17 => "nop",
            0x18 => "get_member",
            0x19 => "set_member",
            0x1a => "insert_member",
            0x1b => "remove_member",
            0x1c => "group_sync",
            _ => return None,
        })
    }

    /// Connection Manager (class 6) services.
    pub const fn connection_manager_name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0x4e => "forward_close",
            0x52 => "unconnected_send",
            0x54 => "forward_open",
            0x56 => "get_connection_data",
            0x57 => "search_connection_data",
            0x5a => "get_connection_owner",
            0x5b => "large_forward_open",
            _ => return None,
        })
    }

    /// Logix controller tag services (class 0x6b, or a symbolic path).
    pub const fn logix_name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0x4c => "read_tag",
            0x4d => "write_tag",
            0x4e => "read_modify_write_tag",
            0x52 => "read_tag_fragmented",
            0x53 => "write_tag_fragmented",
            0x55 => "get_instance_attribute_list",
            _ => return None,
        })
    }
}

/// A decoded CIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cip<'a> {
    pub service: Service,
    pub response: bool,
    /// Requests: the request path.
    pub path: Option<Epath<'a>>,
    /// Responses: general status and the additional status words' bytes.
    pub general_status: Option<u8>,
    pub additional_status: &'a [u8],
    /// The service data after the header.
    pub data: &'a [u8],
}

/// Why a CIP message does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipError {
    Short,
    /// The path size runs past the end.
    PathLength,
    /// A path segment this crate cannot walk (its length is unknown).
    PathSegment(u8),
    /// Embedded messages (Multiple Service Packet, Unconnected Send) that do not fit.
    Embedded,
}

impl CipError {
    pub const fn reason(&self) -> &'static str {
        match self {
            CipError::Short => "short_cip",
            CipError::PathLength => "path_length",
            CipError::PathSegment(_) => "path_segment",
            CipError::Embedded => "embedded_length",
        }
    }
}

/// Decodes a CIP message (Vol 1 §2-4: request and response formats).
pub fn parse_cip(b: &[u8]) -> Result<Cip<'_>, CipError> {
    let &first = b.first().ok_or(CipError::Short)?;
    let service = Service(first & 0x7f);
    let response = first & 0x80 != 0;
    if response {
        // Service, reserved, general status, additional status size (words), status.
        let general = *b.get(2).ok_or(CipError::Short)?;
        let words = usize::from(*b.get(3).ok_or(CipError::Short)?);
        let add = b.get(4..4 + 2 * words).ok_or(CipError::Short)?;
        return Ok(Cip {
            service,
            response,
            path: None,
            general_status: Some(general),
            additional_status: add,
            data: &b[4 + 2 * words..],
        });
    }
    let words = usize::from(*b.get(1).ok_or(CipError::Short)?);
    let path = b.get(2..2 + 2 * words).ok_or(CipError::PathLength)?;
    let path = Epath::parse(path)?;
    Ok(Cip {
        service,
        response,
        path: Some(path),
        general_status: None,
        additional_status: &[],
        data: &b[2 + 2 * words..],
    })
}

/// One segment of an EPATH (Vol 1 Appendix C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    Class(u32),
    Instance(u32),
    Attribute(u32),
    Member(u32),
    ConnectionPoint(u32),
    /// A symbolic segment (ANSI extended symbol 0x91, or an ASCII symbolic segment
    /// 0x61-0x7F): a tag name.
    Symbol(&'a [u8]),
    /// A port segment: the port and its link address.
    Port {
        port: u16,
        link: &'a [u8],
    },
    /// A data segment or another this crate keeps as bytes.
    Other {
        kind: u8,
        bytes: &'a [u8],
    },
}

/// A validated EPATH: walking it with [`Epath::segments`] cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epath<'a>(&'a [u8]);

/// The length of the segment at the front of `b`, or why it has none.
fn segment_len(b: &[u8]) -> Result<usize, CipError> {
    let &t = b.first().ok_or(CipError::PathLength)?;
    let len = match t >> 5 {
        // Port segment: port in the low nibble (15: a 16-bit port follows), link address
        // size octet when bit 4 is set, then the link address; padded to even.
        0 => {
            let extended = t & 0x10 != 0;
            let big_port = t & 0x0f == 0x0f;
            let mut n = 1;
            let link = if extended {
                let size = usize::from(*b.get(1).ok_or(CipError::PathLength)?);
                n += 1;
                size
            } else {
                1
            };
            if big_port {
                n += 2;
            }
            n += link;
            n + (n & 1)
        }
        // Logical segment: format in bits 0–1: 8-bit, 16-bit (padded), 32-bit (padded); the
        // electronic key (0x34) is its format octet and 8 octets of key.
        1 if t == 0x34 => 10,
        1 => match t & 0x03 {
            0 => 2,
            1 => 4,
            2 => 6,
            _ => return Err(CipError::PathSegment(t)),
        },
        // Network segment: one octet of data, or (0x5F) a word count and that many words.
        2 if t == 0x5f => 2 + 2 * usize::from(*b.get(1).ok_or(CipError::PathLength)?),
        2 => 2,
        // Symbolic segment (Vol 1 C-1.4.5): its size in the low 5 bits and that many
        // octets; size 0: an extended format octet (double- or triple-byte characters and
        // their count, or a numeric symbol of 1, 2 or 4 octets). Padded to even.
        3 => {
            let n = match usize::from(t & 0x1f) {
                0 => {
                    let ext = *b.get(1).ok_or(CipError::PathLength)?;
                    let count = usize::from(ext & 0x1f);
                    2 + match ext >> 5 {
                        1 => 2 * count,
                        2 => 3 * count,
                        6 => match count {
                            6 => 1,
                            7 => 2,
                            8 => 4,
                            _ => return Err(CipError::PathSegment(t)),
                        },
                        _ => return Err(CipError::PathSegment(t)),
                    }
                }
                size => 1 + size,
            };
            n + (n & 1)
        }
        // Data segment: simple data (word count) or ANSI extended symbol (octet count, padded).
        4 => match t {
            0x80 => 2 + 2 * usize::from(*b.get(1).ok_or(CipError::PathLength)?),
            0x91 => {
                let n = 2 + usize::from(*b.get(1).ok_or(CipError::PathLength)?);
                n + (n & 1)
            }
            _ => return Err(CipError::PathSegment(t)),
        },
        _ => return Err(CipError::PathSegment(t)),
    };
    if len > b.len() {
        return Err(CipError::PathLength);
    }
    Ok(len)
}

impl<'a> Epath<'a> {
    /// Validates every segment's length.
    pub fn parse(b: &'a [u8]) -> Result<Epath<'a>, CipError> {
        let mut at = 0;
        while at < b.len() {
            at += segment_len(&b[at..])?;
        }
        Ok(Epath(b))
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + 'a {
        let b = self.0;
        let mut at = 0;
        std::iter::from_fn(move || {
            let rest = b.get(at..).filter(|r| !r.is_empty())?;
            let len = segment_len(rest).ok()?;
            at += len;
            Some(decode_segment(&rest[..len]))
        })
    }

    /// The first value of a logical segment of this kind (class, instance, attribute, member).
    fn first(&self, pick: fn(Segment<'a>) -> Option<u32>) -> Option<u32> {
        self.segments().find_map(pick)
    }

    pub fn class(&self) -> Option<u32> {
        self.first(|s| match s {
            Segment::Class(c) => Some(c),
            _ => None,
        })
    }

    pub fn instance(&self) -> Option<u32> {
        self.first(|s| match s {
            Segment::Instance(c) => Some(c),
            _ => None,
        })
    }

    pub fn attribute(&self) -> Option<u32> {
        self.first(|s| match s {
            Segment::Attribute(c) => Some(c),
            _ => None,
        })
    }

    pub fn member(&self) -> Option<u32> {
        self.first(|s| match s {
            Segment::Member(c) => Some(c),
            _ => None,
        })
    }

    /// The symbolic segments, joined with `.` (a Logix tag such as `Program:Main.Counter`).
    pub fn symbol(&self) -> Option<Vec<&'a [u8]>> {
        let parts: Vec<&[u8]> = self
            .segments()
            .filter_map(|s| match s {
                Segment::Symbol(n) => Some(n),
                _ => None,
            })
            .collect();
        (!parts.is_empty()).then_some(parts)
    }

    /// [`Epath::class`], [`Epath::instance`], [`Epath::attribute`] and [`Epath::member`] from
    /// one walk of the path, handing each symbolic segment to `symbol` in order on the way (the
    /// parts of [`Epath::symbol`]). A dissector wants all of them for every message, and a
    /// walk each took a tenth of dissection on a capture of Multiple Service Packets.
    pub fn logical(&self, mut symbol: impl FnMut(&'a [u8])) -> Logical {
        let mut l = Logical::default();
        for s in self.segments() {
            match s {
                Segment::Class(v) => _ = l.class.get_or_insert(v),
                Segment::Instance(v) => _ = l.instance.get_or_insert(v),
                Segment::Attribute(v) => _ = l.attribute.get_or_insert(v),
                Segment::Member(v) => _ = l.member.get_or_insert(v),
                Segment::Symbol(n) => symbol(n),
                _ => {}
            }
        }
        l
    }
}

/// The first logical segment of each kind a path holds ([`Epath::logical`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Logical {
    pub class: Option<u32>,
    pub instance: Option<u32>,
    pub attribute: Option<u32>,
    pub member: Option<u32>,
}

fn decode_segment(s: &[u8]) -> Segment<'_> {
    let t = s[0];
    match t >> 5 {
        0 => {
            let extended = t & 0x10 != 0;
            let mut at = 1;
            let size = if extended {
                at += 1;
                usize::from(s.get(1).copied().unwrap_or(0))
            } else {
                1
            };
            let port = if t & 0x0f == 0x0f {
                let p = u16_at(s, at).unwrap_or(0);
                at += 2;
                p
            } else {
                u16::from(t & 0x0f)
            };
            Segment::Port {
                port,
                link: s.get(at..at + size).unwrap_or(&[]),
            }
        }
        1 => {
            let value = match t & 0x03 {
                0 => u32::from(s[1]),
                1 => u32::from(u16_at(s, 2).unwrap_or(0)),
                _ => u32_at(s, 2).unwrap_or(0),
            };
            match (t >> 2) & 0x07 {
                0 => Segment::Class(value),
                1 => Segment::Instance(value),
                2 => Segment::Member(value),
                3 => Segment::ConnectionPoint(value),
                4 => Segment::Attribute(value),
                _ => Segment::Other { kind: t, bytes: s },
            }
        }
        3 if t & 0x1f != 0 => Segment::Symbol(s.get(1..1 + usize::from(t & 0x1f)).unwrap_or(&[])),
        _ if t == 0x91 => {
            let n = usize::from(s[1]);
            Segment::Symbol(s.get(2..2 + n).unwrap_or(&[]))
        }
        _ => Segment::Other { kind: t, bytes: s },
    }
}

/// The embedded messages of a Multiple Service Packet (request or response data): a count,
/// offsets from the start of the data, then the messages. `None` when they do not fit.
pub fn multiple_service(data: &[u8]) -> Option<Vec<&[u8]>> {
    let count = usize::from(u16_at(data, 0)?);
    let mut offsets = Vec::with_capacity(count.min(256));
    for i in 0..count {
        offsets.push(usize::from(u16_at(data, 2 + 2 * i)?));
    }
    let mut out = Vec::with_capacity(offsets.len());
    for (i, &start) in offsets.iter().enumerate() {
        let end = offsets.get(i + 1).copied().unwrap_or(data.len());
        if start < 2 + 2 * count || start > end || end > data.len() {
            return None;
        }
        out.push(&data[start..end]);
    }
    Some(out)
}

/// The embedded request of an Unconnected Send, whatever its route path.
pub fn unconnected_send_message(data: &[u8]) -> Option<&[u8]> {
    let size = usize::from(u16_at(data, 2)?);
    data.get(4..4 + size)
}

/// The embedded request and route path of an Unconnected Send (Vol 1 §3-5.5.2).
pub fn unconnected_send(data: &[u8]) -> Option<(&[u8], Epath<'_>)> {
    let msg = unconnected_send_message(data)?;
    let size = msg.len();
    let at = 4 + size + (size & 1);
    let words = usize::from(*data.get(at)?);
    let route = data.get(at + 2..at + 2 + 2 * words)?;
    Some((msg, Epath::parse(route).ok()?))
}

/// What a Forward Open request says about the connection (Vol 1 §3-5.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardOpen {
    pub o_t_connection_id: u32,
    pub t_o_connection_id: u32,
    pub connection_serial: u16,
    pub vendor: u16,
    pub originator_serial: u32,
    pub o_t_rpi_us: u32,
    pub t_o_rpi_us: u32,
}

/// Values of a Logix atomic data type (1756-PM020: BOOL 0xC1, SINT to LINT 0xC2–0xC5, USINT to
/// ULINT 0xC6–0xC9, REAL 0xCA, LREAL 0xCB), little-endian, as numbers. Structures (0x02A0 and
/// a handle) and other types have no values here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomicValues<'a> {
    pub type_code: u16,
    size: usize,
    data: &'a [u8],
}

impl AtomicValues<'_> {
    fn size(type_code: u16) -> Option<usize> {
        Some(match type_code {
            0xc1 | 0xc2 | 0xc6 => 1,
            0xc3 | 0xc7 => 2,
            0xc4 | 0xc8 | 0xca => 4,
            0xc5 | 0xc9 | 0xcb => 8,
            _ => return None,
        })
    }

    /// The values, in order (a trailing partial value is left out).
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        let t = self.type_code;
        self.data.chunks_exact(self.size).map(move |c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            let u = u64::from_le_bytes(b);
            match t {
                0xc1 => f64::from(u8::from(c[0] != 0)),
                0xc2 => f64::from(c[0] as i8),
                0xc3 => f64::from(u as u16 as i16),
                0xc4 => f64::from(u as u32 as i32),
                0xc5 => u as i64 as f64,
                0xca => f64::from(f32::from_bits(u as u32)),
                0xcb => f64::from_bits(u),
                _ => u as f64,
            }
        })
    }
}

/// A Read Tag (0x4C) reply's data: the type, then the values (a Read Tag Fragmented reply has
/// the same layout, its values from the request's byte offset).
pub fn read_tag_values(data: &[u8]) -> Option<AtomicValues<'_>> {
    let type_code = u16_at(data, 0)?;
    Some(AtomicValues {
        type_code,
        size: AtomicValues::size(type_code)?,
        data: data.get(2..)?,
    })
}

/// A Write Tag (0x4D) request's data: the type, the element count, then the values (at most
/// the count's worth).
pub fn write_tag_values(data: &[u8]) -> Option<AtomicValues<'_>> {
    let type_code = u16_at(data, 0)?;
    let size = AtomicValues::size(type_code)?;
    let count = usize::from(u16_at(data, 2)?);
    let body = data.get(4..)?;
    Some(AtomicValues {
        type_code,
        size,
        data: &body[..body.len().min(count.saturating_mul(size))],
    })
}

/// A Forward Open (`large`: Large Forward Open, 32-bit network parameters) request's data.
pub fn parse_forward_open(data: &[u8], large: bool) -> Option<ForwardOpen> {
    let p = if large { 4 } else { 2 };
    Some(ForwardOpen {
        o_t_connection_id: u32_at(data, 2)?,
        t_o_connection_id: u32_at(data, 6)?,
        connection_serial: u16_at(data, 10)?,
        vendor: u16_at(data, 12)?,
        originator_serial: u32_at(data, 14)?,
        o_t_rpi_us: u32_at(data, 22)?,
        t_o_rpi_us: u32_at(data, 26 + p)?,
    })
}

/// A successful Forward Open or Large Forward Open reply (Vol 1 §3-5.5.2): the connection ids
/// the two ends use, and the actual packet intervals (API) they agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardOpenReply {
    pub o_t_connection_id: u32,
    pub t_o_connection_id: u32,
    pub connection_serial: u16,
    pub vendor: u16,
    pub originator_serial: u32,
    pub o_t_api_us: u32,
    pub t_o_api_us: u32,
}

/// A successful Forward Open reply's data (the layout is the same for Large Forward Open).
pub fn parse_forward_open_reply(data: &[u8]) -> Option<ForwardOpenReply> {
    Some(ForwardOpenReply {
        o_t_connection_id: u32_at(data, 0)?,
        t_o_connection_id: u32_at(data, 4)?,
        connection_serial: u16_at(data, 8)?,
        vendor: u16_at(data, 10)?,
        originator_serial: u32_at(data, 12)?,
        o_t_api_us: u32_at(data, 16)?,
        t_o_api_us: u32_at(data, 20)?,
    })
}

/// The Identity object as a ListIdentity reply carries it (Vol 2 §2-4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity<'a> {
    pub vendor: u16,
    pub device_type: u16,
    pub product_code: u16,
    pub revision: (u8, u8),
    pub status: u16,
    pub serial: u32,
    pub product_name: &'a [u8],
    pub state: Option<u8>,
}

/// A ListIdentity CPF item 0x0C: encapsulation version (2), socket address (16), then the
/// identity.
pub fn parse_identity(item: &[u8]) -> Option<Identity<'_>> {
    identity_at(item, 18)
}

/// The reply to Get_Attributes_All on the Identity object (class 1): the identity's attributes
/// 1 to 8 in order (vendor, device type, product code, revision, status, serial, product name,
/// then the state, which not every device sends).
pub fn parse_identity_attributes(data: &[u8]) -> Option<Identity<'_>> {
    identity_at(data, 0)
}

/// The reply to Get_Attribute_List on the Identity object: a count, then per attribute its id,
/// its status and (status 0) its value. The identity holds the attributes 1 to 8 found before
/// the first one whose length is not known (attributes not in the list stay 0 or empty);
/// `None` unless vendor, product code, serial and name are all there (a partial list is not
/// who the device is).
pub fn parse_identity_attribute_list(data: &[u8]) -> Option<Identity<'_>> {
    let count = u16_at(data, 0)?;
    let mut id = Identity::default();
    let mut found = 0u8;
    let mut at = 2;
    for _ in 0..count {
        let (attribute, status) = (u16_at(data, at)?, u16_at(data, at + 2)?);
        at += 4;
        if status != 0 {
            continue;
        }
        let len = match attribute {
            1 => {
                id.vendor = u16_at(data, at)?;
                2
            }
            2 => {
                id.device_type = u16_at(data, at)?;
                2
            }
            3 => {
                id.product_code = u16_at(data, at)?;
                2
            }
            4 => {
                id.revision = (*data.get(at)?, *data.get(at + 1)?);
                2
            }
            5 => {
                id.status = u16_at(data, at)?;
                2
            }
            6 => {
                id.serial = u32_at(data, at)?;
                4
            }
            7 => {
                let n = usize::from(*data.get(at)?);
                id.product_name = data.get(at + 1..at + 1 + n)?;
                1 + n
            }
            8 => {
                id.state = Some(*data.get(at)?);
                1
            }
            _ => break,
        };
        if let 1 | 3 | 6 | 7 = attribute {
            found |= 1 << attribute;
        }
        at += len;
    }
    (found == 1 << 1 | 1 << 3 | 1 << 6 | 1 << 7).then_some(id)
}

fn identity_at(item: &[u8], at: usize) -> Option<Identity<'_>> {
    let name_len = usize::from(*item.get(at + 14)?);
    Some(Identity {
        vendor: u16_at(item, at)?,
        device_type: u16_at(item, at + 2)?,
        product_code: u16_at(item, at + 4)?,
        revision: (*item.get(at + 6)?, *item.get(at + 7)?),
        status: u16_at(item, at + 8)?,
        serial: u32_at(item, at + 10)?,
        product_name: item.get(at + 15..at + 15 + name_len)?,
        state: item.get(at + 15 + name_len).copied(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encap(command: u16, session: u32, data: &[u8]) -> Vec<u8> {
        let mut v = command.to_le_bytes().to_vec();
        v.extend_from_slice(&(data.len() as u16).to_le_bytes());
        v.extend_from_slice(&session.to_le_bytes());
        v.extend_from_slice(&[0; 16]);
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn tag_values() {
        // Read Tag reply: REAL 20.5, -1.0, then two stray octets.
        let mut r = vec![0xca, 0];
        r.extend(20.5f32.to_le_bytes());
        r.extend((-1.0f32).to_le_bytes());
        r.extend([1, 2]);
        let v = read_tag_values(&r).expect("values");
        assert_eq!(v.iter().collect::<Vec<_>>(), [20.5, -1.0]);
        // INT and DINT signed, UINT not; a structure has no values.
        let v = read_tag_values(&[0xc3, 0, 0xff, 0xff, 0x96, 0]).expect("int");
        assert_eq!(v.iter().collect::<Vec<_>>(), [-1.0, 150.0]);
        let v = read_tag_values(&[0xc7, 0, 0xff, 0xff]).expect("uint");
        assert_eq!(v.iter().collect::<Vec<_>>(), [65535.0]);
        let v = read_tag_values(&[0xc4, 0, 0xfe, 0xff, 0xff, 0xff]).expect("dint");
        assert_eq!(v.iter().collect::<Vec<_>>(), [-2.0]);
        assert_eq!(read_tag_values(&[0xa0, 0x02, 0x12, 0x34, 0, 0]), None);
        // Write Tag: INT, 1 element, 150; what follows the count's worth is not a value.
        let v = write_tag_values(&[0xc3, 0, 1, 0, 0x96, 0, 7, 7]).expect("write");
        assert_eq!(v.iter().collect::<Vec<_>>(), [150.0]);
        assert_eq!(write_tag_values(&[0xc3, 0, 1]), None);
    }

    #[test]
    fn identity_from_attribute_replies() {
        // Get_Attribute_List: vendor 1, product code 54, serial, name "PLC", then an attribute
        // of unknown length, after which nothing is read.
        let mut list = vec![5, 0, 1, 0, 0, 0, 1, 0, 3, 0, 0, 0, 54, 0, 6, 0, 0, 0];
        list.extend(0x1122_3344u32.to_le_bytes());
        list.extend([7, 0, 0, 0, 3, b'P', b'L', b'C', 9, 0, 0, 0, 1, 2]);
        let id = parse_identity_attribute_list(&list).expect("identity");
        assert_eq!(
            (
                id.vendor,
                id.product_code,
                id.serial,
                id.product_name,
                id.device_type
            ),
            (1, 54, 0x1122_3344, &b"PLC"[..], 0)
        );
        // A name longer than the data; the serial refused (status 0x14): no identity.
        assert_eq!(parse_identity_attribute_list(&list[..29]), None);
        let mut refused = list.clone();
        refused[16] = 0x14;
        assert_eq!(parse_identity_attribute_list(&refused), None);
        // Get_Attributes_All: the ListIdentity layout without its first 18 octets.
        let all = [
            1, 0, 14, 0, 54, 0, 20, 11, 0x60, 0x30, 0x1a, 0x06, 0x6c, 0, 3, b'L', b'6', b'1',
        ];
        let id = parse_identity_attributes(&all).expect("identity");
        assert_eq!(
            (
                id.vendor,
                id.device_type,
                id.product_code,
                id.revision,
                id.serial
            ),
            (1, 14, 54, (20, 11), 0x006c_061a)
        );
        assert_eq!((id.product_name, id.state), (&b"L61"[..], None));
        assert_eq!(parse_identity_attributes(&all[..16]), None);
    }

    #[test]
    fn framing_and_validation() {
        let b = encap(0x65, 0, &[1, 0, 0, 0]);
        let Framed::Complete { encap: e, consumed } = parse_encap(&b) else {
            panic!()
        };
        assert_eq!(
            (e.command, consumed, e.data),
            (Command::REGISTER_SESSION, 28, &[1, 0, 0, 0][..])
        );
        assert_eq!(parse_encap(&b[..10]), Framed::Incomplete { needed: 24 });
        assert_eq!(parse_encap(&b[..26]), Framed::Incomplete { needed: 28 });
        // A TLS record is no encapsulation message.
        assert_eq!(
            parse_encap(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            Framed::Invalid(EncapError::UnknownCommand(0x0316))
        );
        let mut opt = b.clone();
        opt[20] = 1;
        assert_eq!(parse_encap(&opt), Framed::Invalid(EncapError::Options(1)));
    }

    #[test]
    fn send_rr_data_with_a_get_attribute_single() {
        // CIP: Get_Attribute_Single class 1 instance 1 attribute 7 (the product name).
        let cip = [0x0e, 0x03, 0x20, 0x01, 0x24, 0x01, 0x30, 0x07];
        let mut d = vec![0, 0, 0, 0, 10, 0, 2, 0, 0, 0, 0, 0, 0xb2, 0];
        d.extend_from_slice(&(cip.len() as u16).to_le_bytes());
        d.extend_from_slice(&cip);
        let (handle, timeout, cpf) = parse_send_data(&d).unwrap();
        assert_eq!((handle, timeout, cpf.count), (0, 10, 2));
        let items: Vec<_> = cpf.items().collect();
        assert_eq!(items[1].kind, ItemType::UNCONNECTED_DATA);
        let m = parse_cip(items[1].data).unwrap();
        assert_eq!(
            (m.service, m.response),
            (Service::GET_ATTRIBUTE_SINGLE, false)
        );
        let p = m.path.unwrap();
        assert_eq!(
            (p.class(), p.instance(), p.attribute()),
            (Some(1), Some(1), Some(7))
        );
        // A response: success, no additional status, the data.
        let r = parse_cip(&[0x8e, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']).unwrap();
        assert_eq!(
            (r.response, r.general_status, r.data.len()),
            (true, Some(0), 6)
        );
    }

    #[test]
    fn symbolic_paths_and_multiple_service_packets() {
        // Read Tag "caixin" (0x91, 6, name), 16-bit class 0x6b.
        let mut path = vec![0x91, 6];
        path.extend_from_slice(b"caixin");
        path.extend_from_slice(&[0x21, 0x00, 0x6b, 0x00]);
        let e = Epath::parse(&path).unwrap();
        assert_eq!(e.symbol(), Some(vec![&b"caixin"[..]]));
        assert_eq!(e.class(), Some(0x6b));
        // Two embedded requests.
        let a = [0x0e, 0x02, 0x20, 0x01, 0x24, 0x01];
        let b = [0x01, 0x02, 0x20, 0x01, 0x24, 0x01];
        let mut d = vec![2, 0, 6, 0, 12, 0];
        d.extend_from_slice(&a);
        d.extend_from_slice(&b);
        let parts = multiple_service(&d).unwrap();
        assert_eq!(parts, vec![&a[..], &b[..]]);
        // An offset into the offset table is refused.
        assert!(multiple_service(&[2, 0, 2, 0, 6, 0]).is_none());
        // A port segment: backplane (1), link address 0 (slot 0).
        let e = Epath::parse(&[0x01, 0x00]).unwrap();
        assert_eq!(
            e.segments().collect::<Vec<_>>(),
            vec![Segment::Port {
                port: 1,
                link: &[0][..]
            }]
        );
        // A truncated 16-bit logical segment.
        assert_eq!(Epath::parse(&[0x21, 0x00, 0x6b]), Err(CipError::PathLength));
        // ASCII symbolic segments (Vol 1 C-1.4.5) are padded to even, as tshark reads them:
        // class 0x8e, instance 1, "AB" and a pad; then "ABC" (no pad), a numeric UINT symbol
        // and a double-byte one of one character.
        let e = Epath::parse(&[0x20, 0x8e, 0x24, 0x01, 0x62, b'A', b'B', 0]).unwrap();
        assert_eq!(e.class(), Some(0x8e));
        assert_eq!(e.symbol(), Some(vec![&b"AB"[..]]));
        let e = Epath::parse(&[
            0x63, b'A', b'B', b'C', 0x60, 0xc7, 1, 0, 0x60, 0x21, 0, 0x41,
        ])
        .unwrap();
        assert_eq!(e.segments().count(), 3);
        assert_eq!(Epath::parse(&[0x63, b'A', b'B']), Err(CipError::PathLength));
        assert_eq!(
            Epath::parse(&[0x60, 0xc9, 1, 0]),
            Err(CipError::PathSegment(0x60))
        );
    }

    #[test]
    fn unconnected_send_and_forward_open() {
        // Unconnected Send carrying Get_Attributes_All class 1 instance 1, route port 1 slot 0.
        let msg = [0x01, 0x02, 0x20, 0x01, 0x24, 0x01];
        let mut d = vec![0x0a, 0xf0];
        d.extend_from_slice(&(msg.len() as u16).to_le_bytes());
        d.extend_from_slice(&msg);
        d.extend_from_slice(&[1, 0, 0x01, 0x00]);
        let (m, route) = unconnected_send(&d).unwrap();
        assert_eq!(m, &msg[..]);
        assert_eq!(route.segments().count(), 1);
        // Forward Open: O->T id 0x11223344, T->O id 0x55667788, RPIs 10 ms and 20 ms.
        let mut f = vec![0x0a, 0xf0];
        f.extend_from_slice(&0x1122_3344u32.to_le_bytes());
        f.extend_from_slice(&0x5566_7788u32.to_le_bytes());
        f.extend_from_slice(&7u16.to_le_bytes());
        f.extend_from_slice(&0x1234u16.to_le_bytes());
        f.extend_from_slice(&99u32.to_le_bytes());
        f.extend_from_slice(&[1, 0, 0, 0]);
        f.extend_from_slice(&10_000u32.to_le_bytes());
        f.extend_from_slice(&0x43f4u16.to_le_bytes());
        f.extend_from_slice(&20_000u32.to_le_bytes());
        f.extend_from_slice(&0x43f4u16.to_le_bytes());
        f.extend_from_slice(&[0xa3, 0]);
        let fo = parse_forward_open(&f, false).unwrap();
        assert_eq!(
            (
                fo.o_t_connection_id,
                fo.t_o_connection_id,
                fo.o_t_rpi_us,
                fo.t_o_rpi_us
            ),
            (0x1122_3344, 0x5566_7788, 10_000, 20_000)
        );
    }
}
