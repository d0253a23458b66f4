//! The transport function (clause 8): one header octet in front of each link frame's user data, and
//! the reassembly of segments into application fragments.
//!
//! The receive rules follow clause 8: a segment with FIR starts a fragment (abandoning any in
//! progress), a segment without FIR must carry the next sequence number (modulo 64) of the
//! fragment in progress or the fragment is lost, FIN ends it. The reassembler is a pure state
//! machine: the caller keeps one per (link source, link destination, direction) and feeds it
//! the user data of every frame with [`super::LinkFrame::carries_user_data`].

use core::fmt;

use super::MAX_SEGMENT_PAYLOAD;

/// Default bound on a reassembled fragment. IEEE 1815-2012 lets each device declare its
/// largest fragment (configurable, 2048 octets is the usual default of masters and
/// outstations, and the size most device profiles declare); larger ones exist (file transfer
/// tuning) but are rare enough that the caller opts in with
/// [`TransportReassembler::with_max_fragment_len`].
pub const DEFAULT_MAX_FRAGMENT_LEN: usize = 2048;
/// Largest configurable bound: application fragments are at most 65535 octets long.
pub const MAX_FRAGMENT_LEN_LIMIT: usize = 65535;
/// Smallest configurable bound: one full segment, so that every single-segment fragment fits.
pub const MIN_FRAGMENT_LEN_LIMIT: usize = MAX_SEGMENT_PAYLOAD;

/// The transport header octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransportHeader(pub u8);

impl TransportHeader {
    pub const FIN: u8 = 0x80;
    pub const FIR: u8 = 0x40;
    pub const SEQUENCE_MASK: u8 = 0x3F;

    /// Last segment of a fragment.
    pub const fn fin(&self) -> bool {
        self.0 & Self::FIN != 0
    }

    /// First segment of a fragment.
    pub const fn fir(&self) -> bool {
        self.0 & Self::FIR != 0
    }

    /// Sequence number, 0..=63.
    pub const fn seq(&self) -> u8 {
        self.0 & Self::SEQUENCE_MASK
    }

    /// The sequence number that must follow this one.
    pub const fn next_seq(&self) -> u8 {
        (self.seq() + 1) & Self::SEQUENCE_MASK
    }
}

/// Why application data was thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardReason {
    /// A segment without FIR did not carry the next sequence number: one was lost or
    /// reordered; the fragment in progress and this segment are dropped.
    SequenceError,
    /// A segment without FIR arrived while no fragment was in progress (e.g. the capture
    /// started mid-fragment, or the fragment was already dropped).
    NoFirst,
    /// The fragment grew past the reassembler's bound; it is dropped, and so are the rest of
    /// its segments as they arrive.
    Overflow,
    /// A segment with FIR arrived while a fragment was in progress: the old one is dropped and
    /// the new one started.
    Restarted,
    /// The pushed segment had no octets at all, not even a transport header.
    Empty,
    /// The segment repeats the last one taken, sequence number and octets: a link layer retry
    /// (IEEE 1815-2012: a confirmed frame sent again when its acknowledgement was lost, which
    /// the outstation takes once). It is passed over; the fragment in progress goes on.
    Repeated,
}

impl DiscardReason {
    /// snake_case reason, for counters and events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::SequenceError => "sequence_error",
            Self::NoFirst => "no_first",
            Self::Overflow => "overflow",
            Self::Restarted => "restarted",
            Self::Empty => "empty",
            Self::Repeated => "repeated_segment",
        }
    }
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Application data thrown away by one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Discard {
    pub reason: DiscardReason,
    /// Application octets lost: the fragment in progress, plus the pushed segment's payload
    /// unless it went on to start a new fragment.
    pub octets: usize,
}

/// What one push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportOutcome<'a> {
    /// A whole application fragment. Borrowed from the pushed segment when it was a lone
    /// FIR+FIN segment (no copy), from the reassembler's buffer otherwise; either way valid
    /// until the next push. `discarded` reports a fragment this segment's FIR abandoned
    /// (always [`DiscardReason::Restarted`]).
    Complete {
        fragment: &'a [u8],
        segments: usize,
        discarded: Option<Discard>,
    },
    /// The segment was added to a fragment still waiting for its FIN; `len` octets so far.
    InProgress {
        len: usize,
        segments: usize,
        discarded: Option<Discard>,
    },
    /// The segment did not become part of any fragment.
    Discarded(Discard),
}

impl<'a> TransportOutcome<'a> {
    /// The completed fragment, if any.
    pub fn fragment(&self) -> Option<&'a [u8]> {
        match self {
            Self::Complete { fragment, .. } => Some(fragment),
            _ => None,
        }
    }

    /// Data this push threw away, if any.
    pub fn discard(&self) -> Option<Discard> {
        match *self {
            Self::Complete { discarded, .. } | Self::InProgress { discarded, .. } => discarded,
            Self::Discarded(discard) => Some(discard),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No fragment in progress. The buffer may still hold the last completed fragment.
    Idle,
    Assembling {
        next_seq: u8,
        segments: usize,
        /// Octets of the last segment taken (the end of the buffer), to know it repeated.
        last_len: usize,
    },
    /// Dropping the rest of a fragment that overflowed, until its FIN.
    Skipping { next_seq: u8 },
}

/// Reassembles transport segments into application fragments, within a byte bound.
///
/// Memory: the buffer grows on demand, only for fragments of more than one segment, and never
/// beyond [`Self::max_fragment_len`]; it is reused, never shrunk (call [`Self::shrink`] to give
/// it back). A stream of FIR-without-FIN segments cannot grow it past the bound: each FIR
/// restarts the fragment, each continuation is checked against the bound before it is copied.
#[derive(Debug, Clone)]
pub struct TransportReassembler {
    buf: Vec<u8>,
    max_len: usize,
    state: State,
}

impl Default for TransportReassembler {
    fn default() -> Self {
        Self::new()
    }
}

impl TransportReassembler {
    /// A reassembler bounded by [`DEFAULT_MAX_FRAGMENT_LEN`].
    pub const fn new() -> Self {
        Self {
            buf: Vec::new(),
            max_len: DEFAULT_MAX_FRAGMENT_LEN,
            state: State::Idle,
        }
    }

    /// A reassembler bounded by `max_len` octets, clamped to
    /// [`MIN_FRAGMENT_LEN_LIMIT`]`..=`[`MAX_FRAGMENT_LEN_LIMIT`].
    pub fn with_max_fragment_len(max_len: usize) -> Self {
        Self {
            max_len: max_len.clamp(MIN_FRAGMENT_LEN_LIMIT, MAX_FRAGMENT_LEN_LIMIT),
            ..Self::new()
        }
    }

    pub fn max_fragment_len(&self) -> usize {
        self.max_len
    }

    /// Octets of the fragment in progress, 0 when none is.
    pub fn pending_len(&self) -> usize {
        match self.state {
            State::Assembling { .. } => self.buf.len(),
            State::Idle | State::Skipping { .. } => 0,
        }
    }

    /// Octets the buffer holds on the heap.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Forgets any fragment in progress, e.g. after a gap in the TCP stream (the next segment
    /// would otherwise be judged against a sequence it cannot continue). Returns the octets
    /// dropped.
    pub fn reset(&mut self) -> usize {
        let dropped = self.pending_len();
        self.buf.clear();
        self.state = State::Idle;
        dropped
    }

    /// Returns the buffer's memory to the allocator (e.g. for an idle flow).
    pub fn shrink(&mut self) {
        self.reset();
        self.buf = Vec::new();
    }

    /// Takes one transport segment: the user data of one link frame, header octet first.
    pub fn push<'a>(&'a mut self, segment: &'a [u8]) -> TransportOutcome<'a> {
        let Some((&header, payload)) = segment.split_first() else {
            return TransportOutcome::Discarded(Discard {
                reason: DiscardReason::Empty,
                octets: 0,
            });
        };
        let header = TransportHeader(header);
        if header.fir() {
            return self.start(header, payload);
        }
        match self.state {
            State::Idle => TransportOutcome::Discarded(Discard {
                reason: DiscardReason::NoFirst,
                octets: payload.len(),
            }),
            State::Skipping { next_seq } => {
                if header.seq() != next_seq {
                    self.state = State::Idle;
                    return TransportOutcome::Discarded(Discard {
                        reason: DiscardReason::NoFirst,
                        octets: payload.len(),
                    });
                }
                self.state = if header.fin() {
                    State::Idle
                } else {
                    State::Skipping {
                        next_seq: header.next_seq(),
                    }
                };
                TransportOutcome::Discarded(Discard {
                    reason: DiscardReason::Overflow,
                    octets: payload.len(),
                })
            }
            State::Assembling {
                next_seq,
                segments,
                last_len,
            } => {
                if self.repeats(header, payload, next_seq, last_len) {
                    return TransportOutcome::Discarded(Discard {
                        reason: DiscardReason::Repeated,
                        octets: payload.len(),
                    });
                }
                if header.seq() != next_seq {
                    return TransportOutcome::Discarded(self.drop_fragment(
                        DiscardReason::SequenceError,
                        payload,
                        State::Idle,
                    ));
                }
                if !self.append(payload) {
                    let after = if header.fin() {
                        State::Idle
                    } else {
                        State::Skipping {
                            next_seq: header.next_seq(),
                        }
                    };
                    return TransportOutcome::Discarded(self.drop_fragment(
                        DiscardReason::Overflow,
                        payload,
                        after,
                    ));
                }
                let segments = segments.saturating_add(1);
                if header.fin() {
                    self.state = State::Idle;
                    TransportOutcome::Complete {
                        fragment: &self.buf,
                        segments,
                        discarded: None,
                    }
                } else {
                    self.state = State::Assembling {
                        next_seq: header.next_seq(),
                        segments,
                        last_len: payload.len(),
                    };
                    TransportOutcome::InProgress {
                        len: self.buf.len(),
                        segments,
                        discarded: None,
                    }
                }
            }
        }
    }

    /// Whether a segment is the last one taken sent again: the sequence number before
    /// `next_seq`, the same FIR bit as the fragment's place says, and the same octets.
    fn repeats(
        &self,
        header: TransportHeader,
        payload: &[u8],
        next_seq: u8,
        last_len: usize,
    ) -> bool {
        header.next_seq() == next_seq
            && last_len == payload.len()
            && header.fir() == (self.buf.len() == last_len)
            && self.buf.ends_with(payload)
    }

    /// A segment with FIR: abandons what is in progress and starts over.
    fn start<'a>(&'a mut self, header: TransportHeader, payload: &'a [u8]) -> TransportOutcome<'a> {
        if let State::Assembling {
            next_seq, last_len, ..
        } = self.state
        {
            if self.repeats(header, payload, next_seq, last_len) {
                return TransportOutcome::Discarded(Discard {
                    reason: DiscardReason::Repeated,
                    octets: payload.len(),
                });
            }
        }
        let restarted = match self.state {
            State::Assembling { .. } => Some(Discard {
                reason: DiscardReason::Restarted,
                octets: self.buf.len(),
            }),
            State::Idle | State::Skipping { .. } => None,
        };
        self.buf.clear();
        self.state = State::Idle;
        if header.fin() {
            // The common case, one segment per fragment: no copy.
            return TransportOutcome::Complete {
                fragment: payload,
                segments: 1,
                discarded: restarted,
            };
        }
        if !self.append(payload) {
            // Only when the caller pushes more than a link frame can carry.
            let octets = restarted.map_or(0, |d| d.octets) + payload.len();
            self.state = State::Skipping {
                next_seq: header.next_seq(),
            };
            return TransportOutcome::Discarded(Discard {
                reason: DiscardReason::Overflow,
                octets,
            });
        }
        self.state = State::Assembling {
            next_seq: header.next_seq(),
            segments: 1,
            last_len: payload.len(),
        };
        TransportOutcome::InProgress {
            len: self.buf.len(),
            segments: 1,
            discarded: restarted,
        }
    }

    /// Appends `payload` if the fragment stays within the bound. Grows the buffer at most to
    /// the bound, so its capacity never exceeds it.
    fn append(&mut self, payload: &[u8]) -> bool {
        let Some(len) = self
            .buf
            .len()
            .checked_add(payload.len())
            .filter(|&len| len <= self.max_len)
        else {
            return false;
        };
        if len > self.buf.capacity() {
            let target = len
                .max(self.buf.capacity().saturating_mul(2))
                .max(MAX_SEGMENT_PAYLOAD * 2)
                .min(self.max_len);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(payload);
        true
    }

    fn drop_fragment(&mut self, reason: DiscardReason, payload: &[u8], after: State) -> Discard {
        let octets = self.buf.len() + payload.len();
        self.buf.clear();
        self.state = after;
        Discard { reason, octets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(header: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![header];
        s.extend_from_slice(payload);
        s
    }

    #[test]
    fn header_bits() {
        // read_and_response.pcap frames 6 and 8: 0x53 (FIR, seq 19) then 0x94 (FIN, seq 20).
        let first = TransportHeader(0x53);
        assert!(first.fir() && !first.fin());
        assert_eq!((first.seq(), first.next_seq()), (19, 20));
        let last = TransportHeader(0x94);
        assert!(last.fin() && !last.fir() && last.seq() == 20);
        assert_eq!(TransportHeader(0x3F).next_seq(), 0);
    }

    #[test]
    fn fir_fin_segment_is_returned_without_copy() {
        let mut r = TransportReassembler::new();
        // The class read of read_and_response.pcap frame 4: transport 0xC0, FIR+FIN seq 0.
        let seg = [0xC0, 0xC0, 0x01, 0x3C, 0x02, 0x06];
        let outcome = r.push(&seg);
        let fragment = outcome.fragment().unwrap();
        assert_eq!(fragment, &seg[1..]);
        assert!(core::ptr::eq(fragment.as_ptr(), seg[1..].as_ptr()));
        assert_eq!(outcome.discard(), None);
        assert_eq!(
            r.buffer_capacity(),
            0,
            "no heap for single-segment fragments"
        );
        assert_eq!(r.pending_len(), 0);
    }

    /// A link layer retry sends a segment again, sequence number and octets: it is passed over
    /// (the outstation takes it once) and the fragment goes on, whether the first segment or a
    /// middle one was repeated. A segment with the same number and other octets is a sequence
    /// error, as before.
    #[test]
    fn a_repeated_segment_is_passed_over() {
        let (first, middle, last) = (
            segment(0x41, &[1, 2]),
            segment(0x02, &[3]),
            segment(0x83, &[4]),
        );
        for repeated in 0..2 {
            let mut r = TransportReassembler::new();
            for (i, seg) in [&first, &middle].into_iter().enumerate() {
                assert_eq!(r.push(seg).discard(), None);
                if i == repeated {
                    let again = r.push(seg).discard().map(|d| d.reason);
                    assert_eq!(again, Some(DiscardReason::Repeated), "segment {i}");
                }
            }
            assert_eq!(r.push(&last).fragment(), Some(&[1u8, 2, 3, 4][..]));
        }
        let mut r = TransportReassembler::new();
        r.push(&first);
        r.push(&middle);
        let other = segment(0x02, &[9]);
        assert_eq!(
            r.push(&other).discard().map(|d| d.reason),
            Some(DiscardReason::SequenceError)
        );
    }

    #[test]
    fn three_segments_in_order() {
        // dnp3_udp_select_operate.pcap frames 6-8: 0x72 (FIR seq 50), 0x33, 0xB4 (FIN).
        let mut r = TransportReassembler::new();
        let a = segment(0x72, &[1; 249]);
        let b = segment(0x33, &[2; 249]);
        let c = segment(0xB4, &[3; 20]);
        assert_eq!(
            r.push(&a),
            TransportOutcome::InProgress {
                len: 249,
                segments: 1,
                discarded: None
            }
        );
        assert_eq!(r.pending_len(), 249);
        assert_eq!(
            r.push(&b),
            TransportOutcome::InProgress {
                len: 498,
                segments: 2,
                discarded: None
            }
        );
        let outcome = r.push(&c);
        let TransportOutcome::Complete {
            fragment,
            segments,
            discarded,
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        assert_eq!((fragment.len(), segments, discarded), (518, 3, None));
        assert_eq!(&fragment[..249], &[1; 249][..]);
        assert_eq!(&fragment[249..498], &[2; 249][..]);
        assert_eq!(&fragment[498..], &[3; 20][..]);
        assert_eq!(r.pending_len(), 0);
    }

    #[test]
    fn lost_middle_segment_discards_the_fragment() {
        let mut r = TransportReassembler::new();
        assert!(matches!(
            r.push(&segment(0x72, &[1; 249])),
            TransportOutcome::InProgress { .. }
        ));
        // Seq 51 is lost; 52 with FIN arrives.
        assert_eq!(
            r.push(&segment(0xB4, &[3; 20])),
            TransportOutcome::Discarded(Discard {
                reason: DiscardReason::SequenceError,
                octets: 269
            })
        );
        assert_eq!(r.pending_len(), 0);
        // Nothing in progress any more: a lone continuation is NoFirst.
        assert_eq!(
            r.push(&segment(0x35, &[4; 5])),
            TransportOutcome::Discarded(Discard {
                reason: DiscardReason::NoFirst,
                octets: 5
            })
        );
        // And the next FIR starts cleanly.
        assert_eq!(r.push(&[0xC0, 0xAA]).fragment(), Some(&[0xAA][..]));
    }

    #[test]
    fn fir_while_in_progress_restarts() {
        let mut r = TransportReassembler::new();
        let _ = r.push(&segment(0x41, &[1; 100]));
        // A FIR+FIN: the old fragment is reported dropped, the new one returned.
        let seg = segment(0xC9, &[9; 10]);
        let outcome = r.push(&seg);
        assert_eq!(
            outcome.discard(),
            Some(Discard {
                reason: DiscardReason::Restarted,
                octets: 100
            })
        );
        assert_eq!(outcome.fragment(), Some(&[9; 10][..]));
        // A FIR without FIN while in progress: dropped old, new in progress.
        let _ = r.push(&segment(0x41, &[1; 100]));
        assert_eq!(
            r.push(&segment(0x4A, &[2; 30])),
            TransportOutcome::InProgress {
                len: 30,
                segments: 1,
                discarded: Some(Discard {
                    reason: DiscardReason::Restarted,
                    octets: 100
                })
            }
        );
    }

    #[test]
    fn sequence_wraps_at_64() {
        let mut r = TransportReassembler::new();
        let _ = r.push(&segment(0x7F, &[1; 3])); // FIR, seq 63
        let last = segment(0x80, &[2; 3]); // FIN, seq 0
        let outcome = r.push(&last);
        assert_eq!(outcome.fragment(), Some(&[1, 1, 1, 2, 2, 2][..]));
    }

    #[test]
    fn overflow_drops_the_fragment_and_its_remaining_segments() {
        let mut r = TransportReassembler::with_max_fragment_len(300);
        assert_eq!(r.max_fragment_len(), 300);
        let _ = r.push(&segment(0x40, &[0; 249]));
        assert_eq!(
            r.push(&segment(0x01, &[0; 249])),
            TransportOutcome::Discarded(Discard {
                reason: DiscardReason::Overflow,
                octets: 498
            })
        );
        // The rest of that fragment is dropped as part of the overflow, not as NoFirst.
        assert_eq!(
            r.push(&segment(0x02, &[0; 249])),
            TransportOutcome::Discarded(Discard {
                reason: DiscardReason::Overflow,
                octets: 249
            })
        );
        assert_eq!(
            r.push(&segment(0x83, &[0; 10])).discard().map(|d| d.reason),
            Some(DiscardReason::Overflow)
        );
        // Its FIN ended the skipping: a continuation now is NoFirst.
        assert_eq!(
            r.push(&segment(0x04, &[0; 10])).discard().map(|d| d.reason),
            Some(DiscardReason::NoFirst)
        );
        assert!(r.buffer_capacity() <= 300);
    }

    #[test]
    fn fir_without_fin_flood_stays_bounded() {
        let mut r = TransportReassembler::new();
        let mut restarted = 0;
        for i in 0..10_000u32 {
            // Every FIR restarts; every third segment is a valid continuation.
            let seq = (i % 64) as u8;
            let header = if i % 3 == 0 { 0x40 | seq } else { seq };
            let seg = segment(header, &[0x5A; 249]);
            let outcome = r.push(&seg);
            if let Some(Discard {
                reason: DiscardReason::Restarted,
                ..
            }) = outcome.discard()
            {
                restarted += 1;
            }
            assert!(r.pending_len() <= DEFAULT_MAX_FRAGMENT_LEN);
            assert!(r.buffer_capacity() <= DEFAULT_MAX_FRAGMENT_LEN);
        }
        assert!(restarted > 3000);
        // And a pure stream of continuations in sequence hits the bound, never more.
        let mut r = TransportReassembler::new();
        let _ = r.push(&segment(0x40, &[0; 249]));
        let mut overflowed = false;
        for i in 1..1000u32 {
            let seg = segment((i % 64) as u8, &[0; 249]);
            let outcome = r.push(&seg);
            overflowed |= outcome.discard().map(|d| d.reason) == Some(DiscardReason::Overflow);
            assert!(r.pending_len() <= DEFAULT_MAX_FRAGMENT_LEN);
            assert!(r.buffer_capacity() <= DEFAULT_MAX_FRAGMENT_LEN);
        }
        assert!(overflowed);
    }

    #[test]
    fn bounds_are_clamped() {
        assert_eq!(
            TransportReassembler::with_max_fragment_len(0).max_fragment_len(),
            MIN_FRAGMENT_LEN_LIMIT
        );
        assert_eq!(
            TransportReassembler::with_max_fragment_len(1 << 20).max_fragment_len(),
            MAX_FRAGMENT_LEN_LIMIT
        );
        assert_eq!(TransportReassembler::default().max_fragment_len(), 2048);
    }

    #[test]
    fn empty_segment_and_reset() {
        let mut r = TransportReassembler::new();
        assert_eq!(
            r.push(&[]),
            TransportOutcome::Discarded(Discard {
                reason: DiscardReason::Empty,
                octets: 0
            })
        );
        let _ = r.push(&segment(0x40, &[0; 50]));
        assert_eq!(r.reset(), 50);
        assert_eq!(
            r.push(&segment(0x01, &[0; 5])).discard().map(|d| d.reason),
            Some(DiscardReason::NoFirst)
        );
        r.shrink();
        assert_eq!(r.buffer_capacity(), 0);
        // A FIR+FIN with no application octets is an empty fragment: the application layer
        // judges it.
        assert_eq!(r.push(&[0xC0]).fragment(), Some(&[][..]));
        assert_eq!(DiscardReason::SequenceError.to_string(), "sequence_error");
    }
}
