//! Alerts and their deduplication: one alert per cause, with a count and first/last seen, so a
//! flood does not become a million lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::obs::Proto;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    Integrity,
    Availability,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// One step lower (low stays low).
    pub fn lowered(self) -> Severity {
        match self {
            Severity::Critical => Severity::High,
            Severity::High => Severity::Medium,
            Severity::Medium | Severity::Low => Severity::Low,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What makes two alerts the same cause: a type and what it is about. Cheap to build and hash,
/// so a flood of occurrences costs a lookup each, not a message each. Its hash is made once,
/// when it is built ([`AlertKey::new`] and the constructors on it; its fields are read by
/// their getters, so that none can be changed apart from the hash): a flood's occurrence is
/// looked up two or three times (the detector's marks, the book), and hashing the fields each
/// time was most of each lookup.
#[derive(Debug, Clone, Copy, Eq)]
pub struct AlertKey {
    r#type: &'static str,
    proto: Option<Proto>,
    a: IpAddr,
    b: IpAddr,
    unit: u32,
    extra: u64,
    /// The fields' hash ([`AlertKey::new`]).
    hash: u64,
}

impl PartialEq for AlertKey {
    fn eq(&self, other: &Self) -> bool {
        // The type is almost always the same literal: compare where it is before what it says
        // (a flood compares keys per PDU).
        let same_type = std::ptr::eq(self.r#type, other.r#type) || self.r#type == other.r#type;
        self.hash == other.hash
            && same_type
            && self.proto == other.proto
            && self.a == other.a
            && self.b == other.b
            && self.unit == other.unit
            && self.extra == other.extra
    }
}

/// The hash made when the key was built: a map mixes it with its own seed.
impl std::hash::Hash for AlertKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash);
    }
}

/// The hasher of keys' fields: seeded once per process, at random (the addresses come off the
/// wire, and a seed known in advance would let spoofed ones be chosen to collide).
fn key_hasher() -> &'static foldhash::fast::FixedState {
    static STATE: std::sync::OnceLock<foldhash::fast::FixedState> = std::sync::OnceLock::new();
    STATE.get_or_init(|| {
        use std::hash::BuildHasher;
        let seed = foldhash::fast::RandomState::default().hash_one(0x6f74_7761_7463_u64);
        foldhash::fast::FixedState::with_seed(seed)
    })
}

/// The fields' hash, made once per key: the type by what it says, as `eq` compares it (its
/// length and its first and last eight bytes), the two addresses, and the protocol, unit and
/// extra, as four words.
fn fields_hash(
    r#type: &str,
    proto: Option<Proto>,
    a: IpAddr,
    b: IpAddr,
    unit: u32,
    extra: u64,
) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let t = r#type.as_bytes();
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let (head, tail) = if t.len() >= 8 {
        (word(&t[..8]), word(&t[t.len() - 8..]))
    } else {
        (word(t), 0)
    };
    let mut h = key_hasher().build_hasher();
    h.write_u128(u128::from(head) << 64 | u128::from(tail.rotate_left(17) ^ t.len() as u64));
    h.write_u128(ip_word(a));
    h.write_u128(ip_word(b));
    let proto = proto.map_or(0, |p| p as u64 + 1);
    h.write_u128(u128::from(extra) << 64 | u128::from(unit) << 8 | u128::from(proto));
    h.finish()
}

/// An address as one number (IPv4 tagged apart from IPv6's mapped form).
#[inline]
fn ip_word(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => 1 << 100 | u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

const NO_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

impl AlertKey {
    /// A key of these fields (its hash made now).
    #[inline]
    pub fn new(
        r#type: &'static str,
        proto: Option<Proto>,
        a: IpAddr,
        b: IpAddr,
        unit: u32,
        extra: u64,
    ) -> Self {
        AlertKey {
            r#type,
            proto,
            a,
            b,
            unit,
            extra,
            hash: fields_hash(r#type, proto, a, b, unit, extra),
        }
    }

    /// The alert type it is a cause of.
    pub fn type_name(&self) -> &'static str {
        self.r#type
    }

    /// The protocol (none for a host's causes).
    pub fn proto(&self) -> Option<Proto> {
        self.proto
    }

    /// What it is about: the client (a channel's, a pair's), the host, or the server (a point's).
    pub fn a(&self) -> IpAddr {
        self.a
    }

    /// The server (a channel's, a pair's); unspecified for a host's or a point's.
    pub fn b(&self) -> IpAddr {
        self.b
    }

    /// The unit (a channel's, a point's; 0 for a pair's).
    pub fn unit(&self) -> u32 {
        self.unit
    }

    /// What on it (a function code, a point's space and address, a reason's address).
    pub fn extra(&self) -> u64 {
        self.extra
    }

    /// About one channel (`extra`: what on it, e.g. a function code).
    pub fn channel(r#type: &'static str, ch: &crate::obs::Channel, extra: u64) -> Self {
        Self::new(r#type, Some(ch.proto), ch.client, ch.server, ch.unit, extra)
    }

    /// The types keyed by [`AlertKey::pair`]: their `unit` is 0 whatever the channel's.
    pub const PAIR_TYPES: [&'static str; 4] = [
        "unauthorized_write",
        "address_out_of_range",
        "response_timeout",
        "device_restarted",
    ];

    /// Whether alerts of this type are keyed by their client and server, whatever the unit.
    pub fn keyed_by_pair(r#type: &str) -> bool {
        Self::PAIR_TYPES.contains(&r#type)
    }

    /// About a client and a server, whatever the unit (its type one of [`Self::PAIR_TYPES`]).
    pub fn pair(
        r#type: &'static str,
        proto: Proto,
        client: IpAddr,
        server: IpAddr,
        extra: u64,
    ) -> Self {
        debug_assert!(Self::keyed_by_pair(r#type), "{type} is not a pair type");
        Self::new(r#type, Some(proto), client, server, 0, extra)
    }

    /// About one host, whatever the protocol.
    pub fn host(r#type: &'static str, ip: IpAddr) -> Self {
        Self::host_about(r#type, ip, 0)
    }

    /// About one host, whatever the protocol, and `extra` (what about it).
    pub fn host_about(r#type: &'static str, ip: IpAddr, extra: u64) -> Self {
        Self::new(r#type, None, ip, NO_IP, 0, extra)
    }

    /// About a point of a server (`extra`: space and address).
    pub fn point(r#type: &'static str, ch: &crate::obs::Channel, extra: u64) -> Self {
        Self::new(r#type, Some(ch.proto), ch.server, NO_IP, ch.unit, extra)
    }

    fn overflow(r#type: &'static str) -> Self {
        Self::new(r#type, None, NO_IP, NO_IP, u32::MAX, u64::MAX)
    }
}

/// Where a line stands in its cause's life (docs/alerts.md): the first occurrence, a later
/// line with the running count, or the last line, at the end of input, with the final count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    First,
    Update,
    End,
}

impl AlertState {
    pub fn name(self) -> &'static str {
        match self {
            AlertState::First => "first",
            AlertState::Update => "update",
            AlertState::End => "end",
        }
    }
}

/// The frames of an alert: most name one or two (a request and its response), held inline, so
/// that an occurrence of a known cause (a flood: one per PDU) allocates nothing for them.
pub type Frames = smallvec::SmallVec<[u64; 2]>;

#[derive(Debug, Clone)]
pub struct Alert {
    /// Stable for one cause: a repeat line of the same cause carries the same id.
    pub id: u64,
    /// The line's number in the run (1, 2, …, in output order): unique per line, where `id`
    /// is shared by a cause's lines.
    pub line: u64,
    pub state: AlertState,
    /// Raised on a channel learning saw too little of (`ChannelModel::under_learned`): a hint,
    /// with its severity lowered one step.
    pub low_confidence: bool,
    /// What makes two alerts the same cause.
    pub key: AlertKey,
    /// Time of the occurrence this line reports (the first, or the latest for a repeat).
    pub ts: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub count: u64,
    /// False on the first line of a cause, true on later lines that update its count.
    pub repeat: bool,
    pub kind: AlertKind,
    pub r#type: &'static str,
    pub severity: Severity,
    pub proto: Proto,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    /// Ports from `src_ip` to `dst_ip`, when the alert is about a PDU or a channel.
    pub ports: Option<crate::obs::Ports>,
    pub source: Arc<str>,
    /// Frames (in `source`) of the packets that caused it, e.g. a request and its response.
    pub frames: Frames,
    pub message: String,
    /// What learning saw and what was observed, as JSON objects; empty (written as an empty
    /// object) until a check fills them.
    pub learned: Members,
    pub observed: Members,
    /// Set by the caller when evidence was written.
    pub evidence: Option<String>,
    /// Set on the alert a bare occurrence stands for ([`Bare::alert`]: no text, its cause
    /// marked raised already, so marking it again would change nothing); the engine raises
    /// one when the book had no entry to count its bare occurrence into.
    pub text_skipped: bool,
}

/// An alert's `learned` or `observed` members: a JSON value (an object once filled; `Null`,
/// written as an empty object, until then), boxed and built only when a check fills it. An
/// alert is built and moved several times per occurrence, and the occurrences of a cause
/// already raised (a flood: one per PDU) fill none: two JSON maps in place made each alert
/// 416 bytes, built and dropped for nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Members(Option<Box<serde_json::Value>>);

impl std::ops::Deref for Members {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        static NULL: serde_json::Value = serde_json::Value::Null;
        self.0.as_deref().unwrap_or(&NULL)
    }
}

impl std::ops::DerefMut for Members {
    fn deref_mut(&mut self) -> &mut serde_json::Value {
        self.0
            .get_or_insert_with(|| Box::new(serde_json::Value::Null))
    }
}

impl From<serde_json::Value> for Members {
    fn from(v: serde_json::Value) -> Self {
        Members(Some(Box::new(v)))
    }
}

/// An occurrence of a cause the detector found marked raised (its text built once already):
/// what the book needs of it, as [`crate::detect::alert`] would make its alert, without the
/// alert's room. A flood makes one or two per PDU: built, moved (with N workers, from a
/// worker's core to the reader's and back) and dropped, a whole alert each cost as much as
/// the checks that found it. `at`: its place among its observation's other candidates, which
/// are whole alerts (before the `at`-th of them). Its capture is its observation's, given
/// apart ([`Found::source`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bare {
    pub key: AlertKey,
    pub ts: i64,
    pub frame: u64,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub ports: Option<crate::obs::Ports>,
    pub severity: Severity,
    pub proto: Proto,
    pub at: u32,
}

impl Bare {
    /// The alert it stands for (`source`: its capture), as the detector made a bare
    /// occurrence before there were these: no text, marked `text_skipped`.
    pub fn alert(&self, source: &Arc<str>) -> Alert {
        let mut a = Alert::new(
            Some(Arc::clone(source)),
            self.key,
            self.severity,
            self.proto,
            self.src_ip,
            self.dst_ip,
            self.ts,
        );
        a.ports = self.ports;
        a.frames.push(self.frame);
        a.text_skipped = true;
        a
    }
}

/// The candidate alerts of one observation: those whose text was built (`alerts`), and the
/// bare occurrences of causes already raised among them (`bare`, each with its place), all
/// of the capture `source` (set where there are bare ones; the whole alerts name their own).
/// With N workers a worker hands one on per observation that raised any, and the list comes
/// back to be filled again.
#[derive(Debug, Default)]
pub struct Found {
    pub alerts: Vec<Alert>,
    pub bare: Vec<Bare>,
    pub source: Option<Arc<str>>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.bare.is_empty()
    }

    /// How many candidates it holds.
    pub fn len(&self) -> usize {
        self.alerts.len() + self.bare.len()
    }

    /// Empties it, its room kept (and its capture, to be named again at no cost).
    pub fn clear(&mut self) {
        self.alerts.clear();
        self.bare.clear();
    }

    /// Moves `other`'s candidates after its own (`other`'s bare ones placed after its own
    /// whole alerts); `source` names their capture when `other` has bare ones.
    pub fn append(&mut self, other: &mut Found, source: &Arc<str>) {
        if !other.bare.is_empty() {
            self.name_source(source);
        }
        if self.is_empty() {
            std::mem::swap(&mut self.alerts, &mut other.alerts);
            std::mem::swap(&mut self.bare, &mut other.bare);
            return;
        }
        let offset = self.alerts.len() as u32;
        self.bare.extend(other.bare.drain(..).map(|b| Bare {
            at: b.at + offset,
            ..b
        }));
        self.alerts.append(&mut other.alerts);
    }

    /// Its bare candidates are of the capture `source` (the name cloned only when it changed:
    /// its reference count is shared by every thread that holds the name).
    pub fn name_source(&mut self, source: &Arc<str>) {
        if !self.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, source)) {
            self.source = Some(Arc::clone(source));
        }
    }

    /// The capture of its bare records (an empty name where none was given).
    pub fn bare_source(&self) -> Arc<str> {
        self.source.clone().unwrap_or_else(empty_source)
    }

    /// Its candidates in their order: each bare record in its place among the whole alerts.
    pub fn in_order(&mut self, mut each: impl FnMut(Candidate<'_>)) {
        let mut bare = self.bare.iter().peekable();
        for (i, a) in self.alerts.iter_mut().enumerate() {
            while let Some(b) = bare.next_if(|b| b.at as usize <= i) {
                each(Candidate::Bare(b));
            }
            each(Candidate::Whole(a));
        }
        bare.for_each(|b| each(Candidate::Bare(b)));
    }

    /// Every candidate as a whole alert, in order (tests, and what wants alerts only).
    pub fn to_alerts(&self) -> Vec<Alert> {
        let source = self.bare_source();
        let mut copy = Found {
            alerts: self.alerts.clone(),
            bare: self.bare.clone(),
            source: None,
        };
        let mut out = Vec::with_capacity(self.len());
        copy.in_order(|c| match c {
            Candidate::Whole(a) => out.push(a.clone()),
            Candidate::Bare(b) => out.push(b.alert(&source)),
        });
        out
    }
}

/// One candidate of a [`Found`] ([`Found::in_order`]).
pub enum Candidate<'a> {
    Whole(&'a mut Alert),
    Bare(&'a Bare),
}

/// One shared empty source name, so building an alert allocates none.
fn empty_source() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(EMPTY.get_or_init(|| Arc::from("")))
}

impl Alert {
    /// An alert with no frames or message yet; its type is the key's. `source`: the capture
    /// it came from, when known (no name is built and dropped per occurrence).
    #[inline]
    pub fn new(
        source: Option<Arc<str>>,
        key: AlertKey,
        severity: Severity,
        proto: Proto,
        src_ip: IpAddr,
        dst_ip: IpAddr,
        ts: i64,
    ) -> Alert {
        let source = source.unwrap_or_else(empty_source);
        let r#type = key.r#type;
        Alert {
            id: 0,
            line: 0,
            state: AlertState::First,
            low_confidence: false,
            key,
            ts,
            first_seen: ts,
            last_seen: ts,
            count: 1,
            repeat: false,
            kind: Alert::kind_of(r#type),
            r#type,
            severity,
            proto,
            src_ip,
            dst_ip,
            ports: None,
            source,
            frames: Frames::new(),
            message: String::new(),
            learned: Members::default(),
            observed: Members::default(),
            evidence: None,
            text_skipped: false,
        }
    }

    /// The severity a type is raised with (for the few raised with two, the usual one).
    pub fn default_severity(r#type: &str) -> Severity {
        match r#type {
            "unauthorized_write" | "plc_stop" | "program_download" => Severity::Critical,
            "new_asset"
            | "new_channel"
            | "new_function_code"
            | "plc_start"
            | "device_restart_command"
            | "scan"
            | "response_timeout"
            | "device_silent"
            | "traffic_flood"
            | "device_restarted" => Severity::High,
            "behaviour_anomaly" => Severity::Low,
            _ => Severity::Medium,
        }
    }

    pub fn kind_of(r#type: &str) -> AlertKind {
        match r#type {
            "poll_cycle_broken" | "response_timeout" | "latency_shift" | "device_silent"
            | "traffic_flood" | "device_restarted" | "behaviour_anomaly" => AlertKind::Availability,
            _ => AlertKind::Integrity,
        }
    }
}

/// A MITRE ATT&CK for ICS technique: its ID and its name as MITRE publishes it.
pub type Technique = (&'static str, &'static str);

/// The ATT&CK for ICS techniques an alert type evidences (docs/alerts.md has the table, with
/// why). Empty for what evidences no technique by itself (a CRC error is a noisy link as often
/// as an attack; a behaviour anomaly says "different", not how).
pub fn techniques(r#type: &str) -> &'static [Technique] {
    const DOS: Technique = ("T0814", "Denial of Service");
    const RESTART: Technique = ("T0816", "Device Restart/Shutdown");
    const COMMAND: Technique = ("T0855", "Unauthorized Command Message");
    const PARAMETER: Technique = ("T0836", "Modify Parameter");
    const DISCOVERY: Technique = ("T0846", "Remote System Discovery");
    const POINTS: Technique = ("T0861", "Point & Tag Identification");
    const MODE: Technique = ("T0858", "Change Operating Mode");
    match r#type {
        "new_asset" => &[("T0848", "Rogue Master")],
        "new_channel" => &[("T0886", "Remote Services")],
        "new_function_code" => &[COMMAND],
        "address_out_of_range" => &[POINTS, PARAMETER],
        "unauthorized_write" => &[COMMAND, PARAMETER],
        "value_out_of_range" => &[("T0831", "Manipulation of Control"), PARAMETER],
        "plc_stop" | "plc_start" => &[MODE],
        "program_download" => &[("T0843", "Program Download"), ("T0889", "Modify Program")],
        "program_upload" => &[("T0845", "Program Upload")],
        "device_restart_command" | "device_restarted" => &[RESTART],
        "malformed_pdu" => &[("T0866", "Exploitation of Remote Services"), DOS],
        "exception_burst" | "scan" => &[DISCOVERY, POINTS],
        "poll_cycle_broken" => &[("T0815", "Denial of View"), DOS],
        "response_timeout" | "latency_shift" => &[DOS],
        "device_silent" => &[DOS, RESTART],
        "traffic_flood" => &[DOS, ("T0806", "Brute Force I/O")],
        _ => &[],
    }
}

/// Alert types, for documentation and metrics.
pub const TYPES: [&str; 23] = [
    "new_asset",
    "new_channel",
    "new_function_code",
    "address_out_of_range",
    "unauthorized_write",
    "value_out_of_range",
    "plc_stop",
    "plc_start",
    "program_download",
    "program_upload",
    "device_restart_command",
    "malformed_pdu",
    "crc_error",
    "exception_burst",
    "scan",
    "poll_cycle_broken",
    "response_timeout",
    "latency_shift",
    "device_silent",
    "traffic_flood",
    "device_restarted",
    "behaviour_anomaly",
    "overlap_conflict",
];

struct Entry {
    id: u64,
    count: u64,
    first_seen: i64,
    last_seen: i64,
    emitted_count: u64,
    last_emitted: i64,
    last: Alert,
}

/// Items of a list an alert shows (`learned.server_clients`, `learned.ranges`, …): the first
/// few, with the list's full length in a `<name>_total` field beside it. An alert copies what
/// was learned, and a flood of clients must not make each line (and the alert book's copy) as
/// large as the whole baseline.
pub const ALERT_LIST_ITEMS: usize = 8;

/// Inserts `name` (at most [`ALERT_LIST_ITEMS`] items) and `name_total` into `obj`.
pub fn capped_list<T: serde::Serialize>(
    obj: &mut serde_json::Value,
    name: &str,
    items: impl IntoIterator<Item = T>,
) {
    let mut shown = Vec::with_capacity(ALERT_LIST_ITEMS);
    let mut total = 0usize;
    for item in items {
        if shown.len() < ALERT_LIST_ITEMS {
            shown.push(serde_json::json!(item));
        }
        total += 1;
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert(name.to_string(), serde_json::Value::Array(shown));
        m.insert(format!("{name}_total"), serde_json::json!(total));
    }
}

/// Distinct causes kept per alert type; beyond this, further causes of that type share one
/// `overflow` entry, so spoofed addresses cannot grow the book without bound.
pub const MAX_CAUSES_PER_TYPE: usize = 4096;

/// One alert type's share of the book: its causes kept so far, and the entry that its causes
/// past the bound share (apart from the other entries: under a flood of new causes, most
/// occurrences are counted into it, and finding it was two more lookups, one of them hashing
/// the type's name).
struct TypeSlot {
    name: &'static str,
    causes: usize,
    overflow: Option<Entry>,
}

pub struct AlertBook {
    entries: HashMap<AlertKey, Entry, foldhash::fast::RandomState>,
    /// Per alert type (a few dozen at most: the types are the code's).
    types: Vec<TypeSlot>,
    next_id: u64,
    /// Lines written so far.
    lines: u64,
    /// The latest time detection saw (observations, ticks, occurrences): the end lines' time.
    clock: i64,
    /// A cause seen again this long (capture time) after its last line gets a repeat line.
    realert_nanos: i64,
    pub overflowed: u64,
}

impl AlertBook {
    pub fn new(realert_nanos: i64) -> Self {
        AlertBook {
            entries: HashMap::default(),
            types: Vec::new(),
            next_id: 0,
            lines: 0,
            clock: i64::MIN,
            realert_nanos,
            overflowed: 0,
        }
    }

    /// The causes it holds (an overflow entry counts as one).
    pub fn len(&self) -> usize {
        self.entries.len() + self.overflows().count()
    }

    /// True when the cause was raised before: its text need not be built again.
    pub fn contains(&self, key: &AlertKey) -> bool {
        self.entries.contains_key(key) || self.overflows().any(|e| e.last.key == *key)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries of the types past their bound.
    fn overflows(&self) -> impl Iterator<Item = &Entry> {
        self.types.iter().filter_map(|t| t.overflow.as_ref())
    }

    /// Where the type named `t` is in `types`, added if new ([`find_type`]).
    fn type_at(&mut self, t: &'static str) -> usize {
        if let Some(i) = find_type(&self.types, t) {
            return i;
        }
        self.types.push(TypeSlot {
            name: t,
            causes: 0,
            overflow: None,
        });
        self.types.len() - 1
    }

    /// Records an occurrence; returns the line to write, if any. What the book keeps of `a` is
    /// moved out of it (an alert is large, and a flood raises one per PDU): the caller drops
    /// what is left.
    pub fn raise(&mut self, a: &mut Alert) -> Option<Alert> {
        self.raise_with(a, |_| ())
    }

    /// [`AlertBook::raise`] of a bare occurrence (of the capture `source`) of a cause the book
    /// holds, or of one whose type overflowed into the entry it holds for that: counted as
    /// `raise` counts an occurrence, the line to write, if any, to `out`. False when the book
    /// has no entry for it: the caller raises it whole ([`Bare::alert`]).
    pub fn raise_bare(&mut self, b: &Bare, source: &Arc<str>, out: &mut Vec<Alert>) -> bool {
        let AlertBook {
            entries,
            types,
            overflowed,
            ..
        } = self;
        let e = match entries.get_mut(&b.key) {
            Some(e) => e,
            None => {
                let t = find_type(types, b.key.r#type);
                let Some(t) = t.filter(|&t| types[t].causes >= MAX_CAUSES_PER_TYPE) else {
                    return false;
                };
                let Some(e) = types[t].overflow.as_mut() else {
                    return false;
                };
                *overflowed += 1;
                e
            }
        };
        self.clock = self.clock.max(b.ts);
        e.last.frames.clear();
        e.last.frames.push(b.frame);
        if !Arc::ptr_eq(&e.last.source, source) {
            e.last.source = Arc::clone(source);
        }
        let at = (b.ts, b.src_ip, b.dst_ip, b.ports);
        if let Some(line) = repeat_at(e, at, self.realert_nanos, &mut self.lines) {
            out.push(line);
        }
        true
    }

    /// As [`AlertBook::raise`], calling `first` on the alert (with its own key) just before
    /// it starts an entry of the book: a new cause, or the first past the bound of its type.
    /// An occurrence of an entry already there (most of them, under a flood) is only counted:
    /// it keeps the severity and text of the entry's first line, so what `first` does is for
    /// first lines only.
    pub fn raise_with(&mut self, a: &mut Alert, first: impl FnOnce(&mut Alert)) -> Option<Alert> {
        // A repeat of a known cause (the common case under a flood): one lookup.
        if let Some(e) = self.entries.get_mut(&a.key) {
            self.clock = self.clock.max(a.ts);
            return repeat(e, a, self.realert_nanos, &mut self.lines);
        }
        let t = self.type_at(a.r#type);
        let overflow = self.types[t].causes >= MAX_CAUSES_PER_TYPE;
        if !overflow {
            self.types[t].causes += 1;
        }
        let ts = a.ts;
        self.clock = self.clock.max(ts);
        // Under a flood of new causes, every one past the bound is a repeat of the overflow
        // cause, which keeps its first text.
        if overflow {
            self.overflowed += 1;
            let key = AlertKey::overflow(a.r#type);
            if let Some(e) = self.types[t].overflow.as_mut() {
                a.key = key;
                return repeat(e, a, self.realert_nanos, &mut self.lines);
            }
            first(a);
            a.key = key;
        } else {
            first(a);
        }
        // Text only for a line that starts a cause.
        if a.message.is_empty() {
            a.message = format!("{} {} -> {}", a.r#type, a.src_ip, a.dst_ip);
        }
        if overflow {
            a.message = format!(
                "{} (more causes of this type than the alert book keeps)",
                a.message
            );
        }
        self.next_id += 1;
        let spent = Alert::new(None, a.key, a.severity, a.proto, a.src_ip, a.dst_ip, ts);
        let e = Entry {
            id: self.next_id,
            count: 1,
            first_seen: ts,
            last_seen: ts,
            emitted_count: 1,
            last_emitted: ts,
            last: std::mem::replace(a, spent),
        };
        self.lines += 1;
        let line = stamp(&e, AlertState::First, self.lines);
        if overflow {
            self.types[t].overflow = Some(e);
        } else {
            self.entries.insert(line.key, e);
        }
        Some(line)
    }

    /// The capture clock stepped back to `now`: a cause's re-alert interval counts from the
    /// step at the latest (it would otherwise wait for the clock to catch up).
    pub fn clock_back(&mut self, now: i64) {
        let overflows = self.types.iter_mut().filter_map(|t| t.overflow.as_mut());
        for e in self.entries.values_mut().chain(overflows) {
            e.last_emitted = e.last_emitted.min(now);
        }
    }

    /// Detection's clock reached `ts`: the end lines' time is the latest seen.
    pub fn see(&mut self, ts: i64) {
        self.clock = self.clock.max(ts);
    }

    /// End of input: the last line of every cause, with its final count, in id order, at the
    /// latest time seen (so the lines stay in capture-time order).
    pub fn finish(&mut self) -> Vec<Alert> {
        let clock = self.clock;
        let overflows = self.types.iter_mut().filter_map(|t| t.overflow.as_mut());
        let mut out: Vec<Alert> = (self.entries.values_mut().chain(overflows))
            .map(|e| {
                e.emitted_count = e.count;
                let mut a = stamp(e, AlertState::End, 0);
                a.ts = a.ts.max(clock);
                a
            })
            .collect();
        out.sort_by_key(|a| a.id);
        for a in &mut out {
            self.lines += 1;
            a.line = self.lines;
        }
        out
    }
}

/// Where the type named `t` is in `types`: by where its name is (the same literal, almost
/// always), then by what it says.
fn find_type(types: &[TypeSlot], t: &'static str) -> Option<usize> {
    (types.iter().position(|s| std::ptr::eq(s.name, t)))
        .or_else(|| types.iter().position(|s| s.name == t))
}

/// Another occurrence of the cause `e`: it keeps the text of the cause's first line, with this
/// occurrence's time and frames; a line when the re-alert interval has passed since the last.
fn repeat(e: &mut Entry, a: &mut Alert, realert_nanos: i64, lines: &mut u64) -> Option<Alert> {
    e.last.frames = std::mem::take(&mut a.frames);
    std::mem::swap(&mut e.last.source, &mut a.source);
    repeat_at(e, (a.ts, a.src_ip, a.dst_ip, a.ports), realert_nanos, lines)
}

/// [`repeat`] but for the frames and capture (set by the caller): an occurrence at `ts` from
/// `src` to `dst` (`ports`).
fn repeat_at(
    e: &mut Entry,
    (ts, src, dst, ports): (i64, IpAddr, IpAddr, Option<crate::obs::Ports>),
    realert_nanos: i64,
    lines: &mut u64,
) -> Option<Alert> {
    e.count += 1;
    e.first_seen = e.first_seen.min(ts);
    e.last_seen = e.last_seen.max(ts);
    e.last.ts = ts;
    // The latest occurrence's ports when it went the same way as the first; a cause seen both
    // ways (a malformed PDU from each side) must not pair the first's addresses with the
    // other way's ports: a flow id of a flow that never was.
    if (src, dst) == (e.last.src_ip, e.last.dst_ip) {
        e.last.ports = ports;
    }
    if ts.saturating_sub(e.last_emitted) >= realert_nanos {
        e.last_emitted = ts;
        e.emitted_count = e.count;
        *lines += 1;
        Some(stamp(e, AlertState::Update, *lines))
    } else {
        None
    }
}

fn stamp(e: &Entry, state: AlertState, line: u64) -> Alert {
    let mut a = e.last.clone();
    a.id = e.id;
    a.line = line;
    a.state = state;
    a.count = e.count;
    a.first_seen = e.first_seen;
    a.last_seen = e.last_seen;
    a.repeat = state != AlertState::First;
    if a.repeat {
        a.ts = e.last_seen;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// `first` runs once per entry the book starts, with the occurrence's own key: for a new
    /// cause, and for the first cause past its type's bound (which starts the overflow entry);
    /// never for an occurrence counted into an entry already there. What it does to the alert
    /// is the entry's first line.
    #[test]
    fn raise_with_calls_first_only_for_the_lines_that_start_an_entry() {
        let mut book = AlertBook::new(i64::MAX);
        let occurrence = |n: u32, ts: i64| {
            let server = std::net::Ipv4Addr::from(0x0a00_0000 + n).into();
            let key = AlertKey::host("new_asset", server);
            let mut a = Alert::new(None, key, Severity::High, Proto::Modbus, server, NO_IP, ts);
            a.message = format!("host {n}");
            a
        };
        let mut firsts = Vec::new();
        let mut lines = Vec::new();
        // Every cause up to the bound, each twice; then two past it, twice each.
        let causes = MAX_CAUSES_PER_TYPE as u32 + 2;
        for round in 0..2 {
            for n in 0..causes {
                let mut a = occurrence(n, i64::from(round * causes + n));
                let line = book.raise_with(&mut a, |a| {
                    firsts.push(a.key);
                    a.severity = Severity::Low;
                });
                lines.extend(line);
            }
        }
        // One per cause kept, and one for the first past the bound (with its own key).
        assert_eq!(firsts.len(), MAX_CAUSES_PER_TYPE + 1);
        assert_eq!(
            firsts[MAX_CAUSES_PER_TYPE].a,
            occurrence(MAX_CAUSES_PER_TYPE as u32, 0).key.a
        );
        assert!(firsts
            .iter()
            .all(|k| k.r#type == "new_asset" && k.proto.is_none()));
        // Only first lines (the re-alert interval never passes), each as `first` left it.
        assert_eq!(lines.len(), MAX_CAUSES_PER_TYPE + 1);
        assert!(lines
            .iter()
            .all(|l| l.severity == Severity::Low && !l.repeat));
        assert_eq!(book.overflowed, 2 * 2);
        // The overflow entry is one cause among the type's.
        assert_eq!(book.len(), MAX_CAUSES_PER_TYPE + 1);
        // A type's name where another literal of it is (built at run time here) is the same
        // type: its causes go on counting against the same bound.
        let elsewhere: &'static str = Box::leak("new_asset".to_string().into_boxed_str());
        let server = std::net::Ipv4Addr::from(0x0b00_0000).into();
        let mut a = Alert::new(
            None,
            AlertKey::host(elsewhere, server),
            Severity::High,
            Proto::Modbus,
            server,
            NO_IP,
            9,
        );
        assert!(book.raise_with(&mut a, |_| panic!("a new entry")).is_none());
        assert_eq!(book.overflowed, 2 * 2 + 1);
        let end = book.finish();
        let overflow = end
            .iter()
            .find(|l| l.key == AlertKey::overflow("new_asset"));
        // The overflow entry counts all five occurrences past the bound.
        assert_eq!(overflow.map(|l| l.count), Some(5));
    }

    /// A bare occurrence of a cause the book holds is counted as the whole alert it stands for
    /// would be: the same lines (counts, times, frames, ports, capture) and the same end lines,
    /// over causes seen both ways, captures that change, re-alert intervals that pass, and a
    /// type past its bound (counted into its overflow entry); one the book does not hold is
    /// handed back to be raised whole.
    #[test]
    fn a_bare_occurrence_is_counted_as_its_whole_alert() {
        let captures: [Arc<str>; 2] = [Arc::from("a.pcap"), Arc::from("b.pcap")];
        let host = |n: u32| -> IpAddr { std::net::Ipv4Addr::from(0x0a00_0000 + n).into() };
        // Occurrence `i`: of one of the type's causes, past its bound for some, from either
        // end, at a time that lets the re-alert interval (1000) pass now and then.
        let bare = |i: u32| {
            let n = i % (MAX_CAUSES_PER_TYPE as u32 + 7);
            let (src, dst) = if i.is_multiple_of(3) {
                (host(n), host(1 << 20))
            } else {
                (host(1 << 20), host(n))
            };
            Bare {
                key: AlertKey::host("new_asset", host(n)),
                ts: i64::from(i) * 37,
                frame: u64::from(i) + 1,
                src_ip: src,
                dst_ip: dst,
                ports: Some(crate::obs::Ports {
                    src: 1000 + (i % 5) as u16,
                    dst: 502,
                    udp: false,
                }),
                severity: Severity::High,
                proto: Proto::Modbus,
                at: 0,
            }
        };
        // The capture changes twice (a replay of three files), not with the cause.
        let source = |i: u32| &captures[(i / 5000 % 2) as usize];
        let (mut whole, mut bared) = (AlertBook::new(1000), AlertBook::new(1000));
        let (mut lines_whole, mut lines_bared) = (Vec::new(), Vec::new());
        let mut handed_back = 0;
        for i in 0..3 * (MAX_CAUSES_PER_TYPE as u32 + 7) {
            let b = bare(i);
            lines_whole.extend(whole.raise(&mut b.alert(source(i))));
            if !bared.raise_bare(&b, source(i), &mut lines_bared) {
                handed_back += 1;
                lines_bared.extend(bared.raise(&mut b.alert(source(i))));
            }
        }
        // Each cause's first occurrence (the overflow entry's first included) was not held.
        assert_eq!(handed_back, MAX_CAUSES_PER_TYPE + 1);
        assert_eq!(whole.overflowed, bared.overflowed);
        assert!(whole.overflowed > 0);
        let fields = |l: &Alert| {
            (
                (l.id, l.line, l.state, l.key, l.ts, l.count),
                (l.first_seen, l.last_seen, l.src_ip, l.dst_ip, l.ports),
                (l.source.to_string(), l.frames.clone(), l.text_skipped),
            )
        };
        let updates = lines_whole.iter().filter(|l| l.repeat).count();
        assert!(updates > 100, "{updates} update lines");
        assert_eq!(
            lines_whole.iter().map(fields).collect::<Vec<_>>(),
            lines_bared.iter().map(fields).collect::<Vec<_>>()
        );
        let (end_whole, end_bared) = (whole.finish(), bared.finish());
        for name in ["a.pcap", "b.pcap"] {
            assert!(
                end_whole.iter().any(|l| l.source.as_ref() == name),
                "{name}"
            );
        }
        assert_eq!(
            end_whole.iter().map(fields).collect::<Vec<_>>(),
            end_bared.iter().map(fields).collect::<Vec<_>>()
        );
    }

    /// A cause seen both ways (a malformed PDU from the client, then from the server): its repeat
    /// lines keep the first's addresses, and take a later occurrence's ports only when it went
    /// the same way, so that the line's ports and addresses are one flow's.
    #[test]
    fn repeat_lines_pair_addresses_with_their_own_ports() {
        let mut book = AlertBook::new(0);
        let (client, server): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let ch = crate::obs::Channel {
            proto: Proto::Modbus,
            client,
            server,
            unit: 1,
        };
        let key = AlertKey::channel("malformed_pdu", &ch, 0);
        let occurrence = |from_client: bool, client_port: u16, ts: i64| {
            let (src, dst) = if from_client {
                (client, server)
            } else {
                (server, client)
            };
            let mut a = Alert::new(None, key, Severity::Medium, Proto::Modbus, src, dst, ts);
            let ports = crate::obs::Ports {
                src: client_port,
                dst: 502,
                udp: false,
            };
            a.ports = Some(if from_client { ports } else { ports.reversed() });
            a
        };
        let lines: Vec<Alert> = [(true, 40000, 1), (false, 40000, 2), (true, 40001, 3)]
            .into_iter()
            .filter_map(|(c, p, ts)| book.raise_with(&mut occurrence(c, p, ts), |_| {}))
            .collect();
        let seen: Vec<_> = lines
            .iter()
            .map(|l| (l.src_ip, l.ports.map(|p| (p.src, p.dst))))
            .collect();
        assert_eq!(
            seen,
            [
                (client, Some((40000, 502))),
                (client, Some((40000, 502))),
                (client, Some((40001, 502))),
            ]
        );
    }

    /// Keys that are equal hash the same, wherever their type's text lies (the same type named
    /// at two places of the code); keys that differ in one field hash apart.
    #[test]
    fn equal_keys_hash_the_same_and_others_apart() {
        let state = foldhash::fast::RandomState::default();
        let hash = |k: &AlertKey| state.hash_one(k);
        let ch = crate::obs::Channel {
            proto: Proto::Modbus,
            client: [10, 0, 0, 1].into(),
            server: [10, 0, 0, 2].into(),
            unit: 1,
        };
        for name in [
            "x",
            "new_channel",
            "value_out_of_range",
            "a_type_of_sixteen",
        ] {
            let elsewhere: &'static str = Box::leak(name.to_string().into_boxed_str());
            let (k1, k2) = (
                AlertKey::channel(name, &ch, 7),
                AlertKey::channel(elsewhere, &ch, 7),
            );
            assert!(!std::ptr::eq(k1.r#type, k2.r#type));
            assert_eq!(k1, k2);
            assert_eq!(hash(&k1), hash(&k2), "{name}");
        }
        let base = AlertKey::channel("value_out_of_range", &ch, 7);
        let v6: IpAddr = "::ffff:10.0.0.1".parse().expect("an address");
        let others = [
            AlertKey::channel("value_out_of_rangf", &ch, 7),
            AlertKey::channel("walue_out_of_range", &ch, 7),
            AlertKey::channel("value_out_of_range", &ch, 8),
            AlertKey::new(base.r#type, None, base.a, base.b, base.unit, base.extra),
            AlertKey::new(base.r#type, Some(Proto::Dnp3), base.a, base.b, base.unit, 7),
            AlertKey::new(base.r#type, base.proto, ch.server, ch.client, base.unit, 7),
            AlertKey::new(base.r#type, base.proto, v6, base.b, base.unit, 7),
            AlertKey::new(base.r#type, base.proto, base.a, base.b, 2, 7),
            AlertKey::new(base.r#type, base.proto, base.a, base.b, base.unit, 7 << 40),
        ];
        for other in others {
            assert_ne!(base, other);
            assert_ne!(hash(&base), hash(&other), "{other:?}");
        }
    }
}
