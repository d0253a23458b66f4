//! Bounded flow table keyed by the canonical 5-tuple (+VLAN), with idle eviction by capture time.
//!
//! Only flows of a dissected protocol (one side on its well-known port) are tracked; other
//! traffic is counted and passed over, so a port scan or an IT backup cannot crowd the OT flows
//! out of the table. Client and server come from the well-known port, which names the server
//! even when the TCP connection was opened the other way (see [`new_flow`]).

pub mod tcp;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::decode::{Decoded, Transport};
use crate::dissect::{App, Ctx, Dir, Endpoints, ProtoId};
use crate::event::EventSink;
use crate::stats::Stats;
use tcp::TcpStream;

pub const DEFAULT_MAX_FLOWS: usize = 100_000;
/// Flows idle this long (capture time) are evicted. OT polling is seconds apart; 10 minutes of
/// silence on a connection means it is gone.
pub const DEFAULT_IDLE_TIMEOUT_NANOS: i64 = 600 * 1_000_000_000;
/// Idle flows are looked for at most this often (capture time), also when the table is full,
/// so a flood of new flows against a full table costs one scan per interval, not one per packet.
const SWEEP_INTERVAL_NANOS: i64 = 10 * 1_000_000_000;

/// When idle flows are swept: at a packet 10 s of capture time after the last sweep (or when
/// the clock steps back, which restarts the interval instead of stalling it).
pub struct SweepClock;

impl SweepClock {
    pub fn due(last_sweep: &mut i64, now: i64) -> bool {
        if now < *last_sweep || now.saturating_sub(*last_sweep) >= SWEEP_INTERVAL_NANOS {
            *last_sweep = now;
            true
        } else {
            false
        }
    }
}

/// A flow's identity: its two ends in a canonical order, its transport protocol and its VLAN.
/// Plain words rather than `IpAddr`s: every packet hashes one and compares it in the table, and
/// the address enum's comparisons and hashing took 5% of dissection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// The lower end's address: IPv4 in the low 32 bits, or IPv6 (`IPV6` set in `rest`).
    lo: u128,
    hi: u128,
    /// The lower end's port (bits 0-15), the higher end's (16-31), the VLAN (32-47), the
    /// protocol (48-55) and `IPV6`.
    rest: u64,
}

impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.lo);
        state.write_u128(self.hi);
        state.write_u64(self.rest);
    }
}

impl FlowKey {
    const IPV6: u64 = 1 << 56;

    pub fn new(vlan: u16, protocol: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> FlowKey {
        let word = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 0),
            IpAddr::V6(v6) => (u128::from(v6), FlowKey::IPV6),
        };
        let ((a_addr, a6), (b_addr, b6)) = (word(a.0), word(b.0));
        // The ends in (family, address, port) order: which end is lower does not matter, only
        // that both directions of a flow agree.
        let (lo, hi) = if (a6, a_addr, a.1) <= (b6, b_addr, b.1) {
            ((a_addr, a.1), (b_addr, b.1))
        } else {
            ((b_addr, b.1), (a_addr, a.1))
        };
        FlowKey {
            lo: lo.0,
            hi: hi.0,
            rest: u64::from(lo.1)
                | u64::from(hi.1) << 16
                | u64::from(vlan) << 32
                | u64::from(protocol) << 48
                | (a6 | b6),
        }
    }
}

#[derive(Debug)]
pub struct Flow {
    /// Creation order: flows are flushed in it, so output does not depend on hash order.
    id: u64,
    pub endpoints: Endpoints,
    pub last_seen: i64,
    last_frame: u64,
    source: Arc<str>,
    pub app: App,
    /// Set when the protocol was recognised by probing rather than by port.
    probed: Option<(ProtoId, bool)>,
    /// Any payload seen: a flow without it is half-open or empty, the first to go when the
    /// table is full.
    carried_data: bool,
    /// Indexed by [`Dir::index`].
    streams: [TcpStream; 2],
    /// A SYN with a new initial sequence number on this open connection (its direction's index
    /// and ISN), held until the other end answers it with a SYN-ACK: a server takes a new
    /// connection on the 5-tuple only then (RFC 9293 3.10.7.4, RFC 5961 4: a SYN on an
    /// established connection gets a challenge ACK and changes nothing), and a spoofed SYN that
    /// moved the stream's position would hide the real client's requests.
    pending_syn: Option<(usize, u32)>,
    /// A FIN or a RST was seen: a SYN may open the next connection at once (TIME-WAIT reuse).
    closing: bool,
    /// In [`FlowTable::holes_waiting`].
    hole_listed: bool,
}

/// What the flow table needs to know about the packet in hand.
pub struct PacketInfo<'a> {
    pub ts_nanos: i64,
    pub frame: u64,
    pub source: &'a Arc<str>,
    /// Ethernet source and destination of the packet, when the link layer is Ethernet.
    pub macs: Option<crate::event::LinkAddrs<'a>>,
}

/// Keys are attacker-controlled on a SPAN port: a per-process random seed keeps the table from
/// being flooded into one bucket, and foldhash is several times cheaper than SipHash here.
/// Flows are boxed: the table's entries stay small (the key and a pointer, where a flow is
/// 560 bytes), and a flow leaving the table is not copied out of it.
type FlowMap = HashMap<FlowKey, Box<Flow>, foldhash::fast::RandomState>;

pub struct FlowTable {
    flows: FlowMap,
    /// What the dissectors know across flows (a Forward Open's connection, for its UDP I/O).
    shared: crate::dissect::Shared,
    talkers: Talkers,
    max_flows: usize,
    idle_timeout: i64,
    last_sweep: i64,
    /// No flow was last seen before this (`i64::MAX` with none): a sweep before it is a timeout
    /// away finds nothing idle, and skips its scan of the table.
    seen_since: i64,
    next_id: u64,
    /// Flows with a hole the peer acknowledged that waits for the flow's next packet: skipped
    /// at the next sweep if none came (a flow that went quiet after a bare acknowledgement
    /// would hold the data behind the hole until it idled out).
    holes_waiting: Vec<FlowKey>,
}

impl Default for FlowTable {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FLOWS, DEFAULT_IDLE_TIMEOUT_NANOS)
    }
}

impl FlowTable {
    pub fn new(max_flows: usize, idle_timeout_nanos: i64) -> FlowTable {
        FlowTable {
            flows: FlowMap::default(),
            shared: Default::default(),
            talkers: Talkers::default(),
            max_flows: max_flows.max(1),
            idle_timeout: idle_timeout_nanos,
            last_sweep: i64::MIN,
            seen_since: i64::MAX,
            next_id: 0,
            holes_waiting: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Whether the idle flows are due to be swept at `now` (every 10 s of capture time; then
    /// [`FlowTable::sweep`], and the clock counts from here). The pipeline asks for every
    /// packet; with several workers the reader decides for all of them ([`SweepClock`]), so
    /// that flows close at the same packets as with one.
    pub fn sweep_due(&mut self, now: i64) -> bool {
        SweepClock::due(&mut self.last_sweep, now)
    }

    pub fn process(
        &mut self,
        pkt: &Decoded<'_>,
        info: &PacketInfo<'_>,
        stats: &mut Stats,
        sink: &mut dyn EventSink,
    ) {
        let now = info.ts_nanos;
        let (protocol, sport, dport) = match pkt.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            } => (6u8, src_port, dst_port),
            Transport::Udp {
                src_port, dst_port, ..
            } => (17u8, src_port, dst_port),
        };
        let sender = (pkt.src, sport);
        let receiver = (pkt.dst, dport);
        let key = FlowKey::new(pkt.vlan, protocol, sender, receiver);
        // The protocol from a well-known port; failing that, a flow already found by probing;
        // failing that, probe this payload (DNP3 on a non-standard port validates itself).
        let mut probed = None;
        let udp = protocol == 17;
        if ProtoId::for_server_port(dport, udp).is_none()
            && ProtoId::for_server_port(sport, udp).is_none()
            && !self.flows.contains_key(&key)
        {
            let payload = match pkt.transport {
                Transport::Tcp { payload, .. } | Transport::Udp { payload, .. } => payload,
            };
            match ProtoId::probe(payload) {
                Some(found) => probed = Some(found),
                None => {
                    stats.flows.untracked_packets += 1;
                    if sink.wants_events() {
                        self.talkers.note(pkt, info, stats, sink);
                    }
                    return;
                }
            }
        } else if udp && sport == dport && !self.flows.contains_key(&key) {
            // Both ends on the server port: the first datagram may be a reply (a device
            // answering a scanner that broadcast from the port), which the payload tells.
            if let Transport::Udp { payload, .. } = pkt.transport {
                probed = ProtoId::udp_direction(dport, payload);
            }
        }
        if self.flows.len() >= self.max_flows && !self.flows.contains_key(&key) {
            // A SYN flood must not lock the plant's flows out for the idle timeout: make room.
            self.evict_for_room(stats, sink);
            if self.flows.len() >= self.max_flows {
                stats.flows.table_full_drops += 1;
                return;
            }
        }
        // Nearly every packet finds its flow: a plain lookup, and an entry only for a new one.
        let flow: &mut Flow = match self.flows.get_mut(&key) {
            Some(flow) => flow,
            None => {
                stats.flows.created += 1;
                self.next_id += 1;
                let id = self.next_id;
                self.flows
                    .entry(key)
                    .or_insert_with(|| Box::new(new_flow(id, pkt, sender, receiver, info, probed)))
            }
        };
        flow.last_seen = now;
        // The capture clock can step back (a later file's packets are older).
        self.seen_since = self.seen_since.min(now);
        flow.last_frame = info.frame;
        flow.carried_data |= match pkt.transport {
            Transport::Tcp { payload, .. } | Transport::Udp { payload, .. } => !payload.is_empty(),
        };
        if !Arc::ptr_eq(&flow.source, info.source) {
            flow.source = Arc::clone(info.source);
        }
        // A SYN with a new initial sequence number reuses the 5-tuple for a new connection:
        // finish the old one (its data, its protocol state) and start afresh. A SYN-ACK too,
        // for the capture may have missed the client's SYN: the old connection's partial PDU
        // must not be glued to the new one's first.
        if let Transport::Tcp {
            flags,
            seq,
            ack,
            payload,
            ..
        } = pkt.transport
        {
            let dir = direction(flow, sender);
            if flags.fin || flags.rst {
                flow.closing = true;
            }
            // The held SYN's first data, right after its ISN: the connection it opened, whose
            // SYN-ACK the capture missed.
            let opened = flow.pending_syn.filter(|&(d, isn)| {
                !flags.syn && d == dir.index() && !payload.is_empty() && seq == isn.wrapping_add(1)
            });
            if let Some((_, isn)) = opened {
                flow.pending_syn = None;
                self.next_id += 1;
                let mut fresh = new_flow(self.next_id, pkt, sender, receiver, info, flow.probed);
                let d = direction(&fresh, sender).index();
                fresh.streams[d].on_syn(isn);
                reopen(flow, fresh, &mut self.shared, stats, sink);
            } else if flags.syn && flow.streams[dir.index()].is_new_connection(seq) {
                // A SYN on a connection that carried data and did not end waits for its answer.
                if !flags.ack && flow.carried_data && !flow.closing {
                    // A later SYN replaces an earlier one held (that one went unanswered).
                    if flow
                        .pending_syn
                        .replace((dir.index(), seq))
                        .is_some_and(|p| p.1 != seq)
                    {
                        stats.flows.syn_on_open += 1;
                    }
                    return;
                }
                // A SYN-ACK answering the held SYN: the new connection is the held SYN's.
                let answered = flow
                    .pending_syn
                    .filter(|&(d, isn)| flags.ack && d != dir.index() && ack == isn.wrapping_add(1))
                    .map(|p| p.1);
                // The held SYN sent again (after a challenge ACK and a RST): the connection it
                // opens is the held one's, no SYN left unanswered.
                if answered.is_some()
                    || flow
                        .pending_syn
                        .is_some_and(|(d, isn)| !flags.ack && d == dir.index() && isn == seq)
                {
                    flow.pending_syn = None;
                }
                self.next_id += 1;
                // A probed protocol stays; a SYN's sender is the client, a SYN-ACK's the
                // server.
                let probed = flow.probed.map(|(p, _)| (p, !flags.ack));
                let mut fresh = new_flow(self.next_id, pkt, sender, receiver, info, probed);
                if let Some(isn) = answered {
                    // The stream of the held SYN's sender (this SYN-ACK's receiver: the client
                    // by the SYN, or the server when a device on a well-known port dialled out)
                    // starts after its ISN.
                    let d = direction(&fresh, receiver).index();
                    fresh.streams[d].on_syn(isn);
                }
                reopen(flow, fresh, &mut self.shared, stats, sink);
            }
        }
        let dir = direction(flow, sender);
        let mut ctx = Ctx {
            ts_nanos: now,
            frame: info.frame,
            source: info.source,
            endpoints: &flow.endpoints,
            macs: info.macs.map(|m| (pkt.src, m)),
            shared: &mut self.shared,
            stats,
            sink,
        };
        match pkt.transport {
            Transport::Udp { payload, .. } => flow.app.on_datagram(&mut ctx, dir, payload),
            Transport::Tcp {
                seq,
                ack,
                flags,
                payload,
                ..
            } => {
                let [to_server, to_client] = &mut flow.streams;
                let (this, peer, peer_dir) = match dir {
                    Dir::ToServer => (to_server, to_client, Dir::ToClient),
                    Dir::ToClient => (to_client, to_server, Dir::ToServer),
                };
                if flags.syn {
                    this.on_syn(seq);
                }
                if flags.ack {
                    let answer = !payload.is_empty();
                    peer.on_peer_ack(ack, answer, &mut flow.app, &mut ctx, peer_dir);
                }
                this.on_segment(seq, flags.syn, payload, &mut flow.app, &mut ctx, dir);
                if (this.hole_waits() || peer.hole_waits()) && !flow.hole_listed {
                    flow.hole_listed = true;
                    self.holes_waiting.push(key);
                }
            }
        }
    }

    /// The table is full: evict an eighth of it, flows that never carried data (half-open, a
    /// scan's or a flood's) first, then the longest idle, as Suricata's emergency mode does. A
    /// batch, so that a flood pays one scan of the table per many new flows, not one per packet.
    fn evict_for_room(&mut self, stats: &mut Stats, sink: &mut dyn EventSink) {
        let batch = (self.max_flows / 8).max(1);
        let mut victims: Vec<(bool, i64, u64, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, f)| (f.carried_data, f.last_seen, f.id, *k))
            .collect();
        if victims.len() > batch {
            victims.select_nth_unstable_by_key(batch - 1, |v| (v.0, v.1, v.2));
            victims.truncate(batch);
        }
        // Closed in creation order, so output does not depend on hash order.
        victims.sort_unstable_by_key(|v| v.2);
        for (_, _, _, key) in victims {
            if let Some(mut flow) = self.flows.remove(&key) {
                stats.flows.evicted_full += 1;
                close_flow(&mut flow, &mut self.shared, stats, sink);
            }
        }
    }

    /// Evict idle flows (oldest first), flushing their streams.
    pub fn sweep(&mut self, now: i64, stats: &mut Stats, sink: &mut dyn EventSink) {
        self.last_sweep = now;
        for key in std::mem::take(&mut self.holes_waiting) {
            let Some(flow) = self.flows.get_mut(&key) else {
                continue;
            };
            flow.hole_listed = false;
            without_packet(
                flow,
                &mut self.shared,
                stats,
                sink,
                |[to_server, to_client], app, ctx| {
                    to_server.skip_waiting_hole(app, ctx, Dir::ToServer);
                    to_client.skip_waiting_hole(app, ctx, Dir::ToClient);
                },
            );
        }
        let timeout = self.idle_timeout;
        // Busy flows only grow newer: while the oldest is within the timeout, no scan (on a
        // site whose flows all stay busy, one scan in 60 instead of one every 10 s).
        if now.saturating_sub(self.seen_since) <= timeout {
            return;
        }
        let mut idle: Vec<(u64, FlowKey)> = Vec::new();
        let mut oldest_kept = i64::MAX;
        for (k, f) in &self.flows {
            if now.saturating_sub(f.last_seen) > timeout {
                idle.push((f.id, *k));
            } else {
                oldest_kept = oldest_kept.min(f.last_seen);
            }
        }
        self.seen_since = oldest_kept;
        idle.sort_unstable_by_key(|&(id, _)| id);
        for (_, key) in idle {
            if let Some(mut flow) = self.flows.remove(&key) {
                stats.flows.evicted_idle += 1;
                close_flow(&mut flow, &mut self.shared, stats, sink);
            }
        }
    }

    /// End of input: flush and close every flow, in creation order.
    pub fn close_all(&mut self, stats: &mut Stats, sink: &mut dyn EventSink) {
        self.seen_since = i64::MAX;
        let mut flows: Vec<Box<Flow>> = self.flows.drain().map(|(_, f)| f).collect();
        flows.sort_unstable_by_key(|f| f.id);
        for mut flow in flows {
            close_flow(&mut flow, &mut self.shared, stats, sink);
        }
    }
}

fn direction(flow: &Flow, sender: (IpAddr, u16)) -> Dir {
    if sender == flow.endpoints.client {
        Dir::ToServer
    } else {
        Dir::ToClient
    }
}

/// Flush a flow's streams and end its protocol state. What this delivers is stamped with the
/// flow's own last packet (or the held segment's), never with an unrelated packet.
/// A new connection on the 5-tuple: `fresh` takes the flow's place, and the old one is closed.
fn reopen(
    flow: &mut Flow,
    fresh: Flow,
    shared: &mut crate::dissect::Shared,
    stats: &mut Stats,
    sink: &mut dyn EventSink,
) {
    let mut old = std::mem::replace(flow, fresh);
    stats.flows.reused += 1;
    stats.flows.created += 1;
    close_flow(&mut old, shared, stats, sink);
}

fn close_flow(
    flow: &mut Flow,
    shared: &mut crate::dissect::Shared,
    stats: &mut Stats,
    sink: &mut dyn EventSink,
) {
    // A SYN held on the open connection that no SYN-ACK answered changed nothing.
    if flow.pending_syn.is_some() {
        stats.flows.syn_on_open += 1;
    }
    without_packet(
        flow,
        shared,
        stats,
        sink,
        |[to_server, to_client], app, ctx| {
            to_server.flush(app, ctx, Dir::ToServer);
            to_client.flush(app, ctx, Dir::ToClient);
            to_server.release(ctx);
            to_client.release(ctx);
            app.on_close(ctx);
        },
    );
}

/// Runs `f` on a flow's streams and dissector outside any packet (a sweep, the flow's end),
/// with a context at the flow's last packet.
fn without_packet(
    flow: &mut Flow,
    shared: &mut crate::dissect::Shared,
    stats: &mut Stats,
    sink: &mut dyn EventSink,
    f: impl FnOnce(&mut [TcpStream; 2], &mut App, &mut Ctx<'_>),
) {
    let mut ctx = Ctx {
        ts_nanos: flow.last_seen,
        frame: flow.last_frame,
        source: &flow.source,
        endpoints: &flow.endpoints,
        macs: None,
        shared,
        stats,
        sink,
    };
    f(&mut flow.streams, &mut flow.app, &mut ctx);
}

/// A new flow. Evidence for the roles, strongest first: a dissected protocol's well-known port
/// names the server, because the protocol's roles follow the port even when the TCP connection
/// was opened the other way (corpus: a Modbus device on port 502 that connects out and sends
/// responses) and a capture that starts mid-connection must not be read backwards; then the
/// protocol's own direction bit when the flow was found by probing (DNP3's DIR: the master is the
/// client); then a SYN names the client, a SYN-ACK the server; failing all that, the lower port is
/// the server's.
fn new_flow(
    id: u64,
    pkt: &Decoded<'_>,
    sender: (IpAddr, u16),
    receiver: (IpAddr, u16),
    info: &PacketInfo<'_>,
    probed: Option<(ProtoId, bool)>,
) -> Flow {
    let flags = match pkt.transport {
        Transport::Tcp { flags, .. } => Some(flags),
        Transport::Udp { .. } => None,
    };
    let udp = matches!(pkt.transport, Transport::Udp { .. });
    let well_known = (
        App::is_server_port(sender.1, udp),
        App::is_server_port(receiver.1, udp),
    );
    let sender_is_client = match (well_known, probed, flags) {
        ((false, true), _, _) => true,
        ((true, false), _, _) => false,
        (_, Some((_, from_client)), _) => from_client,
        (_, _, Some(f)) if f.syn => !f.ack,
        _ => receiver.1 <= sender.1,
    };
    let (client, server) = if sender_is_client {
        (sender, receiver)
    } else {
        (receiver, sender)
    };
    Flow {
        id,
        endpoints: Endpoints {
            client,
            server,
            udp,
        },
        last_seen: info.ts_nanos,
        last_frame: info.frame,
        source: Arc::clone(info.source),
        app: App::new(
            probed
                .map(|(p, _)| p)
                .or(ProtoId::for_server_port(server.1, udp)),
        ),
        probed,
        carried_data: false,
        streams: Default::default(),
        pending_syn: None,
        closing: false,
        hole_listed: false,
    }
}

/// Conversations of protocols otwatch does not dissect: each is reported once, as a `tcp` or
/// `udp` event, so detection can see new talkers on the OT network (an SMB session to a PLC, a
/// shell on port 4444) without tracking their flows.
///
/// The memory is two generations: when the current one is full, the older one is forgotten
/// (counted in `talkers_full`) and the current one becomes the older. A conversation seen again
/// after it was forgotten is reported again; a new one is always reported, so a flood of
/// conversations cannot fill the memory and blind detection to the next talker.
#[derive(Default)]
struct Talkers {
    seen: TalkerSet,
    older: TalkerSet,
}

type TalkerSet = std::collections::HashSet<(u8, IpAddr, IpAddr, u16), foldhash::fast::RandomState>;

/// Conversations remembered per generation (two are kept).
pub const MAX_TALKERS: usize = 65_536;

impl Talkers {
    fn note(
        &mut self,
        pkt: &Decoded<'_>,
        info: &PacketInfo<'_>,
        stats: &mut Stats,
        sink: &mut dyn EventSink,
    ) {
        let (protocol, sport, dport, syn, ack) = match pkt.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                ..
            } => (6u8, src_port, dst_port, flags.syn, flags.ack),
            Transport::Udp {
                src_port, dst_port, ..
            } => (17u8, src_port, dst_port, false, false),
        };
        // Either orientation already known: the same conversation.
        let known = |set: &TalkerSet| {
            set.contains(&(protocol, pkt.src, pkt.dst, dport))
                || set.contains(&(protocol, pkt.dst, pkt.src, sport))
        };
        if known(&self.seen) {
            return;
        }
        if !self.older.is_empty() && known(&self.older) {
            // Still talking: kept in the current generation, so it is not reported again
            // when the older one is forgotten.
            for key in [
                (protocol, pkt.src, pkt.dst, dport),
                (protocol, pkt.dst, pkt.src, sport),
            ] {
                if self.older.remove(&key) && self.seen.len() < MAX_TALKERS {
                    self.seen.insert(key);
                }
            }
            return;
        }
        // The server: the SYN's receiver, the SYN-ACK's sender, a broadcast or multicast
        // destination, otherwise the lower port.
        let group = match pkt.dst {
            IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
            IpAddr::V6(a) => a.is_multicast(),
        };
        let to_server = if syn { !ack } else { group || dport <= sport };
        let (client, server, port, client_port) = if to_server {
            (pkt.src, pkt.dst, dport, sport)
        } else {
            (pkt.dst, pkt.src, sport, dport)
        };
        if self.seen.len() >= MAX_TALKERS {
            stats.flows.talkers_full += self.older.len() as u64;
            self.older = std::mem::take(&mut self.seen);
        }
        self.seen.insert((protocol, client, server, port));
        stats.flows.talkers += 1;
        sink.emit(crate::event::Event {
            ts: crate::event::Timestamp(info.ts_nanos),
            source: Arc::clone(info.source),
            frame: info.frame,
            proto: if protocol == 6 { "tcp" } else { "udp" },
            transport: crate::event::L4::of(protocol != 6),
            src_ip: client,
            src_port: client_port,
            dst_ip: server,
            dst_port: port,
            direction: crate::event::Direction::Request,
            src_mac: info
                .macs
                .map(|m| if client == pkt.src { m.src() } else { m.dst() }),
            dst_mac: info
                .macs
                .map(|m| if client == pkt.src { m.dst() } else { m.src() }),
            pdu: crate::event::Pdu::Conversation {
                udp: protocol == 17,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{FlowKey, FlowTable, PacketInfo};
    use crate::decode::{Decoded, Transport};
    use crate::event::NullSink;
    use crate::stats::Stats;
    use std::net::IpAddr;
    use std::sync::Arc;

    /// Sweeps skip their scan while no flow can be idle, and still close exactly the idle
    /// flows, also after the capture clock stepped back.
    #[test]
    fn sweeps_close_the_idle_flows_and_only_them() {
        const S: i64 = 1_000_000_000;
        let mut table = FlowTable::new(100, 600 * S);
        let (mut stats, mut sink) = (Stats::default(), NullSink);
        let source: Arc<str> = Arc::from("t");
        let packet = |table: &mut FlowTable, stats: &mut Stats, client: &str, t: i64| {
            let d = Decoded {
                vlan: 0,
                src: ip(client),
                dst: ip("10.0.0.100"),
                transport: Transport::Udp {
                    src_port: 40000,
                    dst_port: 20000,
                    payload: &[],
                },
            };
            let info = PacketInfo {
                ts_nanos: t * S,
                frame: 1,
                source: &source,
                macs: None,
            };
            table.process(&d, &info, stats, &mut NullSink);
        };
        packet(&mut table, &mut stats, "10.0.0.1", 1000);
        packet(&mut table, &mut stats, "10.0.0.2", 1000);
        table.sweep(1005 * S, &mut stats, &mut sink);
        packet(&mut table, &mut stats, "10.0.0.2", 1500);
        table.sweep(1599 * S, &mut stats, &mut sink);
        assert_eq!((table.len(), stats.flows.evicted_idle), (2, 0));
        table.sweep(1601 * S, &mut stats, &mut sink);
        assert_eq!((table.len(), stats.flows.evicted_idle), (1, 1));
        // The clock steps back: a flow last seen at 100 s is idle at 701 s, though the
        // newest flow was seen at 1500 s.
        packet(&mut table, &mut stats, "10.0.0.3", 100);
        table.sweep(650 * S, &mut stats, &mut sink);
        assert_eq!((table.len(), stats.flows.evicted_idle), (2, 1));
        table.sweep(701 * S, &mut stats, &mut sink);
        assert_eq!((table.len(), stats.flows.evicted_idle), (1, 2));
        table.sweep(2101 * S, &mut stats, &mut sink);
        assert_eq!((table.len(), stats.flows.evicted_idle), (0, 3));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_flow_key_names_both_directions_and_nothing_else() {
        let key = |vlan, proto, a: &str, ap, b: &str, bp| {
            FlowKey::new(vlan, proto, (ip(a), ap), (ip(b), bp))
        };
        let k = key(7, 6, "10.0.0.1", 40000, "10.0.0.2", 502);
        assert_eq!(k, key(7, 6, "10.0.0.2", 502, "10.0.0.1", 40000));
        // Every part of the identity tells flows apart.
        let others = [
            key(8, 6, "10.0.0.1", 40000, "10.0.0.2", 502),
            key(7, 17, "10.0.0.1", 40000, "10.0.0.2", 502),
            key(7, 6, "10.0.0.3", 40000, "10.0.0.2", 502),
            key(7, 6, "10.0.0.1", 40001, "10.0.0.2", 502),
            key(7, 6, "10.0.0.1", 40000, "10.0.0.2", 503),
            // The ports swapped between the same two hosts.
            key(7, 6, "10.0.0.1", 502, "10.0.0.2", 40000),
            // The same 32 bits as IPv6 addresses.
            key(7, 6, "::10.0.0.1", 40000, "::10.0.0.2", 502),
        ];
        for (i, o) in others.iter().enumerate() {
            assert_ne!(k, *o, "{i}");
        }
        let v6 = key(0, 6, "fe80::1", 1, "fe80::2", 2);
        assert_eq!(v6, key(0, 6, "fe80::2", 2, "fe80::1", 1));
        // The same address at both ends (a host talking to itself) orders by port.
        assert_eq!(
            key(0, 6, "10.0.0.1", 502, "10.0.0.1", 40000),
            key(0, 6, "10.0.0.1", 40000, "10.0.0.1", 502)
        );
    }
}
