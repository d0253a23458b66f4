//! Per-direction TCP reassembly.
//!
//! - Mid-stream pickup: the first data segment seen fixes the stream position (SPAN captures start
//!   anywhere); the dissector resynchronises on its own framing.
//! - Zero-copy fast path: a segment that is the next expected one and finds no buffered tail is
//!   dissected straight from the packet; only the unconsumed tail of a partial PDU is copied.
//! - Retransmissions are dropped; overlaps are trimmed so the bytes seen first win against
//!   delivered data and between out-of-order segments, as Linux keeps them. Differing overlaps
//!   are counted (`conflicting_overlaps`, `otwatch_transport_events_total`): between held
//!   segments, and a copy of the last segment delivered sent again at its place with other
//!   bytes (its first and last 16 compared), and an in-order segment over bytes held out of order (it
//!   is delivered and the held copy trimmed, as Linux trims its queued one).
//! - A SYN with a new ISN on an open connection that carried data is held until the other end
//!   answers it with a SYN-ACK (`flow/mod.rs`); unanswered, it changes nothing.
//! - Out-of-order segments wait in a buffer keyed by absolute stream offset (no sequence wrap
//!   issues), bounded per stream and across all streams of the pipeline.
//! - Gaps: when a buffer bound is hit, when the peer acknowledges bytes the capture never saw, or
//!   when the flow ends, the hole is skipped and the dissector is told. PDUs delivered that way
//!   carry the frame and time of the segment that brought their bytes, not of whatever packet
//!   made us stop waiting.
//!
//! Sequence numbers compare with serial-number arithmetic (RFC 1982) throughout.

use std::collections::BTreeMap;

use crate::dissect::{App, Ctx, Dir};

/// Out-of-order bytes buffered per direction before the oldest hole is declared a gap.
pub const MAX_OOO_BYTES: usize = 256 * 1024;
/// Out-of-order segments buffered per direction.
pub const MAX_OOO_SEGMENTS: usize = 128;
/// Out-of-order bytes buffered across every stream of a pipeline.
pub const MAX_OOO_BYTES_TOTAL: usize = 64 * 1024 * 1024;
/// Bytes of partial PDUs (a dissector's unconsumed tail) held across every stream of a
/// pipeline before only small ones are kept: each stream's own bound is its dissector's
/// largest PDU (64 KiB for S7 and ENIP), which a flood of flows each sending an unfinished
/// large PDU would otherwise multiply by the flow table's 100 000 flows.
pub const MAX_TAIL_BYTES_TOTAL: usize = 64 * 1024 * 1024;
/// Past [`MAX_TAIL_BYTES_TOTAL`], a stream whose partial PDU is this large or larger drops it
/// (and resynchronises); a plant's PDUs are smaller (Modbus 260 bytes, DNP3 292, IEC 104 255, an S7
/// PDU at most the 960 most devices negotiate).
pub const TAIL_KEPT_UNDER_PRESSURE: usize = 4096;
/// A segment further than this from the expected position, either way, is not a retransmission
/// or a reordering within the window: the stream was lost and picked up again (a new connection
/// on the same 5-tuple whose SYN the capture missed, a merged capture). Waiting for the bytes in
/// between, or dropping everything behind, would lose the rest of the stream.
pub const MAX_SEQ_JUMP: i64 = 1024 * 1024;

/// Signed distance from `b` to `a` in sequence space.
#[inline]
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

/// An out-of-order segment and the packet that brought it.
#[derive(Debug)]
struct Held {
    data: Vec<u8>,
    frame: u64,
    ts_nanos: i64,
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
    ooo: BTreeMap<u64, Held>,
    ooo_bytes: usize,
    /// Highest sequence number the peer acknowledged.
    peer_ack: Option<u32>,
    /// Initial sequence number, when the stream's SYN was seen (as opposed to picked up mid-stream).
    isn: Option<u32>,
    /// The packet (frame, time) that first found the hole before the held data acknowledged:
    /// the hole is skipped from the next packet on, not at once. A SPAN port may hand the
    /// peer's acknowledgement over before the segment it acknowledges; skipping at once lost
    /// that segment as a retransmission when it came, and a spoofed acknowledgement did the same
    /// to every reordering.
    acked_hole: Option<(u64, i64)>,
    /// The last segment delivered whole: its sequence number, length and a sample of its bytes. A copy
    /// sent again at the same place with other bytes (a write behind a read whose checksum
    /// the receiver refused, say) is a conflict, counted; the first copy stays delivered.
    last: Option<LastSegment>,
}

/// What [`TcpStream::last`] keeps of a segment: its place, its length and a sample of its
/// bytes ([`sample`]).
#[derive(Debug, Clone, Copy)]
struct LastSegment {
    seq: u32,
    len: usize,
    sample: [u64; 4],
}

/// The first and last 16 bytes of a segment as four words (all of a segment of up to 32 bytes,
/// which most OT requests are; a PDU's header, function and addresses, and its end): a few
/// loads per delivered segment, no copy.
#[inline]
fn sample(d: &[u8]) -> [u64; 4] {
    let word = |at: usize| -> u64 {
        match d.get(at..at + 8) {
            Some(w) => u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
            // Shorter than a word: byte by byte (rare).
            None => d
                .iter()
                .skip(at)
                .take(8)
                .fold(0u64, |acc, &b| acc << 8 | u64::from(b)),
        }
    };
    let n = d.len();
    [
        word(0),
        word(8.min(n)),
        word(n.saturating_sub(16)),
        word(n.saturating_sub(8)),
    ]
}

impl TcpStream {
    /// The SYN (or SYN-ACK) of this direction: data starts at `isn + 1`. A repeated SYN with the
    /// same ISN changes nothing.
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

    /// A hole the peer acknowledged waits for the next packet (or the next sweep) to be skipped.
    pub fn hole_waits(&self) -> bool {
        self.acked_hole.is_some()
    }

    /// Skips a hole that waited since the last sweep: the flow got no packet since.
    pub fn skip_waiting_hole(&mut self, app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        if self.acked_hole.is_some() {
            self.skip_acked_holes(true, app, ctx, dir);
            self.acked_hole = None;
        }
    }

    pub fn is_idle(&self) -> bool {
        self.tail.is_empty() && self.ooo.is_empty()
    }

    /// The peer acknowledged everything before `ack`. Bytes acknowledged but never captured are a
    /// capture loss: once later data is waiting, skip the hole instead of waiting for it.
    /// `answer`: the acknowledgement came with data of the peer's (an answer, which the
    /// acknowledged bytes came before): the hole is skipped at once, so that what waited behind
    /// it is dissected before the answer. A bare acknowledgement gives the late segment one
    /// packet to come.
    #[inline]
    pub fn on_peer_ack(
        &mut self,
        ack: u32,
        answer: bool,
        app: &mut App,
        ctx: &mut Ctx<'_>,
        dir: Dir,
    ) {
        if self.peer_ack.is_none_or(|p| seq_diff(ack, p) > 0) {
            self.peer_ack = Some(ack);
        }
        // Mostly nothing is held: no hole to skip.
        if !self.ooo.is_empty() {
            self.skip_acked_holes(answer, app, ctx, dir);
        }
    }

    fn skip_acked_holes(&mut self, at_once: bool, app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        while let (Some(ack), Some(next), Some((&first, _))) =
            (self.peer_ack, self.next_seq, self.ooo.first_key_value())
        {
            let first_seq = next.wrapping_add((first - self.next_off) as u32);
            // The peer has everything up to the data we hold: the hole before it was sent and
            // received, just not captured. It will never come; stop waiting for it, from the
            // next packet on (it may be that segment, handed over late).
            if seq_diff(ack, first_seq) < 0 {
                break;
            }
            let here = (ctx.frame, ctx.ts_nanos);
            match self.acked_hole {
                _ if at_once => {}
                Some(noticed) if noticed != here => {}
                Some(_) => break,
                None => {
                    self.acked_hole = Some(here);
                    break;
                }
            }
            self.acked_hole = None;
            self.skip_gap(app, ctx, dir);
        }
    }

    /// A data segment of this direction. `syn`: the segment carries the SYN flag, whose sequence
    /// number is the SYN's own, one before its data (TCP Fast Open).
    pub fn on_segment(
        &mut self,
        seq: u32,
        syn: bool,
        payload: &[u8],
        app: &mut App,
        ctx: &mut Ctx<'_>,
        dir: Dir,
    ) {
        if payload.is_empty() {
            return;
        }
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        let next = match self.next_seq {
            Some(n) => n,
            None => {
                ctx.stats.tcp.midstream_pickups += 1;
                app.on_midstream(dir);
                self.next_seq = Some(seq);
                seq
            }
        };
        let mut rel = seq_diff(seq, next);
        if rel.abs() > MAX_SEQ_JUMP {
            ctx.stats.tcp.discontinuities += 1;
            self.flush(app, ctx, dir);
            app.on_gap(ctx, dir);
            self.next_seq = Some(seq);
            self.peer_ack = None;
            rel = 0;
        }
        let mut data = payload;
        if rel < 0 {
            let behind = rel.unsigned_abs() as usize;
            // A keep-alive probe: one garbage byte (Windows) just behind the stream's end.
            let keep_alive = rel == -1 && data.len() == 1;
            if !keep_alive && self.contradicts_last(seq, data) {
                ctx.stream_conflict(dir);
            }
            if behind >= data.len() {
                ctx.stats.tcp.retransmitted_segments += 1;
                return;
            }
            ctx.stats.tcp.overlapping_segments += 1;
            data = &data[behind..];
            rel = 0;
        }
        if rel == 0 {
            // A hole filled is no hole to skip.
            self.acked_hole = None;
            // Bytes held out of order that this in-order segment covers too: it is delivered
            // and they are trimmed (as Linux trims its queued copy); other bytes there are a
            // conflict, counted.
            if !self.ooo.is_empty() && self.differs_from_held(data) {
                ctx.stream_conflict(dir);
            }
            if data.len() == payload.len() {
                self.last = Some(LastSegment {
                    seq,
                    len: data.len(),
                    sample: sample(data),
                });
            }
            self.deliver(data, app, ctx, dir);
            self.drain_ooo(app, ctx, dir, false);
            return;
        }
        ctx.stats.tcp.out_of_order_segments += 1;
        self.hold(self.next_off + rel as u64, data, ctx, dir);
        while self.ooo_bytes > MAX_OOO_BYTES
            || self.ooo.len() > MAX_OOO_SEGMENTS
            || ctx.stats.tcp.ooo_bytes_held > MAX_OOO_BYTES_TOTAL as u64
        {
            // Over the total (other streams' bytes) with nothing of this stream's held: no gap.
            if self.ooo.is_empty() {
                break;
            }
            ctx.stats.tcp.ooo_bound_gaps += 1;
            self.skip_gap(app, ctx, dir);
        }
        self.skip_acked_holes(false, app, ctx, dir);
    }

    /// Whether a copy sent again at the place of the last segment delivered (`seq`) differs
    /// from it where they overlap, as far as the sample tells: the same length or longer, its
    /// sample of the last segment's length; shorter, the first 16 bytes when both have them.
    fn contradicts_last(&self, seq: u32, data: &[u8]) -> bool {
        let Some(last) = self.last.filter(|l| l.seq == seq) else {
            return false;
        };
        match data.get(..last.len) {
            Some(same) => last.sample != sample(same),
            None if data.len() >= 16 && last.len >= 16 => last.sample[..2] != sample(data)[..2],
            None => false,
        }
    }

    /// Whether `data`, about to be delivered at the stream's position, differs from bytes held
    /// out of order where the two overlap.
    fn differs_from_held(&self, data: &[u8]) -> bool {
        let (off, end) = (self.next_off, self.next_off + data.len() as u64);
        self.ooo.range(off..end).any(|(&k, held)| {
            let to = end.min(k + held.data.len() as u64);
            held.data[..(to - k) as usize] != data[(k - off) as usize..(to - off) as usize]
        })
    }

    /// Buffer an out-of-order segment. Bytes already held win over a later copy wherever the
    /// two overlap, whichever starts first: only the parts of `data` that no held segment
    /// covers are kept (so the held segments never overlap), and a copy whose overlapping
    /// bytes differ is counted as a conflict.
    fn hold(&mut self, off: u64, data: &[u8], ctx: &mut Ctx<'_>, dir: Dir) {
        let (frame, ts_nanos) = (ctx.frame, ctx.ts_nanos);
        let end = off + data.len() as u64;
        // The held segment that starts at or before `off` may reach over it.
        let from = self.ooo.range(..=off).next_back().map_or(off, |(&k, _)| k);
        let mut pos = off;
        let mut uncovered: Vec<(u64, u64)> = Vec::new();
        let mut conflict = false;
        for (&k, held) in self.ooo.range(from..end) {
            let held_end = k + held.data.len() as u64;
            if held_end <= pos {
                continue;
            }
            if k > pos {
                uncovered.push((pos, k));
            }
            let (a, b) = (k.max(pos), held_end.min(end));
            let mine = &data[(a - off) as usize..(b - off) as usize];
            conflict |= held.data[(a - k) as usize..(b - k) as usize] != *mine;
            pos = b;
            if pos >= end {
                break;
            }
        }
        if pos < end {
            uncovered.push((pos, end));
        }
        if conflict {
            ctx.stream_conflict(dir);
        }
        for (a, b) in uncovered {
            let piece = &data[(a - off) as usize..(b - off) as usize];
            self.ooo_bytes += piece.len();
            ctx.stats.tcp.ooo_bytes_held += piece.len() as u64;
            self.ooo.insert(
                a,
                Held {
                    data: piece.to_vec(),
                    frame,
                    ts_nanos,
                },
            );
        }
    }

    /// The flow ends: whatever waits behind holes is delivered after them, and a partial PDU
    /// left over is counted as lost.
    pub fn flush(&mut self, app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        while !self.ooo.is_empty() {
            self.skip_gap(app, ctx, dir);
        }
        ctx.stats.tcp.partial_pdu_bytes_discarded += self.tail.len() as u64;
        self.drop_tail(ctx);
    }

    /// Drops the partial PDU, and its bytes from the pipeline's gauge.
    fn drop_tail(&mut self, ctx: &mut Ctx<'_>) {
        let gauge = &mut ctx.stats.tcp.tail_bytes_held;
        *gauge = gauge.saturating_sub(self.tail.len() as u64);
        self.tail.clear();
        self.tail.shrink_to(TAIL_KEPT_UNDER_PRESSURE);
    }

    /// Release buffered memory from the global accounting (the stream is being dropped).
    pub fn release(&mut self, ctx: &mut Ctx<'_>) {
        self.drop_tail(ctx);
        ctx.stats.tcp.ooo_bytes_held = ctx
            .stats
            .tcp
            .ooo_bytes_held
            .saturating_sub(self.ooo_bytes as u64);
        self.ooo.clear();
        self.ooo_bytes = 0;
    }

    fn deliver(&mut self, data: &[u8], app: &mut App, ctx: &mut Ctx<'_>, dir: Dir) {
        self.advance(data.len());
        let before = self.tail.len();
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
        if self.tail.len() == before {
            // Most segments: no partial PDU before or after.
            return;
        }
        let room = self.tail.len().max(TAIL_KEPT_UNDER_PRESSURE);
        if self.tail.capacity() > 2 * room {
            // A large PDU is done, or most of it: its room goes back, so that a stream holds at
            // most about twice what the gauge counts (flows that each once carried a large PDU
            // would otherwise keep all of it).
            self.tail.shrink_to(room);
        }
        let tcp = &mut ctx.stats.tcp;
        tcp.tail_bytes_held =
            (tcp.tail_bytes_held + self.tail.len() as u64).saturating_sub(before as u64);
        tcp.tail_bytes_peak = tcp.tail_bytes_peak.max(tcp.tail_bytes_held);
        let gauge = &tcp.tail_bytes_held;
        let crowded =
            *gauge > MAX_TAIL_BYTES_TOTAL as u64 && self.tail.len() >= TAIL_KEPT_UNDER_PRESSURE;
        if self.tail.len() > app.max_buffered() || crowded {
            // The dissector keeps at most one partial PDU; more means it is confused. Or the
            // pipeline holds too many large ones. Drop and resync.
            ctx.stats.tcp.buffer_bound_drops += self.tail.len() as u64;
            self.drop_tail(ctx);
            app.on_gap(ctx, dir);
        }
    }

    fn advance(&mut self, n: usize) {
        self.next_off += n as u64;
        self.next_seq = self.next_seq.map(|s| s.wrapping_add(n as u32));
    }

    /// Deliver the held segments that are now in order. `own_time`: stamp what they complete with
    /// the frame and time of the segment itself (after a skip), rather than of the packet in hand
    /// (which filled the hole, and so completed the PDUs behind it).
    fn drain_ooo(&mut self, app: &mut App, ctx: &mut Ctx<'_>, dir: Dir, own_time: bool) {
        while let Some(entry) = self.ooo.first_entry() {
            let off = *entry.key();
            if off > self.next_off {
                break;
            }
            let held = entry.remove();
            self.ooo_bytes -= held.data.len();
            ctx.stats.tcp.ooo_bytes_held = ctx
                .stats
                .tcp
                .ooo_bytes_held
                .saturating_sub(held.data.len() as u64);
            let behind = (self.next_off - off) as usize;
            if behind >= held.data.len() {
                ctx.stats.tcp.retransmitted_segments += 1;
                continue;
            }
            if behind > 0 {
                ctx.stats.tcp.overlapping_segments += 1;
            }
            if own_time {
                let (frame, ts) = (ctx.frame, ctx.ts_nanos);
                ctx.frame = held.frame;
                ctx.ts_nanos = held.ts_nanos;
                self.deliver(&held.data[behind..], app, ctx, dir);
                ctx.frame = frame;
                ctx.ts_nanos = ts;
            } else {
                self.deliver(&held.data[behind..], app, ctx, dir);
            }
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
            ctx.stats.tcp.partial_pdu_bytes_discarded += self.tail.len() as u64;
            self.drop_tail(ctx);
            app.on_gap(ctx, dir);
            self.advance(hole as usize);
        }
        self.drain_ooo(app, ctx, dir, true);
    }
}
