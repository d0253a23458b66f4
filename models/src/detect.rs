//! Scoring observations against a [`Baseline`]: the baseline-relative integrity and availability
//! checks. Commands, malformed PDUs and CRC errors are raised by the engine in every phase.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;

use crate::alert::{capped_list, Alert, AlertKey, Severity};
use crate::baseline::{Baseline, ChannelModel, LatencyModel, PollModel};
use crate::behaviour::WindowAcc;
use crate::learn::{poll_key, FastMap, FastSet, Pending, PollKey, RateCounter};
use crate::obs::{Channel, Kind, Observation, Ports, Proto};
use crate::ranges::Ranges;
use crate::{secs, NANOS};

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
/// Timers (timeouts, missed polls, silence) are checked at most this often in capture time.
const TICK: i64 = NANOS / 4;
/// Causes whose text was built, remembered at most.
const MAX_RAISED: usize = 100_000;
/// Bounds on runtime state for channels and clients learning never saw.
const MAX_RUNTIME_CHANNELS: usize = 20_000;
const MAX_SCAN_CLIENTS: usize = 10_000;
/// Accesses and values the value memo holds at most, in all (a cache: cleared when full); one
/// read larger than a sixteenth of it is not remembered. At most 32 bytes an element: 8 MiB.
const MAX_MEMO_ELEMENTS: usize = 256 * 1024;

struct PointEnv {
    min: f64,
    max: f64,
    max_step: f64,
    samples: u64,
    /// The last value seen in detection.
    last: Option<f64>,
}

struct PollRt {
    model: PollModel,
    last: Option<(i64, u64)>,
    missing_alerted: bool,
    /// Time and frames (previous poll, this one) of its last `POLL_BROKEN` broken intervals.
    broken: VecDeque<(i64, (u64, u64))>,
}

#[derive(Default)]
struct ChanRt {
    known: Option<usize>,
    pending: Pending,
    recent: VecDeque<f64>,
    req_rate: RateCounter,
    exc_rate: RateCounter,
    window: WindowAcc,
    source: Option<Arc<str>>,
    /// The ports of its last PDU, from client to server.
    ports: Option<Ports>,
    /// Request time and frame of the channel's last `MIN_UNANSWERED` timeouts.
    timeouts: VecDeque<(i64, u64)>,
}

struct AssetRt {
    threshold: f64,
    last: i64,
    last_frame: u64,
    source: Option<Arc<str>>,
    proto: Proto,
    peer: Option<IpAddr>,
    silent: bool,
}

#[derive(Default)]
struct ScanRt {
    start: i64,
    units: FastSet<(IpAddr, u32)>,
    functions: FastSet<(IpAddr, u32)>,
    addresses: FastSet<(IpAddr, u32, u32)>,
    ports: FastSet<(IpAddr, u32)>,
    frames: Vec<u64>,
}

/// A server and unit with learned value envelopes.
#[derive(Default)]
struct ServerPoints {
    /// Envelope per point ([`point_key`]).
    points: FastMap<u64, PointEnv>,
    /// Bumped whenever one of its points' last value changes.
    epoch: u64,
    /// The last values checked per read (first space and address, accesses), when that check
    /// raised nothing; see [`Detector::check_values`].
    memo: FastMap<(u32, u32, usize), ValueMemo>,
}

fn point_key(space: u32, address: u32) -> u64 {
    u64::from(space) << 32 | u64::from(address)
}

/// What a read looked like when its values were last checked.
struct ValueMemo {
    epoch: u64,
    /// Space, start, count, write and number of values of every access.
    layout: Vec<(u32, u32, u32, bool, usize)>,
    /// Every value, in order, as bits (exact comparison).
    values: Vec<u64>,
}

impl ValueMemo {
    fn layout_of(a: &crate::obs::Access) -> (u32, u32, u32, bool, usize) {
        (a.space, a.start, a.count, a.write, a.values.len())
    }

    fn matches(&self, o: &Observation) -> bool {
        self.layout.len() == o.accesses.len()
            && self
                .layout
                .iter()
                .zip(&o.accesses)
                .all(|(l, a)| *l == Self::layout_of(a))
            && self.values.iter().copied().eq(o
                .accesses
                .iter()
                .flat_map(|a| a.values.iter().map(|v| v.to_bits())))
    }

    /// The memo of `o` (vectors of exactly its size).
    fn of(epoch: u64, o: &Observation) -> Self {
        ValueMemo {
            epoch,
            layout: o.accesses.iter().map(Self::layout_of).collect(),
            values: o
                .accesses
                .iter()
                .flat_map(|a| a.values.iter().map(|v| v.to_bits()))
                .collect(),
        }
    }

    /// What it holds, in elements (an access or a value), for the cache's bound.
    fn elements(&self) -> usize {
        self.layout.len() + self.values.len()
    }
}

pub struct Detector {
    pub baseline: Baseline,
    channels: FastMap<Channel, usize>,
    assets: FastSet<IpAddr>,
    /// Learned Ethernet addresses per asset (only assets learned with some).
    asset_macs: FastMap<IpAddr, Vec<[u8; 6]>>,
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
    /// (protocol, client, function) of every function a client used on a channel it wrote on:
    /// the write functions of the site's masters.
    fleet_writes: FastSet<(Proto, IpAddr, u32)>,
    client_servers: FastSet<(IpAddr, IpAddr, Proto, u32)>,
    /// Per server and unit with learned value envelopes: its points, their epoch, its memo.
    points: FastMap<(Proto, IpAddr, u32), ServerPoints>,
    polls: FastMap<(Channel, PollKey), PollRt>,
    rt: FastMap<Channel, ChanRt>,
    asset_rt: FastMap<IpAddr, AssetRt>,
    scans: FastMap<IpAddr, ScanRt>,
    /// Causes raised so far (their text was built once).
    raised: FastSet<AlertKey>,
    /// Elements held by the servers' value memos (their bound).
    memo_elements: usize,
    window_nanos: i64,
    window_index: Option<i64>,
    /// The window detection started in: partial, so not scored.
    first_window: Option<i64>,
    last_tick: i64,
    /// The earliest time a timer (timeout, missing poll, silence) can fire: ticks before it
    /// have nothing to do, so they cost a comparison, not a walk over every channel.
    next_due: i64,
    /// Channels whose current behaviour window has activity.
    active_windows: Vec<Channel>,
    started: bool,
    /// Observations of channels beyond `MAX_RUNTIME_CHANNELS` (no timing state kept for them).
    pub untracked_channels: u64,
    /// Times the scan table was full and started afresh.
    pub scan_resets: u64,
}

/// An alert about the PDU `o`.
/// A bare occurrence about the PDU `o` (no text yet).
pub(crate) fn alert(o: &Observation, key: AlertKey, severity: Severity) -> Alert {
    Alert {
        source: o.source.clone(),
        ports: o.ports,
        frames: vec![o.frame],
        ..Alert::new(key, severity, o.channel.proto, o.src(), o.dst(), o.ts)
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
    Alert {
        source: rt
            .and_then(|r| r.source.clone())
            .unwrap_or_else(|| Arc::from("")),
        ports: rt.and_then(|r| r.ports),
        ..Alert::new(key, severity, ch.proto, ch.client, ch.server, ts)
    }
}

/// The first occurrence of a cause is returned to have its text built; later ones go out bare
/// (the alert book keeps the first one's text), so a flood costs a lookup per PDU.
/// A cause the engine already put in the alert book goes out bare; otherwise the alert is
/// returned to have its text built.
fn fresh(raised: &mut FastSet<AlertKey>, a: Alert, out: &mut Vec<Alert>) -> Option<Alert> {
    if raised.contains(&a.key) {
        out.push(a);
        None
    } else {
        Some(a)
    }
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

/// How long a request on a channel may wait for its response.
fn timeout_of(base: &Baseline, known: Option<usize>) -> f64 {
    timeout_for(known.and_then(|i| base.channels[i].latency.as_ref()))
}

fn timeout_for(latency: Option<&LatencyModel>) -> f64 {
    latency.map_or(MIN_RESPONSE_TIMEOUT, |l| {
        (5.0 * l.max).max(MIN_RESPONSE_TIMEOUT)
    })
}

/// The least widening of a learned block within which a learned writer's write is operator
/// work on that block, not `address_out_of_range` (the widening is the block's own length when
/// larger): 16 registers, coils, bytes or bits.
const NEAR_MARGIN: u32 = 16;

/// Unanswered requests of a channel within `UNANSWERED_WINDOW` before `response_timeout`: one
/// lost request (a gateway dropping a frame, a retransmission the capture missed) is not an
/// incident; a device that stopped answering a poll of a second or a minute soon is one.
const MIN_UNANSWERED: usize = 3;
const UNANSWERED_WINDOW: i64 = 60 * NANOS;

/// A minute, or four periods of the channel's slowest learned poll (a device polled every
/// 30 s that stops answering is reported after its third silent poll).
fn unanswered_window(model: Option<&ChannelModel>) -> i64 {
    let slowest = model
        .and_then(|m| m.polls.iter().map(|p| p.period).reduce(f64::max))
        .unwrap_or(0.0);
    UNANSWERED_WINDOW.max(nanos(4.0 * slowest))
}

/// A channel that left at least half of its requests unanswered in learning (a unit
/// behind a gateway that never answers): its timeouts are its baseline, not an incident.
fn unanswered_in_learning(m: &ChannelModel) -> bool {
    m.unanswered > 0 && m.unanswered.saturating_mul(2) >= m.requests
}

/// How early or late a poll may be.
fn poll_tolerance(m: &PollModel) -> f64 {
    (4.0 * m.jitter).max(0.5 * m.period)
}

/// Broken intervals (early or late) of one poll within [`poll_window`] before
/// `poll_cycle_broken`: an operator's action that delays one cycle, or one lost request, is no
/// incident; a poll that breaks again within the minute (a PLC too busy to answer in time, a
/// master skipping every other cycle) is.
const POLL_BROKEN: usize = 2;

/// Ten periods, at least a minute.
fn poll_window(m: &PollModel) -> f64 {
    (10.0 * m.period).max(60.0)
}

/// A poll is missing (it stopped) when none came for three periods and the tolerance.
fn poll_missing_after(m: &PollModel) -> f64 {
    3.0 * m.period + poll_tolerance(m)
}

/// The poll's function, space and start address in one number (for its alert key).
fn poll_extra(m: &PollModel) -> u64 {
    u64::from(m.function) << 48 ^ u64::from(m.space) << 16 ^ u64::from(m.start)
}

impl Detector {
    pub fn new(baseline: Baseline) -> Self {
        let mut d = Detector {
            channels: FastMap::default(),
            assets: baseline.assets.iter().map(|a| a.ip).collect(),
            asset_macs: baseline
                .assets
                .iter()
                .filter(|a| !a.macs.is_empty())
                .map(|a| (a.ip, a.macs.iter().filter_map(|m| parse_mac(m)).collect()))
                .collect(),
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
            fleet_writes: FastSet::default(),
            client_servers: FastSet::default(),
            points: FastMap::default(),
            polls: FastMap::default(),
            rt: FastMap::default(),
            asset_rt: FastMap::default(),
            scans: FastMap::default(),
            raised: FastSet::default(),
            memo_elements: 0,
            window_nanos: baseline
                .behaviour
                .as_ref()
                .map_or(10 * NANOS, |m| (m.window * NANOS as f64) as i64)
                .max(NANOS),
            window_index: None,
            first_window: None,
            last_tick: i64::MIN,
            next_due: i64::MIN,
            active_windows: Vec::new(),
            started: false,
            untracked_channels: 0,
            scan_resets: 0,
            baseline,
        };
        let mut strong_pairs = FastSet::default();
        for c in &d.baseline.channels {
            let pair = (c.channel.proto, c.channel.client, c.channel.server);
            if c.under_learned() {
                d.weak_pairs.insert(pair);
            } else {
                strong_pairs.insert(pair);
            }
        }
        d.weak_pairs.retain(|p| !strong_pairs.contains(p));
        for (i, c) in d.baseline.channels.iter().enumerate() {
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
                for f in c.functions.keys() {
                    d.fleet_writes.insert((ch.proto, ch.client, *f));
                }
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
                d.points
                    .entry((ch.proto, ch.server, ch.unit))
                    .or_default()
                    .points
                    .insert(
                        point_key(p.space, p.address),
                        PointEnv {
                            min: p.min,
                            max: p.max,
                            max_step: p.max_step,
                            samples: p.samples,
                            last: None,
                        },
                    );
            }
            for p in &c.polls {
                d.polls.insert(
                    (ch, (p.function, p.space, p.start, p.count)),
                    PollRt {
                        model: p.clone(),
                        last: None,
                        missing_alerted: false,
                        broken: VecDeque::new(),
                    },
                );
            }
        }
        d
    }

    /// Starts the silence clocks of every learned asset at `now`.
    fn start(&mut self, now: i64) {
        self.started = true;
        for a in &self.baseline.assets {
            if let Some(gap) = a.max_silence {
                self.asset_rt.insert(
                    a.ip,
                    AssetRt {
                        threshold: (SILENCE_FACTOR * gap).max(MIN_SILENCE),
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
            let Some(proto) = k.proto else { continue };
            // What needs no baseline (commands, malformed PDUs, CRC errors, restarts) keeps its
            // weight whatever learning saw.
            if crate::engine::needs_no_baseline(a.r#type) {
                continue;
            }
            let weak = self.weak_channels.contains(&Channel {
                proto,
                client: k.a,
                server: k.b,
                unit: k.unit,
            }) || k.unit == 0 && self.weak_pairs.contains(&(proto, k.a, k.b));
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
        if self.raised.len() >= MAX_RAISED {
            self.raised.clear();
        }
        self.raised.insert(key);
    }

    pub fn observe(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        if !self.started {
            self.start(o.ts);
        }
        self.tick(o.ts, out);
        self.roll_windows(o.ts, out);
        self.observe_pdu(o, out);
    }

    fn observe_pdu(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        let ch = o.channel;
        let new_device = self.check_assets(o, out);
        let known = self.channels.get(&ch).copied();
        // A new device makes its channel new: only the device is reported (one PDU, one
        // account), and no text is built for what would be dropped.
        if known.is_none() && !new_device && !background(&ch) {
            if let Some(mut a) = fresh(
                &mut self.raised,
                alert(
                    o,
                    AlertKey::channel("new_channel", &ch, 0),
                    if ch.proto.is_ot() {
                        Severity::High
                    } else {
                        Severity::Medium
                    },
                ),
                out,
            ) {
                a.message = format!("{ch}: a conversation learning never saw");
                a.learned = json!({});
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
                a.observed = json!({"client": ch.client, "server": ch.server, "proto": ch.proto, "unit": ch.unit_text()});
                out.push(a);
            }
        }
        if !self.rt.contains_key(&ch) && self.rt.len() >= MAX_RUNTIME_CHANNELS {
            self.untracked_channels += 1;
            return;
        }
        match o.kind {
            Kind::Request => self.request(o, known, out),
            Kind::Response | Kind::Unsolicited => self.response(o, known, out),
            Kind::Conversation => self.conversation(o, out),
        }
        if let Some(a) = self.asset_rt.get_mut(&o.src()) {
            if a.silent {
                a.silent = false;
            }
            a.last = o.ts;
            a.last_frame = o.frame;
            self.next_due = self.next_due.min(o.ts.saturating_add(nanos(a.threshold)));
            a.source = Some(o.source.clone());
            a.peer = Some(o.dst());
            a.proto = ch.proto;
        }
    }

    /// New devices and new Ethernet addresses; returns whether either end is a new device.
    fn check_assets(&mut self, o: &Observation, out: &mut Vec<Alert>) -> bool {
        let ch = o.channel;
        let mut new_device = false;
        for (ip, role) in [(ch.client, "client"), (ch.server, "server")] {
            if !self.assets.contains(&ip) && !is_group_address(ip) && !self.known_link_local(o, ip)
            {
                new_device = true;
                if let Some(mut a) = fresh(
                    &mut self.raised,
                    alert(o, AlertKey::host("new_asset", ip), Severity::High),
                    out,
                ) {
                    a.message = format!(
                        "{ip}: a device learning never saw, as {} {role}",
                        ch.proto.name()
                    );
                    a.learned = json!({"assets": self.baseline.assets.len()});
                    a.observed = json!({"ip": ip, "role": role, "proto": ch.proto});
                    out.push(a);
                }
            }
        }
        // A known device sending from an Ethernet address it never used: replaced hardware,
        // or someone else answering for its IP.
        let ip = o.src();
        if let (Some(mac), Some(learned)) = (o.src_mac, self.asset_macs.get(&ip)) {
            if !learned.is_empty() && !learned.contains(&mac) {
                let key = AlertKey {
                    extra: mac.iter().fold(1u64, |acc, b| acc << 8 | u64::from(*b)),
                    ..AlertKey::host("new_asset", ip)
                };
                if let Some(mut a) = fresh(&mut self.raised, alert(o, key, Severity::High), out) {
                    let learned_text: Vec<String> =
                        learned.iter().map(|m| crate::learn::mac_text(*m)).collect();
                    a.message = format!(
                        "{ip} sends from Ethernet address {}, learned {}",
                        crate::learn::mac_text(mac),
                        learned_text.join(", ")
                    );
                    a.learned = json!({"macs": learned_text});
                    a.observed = json!({"ip": ip, "mac": crate::learn::mac_text(mac)});
                    out.push(a);
                }
            }
        }
        new_device
    }

    /// A known device under its IPv6 link-local address: `ip` sent this PDU from an Ethernet
    /// address a learned asset used. A link-local address is never routed, so the Ethernet
    /// address is the device's own, not a router's.
    fn known_link_local(&self, o: &Observation, ip: IpAddr) -> bool {
        let IpAddr::V6(v6) = ip else { return false };
        v6.segments()[0] & 0xffc0 == 0xfe80
            && ip == o.src()
            && o.src_mac.is_some_and(|m| self.learned_macs.contains(&m))
    }

    fn conversation(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        let ch = o.channel;
        if !self.channels.contains_key(&ch) && !background(&ch) {
            let s = scan_window(&mut self.scans, &mut self.scan_resets, o);
            if s.ports.len() < SCAN_SET_BOUND {
                s.ports.insert((ch.server, ch.unit));
            }
            scan_alert(s, &mut self.raised, o, out);
        }
    }

    fn request(&mut self, o: &Observation, known: Option<usize>, out: &mut Vec<Alert>) {
        // The baseline is only read here; moved out so the runtime state can be updated.
        let base = std::mem::take(&mut self.baseline);
        self.request_with(o, known.map(|i| &base.channels[i]), out);
        self.baseline = base;
    }

    /// A request: its function, a write by a client that never wrote, the addresses it
    /// touches, the values it writes, scanning, the request rate and the poll cycle.
    fn request_with(
        &mut self,
        o: &Observation,
        model: Option<&ChannelModel>,
        out: &mut Vec<Alert>,
    ) {
        let known = model.and_then(|_| self.channels.get(&o.channel).copied());
        let (function_known, new_unit, unauthorized) = self.check_function(o, model, out);
        let new_addresses = self.check_ranges(o, model, unauthorized, out);
        // Written values against the point envelopes.
        self.check_values(o, out);
        self.note_scan(o, !function_known, new_unit, new_addresses, out);
        self.check_rate(o, model, known, out);
        self.check_poll(o, out);
    }

    /// The function code (new on the channel, or for a new channel new to the server), a new
    /// unit, and a write by a client that never wrote: (function known, new unit, unauthorized).
    fn check_function(
        &mut self,
        o: &Observation,
        model: Option<&ChannelModel>,
        out: &mut Vec<Alert>,
    ) -> (bool, bool, bool) {
        let ch = o.channel;
        // A master that wrote with this function to other servers in learning, writing to a
        // server it already talks to, is the site's master at work: its write is checked for
        // where it goes (`check_ranges`), not reported as a new function or an unknown writer.
        let fleet_writer = o.write
            && model.is_some()
            && self
                .fleet_writes
                .contains(&(ch.proto, ch.client, o.function));
        // Function codes: the channel's own, or for a new channel, any the server was asked.
        let function_known = fleet_writer
            || match model {
                Some(m) => m.functions.contains_key(&o.function),
                None => self
                    .server_functions
                    .get(&(ch.proto, ch.server))
                    .is_some_and(|f| f.contains(&o.function)),
            };
        let mut new_unit = false;
        // A command (stop, start, download, restart) or an unauthorized write is the account of
        // this PDU: its new function code and written range are part of it.
        let command = o.command.is_some();
        let unauthorized = o.write
            && ch.proto.is_ot()
            && !fleet_writer
            && !self.writers.contains(&(ch.proto, ch.client, ch.server));
        if !function_known && !command && !unauthorized {
            let funcs: BTreeSet<u32> = match model {
                Some(m) => m.functions.keys().copied().collect(),
                None => self
                    .server_functions
                    .get(&(ch.proto, ch.server))
                    .cloned()
                    .unwrap_or_default(),
            };
            if let Some(mut a) = fresh(
                &mut self.raised,
                alert(
                    o,
                    AlertKey::channel("new_function_code", &ch, u64::from(o.function)),
                    Severity::High,
                ),
                out,
            ) {
                a.message = format!(
                    "{ch}: function {}{} never used {} in learning",
                    o.function,
                    o.function_name
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    if model.is_some() {
                        "on this channel"
                    } else {
                        "with this server"
                    }
                );
                a.learned = json!({});
                capped_list(&mut a.learned, "functions", funcs);
                a.observed = json!({"function": o.function, "name": o.function_name});
                out.push(a);
            }
        }
        if ch.proto.is_ot()
            && !self
                .server_units
                .get(&(ch.proto, ch.server))
                .is_some_and(|u| u.contains(&ch.unit))
        {
            new_unit = true;
        }
        if unauthorized && !command {
            if let Some(mut a) = fresh(
                &mut self.raised,
                alert(
                    o,
                    AlertKey::pair("unauthorized_write", ch.proto, ch.client, ch.server, 0),
                    Severity::Critical,
                ),
                out,
            ) {
                a.message = format!(
                    "{} wrote to {} ({}{}) and never wrote to it in learning",
                    ch.client,
                    ch.server,
                    ch.proto.name(),
                    o.function_name.map(|n| format!(" {n}")).unwrap_or_default()
                );
                a.learned = json!({});
                capped_list(
                    &mut a.learned,
                    "writers",
                    self.writers
                        .iter()
                        .filter(|w| w.2 == ch.server)
                        .map(|w| w.1)
                        .collect::<BTreeSet<_>>(),
                );
                a.observed = json!({"function": o.function, "name": o.function_name, "accesses": accesses_json(o)});
                out.push(a);
            }
        }
        (function_known, new_unit, unauthorized)
    }

    /// Accesses outside the learned address ranges; returns the new (space, start) pairs.
    fn check_ranges(
        &mut self,
        o: &Observation,
        model: Option<&ChannelModel>,
        unauthorized: bool,
        out: &mut Vec<Alert>,
    ) -> Vec<(u32, u32)> {
        let ch = o.channel;
        let command = o.command.is_some();
        let mut new_addresses = Vec::new();
        for acc in &o.accesses {
            let hi = acc.start.saturating_add(acc.count.max(1) - 1);
            let learned = match model {
                Some(m) => {
                    if acc.write {
                        m.writes.get(&acc.space)
                    } else {
                        m.reads.get(&acc.space)
                    }
                }
                None => self
                    .server_ranges
                    .get(&(ch.proto, ch.server, ch.unit, acc.space, acc.write)),
            };
            if learned.is_some_and(|r| r.covers(acc.start, hi)) {
                continue;
            }
            new_addresses.push((acc.space, acc.start));
            if acc.write && (unauthorized || command) {
                continue;
            }
            // A learned writer (not unauthorized) touching the neighbourhood of a block it or
            // another client wrote or read on this server: operator work on the same block.
            if acc.write
                && [true, false].into_iter().any(|w| {
                    self.server_ranges
                        .get(&(ch.proto, ch.server, ch.unit, acc.space, w))
                        .is_some_and(|r| r.near(acc.start, hi, NEAR_MARGIN))
                })
            {
                continue;
            }
            let learned = learned.cloned();
            let rw = if acc.write { "write" } else { "read" };
            let space = ch.proto.space_name(acc.space);
            if let Some(mut a) = fresh(
                &mut self.raised,
                alert(
                    o,
                    AlertKey::pair(
                        "address_out_of_range",
                        ch.proto,
                        ch.client,
                        ch.server,
                        u64::from(acc.space) << 1 | u64::from(acc.write),
                    ),
                    write_severity(acc.write),
                ),
                out,
            ) {
                a.message = format!(
                    "{ch}: {rw} of {space} {}..={hi} outside the learned ranges",
                    acc.start
                );
                a.learned = json!({"space": space});
                capped_list(
                    &mut a.learned,
                    "ranges",
                    learned.map(|r| r.0).unwrap_or_default(),
                );
                a.observed =
                    json!({"space": space, "start": acc.start, "count": acc.count, "access": rw});
                out.push(a);
            }
        }
        new_addresses
    }

    /// What this request adds to its client's scan window, and a scan alert when it is one.
    fn note_scan(
        &mut self,
        o: &Observation,
        fnew: bool,
        new_unit: bool,
        new_addresses: Vec<(u32, u32)>,
        out: &mut Vec<Alert>,
    ) {
        let ch = o.channel;
        if ch.proto.is_ot() {
            let s = scan_window(&mut self.scans, &mut self.scan_resets, o);
            if new_unit && s.units.len() < SCAN_SET_BOUND {
                s.units.insert((ch.server, ch.unit));
            }
            if fnew && s.functions.len() < SCAN_SET_BOUND {
                s.functions.insert((ch.server, o.function));
            }
            for (space, start) in new_addresses {
                if s.addresses.len() < SCAN_SET_BOUND {
                    s.addresses.insert((ch.server, space, start));
                }
            }
            scan_alert(s, &mut self.raised, o, out);
        }
    }

    /// The channel's runtime state (pending requests, behaviour window) and its request rate.
    fn check_rate(
        &mut self,
        o: &Observation,
        model: Option<&ChannelModel>,
        known: Option<usize>,
        out: &mut Vec<Alert>,
    ) {
        let ch = o.channel;
        let rt = self.rt.entry(ch).or_default();
        rt.known = known;
        rt.source = Some(o.source.clone());
        rt.ports = o.ports.or(rt.ports);
        rt.pending.request(o);
        if rt.window.is_empty() {
            self.active_windows.push(ch);
        }
        rt.window.add(o, None);
        if o.corr.is_some() {
            self.next_due = self.next_due.min(
                o.ts.saturating_add(nanos(timeout_for(model.and_then(|m| m.latency.as_ref())))),
            );
        }
        let n = rt.req_rate.add(o.ts);
        let limit = match model {
            Some(m) => (4 * m.max_requests_per_window).max(m.max_requests_per_window + 50),
            None => NEW_CHANNEL_FLOOD,
        };
        if n > limit {
            if let Some(mut a) = fresh(
                &mut self.raised,
                alert(
                    o,
                    AlertKey::channel("traffic_flood", &ch, 0),
                    Severity::High,
                ),
                out,
            ) {
                a.message = format!(
                    "{ch}: {n} requests in {} s, learned at most {}",
                    crate::learn::RATE_WINDOW_SECS,
                    model.map_or(0, |m| m.max_requests_per_window)
                );
                a.learned = json!({"max_requests_per_window": model.map(|m| m.max_requests_per_window), "window_s": crate::learn::RATE_WINDOW_SECS, "limit": limit});
                a.observed = json!({"requests_in_window": n});
                out.push(a);
            }
        }
    }

    /// The poll cycle this request belongs to: early or late against the learned period, twice
    /// within `poll_window` (one skipped or delayed cycle is no incident).
    fn check_poll(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        let ch = o.channel;
        let key = (ch, poll_key(o));
        if let Some(p) = self.polls.get_mut(&key) {
            if let Some((prev, prev_frame)) = p.last {
                let gap = secs(prev, o.ts);
                let m = &p.model;
                let early = m.period - poll_tolerance(m);
                let late = m.period + poll_tolerance(m);
                // A repeat within a tenth of the period is the master retrying (or the same
                // request twice), not a new cycle: the cycle goes on from the first.
                if gap < 0.1 * m.period {
                    return;
                }
                // One delayed poll makes two broken intervals, a late one and then an early
                // one sharing its frame: counted once.
                let adjacent = p.broken.back().is_some_and(|b| b.1 .1 == prev_frame);
                let sustained = (gap < early || (gap > late && !p.missing_alerted))
                    && !adjacent
                    && again_within(
                        &mut p.broken,
                        POLL_BROKEN,
                        nanos(poll_window(m)),
                        o.ts,
                        (prev_frame, o.frame),
                    );
                if sustained {
                    let what = if gap < early { "off-period" } else { "late" };
                    if let Some(mut a) = fresh(
                        &mut self.raised,
                        alert(
                            o,
                            AlertKey::channel("poll_cycle_broken", &ch, poll_extra(m)),
                            Severity::Medium,
                        ),
                        out,
                    ) {
                        a.message = format!(
                            "{ch}: poll of function {} {} {}+{} broken {POLL_BROKEN} times within {:.0} s; the last one {what}: {:.3} s after the previous, learned every {:.3} s",
                            m.function,
                            ch.proto.space_name(m.space),
                            m.start,
                            m.count,
                            poll_window(m),
                            gap,
                            m.period
                        );
                        a.frames = p.broken.iter().flat_map(|b| [b.1 .0, b.1 .1]).collect();
                        a.learned = json!({"period_s": m.period, "jitter_s": m.jitter, "window_s": poll_window(m)});
                        a.observed = json!({"interval_s": gap, "kind": what, "broken_intervals": POLL_BROKEN});
                        out.push(a);
                    }
                }
            }
            p.last = Some((o.ts, o.frame));
            p.missing_alerted = false;
            let missing = poll_missing_after(&p.model);
            self.next_due = self.next_due.min(o.ts.saturating_add(nanos(missing)));
        }
    }

    /// Values against the learned envelopes. Most polls read back what they read last time. A
    /// check that raised nothing and changed nothing (every point already held these values)
    /// gives the same result when run again on the same state; so when the same read comes
    /// again and no point of the server changed since (its epoch), it is skipped. Exact: the
    /// memo is compared in full.
    fn check_values(&mut self, o: &Observation, out: &mut Vec<Alert>) {
        let ch = o.channel;
        if o.exception || o.accesses.iter().all(|a| a.values.is_empty()) {
            return;
        }
        // Nothing to check without an envelope learned for this server and unit.
        let Some(server) = self.points.get_mut(&(ch.proto, ch.server, ch.unit)) else {
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
            return;
        }
        let before = out.len();
        let changed = check_values_now(&mut server.points, &mut self.raised, o, out);
        if changed {
            server.epoch += 1;
        }
        let old = server.memo.remove(&key);
        if let Some(old) = old {
            self.memo_elements -= old.elements();
        }
        if out.len() == before && !changed {
            let memo = ValueMemo::of(epoch, o);
            let n = memo.elements();
            if n <= MAX_MEMO_ELEMENTS / 16 {
                if self.memo_elements + n > MAX_MEMO_ELEMENTS {
                    // Only a cache: forgetting it costs time, never a result.
                    for s in self.points.values_mut() {
                        s.memo.clear();
                    }
                    self.memo_elements = 0;
                }
                self.memo_elements += n;
                if let Some(server) = self.points.get_mut(&(ch.proto, ch.server, ch.unit)) {
                    server.memo.insert(key, memo);
                }
            }
        }
    }

    fn response(&mut self, o: &Observation, known: Option<usize>, out: &mut Vec<Alert>) {
        let ch = o.channel;
        self.check_values(o, out);
        let model = known.map(|i| &self.baseline.channels[i]);
        let rt = self.rt.entry(ch).or_default();
        rt.known = known;
        rt.source = Some(o.source.clone());
        rt.ports = o.ports.map(Ports::reversed).or(rt.ports);
        let matched = if o.kind == Kind::Response {
            rt.pending.response(o)
        } else {
            None
        };
        if rt.window.is_empty() {
            self.active_windows.push(ch);
        }
        rt.window.add(o, matched.map(|m| m.0));
        if o.exception {
            let n = rt.exc_rate.add(o.ts);
            let learned = model.map_or(0, |m| m.max_exceptions_per_window);
            let limit = (2 * learned).max(learned + 5);
            if n > limit {
                if let Some(mut a) = fresh(
                    &mut self.raised,
                    alert(
                        o,
                        AlertKey::channel("exception_burst", &ch, 0),
                        Severity::Medium,
                    ),
                    out,
                ) {
                    a.message = format!(
                        "{ch}: {n} exception responses in {} s, learned at most {learned}",
                        crate::learn::RATE_WINDOW_SECS
                    );
                    a.learned = json!({"max_exceptions_per_window": learned, "limit": limit});
                    a.observed = json!({"exceptions_in_window": n});
                    out.push(a);
                }
            }
        }
        let Some((latency, req_frame)) = matched else {
            return;
        };
        rt.recent.push_back(latency);
        if rt.recent.len() > LATENCY_RECENT {
            rt.recent.pop_front();
        }
        let Some(l) = model.and_then(|m| m.latency.as_ref()) else {
            return;
        };
        if l.samples < 20 || rt.recent.len() < LATENCY_RECENT {
            return;
        }
        if let Some(median) = recent_slowdown(l, &rt.recent) {
            if let Some(mut a) = fresh(
                &mut self.raised,
                alert(
                    o,
                    AlertKey::channel("latency_shift", &ch, 0),
                    Severity::Medium,
                ),
                out,
            ) {
                a.message = format!(
                    "{ch}: response time up: median of the last {LATENCY_RECENT} is {:.1} ms, learned p50 {:.1} ms, p99 {:.1} ms",
                    median * 1e3,
                    l.p50 * 1e3,
                    l.p99 * 1e3
                );
                a.frames = vec![req_frame, o.frame];
                a.learned = json!({"p50_s": l.p50, "p95_s": l.p95, "p99_s": l.p99, "max_s": l.max});
                a.observed =
                    json!({"median_s": median, "last_s": latency, "responses": LATENCY_RECENT});
                out.push(a);
            }
        }
    }

    /// Timers: response timeouts, polls that stopped, silent devices. Capture time.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Alert>) {
        if !self.started {
            // Silence is measured from the first moment seen, packet or tick: a plant already
            // down when detection starts is still reported.
            self.start(now);
        }
        let clock_went_back = now < self.last_tick;
        if !self.started
            || !clock_went_back
                && (now < self.next_due || now.saturating_sub(self.last_tick) < TICK)
        {
            return;
        }
        self.last_tick = now;
        let first_new = out.len();
        // Walk every timer, fire the expired ones, and find the next one due.
        let mut next = i64::MAX;
        for (ch, rt) in &mut self.rt {
            if rt.pending.map.is_empty() {
                // Most channels wait for nothing; walking an empty map still costs its table.
                continue;
            }
            let timeout = timeout_of(&self.baseline, rt.known);
            for (ts, _) in rt.pending.map.values() {
                let due = ts.saturating_add(nanos(timeout));
                if due >= now {
                    next = next.min(due);
                }
            }
            let mut expired: Vec<(u32, i64, u64)> = rt
                .pending
                .map
                .iter()
                .filter(|(_, (ts, _))| secs(*ts, now) > timeout)
                .map(|(c, (ts, f))| (*c, *ts, *f))
                .collect();
            if expired.is_empty() {
                continue;
            }
            // By time, then frame and correlation: equal times must not come out in hash order.
            expired.sort_unstable_by_key(|e| (e.1, e.2, e.0));
            for (c, _, _) in &expired {
                rt.pending.map.remove(c);
            }
            let model = rt.known.map(|i| &self.baseline.channels[i]);
            let window = unanswered_window(model);
            let mut recent = false;
            for e in &expired {
                recent = again_within(&mut rt.timeouts, MIN_UNANSWERED, window, e.1, e.2);
            }
            if !recent || model.is_some_and(unanswered_in_learning) {
                continue;
            }
            // Evidence: the timeouts that made the incident, then this tick's others.
            let (ts, frame) = rt.timeouts[0];
            let key = AlertKey::pair("response_timeout", ch.proto, ch.client, ch.server, 0);
            let mut a = channel_alert(ch, Some(rt), now, key, Severity::High);
            a.frames = rt.timeouts.iter().map(|t| t.1).collect();
            for e in &expired {
                if a.frames.len() < 8 && !a.frames.contains(&e.2) {
                    a.frames.push(e.2);
                }
            }
            a.message = format!(
                "{ch}: {} request(s) unanswered after {timeout:.3} s ({MIN_UNANSWERED} or more within {} s)",
                expired.len(),
                window / NANOS
            );
            a.learned = json!({"timeout_s": timeout, "min_unanswered": MIN_UNANSWERED, "window_s": window / NANOS});
            a.observed = json!({"unanswered": expired.len(), "first_request_frame": frame, "first_request_ts_ns": ts});
            out.push(a);
        }
        for ((ch, _), p) in &mut self.polls {
            let Some((last, frame)) = p.last else {
                continue;
            };
            let m = &p.model;
            let late = poll_missing_after(m);
            if !p.missing_alerted && secs(last, now) <= late {
                next = next.min(last.saturating_add(nanos(late)));
            }
            if !p.missing_alerted && secs(last, now) > late {
                p.missing_alerted = true;
                let rt = self.rt.get(ch);
                let key = AlertKey::channel("poll_cycle_broken", ch, poll_extra(m));
                out.push(Alert {
                    frames: vec![frame],
                    message: format!(
                        "{ch}: poll of function {} {} {}+{} missing: none for {:.3} s, learned every {:.3} s",
                        m.function,
                        ch.proto.space_name(m.space),
                        m.start,
                        m.count,
                        secs(last, now),
                        m.period
                    ),
                    learned: json!({"period_s": m.period, "jitter_s": m.jitter}),
                    observed: json!({"since_last_s": secs(last, now), "kind": "missing"}),
                    ..channel_alert(ch, rt, now, key, Severity::Medium)
                });
            }
        }
        for (ip, a) in &mut self.asset_rt {
            let quiet = secs(a.last, now);
            if !a.silent && quiet <= a.threshold {
                next = next.min(a.last.saturating_add(nanos(a.threshold)));
            }
            if !a.silent && quiet > a.threshold {
                a.silent = true;
                out.push(Alert {
                    source: a.source.clone().unwrap_or_else(|| Arc::from("")),
                    frames: if a.last_frame > 0 {
                        vec![a.last_frame]
                    } else {
                        Vec::new()
                    },
                    message: format!(
                        "{ip} has sent nothing for {quiet:.1} s (alert after {:.1} s)",
                        a.threshold
                    ),
                    learned: json!({"silence_threshold_s": a.threshold}),
                    observed: json!({"silent_for_s": quiet}),
                    ..Alert::new(
                        AlertKey::host("device_silent", *ip),
                        Severity::High,
                        a.proto,
                        *ip,
                        a.peer.unwrap_or(*ip),
                        now,
                    )
                });
            }
        }
        self.next_due = next;
        // The timers live in hash maps, whose order differs from run to run: the alerts of one
        // tick go out in a defined order (the alert book keeps the last occurrence's frames).
        out[first_new..].sort_by(|a, b| {
            (a.r#type, a.src_ip, a.dst_ip, &a.frames, &a.message)
                .cmp(&(b.r#type, b.src_ip, b.dst_ip, &b.frames, &b.message))
        });
    }

    /// Behaviour windows: score the channels' windows that ended before `ts`.
    fn roll_windows(&mut self, ts: i64, out: &mut Vec<Alert>) {
        let idx = ts.div_euclid(self.window_nanos);
        let cur = *self.window_index.get_or_insert(idx);
        let first = *self.first_window.get_or_insert(idx);
        if idx <= cur {
            return;
        }
        self.window_index = Some(idx);
        let active = std::mem::take(&mut self.active_windows);
        let Some(model) = self.baseline.behaviour.as_ref() else {
            for ch in &active {
                if let Some(rt) = self.rt.get_mut(ch) {
                    rt.window = WindowAcc::default();
                }
            }
            return;
        };
        for ch in &active {
            let Some(rt) = self.rt.get_mut(ch) else {
                continue;
            };
            let mut w = std::mem::take(&mut rt.window);
            if w.is_empty() || rt.known.is_none() || cur == first {
                continue;
            }
            let x = w.features();
            let d = model.distance(&x);
            if d > model.threshold {
                let end = (cur + 1) * self.window_nanos;
                let key = AlertKey::channel("behaviour_anomaly", ch, 0);
                out.push(Alert {
                    frames: [w.first_frame, Some(w.last_frame)].into_iter().flatten().collect(),
                    message: format!(
                        "{ch}: a {} s window unlike any in learning (distance {d:.2}, threshold {:.2})",
                        model.window, model.threshold
                    ),
                    learned: json!({"threshold": model.threshold, "max_training_distance": model.max_training_distance}),
                    observed: json!({"distance": d, "window_end_ns": end, "features": model.features.iter().zip(x).map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, serde_json::Value>>()}),
                    // Raised now, when the window is found closed: lines stay in time order.
                    ..channel_alert(ch, Some(rt), ts, key, Severity::Low)
                });
            }
        }
    }
}

/// The last `n` occurrences of something (capture time first, oldest first): records one, and
/// says whether all `n` now lie within `window` nanoseconds. Broken poll intervals and
/// response timeouts are incidents only when they come again soon.
fn again_within<T>(q: &mut VecDeque<(i64, T)>, n: usize, window: i64, ts: i64, what: T) -> bool {
    if q.len() == n {
        q.pop_front();
    }
    q.push_back((ts, what));
    match (q.front(), q.back()) {
        (Some(first), Some(last)) => q.len() == n && last.0.saturating_sub(first.0) <= window,
        _ => false,
    }
}

/// A UDP conversation of a protocol otwatch does not dissect to a broadcast or multicast
/// address: hosts' housekeeping (NetBIOS, LLMNR, mDNS, SSDP, DHCP), which no OT process depends
/// on. A new device behind it is still reported (`new_asset`); the conversation itself is not.
/// (TCP cannot be broadcast: a TCP host at x.x.x.255 of a wider subnet is a host.)
fn background(ch: &Channel) -> bool {
    ch.proto == Proto::Udp && is_group_address(ch.server)
}

/// Broadcast and multicast destinations are not devices. IPv4 `x.x.x.255` is taken for a /24
/// broadcast, the usual plant subnet.
fn is_group_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast() || v4.octets()[3] == 255,
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// One PDU, one account: drops the alerts a stronger one on the same PDU implies. A new device
/// makes its channel new; an unauthorized write is also a new function and a write outside the
/// learned ranges; a PLC stop, start, download or restart command is also a (new) write.
pub(crate) fn suppress_implied(alerts: &mut Vec<Alert>) {
    if alerts.len() < 2 {
        return;
    }
    let has = |t: &str, a: &[Alert]| a.iter().any(|x| x.r#type == t);
    let new_asset = has("new_asset", alerts);
    let command = [
        "plc_stop",
        "plc_start",
        "program_download",
        "program_upload",
        "device_restart_command",
    ]
    .iter()
    .any(|t| has(t, alerts));
    let unauthorized = !command && has("unauthorized_write", alerts);
    alerts.retain(|a| {
        let implied = (new_asset && a.r#type == "new_channel")
            || (command && matches!(a.r#type, "unauthorized_write" | "new_function_code"))
            || (unauthorized && a.r#type == "new_function_code")
            || (unauthorized && a.r#type == "address_out_of_range" && a.key.extra & 1 == 1);
        !implied
    });
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A slowdown of the median of a full window of recent latencies, and that median. The
/// threshold holds for every value above it, so when the largest latency is no slowdown the
/// median (below it) is not either: the common case costs a pass over the window, not a
/// selection.
fn recent_slowdown(l: &LatencyModel, recent: &VecDeque<f64>) -> Option<f64> {
    let hi = recent.iter().fold(f64::NEG_INFINITY, |hi, &v| hi.max(v));
    if !slowed(l, hi) {
        return None;
    }
    let mut window = [0.0f64; LATENCY_RECENT];
    for (slot, v) in window.iter_mut().zip(recent) {
        *slot = *v;
    }
    let n = recent.len().min(LATENCY_RECENT);
    if n == 0 {
        return None;
    }
    let median = *window[..n].select_nth_unstable_by(n / 2, f64::total_cmp).1;
    slowed(l, median).then_some(median)
}

/// What a latency alert is for: a sustained slowdown, which is what an availability problem
/// looks like (an overloaded PLC, a congested or failing link, a gateway queueing). The median
/// must exceed both twice the learned p99 and four times the learned p50, and by more than
/// 5 ms. Faster answers are no risk to the process (a serial gateway answering faster after a
/// restart raised `latency_shift` "down" 2-3 times per unit on real traffic): not an alert.
fn slowed(l: &LatencyModel, median: f64) -> bool {
    median > (2.0 * l.p99).max(4.0 * l.p50) && median - l.p50 > 0.005
}

fn accesses_json(o: &Observation) -> serde_json::Value {
    serde_json::Value::Array(
        o.accesses
            .iter()
            .map(|a| {
                json!({"space": o.channel.proto.space_name(a.space), "start": a.start, "count": a.count,
                       "values": a.values.iter().take(16).collect::<Vec<_>>()})
            })
            .collect(),
    )
}

/// The client's scan window, started afresh when it has expired (or the table is full), with
/// this PDU's frame among its first eight.
fn scan_window<'a>(
    scans: &'a mut FastMap<IpAddr, ScanRt>,
    resets: &mut u64,
    o: &Observation,
) -> &'a mut ScanRt {
    let client = o.channel.client;
    if scans.len() >= MAX_SCAN_CLIENTS && !scans.contains_key(&client) {
        scans.clear();
        *resets += 1;
    }
    let s = scans.entry(client).or_default();
    if o.ts.saturating_sub(s.start) > SCAN_WINDOW || o.ts < s.start {
        *s = ScanRt {
            start: o.ts,
            ..ScanRt::default()
        };
    }
    if s.frames.len() < 8 {
        s.frames.push(o.frame);
    }
    s
}

/// A scan alert when the client's window holds enough new units, functions, addresses or ports.
fn scan_alert(s: &ScanRt, raised: &mut FastSet<AlertKey>, o: &Observation, out: &mut Vec<Alert>) {
    let (u, f, a, p) = (
        s.units.len(),
        s.functions.len(),
        s.addresses.len(),
        s.ports.len(),
    );
    let what = if u >= SCAN_UNITS {
        "unit ids"
    } else if f >= SCAN_FUNCTIONS {
        "function codes"
    } else if a >= SCAN_ADDRESSES {
        "addresses"
    } else if p >= SCAN_PORTS {
        "ports"
    } else {
        return;
    };
    if let Some(mut al) = fresh(
        raised,
        alert(o, AlertKey::host("scan", o.channel.client), Severity::High),
        out,
    ) {
        al.message = format!(
            "{} is walking {what} it never used in learning",
            o.channel.client
        );
        al.frames = s.frames.clone();
        al.learned = json!({"window_s": SCAN_WINDOW / NANOS, "thresholds": {"units": SCAN_UNITS, "functions": SCAN_FUNCTIONS, "addresses": SCAN_ADDRESSES, "ports": SCAN_PORTS}});
        al.observed =
            json!({"new_units": u, "new_functions": f, "new_addresses": a, "new_ports": p});
        out.push(al);
    }
}

/// Checks every value of `o` against its server's points; returns whether any point's last
/// value changed.
fn check_values_now(
    points: &mut FastMap<u64, PointEnv>,
    raised: &mut FastSet<AlertKey>,
    o: &Observation,
    out: &mut Vec<Alert>,
) -> bool {
    let ch = o.channel;
    let mut changed = false;
    for acc in &o.accesses {
        if ch.proto.bit_space(acc.space) || o.exception {
            continue;
        }
        for (i, &v) in acc.values.iter().enumerate() {
            let addr = acc.start.wrapping_add(i as u32);
            let Some(p) = points.get_mut(&point_key(acc.space, addr)) else {
                continue;
            };
            let previous = p.last.replace(v);
            changed |= previous.map(f64::to_bits) != Some(v.to_bits());
            if p.samples < 3 {
                continue;
            }
            // Outside the envelope by a soft margin, having jumped there; or outside by a
            // hard margin however it got there. A value that drifts out in small steps (a
            // level that learning saw only part of) is not an alarm until it is far out; nor
            // is the first value seen, which has no step.
            // The margins also scale with the value's magnitude: a reading that learning saw
            // constant at 13880 and now reads 13872 has not left its envelope in any sense an
            // operator would care about (2% soft, 20% hard).
            let range = p.max - p.min;
            let magnitude = p.min.abs().max(p.max.abs());
            let soft = (0.5 * range)
                .max(10.0 * p.max_step)
                .max(0.02 * magnitude)
                .max(1.0);
            let hard = (2.0 * range)
                .max(50.0 * p.max_step)
                .max(0.2 * magnitude)
                .max(10.0);
            let outside = |m: f64| v < p.min - m || v > p.max + m;
            let jumped = previous.is_some_and(|last| (v - last).abs() > 4.0 * p.max_step.max(1.0));
            if !(outside(hard) || outside(soft) && jumped) {
                continue;
            }
            let margin = soft;
            let space = ch.proto.space_name(acc.space);
            if let Some(mut a) = fresh(
                raised,
                alert(
                    o,
                    AlertKey::point(
                        "value_out_of_range",
                        &ch,
                        u64::from(acc.space) << 32 | u64::from(addr),
                    ),
                    write_severity(acc.write),
                ),
                out,
            ) {
                a.message = format!(
                    "{} {space} {addr} {} {v}, learned {}..={} (step at most {})",
                    ch.server,
                    if acc.write { "written as" } else { "reads" },
                    p.min,
                    p.max,
                    p.max_step
                );
                a.learned = json!({"min": p.min, "max": p.max, "max_step": p.max_step, "samples": p.samples, "margin": margin});
                a.observed =
                    json!({"space": space, "address": addr, "value": v, "write": acc.write});
                out.push(a);
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let window: VecDeque<f64> = (0..LATENCY_RECENT)
                .map(|_| p50 * scale * (0.2 + 2.0 * next()))
                .collect();
            let mut sorted: Vec<f64> = window.iter().copied().collect();
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
                &VecDeque::new()
            ),
            None
        );
    }

    /// A read by `client` (10.0.0.x) from one PLC of holding registers from `start`.
    fn read(client: u8, start: u32, values: &[f64], ts: i64) -> Observation {
        let channel = Channel {
            proto: Proto::Modbus,
            client: IpAddr::from([10, 0, 0, client]),
            server: IpAddr::from([192, 168, 1, 10]),
            unit: 1,
        };
        let mut o = Observation::new(ts, Arc::from("t"), 1, channel, Kind::Response, 3);
        o.accesses.push(crate::obs::Access {
            space: 4,
            start,
            count: values.len() as u32,
            write: false,
            values: values.iter().copied().collect(),
        });
        o
    }

    const T0: i64 = 1_700_000_000 * NANOS;

    /// An engine detecting against what it learned from 40 s of a triangle 0..=10..=0 (steps of
    /// 1) read by client 1 at register 100 and, with `second`, by client 2 at 99..=100.
    fn engine_after_a_triangle(second: bool) -> crate::engine::Engine {
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
        let baseline = learner.finish(&mut out).expect("a baseline");
        Engine::detecting(baseline, EngineConfig::default())
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

    /// A read that carries one point twice (overlapping S7 items, repeated DNP3 events) leaves
    /// the point at its second value: the same read again is a jump from that value, and must
    /// be checked, not remembered as unchanged.
    #[test]
    fn a_read_that_moves_its_own_point_is_checked_again() {
        let mut engine = engine_after_a_triangle(false);
        let twice = |ts: i64| {
            let mut o = read(1, 100, &[25.0], ts);
            let mut second = o.accesses[0].clone();
            second.values = crate::obs::AccessValues::from_elem(0.0, 1);
            o.accesses.push(second);
            o
        };
        let t1 = T0 + 100 * NANOS;
        // 25 with no previous value: no jump. Then 0, in the envelope.
        assert_eq!(value_alerts(&mut engine, twice(t1)), 0);
        // Again: 25 after 0 is a jump outside the soft margin.
        assert_eq!(value_alerts(&mut engine, twice(t1 + 1000)), 1);
    }
}
