//! Observations: what the detector needs to know about one PDU (or one new conversation),
//! independent of the protocol that carried it.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// S7 address spaces of single bits (`M10.3`, addressed `byte * 8 + bit`), apart from the byte
/// addressing of the same area.
pub const S7_BIT_SPACE: u32 = 1 << 31;

/// The protocol of a channel. `Tcp`/`Udp` are conversations of protocols otwatch does not
/// dissect: they are learned and flagged as talkers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Modbus,
    Dnp3,
    S7comm,
    S7commplus,
    Tcp,
    Udp,
    Iec104,
    Enip,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Modbus => "modbus",
            Proto::Dnp3 => "dnp3",
            Proto::S7comm => "s7comm",
            Proto::S7commplus => "s7commplus",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Iec104 => "iec104",
            Proto::Enip => "enip",
        }
    }

    /// True for the industrial protocols whose PDUs are dissected.
    pub fn is_ot(self) -> bool {
        !matches!(self, Proto::Tcp | Proto::Udp)
    }

    /// What `unit` means on a channel of this protocol, for messages.
    pub fn unit_name(self) -> &'static str {
        match self {
            Proto::Dnp3 => "link addresses",
            Proto::S7comm | Proto::S7commplus => "",
            Proto::Tcp | Proto::Udp => "port",
            Proto::Iec104 => "common address",
            // Modbus, and a new protocol until it says otherwise.
            _ => "unit",
        }
    }

    /// An address of this protocol as an alert's text says it: the number, but for an
    /// S7comm-plus variable, whose address is the FNV-1a hash of its LIDs (the request's event
    /// names them), `variable #` and the hash in hex.
    pub fn address_text(self, address: u32) -> String {
        match self {
            Proto::S7commplus => format!("variable #{address:08x}"),
            _ => address.to_string(),
        }
    }

    /// The addresses `start..=end` as an alert's text says them ([`Proto::address_text`]; an
    /// S7comm-plus access names one variable).
    pub fn range_text(self, start: u32, end: u32) -> String {
        match self {
            Proto::S7commplus if start == end => self.address_text(start),
            _ => format!("{start}..={end}"),
        }
    }

    /// A readable name for an address space of this protocol (see [`Access::space`]).
    pub fn space_name(self, space: u32) -> String {
        if space == u32::MAX {
            // A request without an address (its poll key).
            return "(no address)".into();
        }
        match self {
            Proto::Modbus => match space {
                0 => "coils".into(),
                1 => "discrete_inputs".into(),
                3 => "input_registers".into(),
                4 => "holding_registers".into(),
                6 => "file_records".into(),
                other => format!("space{other}"),
            },
            Proto::Dnp3 if space & 0x1_0000 != 0 => format!("g{} all", space & 0xffff),
            Proto::Dnp3 => format!("g{space}"),
            Proto::Iec104 => match space {
                1 => "single_points".into(),
                3 => "double_points".into(),
                5 => "step_positions".into(),
                7 => "bitstrings".into(),
                9 => "normalized_values".into(),
                11 => "scaled_values".into(),
                13 => "float_values".into(),
                15 => "counters".into(),
                45 => "single_commands".into(),
                46 => "double_commands".into(),
                47 => "step_commands".into(),
                48..=50 => "setpoints".into(),
                other => format!("type{other}"),
            },
            Proto::S7comm | Proto::S7commplus => {
                let bits = if space & S7_BIT_SPACE != 0 {
                    " bits"
                } else {
                    ""
                };
                let (area, db) = ((space >> 16) & 0x7fff, space & 0xffff);
                let name = match area {
                    0x81 => "I".to_string(),
                    0x82 => "Q".into(),
                    0x83 => "M".into(),
                    0x84 => format!("DB{db}"),
                    0x1c => "C".into(),
                    0x1d => "T".into(),
                    // Addresses of another syntax (NCK, Drive ES, symbolic), by their hash.
                    0xff => format!("syntax{db:#04x}"),
                    // S7comm-plus: attributes of the PLC's objects, by their hash.
                    0xfe => "objects".into(),
                    _ => format!("area{area:#04x}"),
                };
                format!("{name}{bits}")
            }
            // Logix tags (the address is the tag name's FNV-1a hash plus the element), connected
            // I/O's data, else the CIP class whose instance and attribute make the address.
            Proto::Enip if space == 0x6b => "tags".into(),
            Proto::Enip if space == 0x2222 => "io_data".into(),
            Proto::Enip => format!("class{space:#x}"),
            _ => format!("space{space}"),
        }
    }

    /// A function every client of the protocol uses, never new to a channel: S7comm-plus's
    /// session life ([`S7PLUS_SESSION`]), which an HMI that reconnects after learning does
    /// again.
    pub fn routine_function(self, function: u32) -> bool {
        self == Proto::S7commplus && function == S7PLUS_SESSION
    }

    /// A function as alert texts name it: the number, and its name when it has one. A CIP
    /// object-specific service on a class (`0x1000000 | class << 8 | service`) reads as its
    /// service and class.
    pub fn function_text(self, function: u32, name: Option<&str>) -> String {
        match (self, name) {
            (_, Some(n)) => format!("{function} ({n})"),
            (Proto::Enip, None) if function & !0xff_ffff == CIP_OBJECT_SERVICE => format!(
                "{function:#x} (service {:#04x} of class {:#x})",
                function & 0xff,
                (function >> 8) & 0xffff
            ),
            (_, None) => function.to_string(),
        }
    }

    /// True where a space holds single bits, whose values are process state, not measurements.
    pub fn bit_space(self, space: u32) -> bool {
        match self {
            Proto::Modbus => matches!(space, 0 | 1),
            Proto::Dnp3 => matches!(space, 1 | 2 | 10 | 12),
            Proto::S7comm | Proto::S7commplus => space & S7_BIT_SPACE != 0,
            // Points and commands, and the bit fields: bitstrings, protection events, packed
            // single points.
            Proto::Iec104 => matches!(space, 1 | 3 | 7 | 17..=20 | 45 | 46 | 51),
            _ => false,
        }
    }
}

/// A client/server pair on one protocol and one unit: Modbus unit id, DNP3 master and outstation
/// link addresses (`master << 16 | outstation`), IEC 104 common address, or the server's port
/// for other TCP/UDP conversations. S7 has none (0): the rack and slot are said only when a
/// connection is set up, and a sensor picks most HMI connections up mid-stream, so a unit
/// learned as unknown would turn into a new channel at the next reconnection. The rack and slot
/// a client connects to are in the COTP events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Channel {
    pub proto: Proto,
    pub client: IpAddr,
    pub server: IpAddr,
    pub unit: u32,
}

/// An address as one number for hashing (IPv4 tagged apart from IPv6's mapped form).
fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => 1 << 100 | u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Channels key the detector's hot maps: hashed as three words (the derived hash feeds an
/// address byte by byte, with its length and variant, and cost a fifth of a lookup).
impl std::hash::Hash for Channel {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match (self.client, self.server) {
            (IpAddr::V4(c), IpAddr::V4(s)) => state.write_u128(
                u128::from(u32::from(c)) << 64
                    | u128::from(u32::from(s)) << 32
                    | u128::from(self.unit),
            ),
            (c, s) => {
                state.write_u128(ip_bits(c));
                state.write_u128(ip_bits(s) ^ u128::from(self.unit) << 104);
            }
        }
        state.write_u8(self.proto as u8);
    }
}

impl Channel {
    pub fn unit_text(&self) -> String {
        match self.proto {
            Proto::Dnp3 => format!("{}->{}", self.unit >> 16, self.unit & 0xffff),
            Proto::S7comm | Proto::S7commplus => String::new(),
            _ => self.unit.to_string(),
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.proto.name(),
            self.client,
            self.server
        )?;
        match self.proto.unit_name() {
            "" => Ok(()),
            name => write!(f, " {name} {}", self.unit_text()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Client to server.
    Request,
    /// Server to client, answering a request.
    Response,
    /// Server to client, unasked (DNP3 unsolicited responses, S7 pushes).
    Unsolicited,
    /// The first packet of a conversation of an undissected protocol.
    Conversation,
}

/// Commands that change what a controller does or runs: always worth a person's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    PlcStop,
    PlcStart,
    ProgramDownload,
    ProgramUpload,
    /// DNP3 cold/warm restart, Modbus restart-communications or force-listen-only.
    Restart,
}

/// Where an access's values are in its observation: `len` values from `at` of
/// [`Observation::values`], or, for a run held as it came on the wire (`at` has
/// [`ValuesAt::BYTES`] set: [`ValuesAt::push_bytes`], [`ValuesAt::push_bits`],
/// [`ValuesAt::push_words`]), of [`Observation::bytes`] (none: [`ValuesAt::NONE`]). Read them
/// with [`Observation::values_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValuesAt {
    pub at: u32,
    pub len: u32,
}

impl ValuesAt {
    /// No values.
    pub const NONE: ValuesAt = ValuesAt { at: 0, len: 0 };

    /// Set in `at` for a run of [`Observation::bytes`]; the rest of `at` (but
    /// [`ValuesAt::WORDS`]) is the byte where it starts.
    pub const BYTES: u32 = 1 << 31;

    /// Set in `at` with [`ValuesAt::BYTES`] for a run of big-endian 16-bit words (two bytes a
    /// value, `len` values).
    pub const WORDS: u32 = 1 << 30;

    /// `values` appended to `buf` (an observation's [`Observation::values`]), and where they
    /// are.
    #[inline]
    pub fn push(buf: &mut Vec<f64>, values: impl IntoIterator<Item = f64>) -> ValuesAt {
        let at = buf.len();
        buf.extend(values);
        ValuesAt::span(at, buf.len())
    }

    /// Values that are bytes (an S7 byte run's), appended as they are to `buf` (an
    /// observation's [`Observation::bytes`]): a byte each, not the eight of a number, to copy,
    /// to hand to another core and to compare.
    #[inline]
    pub fn push_bytes(buf: &mut Vec<u8>, bytes: &[u8]) -> ValuesAt {
        let at = buf.len();
        buf.extend_from_slice(bytes);
        ValuesAt::in_buffer(at, buf.len(), 0)
    }

    /// Bits (0 or 1 each), appended as bytes to `buf` (an observation's
    /// [`Observation::bytes`]), as [`ValuesAt::push_bytes`].
    #[inline]
    pub fn push_bits(buf: &mut Vec<u8>, bits: impl IntoIterator<Item = bool>) -> ValuesAt {
        let at = buf.len();
        buf.extend(bits.into_iter().map(u8::from));
        ValuesAt::in_buffer(at, buf.len(), 0)
    }

    /// Big-endian 16-bit words (Modbus registers, as on the wire), appended as they are to
    /// `buf` (an observation's [`Observation::bytes`]): two bytes a value, not eight.
    #[inline]
    pub fn push_words(buf: &mut Vec<u8>, words: &[[u8; 2]]) -> ValuesAt {
        let at = buf.len();
        buf.extend_from_slice(words.as_flattened());
        ValuesAt::in_buffer(at, buf.len(), Self::WORDS)
    }

    /// 16-bit values (an event's registers), appended to `buf` as [`ValuesAt::push_words`]
    /// appends them from the wire.
    pub fn push_u16s(buf: &mut Vec<u8>, values: impl IntoIterator<Item = u16>) -> ValuesAt {
        let at = buf.len();
        buf.extend(values.into_iter().flat_map(u16::to_be_bytes));
        ValuesAt::in_buffer(at, buf.len(), Self::WORDS)
    }

    /// The bytes `at..end` of an observation's [`Observation::bytes`], of values of one byte
    /// (`words` 0) or two ([`ValuesAt::WORDS`]).
    #[inline]
    fn in_buffer(at: usize, end: usize, words: u32) -> ValuesAt {
        let mut run = ValuesAt::span(at, end);
        if run.at >= Self::WORDS {
            // Far past a PDU's values (at most 64 KiB): where the flags begin, `at` cannot be
            // told, so the run is none (never another run's bytes, never a panic).
            return ValuesAt {
                at: Self::BYTES | words,
                len: 0,
            };
        }
        if words != 0 {
            run.len /= 2;
        }
        run.at |= Self::BYTES | words;
        run
    }

    /// The values `at..end` of a buffer.
    #[inline]
    pub fn span(at: usize, end: usize) -> ValuesAt {
        // An observation's values stay far below 2^32 (a PDU is at most 64 KiB); saturated
        // all the same, so that a span past the buffer reads as none, never panics.
        let at = u32::try_from(at).unwrap_or(u32::MAX);
        let end = u32::try_from(end).unwrap_or(u32::MAX);
        ValuesAt {
            at,
            len: end.saturating_sub(at),
        }
    }

    #[inline]
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// A run of [`Observation::bytes`], not of [`Observation::values`].
    #[inline]
    pub fn in_bytes(self) -> bool {
        self.at & Self::BYTES != 0
    }

    /// How the run holds its values: 0 (numbers), [`ValuesAt::BYTES`] (bytes) or
    /// `BYTES | WORDS` (words).
    #[inline]
    pub fn form(self) -> u32 {
        if self.in_bytes() {
            self.at & (Self::BYTES | Self::WORDS)
        } else {
            0
        }
    }
}

/// The values of one access ([`Observation::values_of`]): numbers, or values held as they
/// came on the wire: bytes (an S7 byte run, Modbus coils) or big-endian 16-bit words (Modbus
/// registers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Values<'a> {
    Numbers(&'a [f64]),
    Bytes(&'a [u8]),
    Words(&'a [[u8; 2]]),
}

impl<'a> Values<'a> {
    #[inline]
    pub fn len(self) -> usize {
        match self {
            Values::Numbers(v) => v.len(),
            Values::Bytes(b) => b.len(),
            Values::Words(w) => w.len(),
        }
    }

    #[inline]
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The values, as numbers.
    #[inline]
    pub fn iter(self) -> ValuesIter<'a> {
        match self {
            Values::Numbers(v) => ValuesIter::Numbers(v.iter()),
            Values::Bytes(b) => ValuesIter::Bytes(b.iter()),
            Values::Words(w) => ValuesIter::Words(w.iter()),
        }
    }

    pub fn to_vec(self) -> Vec<f64> {
        self.iter().collect()
    }
}

/// The values of one access as numbers ([`Values::iter`]).
#[derive(Debug, Clone)]
pub enum ValuesIter<'a> {
    Numbers(std::slice::Iter<'a, f64>),
    Bytes(std::slice::Iter<'a, u8>),
    Words(std::slice::Iter<'a, [u8; 2]>),
}

impl Iterator for ValuesIter<'_> {
    type Item = f64;

    #[inline]
    fn next(&mut self) -> Option<f64> {
        match self {
            ValuesIter::Numbers(v) => v.next().copied(),
            ValuesIter::Bytes(b) => b.next().map(|&b| f64::from(b)),
            ValuesIter::Words(w) => w.next().map(|&w| f64::from(u16::from_be_bytes(w))),
        }
    }

    /// The values' kind is matched once for the run, not once a value (`for_each`, `sum`,
    /// `count` and the rest that go by `fold`).
    #[inline]
    fn fold<B, F: FnMut(B, f64) -> B>(self, init: B, mut f: F) -> B {
        match self {
            ValuesIter::Numbers(v) => v.fold(init, |acc, &x| f(acc, x)),
            ValuesIter::Bytes(b) => b.fold(init, |acc, &x| f(acc, f64::from(x))),
            ValuesIter::Words(w) => {
                w.fold(init, |acc, &x| f(acc, f64::from(u16::from_be_bytes(x))))
            }
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            ValuesIter::Numbers(v) => v.size_hint(),
            ValuesIter::Bytes(b) => b.size_hint(),
            ValuesIter::Words(w) => w.size_hint(),
        }
    }
}

/// The accesses of one PDU. A plain `Vec`: an observation's box is recycled with its room
/// ([`Observation::reset`]), so a PDU's accesses cost no allocation once the box has held as
/// many. (Until session 33 one was kept inline, a `SmallVec`, from before boxes were recycled:
/// every push and walk then asked where the list was, and an S7 read of several items went to
/// the heap all the same.)
pub type Accesses = Vec<Access>;

/// One read or write of a contiguous address range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Access {
    /// Address space: Modbus table (0 coils, 1 discrete inputs, 3 input registers, 4 holding
    /// registers, 6 file records), S7 `area << 16 | db`, DNP3 object group.
    pub space: u32,
    pub start: u32,
    /// Number of addresses (registers, bits, bytes or points); at least 1.
    pub count: u32,
    pub write: bool,
    /// Values of `start`, `start + 1`, … where the PDU carries them, in the observation's
    /// buffers ([`Observation::values`] for numbers, [`Observation::bytes`] for values held as
    /// they came on the wire; read with [`Observation::values_of`]): a PDU's values share
    /// buffers whose room a recycled observation keeps, so that an access costs no allocation
    /// and emptying the list visits none.
    pub values: ValuesAt,
}

#[derive(Debug, Clone)]
pub struct Observation {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts: i64,
    pub source: Arc<str>,
    /// Frame number in `source` of the packet that completed the PDU.
    pub frame: u64,
    pub channel: Channel,
    pub kind: Kind,
    /// Protocol function: Modbus function code, DNP3 application function, S7 job function,
    /// S7 userdata as `0x1000 | group << 8 | subfunction`, S7comm-plus function; for
    /// conversations, 0.
    pub function: u32,
    pub function_name: Option<&'static str>,
    /// The functions of the requests a request carries besides its own (the services of a CIP
    /// Multiple Service Packet), each once: learned as the channel's functions, and a new one
    /// is a `new_function_code`.
    pub members: Vec<u32>,
    /// A request that changes the server's data or state.
    pub write: bool,
    /// Request/response correlation: Modbus transaction id, S7 PDU reference, DNP3 sequence.
    pub corr: Option<u32>,
    /// Response time, when the dissector matched the request itself.
    pub latency: Option<f64>,
    pub accesses: Accesses,
    /// The values held as numbers, each access's in a run of its own ([`Access::values`]).
    pub values: Vec<f64>,
    /// The values held as they came on the wire, each access's in a run of its own: bytes
    /// (S7 byte runs, Modbus coils: [`ValuesAt::push_bytes`], [`ValuesAt::push_bits`]) and
    /// big-endian words (Modbus registers: [`ValuesAt::push_words`]).
    pub bytes: Vec<u8>,
    pub exception: bool,
    pub malformed: Option<&'static str>,
    pub crc_error: bool,
    pub command: Option<Command>,
    /// The device says it restarted (DNP3 IIN1.7).
    pub device_restarted: bool,
    /// Identity the device revealed (Modbus device identification, S7 order number/firmware).
    pub identity: Option<String>,
    /// Ethernet address the PDU was sent from (Ethernet captures only).
    pub src_mac: Option<[u8; 6]>,
    /// The transport ports of the packet, from [`Observation::src`] to [`Observation::dst`].
    pub ports: Option<Ports>,
    /// Not a PDU: a TCP segment whose bytes contradict bytes already seen at the same place of
    /// its stream (`tcp_conflicting_overlap`; the channel is the TCP conversation, `Proto::Tcp`
    /// with the server's port as its unit), or an IP fragment whose bytes contradict another
    /// fragment's of the same datagram (`ip_fragment_conflicting_overlap`; `Proto::Tcp` or
    /// `Proto::Udp` by the datagram's protocol, from its sender to its receiver, unit 0).
    /// Raised as `overlap_conflict`; not learned.
    pub stream_anomaly: Option<&'static str>,
}

/// The tag of a CIP object-specific service's function: `CIP_OBJECT_SERVICE | class << 8 |
/// service` (EtherNet/IP; its dissector keys services 0x4B-0x63 on a class so).
pub const CIP_OBJECT_SERVICE: u32 = 0x100_0000;

/// The function of an S7comm-plus session's own life (its creation, set-up and close), above
/// the protocol's 16-bit function codes.
pub const S7PLUS_SESSION: u32 = 0x1_0000;

/// Transport ports of a PDU or an alert, from its source to its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
    /// UDP (true) or TCP.
    pub udp: bool,
}

impl Ports {
    /// The other direction.
    pub fn reversed(self) -> Ports {
        Ports {
            src: self.dst,
            dst: self.src,
            udp: self.udp,
        }
    }
}

/// Entries of an observation's lists (accesses, members) whose room [`Observation::reset`]
/// keeps: a list that grew past it is freed.
pub const KEPT_ROOM: usize = 16;

/// Values whose room [`Observation::reset`] keeps: a buffer that grew past it (a PDU of more
/// values than a plant's polls carry: its 8 KiB) is freed.
pub const KEPT_VALUES: usize = 1024;

/// Bytes (of values held as they came) whose room [`Observation::reset`] keeps, besides the
/// numbers' [`KEPT_VALUES`]: at most 16 KiB of values a box in all.
pub const KEPT_BYTES: usize = 8 * KEPT_VALUES;

/// Values a dissector makes room for at once, at most, when it knows a PDU's size before its
/// values (an S7 read's data): a box with room for more is not kept as a worker's spare
/// (src/shards.rs), so a larger PDU grows its room as it goes instead.
pub const VALUES_AT_ONCE: usize = 256;

/// Bytes (of values held as they came) a dissector makes room for at once, at most: the
/// memory of [`VALUES_AT_ONCE`]. A worker keeps a box as a spare only while its numbers and
/// bytes together hold at most this much room (src/shards.rs).
pub const BYTES_AT_ONCE: usize = 8 * VALUES_AT_ONCE;

impl Observation {
    /// A bare observation, for building in converters and tests.
    // Inlined into the dissectors (another crate): called, the observation was written to
    // memory by a call every PDU.
    #[inline]
    pub fn new(
        ts: i64,
        source: Arc<str>,
        frame: u64,
        channel: Channel,
        kind: Kind,
        function: u32,
    ) -> Self {
        Observation {
            ts,
            source,
            frame,
            channel,
            kind,
            function,
            function_name: None,
            members: Vec::new(),
            write: false,
            corr: None,
            latency: None,
            accesses: Accesses::new(),
            values: Vec::new(),
            bytes: Vec::new(),
            exception: false,
            malformed: None,
            crc_error: false,
            command: None,
            device_restarted: false,
            identity: None,
            src_mac: None,
            ports: None,
            stream_anomaly: None,
        }
    }

    /// Makes this observation (one already run, recycled) a bare one, as [`Observation::new`]
    /// makes it: its lists emptied in place (their room kept for the next PDU, up to
    /// [`KEPT_ROOM`] accesses or members, [`KEPT_VALUES`] numbers and [`KEPT_BYTES`] bytes of
    /// values held as they came), `source` taken only when
    /// it is another than the one held (the reference count stays on this core).
    #[inline]
    pub fn reset(
        &mut self,
        ts: i64,
        source: &Arc<str>,
        frame: u64,
        channel: Channel,
        kind: Kind,
        function: u32,
    ) {
        // Every field by name: a field added to `Observation` must be reset here too.
        let Observation {
            ts: o_ts,
            source: o_source,
            frame: o_frame,
            channel: o_channel,
            kind: o_kind,
            function: o_function,
            function_name,
            members,
            write,
            corr,
            latency,
            accesses,
            values,
            bytes,
            exception,
            malformed,
            crc_error,
            command,
            device_restarted,
            identity,
            src_mac,
            ports,
            stream_anomaly,
        } = self;
        (*o_ts, *o_frame, *o_channel, *o_kind, *o_function) = (ts, frame, channel, kind, function);
        if !Arc::ptr_eq(o_source, source) {
            *o_source = Arc::clone(source);
        }
        *function_name = None;
        // Room kept for the next PDU, up to a bound: a box recycled for the whole run must not
        // keep what one large PDU (thousands of DNP3 object headers) once needed.
        if members.capacity() > KEPT_ROOM {
            *members = Vec::new();
        } else {
            members.clear();
        }
        *write = false;
        *corr = None;
        *latency = None;
        if accesses.capacity() > KEPT_ROOM {
            *accesses = Accesses::new();
        } else {
            // Accesses are `Copy`: nothing to visit.
            accesses.clear();
        }
        if values.capacity() > KEPT_VALUES {
            *values = Vec::new();
        } else {
            values.clear();
        }
        if bytes.capacity() > KEPT_BYTES {
            *bytes = Vec::new();
        } else {
            bytes.clear();
        }
        *exception = false;
        *malformed = None;
        *crc_error = false;
        *command = None;
        *device_restarted = false;
        *identity = None;
        *src_mac = None;
        *ports = None;
        *stream_anomaly = None;
    }

    /// The values of `a`, one of this observation's accesses (none for a span outside the
    /// buffer: never a panic).
    #[inline]
    pub fn values_of(&self, a: &Access) -> Values<'_> {
        let run = a.values;
        let len = run.len as usize;
        if !run.in_bytes() {
            // Numbers: the whole of `at` is where they start.
            let at = run.at as usize;
            return Values::Numbers(
                self.values
                    .get(at..at.saturating_add(len))
                    .unwrap_or_default(),
            );
        }
        let at = (run.at & !(ValuesAt::BYTES | ValuesAt::WORDS)) as usize;
        if run.at & ValuesAt::WORDS == 0 {
            Values::Bytes(
                self.bytes
                    .get(at..at.saturating_add(len))
                    .unwrap_or_default(),
            )
        } else {
            let bytes = (self.bytes)
                .get(at..at.saturating_add(len.saturating_mul(2)))
                .unwrap_or_default();
            Values::Words(bytes.as_chunks::<2>().0)
        }
    }

    /// Appends an access of `values` (none for an empty iterator).
    #[inline]
    pub fn push_access(
        &mut self,
        space: u32,
        start: u32,
        count: u32,
        write: bool,
        values: impl IntoIterator<Item = f64>,
    ) {
        let values = ValuesAt::push(&mut self.values, values);
        self.accesses.push(Access {
            space,
            start,
            count,
            write,
            values,
        });
    }

    /// The IP the PDU came from.
    #[inline]
    pub fn src(&self) -> IpAddr {
        match self.kind {
            Kind::Request | Kind::Conversation => self.channel.client,
            Kind::Response | Kind::Unsolicited => self.channel.server,
        }
    }

    #[inline]
    pub fn dst(&self) -> IpAddr {
        match self.kind {
            Kind::Request | Kind::Conversation => self.channel.server,
            Kind::Response | Kind::Unsolicited => self.channel.client,
        }
    }
}

/// For tests: a Modbus response of client `10.0.0.<client>` from server 192.168.1.10 (unit 1)
/// reading `values` from holding register `start`, at `ts`.
#[cfg(test)]
pub(crate) fn register_read(client: u8, start: u32, values: &[f64], ts: i64) -> Observation {
    let channel = Channel {
        proto: Proto::Modbus,
        client: IpAddr::from([10, 0, 0, client]),
        server: IpAddr::from([192, 168, 1, 10]),
        unit: 1,
    };
    let mut o = Observation::new(ts, Arc::from("t"), 1, channel, Kind::Response, 3);
    o.push_access(4, start, values.len() as u32, false, values.iter().copied());
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folding the values (`for_each` and a counting `fold`: the kind matched once) gives
    /// what taking them one by one gives, for every kind.
    #[test]
    fn folded_values_are_the_values_one_by_one() {
        let numbers = [1.5, -2.0, f64::NAN, 7.0];
        let bytes = [0u8, 1, 0x80, 0xff];
        let words = [[0u8, 1], [0x80, 0], [0xff, 0xff]];
        for v in [
            Values::Numbers(&numbers),
            Values::Bytes(&bytes),
            Values::Words(&words),
        ] {
            // A `for` loop takes them by `next`.
            let mut by_next = Vec::new();
            for x in v.iter() {
                by_next.push(x.to_bits());
            }
            let mut folded = Vec::new();
            v.iter().for_each(|x| folded.push(x.to_bits()));
            assert_eq!(folded, by_next);
            assert_eq!(v.iter().fold(0, |n, _| n + 1), v.len());
        }
        let b: Vec<f64> = Values::Words(&words).iter().collect();
        assert_eq!(b, [1.0, 32768.0, 65535.0]);
    }

    /// A channel of `proto` from 10.0.0.1 to 10.0.0.2.
    fn ch(proto: Proto, unit: u32) -> Channel {
        Channel {
            proto,
            client: IpAddr::from([10, 0, 0, 1]),
            server: IpAddr::from([10, 0, 0, 2]),
            unit,
        }
    }

    /// An observation reset for another PDU is the bare one `new` makes: nothing of the PDU it
    /// held before is left (the dissectors build each observation in one the detector has run).
    #[test]
    fn a_reset_observation_is_a_new_one() {
        let (old_source, source): (Arc<str>, Arc<str>) = (Arc::from("a.pcap"), Arc::from("b"));
        // Every field set, by name (a field added to `Observation` must be added here).
        let mut o = Observation {
            ts: 1,
            source: Arc::clone(&old_source),
            frame: 2,
            channel: ch(Proto::Dnp3, 7),
            kind: Kind::Unsolicited,
            function: 130,
            function_name: Some("unsolicited_response"),
            members: vec![1, 2],
            write: true,
            corr: Some(3),
            latency: Some(0.5),
            accesses: [0, 3]
                .map(|at| Access {
                    space: 4,
                    start: 10,
                    count: 3,
                    write: true,
                    values: ValuesAt { at, len: 3 },
                })
                .into_iter()
                .collect(),
            values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            bytes: vec![7, 8],
            exception: true,
            malformed: Some("truncated"),
            crc_error: true,
            command: Some(Command::PlcStop),
            device_restarted: true,
            identity: Some("6ES7 315".into()),
            src_mac: Some([2, 0, 0, 0, 0, 1]),
            ports: Some(Ports {
                src: 1,
                dst: 2,
                udp: true,
            }),
            stream_anomaly: Some("tcp_conflicting_overlap"),
        };
        o.reset(5, &source, 6, ch(Proto::Modbus, 1), Kind::Request, 3);
        let new = Observation::new(
            5,
            Arc::clone(&source),
            6,
            ch(Proto::Modbus, 1),
            Kind::Request,
            3,
        );
        assert_eq!(format!("{o:?}"), format!("{new:?}"));
        assert!(Arc::ptr_eq(&o.source, &source));
        // The lists' room is kept (the two accesses', their values' and members'), up to a
        // bound.
        assert!(o.accesses.capacity() >= 2 && o.members.capacity() >= 2);
        assert!(o.values.capacity() >= 6 && o.bytes.capacity() >= 2);
        for start in 0..=KEPT_ROOM as u32 {
            o.push_access(4, start, 1, false, None);
        }
        o.members.extend(0..=KEPT_ROOM as u32);
        o.push_access(4, 0, 1, false, (0..=KEPT_VALUES).map(|v| v as f64));
        ValuesAt::push_bytes(&mut o.bytes, &[0; KEPT_BYTES + 1]);
        o.reset(7, &source, 8, ch(Proto::Modbus, 1), Kind::Response, 3);
        assert!(o.accesses.is_empty() && o.members.is_empty() && o.values.is_empty());
        assert!(o.bytes.is_empty());
        assert!(o.accesses.capacity() <= KEPT_ROOM && o.members.capacity() <= KEPT_ROOM);
        assert!(o.values.capacity() <= KEPT_VALUES && o.bytes.capacity() <= KEPT_BYTES);
    }

    /// Each access reads its own values out of the observation's buffers (numbers, or bytes),
    /// and a span that is not in them (a bug) reads as none.
    #[test]
    fn each_access_reads_its_own_values() {
        let mut o = register_read(1, 10, &[1.0, 2.0], 0);
        o.push_access(4, 20, 3, false, None);
        let bytes = ValuesAt::push_bytes(&mut o.bytes, &[5, 0, 255]);
        o.accesses.push(Access {
            space: 4,
            start: 25,
            count: 3,
            write: false,
            values: bytes,
        });
        o.push_access(4, 30, 3, true, [7.0, 8.0, 9.0]);
        let values: Vec<Values> = o.accesses.iter().map(|a| o.values_of(a)).collect();
        assert_eq!(
            values,
            [
                Values::Numbers(&[1.0, 2.0]),
                Values::Numbers(&[]),
                Values::Bytes(&[5, 0, 255]),
                Values::Numbers(&[7.0, 8.0, 9.0])
            ]
        );
        assert_eq!(values[2].to_vec(), [5.0, 0.0, 255.0]);
        assert_eq!(values[3].to_vec(), [7.0, 8.0, 9.0]);
        assert_eq!((values[2].len(), values[1].is_empty()), (3, true));
        // A second run of bytes starts where the first ended.
        let more = ValuesAt::push_bytes(&mut o.bytes, &[1]);
        assert_eq!(
            (more.in_bytes(), more.at & !ValuesAt::BYTES, more.len),
            (true, 3, 1)
        );
        let mut outside = o.accesses[3];
        outside.values.at = 4;
        assert_eq!(o.values_of(&outside), Values::Numbers(&[]));
        outside.values = ValuesAt {
            at: u32::MAX,
            len: u32::MAX,
        };
        assert_eq!(o.values_of(&outside), Values::Words(&[]));
        outside.values = ValuesAt {
            at: ValuesAt::BYTES | 2,
            len: 3,
        };
        assert_eq!(o.values_of(&outside), Values::Bytes(&[]));
        assert_eq!(ValuesAt::span(3, 1), ValuesAt { at: 3, len: 0 });
        // A numbers run whose start has the words flag's bit is numbers all the same.
        outside.values = ValuesAt {
            at: ValuesAt::WORDS,
            len: 1,
        };
        assert_eq!(o.values_of(&outside), Values::Numbers(&[]));
        // A run of bytes past where the flags begin is none, of either form.
        for words in [0, ValuesAt::WORDS] {
            let far = ValuesAt::in_buffer(1 << 30, (1 << 30) + 4, words);
            assert_eq!((far.len, far.in_bytes()), (0, true));
            outside.values = far;
            assert!(o.values_of(&outside).is_empty());
        }
    }

    /// A channel names its unit where the protocol has one; S7's (always 0) is left out rather
    /// than shown as a rack and slot nobody said.
    #[test]
    fn a_channel_names_its_unit_where_the_protocol_has_one() {
        assert_eq!(
            ch(Proto::Modbus, 1).to_string(),
            "modbus 10.0.0.1 -> 10.0.0.2 unit 1"
        );
        assert_eq!(
            ch(Proto::Dnp3, 3 << 16 | 4).to_string(),
            "dnp3 10.0.0.1 -> 10.0.0.2 link addresses 3->4"
        );
        assert_eq!(
            ch(Proto::S7comm, 0).to_string(),
            "s7comm 10.0.0.1 -> 10.0.0.2"
        );
    }
}
