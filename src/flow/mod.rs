//! Bounded flow table keyed by the canonical 5-tuple (+VLAN), with idle eviction by capture time.
//!
//! Client and server come from the well-known port of a dissected protocol when exactly one side
//! uses one, otherwise from the SYN (or SYN-ACK) when it was seen, otherwise the lower port is
//! taken as the server's.

pub mod tcp;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::decode::{Decoded, Transport};
use crate::dissect::{App, Ctx, Dir, Endpoints};
use crate::event::EventSink;
use crate::stats::Stats;
use tcp::TcpStream;

pub const DEFAULT_MAX_FLOWS: usize = 100_000;
/// Flows idle this long (capture time) are evicted. OT polling is seconds apart; 10 minutes of
/// silence on a connection means it is gone.
pub const DEFAULT_IDLE_TIMEOUT_NANOS: i64 = 600 * 1_000_000_000;
const SWEEP_INTERVAL_NANOS: i64 = 10 * 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub vlan: u16,
    pub protocol: u8,
    /// The lower endpoint of the two.
    pub lo: (IpAddr, u16),
    pub hi: (IpAddr, u16),
}

impl FlowKey {
    pub fn new(vlan: u16, protocol: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> FlowKey {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            vlan,
            protocol,
            lo,
            hi,
        }
    }
}

#[derive(Debug)]
pub struct Flow {
    pub endpoints: Endpoints,
    pub last_seen: i64,
    pub app: App,
    /// Indexed by [`Dir::index`].
    streams: [TcpStream; 2],
}

/// What the flow table needs to know about the packet in hand.
pub struct PacketInfo<'a> {
    pub ts_nanos: i64,
    pub frame: u64,
    pub source: &'a Arc<str>,
}

/// Keys are attacker-controlled on a SPAN port: a per-process random seed keeps the table from
/// being flooded into one bucket, and foldhash is several times cheaper than SipHash here.
type FlowMap = HashMap<FlowKey, Flow, foldhash::fast::RandomState>;

pub struct FlowTable {
    flows: FlowMap,
    max_flows: usize,
    idle_timeout: i64,
    last_sweep: i64,
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
            max_flows: max_flows.max(1),
            idle_timeout: idle_timeout_nanos,
            last_sweep: i64::MIN,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn process(
        &mut self,
        pkt: &Decoded<'_>,
        info: &PacketInfo<'_>,
        stats: &mut Stats,
        sink: &mut dyn EventSink,
    ) {
        let now = info.ts_nanos;
        if now.saturating_sub(self.last_sweep) >= SWEEP_INTERVAL_NANOS {
            self.sweep(now, info, stats, sink);
        }
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
        if self.flows.len() >= self.max_flows && !self.flows.contains_key(&key) {
            self.sweep(now, info, stats, sink);
            if self.flows.len() >= self.max_flows {
                stats.flows.table_full_drops += 1;
                return;
            }
        }
        let flow = match self.flows.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                stats.flows.created += 1;
                v.insert(new_flow(pkt, sender, receiver))
            }
        };
        flow.last_seen = now;
        let mut dir = if sender == flow.endpoints.client {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        // A client SYN with a new initial sequence number reuses the 5-tuple for a new
        // connection: finish the old one (its data, its protocol state) and start afresh.
        if let Transport::Tcp { flags, seq, .. } = pkt.transport {
            if flags.syn && !flags.ack && flow.streams[dir.index()].is_new_connection(seq) {
                let old = std::mem::replace(flow, new_flow(pkt, sender, receiver));
                flow.last_seen = now;
                stats.flows.reused += 1;
                stats.flows.created += 1;
                close_flow(old, info, stats, sink);
                dir = if sender == flow.endpoints.client {
                    Dir::ToServer
                } else {
                    Dir::ToClient
                };
            }
        }
        let mut ctx = Ctx {
            ts_nanos: now,
            frame: info.frame,
            source: info.source,
            endpoints: &flow.endpoints,
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
                if flow.app.is_none() {
                    return;
                }
                let [to_server, to_client] = &mut flow.streams;
                let (this, peer) = match dir {
                    Dir::ToServer => (to_server, to_client),
                    Dir::ToClient => (to_client, to_server),
                };
                let peer_dir = match dir {
                    Dir::ToServer => Dir::ToClient,
                    Dir::ToClient => Dir::ToServer,
                };
                if flags.syn {
                    this.on_syn(seq);
                }
                if flags.ack {
                    peer.on_peer_ack(ack, &mut flow.app, &mut ctx, peer_dir);
                }
                this.on_segment(seq, payload, &mut flow.app, &mut ctx, dir);
            }
        }
    }

    /// Evict idle flows, flushing their streams first.
    fn sweep(
        &mut self,
        now: i64,
        info: &PacketInfo<'_>,
        stats: &mut Stats,
        sink: &mut dyn EventSink,
    ) {
        self.last_sweep = now;
        let timeout = self.idle_timeout;
        let idle: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.last_seen) > timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            if let Some(flow) = self.flows.remove(&key) {
                stats.flows.evicted_idle += 1;
                close_flow(flow, info, stats, sink);
            }
        }
    }

    /// End of input: flush and close every flow.
    pub fn close_all(
        &mut self,
        info: &PacketInfo<'_>,
        stats: &mut Stats,
        sink: &mut dyn EventSink,
    ) {
        for (_, flow) in self.flows.drain() {
            close_flow(flow, info, stats, sink);
        }
    }
}

fn close_flow(mut flow: Flow, info: &PacketInfo<'_>, stats: &mut Stats, sink: &mut dyn EventSink) {
    let mut ctx = Ctx {
        ts_nanos: flow.last_seen,
        frame: info.frame,
        source: info.source,
        endpoints: &flow.endpoints,
        stats,
        sink,
    };
    let [to_server, to_client] = &mut flow.streams;
    to_server.flush(&mut flow.app, &mut ctx, Dir::ToServer);
    to_client.flush(&mut flow.app, &mut ctx, Dir::ToClient);
    flow.app.on_close(&mut ctx);
}

fn new_flow(pkt: &Decoded<'_>, sender: (IpAddr, u16), receiver: (IpAddr, u16)) -> Flow {
    // Evidence, strongest first. A dissected protocol's well-known port names the server: the
    // protocol's roles follow the port even when the TCP connection was opened the other way
    // (corpus: a Modbus device on port 502 that connects out and sends responses), and a capture
    // that starts mid-connection must not be read backwards. Then a SYN names the client, a
    // SYN-ACK the server, and failing all that the lower port is taken as the server's.
    let flags = match pkt.transport {
        Transport::Tcp { flags, .. } => Some(flags),
        Transport::Udp { .. } => None,
    };
    let well_known = (
        App::is_server_port(sender.1),
        App::is_server_port(receiver.1),
    );
    let sender_is_client = match (well_known, flags) {
        ((false, true), _) => true,
        ((true, false), _) => false,
        (_, Some(f)) if f.syn => !f.ack,
        _ => receiver.1 <= sender.1,
    };
    let (client, server) = if sender_is_client {
        (sender, receiver)
    } else {
        (receiver, sender)
    };
    let transport = match pkt.transport {
        Transport::Tcp { .. } => "tcp",
        Transport::Udp { .. } => "udp",
    };
    Flow {
        endpoints: Endpoints {
            client,
            server,
            transport,
        },
        last_seen: 0,
        app: App::for_server_port(server.1),
        streams: Default::default(),
    }
}
