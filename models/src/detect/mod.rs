//! Scoring observations against a [`Baseline`]: the baseline-relative integrity and availability
//! checks. Commands, malformed PDUs and CRC errors are raised by the engine in every phase.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;

use crate::alert::{capped_list, Alert, AlertKey, Bare, Found, Severity};
use crate::baseline::{Baseline, ChannelModel, LatencyModel, PollModel};
use crate::behaviour::WindowAcc;
use crate::learn::{poll_key, CorrMap, FastMap, FastSet, Pending, PollKey, RateCounter};
use crate::obs::{Channel, Kind, Observation, Ports, Proto};
use crate::ranges::Ranges;
use crate::{secs, NANOS};

mod across;
mod assets;
mod requests;
mod timers;
mod values;

use across::*;
pub use across::{Heard, Note, ScanNew, ScanNote};
use assets::*;
use requests::*;
pub use timers::tick_order;
use timers::*;
use values::*;

/// How long a request may wait for its response when learning gave no better bound.
pub const MIN_RESPONSE_TIMEOUT: f64 = 2.0;

/// A device is silent after this many times its longest learned silence (and at least
/// [`MIN_SILENCE`]).
const SILENCE_FACTOR: f64 = 3.0;

const MIN_SILENCE: f64 = 5.0;

/// Recent latencies compared with the learned distribution.
const LATENCY_RECENT: usize = 16;

/// Requests per rate window on a channel learning never saw before they count as a flood.
const NEW_CHANNEL_FLOOD: u64 = 500;

/// Scan detection: what one client does within this window, beyond what was learned.
const SCAN_WINDOW: i64 = 60 * NANOS;

const SCAN_UNITS: usize = 4;

const SCAN_FUNCTIONS: usize = 4;

const SCAN_ADDRESSES: usize = 16;

const SCAN_PORTS: usize = 8;

/// What one client's scan window holds at most, per kind: past the thresholds, more is only
/// memory a scanner could fill.
const SCAN_SET_BOUND: usize = 4096;

/// Causes whose text was built, remembered at most.
const MAX_RAISED: usize = 100_000;

/// Bounds on runtime state for channels and clients learning never saw.
pub(crate) const MAX_RUNTIME_CHANNELS: usize = 20_000;

pub(crate) const MAX_SCAN_CLIENTS: usize = 10_000;

/// Accesses and values the value memo holds room for at most, in all (a cache: cleared when
/// full; eight bytes of values held as bytes count as one); one read larger than a sixteenth of
/// it is not remembered. At most 32 bytes an element: 8 MiB.
const MAX_MEMO_ELEMENTS: usize = 256 * 1024;

/// A channel's last [`LATENCY_RECENT`] latencies, held in place as a ring: what reads them (their
/// largest, their median) does not need their order. (In a `VecDeque` they were behind a
/// pointer, and every response took the oldest out through a call.)
#[derive(Default)]
struct Recent {
    values: [f64; LATENCY_RECENT],
    len: usize,
    /// Where the next one goes (the oldest, once full).
    next: usize,
}

impl Recent {
    /// Holds `v`; returns the oldest, which it replaced, once the ring is full.
    fn push(&mut self, v: f64) -> Option<f64> {
        let slot = &mut self.values[self.next];
        self.next = (self.next + 1) % LATENCY_RECENT;
        if self.len < LATENCY_RECENT {
            *slot = v;
            self.len += 1;
            None
        } else {
            Some(std::mem::replace(slot, v))
        }
    }

    fn as_slice(&self) -> &[f64] {
        &self.values[..self.len]
    }
}

#[derive(Default)]
struct ChanRt {
    known: Option<usize>,
    pending: Pending,
    recent: Recent,
    /// How many of `recent` are a slowdown by themselves ([`timers::slowed`]): none, and their
    /// median is none either (the common case costs no pass over the window).
    slow_recent: usize,
    req_rate: RateCounter,
    exc_rate: RateCounter,
    window: WindowAcc,
    source: Option<Arc<str>>,
    /// The ports of its last PDU, from client to server.
    ports: Option<Ports>,
    /// Request time and frame of the channel's last `MIN_UNANSWERED` timeouts.
    timeouts: VecDeque<(i64, u64)>,
    /// Where `window` ends (capture time): set when its first PDU comes in.
    window_end: i64,
    /// How many windows have begun (each at the first PDU into an empty one).
    window_gen: u64,
    /// In [`Windows::active`].
    listed: bool,
}

/// A learned channel: what its checks read that is fixed once detection starts, and its
/// runtime state. One lookup per PDU (`Detector::channels`) finds all of it; the maps keyed by
/// server, pair or device are for channels learning never saw.
struct Slot {
    /// Both ends are learned devices (a PDU on it needs no device lookups).
    ends_known: bool,
    /// The client wrote to the server in learning (`Detector::writers`).
    writer: bool,
    /// The functions the client used on channels it wrote on (`Detector::fleet_writes`),
    /// sorted.
    fleet: Vec<u32>,
    /// Its server and unit's value envelopes, in `Detector::points`.
    points: Option<usize>,
    /// Its client's and its server's device state, in `Detector::devices`.
    client_device: Option<usize>,
    server_device: Option<usize>,
    /// How long its requests wait for their response ([`timeout_for`]), in nanoseconds:
    /// worked out once, not per request.
    timeout: i64,
    /// Its runtime state; `rt.known` is set once the channel has been seen.
    rt: ChanRt,
    /// Its learned polls, sorted by key.
    polls: Vec<(PollKey, PollRt)>,
    /// Where its client's scan window was last found.
    scan: ScanPlace,
    /// Seen on this worker ([`Detector::claims`]).
    claimed: bool,
    /// Requests on it that the function, unit, writer and address checks found nothing in.
    clean: CleanRequests,
}

/// Requests on a learned channel that the function, unit, writer and address checks
/// ([`Detector::check_function`], [`Detector::check_ranges`], and so the scan note) found
/// nothing in, by what those checks read of a request: its function, whether it writes, and
/// the ranges it touches. Those checks read nothing else of it, and otherwise only what is
/// fixed once detection starts (the baseline and what the detector made of it): the same
/// request again finds nothing again, and is not checked again. Requests with a command or
/// member functions are not held.
///
/// A master polls a device with the same few requests every cycle, in the same order, or asks
/// the same again and again: a channel holds the first [`CLEAN_REQUESTS`] it sees, in the
/// order they came, and keeps them (replacing one in turn would miss every time on a cycle of
/// more: the one replaced is the one asked next); a lookup tries the one found last and the
/// one after it first, so that either finds its request at the first or second comparison.
/// All channels together hold at most [`CLEAN_BUDGET`] accesses.
#[derive(Default)]
struct CleanRequests {
    held: Vec<CleanRequest>,
    /// The one found (or held) last.
    last: usize,
}

struct CleanRequest {
    function: u32,
    write: bool,
    /// Space, start, count and write of each access.
    accesses: Vec<(u32, u32, u32, bool)>,
    /// Its place in its slot's `polls` (which is built once, and only ever emptied after),
    /// found when it was held: a poll's key is read from what is compared here.
    poll: Option<u32>,
    /// The behaviour window it was last counted in (`ChanRt::window_gen`; 0: none): counted
    /// again in the same one, it adds no function or address the window does not have.
    window: u64,
}

/// Clean requests held per channel, the accesses one may have, and the accesses all channels
/// hold at most together (16 bytes each: 4 MiB; a request without any counts as one, so the
/// requests' own 48 bytes come to at most 12 MiB more).
const CLEAN_REQUESTS: usize = 16;
const CLEAN_ACCESSES: usize = 16;
const CLEAN_BUDGET: usize = 256 * 1024;
const _: () = assert!(std::mem::size_of::<CleanRequest>() <= 48);

impl CleanRequest {
    fn is(&self, o: &Observation) -> bool {
        self.function == o.function
            && self.write == o.write
            && self.accesses.len() == o.accesses.len()
            && self
                .accesses
                .iter()
                .zip(&o.accesses)
                .all(|(&(space, start, count, write), a)| {
                    (space, start, count, write) == (a.space, a.start, a.count, a.write)
                })
    }
}

impl CleanRequests {
    /// Whether `o` may be held: no command, no member functions, at most [`CLEAN_ACCESSES`].
    #[inline]
    fn may_hold(o: &Observation) -> bool {
        o.command.is_none() && o.members.is_empty() && o.accesses.len() <= CLEAN_ACCESSES
    }

    /// Whether `o` (a request) is one of those held: the one found last first (a run of the
    /// same request), then the one after it (a poll cycle), then any.
    /// Its place in `held`, if so.
    #[inline]
    fn holds(&mut self, o: &Observation) -> Option<usize> {
        if !Self::may_hold(o) {
            return None;
        }
        let n = self.held.len();
        let after = if self.last + 1 < n { self.last + 1 } else { 0 };
        for i in [self.last, after] {
            if self.held.get(i).is_some_and(|c| c.is(o)) {
                self.last = i;
                return Some(i);
            }
        }
        self.find(o)
    }

    /// [`CleanRequests::holds`] when `o` is not one of the two expected: any of them.
    #[inline(never)]
    fn find(&mut self, o: &Observation) -> Option<usize> {
        let i = self.held.iter().position(|c| c.is(o))?;
        self.last = i;
        Some(i)
    }

    /// Holds `o`, a request the checks found nothing in, while the channel holds fewer than
    /// [`CLEAN_REQUESTS`] and all channels fewer than [`CLEAN_BUDGET`] accesses (`budget`:
    /// what they hold).
    #[cold]
    #[inline(never)]
    fn hold(&mut self, o: &Observation, budget: &mut usize, polls: &[(PollKey, PollRt)]) {
        if !Self::may_hold(o)
            || self.held.len() >= CLEAN_REQUESTS
            || *budget + o.accesses.len().max(1) > CLEAN_BUDGET
        {
            return;
        }
        *budget += o.accesses.len().max(1);
        self.held.push(CleanRequest {
            function: o.function,
            write: o.write,
            accesses: o
                .accesses
                .iter()
                .map(|a| (a.space, a.start, a.count, a.write))
                .collect(),
            poll: poll_at(polls, o).and_then(|at| u32::try_from(at).ok()),
            window: 0,
        });
        self.last = self.held.len() - 1;
    }
}

/// A learned device with Ethernet addresses or a silence clock (the clock itself is in
/// [`Across`], at the same place).
struct Device {
    /// Held in place for one or two (a device has one, a redundant one two): every PDU of a
    /// learned device reads them.
    macs: Option<smallvec::SmallVec<[[u8; 6]; 2]>>,
}

/// Where a channel's runtime state lives.
#[derive(Clone, Copy)]
enum RtAt {
    Slot(usize),
    Other(Channel),
}

/// The channels' runtime state: learned channels' in their slots, the others' in a map.
struct Chans {
    /// One per baseline channel, in its order ([`Detector::channels`] finds one).
    slots: Vec<Slot>,
    /// Runtime state of the channels learning never saw (at most `MAX_RUNTIME_CHANNELS`).
    others: FastMap<Channel, ChanRt>,
}

impl Chans {
    /// A channel's runtime state (made on first use); `known` is its place in `slots` when
    /// learned.
    #[inline]
    fn rt(&mut self, ch: &Channel, known: Option<usize>) -> &mut ChanRt {
        match known.and_then(|i| self.slots.get_mut(i).map(|s| (i, s))) {
            Some((i, s)) => {
                if s.rt.known.is_none() {
                    s.rt.known = Some(i);
                }
                &mut s.rt
            }
            None => self.others.entry(*ch).or_default(),
        }
    }

    /// [`Chans::rt`] for a request, with (`held`: its place among the requests its slot holds
    /// as clean) the behaviour window that request was last counted in.
    #[inline]
    fn rt_held(
        &mut self,
        ch: &Channel,
        known: Option<usize>,
        held: Option<usize>,
    ) -> (&mut ChanRt, Option<&mut u64>) {
        if let (Some(i), Some(h)) = (known, held) {
            let seen = |s: &Slot| s.rt.known.is_some() && h < s.clean.held.len();
            if self.slots.get(i).is_some_and(seen) {
                let s = &mut self.slots[i];
                return (&mut s.rt, Some(&mut s.clean.held[h].window));
            }
        }
        (self.rt(ch, known), None)
    }

    /// Where [`Chans::rt`] keeps a channel's runtime state. Apart from it: returned with the
    /// state, the place came back through memory and was read whole just after it was written
    /// in pieces (a store-forwarding stall a PDU), and it is needed only when a window opens.
    #[inline]
    fn place(&self, ch: &Channel, known: Option<usize>) -> RtAt {
        match known.filter(|&i| i < self.slots.len()) {
            Some(i) => RtAt::Slot(i),
            None => RtAt::Other(*ch),
        }
    }

    /// A channel's runtime state where it lives, if it has one, and the channel (`base` being
    /// the baseline in use).
    fn rt_of(&mut self, base: &Baseline, at: RtAt) -> Option<(Channel, &mut ChanRt)> {
        match at {
            RtAt::Slot(i) => Some((
                base.channels.get(i)?.channel,
                &mut self.slots.get_mut(i)?.rt,
            )),
            RtAt::Other(ch) => self.others.get_mut(&ch).map(|rt| (ch, rt)),
        }
    }
}

pub struct Detector {
    /// Shared, so that a request can read its channel's model while the runtime state is
    /// updated (taking it out and back cost a default baseline made and dropped per request).
    pub baseline: std::sync::Arc<Baseline>,
    /// Learned channels: their place in the baseline and in `slots`.
    channels: FastMap<Channel, usize>,
    /// The channel looked up last in `channels` and what it found: a request and its answer
    /// come one after the other on their channel, and `channels` does not change once built.
    last_channel: Option<(Channel, Option<usize>)>,
    /// Every request is checked in full, those a channel holds as clean too
    /// ([`Detector::check_every_request`]).
    check_all: bool,
    /// Accesses the channels' clean requests hold, together ([`CLEAN_BUDGET`]).
    clean_held: usize,
    chans: Chans,
    assets: FastSet<IpAddr>,
    /// Learned devices with Ethernet addresses or a silence clock; `device_index` finds one.
    devices: Vec<Device>,
    device_index: FastMap<IpAddr, usize>,
    /// Every Ethernet address a learned asset sent from.
    learned_macs: FastSet<[u8; 6]>,
    /// Under-learned channels, and the (protocol, client, server) pairs all of whose channels
    /// are: their alerts carry low confidence.
    weak_channels: FastSet<Channel>,
    weak_pairs: FastSet<(Proto, IpAddr, IpAddr)>,
    server_functions: FastMap<(Proto, IpAddr), BTreeSet<u32>>,
    server_units: FastMap<(Proto, IpAddr), BTreeSet<u32>>,
    server_ranges: FastMap<(Proto, IpAddr, u32, u32, bool), Ranges>,
    writers: FastSet<(Proto, IpAddr, IpAddr)>,
    client_servers: FastSet<(IpAddr, IpAddr, Proto, u32)>,
    /// Per server and unit with learned value envelopes: its points, their epoch, its memo;
    /// `point_servers` finds one.
    points: Vec<ServerPoints>,
    point_servers: FastMap<(Proto, IpAddr, u32), usize>,
    /// What spans channels: devices' silence clocks, clients' scan windows.
    pub(crate) across: Across,
    /// Causes raised so far (their text was built once), and the bare occurrences of them this
    /// observation found.
    pub(crate) raised: Raised,
    raised_clears: u64,
    /// Elements held by the servers' value memos (their bound).
    memo_elements: usize,
    /// Reads whose values the memo found unchanged (their check skipped).
    memo_hits: u64,
    /// Addresses in the servers' caches of looked-up runs, all together (bounded by
    /// `values::MAX_RUN_ELEMENTS`).
    run_elements: usize,
    /// The channels' behaviour windows.
    windows: Windows,
    last_tick: i64,
    /// The earliest time a timer (timeout, missing poll, silence) can fire: ticks before it
    /// have nothing to do, so they cost a comparison, not a walk over every channel.
    next_due: i64,
    started: bool,
    /// When the learned polls' clocks started (detection's start, or the clock's last step
    /// back).
    poll_origin: i64,
    /// The clock's latest tick (every tick, whether a timer was due or not).
    ticked: i64,
    /// A worker's detector ([`crate::split`]): a learned channel's polls are its own from the
    /// channel's first PDU here (the stage follows them until then), not from the start.
    claims: bool,
    /// PDUs of channels learning never saw beyond `MAX_RUNTIME_CHANNELS` (checked against the
    /// baseline, with no timing state kept for them).
    pub untracked_channels: u64,
}

/// A bare occurrence about the PDU `o` (no text yet).
#[inline]
pub(crate) fn alert(o: &Observation, key: AlertKey, severity: Severity) -> Alert {
    let mut a = Alert::new(
        Some(o.source.clone()),
        key,
        severity,
        o.channel.proto,
        o.src(),
        o.dst(),
        o.ts,
    );
    a.ports = o.ports;
    a.frames.push(o.frame);
    a
}

/// Remembers the capture a PDU came from, cloning the name only when it changed: the reference
/// count is shared with the dissecting thread, and touching it per PDU costs as much as a check.
fn set_source(held: &mut Option<Arc<str>>, source: &Arc<str>) {
    if !held.as_ref().is_some_and(|h| Arc::ptr_eq(h, source)) {
        *held = Some(Arc::clone(source));
    }
}

/// An occurrence about a channel, raised by a timer or a window at `ts`.
fn channel_alert(
    ch: &Channel,
    rt: Option<&ChanRt>,
    ts: i64,
    key: AlertKey,
    severity: Severity,
) -> Alert {
    let source = rt.and_then(|r| r.source.clone());
    let mut a = Alert::new(source, key, severity, ch.proto, ch.client, ch.server, ts);
    a.ports = rt.and_then(|r| r.ports);
    a
}

/// The causes marked raised (the engine put them in the alert book: their text was built),
/// and the bare occurrences of them the current observation found ([`fresh`]), each placed
/// among the whole alerts of its candidates. The engine takes those after each observation
/// ([`Detector::take_bare`]).
#[derive(Debug, Default)]
pub(crate) struct Raised {
    set: FastSet<AlertKey>,
    pub(crate) bare: Vec<Bare>,
}

impl Raised {
    #[inline]
    pub(crate) fn contains(&self, key: &AlertKey) -> bool {
        self.set.contains(key)
    }
}

/// A cause the engine already put in the alert book goes out bare (the book keeps the first
/// one's text): a flood costs a lookup per PDU and a small record, placed among the alerts
/// of `out`. Otherwise the occurrence about the PDU `o` is returned as an alert to have its
/// text built.
#[inline]
fn fresh(
    raised: &mut Raised,
    o: &Observation,
    (key, severity): (AlertKey, Severity),
    out: &[Alert],
) -> Option<Alert> {
    if raised.set.contains(&key) {
        raised.bare.push(Bare {
            key,
            ts: o.ts,
            frame: o.frame,
            src_ip: o.src(),
            dst_ip: o.dst(),
            ports: o.ports,
            severity,
            proto: o.channel.proto,
            at: out.len() as u32,
        });
        None
    } else {
        Some(alert(o, key, severity))
    }
}

/// [`fresh`] for an occurrence about the channel of `o` (of no cause but its type).
fn fresh_channel(
    raised: &mut Raised,
    o: &Observation,
    (r#type, severity): (&'static str, Severity),
    out: &[Alert],
) -> Option<Alert> {
    let key = AlertKey::channel(r#type, &o.channel, 0);
    fresh(raised, o, (key, severity), out)
}

/// An access alert: high for a write, medium for a read.
fn write_severity(write: bool) -> Severity {
    if write {
        Severity::High
    } else {
        Severity::Medium
    }
}

fn nanos(s: f64) -> i64 {
    (s * NANOS as f64) as i64
}

impl Detector {
    pub fn new(baseline: Baseline) -> Self {
        let mut d = Detector {
            channels: FastMap::default(),
            last_channel: None,
            check_all: false,
            clean_held: 0,
            chans: Chans {
                slots: Vec::with_capacity(baseline.channels.len()),
                others: FastMap::default(),
            },
            assets: baseline.assets.iter().map(|a| a.ip).collect(),
            devices: Vec::new(),
            device_index: FastMap::default(),
            learned_macs: baseline
                .assets
                .iter()
                .flat_map(|a| a.macs.iter().filter_map(|m| parse_mac(m)))
                .collect(),
            weak_channels: baseline
                .channels
                .iter()
                .filter(|c| c.under_learned())
                .map(|c| c.channel)
                .collect(),
            weak_pairs: FastSet::default(),
            server_functions: FastMap::default(),
            server_units: FastMap::default(),
            server_ranges: FastMap::default(),
            writers: FastSet::default(),
            client_servers: FastSet::default(),
            points: Vec::new(),
            point_servers: FastMap::default(),
            across: Across::default(),
            raised: Raised::default(),
            raised_clears: 0,
            memo_elements: 0,
            memo_hits: 0,
            run_elements: 0,
            windows: Windows {
                nanos: baseline
                    .behaviour
                    .as_ref()
                    .map_or(10 * NANOS, |m| (m.window * NANOS as f64) as i64)
                    .max(NANOS),
                first: None,
                due: i64::MAX,
                active: Vec::new(),
            },
            last_tick: i64::MIN,
            next_due: i64::MIN,
            started: false,
            poll_origin: i64::MIN,
            ticked: i64::MIN,
            claims: false,
            untracked_channels: 0,
            baseline: std::sync::Arc::new(baseline),
        };
        let base = Arc::clone(&d.baseline);
        // Devices with learned Ethernet addresses (a later entry for the same address replaces
        // an earlier one) or a silence clock (made when detection starts).
        for a in &base.assets {
            if a.macs.is_empty() && a.max_silence.is_none() {
                continue;
            }
            let dev = d.device(a.ip);
            if !a.macs.is_empty() {
                d.devices[dev].macs = Some(a.macs.iter().filter_map(|m| parse_mac(m)).collect());
            }
        }
        let mut strong_pairs = FastSet::default();
        for c in &base.channels {
            let pair = (c.channel.proto, c.channel.client, c.channel.server);
            if c.under_learned() {
                d.weak_pairs.insert(pair);
            } else {
                strong_pairs.insert(pair);
            }
        }
        d.weak_pairs.retain(|p| !strong_pairs.contains(p));
        // (protocol, client, function) of every function a client used on a channel it wrote
        // on: the write functions of the site's masters.
        let mut fleet_writes: FastMap<(Proto, IpAddr), BTreeSet<u32>> = FastMap::default();
        for (i, c) in base.channels.iter().enumerate() {
            let ch = c.channel;
            d.channels.insert(ch, i);
            d.server_functions
                .entry((ch.proto, ch.server))
                .or_default()
                .extend(c.functions.keys());
            d.server_units
                .entry((ch.proto, ch.server))
                .or_default()
                .insert(ch.unit);
            d.client_servers
                .insert((ch.client, ch.server, ch.proto, ch.unit));
            if c.wrote {
                d.writers.insert((ch.proto, ch.client, ch.server));
                fleet_writes
                    .entry((ch.proto, ch.client))
                    .or_default()
                    .extend(c.functions.keys());
            }
            for (write, map) in [(false, &c.reads), (true, &c.writes)] {
                for (space, r) in map {
                    d.server_ranges
                        .entry((ch.proto, ch.server, ch.unit, *space, write))
                        .or_default()
                        .union(r);
                }
            }
            for p in &c.points {
                let next = d.points.len();
                let at = *d
                    .point_servers
                    .entry((ch.proto, ch.server, ch.unit))
                    .or_insert(next);
                if at == next {
                    d.points.push(ServerPoints::default());
                }
                d.points[at].insert(
                    point_key(p.space, p.address),
                    PointEnv::new(p.min, p.max, p.max_step, p.samples),
                );
            }
        }
        for c in &base.channels {
            let ch = c.channel;
            let slot = Slot {
                ends_known: d.assets.contains(&ch.client) && d.assets.contains(&ch.server),
                writer: d.writers.contains(&(ch.proto, ch.client, ch.server)),
                fleet: fleet_writes
                    .get(&(ch.proto, ch.client))
                    .map(|f| f.iter().copied().collect())
                    .unwrap_or_default(),
                points: d
                    .point_servers
                    .get(&(ch.proto, ch.server, ch.unit))
                    .copied(),
                client_device: d.device_index.get(&ch.client).copied(),
                server_device: d.device_index.get(&ch.server).copied(),
                timeout: nanos(timeout_for(c.latency.as_ref())),
                rt: ChanRt::default(),
                polls: Vec::new(),
                scan: None,
                claimed: false,
                clean: CleanRequests::default(),
            };
            d.chans.slots.push(slot);
        }
        // A channel's polls go to the slot its PDUs find (the last of a channel listed twice),
        // a later poll with the same key replacing an earlier one.
        for c in &base.channels {
            let Some(&i) = d.channels.get(&c.channel) else {
                continue;
            };
            let polls = &mut d.chans.slots[i].polls;
            for p in &c.polls {
                let key = (p.function, p.space, p.start, p.count);
                let rt = PollRt {
                    model: p.clone(),
                    missing_after: nanos(poll_missing_after(p)),
                    last: None,
                    missing_alerted: false,
                    broken: VecDeque::new(),
                };
                match polls.binary_search_by(|(k, _)| k.cmp(&key)) {
                    Ok(at) => polls[at].1 = rt,
                    Err(at) => polls.insert(at, (key, rt)),
                }
            }
        }
        d
    }

    /// Detection against `baseline`, shared (N workers check channels against one baseline).
    pub fn shared(baseline: Arc<Baseline>) -> Self {
        // Built as from its own copy; then the copy is dropped for the shared one.
        let mut d = Detector::new(Baseline::clone(&baseline));
        d.baseline = baseline;
        d
    }

    /// A worker's detector ([`crate::split`]): what spans channels goes out, and a learned
    /// channel's polls are followed here from its first PDU.
    pub(crate) fn on_worker(&mut self) {
        self.across.send_out();
        self.claims = true;
    }

    /// A worker follows the learned channel at `i` from now: the stage no longer does.
    pub(crate) fn claimed(&mut self, i: u32) {
        if let Some(s) = self.chans.slots.get_mut(i as usize) {
            s.polls.clear();
        }
    }

    /// The learned channel at `i` is seen here first: its polls are followed from when the
    /// stage started following them.
    #[cold]
    #[inline(never)]
    fn claim(&mut self, i: usize) {
        let (origin, ticked) = (self.poll_origin, self.ticked);
        if let Some(s) = self.chans.slots.get_mut(i) {
            s.claimed = true;
            for (_, p) in &mut s.polls {
                p.last = Some((origin, 0));
                // The stage, which watched the poll until now, found it missing at the first
                // tick past its bound (it fires at every tick from then): the worker, which saw
                // the same ticks, takes it up as reported.
                p.missing_alerted = secs(origin, ticked) > poll_missing_after(&p.model);
                if !p.missing_alerted {
                    self.next_due = self.next_due.min(origin.saturating_add(p.missing_after));
                }
            }
            self.across.claimed(i as u32);
        }
    }

    /// Checks every request in full, those a channel would hold as clean too
    /// ([`CleanRequests`]): the differential harness ([`crate::fuzzing`]) holds the two ways to
    /// the same alerts. Nothing is looked up, so nothing is held.
    pub fn check_every_request(&mut self) {
        self.check_all = true;
    }

    /// Starts detection's clocks at `now` if they have not started.
    pub fn start_at(&mut self, now: i64) {
        if !self.started {
            self.start(now);
        }
    }

    /// What a worker's scan note adds to its client's scan window (kept here): the note's
    /// PDU made again, as far as [`Across::scan`] reads it.
    pub(crate) fn scan_noted(&mut self, note: ScanNote, source: &Arc<str>, out: &mut Vec<Alert>) {
        self.raised.bare.clear();
        let mut o = Observation::new(
            note.ts,
            Arc::clone(source),
            note.frame,
            note.channel,
            note.kind,
            note.function,
        );
        o.ports = note.ports;
        self.across
            .scan(&o, &mut None, note.new, &mut self.raised, out);
    }

    /// A device's place in `devices`, made if new.
    fn device(&mut self, ip: IpAddr) -> usize {
        let next = self.devices.len();
        let at = *self.device_index.entry(ip).or_insert(next);
        if at == next {
            self.devices.push(Device { macs: None });
        }
        at
    }

    /// Starts the silence clocks of every learned asset, and the clock of every learned poll,
    /// at `now`: a poll that is already dead when detection starts is missing three periods on,
    /// as one that stops later is.
    fn start(&mut self, now: i64) {
        self.started = true;
        self.windows.first = Some(now.div_euclid(self.windows.nanos));
        self.poll_origin = now;
        if !self.claims {
            for s in &mut self.chans.slots {
                for (_, p) in &mut s.polls {
                    p.last = Some((now, 0));
                }
            }
        }
        for a in &self.baseline.assets {
            if let Some(gap) = a.max_silence {
                let Some(&dev) = self.device_index.get(&a.ip) else {
                    continue;
                };
                let threshold = (SILENCE_FACTOR * gap).max(MIN_SILENCE);
                self.across.clock(
                    dev,
                    AssetRt {
                        ip: a.ip,
                        threshold,
                        threshold_nanos: nanos(threshold),
                        last: now,
                        last_frame: 0,
                        source: None,
                        proto: a.protocols.first().copied().unwrap_or(Proto::Tcp),
                        peer: None,
                        silent: false,
                    },
                );
            }
        }
    }

    /// Alerts about an under-learned channel (or a pair all of whose channels are) are hints:
    /// low confidence, severity one step lower.
    pub fn soften(&self, alerts: &mut [Alert]) {
        if self.weak_channels.is_empty() {
            return;
        }
        for a in alerts {
            let k = a.key;
            let Some(proto) = k.proto() else { continue };
            // What needs no baseline (commands, malformed PDUs, CRC errors, restarts) keeps its
            // weight whatever learning saw.
            if crate::engine::needs_no_baseline(a.r#type) {
                continue;
            }
            // A pair's alert (its key's unit 0 whatever the channel's) is weak when every
            // channel between them is; a channel's when that channel is (a weak unit 0 channel
            // says nothing of the pair's other units).
            let weak = if AlertKey::keyed_by_pair(a.r#type) {
                self.weak_pairs.contains(&(proto, k.a(), k.b()))
            } else {
                self.weak_channels.contains(&Channel {
                    proto,
                    client: k.a(),
                    server: k.b(),
                    unit: k.unit(),
                })
            };
            if weak && !a.low_confidence {
                a.low_confidence = true;
                a.severity = a.severity.lowered();
            }
        }
    }

    /// The engine put this cause in the alert book (after dropping the alerts a stronger one
    /// implied): its later occurrences need no text. Bounded: forgetting costs only building a
    /// text again, the book still deduplicates.
    pub fn mark_raised(&mut self, key: AlertKey) {
        // Mostly a cause already marked (a flood): a lookup costs half an insert.
        let set = &mut self.raised.set;
        if set.contains(&key) {
            return;
        }
        if set.len() >= MAX_RAISED {
            set.clear();
            self.raised_clears += 1;
        }
        set.insert(key);
    }

    /// The bare occurrences the last observation found (or the last scan note), to `into`
    /// (empty: its room changes places with the detector's).
    pub(crate) fn take_bare(&mut self, into: &mut Vec<Bare>) {
        if into.is_empty() {
            std::mem::swap(into, &mut self.raised.bare);
        } else {
            into.append(&mut self.raised.bare);
        }
    }

    /// Whether the cause `key` is marked raised (its text was built).
    pub(crate) fn is_marked(&self, key: &AlertKey) -> bool {
        self.raised.set.contains(key)
    }

    /// How many times the set of causes marked raised was full and started afresh.
    pub fn raised_clears(&self) -> u64 {
        self.raised_clears
    }

    /// One observation. What fires with time (timeouts, missing polls, silent devices, the
    /// behaviour windows that ended) fires at the clock's ticks ([`Detector::tick`]), not at
    /// observations: what a channel's state does then depends only on its own PDUs and the
    /// ticks, not on other channels' PDUs between them.
    pub fn observe(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        if !self.started {
            self.start(o.ts);
        }
        // Empty but after a panic caught mid-observation: its bare occurrences go with it, as
        // its other candidates do.
        self.raised.bare.clear();
        self.observe_pdu(o, out);
    }

    fn observe_pdu(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        let ch = &o.channel;
        let known = match self.last_channel {
            Some((c, k)) if c == *ch => k,
            _ => {
                let k = self.channels.get(ch).copied();
                self.last_channel = Some((*ch, k));
                k
            }
        };
        if let (true, Some(i)) = (self.claims, known) {
            if self.chans.slots.get(i).is_some_and(|s| !s.claimed) {
                self.claim(i);
            }
        }
        let slot = known.and_then(|i| self.chans.slots.get(i));
        let ends_known = slot.is_some_and(|s| s.ends_known);
        // The device that sent it, when it is a learned one with a state.
        let device = match slot {
            Some(s) if o.src() == ch.client => s.client_device,
            Some(s) => s.server_device,
            None => self.device_index.get(&o.src()).copied(),
        };
        let new_device = self.check_assets(o, ends_known, device, out);
        // A new device makes its channel new: only the device is reported (one PDU, one
        // account), and no text is built for what would be dropped.
        if known.is_none() && !new_device && !background(ch) {
            self.new_channel(o, out);
        }
        // A learned channel always keeps runtime state (the baseline bounds them). Past the
        // bound, a channel learning never saw and that has none is checked against the
        // baseline all the same (functions, ranges, values, scans): only its timing (rates,
        // timeouts, latency, behaviour window) is not kept. A flood of new clients must not
        // blind the integrity checks.
        let tracked = known.is_some()
            || self.chans.others.len() < MAX_RUNTIME_CHANNELS
            || self.chans.others.contains_key(ch);
        if !tracked {
            self.untracked_channels += 1;
        }
        match o.kind {
            Kind::Request => self.request(o, known, tracked, out),
            Kind::Response | Kind::Unsolicited => self.response(o, known, tracked, out),
            Kind::Conversation => self.conversation(o, known.is_some(), out),
        }
        if let Some(d) = device {
            self.across.heard(d, o);
        }
    }

    /// `new_channel` for `o`, whose channel learning never saw (out of line, as the texts
    /// below).
    #[cold]
    #[inline(never)]
    fn new_channel(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        let ch = &o.channel;
        let severity = if ch.proto.is_ot() {
            Severity::High
        } else {
            Severity::Medium
        };
        if let Some(mut a) = fresh_channel(&mut self.raised, o, ("new_channel", severity), out) {
            a.message = format!("{ch}: a conversation learning never saw");
            *a.learned = json!({});
            capped_list(
                &mut a.learned,
                "server_clients",
                self.baseline
                    .channels
                    .iter()
                    .filter(|c| c.channel.server == ch.server && c.channel.proto == ch.proto)
                    .map(|c| c.channel.client)
                    .collect::<BTreeSet<_>>(),
            );
            *a.observed = json!({"client": ch.client, "server": ch.server, "proto": ch.proto, "unit": ch.unit_text()});
            out.push(a);
        }
    }

    fn conversation(&mut self, o: &Observation, known: bool, out: &mut Vec<Alert>) {
        let ch = &o.channel;
        if !known && !background(ch) {
            self.across
                .scan(o, &mut None, ScanNew::default(), &mut self.raised, out);
        }
    }

    /// A request: its function, a write by a client that never wrote, the addresses it
    /// touches, the values it writes, scanning, the request rate and the poll cycle (the rate
    /// only for a channel with runtime state, `tracked`). The checks that read the channel's
    /// model find it in the baseline themselves ([`Detector::model`]): a second handle on the
    /// baseline for the request touched its reference count twice, atomic operations that
    /// wait for all pending stores.
    fn request(
        &mut self,
        o: &Observation,
        known: Option<usize>,
        tracked: bool,
        out: &mut Vec<Alert>,
    ) {
        let slot = known.and_then(|i| self.chans.slots.get_mut(i));
        let held = match slot {
            Some(s) if !self.check_all => s.clean.holds(o),
            _ => None,
        };
        if held.is_some() {
            // The checks below found nothing in this very request: they would again.
            self.check_values(o, known, out);
        } else {
            let (function_known, new_unit, unauthorized) = self.check_function(o, known, out);
            let new_addresses = self.check_ranges(o, known, unauthorized, out);
            let clean = function_known && !new_unit && !unauthorized && new_addresses.is_empty();
            // Written values against the point envelopes.
            self.check_values(o, known, out);
            self.note_scan(o, known, !function_known, new_unit, new_addresses, out);
            // (Checking every request, nothing is looked up: nothing is held.)
            let slot = known.and_then(|i| self.chans.slots.get_mut(i));
            if let (true, false, Some(s)) = (clean, self.check_all, slot) {
                s.clean.hold(o, &mut self.clean_held, &s.polls);
            }
        }
        if tracked {
            self.check_rate(o, (known, held), out);
        }
        self.check_poll(o, (known, held), out);
    }

    /// The model of a learned channel (`known`: its place in the baseline).
    fn model(baseline: &Baseline, known: Option<usize>) -> Option<&ChannelModel> {
        known.map(|i| &baseline.channels[i])
    }

    /// A response: its values, then (`tracked`: a channel with runtime state) what it answers,
    /// exception bursts and latency.
    fn response(
        &mut self,
        o: &Observation,
        known: Option<usize>,
        tracked: bool,
        out: &mut Vec<Alert>,
    ) {
        let ch = &o.channel;
        self.check_values(o, known, out);
        if !tracked {
            return;
        }
        let model = known.map(|i| &self.baseline.channels[i]);
        let at = self.chans.place(ch, known);
        let rt = self.chans.rt(ch, known);
        set_source(&mut rt.source, &o.source);
        rt.ports = o.ports.map(Ports::reversed).or(rt.ports);
        let matched = if o.kind == Kind::Response {
            rt.pending.response(o)
        } else {
            None
        };
        let latency = matched.map(|m| m.0);
        into_window(
            &mut self.windows,
            &self.baseline,
            &self.weak_channels,
            (at, &mut *rt),
            (o, latency, None),
            out,
        );
        if o.exception {
            let n = rt.exc_rate.add(o.ts);
            let learned = model.map_or(0, |m| m.max_exceptions_per_window);
            let limit = learned.saturating_mul(2).max(learned.saturating_add(5));
            if n > limit {
                exception_burst(&mut self.raised, o, (n, learned, limit), out);
            }
        }
        let Some((latency, req_frame)) = matched else {
            return;
        };
        // A channel's model is the same for all its responses: each latency is classed once.
        let l = model.and_then(|m| m.latency.as_ref());
        let slow = |v: f64| l.is_some_and(|l| slowed(l, v));
        let oldest = rt.recent.push(latency);
        rt.slow_recent += usize::from(slow(latency));
        if let Some(v) = oldest {
            rt.slow_recent = rt.slow_recent.saturating_sub(usize::from(slow(v)));
        }
        let Some(l) = l else {
            return;
        };
        if l.samples < 20 || rt.recent.len < LATENCY_RECENT || rt.slow_recent == 0 {
            return;
        }
        if let Some(median) = recent_slowdown(l, rt.recent.as_slice()) {
            latency_shift(&mut self.raised, o, l, (median, latency, req_frame), out);
        }
    }
}

// The alerts' texts are built out of line (cold), apart from the checks that raise them: inlined,
// they made the hot paths' functions large and their frames fat for code that seldom runs.

/// `exception_burst` for the response `o`: `n` exceptions in the rate window, `learned` at
/// most in learning, over `limit`.
#[cold]
#[inline(never)]
fn exception_burst(
    raised: &mut Raised,
    o: &Observation,
    (n, learned, limit): (u64, u64, u64),
    out: &mut Vec<Alert>,
) {
    let ch = &o.channel;
    let kind = ("exception_burst", Severity::Medium);
    if let Some(mut a) = fresh_channel(raised, o, kind, out) {
        a.message = format!(
            "{ch}: {n} exception responses in {} s, learned at most {learned}",
            crate::learn::RATE_WINDOW_SECS
        );
        *a.learned = json!({"max_exceptions_per_window": learned, "limit": limit});
        *a.observed = json!({"exceptions_in_window": n});
        out.push(a);
    }
}

/// `latency_shift` for the response `o`: the `median` of the last latencies against the
/// learned `l`, with the last one (`latency`) and its request's frame.
#[cold]
#[inline(never)]
fn latency_shift(
    raised: &mut Raised,
    o: &Observation,
    l: &LatencyModel,
    (median, latency, req_frame): (f64, f64, u64),
    out: &mut Vec<Alert>,
) {
    let ch = &o.channel;
    if let Some(mut a) = fresh_channel(raised, o, ("latency_shift", Severity::Medium), out) {
        a.message = format!(
            "{ch}: response time up: median of the last {LATENCY_RECENT} is {:.1} ms, learned p50 {:.1} ms, p99 {:.1} ms",
            median * 1e3,
            l.p50 * 1e3,
            l.p99 * 1e3
        );
        a.frames = smallvec::smallvec![req_frame, o.frame];
        *a.learned = json!({"p50_s": l.p50, "p95_s": l.p95, "p99_s": l.p99, "max_s": l.max});
        *a.observed = json!({"median_s": median, "last_s": latency, "responses": LATENCY_RECENT});
        out.push(a);
    }
}

/// One PDU, one account: drops the alerts a stronger one on the same PDU implies. A new device
/// makes its channel new; an unauthorized write is also a new function and a write outside the
/// learned ranges; a PLC stop, start, download or restart command is also a (new) write.
pub(crate) fn suppress_implied(found: &mut Found) {
    if found.len() < 2 {
        return;
    }
    // One pass over the types (a flood has several candidates per PDU, mostly implying
    // nothing): what implies something.
    let (mut new_asset, mut command, mut unauthorized) = (false, false, false);
    let types = found.alerts.iter().map(|a| a.r#type);
    for t in types.chain(found.bare.iter().map(|b| b.key.type_name())) {
        match t {
            "new_asset" => new_asset = true,
            "plc_stop"
            | "plc_start"
            | "program_download"
            | "program_upload"
            | "device_restart_command" => command = true,
            "unauthorized_write" => unauthorized = true,
            _ => {}
        }
    }
    let unauthorized = !command && unauthorized;
    if !(new_asset || command || unauthorized) {
        return;
    }
    let implied = |t: &str, key: &AlertKey| {
        (new_asset && t == "new_channel")
            || (command && matches!(t, "unauthorized_write" | "new_function_code"))
            || (unauthorized && t == "new_function_code")
            || (unauthorized && t == "address_out_of_range" && key.extra() & 1 == 1)
    };
    let Found { alerts, bare, .. } = found;
    // The bare ones keep their places among the whole alerts that stay.
    let (mut next, mut i, mut kept) = (0, 0, 0);
    alerts.retain(|a| {
        while let Some(b) = bare.get_mut(next).filter(|b| b.at as usize <= i) {
            b.at = kept;
            next += 1;
        }
        i += 1;
        let keep = !implied(a.r#type, &a.key);
        kept += u32::from(keep);
        keep
    });
    for b in &mut bare[next..] {
        b.at = kept;
    }
    bare.retain(|b| !implied(b.key.type_name(), &b.key));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass suppression drops what the rules (a command implies the write and the new
    /// function it is; a new asset its new channels; an unauthorized write its new function
    /// and its write out of range) drop, over every subset of the types involved, with the
    /// rules written out as they were before the one pass.
    #[test]
    fn implied_alerts_are_dropped_as_the_rules_say() {
        let types = [
            "new_asset",
            "new_channel",
            "plc_stop",
            "program_download",
            "device_restart_command",
            "unauthorized_write",
            "new_function_code",
            "address_out_of_range",
            "value_out_of_range",
        ];
        let reference = |alerts: &[Alert]| -> Vec<(&'static str, u64)> {
            let has = |t: &str| alerts.iter().any(|x| x.r#type == t);
            let new_asset = has("new_asset");
            let command = [
                "plc_stop",
                "plc_start",
                "program_download",
                "program_upload",
                "device_restart_command",
            ]
            .iter()
            .any(|t| has(t));
            let unauthorized = !command && has("unauthorized_write");
            alerts
                .iter()
                .filter(|a| {
                    !((new_asset && a.r#type == "new_channel")
                        || (command
                            && matches!(a.r#type, "unauthorized_write" | "new_function_code"))
                        || (unauthorized && a.r#type == "new_function_code")
                        || (unauthorized
                            && a.r#type == "address_out_of_range"
                            && a.key.extra() & 1 == 1))
                })
                .map(|a| (a.r#type, a.key.extra()))
                .collect()
        };
        let ch = Channel {
            proto: Proto::Modbus,
            client: [10, 0, 0, 1].into(),
            server: [10, 0, 0, 2].into(),
            unit: 1,
        };
        let mut dropped = 0;
        for set in 0u32..1 << (types.len() + 1) {
            let alerts: Vec<Alert> = types
                .iter()
                .enumerate()
                .filter(|(i, _)| set & 1 << i != 0)
                .map(|(_, &t)| {
                    // A write's range alert has the low bit of `extra` set.
                    let extra = u64::from(set >> types.len());
                    let key = AlertKey::channel(t, &ch, extra);
                    Alert::new(None, key, Severity::High, ch.proto, ch.client, ch.server, 0)
                })
                .collect();
            let want = reference(&alerts);
            // Each candidate whole, or bare (an occurrence of a cause already raised), in
            // several mixes: what is dropped, and the order of what stays, do not depend on it.
            for mix in [0u32, u32::MAX, 0x5555_5555, 0xaaaa_aaaa, set.rotate_left(7)] {
                let mut found = Found::default();
                for (i, a) in alerts.iter().enumerate() {
                    if mix & 1 << i == 0 {
                        found.alerts.push(a.clone());
                        continue;
                    }
                    found.bare.push(Bare {
                        key: a.key,
                        ts: 0,
                        frame: 0,
                        src_ip: a.src_ip,
                        dst_ip: a.dst_ip,
                        ports: None,
                        severity: a.severity,
                        proto: a.proto,
                        at: found.alerts.len() as u32,
                    });
                }
                suppress_implied(&mut found);
                let got: Vec<_> = (found.to_alerts().iter())
                    .map(|a| (a.r#type, a.key.extra()))
                    .collect();
                assert_eq!(got, want, "types {set:#b}, bare {mix:#b}");
                assert!(
                    found.bare.windows(2).all(|w| w[0].at <= w[1].at)
                        && found
                            .bare
                            .last()
                            .is_none_or(|b| b.at as usize <= found.alerts.len()),
                    "places out of order: {:?}",
                    found.bare
                );
                dropped += usize::from(got.len() < alerts.len());
            }
        }
        assert!(dropped > 500, "the rules dropped little: {dropped}");
    }

    /// The shortcut over the window's largest value gives what the median of the sorted window
    /// gives, over random windows and models (latencies from 0.1 ms to 1 s, skewed windows
    /// included).
    #[test]
    fn recent_slowdown_agrees_with_the_sorted_median() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut shifts = 0;
        for _ in 0..20_000 {
            let p50 = 1e-4 + next() * 0.2;
            let p99 = p50 * (1.0 + 4.0 * next());
            let l = LatencyModel {
                samples: 100,
                p50,
                p95: p99,
                p99,
                max: p99 * 1.5,
            };
            let scale = [0.01, 0.2, 1.0, 3.0, 10.0][(next() * 5.0) as usize % 5];
            let window: Vec<f64> = (0..LATENCY_RECENT)
                .map(|_| p50 * scale * (0.2 + 2.0 * next()))
                .collect();
            let mut sorted = window.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            let expected = slowed(&l, median).then_some(median);
            assert_eq!(recent_slowdown(&l, &window), expected, "{l:?} {window:?}");
            shifts += usize::from(expected.is_some());
        }
        assert!(shifts > 1000, "the cases include shifts: {shifts}");
        assert_eq!(
            recent_slowdown(
                &LatencyModel {
                    samples: 1,
                    p50: 0.1,
                    p95: 0.1,
                    p99: 0.1,
                    max: 0.1
                },
                &[]
            ),
            None
        );
    }

    /// A read by `client` (10.0.0.x) from one PLC of holding registers from `start`.
    use crate::obs::register_read as read;

    const T0: i64 = 1_700_000_000 * NANOS;

    /// An engine detecting against what it learned from 40 s of a triangle 0..=10..=0 (steps of
    /// 1) read by client 1 at register 100 and, with `second`, by client 2 at 99..=100.
    fn engine_after_a_triangle(second: bool) -> crate::engine::Engine {
        use crate::engine::{Engine, EngineConfig};
        Engine::detecting(baseline_after_a_triangle(second), EngineConfig::default())
    }

    /// The baseline of [`engine_after_a_triangle`].
    fn baseline_after_a_triangle(second: bool) -> Baseline {
        use crate::engine::{Engine, EngineConfig};
        let mut learner = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        for i in 0..40 {
            let k = i % 20;
            let v = f64::from(if k <= 10 { k } else { 20 - k });
            let ts = T0 + i64::from(i) * NANOS;
            learner.observe(&read(1, 100, &[v], ts), &mut out);
            if second {
                learner.observe(&read(2, 99, &[v, v], ts + 1000), &mut out);
            }
        }
        learner.finish(&mut out).expect("a baseline")
    }

    /// Value alerts raised by one observation.
    fn value_alerts(engine: &mut crate::engine::Engine, o: Observation) -> usize {
        let mut out = Vec::new();
        engine.observe(&o, &mut out);
        out.iter()
            .filter(|a| a.r#type == "value_out_of_range")
            .count()
    }

    /// The memo of unchanged reads never hides a change: once another read (of another block,
    /// by another client) moved the point's last value, the same values again are checked
    /// again, and the jump raises.
    #[test]
    fn an_unchanged_read_is_checked_again_once_the_point_moved() {
        let mut engine = engine_after_a_triangle(true);
        let t1 = T0 + 100 * NANOS;
        // 25 is outside the learned 0..=10 by the soft margin only: not an alarm without a jump
        // (no previous value), nor when it repeats.
        assert_eq!(value_alerts(&mut engine, read(1, 100, &[25.0], t1)), 0);
        assert_eq!(
            value_alerts(&mut engine, read(1, 100, &[25.0], t1 + 1000)),
            0
        );
        // Client 2 reads registers 99..=100 and finds 100 at 5: client 1's same 25 is now a jump.
        assert_eq!(
            value_alerts(&mut engine, read(2, 99, &[5.0, 5.0], t1 + 2000)),
            0
        );
        assert_eq!(
            value_alerts(&mut engine, read(1, 100, &[25.0], t1 + 3000)),
            1
        );
    }

    /// A read by client 1 of registers 100, 101, … whose values `vs` are held as `form`: one
    /// access each, as numbers, bytes (an S7 byte run) or big-endian words (a Modbus register).
    fn read_held(form: u8, vs: &[u8], ts: i64) -> Observation {
        let mut o = read(1, 100, &[], ts);
        o.accesses.clear();
        for (i, &v) in vs.iter().enumerate() {
            let values = match form {
                0 => crate::obs::ValuesAt::push(&mut o.values, [f64::from(v)]),
                1 => crate::obs::ValuesAt::push_bytes(&mut o.bytes, &[v]),
                _ => crate::obs::ValuesAt::push_words(&mut o.bytes, &[[0, v]]),
            };
            o.accesses.push(crate::obs::Access {
                space: 4,
                start: 100 + i as u32,
                count: 1,
                write: false,
                values,
            });
        }
        o
    }

    /// The memo of unchanged reads compares their values exactly however they are held, access
    /// by access: a read of the same layout as one remembered, with one value changed (of its
    /// first access or of its second), is checked, and raises.
    #[test]
    fn the_memo_compares_values_in_every_form() {
        use crate::engine::{Engine, EngineConfig};
        for form in 0..3 {
            let mut learner = Engine::learning(EngineConfig::default());
            let mut out = Vec::new();
            for i in 0..40u8 {
                let k = i % 20;
                let v = if k <= 10 { k } else { 20 - k };
                let ts = T0 + i64::from(i) * NANOS;
                learner.observe(&read_held(form, &[v, v], ts), &mut out);
            }
            let mut d = Detector::new(learner.finish(&mut out).expect("a baseline"));
            let t1 = T0 + 100 * NANOS;
            let mut k = 0;
            let mut candidates = |d: &mut Detector, vs: &[u8]| {
                let mut out = Vec::new();
                k += 1;
                d.observe(&read_held(form, vs, t1 + k * 1000), &mut out);
                out.iter()
                    .filter(|a| a.r#type == "value_out_of_range")
                    .count()
            };
            let remembered = |d: &Detector| d.points.iter().map(|s| s.memo.len()).sum::<usize>();
            for changed in [[200, 5], [5, 200]] {
                // The second read of the same values changes no point: it is remembered, and
                // the third is found in the memo.
                assert_eq!(candidates(&mut d, &[5, 5]), 0, "form {form}");
                assert_eq!(candidates(&mut d, &[5, 5]), 0, "form {form}");
                assert_eq!(remembered(&d), 1, "form {form}");
                let hits = d.memo_hits;
                assert_eq!(candidates(&mut d, &[5, 5]), 0, "form {form}");
                assert_eq!(d.memo_hits, hits + 1, "form {form}");
                assert_eq!(candidates(&mut d, &changed), 1, "form {form} {changed:?}");
                assert_eq!((remembered(&d), d.memo_hits), (0, hits + 1), "form {form}");
            }
        }
    }

    /// A read that carries one point twice (overlapping S7 items, repeated DNP3 events) leaves
    /// the point at its second value: the same read again is a jump from that value, and must
    /// be checked, not remembered as unchanged.
    #[test]
    fn a_read_that_moves_its_own_point_is_checked_again() {
        let mut engine = engine_after_a_triangle(false);
        let twice = |ts: i64| {
            let mut o = read(1, 100, &[25.0], ts);
            let a = o.accesses[0];
            o.push_access(a.space, a.start, a.count, a.write, [0.0]);
            o
        };
        let t1 = T0 + 100 * NANOS;
        // 25 with no previous value: no jump. Then 0, in the envelope.
        assert_eq!(value_alerts(&mut engine, twice(t1)), 0);
        // Again: 25 after 0 is a jump outside the soft margin.
        assert_eq!(value_alerts(&mut engine, twice(t1 + 1000)), 1);
    }

    /// A value outside its point's bounds is a candidate every time it is read, however often
    /// it repeats; the same value inside them again (which the check passes over:
    /// `PointHot::quiet`) raises nothing, and a value that then leaves them raises at once.
    #[test]
    fn a_value_outside_is_raised_each_time_it_is_read() {
        let mut d = Detector::new(baseline_after_a_triangle(false));
        let t1 = T0 + 100 * NANOS;
        // As the engine takes them: whole alerts (their causes marked raised after), and bare
        // occurrences of causes marked already.
        let mut candidates = |v: f64, k: i64| {
            let mut out = Vec::new();
            d.observe(&read(1, 100, &[v], t1 + k * 1000), &mut out);
            let mut bare = Vec::new();
            d.take_bare(&mut bare);
            for a in &out {
                d.mark_raised(a.key);
            }
            let types = out.iter().map(|a| a.r#type);
            types
                .chain(bare.iter().map(|b| b.key.type_name()))
                .filter(|&t| t == "value_out_of_range")
                .count()
        };
        assert_eq!(candidates(5.0, 0), 0);
        assert_eq!(candidates(5.0, 1), 0);
        // The same read again and again: the first raises its text, the next ones are bare.
        for k in 2..6 {
            assert_eq!(candidates(500.0, k), 1, "read {k}");
        }
        // Back inside: a jump is looked for only outside the soft bounds.
        assert_eq!(candidates(5.0, 6), 0);
        assert_eq!(candidates(5.0, 7), 0);
        assert_eq!(candidates(-500.0, 8), 1);
    }

    /// A panic caught in the middle of an observation leaves what it had found behind: the
    /// next observation's candidates do not take its bare occurrences, as they never took its
    /// whole alerts (the engine clears those).
    #[test]
    fn a_cut_short_observation_leaves_no_bare_occurrence_behind() {
        let mut d = Detector::new(baseline_after_a_triangle(false));
        let t1 = T0 + 100 * NANOS;
        let o = read(1, 100, &[5.0], t1);
        let key = AlertKey::channel("value_out_of_range", &o.channel, 7);
        d.raised.bare.push(Bare {
            key,
            ts: o.ts,
            frame: o.frame,
            src_ip: o.src(),
            dst_ip: o.dst(),
            ports: None,
            severity: Severity::High,
            proto: o.channel.proto,
            at: 3,
        });
        let mut out = Vec::new();
        d.observe(&o, &mut out);
        let mut bare = Vec::new();
        d.take_bare(&mut bare);
        assert!(out.is_empty() && bare.is_empty(), "{out:?} {bare:?}");
    }

    /// A NaN is outside every envelope (no comparison holds for it: a NaN setpoint makes the
    /// PLC's own comparisons all false), each time it comes, and it leaves the point's last
    /// value as it was: the next value's step counts from the last number. A point learned from
    /// fewer than three samples is checked for nothing, a NaN neither.
    #[test]
    fn a_nan_is_outside_every_envelope() {
        let mut d = Detector::new(baseline_after_a_triangle(false));
        let t1 = T0 + 100 * NANOS;
        let mut candidates = |address: u32, v: f64, k: i64| {
            let mut out = Vec::new();
            d.observe(&read(1, address, &[v], t1 + k * 1000), &mut out);
            out.iter()
                .filter(|a| a.r#type == "value_out_of_range")
                .count()
        };
        assert_eq!(candidates(100, 5.0, 0), 0);
        assert_eq!(candidates(100, f64::NAN, 1), 1);
        assert_eq!(candidates(100, f64::NAN, 2), 1);
        // 6 after 5 (the NaNs left no step): inside.
        assert_eq!(candidates(100, 6.0, 3), 0);
        // Register 101 was learned from no value: nothing is checked there.
        assert_eq!(candidates(101, f64::NAN, 4), 0);
        // A NaN read after a flagged write of the point is that write's effect (the third
        // review of 2026-12-06): the write raises, the read nothing more.
        let mut engine = engine_after_a_triangle(false);
        let mut write = read(1, 100, &[f64::NAN], t1);
        (write.kind, write.accesses[0].write) = (Kind::Request, true);
        assert_eq!(value_alerts(&mut engine, write), 1);
        assert_eq!(
            value_alerts(&mut engine, read(1, 100, &[f64::NAN], t1 + 1000)),
            0
        );
    }

    /// The cache of looked-up address runs is bounded: reads of ever new runs fill it and it is
    /// cleared, never held past its bound by more than one PDU's runs; and values are checked
    /// as before once it was cleared.
    #[test]
    fn the_run_cache_is_bounded() {
        let mut d = Detector::new(baseline_after_a_triangle(false));
        let mut out = Vec::new();
        let t1 = T0 + 100 * NANOS;
        let eight = [1.0; 8];
        let mut most = 0;
        for i in 0..40_000u32 {
            let ts = t1 + i64::from(i) * 1000;
            d.observe(&read(1, 1000 + 8 * i, &eight, ts), &mut out);
            most = most.max(d.run_elements);
        }
        assert!(most <= values::MAX_RUN_ELEMENTS + eight.len(), "{most}");
        assert!(
            most > values::MAX_RUN_ELEMENTS - eight.len(),
            "{most}: it filled"
        );
        assert!(d.run_elements < most, "it was cleared");
        out.clear();
        let t2 = t1 + 100 * NANOS;
        d.observe(&read(1, 100, &[5.0], t2), &mut out);
        d.observe(&read(1, 100, &[25.0], t2 + 1000), &mut out);
        let jumps = out
            .iter()
            .filter(|a| a.r#type == "value_out_of_range")
            .count();
        assert_eq!(jumps, 1);
    }

    /// A request of a learned channel that the function, unit, writer and address checks
    /// found nothing in is held and not checked again ([`CleanRequests`]); a request that
    /// differs from it in any of what those checks read (its function, whether it writes, its
    /// accesses' number, space, start, count and write, member functions) is checked, and
    /// raises, each time, however often the clean one came before and after it. More clean
    /// requests than a channel holds, in turn, raise nothing.
    #[test]
    fn a_request_like_a_clean_one_is_still_checked() {
        use crate::engine::{Engine, EngineConfig};
        // A request by client `10.0.0.<client>` of function `function` (`write`: whether it
        // writes), with `accesses` (space, start, count, write) and `members`.
        struct Req {
            client: u8,
            function: u32,
            write: bool,
            accesses: Vec<(u32, u32, u32, bool)>,
            members: Vec<u32>,
        }
        let req = |client, function, write, accesses: &[(u32, u32, u32, bool)]| Req {
            client,
            function,
            write,
            accesses: accesses.to_vec(),
            members: Vec::new(),
        };
        let mut frame = 0;
        let mut observation = |r: &Req, ts: i64| {
            let channel = Channel {
                proto: Proto::Modbus,
                client: IpAddr::from([10, 0, 0, r.client]),
                server: IpAddr::from([192, 168, 1, 10]),
                unit: 1,
            };
            frame += 1;
            let mut o = Observation::new(ts, Arc::from("t"), frame, channel, Kind::Request, 0);
            o.function = r.function;
            o.write = r.write;
            for &(space, start, count, write) in &r.accesses {
                o.push_access(space, start, count, write, std::iter::empty());
            }
            o.members.clone_from(&r.members);
            o
        };
        // Learned, each once a second: client 1 reads holding registers 100..=109 and 20
        // blocks from 210; client 2 writes 300..=309 and reads 400..=409.
        let read = |k: u32| {
            req(
                1,
                3,
                false,
                &[(4, if k == 0 { 100 } else { 200 + 10 * k }, 10, false)],
            )
        };
        let write = req(2, 16, true, &[(4, 300, 10, true)]);
        let mut learner = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        for i in 0..40 {
            let second = T0 + i64::from(i) * NANOS;
            for k in 0..=20u32 {
                learner.observe(
                    &observation(&read(k), second + i64::from(k) * 1000),
                    &mut out,
                );
            }
            learner.observe(&observation(&write, second + 100_000), &mut out);
            let other = req(2, 3, false, &[(4, 400, 10, false)]);
            learner.observe(&observation(&other, second + 200_000), &mut out);
        }
        let baseline = learner.finish(&mut out).expect("a baseline");
        let mut ts = T0 + 41 * NANOS;
        // The integrity alerts the detector itself raises: each occurrence of a cause comes
        // as a whole alert (an engine raises a cause's first, and counts the others). Timing
        // alerts (the polls, as the steps here are not learning's) are not what is tested.
        let mut raised = |detector: &mut Detector, r: &Req| {
            ts += NANOS;
            let mut out = Vec::new();
            detector.observe(&observation(r, ts), &mut out);
            out.into_iter()
                .map(|a| a.r#type)
                .filter(|t| {
                    [
                        "address_out_of_range",
                        "unauthorized_write",
                        "new_function_code",
                    ]
                    .contains(t)
                })
                .collect::<Vec<_>>()
        };
        // Each differs from a learned request (client 1's first read, or client 2's write) in
        // one thing the checks read.
        let mut with_member = read(0);
        with_member.members = vec![77];
        let differing = [
            (
                read(0),
                req(1, 3, false, &[(4, 100, 20, false)]),
                "address_out_of_range",
            ),
            (
                read(0),
                req(1, 3, false, &[(4, 150, 10, false)]),
                "address_out_of_range",
            ),
            (
                read(0),
                req(1, 3, false, &[(3, 100, 10, false)]),
                "address_out_of_range",
            ),
            (
                read(0),
                req(1, 3, false, &[(4, 100, 10, false), (4, 150, 10, false)]),
                "address_out_of_range",
            ),
            (
                read(0),
                req(1, 16, true, &[(4, 100, 10, true)]),
                "unauthorized_write",
            ),
            // A function that writes, by what it is, the registers it names as read.
            (
                read(0),
                req(1, 3, true, &[(4, 100, 10, false)]),
                "unauthorized_write",
            ),
            (
                read(0),
                req(1, 4, false, &[(4, 100, 10, false)]),
                "new_function_code",
            ),
            (read(0), with_member, "new_function_code"),
            // The learned writer's write, its access a read.
            (
                write,
                req(2, 16, true, &[(4, 300, 10, false)]),
                "address_out_of_range",
            ),
        ];
        let mut detector = Detector::new(baseline.clone());
        for (clean, other, expected) in &differing {
            for _ in 0..3 {
                assert_eq!(raised(&mut detector, clean), Vec::<&str>::new());
            }
            for _ in 0..2 {
                let types = raised(&mut detector, other);
                assert!(types.contains(expected), "{}: {types:?}", other.function);
            }
            assert_eq!(raised(&mut detector, clean), Vec::<&str>::new());
        }
        // All 21 learned reads in turn, more than a channel holds: nothing.
        let mut detector = Detector::new(baseline);
        for _ in 0..3 {
            for k in 0..=20 {
                assert_eq!(raised(&mut detector, &read(k)), Vec::<&str>::new(), "{k}");
            }
        }
    }

    /// A request a channel holds as clean goes into its behaviour window and its poll as any
    /// request does: the window's counts, functions and addresses and the polls' state are
    /// those of a detector that checks every request, PDU by PDU, across windows ended by a
    /// PDU and by a tick, with requests that are not held in between.
    #[test]
    fn a_held_request_counts_in_its_window_and_poll() {
        use crate::engine::{Engine, EngineConfig};
        let mut frame = 0;
        let mut observation = |function: u32, start: u32, count: u32, ts: i64| {
            let channel = Channel {
                proto: Proto::Modbus,
                client: IpAddr::from([10, 0, 0, 1]),
                server: IpAddr::from([192, 168, 1, 10]),
                unit: 1,
            };
            frame += 1;
            let mut o = Observation::new(ts, Arc::from("t"), frame, channel, Kind::Request, 0);
            o.function = function;
            o.write = function == 16;
            o.push_access(4, start, count, o.write, std::iter::empty());
            o
        };
        // Learned: three reads a second, each its own poll.
        let mut learner = Engine::learning(EngineConfig::default());
        let mut out = Vec::new();
        for i in 0..40 {
            for (k, start) in [100, 200, 300].into_iter().enumerate() {
                let ts = T0 + i * NANOS + k as i64 * 1000;
                learner.observe(&observation(3, start, 10, ts), &mut out);
            }
        }
        let baseline = learner.finish(&mut out).expect("a baseline");
        assert_eq!(baseline.channels.len(), 1);
        assert_eq!(baseline.channels[0].polls.len(), 3, "a poll per read");
        // What a slot's window and polls hold.
        let state = |d: &mut Detector| {
            let s = &mut d.chans.slots[0];
            let w = &mut s.rt.window;
            let polls: Vec<_> = (s.polls.iter())
                .map(|(k, p)| (*k, p.last, p.missing_alerted, p.broken.clone()))
                .collect();
            let features = w.features().map(f64::to_bits);
            (
                features,
                w.first_frame,
                w.last_frame,
                s.rt.window_end,
                polls,
            )
        };
        let mut held = Detector::new(baseline.clone());
        let mut every = Detector::new(baseline);
        every.check_every_request();
        let mut ts = T0 + 41 * NANOS;
        // (function, start, count, seconds after the one before); a tick where the function
        // is 0.
        let steps = [
            (3, 100, 10, 0.5),
            (3, 200, 10, 0.001),
            (3, 100, 10, 0.3),
            (3, 300, 10, 0.7),
            (3, 100, 10, 0.001),
            (3, 100, 12, 0.2),  // out of range: not held
            (16, 200, 10, 0.2), // a write: not held
            (3, 200, 10, 0.1),
            (3, 300, 10, 6.0), // the window ended: a new one
            (3, 300, 10, 0.001),
            (3, 100, 10, 0.4),
            (0, 0, 0, 7.0), // a tick past the window's end
            (3, 100, 10, 0.01),
            (3, 200, 10, 0.5),
            (3, 100, 10, 0.5),
            (3, 100, 10, 1.0),
            (3, 200, 10, 4.0),
            (3, 100, 10, 1.0),
        ];
        // Requests held, and those of them counted again in the window they were counted in.
        let (mut hits, mut again) = (0, 0);
        for (i, &(function, start, count, after)) in steps.iter().enumerate() {
            ts += (after * NANOS as f64) as i64;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            if function == 0 {
                held.tick(ts, &mut a);
                every.tick(ts, &mut b);
            } else {
                let o = observation(function, start, count, ts);
                let s = &held.chans.slots[0];
                let stamp = s.clean.held.iter().find(|c| c.is(&o)).map(|c| c.window);
                let generation = s.rt.window_gen;
                held.observe(&o, &mut a);
                every.observe(&o, &mut b);
                hits += usize::from(stamp.is_some());
                let same = held.chans.slots[0].rt.window_gen == generation;
                again += usize::from(stamp == Some(generation) && same);
            }
            let types = |v: Vec<Alert>| v.into_iter().map(|a| a.r#type).collect::<Vec<_>>();
            assert_eq!(types(a), types(b), "step {i}");
            assert_eq!(state(&mut held), state(&mut every), "step {i}");
        }
        // The steps reach the held requests, in a window they were counted in and not.
        assert!(
            hits >= 10 && again >= 3,
            "{hits} held, {again} counted again"
        );
    }
}
