//! One packet at a time through decode, defragmentation, the flow table and the dissectors.

use std::sync::{Arc, Mutex};

use crate::output::evidence::EvidenceRing;

use crate::capture::Packet;
use crate::decode::{self, defrag::Defragmenter, Decode};
use crate::event::{Event, EventSink, FlushKey};
use crate::flow::{FlowTable, PacketInfo};
use crate::stats::Stats;
use otwatch_models::Observation;

#[derive(Default)]
pub struct Pipeline {
    flows: FlowTable,
    defrag: Defragmenter,
    pub stats: Stats,
    /// Recent packets per IP pair, for alert evidence (`--evidence`).
    pub evidence: Option<Arc<Mutex<EvidenceRing>>>,
    /// Idle flows are swept when the reader says so ([`Pipeline::sweep`]), not by this
    /// pipeline's own packets (a worker among several).
    pub reader_sweeps: bool,
    /// The feed's name of the current capture, and this pipeline's own copy of it, which the
    /// events and observations share. Every event holds its source; with N workers one shared
    /// reference count would bounce between the cores on every event (it cost the reader a
    /// seventh of its time).
    source: Option<(Arc<str>, Arc<str>)>,
}

impl Pipeline {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_flow_table(flows: FlowTable) -> Self {
        Pipeline {
            flows,
            ..Self::default()
        }
    }

    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    pub fn process(&mut self, pkt: &Packet<'_>, source: &Arc<str>, sink: &mut dyn EventSink) {
        if !self
            .source
            .as_ref()
            .is_some_and(|(feed, _)| Arc::ptr_eq(feed, source))
        {
            self.source = Some((Arc::clone(source), Arc::from(&**source)));
        }
        let source = self.source.as_ref().map_or(source, |(_, own)| own);
        if !self.reader_sweeps && self.flows.sweep_due(pkt.ts_nanos) {
            let mut sorted = SortedFlush::new(sink);
            self.flows.sweep(pkt.ts_nanos, &mut self.stats, &mut sorted);
            sorted.release();
        }
        sink.before_packet(pkt.ts_nanos);
        self.stats.packets += 1;
        self.stats.bytes += u64::from(pkt.orig_len);
        let info = PacketInfo {
            ts_nanos: pkt.ts_nanos,
            frame: pkt.frame,
            source,
            macs: crate::event::LinkAddrs::of(pkt.linktype, pkt.data),
        };
        // Matched in place: moved out, the decoded packet was copied in pieces just after
        // `decode` wrote it (a store-forwarding stall on every packet).
        let decoded = decode::decode(pkt.linktype, pkt.data, !pkt.csum_not_ready, &mut self.stats);
        match &decoded {
            Decode::Packet(d) => {
                if let Some(ring) = &self.evidence {
                    if let Ok(mut r) = ring.lock() {
                        r.record(d.src, d.dst, pkt, source);
                    }
                }
                self.flows.process(d, &info, &mut self.stats, sink)
            }
            Decode::Fragment(f) => {
                let conflicts = self.stats.defrag.conflicting_overlaps;
                let whole = self.defrag.add(f, pkt.ts_nanos, &mut self.stats);
                if self.stats.defrag.conflicting_overlaps > conflicts && sink.wants_observations() {
                    fragment_conflict(f, &info, sink);
                }
                if let Some(dg) = whole {
                    let decoded = decode::decode_transport(
                        dg.vlan,
                        dg.src,
                        dg.dst,
                        dg.protocol,
                        &dg.payload,
                        &mut self.stats,
                    );
                    if let Decode::Packet(d) = decoded {
                        self.flows.process(&d, &info, &mut self.stats, sink);
                    }
                }
            }
            Decode::Ignored | Decode::Error => {}
        }
    }

    /// End of input: flush every stream (data waiting behind holes is dissected after them).
    /// The events come out in [`crate::event::FlushKey`] order.
    pub fn finish(&mut self, sink: &mut dyn EventSink) {
        self.defrag.clear(&mut self.stats);
        let mut sorted = SortedFlush::new(sink);
        self.flows.close_all(&mut self.stats, &mut sorted);
        sorted.release();
    }

    /// Closes the flows idle at `now` (the reader's sweep, with several workers); the events
    /// in [`crate::event::FlushKey`] order, as one pipeline sweeping by itself gives them.
    pub fn sweep(&mut self, now: i64, sink: &mut dyn EventSink) {
        let mut sorted = SortedFlush::new(sink);
        self.flows.sweep(now, &mut self.stats, &mut sorted);
        sorted.release();
    }
}

/// A fragment whose bytes contradict another fragment's of its datagram: an observation for
/// detection (`overlap_conflict`), on the conversation of its protocol (TCP or UDP; other
/// protocols' are only counted) from its sender to its receiver (ports are in the first
/// fragment only).
fn fragment_conflict(f: &decode::Fragment<'_>, info: &PacketInfo<'_>, sink: &mut dyn EventSink) {
    let proto = match f.protocol {
        etherparse::IpNumber::UDP => otwatch_models::Proto::Udp,
        etherparse::IpNumber::TCP => otwatch_models::Proto::Tcp,
        // ICMP and the rest carry no plant traffic: counted only.
        _ => return,
    };
    let channel = otwatch_models::Channel {
        proto,
        client: f.src,
        server: f.dst,
        unit: 0,
    };
    let mut obs = Box::new(Observation::new(
        info.ts_nanos,
        Arc::clone(info.source),
        info.frame,
        channel,
        otwatch_models::Kind::Request,
        0,
    ));
    obs.stream_anomaly = Some("ip_fragment_conflicting_overlap");
    obs.src_mac = info.macs.map(|m| m.src().0);
    let key = FlushKey {
        ts: info.ts_nanos,
        frame: info.frame,
        src: (f.src, 0),
        dst: (f.dst, 0),
    };
    sink.observed(key, &mut obs);
}

/// Holds the events of a flush (or a sweep), to hand them on in a defined order.
struct SortedFlush<'a> {
    inner: &'a mut dyn EventSink,
    held: Vec<(FlushKey, Held)>,
}

/// What a flush holds of one PDU: its event, whose observation the sink makes
/// ([`EventSink::emit`]), or the observation its dissector built ([`EventSink::observed`]).
enum Held {
    /// Boxed, both: they are large, and of different sizes; flushes are rare.
    Event(Box<Event>),
    Observed(Box<Observation>),
}

impl<'a> SortedFlush<'a> {
    fn new(inner: &'a mut dyn EventSink) -> Self {
        SortedFlush {
            inner,
            held: Vec::new(),
        }
    }

    fn release(self) {
        let SortedFlush { inner, mut held } = self;
        held.sort_by_key(|(key, _)| *key);
        for (key, h) in held {
            match h {
                Held::Event(e) => inner.emit(*e),
                Held::Observed(mut o) => inner.observed(key, &mut o),
            }
        }
    }
}

impl EventSink for SortedFlush<'_> {
    fn emit(&mut self, event: Event) {
        self.held
            .push((event.flush_key(), Held::Event(Box::new(event))));
    }
    fn observed(&mut self, key: FlushKey, obs: &mut Box<Observation>) {
        let obs = crate::event::take_observation(obs, None);
        self.held.push((key, Held::Observed(obs)));
    }
    fn wants_events(&self) -> bool {
        self.inner.wants_events()
    }
    fn wants_detail(&self) -> bool {
        self.inner.wants_detail()
    }
    fn wants_observations(&self) -> bool {
        self.inner.wants_observations()
    }
    fn wants_event_out(&self) -> bool {
        self.inner.wants_event_out()
    }
}
