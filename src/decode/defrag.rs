//! Bounded IPv4/IPv6 fragment reassembly.
//!
//! Fragment offsets are multiples of 8 bytes, so received data is tracked in 8-byte blocks with a
//! bitmap; the first fragment to cover a block wins (later overlapping bytes are ignored and, when
//! they differ, counted). Bounds: at most [`MAX_DATAGRAMS`] datagrams in progress and
//! [`MAX_DATAGRAM_LEN`] bytes each; a datagram not completed within [`TIMEOUT_NANOS`] of capture
//! time is dropped. Each bound that is hit has a counter.

use std::collections::HashMap;
use std::net::IpAddr;

use etherparse::IpNumber;

use super::Fragment;
use crate::stats::Stats;

pub const MAX_DATAGRAMS: usize = 1024;
pub const MAX_DATAGRAM_LEN: usize = 65_535;
pub const TIMEOUT_NANOS: i64 = 30 * 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    vlan: u16,
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    protocol: u8,
}

#[derive(Debug)]
struct Datagram {
    data: Vec<u8>,
    /// One bit per 8-byte block received.
    blocks: Vec<u64>,
    /// Total length, known once the last fragment (MF clear) arrived.
    total: Option<usize>,
    last_seen: i64,
}

impl Datagram {
    fn block_set(&self, b: usize) -> bool {
        self.blocks
            .get(b / 64)
            .is_some_and(|w| w & (1 << (b % 64)) != 0)
    }

    fn set_block(&mut self, b: usize) {
        if let Some(w) = self.blocks.get_mut(b / 64) {
            *w |= 1 << (b % 64);
        }
    }

    fn complete(&self) -> bool {
        let Some(total) = self.total else {
            return false;
        };
        (0..total.div_ceil(8)).all(|b| self.block_set(b))
    }
}

/// A reassembled datagram: the transport header and payload, owned.
#[derive(Debug)]
pub struct Reassembled {
    pub vlan: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: IpNumber,
    pub payload: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Defragmenter {
    pending: HashMap<Key, Datagram>,
    last_sweep: i64,
}

impl Defragmenter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn in_progress(&self) -> usize {
        self.pending.len()
    }

    /// Add a fragment seen at capture time `now`; returns the datagram when it is complete.
    pub fn add(&mut self, frag: &Fragment<'_>, now: i64, stats: &mut Stats) -> Option<Reassembled> {
        self.expire(now, stats);
        let end = frag.offset + frag.payload.len();
        if end > MAX_DATAGRAM_LEN || (frag.more_fragments && !frag.payload.len().is_multiple_of(8))
        {
            stats.defrag.invalid += 1;
            return None;
        }
        let key = Key {
            vlan: frag.vlan,
            src: frag.src,
            dst: frag.dst,
            id: frag.id,
            protocol: frag.protocol.0,
        };
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_DATAGRAMS {
            stats.defrag.bound_drops += 1;
            return None;
        }
        let dg = self.pending.entry(key).or_insert_with(|| Datagram {
            data: Vec::new(),
            blocks: vec![0; MAX_DATAGRAM_LEN.div_ceil(8).div_ceil(64)],
            total: None,
            last_seen: now,
        });
        dg.last_seen = now;
        if !frag.more_fragments {
            if dg.total.is_some_and(|t| t != end) {
                stats.defrag.invalid += 1;
            } else {
                dg.total = Some(end);
            }
        }
        if dg.data.len() < end {
            dg.data.resize(end, 0);
        }
        // One conflict per fragment, however many of its blocks differ.
        let mut conflict = false;
        for (i, chunk) in frag.payload.chunks(8).enumerate() {
            let block = frag.offset / 8 + i;
            let at = block * 8;
            if dg.block_set(block) {
                conflict |= dg.data.get(at..at + chunk.len()) != Some(chunk);
                continue;
            }
            if let Some(dst) = dg.data.get_mut(at..at + chunk.len()) {
                dst.copy_from_slice(chunk);
            }
            dg.set_block(block);
        }
        if conflict {
            stats.defrag.conflicting_overlaps += 1;
        }
        if !dg.complete() {
            return None;
        }
        let dg = self.pending.remove(&key)?;
        let mut payload = dg.data;
        payload.truncate(dg.total.unwrap_or(0));
        stats.defrag.reassembled += 1;
        Some(Reassembled {
            vlan: key.vlan,
            src: key.src,
            dst: key.dst,
            protocol: IpNumber(key.protocol),
            payload,
        })
    }

    fn expire(&mut self, now: i64, stats: &mut Stats) {
        // A clock that steps back restarts the interval instead of stalling expiry.
        if now >= self.last_sweep && now.saturating_sub(self.last_sweep) < 1_000_000_000 {
            return;
        }
        self.last_sweep = now;
        let before = self.pending.len();
        // Also a datagram whose fragments are from far later (the clock stepped back).
        self.pending
            .retain(|_, d| now.saturating_sub(d.last_seen).saturating_abs() <= TIMEOUT_NANOS);
        stats.defrag.timeouts += (before - self.pending.len()) as u64;
    }

    /// The end of input, or of a capture (the next file starts earlier): the datagrams still
    /// incomplete are dropped and counted, never joined to fragments of another capture.
    pub fn clear(&mut self, stats: &mut Stats) {
        stats.defrag.unfinished += self.pending.len() as u64;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn frag(offset: usize, more: bool, payload: &[u8]) -> Fragment<'_> {
        Fragment {
            vlan: 0,
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            id: 7,
            protocol: IpNumber::UDP,
            offset,
            more_fragments: more,
            payload,
        }
    }

    #[test]
    fn reassembles_out_of_order_with_first_wins_overlap() {
        let mut d = Defragmenter::new();
        let mut s = Stats::default();
        let a: Vec<u8> = (0..16).collect();
        let b: Vec<u8> = (16..24).collect();
        assert!(d.add(&frag(16, false, &b), 0, &mut s).is_none());
        // Overlap with different bytes for block 1: first wins, counted.
        let mut a2 = a.clone();
        a2[8] = 0xff;
        assert!(d.add(&frag(8, true, &a2[8..16]), 0, &mut s).is_none());
        let out = d.add(&frag(0, true, &a), 0, &mut s).expect("complete");
        assert_eq!(out.payload[..8], a[..8]);
        assert_eq!(out.payload[8], 0xff, "first fragment to arrive wins");
        assert_eq!(out.payload[16..], b[..]);
        assert_eq!(s.defrag.conflicting_overlaps, 1);
        assert_eq!(s.defrag.reassembled, 1);
        assert_eq!(d.in_progress(), 0);
    }

    #[test]
    fn bounds_and_timeouts_are_counted() {
        let mut d = Defragmenter::new();
        let mut s = Stats::default();
        let p = [0u8; 8];
        for id in 0..(MAX_DATAGRAMS as u32 + 10) {
            let mut f = frag(0, true, &p);
            f.id = id;
            d.add(&f, 0, &mut s);
        }
        assert_eq!(d.in_progress(), MAX_DATAGRAMS);
        assert_eq!(s.defrag.bound_drops, 10);
        // Past the timeout every pending datagram goes.
        d.add(&frag(0, true, &p), TIMEOUT_NANOS + 2_000_000_000, &mut s);
        assert_eq!(s.defrag.timeouts, MAX_DATAGRAMS as u64);
        // Oversized datagrams are refused.
        assert!(d.add(&frag(65_528, false, &[0; 16]), 0, &mut s).is_none());
        assert_eq!(s.defrag.invalid, 1);
    }

    /// A first fragment, then the clock steps back (a later file that starts earlier): it
    /// expires instead of waiting for its time to come again, and at the end of a capture what
    /// is still incomplete is dropped and counted, never joined to another capture's fragments.
    #[test]
    fn a_clock_step_or_the_end_drops_what_is_incomplete() {
        let mut d = Defragmenter::new();
        let mut s = Stats::default();
        let day = 86_400_000_000_000;
        assert!(d.add(&frag(0, true, &[1; 8]), day, &mut s).is_none());
        let mut other = frag(0, true, &[2; 8]);
        other.id = 8;
        assert!(d.add(&other, 0, &mut s).is_none());
        assert_eq!(s.defrag.timeouts, 1, "the fragment from a day later");
        assert_eq!(d.in_progress(), 1);
        d.clear(&mut s);
        assert_eq!((d.in_progress(), s.defrag.unfinished), (0, 1));
        // The last fragment of the dropped datagram makes nothing.
        assert!(d.add(&frag(8, false, &[3; 8]), 0, &mut s).is_none());
    }
}
