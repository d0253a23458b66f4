//! Learning: observations in, a [`Baseline`] out. Every structure is bounded; what does not fit
//! is counted in [`Learner::dropped`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Hash maps keyed by what the wire says: foldhash with a per-process seed (fast, and not
/// predictable enough to be flooded into one bucket).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;
use std::net::IpAddr;
use std::sync::Arc;

use crate::baseline::{
    Asset, Baseline, ChannelModel, LatencyModel, PointModel, PollModel, FORMAT, VERSION,
};
use crate::behaviour::{BehaviourModel, WindowAcc, FEATURES};
use crate::obs::{Channel, Kind, Observation, Proto};
use crate::ranges::Ranges;
use crate::{secs, NANOS};

pub const MAX_CHANNELS: usize = 10_000;
pub const MAX_ASSETS: usize = 10_000;
pub const MAX_POINTS: usize = 200_000;
/// Address spaces (a Modbus table, an S7 area and DB, a DNP3 group, a CIP class) learned per
/// channel and direction, all channels together: each holds up to `ranges::MAX_RANGES`
/// ranges.
pub const MAX_SPACES: usize = 100_000;
/// A capture file whose first PDU comes at most this long after the last file's last one
/// continues it (a rotated capture): the silences and intervals across the two are learned.
const CAPTURE_GAP: i64 = 300 * NANOS;
pub const MAX_POLL_KEYS_PER_CHANNEL: usize = 1024;
const MAX_INTERVALS: usize = 4096;
const MAX_LATENCIES: usize = 8192;
const MAX_WINDOW_SAMPLES: usize = 200_000;
/// Requests awaiting their response, per channel.
pub const MAX_PENDING: usize = 1024;
/// Rates are counted over this many seconds.
pub const RATE_WINDOW_SECS: i64 = 10;
/// Fewer intervals than this and a repeated request is not called a poll.
const MIN_POLL_INTERVALS: usize = 5;

/// Requests and exceptions counted in a sliding window of whole seconds.
#[derive(Debug, Clone, Default)]
pub struct RateCounter {
    buckets: [u32; RATE_WINDOW_SECS as usize],
    /// The sum of `buckets`, kept as they change: summed after each count, the buckets were
    /// read whole just after one of them was written (a store-forwarding stall a request).
    total: u64,
    /// The second of the newest bucket.
    head: i64,
    started: bool,
}

impl RateCounter {
    /// Counts one event at `ts`; returns the count over the window ending at `ts`.
    pub fn add(&mut self, ts: i64) -> u64 {
        let sec = ts.div_euclid(NANOS);
        let n = RATE_WINDOW_SECS;
        if !self.started {
            self.started = true;
            self.head = sec;
        }
        if sec > self.head {
            let steps = (sec - self.head).min(n);
            for k in 1..=steps {
                let b = &mut self.buckets[(self.head + k).rem_euclid(n) as usize];
                self.total -= u64::from(*b);
                *b = 0;
            }
            self.head = sec;
        }
        // A packet a little older than the newest (reordering across flows) counts in its own
        // second while that is still in the window; older still, in the oldest.
        let at = if sec + n <= self.head {
            self.head - n + 1
        } else {
            sec.min(self.head)
        };
        let b = &mut self.buckets[at.rem_euclid(n) as usize];
        if *b < u32::MAX {
            *b += 1;
            self.total += 1;
        }
        self.total
    }
}

/// Requests awaiting their response on one channel, by correlation id.
#[derive(Debug, Default)]
pub struct Pending {
    pub map: CorrMap,
    pub overflow: u64,
}

/// A request's time, frame and connection ([`connection`]), by its correlation id. A channel
/// waits for one or a few answers at a time: they are held in place while there are at most
/// four. The connection is held as a word: as a half word, copying an entry read a word of
/// which only half had been stored (a store-forwarding stall for every request).
pub type CorrMap = crate::small::SmallMap<u32, (i64, u64, u64), 4>;

/// A request older than this is no longer answered: a response with its correlation id (a
/// transaction id reused after a request the capture saw unanswered) is not its answer.
pub const MAX_ANSWER_AGE: i64 = 60 * NANOS;

/// The connection of a PDU, as its ports from client to server packed in one number (0 when
/// not known): a response answers a request of its own connection only. A channel (client,
/// server, unit) has several TCP connections, and transaction ids repeat across them. Over UDP
/// only the server's port counts: a DNP3 outstation may answer to a fixed port, not to the one
/// the request came from.
fn connection(o: &Observation) -> u64 {
    o.ports.map_or(0, |p| {
        let (client, server) = if o.kind == Kind::Request {
            (p.src, p.dst)
        } else {
            (p.dst, p.src)
        };
        let client = if p.udp { 0 } else { client };
        u64::from(client) << 16 | u64::from(server) | 1 << 31
    })
}

/// Writes awaiting their answer per channel, for `ChanLearn::writes_refused`.
const MAX_PENDING_WRITES: usize = 16;

/// A well-mixed 64-bit hash of `x` (splitmix64's finaliser): a reproducible draw.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// DNP3 functions that get no response: confirm (0), direct operate without acknowledgement
/// (6), the no-ack freezes (8, 10, 12) and the no-ack authentication request (33).
fn expects_response(o: &Observation) -> bool {
    !(o.channel.proto == Proto::Dnp3 && matches!(o.function, 0 | 6 | 8 | 10 | 12 | 33))
}

impl Pending {
    /// A request: remember it. Returns whether it awaits a response (it has a correlation id
    /// and its function is answered).
    pub fn request(&mut self, o: &Observation) -> bool {
        let Some(c) = o.corr else { return false };
        if !expects_response(o) {
            return false;
        }
        if self.map.len() >= MAX_PENDING && !self.map.contains_key(&c) {
            // Not awaited: its answer could not be matched, so it must not count as missing.
            self.overflow += 1;
            return false;
        }
        self.map.insert(c, (o.ts, o.frame, connection(o)));
        true
    }

    /// A response: its latency and its request's frame, when the request was seen on its
    /// connection, less than [`MAX_ANSWER_AGE`] before (an older one is dropped: it will not be
    /// answered any more).
    pub fn response(&mut self, o: &Observation) -> Option<(f64, u64)> {
        let c = o.corr?;
        let own = connection(o);
        let (ts, frame, _) = self
            .map
            .remove_if(&c, |&(_, _, conn)| conn == 0 || own == 0 || conn == own)
            .ok()?;
        if o.ts.saturating_sub(ts) > MAX_ANSWER_AGE && o.latency.is_none() {
            return None;
        }
        Some((o.latency.unwrap_or_else(|| secs(ts, o.ts)), frame))
    }
}

#[derive(Default)]
struct AssetLearn {
    /// In the order first seen (sorted at the end): most devices speak one or two, and a set's
    /// insert for both ends of every PDU cost 55 instructions each.
    protocols: Vec<Proto>,
    client: bool,
    server: bool,
    identity: Option<String>,
    macs: BTreeSet<[u8; 6]>,
    /// The capture (its generation: [`Learner::generation`]) and time of its last PDU.
    last_sent: Option<(u32, i64)>,
    sent: u64,
    max_gap: f64,
}

struct PointAcc {
    min: f64,
    max: f64,
    max_step: f64,
    last: f64,
    samples: u64,
}

/// A device's place in `assets` (`index` finds it), made for a new one; none past
/// [`MAX_ASSETS`] (counted in `dropped`).
fn asset_place(
    assets: &mut Vec<(IpAddr, AssetLearn)>,
    index: &mut FastMap<IpAddr, usize>,
    dropped: &mut u64,
    ip: IpAddr,
) -> Option<usize> {
    if let Some(&at) = index.get(&ip) {
        return Some(at);
    }
    if assets.len() >= MAX_ASSETS {
        *dropped += 1;
        return None;
    }
    index.insert(ip, assets.len());
    assets.push((ip, AssetLearn::default()));
    Some(assets.len() - 1)
}

/// Addresses of looked-up runs the servers keep at most, all together, in learning and in
/// detection (`detect::values`) alike: a cache, cleared when full, so it holds at most one
/// PDU's runs more. 4 bytes each: 1 MiB.
pub(crate) const MAX_RUN_ELEMENTS: usize = 256 * 1024;

/// No point at this address (in a run's lookup): none was learned, or the bound on points was
/// reached.
pub(crate) const NO_POINT: u32 = u32::MAX;

/// One server's value envelopes being learned.
#[derive(Default)]
struct ServerLearn {
    /// By point (`space << 32 | address`); `index` finds one.
    points: Vec<(u64, PointAcc)>,
    index: FastMap<u64, u32>,
    /// Runs of addresses already looked up, by space, start and length: each address's place
    /// in `points`, or [`NO_POINT`]. A poll reads the same run again and again; its values
    /// then cost no hash lookup each. A place never changes once made.
    runs: FastMap<(u32, u32, u32), Box<[u32]>>,
}

impl ServerLearn {
    /// Learns `values`, of consecutive addresses from `start` in `space`. `count` and
    /// `dropped` are the bound on points, all servers together, and what it turned away.
    fn learn(
        &mut self,
        space: u32,
        start: u32,
        values: crate::obs::Values<'_>,
        count: &mut usize,
        run_elements: &mut usize,
        dropped: &mut u64,
    ) {
        let len = u32::try_from(values.len()).unwrap_or(u32::MAX);
        // A value that is not a finite number (the dissectors hand on none) is no sample: an
        // envelope holds finite bounds, and a saved baseline could not hold others.
        if let Some(places) = self.runs.get(&(space, start, len)) {
            // By `for_each`: the values' kind is matched once for the run ([`ValuesIter`]).
            let (points, mut places) = (&mut self.points, places.iter());
            values.iter().for_each(|v| {
                let Some(&place) = places.next() else {
                    return;
                };
                match points.get_mut(place as usize) {
                    Some((_, p)) if v.is_finite() => p.add(v),
                    Some(_) => {}
                    None => *dropped += 1,
                }
            });
            return;
        }
        let mut places = Vec::with_capacity(values.len());
        // A run with such a value is not remembered: its address may get a point later.
        let mut hole = false;
        for (i, v) in values.iter().enumerate() {
            let key = u64::from(space) << 32 | u64::from(start.wrapping_add(i as u32));
            let place = match self.index.get(&key) {
                Some(&at) => {
                    if let Some((_, p)) = self.points.get_mut(at as usize) {
                        if v.is_finite() {
                            p.add(v);
                        }
                    }
                    at
                }
                None if !v.is_finite() => {
                    hole = true;
                    NO_POINT
                }
                // At most MAX_POINTS points: far fewer than u32::MAX.
                None => match u32::try_from(self.points.len()) {
                    Ok(at) if *count < MAX_POINTS && at != NO_POINT => {
                        *count += 1;
                        self.index.insert(key, at);
                        self.points.push((key, PointAcc::new(v)));
                        at
                    }
                    _ => {
                        *dropped += 1;
                        NO_POINT
                    }
                },
            };
            places.push(place);
        }
        if hole {
            return;
        }
        *run_elements += places.len();
        self.runs
            .insert((space, start, len), places.into_boxed_slice());
    }
}

impl PointAcc {
    fn new(v: f64) -> Self {
        PointAcc {
            min: v,
            max: v,
            max_step: 0.0,
            last: v,
            samples: 1,
        }
    }

    fn add(&mut self, v: f64) {
        self.max_step = self.max_step.max((v - self.last).abs());
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.last = v;
        self.samples += 1;
    }
}

#[derive(Default)]
struct PollAcc {
    /// The capture (its generation) and time of the last request.
    last: Option<(u32, i64)>,
    intervals: Vec<f64>,
}

/// The key of a polled request: function and first address block.
pub type PollKey = (u32, u32, u32, u32);

pub fn poll_key(o: &Observation) -> PollKey {
    match o.accesses.first() {
        Some(a) => (o.function, a.space, a.start, a.count),
        None => (o.function, u32::MAX, 0, 0),
    }
}

#[derive(Default)]
struct ChanLearn {
    /// Its client's and its server's places in `Learner::assets`, once both have one.
    ends: Option<(usize, usize)>,
    /// Its behaviour window now (`Learner::active` lists the channels whose window has
    /// activity).
    window: WindowAcc,
    functions: BTreeMap<u32, u64>,
    requests: u64,
    responses: u64,
    exceptions: u64,
    /// Write requests accepted by the dissector, and those the server refused with an
    /// exception: a client whose every write was refused (a prober) wrote nothing.
    writes_sent: u64,
    writes_refused: u64,
    /// Correlation ids of writes awaiting their answer (at most [`MAX_PENDING_WRITES`]).
    pending_writes: Vec<u32>,
    reads: BTreeMap<u32, Ranges>,
    writes: BTreeMap<u32, Ranges>,
    polls: FastMap<PollKey, PollAcc>,
    pending: Pending,
    /// Requests that await a response.
    awaited: u64,
    latencies: Vec<f64>,
    /// Responses matched to their request.
    latency_seen: u64,
    req_rate: RateCounter,
    exc_rate: RateCounter,
    max_req: u64,
    max_exc: u64,
}

pub struct Learner {
    first_ts: Option<i64>,
    /// The capture of the last observation, and how many times it changed: gaps (a device's
    /// silence, a poll's interval) are measured within one capture.
    source: Option<Arc<str>>,
    generation: u32,
    last_ts: i64,
    observations: u64,
    /// Devices; `asset_index` finds one.
    assets: Vec<(IpAddr, AssetLearn)>,
    asset_index: FastMap<IpAddr, usize>,
    channels: FastMap<Channel, ChanLearn>,
    /// Value envelopes per server (`proto, server, unit`): one lookup of the server per
    /// observation, and of a polled run of addresses once ([`ServerLearn::learn`]).
    points: FastMap<(Proto, IpAddr, u32), ServerLearn>,
    /// Points in `points`, all servers together (bounded by [`MAX_POINTS`]).
    point_count: usize,
    /// Address spaces learned, all channels together (bounded by `MAX_SPACES`).
    space_count: usize,
    /// Addresses in the servers' caches of looked-up runs, all together (bounded by
    /// [`MAX_RUN_ELEMENTS`]).
    run_elements: usize,
    /// Channels whose behaviour window has activity.
    active: Vec<Channel>,
    window_nanos: i64,
    window_index: Option<i64>,
    /// The window learning started in: partial, so not a sample.
    first_window: Option<i64>,
    samples: Vec<[f64; FEATURES.len()]>,
    /// What was not learned because a bound was hit.
    pub dropped: crate::baseline::Unlearned,
}

impl Learner {
    pub fn new(window_secs: f64) -> Self {
        Learner {
            first_ts: None,
            source: None,
            generation: 0,
            last_ts: 0,
            observations: 0,
            assets: Vec::new(),
            asset_index: FastMap::default(),
            channels: FastMap::default(),
            points: FastMap::default(),
            point_count: 0,
            space_count: 0,
            run_elements: 0,
            active: Vec::new(),
            window_nanos: ((window_secs * NANOS as f64) as i64).max(NANOS),
            window_index: None,
            first_window: None,
            samples: Vec::new(),
            dropped: Default::default(),
        }
    }

    pub fn observations(&self) -> u64 {
        self.observations
    }

    pub fn observe(&mut self, o: &Observation) {
        self.first_ts.get_or_insert(o.ts);
        // Another capture file: the same capture still if it follows on (a rotated capture, the
        // next file taking over within `CAPTURE_GAP`); another one if it starts long after the
        // last ended, or before (yesterday's and today's). The name is compared (workers each
        // hold their own copy of it).
        match &self.source {
            Some(s) if Arc::ptr_eq(s, &o.source) || **s == *o.source => {}
            held => {
                let follows_on = o.ts >= self.last_ts && o.ts - self.last_ts <= CAPTURE_GAP;
                if held.is_some() && !follows_on {
                    self.generation = self.generation.wrapping_add(1);
                }
                self.source = Some(Arc::clone(&o.source));
            }
        }
        self.last_ts = self.last_ts.max(o.ts);
        self.observations += 1;
        self.roll_windows(o.ts);
        let ch = o.channel;
        // One lookup finds the channel, and with it its ends' places once both have one.
        let full = self.channels.len() >= MAX_CHANNELS;
        let chan = self.channels.get_mut(&ch);
        let ends = match chan.as_ref().and_then(|c| c.ends) {
            Some((client, server)) => (Some(client), Some(server)),
            None => {
                let mut asset = |ip| {
                    asset_place(
                        &mut self.assets,
                        &mut self.asset_index,
                        &mut self.dropped.assets,
                        ip,
                    )
                };
                (asset(ch.client), asset(ch.server))
            }
        };
        // Assets: both ends, their roles; and the longest silence of whoever sent this PDU.
        for (at, client) in [(ends.0, true), (ends.1, false)] {
            let Some((_, a)) = at.and_then(|i| self.assets.get_mut(i)) else {
                continue;
            };
            if !a.protocols.contains(&ch.proto) {
                a.protocols.push(ch.proto);
            }
            if client {
                a.client = true;
            } else {
                a.server = true;
            }
        }
        let sender = if o.src() == ch.client { ends.0 } else { ends.1 };
        if let Some((_, a)) = sender.and_then(|i| self.assets.get_mut(i)) {
            // A device's silence is learned from its OT PDUs only: a conversation of another
            // protocol is observed once, however long it goes on, and detection would find
            // the device silent while it talks.
            if ch.proto.is_ot() {
                // A gap is measured within one capture: the time between two captures learned
                // one after the other (yesterday's and today's) is no silence of the device.
                if let Some((generation, prev)) = a.last_sent {
                    if generation == self.generation {
                        a.max_gap = a.max_gap.max(secs(prev, o.ts));
                    }
                }
                a.last_sent = Some((self.generation, o.ts));
                a.sent += 1;
            }
            if let Some(id) = &o.identity {
                a.identity = Some(id.clone());
            }
            if let Some(m) = o.src_mac {
                if a.macs.len() < MAX_MACS_PER_ASSET {
                    a.macs.insert(m);
                }
            }
        }
        let c = match chan {
            Some(c) => c,
            None if full => {
                self.dropped.channels += 1;
                return;
            }
            None => self.channels.entry(ch).or_default(),
        };
        if let (None, (Some(client), Some(server))) = (c.ends, ends) {
            c.ends = Some((client, server));
        }
        let mut latency = None;
        match o.kind {
            Kind::Request => {
                c.requests += 1;
                // A request the dissector rejected wrote nothing and used no function the
                // server knows: learning it would make a fuzzer or a prober a writer, whose
                // real writes later raise no `unauthorized_write`.
                let accepted = o.malformed.is_none();
                if accepted {
                    *c.functions.entry(o.function).or_default() += 1;
                    for f in &o.members {
                        *c.functions.entry(*f).or_default() += 1;
                    }
                    if o.write {
                        c.writes_sent += 1;
                        if let Some(corr) = o.corr {
                            if c.pending_writes.len() >= MAX_PENDING_WRITES {
                                c.pending_writes.remove(0);
                            }
                            c.pending_writes.push(corr);
                        }
                    }
                }
                c.awaited += u64::from(c.pending.request(o));
                c.max_req = c.max_req.max(c.req_rate.add(o.ts));
                for a in o.accesses.iter().filter(|_| accepted) {
                    let map = if a.write { &mut c.writes } else { &mut c.reads };
                    let end = a.start.saturating_add(a.count.max(1) - 1);
                    match map.get_mut(&a.space) {
                        Some(r) => r.insert(a.start, end),
                        None if self.space_count < MAX_SPACES => {
                            self.space_count += 1;
                            map.entry(a.space).or_default().insert(a.start, end);
                        }
                        None => self.dropped.spaces += 1,
                    }
                }
                let key = poll_key(o);
                if c.polls.len() < MAX_POLL_KEYS_PER_CHANNEL || c.polls.contains_key(&key) {
                    let p = c.polls.entry(key).or_default();
                    if let Some((generation, prev)) = p.last {
                        if p.intervals.len() < MAX_INTERVALS && generation == self.generation {
                            p.intervals.push(secs(prev, o.ts));
                        }
                    }
                    p.last = Some((self.generation, o.ts));
                }
            }
            Kind::Response | Kind::Unsolicited => {
                c.responses += 1;
                if o.exception {
                    c.exceptions += 1;
                    c.max_exc = c.max_exc.max(c.exc_rate.add(o.ts));
                }
                // The answer to a write: refused, the write wrote nothing.
                if let Some(corr) = o.corr.filter(|_| o.kind == Kind::Response) {
                    if let Some(i) = c.pending_writes.iter().position(|&w| w == corr) {
                        c.pending_writes.remove(i);
                        c.writes_refused += u64::from(o.exception);
                    }
                }
                if o.kind == Kind::Response {
                    if let Some((l, _)) = c.pending.response(o) {
                        latency = Some(l);
                        c.latency_seen += 1;
                        if c.latencies.len() < MAX_LATENCIES {
                            c.latencies.push(l);
                        } else {
                            // A uniform sample of the whole learning period (reservoir
                            // sampling): the n-th answer replaces a kept one with probability
                            // MAX_LATENCIES / n. A ring kept only the last ones, so a learning
                            // run whose answers sped up at its end learned only the fast ones.
                            // The draw is a hash of n: the same capture learns the same.
                            let j = splitmix(c.latency_seen) % c.latency_seen;
                            if let Some(slot) = c.latencies.get_mut(j as usize) {
                                *slot = l;
                            }
                        }
                    }
                }
            }
            Kind::Conversation => {}
        }
        // Values: what a server reports, and what clients write.
        let with_values = |a: &&crate::obs::Access| {
            !o.exception && !ch.proto.bit_space(a.space) && !a.values.is_empty()
        };
        let mut accesses = o.accesses.iter().filter(with_values).peekable();
        if accesses.peek().is_some() {
            if self.run_elements > MAX_RUN_ELEMENTS {
                // Only a cache: forgetting it costs time, never a result.
                for s in self.points.values_mut() {
                    s.runs.clear();
                }
                self.run_elements = 0;
            }
            let server = self
                .points
                .entry((ch.proto, ch.server, ch.unit))
                .or_default();
            for a in accesses {
                server.learn(
                    a.space,
                    a.start,
                    o.values_of(a),
                    &mut self.point_count,
                    &mut self.run_elements,
                    &mut self.dropped.points,
                );
            }
        }
        if o.kind != Kind::Conversation {
            if c.window.is_empty() {
                self.active.push(ch);
            }
            c.window.add(o, latency);
        }
    }

    /// The capture clock stepped back (a capture that starts before the last one ended, a live
    /// sensor's clock stepped by NTP): what was measured over time starts again. Gaps are not
    /// measured across the step, rates count afresh, requests awaiting an answer are dropped
    /// (an older answer is not theirs) and the open behaviour windows are dropped, the next one
    /// being partial.
    pub fn clock_back(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        for c in self.channels.values_mut() {
            c.req_rate = RateCounter::default();
            c.exc_rate = RateCounter::default();
            c.window = WindowAcc::default();
            c.awaited = c.awaited.saturating_sub(c.pending.map.len() as u64);
            c.pending.map = CorrMap::default();
        }
        self.active.clear();
        self.window_index = None;
    }

    /// Closes the behaviour windows that ended before `ts`.
    fn roll_windows(&mut self, ts: i64) {
        let idx = ts.div_euclid(self.window_nanos);
        match self.window_index {
            Some(cur) if idx > cur => {
                let partial = self.first_window == Some(cur);
                // In channel order: the samples' order decides k-means' start and which are
                // kept at the bound, so hash order would make the model differ run to run.
                let mut closed = std::mem::take(&mut self.active);
                closed.sort_unstable();
                for ch in &closed {
                    let Some(c) = self.channels.get_mut(ch) else {
                        continue;
                    };
                    let mut w = std::mem::take(&mut c.window);
                    if !partial && !w.is_empty() && self.samples.len() < MAX_WINDOW_SAMPLES {
                        self.samples.push(w.features());
                    }
                }
                // Its room is used again next window.
                closed.clear();
                self.active = closed;
                self.window_index = Some(idx);
            }
            None => {
                self.window_index = Some(idx);
                self.first_window = Some(idx);
            }
            _ => {}
        }
    }

    /// The baseline. Windows still open are not used: they are incomplete.
    pub fn finish(self) -> Baseline {
        let first = self.first_ts.unwrap_or(0);
        let (end, generation) = (self.last_ts, self.generation);
        let mut assets: Vec<Asset> = self
            .assets
            .into_iter()
            .map(|(ip, a)| {
                // Learning watched the device stay quiet from its last PDU to the end too (a
                // device that reads in bursts a minute apart, one burst learned).
                let trailing = a
                    .last_sent
                    .filter(|(g, _)| *g == generation)
                    .map_or(0.0, |(_, t)| secs(t, end));
                let max_gap = a.max_gap.max(trailing);
                let mut roles = Vec::new();
                if a.client {
                    roles.push("client".to_string());
                }
                if a.server {
                    roles.push("server".to_string());
                }
                Asset {
                    ip,
                    protocols: {
                        let mut p = a.protocols;
                        p.sort();
                        p
                    },
                    roles,
                    identity: a.identity,
                    macs: a.macs.iter().map(|m| mac_text(*m)).collect(),
                    max_silence: (a.sent >= 3).then_some(max_gap),
                }
            })
            .collect();
        assets.sort_by_key(|a| a.ip);
        let mut points_by_channel: HashMap<(Proto, IpAddr, u32), Vec<PointModel>> = HashMap::new();
        for (server, learned) in self.points {
            points_by_channel
                .entry(server)
                .or_default()
                .extend(learned.points.into_iter().map(|(key, p)| PointModel {
                    space: (key >> 32) as u32,
                    address: key as u32,
                    min: p.min,
                    max: p.max,
                    max_step: p.max_step,
                    samples: p.samples,
                }));
        }
        let mut channels: Vec<ChannelModel> = self
            .channels
            .into_iter()
            .map(|(channel, c)| {
                // Its most repeated request: how many cycles of it learning saw.
                let poll_cycles = c
                    .polls
                    .values()
                    .map(|p| p.intervals.len() as u64 + u64::from(p.last.is_some()))
                    .max()
                    .unwrap_or(0);
                let mut polls: Vec<PollModel> = c
                    .polls
                    .into_iter()
                    .filter_map(|((function, space, start, count), p)| {
                        poll_model(function, space, start, count, p.intervals)
                    })
                    .collect();
                polls.sort_by(|a, b| {
                    (a.function, a.space, a.start, a.count)
                        .cmp(&(b.function, b.space, b.start, b.count))
                });
                let mut lat = c.latencies;
                lat.sort_by(f64::total_cmp);
                let latency = (!lat.is_empty()).then(|| LatencyModel {
                    samples: c.latency_seen,
                    p50: quantile(&lat, 0.5),
                    p95: quantile(&lat, 0.95),
                    p99: quantile(&lat, 0.99),
                    max: lat[lat.len() - 1],
                });
                ChannelModel {
                    channel,
                    functions: c.functions,
                    requests: c.requests,
                    responses: c.responses,
                    exceptions: c.exceptions,
                    wrote: c.writes_sent > c.writes_refused,
                    reads: c.reads,
                    writes: c.writes,
                    points: Vec::new(),
                    polls,
                    latency,
                    rate_window: RATE_WINDOW_SECS as f64,
                    max_requests_per_window: c.max_req,
                    max_exceptions_per_window: c.max_exc,
                    unanswered: c.awaited.saturating_sub(c.latency_seen),
                    poll_cycles: Some(poll_cycles),
                }
            })
            .collect();
        channels.sort_by_key(|c| c.channel);
        // Points belong to the server: listed once, on its first channel of that unit.
        for c in &mut channels {
            if let Some(mut pts) =
                points_by_channel.remove(&(c.channel.proto, c.channel.server, c.channel.unit))
            {
                pts.sort_by_key(|p| (p.space, p.address));
                c.points = pts;
            }
        }
        Baseline {
            format: FORMAT.into(),
            version: VERSION,
            learned_from: first as f64 / NANOS as f64,
            learned_until: self.last_ts as f64 / NANOS as f64,
            observations: self.observations,
            assets,
            channels,
            unlearned: self.dropped,
            behaviour: BehaviourModel::train(
                self.window_nanos as f64 / NANOS as f64,
                &self.samples,
            ),
        }
    }
}

/// Ethernet addresses remembered per asset.
pub const MAX_MACS_PER_ASSET: usize = 8;

pub fn mac_text(m: [u8; 6]) -> String {
    mac_text_in(m, &mut [0; 17]).to_owned()
}

/// [`mac_text`] in `buf`, with nothing allocated: `aa:bb:cc:dd:ee:ff`. Written by hand: through
/// the formatter (`{:02x}` six times) an address cost about 2 200 instructions, and an events
/// file writes two a line.
#[inline]
pub fn mac_text_in(m: [u8; 6], buf: &mut [u8; 17]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in m.iter().enumerate() {
        buf[3 * i] = DIGITS[usize::from(b >> 4)];
        buf[3 * i + 1] = DIGITS[usize::from(b & 0xf)];
        if let Some(colon) = buf.get_mut(3 * i + 2) {
            *colon = b':';
        }
    }
    // Only ASCII hex digits and colons were written.
    std::str::from_utf8(buf).unwrap_or_default()
}

pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A repeated request is a poll when it came at least [`MIN_POLL_INTERVALS`] times on a steady
/// period: the 95th percentile of its deviation from the median interval is within a quarter of
/// that interval.
fn poll_model(
    function: u32,
    space: u32,
    start: u32,
    count: u32,
    mut intervals: Vec<f64>,
) -> Option<PollModel> {
    if intervals.len() < MIN_POLL_INTERVALS {
        return None;
    }
    intervals.sort_by(f64::total_cmp);
    let period = quantile(&intervals, 0.5);
    let mut dev: Vec<f64> = intervals.iter().map(|i| (i - period).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let jitter = quantile(&dev, 0.95);
    (period >= 0.05 && jitter <= 0.25 * period).then_some(PollModel {
        function,
        space,
        start,
        count,
        period,
        jitter,
        samples: intervals.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captures learned one after the other: the time between them is neither a device's
    /// silence nor a poll's interval. The same capture's name held in another copy (a worker's)
    /// is the same capture, and so is a next file that follows on (a rotated capture).
    #[test]
    fn gaps_are_measured_within_one_capture() {
        let request = |source: &str, ts: i64| {
            let mut o = crate::obs::register_read(1, 0, &[], ts);
            o.kind = Kind::Request;
            o.accesses[0].count = 1;
            o.source = Arc::from(source);
            o
        };
        let mut l = Learner::new(5.0);
        let day = 86_400 * NANOS;
        for (source, from) in [("day1.pcap", 0), ("day2.pcap", day)] {
            for i in 0..20 {
                l.observe(&request(source, from + i * 2 * NANOS));
            }
        }
        // A copy of day 2's name: no new capture. Then day 2's capture rotated: the next file
        // follows on, 4 s later, and that silence is learned.
        l.observe(&request("day2.pcap", day + 40 * NANOS));
        l.observe(&request("day2-1.pcap", day + 44 * NANOS));
        let b = l.finish();
        let client = b
            .assets
            .iter()
            .find(|a| a.ip == IpAddr::from([10, 0, 0, 1]));
        assert_eq!(client.and_then(|a| a.max_silence), Some(4.0));
        let poll = &b.channels[0].polls[0];
        assert_eq!((poll.period, poll.samples), (2.0, 40), "{poll:?}");
    }

    /// Address spaces are bounded over all channels: the accesses past the bound are counted
    /// as not learned, and the spaces learned before it go on learning their ranges.
    #[test]
    fn address_spaces_are_bounded() {
        let request = |space: u32, start: u32, ts| {
            let mut o = crate::obs::register_read(1, start, &[], ts);
            o.kind = Kind::Request;
            o.accesses[0].space = space;
            o.accesses[0].count = 1;
            o
        };
        let mut l = Learner::new(5.0);
        let extra = 10;
        for i in 0..(MAX_SPACES + extra) as u32 {
            l.observe(&request(1000 + i, 0, i64::from(i)));
        }
        l.observe(&request(1000, 7, NANOS));
        let b = l.finish();
        assert_eq!(b.unlearned.spaces, extra as u64);
        let reads = &b.channels[0].reads;
        assert_eq!(reads.len(), MAX_SPACES);
        assert_eq!(
            reads.get(&1000).map(|r| r.0.clone()),
            Some(vec![[0, 0], [7, 7]])
        );
        assert!(b
            .unlearned
            .describe()
            .is_some_and(|d| d.contains("address spaces")));
    }

    /// A value that is not a finite number is no sample, whether its point is new, known, or
    /// read through the run cache; a point whose first values were such gets its envelope
    /// from the first finite one.
    #[test]
    fn non_finite_values_are_no_samples() {
        let read = |values: &[f64], ts| crate::obs::register_read(1, 0, values, ts);
        let mut l = Learner::new(5.0);
        l.observe(&read(&[f64::INFINITY, 1.0, f64::NAN], 0));
        l.observe(&read(&[f64::INFINITY, 1.0, f64::NAN], NANOS));
        l.observe(&read(&[2.0, f64::NEG_INFINITY, 5.0], 2 * NANOS));
        l.observe(&read(&[3.0, 4.0, f64::NAN], 3 * NANOS));
        let b = l.finish();
        let points: Vec<_> = b
            .channels
            .iter()
            .flat_map(|c| &c.points)
            .map(|p| (p.address, p.min, p.max, p.samples))
            .collect();
        assert_eq!(
            points,
            [(0, 2.0, 3.0, 2), (1, 1.0, 4.0, 3), (2, 5.0, 5.0, 1)]
        );
    }

    /// Points past the bound are counted, every time their values come; the points learned
    /// go on learning, through the run cache and after it was cleared (the bound on runs is
    /// passed too), and a point's envelope is the same whichever way its values came.
    #[test]
    fn points_are_bounded_and_learned_through_the_run_cache() {
        let read = |start, values: &[f64], ts| crate::obs::register_read(1, start, values, ts);
        let mut l = Learner::new(5.0);
        let run = [1.0; 1500];
        // 180 runs of 1500 registers, more addresses than the run cache holds: 70 000 values
        // past the bound, from the middle of run 133 on (that run, cached, is part learned).
        for pass in 0..2 {
            for i in 0..180u32 {
                l.observe(&read(1500 * i, &run, i64::from(pass * 1000 + i) * NANOS));
            }
        }
        // The run across the bound twice more: at least once from the cache.
        for k in 0..2 {
            l.observe(&read(1500 * 133, &run, (2500 + k) * NANOS));
        }
        // One point read alone, and as part of its run, moves the same envelope.
        l.observe(&read(5, &[7.0], 3000 * NANOS));
        l.observe(&read(0, &[-3.0; 1000], 3001 * NANOS));
        assert!(
            l.run_elements <= MAX_RUN_ELEMENTS + 1000,
            "{}",
            l.run_elements
        );
        assert!(l.run_elements < 180 * 1500, "the run cache was cleared");
        let b = l.finish();
        assert_eq!(b.unlearned.points, 2 * 70_000 + 2 * 1000);
        let points: Vec<_> = b.channels.iter().flat_map(|c| &c.points).collect();
        assert_eq!(points.len(), MAX_POINTS);
        let p5 = points.iter().find(|p| p.address == 5).expect("point 5");
        assert_eq!((p5.min, p5.max, p5.samples), (-3.0, 7.0, 4));
        assert_eq!(p5.max_step, 10.0);
        let p6 = points.iter().find(|p| p.address == 6).expect("point 6");
        assert_eq!((p6.min, p6.max, p6.samples), (-3.0, 1.0, 3));
        // Both sides of the bound in the run that crosses it.
        let last = points
            .iter()
            .find(|p| p.address == 199_999)
            .expect("the last point");
        assert_eq!(last.samples, 4);
        assert!(points.iter().all(|p| p.address < 200_000));
    }

    /// The pending map answers as a hash map does, over random inserts and removes of a few
    /// ids and of bursts of many (in place, past it, and back).
    #[test]
    fn corr_map_is_a_map() {
        let mut m = CorrMap::default();
        let mut model: HashMap<u32, (i64, u64, u64)> = HashMap::new();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut went_many = false;
        for step in 0..20_000i64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Phases of few ids and of many.
            let ids = if (step / 2000) % 2 == 0 { 6 } else { 40 };
            let c = (seed % ids) as u32;
            if seed >> 60 < 9 {
                m.insert(c, (step, seed, 0));
                model.insert(c, (step, seed, 0));
                assert_eq!(m.get(&c), model.get(&c));
            } else if step % 2 == 0 {
                assert_eq!(m.remove(&c), model.remove(&c));
            } else {
                // Refused: left as it was; taken: as a remove.
                assert_eq!(m.remove_if(&c, |_| false), Err(model.contains_key(&c)));
                assert_eq!(m.remove_if(&c, |_| true).ok(), model.remove(&c));
            }
            went_many |= matches!(m, CorrMap::Many(_));
            assert_eq!(m.len(), model.len());
            assert_eq!(m.contains_key(&c), model.contains_key(&c));
            let mut all: Vec<_> = m.iter().collect();
            all.sort_unstable();
            let mut want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
            want.sort_unstable();
            assert_eq!(all, want);
        }
        assert!(went_many, "bursts moved it to the hash map");
    }

    /// A response answers a request of its own connection, sent less than a minute before:
    /// a transaction id reused on another connection of the channel, or after a request the
    /// capture saw unanswered 19 minutes earlier (fixtures/modbus.pcap), is no answer. Before,
    /// such a pair was learned as a latency of 1170 s.
    #[test]
    fn a_response_answers_its_own_connections_recent_request() {
        let ch = Channel {
            proto: Proto::Modbus,
            client: IpAddr::from([10, 0, 0, 57]),
            server: IpAddr::from([10, 0, 0, 8]),
            unit: 1,
        };
        let pdu = |ts: i64, kind: Kind, client_port: u16| {
            let mut o = Observation::new(ts, Arc::from("t"), 1, ch, kind, 3);
            o.corr = Some(1);
            let (src, dst) = if kind == Kind::Request {
                (client_port, 502)
            } else {
                (502, client_port)
            };
            o.ports = Some(crate::obs::Ports {
                src,
                dst,
                udp: false,
            });
            o
        };
        let mut p = Pending::default();
        assert!(p.request(&pdu(0, Kind::Request, 2579)));
        // Another connection's response with the same id: not this request's.
        assert_eq!(p.response(&pdu(NANOS, Kind::Response, 4446)), None);
        // Its own, 2 ms later.
        let (latency, _) = p
            .response(&pdu(2_000_000, Kind::Response, 2579))
            .expect("answered");
        assert!((latency - 0.002).abs() < 1e-9);
        // Over UDP a response to another port of the client answers it (a DNP3 outstation
        // answering to a fixed port).
        let udp = |mut o: Observation| {
            if let Some(ports) = &mut o.ports {
                ports.udp = true;
            }
            o
        };
        p.request(&udp(pdu(3 * NANOS, Kind::Request, 30000)));
        assert!(p
            .response(&udp(pdu(3 * NANOS + 1000, Kind::Response, 20000)))
            .is_some());
        // Unanswered, and the id comes back 1170 s later on the same connection.
        p.request(&pdu(10 * NANOS, Kind::Request, 2579));
        assert_eq!(p.response(&pdu(1180 * NANOS, Kind::Response, 2579)), None);
        assert!(p.map.is_empty(), "a stale request is dropped");
    }

    #[test]
    fn rate_counter_slides() {
        let mut r = RateCounter::default();
        for i in 0..10 {
            assert_eq!(r.add(i * NANOS), i as u64 + 1);
        }
        // Second 10 pushes second 0 out.
        assert_eq!(r.add(10 * NANOS), 10);
        // A long pause empties the window.
        assert_eq!(r.add(100 * NANOS), 1);
        // Old timestamps still count, in the oldest bucket.
        assert_eq!(r.add(50 * NANOS), 2);
    }

    /// The running total is the window's count: times forward, a little back, far back and
    /// far ahead, against the events counted again from scratch.
    #[test]
    fn rate_counter_total_is_the_window_count() {
        let mut r = RateCounter::default();
        let mut counted: Vec<i64> = Vec::new();
        let mut seed: u32 = 0x2545_f491;
        let mut now = 1_000i64;
        for _ in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let ts_sec = match seed % 16 {
                0 => now - 3,
                1 => now - 40,
                2 => {
                    now += 25;
                    now
                }
                3..=6 => {
                    now += 1;
                    now
                }
                _ => now,
            };
            let got = r.add(ts_sec * NANOS + i64::from(seed % 1000));
            // Where each event was counted: its own second while in the window, else the oldest.
            let head = now.max(r.head);
            let at = if ts_sec + RATE_WINDOW_SECS <= head {
                head - RATE_WINDOW_SECS + 1
            } else {
                ts_sec.min(head)
            };
            counted.push(at);
            let expected = counted
                .iter()
                .filter(|&&s| s > head - RATE_WINDOW_SECS)
                .count() as u64;
            assert_eq!(got, expected, "at {ts_sec}, head {head}");
            assert_eq!(
                r.total,
                r.buckets.iter().map(|&c| u64::from(c)).sum::<u64>()
            );
        }
    }

    /// Twelve channels, each polled at its own rate, over 60 windows of 1 s.
    fn learn_twelve_channels() -> Baseline {
        use crate::obs::{Kind, Proto};
        use std::net::{IpAddr, Ipv4Addr};
        let mut l = Learner::new(1.0);
        let source: std::sync::Arc<str> = std::sync::Arc::from("test");
        let mut frame = 0;
        for step in 0..600i64 {
            for c in 0u8..12 {
                if step % i64::from(c + 1) != 0 {
                    continue;
                }
                frame += 1;
                let ch = Channel {
                    proto: Proto::Modbus,
                    client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                    server: IpAddr::V4(Ipv4Addr::new(10, 0, 1, c)),
                    unit: 1,
                };
                let ts = step * NANOS / 10 + i64::from(c);
                l.observe(&Observation::new(
                    ts,
                    source.clone(),
                    frame,
                    ch,
                    Kind::Request,
                    3,
                ));
            }
        }
        l.finish()
    }

    #[test]
    fn the_behaviour_model_does_not_depend_on_hash_order() {
        // Every learner's maps get their own hash seed: two learners of the same traffic must
        // still fit the same model (its windows were once taken in hash order, and the model,
        // and so its alerts, changed from run to run).
        let a = learn_twelve_channels().behaviour.expect("a model");
        for _ in 0..4 {
            assert_eq!(learn_twelve_channels().behaviour.expect("a model"), a);
        }
    }

    #[test]
    fn polls_need_a_steady_period() {
        assert!(poll_model(3, 4, 0, 10, vec![1.0, 1.01, 0.99, 1.0, 1.02, 0.98]).is_some());
        assert!(poll_model(3, 4, 0, 10, vec![1.0, 5.0, 0.2, 3.0, 1.0, 9.0]).is_none());
        assert!(poll_model(3, 4, 0, 10, vec![1.0, 1.0]).is_none());
    }
}
