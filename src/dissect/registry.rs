//! The protocol registry: the one table of the protocols otwatch reports. The flow table asks it
//! which dissector a flow gets (by server port, or by probing the first payload); the counters
//! (`Stats`), the summary and the metrics iterate over it. Adding a protocol is a line here;
//! docs/protocols.md has the whole recipe. The typed records the dissectors hand on are one
//! enum, [`Pdu`], kept here beside the table.

use serde::Serialize;

use super::{Ctx, Dir};

/// A protocol's per-flow state, fed in order: reassembled stream data (TCP), or datagrams (UDP).
pub trait Dissector: std::fmt::Debug + Send {
    /// Stream data in order; returns how many bytes were consumed. The rest is presented again,
    /// followed by more data, on the next call.
    fn on_stream_data(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) -> usize;
    /// A datagram: every PDU is inside it. Ignored by stream-only protocols.
    fn on_datagram(&mut self, _ctx: &mut Ctx<'_>, _dir: Dir, _data: &[u8]) {}
    /// Bytes of the stream in `dir` were lost: any partial PDU is gone; resynchronise.
    fn on_gap(&mut self, ctx: &mut Ctx<'_>, dir: Dir);
    /// The stream in `dir` was picked up mid-stream (its SYN not seen): its first bytes may
    /// start anywhere in a PDU. A protocol with no start marker may want to resynchronise.
    fn on_midstream(&mut self, _dir: Dir) {}
    /// The flow ends (evicted, or the capture is over).
    fn on_close(&mut self, ctx: &mut Ctx<'_>);
}

/// A protocol's place in [`PROTOCOLS`], and of its counters in `Stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProtoId(pub usize);

/// Recognises a protocol in a payload: `Some(sender is the client)`.
pub type Probe = fn(&[u8]) -> Option<bool>;

/// What otwatch knows about one protocol.
pub struct ProtoSpec {
    /// The events' `proto` and the metrics' `proto` label.
    pub name: &'static str,
    /// Its lines in the summary.
    pub heading: &'static str,
    /// Ports its servers listen on (TCP and UDP).
    pub ports: &'static [u16],
    /// Ports its servers listen on over UDP only (EtherNet/IP's I/O on 2222: a TCP session to
    /// 2222, an SSH server say, is a conversation of its own, reported as a new talker).
    pub udp_ports: &'static [u16],
    /// Recognises the protocol from a flow's first payload on any port, and says whether the
    /// sender is the client (master). Only for protocols whose framing validates itself strongly.
    pub probe: Option<Probe>,
    /// Says, from a UDP datagram between two of its server ports (a ListIdentity reply from
    /// 44818 to a scanner that sent from 44818), whether the sender is the client; without
    /// it, or when it cannot tell, the first datagram's sender is.
    pub udp_direction: Option<Probe>,
    /// The name of a function code (the code counted per PDU).
    pub function_name: fn(u8) -> Option<&'static str>,
    /// The most bytes its dissector may leave unconsumed (a partial PDU).
    pub max_buffered: usize,
    /// A dissector for a new flow; `None` for a protocol carried inside another's flows
    /// (S7comm-plus, found by the S7 dissector on port 102).
    pub new: Option<fn() -> Box<dyn Dissector>>,
}

pub const MODBUS: ProtoId = ProtoId(0);
pub const DNP3: ProtoId = ProtoId(1);
pub const S7COMM: ProtoId = ProtoId(2);
pub const S7COMMPLUS: ProtoId = ProtoId(3);
pub const IEC104: ProtoId = ProtoId(4);
pub const ENIP: ProtoId = ProtoId(5);
/// How many protocols the table holds.
pub const COUNT: usize = 6;

fn modbus_function(fc: u8) -> Option<&'static str> {
    otwatch_parsers::modbus::FunctionCode(fc).name()
}

fn dnp3_function(fc: u8) -> Option<&'static str> {
    otwatch_parsers::dnp3::AppFunction(fc).name()
}

fn s7_function(fc: u8) -> Option<&'static str> {
    otwatch_parsers::s7::FunctionCode(fc).name()
}

fn iec104_type(t: u8) -> Option<&'static str> {
    otwatch_parsers::iec104::TypeId(t).name()
}

fn cip_service(s: u8) -> Option<&'static str> {
    otwatch_parsers::enip::Service(s).name()
}

fn s7plus_opcode(op: u8) -> Option<&'static str> {
    otwatch_parsers::s7::PlusOpcode(op).name()
}

/// Every protocol, in [`ProtoId`] order.
pub static PROTOCOLS: [ProtoSpec; COUNT] = [
    ProtoSpec {
        name: "modbus",
        heading: "modbus",
        ports: &[otwatch_parsers::modbus::DEFAULT_PORT],
        udp_ports: &[],
        probe: None,
        udp_direction: None,
        function_name: modbus_function,
        max_buffered: otwatch_parsers::modbus::MAX_ADU_LEN,
        new: Some(|| Box::<super::modbus::ModbusFlow>::default()),
    },
    ProtoSpec {
        name: "dnp3",
        heading: "dnp3",
        ports: &[super::dnp3::DEFAULT_PORT],
        udp_ports: &[],
        probe: Some(super::dnp3::probe),
        udp_direction: None,
        function_name: dnp3_function,
        max_buffered: super::dnp3::MAX_BUFFERED,
        new: Some(|| Box::<super::dnp3::Dnp3Flow>::default()),
    },
    ProtoSpec {
        name: "s7comm",
        heading: "s7comm",
        ports: &[super::s7::DEFAULT_PORT],
        udp_ports: &[],
        probe: None,
        udp_direction: None,
        function_name: s7_function,
        max_buffered: super::s7::MAX_BUFFERED,
        new: Some(|| Box::<super::s7::S7Flow>::default()),
    },
    ProtoSpec {
        name: "s7commplus",
        heading: "s7comm-plus (by opcode)",
        ports: &[],
        udp_ports: &[],
        probe: None,
        udp_direction: None,
        function_name: s7plus_opcode,
        max_buffered: 0,
        new: None,
    },
    ProtoSpec {
        name: "iec104",
        heading: "iec104 (I frames by type id)",
        ports: &[super::iec104::DEFAULT_PORT],
        udp_ports: &[],
        probe: None,
        udp_direction: None,
        function_name: iec104_type,
        max_buffered: super::iec104::MAX_BUFFERED,
        new: Some(|| Box::<super::iec104::Iec104Flow>::default()),
    },
    ProtoSpec {
        name: "enip",
        heading: "enip (CIP by service)",
        ports: &[super::enip::DEFAULT_PORT],
        udp_ports: &[otwatch_parsers::enip::IO_PORT],
        probe: None,
        udp_direction: Some(super::enip::udp_direction),
        function_name: cip_service,
        max_buffered: super::enip::MAX_BUFFERED,
        new: Some(|| Box::<super::enip::EnipFlow>::default()),
    },
];

/// The typed record of one PDU: its protocol's own structure. Serialised as one member named
/// after the protocol (`"modbus": {...}`), or none for a conversation of an undissected
/// protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Pdu {
    /// A conversation of a protocol otwatch does not dissect (`tcp`/`udp` events), over UDP
    /// (true) or TCP.
    Conversation {
        udp: bool,
    },
    Modbus(crate::event::ModbusEvent),
    Dnp3(super::dnp3::Dnp3Event),
    S7comm(super::s7::S7Event),
    S7commplus(super::s7::S7PlusEvent),
    Cotp(super::s7::CotpEvent),
    Iec104(super::iec104::Iec104Event),
    Enip(super::enip::EnipEvent),
}

impl Serialize for Pdu {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match self {
            Pdu::Conversation { .. } => {}
            Pdu::Modbus(x) => m.serialize_entry("modbus", x)?,
            Pdu::Dnp3(x) => m.serialize_entry("dnp3", x)?,
            Pdu::S7comm(x) => m.serialize_entry("s7comm", x)?,
            Pdu::S7commplus(x) => m.serialize_entry("s7commplus", x)?,
            Pdu::Cotp(x) => m.serialize_entry("cotp", x)?,
            Pdu::Iec104(x) => m.serialize_entry("iec104", x)?,
            Pdu::Enip(x) => m.serialize_entry("enip", x)?,
        }
        m.end()
    }
}

impl crate::event::Event {
    pub fn modbus(&self) -> Option<&crate::event::ModbusEvent> {
        match &self.pdu {
            Pdu::Modbus(x) => Some(x),
            _ => None,
        }
    }
    pub fn modbus_mut(&mut self) -> Option<&mut crate::event::ModbusEvent> {
        match &mut self.pdu {
            Pdu::Modbus(x) => Some(x),
            _ => None,
        }
    }
    pub fn dnp3(&self) -> Option<&super::dnp3::Dnp3Event> {
        match &self.pdu {
            Pdu::Dnp3(x) => Some(x),
            _ => None,
        }
    }
    pub fn s7comm(&self) -> Option<&super::s7::S7Event> {
        match &self.pdu {
            Pdu::S7comm(x) => Some(x),
            _ => None,
        }
    }
    pub fn s7commplus(&self) -> Option<&super::s7::S7PlusEvent> {
        match &self.pdu {
            Pdu::S7commplus(x) => Some(x),
            _ => None,
        }
    }
    pub fn cotp(&self) -> Option<&super::s7::CotpEvent> {
        match &self.pdu {
            Pdu::Cotp(x) => Some(x),
            _ => None,
        }
    }
}

impl ProtoId {
    pub fn spec(self) -> &'static ProtoSpec {
        &PROTOCOLS[self.0]
    }

    /// Every protocol, in table order.
    pub fn all() -> impl Iterator<Item = ProtoId> {
        (0..COUNT).map(ProtoId)
    }

    /// The protocol with a dissector whose server listens on `port` (over UDP when `udp`).
    /// Asked twice for every packet, and most ports (a client's) name none: a bitmap of the
    /// table's ports answers those, and a flat list of (port, UDP only, protocol) the rest.
    /// Both built once.
    pub fn for_server_port(port: u16, udp: bool) -> Option<ProtoId> {
        struct Ports {
            any: Box<[u64; 1024]>,
            list: Vec<(u16, bool, ProtoId)>,
        }
        static PORTS: std::sync::OnceLock<Ports> = std::sync::OnceLock::new();
        let ports = PORTS.get_or_init(|| {
            let list: Vec<(u16, bool, ProtoId)> = Self::all()
                .filter(|p| p.spec().new.is_some())
                .flat_map(|p| {
                    let spec = p.spec();
                    let both = spec.ports.iter().map(move |&port| (port, false, p));
                    both.chain(spec.udp_ports.iter().map(move |&port| (port, true, p)))
                })
                .collect();
            let mut any = Box::new([0u64; 1024]);
            for &(q, _, _) in &list {
                any[usize::from(q >> 6)] |= 1 << (q & 63);
            }
            Ports { any, list }
        });
        if ports.any[usize::from(port >> 6)] & (1 << (port & 63)) == 0 {
            return None;
        }
        ports
            .list
            .iter()
            .find_map(|&(q, udp_only, p)| (q == port && (udp || !udp_only)).then_some(p))
    }

    /// A protocol recognised from the first payload of a flow on a port that names none, and
    /// whether the sender is the client (master).
    /// For a UDP datagram between two server ports of one protocol, the protocol and whether
    /// the sender is the client, when the protocol can tell from the payload.
    pub fn udp_direction(port: u16, payload: &[u8]) -> Option<(ProtoId, bool)> {
        let p = Self::for_server_port(port, true)?;
        let direction = p.spec().udp_direction?;
        direction(payload).map(|from_client| (p, from_client))
    }

    pub fn probe(payload: &[u8]) -> Option<(ProtoId, bool)> {
        Self::all().find_map(|p| {
            let probe = p.spec().probe?;
            probe(payload).map(|from_client| (p, from_client))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        let names: std::collections::BTreeSet<&str> = PROTOCOLS.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), COUNT, "names are unique");
        for p in ProtoId::all() {
            let spec = p.spec();
            // A protocol found by probing needs a dissector for the flows it is found on.
            assert!(spec.probe.is_none() || spec.new.is_some(), "{}", spec.name);
            if spec.new.is_some() {
                assert!(spec.max_buffered > 0, "{}", spec.name);
                for port in spec.ports {
                    assert_eq!(
                        ProtoId::for_server_port(*port, false),
                        Some(p),
                        "{}",
                        spec.name
                    );
                    assert_eq!(
                        ProtoId::for_server_port(*port, true),
                        Some(p),
                        "{}",
                        spec.name
                    );
                }
                for port in spec.udp_ports {
                    assert_eq!(
                        ProtoId::for_server_port(*port, true),
                        Some(p),
                        "{}",
                        spec.name
                    );
                }
            }
        }
        assert_eq!(ProtoId::for_server_port(502, false), Some(MODBUS));
        assert_eq!(ProtoId::for_server_port(20000, true), Some(DNP3));
        assert_eq!(ProtoId::for_server_port(102, false), Some(S7COMM));
        assert_eq!(ProtoId::for_server_port(80, false), None);
        assert_eq!(ProtoId::for_server_port(2222, true), Some(ENIP));
        assert_eq!(
            ProtoId::for_server_port(2222, false),
            None,
            "I/O is UDP only"
        );
        // Every port answers as the table says (the bitmap has no stray bit and misses none).
        for port in 0..=u16::MAX {
            for udp in [false, true] {
                let listed = ProtoId::all().find(|p| {
                    let spec = p.spec();
                    spec.new.is_some()
                        && (spec.ports.contains(&port) || udp && spec.udp_ports.contains(&port))
                });
                assert_eq!(ProtoId::for_server_port(port, udp), listed, "port {port}");
            }
        }
        assert_eq!(
            (MODBUS.spec().function_name)(3),
            Some("read_holding_registers")
        );
    }
}
