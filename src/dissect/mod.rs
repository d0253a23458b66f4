//! Glue between reassembled streams and the protocol parsers in `otwatch-parsers`: per-flow
//! protocol state, request/response matching and event building.

pub mod dnp3;
pub mod enip;
pub mod iec104;
pub mod modbus;
pub mod registry;
pub mod s7;

pub use registry::{Dissector, ProtoId, ProtoSpec, PROTOCOLS};

use std::net::IpAddr;
use std::sync::Arc;

use crate::event::{Event, EventSink, FlushKey, Timestamp};
use crate::stats::Stats;
use otwatch_models::{Channel, Kind, Observation, Proto};

/// The request at `i` of a queue of requests awaiting their answers, taken out. Answers come in
/// order, mostly: the oldest is popped from the front, without the general removal's code (a
/// call, and copies of the ring's halves) on every answer.
#[inline]
pub(crate) fn take_answered<T>(queue: &mut std::collections::VecDeque<T>, i: usize) -> Option<T> {
    if i == 0 {
        queue.pop_front()
    } else {
        queue.remove(i)
    }
}

/// Bytes as lowercase hex, for event fields that carry raw data.
pub(crate) fn hex(data: &[u8]) -> String {
    use std::fmt::Write;
    data.iter()
        .fold(String::with_capacity(2 * data.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Text from the wire, invalid UTF-8 replaced.
pub(crate) fn lossy_text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Direction of data within a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToServer = 0,
    ToClient = 1,
}

impl Dir {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Who is client and who is server in a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    /// Over UDP (else TCP).
    pub udp: bool,
}

/// What dissectors know across flows, per pipeline (a worker owns its host pairs, so the flows
/// of two hosts share one): a protocol that needs it adds its own member.
#[derive(Default)]
pub struct Shared {
    pub enip: enip::Connections,
    /// The box the next observation is built in ([`Ctx::observation`]): what the sink gave
    /// back for the last one (an observation it has run, whose lists keep their room).
    spare_observation: Option<Box<Observation>>,
}

/// What a dissector needs to know about the packet being processed, and where its output goes.
pub struct Ctx<'a> {
    pub ts_nanos: i64,
    pub frame: u64,
    pub source: &'a Arc<str>,
    pub endpoints: &'a Endpoints,
    /// The current packet's sender IP and its Ethernet source and destination.
    pub macs: Option<(IpAddr, crate::event::LinkAddrs<'a>)>,
    pub shared: &'a mut Shared,
    pub stats: &'a mut Stats,
    pub sink: &'a mut dyn EventSink,
}

impl Ctx<'_> {
    /// The sender's and the receiver's ends of a PDU travelling in `dir`.
    fn ends(&self, dir: Dir) -> ((IpAddr, u16), (IpAddr, u16)) {
        match dir {
            Dir::ToServer => (self.endpoints.client, self.endpoints.server),
            Dir::ToClient => (self.endpoints.server, self.endpoints.client),
        }
    }

    /// The Ethernet addresses of a PDU sent from `src`: the packet that completed the PDU was
    /// sent by the PDU's sender, except when a flow's end flushes data (then the addresses are
    /// the other way round).
    fn macs_from(&self, src: IpAddr) -> Option<(crate::event::Mac, crate::event::Mac)> {
        self.macs.map(|(ip, m)| {
            if ip == src {
                (m.src(), m.dst())
            } else {
                (m.dst(), m.src())
            }
        })
    }

    /// An event skeleton for a PDU travelling in `dir`, completed by the current packet.
    pub fn event(&self, proto: &'static str, dir: Dir) -> Event {
        let (src, dst) = self.ends(dir);
        let direction = match dir {
            Dir::ToServer => crate::event::Direction::Request,
            Dir::ToClient => crate::event::Direction::Response,
        };
        let macs = self.macs_from(src.0);
        Event {
            ts: Timestamp(self.ts_nanos),
            source: Arc::clone(self.source),
            frame: self.frame,
            proto,
            transport: crate::event::L4::of(self.endpoints.udp),
            src_ip: src.0,
            src_port: src.1,
            dst_ip: dst.0,
            dst_port: dst.1,
            direction,
            src_mac: macs.map(|m| m.0),
            dst_mac: macs.map(|m| m.1),
            pdu: crate::event::Pdu::Conversation {
                udp: self.endpoints.udp,
            },
        }
    }

    /// Emit an event and count it.
    pub fn emit(&mut self, event: Event) {
        self.sink.emit(event);
        self.stats.events += 1;
    }

    /// Whether a PDU's record is wanted at all: its event or its observation.
    pub fn wants_records(&self) -> bool {
        self.sink.wants_events()
    }

    /// Whether the sink reads observations (detection, per-channel metrics).
    pub fn wants_observations(&self) -> bool {
        self.sink.wants_observations()
    }

    /// Whether the sink reads the events themselves (an events output).
    pub fn wants_event_out(&self) -> bool {
        self.sink.wants_event_out()
    }

    /// The observation of a PDU travelling in `dir`, as
    /// [`crate::detection::observe::observe`] makes it from the event's header: the dissector
    /// fills in the rest, then hands it to [`Ctx::emit_observed`]. Built in the box the sink
    /// gave back for the last one: neither the box nor its lists are allocated again, and what
    /// the sink gave back is not dropped.
    pub fn observation(
        &mut self,
        proto: Proto,
        unit: u32,
        dir: Dir,
        function: u32,
    ) -> Box<Observation> {
        let kind = match dir {
            Dir::ToServer => Kind::Request,
            Dir::ToClient => Kind::Response,
        };
        let channel = Channel {
            proto,
            client: self.endpoints.client.0,
            server: self.endpoints.server.0,
            unit,
        };
        match self.shared.spare_observation.take() {
            Some(mut o) => {
                o.reset(
                    self.ts_nanos,
                    self.source,
                    self.frame,
                    channel,
                    kind,
                    function,
                );
                o
            }
            None => Box::new(Observation::new(
                self.ts_nanos,
                Arc::clone(self.source),
                self.frame,
                channel,
                kind,
                function,
            )),
        }
    }

    /// A PDU's record (`record`, of `proto`) to the sink. With detection and no events output,
    /// its observation is built in the box the pipeline keeps by `fill` (which says whether the
    /// PDU has one; the box comes as [`Ctx::observation`] makes it, unit 0), with no event, and
    /// the observations detection holds in its batch are not run early for it; a PDU that has
    /// none (a keep-alive, an S or U frame) is only counted as an event, as the sink would do
    /// nothing else with it (its event would make no observation, and nobody reads events).
    /// Otherwise its event `name` of `wrap(record)`.
    pub fn emit_record<R>(
        &mut self,
        dir: Dir,
        (proto, name): (Proto, &'static str),
        record: R,
        fill: impl FnOnce(&R, &mut Observation) -> bool,
        wrap: impl FnOnce(R) -> crate::event::Pdu,
    ) {
        if !self.wants_event_out() && self.wants_observations() {
            let mut o = self.observation(proto, 0, dir, 0);
            if fill(&record, &mut o) {
                self.emit_observed(dir, o);
            } else {
                self.keep_spare(o);
                self.stats.events += 1;
            }
            return;
        }
        let mut event = self.event(name, dir);
        event.pdu = wrap(record);
        self.emit(event);
    }

    /// A PDU travelling in `dir` whose observation the dissector built from the parser's
    /// records ([`Ctx::observation`]), without its event (nobody reads events); counted as one
    /// event, as [`Ctx::emit`] counts one.
    pub fn emit_observed(&mut self, dir: Dir, obs: Box<Observation>) {
        self.hand_over(dir, obs);
        self.stats.events += 1;
    }

    /// An observation made by [`Ctx::observation`] and not handed over: its box is kept for
    /// the next.
    pub fn keep_spare(&mut self, obs: Box<Observation>) {
        self.shared.spare_observation = Some(obs);
    }

    /// An observation of the current packet, sent in `dir`, to the sink; the box it gives back
    /// is kept for the next.
    fn hand_over(&mut self, dir: Dir, mut obs: Box<Observation>) {
        let (src, dst) = self.ends(dir);
        obs.src_mac = self.macs_from(src.0).map(|m| m.0 .0);
        obs.ports = Some(crate::detection::observe::ports_of(
            src,
            dst,
            self.endpoints.udp,
            obs.src(),
        ));
        let key = FlushKey {
            ts: self.ts_nanos,
            frame: self.frame,
            src,
            dst,
        };
        self.sink.observed(key, &mut obs);
        self.shared.spare_observation = Some(obs);
    }

    /// The current packet, sent in `dir`, carries bytes that contradict bytes the TCP stream
    /// already had at the same place: counted, and for detection an observation of the
    /// stream (its channel the TCP conversation: `Proto::Tcp`, the server's port as unit),
    /// which raises `overlap_conflict`. No event: it is no PDU.
    pub fn stream_conflict(&mut self, dir: Dir) {
        self.stats.tcp.conflicting_overlaps += 1;
        if !self.wants_observations() {
            return;
        }
        let mut obs = self.observation(Proto::Tcp, u32::from(self.endpoints.server.1), dir, 0);
        obs.stream_anomaly = Some("tcp_conflicting_overlap");
        self.hand_over(dir, obs);
    }
}

/// The application protocol state of one flow: its protocol's dissector, or none (the flow is
/// only counted).
#[derive(Debug)]
pub struct App(Option<(ProtoId, Box<dyn Dissector>)>);

impl App {
    /// The dissector for a protocol. Validation happens inside it: bytes on port 502 that never
    /// parse as Modbus produce no Modbus events.
    pub fn new(proto: Option<ProtoId>) -> App {
        App(proto.and_then(|p| Some((p, (p.spec().new?)()))))
    }

    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `port` is one a server of a dissected protocol listens on (over UDP when
    /// `udp`).
    pub fn is_server_port(port: u16, udp: bool) -> bool {
        ProtoId::for_server_port(port, udp).is_some()
    }

    /// Stream data in order; returns how many bytes were consumed. The rest is presented again,
    /// followed by more data, on the next call.
    pub fn on_stream_data(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) -> usize {
        match &mut self.0 {
            None => data.len(),
            Some((_, d)) => d.on_stream_data(ctx, dir, data),
        }
    }

    /// A datagram (UDP): every PDU is inside it.
    pub fn on_datagram(&mut self, ctx: &mut Ctx<'_>, dir: Dir, data: &[u8]) {
        if let Some((_, d)) = &mut self.0 {
            d.on_datagram(ctx, dir, data);
        }
    }

    /// The stream in `dir` was picked up mid-stream (its SYN not seen).
    pub fn on_midstream(&mut self, dir: Dir) {
        if let Some((_, d)) = &mut self.0 {
            d.on_midstream(dir);
        }
    }

    /// Bytes of the stream in `dir` were lost: any partial PDU is gone; resynchronise.
    pub fn on_gap(&mut self, ctx: &mut Ctx<'_>, dir: Dir) {
        if let Some((_, d)) = &mut self.0 {
            d.on_gap(ctx, dir);
        }
    }

    /// The most bytes the dissector may leave unconsumed (a partial PDU).
    pub fn max_buffered(&self) -> usize {
        self.0.as_ref().map_or(0, |(p, _)| p.spec().max_buffered)
    }

    /// The flow ends (evicted, or the capture is over).
    pub fn on_close(&mut self, ctx: &mut Ctx<'_>) {
        if let Some((_, d)) = &mut self.0 {
            d.on_close(ctx);
        }
    }
}
