//! Per-direction TCP reassembly.
//!
//! - Mid-stream pickup: the first data segment seen fixes the stream position (SPAN captures start
//!   anywhere); the dissector resynchronises on its own framing.
//! - Zero-copy fast path: a segment that is the next expected one and finds no buffered tail is
//!   dissected straight from the packet; only the unconsumed tail of a partial PDU is copied.
//! - Retransmissions are dropped; partial overlaps are trimmed (first wins); out-of-order segments
//!   wait in a bounded buffer keyed by absolute stream offset (no sequence wrap issues).
//! - Gaps: when the out-of-order buffer hits its bound, when the peer acknowledges bytes the capture
//!   never saw, or when the flow ends, the hole is skipped and the dissector is told.
//!
//! Sequence numbers compare with serial-number arithmetic (RFC 1982) throughout.

use std::collections::BTreeMap;

use crate::dissect::{App, Ctx, Dir};

/// Out-of-order bytes buffered per direction before the oldest hole is declared a gap.
pub const MAX_OOO_BYTES: usize = 256 * 1024;
/// Out-of-order segments buffered per direction.
pub const MAX_OOO_SEGMENTS: usize = 128;

/// Signed distance from `b` to `a` in sequence space.
#[inline]
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

#[derive(Debug, Default)]
pub struct TcpStream {
    /// Sequence number of the next byte to deliver; `None` until the stream's position is known.
    next_seq: Option<u32>,
    /// Absolute offset of `next_seq` in the stream (bytes delivered or skipped so far).
    next_off: u64,
    /// Delivered bytes the dissector has not consumed yet (a partial PDU).
    tail: Vec<u8>,
    /// Out-of-order segments by absolute stream offset.
    ooo: BTreeMap<u64, Vec<u8>>,
    ooo_bytes: usize,
    /// Highest sequence number the peer acknowledged.
    peer_ack: Option<u32>,
    /// Initial sequence number, when the stream's SYN was seen (as opposed to picked up mid-stream).
    isn: Option<u32>,
}

impl TcpStream {
    /// The SYN (or SYN-ACK) of this direction: data starts at `isn + 1`.
    pub fn on_syn(&mut self, isn: u32) {
        if self.isn != Some(isn) {
            self.next_seq = Some(isn.wrapping_add(1));
            self.isn = Some(isn);
        }
    }

    /// A SYN with `isn` opens a new connection on this 5-tuple (port reuse), rather than
    /// repeating the SYN of the current one.
    pub fn is_new_connection(&self, isn: u32) -> bool {
        match self.isn {
            Some(current) => current != isn,
            None => self.next_seq.is_some(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.tail.is_empty() && self.ooo.is_empty()
    }

    /// The peer acknowledged everything before `ack`. Bytes acknowledged but never captured are a
    /// capture loss: once later data is waiting, skip the hole instead of waiting for it.
    pub fn on_peer_ack(&mut self, ack: u32, app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        if self.peer_ack.is_none_or(|p| seq_diff(ack, p) > 0) {
            self.peer_ack = Some(ack);
        }
        self.skip_acked_holes(app, ctx, dir);
    }

    fn skip_acked_holes(&mut self, app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        while let (Some(ack), Some(next), Some((&first, _))) =
            (self.peer_ack, self.next_seq, self.ooo.first_key_value())
        {
            let first_seq = next.wrapping_add((first - self.next_off) as u32);
            // The peer has everything up to the data we hold: the hole before it was sent and
            // received, just not captured. It will never come; stop waiting for it.
            if seq_diff(ack, first_seq) < 0 {
                break;
            }
            self.skip_gap(app, ctx, dir);
        }
    }

    /// A data segment of this direction.
    pub fn on_segment(
        &mut self,
        seq: u32,
        payload: &[u8],
        app: &mut App,
        ctx: &mut Ctx<'_>,
        dir: Dir,
    ) {
        if payload.is_empty() {
            return;
        }
        let next = match self.next_seq {
            Some(n) => n,
            None => {
                ctx.stats.tcp.midstream_pickups += 1;
                self.next_seq = Some(seq);
                seq
            }
        };
        let mut rel = seq_diff(seq, next);
        let mut data = payload;
        if rel < 0 {
            let behind = rel.unsigned_abs() as usize;
            if behind >= data.len() {
                ctx.stats.tcp.retransmitted_segments += 1;
                return;
            }
            ctx.stats.tcp.overlapping_segments += 1;
            data = &data[behind..];
            rel = 0;
        }
        if rel == 0 {
            self.deliver(data, app, ctx, dir);
            self.drain_ooo(app, ctx, dir);
            return;
        }
        // Out of order: hold it.
        ctx.stats.tcp.out_of_order_segments += 1;
        let off = self.next_off + rel as u64;
        match self.ooo.get(&off) {
            Some(existing) => {
                let n = existing.len().min(data.len());
                if existing[..n] != data[..n] {
                    ctx.stats.tcp.conflicting_overlaps += 1;
                }
                if data.len() > existing.len() {
                    self.ooo_bytes += data.len() - existing.len();
                    self.ooo.insert(off, data.to_vec());
                }
            }
            None => {
                self.ooo_bytes += data.len();
                self.ooo.insert(off, data.to_vec());
            }
        }
        while self.ooo_bytes > MAX_OOO_BYTES || self.ooo.len() > MAX_OOO_SEGMENTS {
            ctx.stats.tcp.ooo_bound_gaps += 1;
            self.skip_gap(app, ctx, dir);
        }
        self.skip_acked_holes(app, ctx, dir);
    }

    /// The flow ends: whatever waits behind holes is delivered after them.
    pub fn flush(&mut self, app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        while !self.ooo.is_empty() {
            self.skip_gap(app, ctx, dir);
        }
    }

    fn deliver(&mut self, data: &[u8], app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        self.advance(data.len());
        if self.tail.is_empty() {
            // Fast path: dissect straight from the packet.
            let used = app.on_stream_data(ctx, dir, data).min(data.len());
            self.tail.extend_from_slice(&data[used..]);
        } else {
            self.tail.extend_from_slice(data);
            let used = app
                .on_stream_data(ctx, dir, &self.tail)
                .min(self.tail.len());
            self.tail.drain(..used);
        }
        if self.tail.len() > app.max_buffered() {
            // The dissector keeps at most one partial PDU; more means it is confused. Drop and resync.
            ctx.stats.tcp.buffer_bound_drops += self.tail.len() as u64;
            self.tail.clear();
            app.on_gap(ctx, dir);
        }
    }

    fn advance(&mut self, n: usize) {
        self.next_off += n as u64;
        self.next_seq = self.next_seq.map(|s| s.wrapping_add(n as u32));
    }

    fn drain_ooo(&mut self, app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        while let Some(entry) = self.ooo.first_entry() {
            let off = *entry.key();
            if off > self.next_off {
                break;
            }
            let seg = entry.remove();
            self.ooo_bytes -= seg.len();
            let behind = (self.next_off - off) as usize;
            if behind >= seg.len() {
                ctx.stats.tcp.retransmitted_segments += 1;
                continue;
            }
            if behind > 0 {
                ctx.stats.tcp.overlapping_segments += 1;
            }
            self.deliver(&seg[behind..], app, ctx, dir);
        }
    }

    /// Skip the hole before the first out-of-order segment.
    fn skip_gap(&mut self, app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        let Some((&first, _)) = self.ooo.first_key_value() else {
            return;
        };
        if first > self.next_off {
            let hole = first - self.next_off;
            ctx.stats.tcp.gaps += 1;
            ctx.stats.tcp.gap_bytes += hole;
            self.tail.clear();
            app.on_gap(ctx, dir);
            self.advance(hole as usize);
        }
        self.drain_ooo(app, ctx, dir);
    }
}
