//! Counters for everything the pipeline saw, dropped or could not parse. Every bound in otwatch
//! has a counter here, so nothing is lost without the summary (and later the metrics) saying so.

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LayerErrors {
    pub link: u64,
    pub ip: u64,
    pub tcp: u64,
    pub udp: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChecksumErrors {
    pub ipv4: u64,
    pub tcp: u64,
    pub udp: u64,
    /// TCP/UDP checksums not verified, not computed yet (live capture with checksum offload:
    /// the capture host's own packets, or a local VM's or container's).
    pub offloaded: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DefragStats {
    pub reassembled: u64,
    pub timeouts: u64,
    /// Datagrams still incomplete at the end of input or of a capture (a later file that starts
    /// earlier): dropped, their fragments never joined to another capture's.
    pub unfinished: u64,
    pub bound_drops: u64,
    pub invalid: u64,
    pub conflicting_overlaps: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlowStats {
    pub created: u64,
    pub evicted_idle: u64,
    /// Flows evicted to make room when the table was full (half-open and longest-idle first).
    pub evicted_full: u64,
    /// New flows refused because the table was full (only when eviction freed nothing).
    pub table_full_drops: u64,
    /// Packets of flows no dissector is interested in (counted, not tracked).
    pub untracked_packets: u64,
    /// Connections that reused the 5-tuple of an earlier one (new SYN): the old flow was closed.
    pub reused: u64,
    /// SYNs with a new initial sequence number on an open connection that the server did not
    /// answer with its SYN-ACK (by the time it answered, or not at all): they changed nothing
    /// (RFC 5961: such a SYN gets a challenge ACK). A spoofed SYN is one.
    pub syn_on_open: u64,
    /// Conversations of undissected protocols reported once each (`tcp`/`udp` events).
    pub talkers: u64,
    /// Conversations forgotten because the talker memory was full (reported again if seen
    /// again).
    pub talkers_full: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TcpStats {
    /// Streams picked up without seeing their SYN (normal on a SPAN port).
    pub midstream_pickups: u64,
    pub retransmitted_segments: u64,
    /// Segments that partly overlapped data already delivered (the new part was used).
    pub overlapping_segments: u64,
    /// Overlaps whose bytes differ from what was delivered first (first wins).
    pub conflicting_overlaps: u64,
    pub out_of_order_segments: u64,
    /// Holes skipped: data never seen in the capture.
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Segments so far from the expected position that the stream was picked up again there.
    pub discontinuities: u64,
    /// Gaps declared because the out-of-order buffer hit its bound.
    pub ooo_bound_gaps: u64,
    /// Unconsumed bytes discarded because a dissector's buffered tail exceeded its bound.
    pub buffer_bound_drops: u64,
    /// Bytes of a partial PDU lost to a gap or to the end of the flow.
    pub partial_pdu_bytes_discarded: u64,
    /// Gauge: out-of-order bytes held across all streams right now (bounded globally).
    pub ooo_bytes_held: u64,
    /// Gauge: bytes of partial PDUs held across all streams right now (past
    /// `flow::tcp::MAX_TAIL_BYTES_TOTAL`, only small ones are kept).
    pub tail_bytes_held: u64,
    /// Gauge: DNP3 transport reassembly buffer bytes across all flows (bounded globally).
    pub dnp3_reassembly_bytes: u64,
    /// Gauge: S7 COTP and SZL reassembly bytes across all flows (bounded globally).
    pub s7_reassembly_bytes: u64,
    /// The highest `dnp3_reassembly_bytes` reached.
    pub dnp3_reassembly_peak: u64,
    /// The highest `tail_bytes_held` reached.
    pub tail_bytes_peak: u64,
}

/// Counters by name, in name order: a protocol has a handful, and some are counted on every
/// PDU (`cotp_tpdus`), so a short sorted list is searched, with the name's address compared
/// first (a name is a literal, nearly always at one address), instead of a map whose every
/// count compared strings (2.7% of dissection on steady-site).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(Vec<(&'static str, u64)>);

impl Counts {
    /// Adds `n` to the counter `name`.
    #[inline]
    pub fn add(&mut self, name: &'static str, n: u64) {
        if let Some((_, v)) = self.0.iter_mut().find(|(k, _)| std::ptr::eq(*k, name)) {
            *v += n;
            return;
        }
        self.add_by_name(name, n);
    }

    /// [`Counts::add`] for a name not found at its address: a new counter, or the name of one
    /// at another address.
    #[cold]
    #[inline(never)]
    fn add_by_name(&mut self, name: &'static str, n: u64) {
        match self.0.binary_search_by(|(k, _)| (*k).cmp(name)) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => self.0.insert(i, (name, n)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&u64> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// (name, count), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &u64)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &u64> {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<'a> IntoIterator for &'a Counts {
    type Item = (&'static str, &'a u64);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (&'static str, u64)>,
        fn(&'a (&'static str, u64)) -> (&'static str, &'a u64),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (*k, v))
    }
}

/// Per-protocol dissection counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoStats {
    /// PDUs by function code (exception bit cleared for Modbus).
    pub pdus: [u64; 256],
    /// PDUs that have no function code, by kind (S7 `userdata`, S7 `ack` without parameters).
    pub other_pdus: Counts,
    pub exceptions: u64,
    /// Malformed PDUs by reason.
    pub parse_errors: Counts,
    /// Bytes skipped while resynchronising on a stream of this protocol.
    pub resync_skipped_bytes: u64,
    pub unmatched_responses: u64,
    /// Requests forgotten because too many were outstanding on one flow.
    pub outstanding_bound_drops: u64,
    /// Flows on this protocol's port whose bytes never validated as the protocol.
    pub unidentified_flows: u64,
    /// Malformed PDUs of flows that never validated: not reported as the protocol.
    pub unconfirmed_pdus_discarded: u64,
    /// Protocol-specific counters (CRC errors, reassembly discards, ...), by name.
    pub counters: Counts,
}

impl Default for ProtoStats {
    fn default() -> Self {
        ProtoStats {
            pdus: [0; 256],
            other_pdus: Counts::default(),
            exceptions: 0,
            parse_errors: Counts::default(),
            resync_skipped_bytes: 0,
            unmatched_responses: 0,
            outstanding_bound_drops: 0,
            unidentified_flows: 0,
            unconfirmed_pdus_discarded: 0,
            counters: Counts::default(),
        }
    }
}

impl ProtoStats {
    pub fn total_pdus(&self) -> u64 {
        self.pdus.iter().sum::<u64>() + self.other_pdus.values().sum::<u64>()
    }

    pub fn count_pdu(&mut self, function: u8) {
        self.pdus[usize::from(function)] += 1;
    }

    /// A PDU without a function code, counted by its kind.
    pub fn count_other_pdu(&mut self, kind: &'static str) {
        self.other_pdus.add(kind, 1);
    }

    pub fn count(&mut self, counter: &'static str) {
        self.counters.add(counter, 1);
    }

    pub fn count_error(&mut self, reason: &'static str) {
        self.parse_errors.add(reason, 1);
    }

    /// (function code, PDUs) for every function code seen.
    pub fn functions(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        (0u8..=255)
            .zip(self.pdus.iter().copied())
            .filter(|&(_, n)| n > 0)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub bytes: u64,
    pub truncated_packets: u64,
    pub non_ip: u64,
    pub non_tcp_udp: u64,
    pub unsupported_linktype: u64,
    pub decode_errors: LayerErrors,
    pub checksum_errors: ChecksumErrors,
    pub ip_fragments: u64,
    pub defrag: DefragStats,
    pub flows: FlowStats,
    pub tcp: TcpStats,
    /// Per protocol, in registry order: `stats[MODBUS]` (see [`crate::dissect::registry`]).
    pub protos: [ProtoStats; crate::dissect::registry::COUNT],
    pub events: u64,
    /// Packets whose processing panicked on a worker (a bug): the worker went on with a fresh
    /// pipeline (its flows and protocol state lost, its counters kept).
    pub worker_panics: u64,
}

impl Stats {
    /// These counts but those of events themselves (`events`, and the conversations of other
    /// protocols, counted as their `tcp`/`udp` events are made): what is the same whoever
    /// reads the records, nobody (dissection alone), an events output or detection.
    pub fn without_event_counts(mut self) -> Stats {
        self.events = 0;
        (self.flows.talkers, self.flows.talkers_full) = (0, 0);
        self
    }
}

impl std::ops::Index<crate::dissect::ProtoId> for Stats {
    type Output = ProtoStats;
    fn index(&self, p: crate::dissect::ProtoId) -> &ProtoStats {
        &self.protos[p.0]
    }
}

impl std::ops::IndexMut<crate::dissect::ProtoId> for Stats {
    fn index_mut(&mut self, p: crate::dissect::ProtoId) -> &mut ProtoStats {
        &mut self.protos[p.0]
    }
}

/// Adds another pipeline's counters into these (parallel replay merges its workers'); peaks take
/// the larger value.
pub trait Merge {
    fn merge(&mut self, other: &Self);
}

macro_rules! merge_sums {
    ($ty:ty { $($field:ident),* $(,)? } $(max { $($peak:ident),* })?) => {
        impl Merge for $ty {
            fn merge(&mut self, other: &Self) {
                $( self.$field += other.$field; )*
                $( $( self.$peak = self.$peak.max(other.$peak); )* )?
            }
        }
    };
}

merge_sums!(LayerErrors { link, ip, tcp, udp });
merge_sums!(ChecksumErrors {
    ipv4,
    tcp,
    udp,
    offloaded
});
merge_sums!(DefragStats {
    reassembled,
    timeouts,
    unfinished,
    bound_drops,
    invalid,
    conflicting_overlaps
});
merge_sums!(FlowStats {
    created,
    evicted_idle,
    evicted_full,
    table_full_drops,
    untracked_packets,
    reused,
    syn_on_open,
    talkers,
    talkers_full
});
merge_sums!(TcpStats {
    midstream_pickups, retransmitted_segments, overlapping_segments, conflicting_overlaps,
    out_of_order_segments, gaps, gap_bytes, discontinuities, ooo_bound_gaps, buffer_bound_drops,
    partial_pdu_bytes_discarded, ooo_bytes_held, tail_bytes_held, dnp3_reassembly_bytes,
    s7_reassembly_bytes,
} max { dnp3_reassembly_peak, tail_bytes_peak });

impl Merge for ProtoStats {
    fn merge(&mut self, other: &Self) {
        for (a, b) in self.pdus.iter_mut().zip(other.pdus.iter()) {
            *a += b;
        }
        for (k, v) in &other.other_pdus {
            self.other_pdus.add(k, *v);
        }
        self.exceptions += other.exceptions;
        self.resync_skipped_bytes += other.resync_skipped_bytes;
        self.unmatched_responses += other.unmatched_responses;
        self.outstanding_bound_drops += other.outstanding_bound_drops;
        self.unidentified_flows += other.unidentified_flows;
        self.unconfirmed_pdus_discarded += other.unconfirmed_pdus_discarded;
        for (k, v) in &other.parse_errors {
            self.parse_errors.add(k, *v);
        }
        for (k, v) in &other.counters {
            self.counters.add(k, *v);
        }
    }
}

impl Merge for Stats {
    fn merge(&mut self, o: &Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.truncated_packets += o.truncated_packets;
        self.non_ip += o.non_ip;
        self.non_tcp_udp += o.non_tcp_udp;
        self.unsupported_linktype += o.unsupported_linktype;
        self.decode_errors.merge(&o.decode_errors);
        self.checksum_errors.merge(&o.checksum_errors);
        self.ip_fragments += o.ip_fragments;
        self.defrag.merge(&o.defrag);
        self.flows.merge(&o.flows);
        self.tcp.merge(&o.tcp);
        for (mine, theirs) in self.protos.iter_mut().zip(&o.protos) {
            mine.merge(theirs);
        }
        self.events += o.events;
        self.worker_panics += o.worker_panics;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_by_name_not_by_address_and_in_name_order() {
        let mut c = Counts::default();
        // The same name at two addresses is one counter.
        let elsewhere: &'static str = String::from("crc_errors").leak();
        c.add("crc_errors", 1);
        c.add("b_first", 2);
        c.add(elsewhere, 3);
        c.add("zz_last", 1);
        c.add("crc_errors", 1);
        assert_eq!(
            c.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(),
            [("b_first", 2), ("crc_errors", 5), ("zz_last", 1)]
        );
        assert_eq!(c.get("crc_errors"), Some(&5));
        assert_eq!(c.get("missing"), None);
        assert_eq!(c.values().sum::<u64>(), 8);
        let mut merged = ProtoStats::default();
        merged.count("crc_errors");
        merged.merge(&ProtoStats {
            counters: c,
            ..ProtoStats::default()
        });
        assert_eq!(merged.counters.get("crc_errors"), Some(&6));
    }
}
