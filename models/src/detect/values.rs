//! Value envelopes: each point's learned range and step, checked on every value a PDU carries,
//! with a per-server memo of the accesses already found inside them.

use super::*;
use crate::obs::Values;

pub(super) struct PointEnv {
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) max_step: f64,
    pub(super) samples: u64,
    /// The margins, fixed once learned: see [`PointEnv::new`].
    soft: f64,
    soft_bounds: (f64, f64),
    hard_bounds: (f64, f64),
    jump: f64,
}

impl PointEnv {
    /// A learned envelope, with the bounds that the checks compare each value with.
    ///
    /// A value is out of range when it is outside the envelope by a soft margin, having
    /// jumped there, or outside by a hard margin however it got there. A value that drifts
    /// out in small steps (a level that learning saw only part of) is not an alarm until it is
    /// far out; nor is the first value seen, which has no step. The margins also scale with
    /// the value's magnitude: a reading that learning saw constant at 13880 and now reads
    /// 13872 has not left its envelope in any sense an operator would care about (2% soft,
    /// 20% hard).
    pub(super) fn new(min: f64, max: f64, max_step: f64, samples: u64) -> Self {
        let range = max - min;
        let magnitude = min.abs().max(max.abs());
        let soft = (0.5 * range)
            .max(10.0 * max_step)
            .max(0.02 * magnitude)
            .max(1.0);
        let hard = (2.0 * range)
            .max(50.0 * max_step)
            .max(0.2 * magnitude)
            .max(10.0);
        PointEnv {
            min,
            max,
            max_step,
            samples,
            soft,
            soft_bounds: (min - soft, max + soft),
            hard_bounds: (min - hard, max + hard),
            jump: 4.0 * max_step.max(1.0),
        }
    }
}

/// What every value checked reads and writes of its point, apart from the rest of the
/// envelope ([`PointEnv`], read only for a value outside the soft bounds): a value costs one
/// short load and store, and a value that repeats the point's last one inside its bounds
/// (most of a poll's values) only the load.
#[derive(Clone, Copy)]
struct PointHot {
    /// The last value seen in detection, as bits; meaningful once `seen`.
    last: u64,
    seen: bool,
    /// Seen, and its last value was inside the soft bounds: the same value again needs
    /// neither recording nor checking.
    quiet: bool,
    /// The soft bounds, or none (infinite) for a point learned from fewer than three samples,
    /// which is never checked.
    soft_bounds: (f64, f64),
}

impl PointHot {
    fn of(env: &PointEnv) -> Self {
        PointHot {
            last: 0,
            seen: false,
            quiet: false,
            soft_bounds: if env.samples < 3 {
                (f64::NEG_INFINITY, f64::INFINITY)
            } else {
                env.soft_bounds
            },
        }
    }
}

/// The bound on the servers' runs of looked-up addresses ([`ServerPoints::run`]), and the place
/// of an address without an envelope: learning's.
pub(super) use crate::learn::{MAX_RUN_ELEMENTS, NO_POINT};

/// A server and unit with learned value envelopes.
#[derive(Default)]
pub(super) struct ServerPoints {
    /// The envelopes; `index` finds a point's ([`point_key`]). `hot` holds the same points'
    /// last values and soft bounds, in the same places.
    envs: Vec<PointEnv>,
    hot: Vec<PointHot>,
    index: FastMap<u64, u32>,
    /// Runs of addresses already looked up, by space, start and length: each address's place
    /// in `envs`, or [`NO_POINT`]. A poll reads the same run again and again; its values then
    /// cost no hash lookup each. The points are fixed once detection starts, so a run never
    /// goes stale.
    runs: FastMap<(u32, u32, u32), Box<[u32]>>,
    run_elements: usize,
    /// Bumped whenever one of its points' last value changes.
    pub(super) epoch: u64,
    /// The last values checked per read (first space and address, accesses), when that check
    /// raised nothing; see [`Detector::check_values`].
    pub(super) memo: FastMap<(u32, u32, usize), ValueMemo>,
}

pub(super) fn point_key(space: u32, address: u32) -> u64 {
    u64::from(space) << 32 | u64::from(address)
}

impl ServerPoints {
    /// A point's envelope (a later one for the same point replaces it).
    pub(super) fn insert(&mut self, key: u64, env: PointEnv) {
        match self.index.get(&key) {
            Some(&i) => {
                self.hot[i as usize] = PointHot::of(&env);
                self.envs[i as usize] = env;
            }
            None => {
                // At most u32::MAX - 1 points: a baseline holds far fewer.
                let Ok(i) = u32::try_from(self.envs.len()) else {
                    return;
                };
                if i == NO_POINT {
                    return;
                }
                self.index.insert(key, i);
                self.hot.push(PointHot::of(&env));
                self.envs.push(env);
            }
        }
    }

    /// The envelopes (each point's hot part and the rest), and the place in them of each of
    /// `count` addresses from `start` in `space`.
    fn run(
        &mut self,
        space: u32,
        start: u32,
        count: u32,
    ) -> (&mut [PointHot], &[PointEnv], &[u32]) {
        let key = (space, start, count);
        if !self.runs.contains_key(&key) {
            let index = &self.index;
            let places: Box<[u32]> = (0..count)
                .map(|i| {
                    let addr = start.wrapping_add(i);
                    index
                        .get(&point_key(space, addr))
                        .copied()
                        .unwrap_or(NO_POINT)
                })
                .collect();
            self.run_elements += places.len();
            self.runs.insert(key, places);
        }
        (
            &mut self.hot,
            &self.envs,
            self.runs.get(&key).map_or(&[], |r| r),
        )
    }
}

/// What a read looked like when its values were last checked.
pub(super) struct ValueMemo {
    pub(super) epoch: u64,
    /// Space, start, count, write, number of values and how they are held
    /// ([`crate::obs::ValuesAt::form`]), of every access.
    pub(super) layout: Vec<(u32, u32, u32, bool, usize, u32)>,
    /// Every value held as a number, in order, as bits (exact comparison).
    pub(super) values: Vec<u64>,
    /// The bytes of every value held as it came on the wire ([`Values::Bytes`],
    /// [`Values::Words`]), in order.
    pub(super) bytes: Vec<u8>,
}

impl ValueMemo {
    fn layout_of(a: &crate::obs::Access) -> (u32, u32, u32, bool, usize, u32) {
        (
            a.space,
            a.start,
            a.count,
            a.write,
            a.values.len as usize,
            a.values.form(),
        )
    }

    fn matches(&self, o: &Observation) -> bool {
        if self.layout.len() != o.accesses.len()
            || !self
                .layout
                .iter()
                .zip(&o.accesses)
                .all(|(l, a)| *l == Self::layout_of(a))
        {
            return false;
        }
        // The layouts agree, so the values line up access by access (each access's count of
        // values, and how they are held, is in its layout): compared run by run, not through
        // one flattened iterator.
        let (mut rest, mut rest_bytes) = (self.values.as_slice(), self.bytes.as_slice());
        for a in &o.accesses {
            match o.values_of(a) {
                Values::Numbers(values) => {
                    let Some((mine, after)) = rest.split_at_checked(values.len()) else {
                        return false;
                    };
                    // Without an early exit, so that the compiler compares several values at
                    // once: the runs are polls' values, and a run that differs is the rarer
                    // case.
                    let differ = mine
                        .iter()
                        .zip(values)
                        .fold(0u64, |d, (m, v)| d | (m ^ v.to_bits()));
                    if differ != 0 {
                        return false;
                    }
                    rest = after;
                }
                Values::Bytes(bytes) => {
                    if !same_bytes(&mut rest_bytes, bytes) {
                        return false;
                    }
                }
                Values::Words(words) => {
                    if !same_bytes(&mut rest_bytes, words.as_flattened()) {
                        return false;
                    }
                }
            }
        }
        rest.is_empty() && rest_bytes.is_empty()
    }

    /// Makes this the memo of `o` at `epoch`, in the room it has (a memo replaced by the next
    /// one of its read, which is most often the same size: no allocation).
    fn fill(&mut self, epoch: u64, o: &Observation) {
        self.epoch = epoch;
        self.layout.clear();
        self.values.clear();
        self.bytes.clear();
        self.layout.extend(o.accesses.iter().map(Self::layout_of));
        for a in &o.accesses {
            match o.values_of(a) {
                Values::Numbers(v) => self.values.extend(v.iter().map(|v| v.to_bits())),
                Values::Bytes(b) => self.bytes.extend_from_slice(b),
                Values::Words(w) => self.bytes.extend_from_slice(w.as_flattened()),
            }
        }
        // The room a larger read of the same layout once needed is not kept for long: it counts
        // against the memo's bound.
        fn fit<T>(v: &mut Vec<T>) {
            if v.capacity() > 4 * v.len() + 16 {
                v.shrink_to_fit();
            }
        }
        fit(&mut self.layout);
        fit(&mut self.values);
        fit(&mut self.bytes);
    }

    /// What it holds room for, in elements (an access or a value; eight bytes one), for the
    /// cache's bound.
    fn elements(&self) -> usize {
        self.layout.capacity() + self.values.capacity() + self.bytes.capacity().div_ceil(8)
    }
}

/// Whether `bytes` are the next of `rest`, which then moves past them.
fn same_bytes(rest: &mut &[u8], bytes: &[u8]) -> bool {
    match rest.split_at_checked(bytes.len()) {
        Some((mine, after)) if mine == bytes => {
            *rest = after;
            true
        }
        _ => false,
    }
}

/// A value as an access holds it ([`Values`]): a number, a byte, or a big-endian word.
trait Held: Copy {
    fn number(self) -> f64;
}

impl Held for f64 {
    #[inline]
    fn number(self) -> f64 {
        self
    }
}

impl Held for u8 {
    #[inline]
    fn number(self) -> f64 {
        f64::from(self)
    }
}

impl Held for [u8; 2] {
    #[inline]
    fn number(self) -> f64 {
        f64::from(u16::from_be_bytes(self))
    }
}

/// A value outside its point's soft bounds ([`next_outside`]).
struct Outside {
    index: usize,
    value: f64,
    place: u32,
    /// The point's value before it.
    previous: Option<f64>,
}

/// Records the values from `*from` on as their points' last (`changed` set if one differs),
/// up to the first that is outside its point's soft bounds, with `*from` moved past it; `None`
/// once every value is recorded. The margins are explained at [`PointEnv::new`]; a point
/// learned from fewer than three samples has no bounds. Apart from the checks that follow, so
/// that this loop, run for every value, stays short.
#[inline(never)]
fn next_outside<T: Held>(
    hot: &mut [PointHot],
    values: &[T],
    places: &[u32],
    from: &mut usize,
    changed: &mut bool,
) -> Option<Outside> {
    let n = values.len().min(places.len());
    let mut any = false;
    let mut i = *from;
    while i < n {
        let (v, place) = (values[i].number(), places[i]);
        i += 1;
        let Some(h) = hot.get_mut(place as usize) else {
            continue;
        };
        if v.is_nan() {
            // Outside any envelope (NaN compares with nothing: a NaN setpoint makes every
            // comparison in the PLC's logic false), for a point that is checked; the point's
            // last value stays the last number, for the next value's step.
            if h.soft_bounds.0.is_finite() || h.soft_bounds.1.is_finite() {
                *from = i;
                *changed |= any;
                return Some(Outside {
                    index: i - 1,
                    value: v,
                    place,
                    previous: h.seen.then_some(f64::from_bits(h.last)),
                });
            }
            continue;
        }
        let bits = v.to_bits();
        if h.quiet & (h.last == bits) {
            // What a point's next value most often is: the same, inside its bounds again.
            continue;
        }
        let previous = h.seen.then_some(f64::from_bits(h.last));
        any |= !h.seen | (h.last != bits);
        h.last = bits;
        h.seen = true;
        let (lo, hi) = h.soft_bounds;
        let outside = v < lo || v > hi;
        h.quiet = !outside;
        if outside {
            *from = i;
            *changed |= any;
            return Some(Outside {
                index: i - 1,
                value: v,
                place,
                previous,
            });
        }
    }
    *from = n;
    *changed |= any;
    None
}

/// Checks every value of `o` against its server's points; returns whether any point's last
/// value changed.
pub(super) fn check_values_now(
    points: &mut ServerPoints,
    raised: &mut Raised,
    o: &Observation,
    out: &mut Vec<Alert>,
) -> bool {
    let ch = &o.channel;
    let mut changed = false;
    for acc in &o.accesses {
        if ch.proto.bit_space(acc.space) || o.exception || acc.values.is_empty() {
            continue;
        }
        let values = o.values_of(acc);
        // Values beyond u32::MAX addresses do not exist: an access holds far fewer.
        let count = u32::try_from(values.len()).unwrap_or(u32::MAX);
        let (hot, envs, places) = points.run(acc.space, acc.start, count);
        let mut from = 0;
        while let Some(Outside {
            index: i,
            value: v,
            place,
            previous,
        }) = match values {
            Values::Numbers(v) => next_outside(hot, v, places, &mut from, &mut changed),
            Values::Bytes(b) => next_outside(hot, b, places, &mut from, &mut changed),
            Values::Words(w) => next_outside(hot, w, places, &mut from, &mut changed),
        } {
            let Some(p) = envs.get(place as usize) else {
                continue;
            };
            let addr = acc.start.wrapping_add(i as u32);
            let outside = |(lo, hi): (f64, f64)| v < lo || v > hi || v.is_nan();
            let jumped = previous.is_some_and(|last| (v - last).abs() > p.jump);
            if !(outside(p.hard_bounds) || jumped) {
                continue;
            }
            // A write of a point is another cause than a read of it: an attacker's write is
            // not folded into an earlier glitch the point read.
            let key = |write: bool| {
                let extra = u64::from(acc.space) << 33 | u64::from(write) << 32 | u64::from(addr);
                AlertKey::point("value_out_of_range", ch, extra)
            };
            // The read of what a flagged write put there: the point still holds the value it
            // was last given (a later excursion, after a normal reading, is alerted).
            // (A NaN leaves no last value: after a flagged write of the point, a NaN read is
            // taken for its effect.)
            if !acc.write && (previous == Some(v) || v.is_nan()) && raised.contains(&key(true)) {
                continue;
            }
            value_out_of_range(raised, o, key(acc.write), (acc, addr, v), p, out);
        }
    }
    changed
}

/// `value_out_of_range` (`key`) for the value `v` of address `addr` in the access `acc` of
/// `o`, outside its point's envelope `p`. Out of line, as the detector's other alert texts.
#[cold]
#[inline(never)]
fn value_out_of_range(
    raised: &mut Raised,
    o: &Observation,
    key: AlertKey,
    (acc, addr, v): (&crate::obs::Access, u32, f64),
    p: &PointEnv,
    out: &mut Vec<Alert>,
) {
    let ch = &o.channel;
    let margin = p.soft;
    let space = ch.proto.space_name(acc.space);
    if let Some(mut a) = fresh(raised, o, (key, write_severity(acc.write)), out) {
        a.message = format!(
            "{} {space} {} {} {v}, learned {}..={} (step at most {})",
            ch.server,
            ch.proto.address_text(addr),
            if acc.write { "written as" } else { "reads" },
            p.min,
            p.max,
            p.max_step
        );
        *a.learned = json!({"min": p.min, "max": p.max, "max_step": p.max_step, "samples": p.samples, "margin": margin});
        *a.observed = json!({"space": space, "address": addr, "value": v, "write": acc.write});
        out.push(a);
    }
}

impl Detector {
    /// Values against the learned envelopes. Most polls read back what they read last time. A
    /// check that raised nothing (no alert, no bare occurrence) and changed nothing (every point already held these values)
    /// gives the same result when run again on the same state; so when the same read comes
    /// again and no point of the server changed since (its epoch), it is skipped. Exact: the
    /// memo is compared in full.
    /// `known`: the channel's place in `slots`, if learned.
    ///
    /// A PDU that carries no values (most requests) costs a test here, not a call.
    #[inline]
    pub(super) fn check_values(
        &mut self,
        o: &Observation,
        known: Option<usize>,
        out: &mut Vec<Alert>,
    ) {
        if (o.values.is_empty() && o.bytes.is_empty()) || o.exception {
            return;
        }
        self.check_carried_values(o, known, out);
    }

    /// [`Detector::check_values`] for a PDU that carries values.
    #[inline(never)]
    fn check_carried_values(
        &mut self,
        o: &Observation,
        known: Option<usize>,
        out: &mut Vec<Alert>,
    ) {
        let ch = &o.channel;
        if o.accesses.iter().all(|a| a.values.is_empty()) {
            return;
        }
        if self.run_elements > MAX_RUN_ELEMENTS {
            // Only a cache: forgetting it costs time, never a result.
            for s in &mut self.points {
                s.runs.clear();
                s.run_elements = 0;
            }
            self.run_elements = 0;
        }
        // Nothing to check without an envelope learned for this server and unit.
        let at = match known.and_then(|i| self.chans.slots.get(i)) {
            Some(s) => s.points,
            None => self
                .point_servers
                .get(&(ch.proto, ch.server, ch.unit))
                .copied(),
        };
        let Some(server) = at.and_then(|i| self.points.get_mut(i)) else {
            return;
        };
        let Some(first) = o.accesses.first() else {
            return;
        };
        let key = (first.space, first.start, o.accesses.len());
        let epoch = server.epoch;
        if server
            .memo
            .get(&key)
            .is_some_and(|m| m.epoch == epoch && m.matches(o))
        {
            self.memo_hits += 1;
            return;
        }
        // What the check raised: whole alerts, and bare occurrences of causes marked already
        // (a point that stays outside raises one at every read: no memo for it).
        let before = (out.len(), self.raised.bare.len());
        let cached = server.run_elements;
        let changed = check_values_now(server, &mut self.raised, o, out);
        self.run_elements += server.run_elements - cached;
        if changed {
            server.epoch += 1;
        }
        let old = server.memo.remove(&key);
        if let Some(old) = &old {
            self.memo_elements -= old.elements();
        }
        if (out.len(), self.raised.bare.len()) == before && !changed {
            let mut memo = old.unwrap_or_else(|| ValueMemo {
                epoch,
                layout: Vec::new(),
                values: Vec::new(),
                bytes: Vec::new(),
            });
            memo.fill(epoch, o);
            let n = memo.elements();
            if n <= MAX_MEMO_ELEMENTS / 16 {
                if self.memo_elements + n > MAX_MEMO_ELEMENTS {
                    // Only a cache: forgetting it costs time, never a result.
                    for s in &mut self.points {
                        s.memo.clear();
                    }
                    self.memo_elements = 0;
                }
                self.memo_elements += n;
                if let Some(server) = at.and_then(|i| self.points.get_mut(i)) {
                    server.memo.insert(key, memo);
                }
            }
        }
    }
}
