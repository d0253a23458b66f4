//! The learned baseline: what the plant did during learning, as a versioned, human-readable
//! JSON file (written atomically).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::behaviour::BehaviourModel;
use crate::obs::{Channel, Proto};
use crate::ranges::Ranges;

pub const FORMAT: &str = "otwatch-baseline";
/// The baseline file's version. 2: S7 address spaces are an item's area and DB with bits apart
/// from bytes, and the behaviour model's features are this otwatch's; a version 1 file, which
/// may hold neither, is refused rather than read with another meaning. 3: functions that are a
/// code and a sub-code (Modbus UMAS `90 | umas << 8`, CIP object-specific services per class)
/// and S7 timers and counters one address each; a version 2 file would make every UMAS or
/// object-specific request a new function.
pub const VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not an otwatch baseline: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: baseline format {found:?} version {version} (this otwatch reads {FORMAT:?} version {VERSION}: learn the baseline again with this otwatch)")]
    Version {
        path: String,
        found: String,
        version: u32,
    },
    /// It parses, but detection could not use it as written (a hand edit, another version).
    #[error("{path}: {what}")]
    Invalid { path: String, what: String },
}

/// Keys of `input` (the file's JSON) that the baseline read back has no place for: a typo
/// (`lateny`) would silently drop the model it names. Maps keyed by numbers are not compared
/// key by key (`"03"` reads as 3); a key whose value is null or empty is what an absent optional
/// member reads as.
fn unknown_keys(
    input: &serde_json::Value,
    known: &serde_json::Value,
    at: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            let map = !i.is_empty() && i.keys().all(|key| key.parse::<u64>().is_ok());
            for (key, v) in i {
                let here = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_keys(v, kv, &here, out),
                    None if map => {}
                    None => {
                        let empty = match v {
                            Value::Null => true,
                            Value::Array(a) => a.is_empty(),
                            Value::Object(o) => o.is_empty(),
                            _ => false,
                        };
                        if !empty && out.len() < 8 {
                            out.push(here);
                        }
                    }
                }
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (iv, kv)) in i.iter().zip(k).enumerate() {
                unknown_keys(iv, kv, &format!("{at}[{n}]"), out);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    pub format: String,
    pub version: u32,
    /// Capture time covered by learning, seconds since the Unix epoch.
    pub learned_from: f64,
    pub learned_until: f64,
    pub observations: u64,
    pub assets: Vec<Asset>,
    pub channels: Vec<ChannelModel>,
    /// The multivariate model over per-channel windows; absent when learning saw too few windows.
    pub behaviour: Option<BehaviourModel>,
    /// Observations learning had to leave out because a bound was hit: a baseline that is
    /// not the whole picture says so.
    #[serde(default, skip_serializing_if = "Unlearned::is_empty")]
    pub unlearned: Unlearned,
}

/// Observations not learned, by the bound that was hit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Unlearned {
    /// Observations of devices beyond `MAX_ASSETS` (their device was not learned).
    pub assets: u64,
    /// Observations of channels beyond `MAX_CHANNELS`.
    pub channels: u64,
    /// Values of points beyond `MAX_POINTS`.
    pub points: u64,
    /// Accesses of address spaces beyond `MAX_SPACES` (their addresses were not learned).
    #[serde(default)]
    pub spaces: u64,
}

impl Unlearned {
    pub fn is_empty(&self) -> bool {
        *self == Unlearned::default()
    }

    /// One line for a person, or `None` when learning kept everything.
    pub fn describe(&self) -> Option<String> {
        use crate::learn::{MAX_ASSETS, MAX_CHANNELS, MAX_POINTS, MAX_SPACES};
        if self.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        for (n, what, max) in [
            (self.assets, "observations of devices beyond", MAX_ASSETS),
            (
                self.channels,
                "observations of channels beyond",
                MAX_CHANNELS,
            ),
            (self.points, "values of points beyond", MAX_POINTS),
            (self.spaces, "accesses of address spaces beyond", MAX_SPACES),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what} the first {max}"));
            }
        }
        Some(format!(
            "INCOMPLETE: learning hit its bounds and left out {}",
            parts.join(", ")
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Asset {
    pub ip: IpAddr,
    pub protocols: Vec<Proto>,
    /// `client` (master, HMI) and/or `server` (PLC, RTU, outstation).
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub identity: Option<String>,
    /// Ethernet addresses it sent from (a router's, for hosts beyond one), at most 8.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub macs: Vec<String>,
    /// Longest gap between two PDUs sent by this asset as a server, seconds; absent when it
    /// answered fewer than three times.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_silence: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelModel {
    #[serde(flatten)]
    pub channel: Channel,
    /// Requests per function code.
    pub functions: BTreeMap<u32, u64>,
    pub requests: u64,
    pub responses: u64,
    pub exceptions: u64,
    /// The client wrote (a write function, or a state-changing command).
    pub wrote: bool,
    /// Address ranges read and written, per address space.
    pub reads: BTreeMap<u32, Ranges>,
    pub writes: BTreeMap<u32, Ranges>,
    pub points: Vec<PointModel>,
    pub polls: Vec<PollModel>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency: Option<LatencyModel>,
    /// Most requests and exceptions in any `rate_window` seconds.
    pub rate_window: f64,
    pub max_requests_per_window: u64,
    pub max_exceptions_per_window: u64,
    /// Requests that awaited a response and got none in learning (a unit behind a gateway
    /// that never answers, a device that was off). Older baselines: 0.
    #[serde(default)]
    pub unanswered: u64,
    /// How many times learning saw the channel's most repeated request (function and address
    /// block). Older baselines: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_cycles: Option<u64>,
}

/// A channel learned from fewer PDUs than this is under-learned.
pub const MIN_LEARNED_PDUS: u64 = 40;
/// A channel with requests whose most repeated one came fewer times than this is under-learned:
/// its cycle, rates and timing rest on too few samples.
pub const MIN_LEARNED_CYCLES: u64 = 10;

impl ChannelModel {
    /// Learning saw too little of it for its alerts to be more than a hint: some but fewer than
    /// [`MIN_LEARNED_PDUS`] requests and responses, or requests whose most repeated one came
    /// fewer than [`MIN_LEARNED_CYCLES`] times.
    pub fn under_learned(&self) -> bool {
        // A conversation of an undissected protocol has no PDUs to learn from: not a channel
        // whose model could be thin.
        let pdus = self.requests + self.responses;
        pdus > 0 && pdus < MIN_LEARNED_PDUS
            || self.requests > 0 && self.poll_cycles.is_some_and(|n| n < MIN_LEARNED_CYCLES)
    }
}

/// Envelope of one point's values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PointModel {
    pub space: u32,
    pub address: u32,
    pub min: f64,
    pub max: f64,
    /// Largest change between two consecutive values.
    pub max_step: f64,
    pub samples: u64,
}

/// A request repeated on a period: same function, same address block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PollModel {
    pub function: u32,
    pub space: u32,
    pub start: u32,
    pub count: u32,
    /// Median interval, seconds.
    pub period: f64,
    /// 95th percentile of |interval − period|, seconds.
    pub jitter: f64,
    pub samples: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyModel {
    pub samples: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Baseline {
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let name = path.display().to_string();
        let io = |source| BaselineError::Io {
            path: name.clone(),
            source,
        };
        // A FIFO or a device would block the read (a FIFO, waiting for a writer, out of reach
        // of SIGINT): a baseline is a file.
        if !std::fs::metadata(path).map_err(io)?.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Baseline::from_json(&text, &name)
    }

    /// A baseline from its JSON text; `name` says where it came from in errors.
    pub fn from_json(text: &str, name: &str) -> Result<Baseline, BaselineError> {
        // Check the header first, so an old or foreign file gets a version message rather than
        // a field-level parse error.
        #[derive(Deserialize)]
        struct Header {
            format: String,
            version: u32,
        }
        let header: Header = serde_json::from_str(text).map_err(|source| BaselineError::Parse {
            path: name.to_string(),
            source,
        })?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(BaselineError::Version {
                path: name.to_string(),
                found: header.format,
                version: header.version,
            });
        }
        let input: serde_json::Value =
            serde_json::from_str(text).map_err(|source| BaselineError::Parse {
                path: name.to_string(),
                source,
            })?;
        let mut b: Baseline =
            serde_json::from_value(input.clone()).map_err(|source| BaselineError::Parse {
                path: name.to_string(),
                source,
            })?;
        let invalid = |what: String| BaselineError::Invalid {
            path: name.to_string(),
            what,
        };
        let known = serde_json::to_value(&b).map_err(|e| invalid(e.to_string()))?;
        let mut unknown = Vec::new();
        unknown_keys(&input, &known, "", &mut unknown);
        if !unknown.is_empty() {
            return Err(invalid(format!(
                "unknown key(s) {} (a typo, or a baseline of another otwatch: learn again)",
                unknown.join(", ")
            )));
        }
        b.check().map_err(invalid)?;
        Ok(b)
    }

    /// What detection needs of a baseline that JSON alone does not say: address ranges sorted
    /// and merged (a hand edit may list them in any order; each must start before it ends), each
    /// channel and device listed once, and a behaviour model of this otwatch's features with
    /// finite, positive scales.
    fn check(&mut self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for c in &mut self.channels {
            let ch = c.channel;
            if !seen.insert(ch) {
                return Err(format!(
                    "channel {:?} {} -> {} unit {} listed twice (merge the entries)",
                    ch.proto, ch.client, ch.server, ch.unit
                ));
            }
            for (write, map) in [(false, &mut c.reads), (true, &mut c.writes)] {
                for (space, r) in map.iter_mut() {
                    let mut merged = Ranges::default();
                    for &[lo, hi] in &r.0 {
                        if lo > hi {
                            return Err(format!(
                                "channel {:?} {} -> {}: {} range [{lo}, {hi}] of space {space} ends before it starts",
                                ch.proto,
                                ch.client,
                                ch.server,
                                if write { "write" } else { "read" }
                            ));
                        }
                        merged.insert(lo, hi);
                    }
                    *r = merged;
                }
            }
        }
        let mut ips = std::collections::HashSet::new();
        for a in &self.assets {
            if !ips.insert(a.ip) {
                return Err(format!("asset {} listed twice (merge the entries)", a.ip));
            }
        }
        if let Some(m) = &self.behaviour {
            let n = crate::behaviour::FEATURES.len();
            let features_ok = m.features.len() == n
                && m.features
                    .iter()
                    .zip(crate::behaviour::FEATURES)
                    .all(|(a, b)| a == b);
            if !features_ok {
                return Err(format!(
                    "behaviour model features {:?}: this otwatch's are {:?} (learn again)",
                    m.features,
                    crate::behaviour::FEATURES
                ));
            }
            let scales_ok = m.mean.len() == n
                && m.std.len() == n
                && m.mean.iter().all(|v| v.is_finite())
                && m.std.iter().all(|v| v.is_finite() && *v > 0.0);
            let centroids_ok = !m.centroids.is_empty()
                && m.centroids
                    .iter()
                    .all(|c| c.len() == n && c.iter().all(|v| v.is_finite()));
            if !scales_ok || !centroids_ok {
                return Err(
                    "behaviour model: mean, std (each above 0) and centroids must have one finite value per feature, and there must be a centroid".into(),
                );
            }
            let window_ok = (1.0..=3600.0).contains(&m.window);
            if !window_ok || !m.threshold.is_finite() || m.threshold <= 0.0 {
                return Err(format!(
                    "behaviour model: window {} s (1 to 3600) and threshold {} (above 0) out of range",
                    m.window, m.threshold
                ));
            }
        }
        Ok(())
    }

    /// Writes to a temporary file beside `path`, then renames it over `path`: a reader never sees
    /// half a baseline, and a crash leaves the old one in place.
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let io = |source| BaselineError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        text.push('\n');
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
        let result = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// The under-learned channels ([`ChannelModel::under_learned`]), as text.
    pub fn under_learned(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|c| c.under_learned())
            .map(|c| c.channel.to_string())
            .collect()
    }

    /// What was learned, for a person (`otwatch baseline show`).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let span = self.learned_until - self.learned_from;
        let _ = writeln!(
            s,
            "Baseline ({FORMAT} v{}): {} observations over {:.1} s of capture time",
            self.version, self.observations, span
        );
        if let Some(line) = self.unlearned.describe() {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "\nAssets ({}):", self.assets.len());
        for a in &self.assets {
            let protos: Vec<&str> = a.protocols.iter().map(|p| p.name()).collect();
            let _ = write!(
                s,
                "  {:<40} {:<12} {}",
                a.ip.to_string(),
                a.roles.join("+"),
                protos.join(",")
            );
            if let Some(id) = &a.identity {
                let _ = write!(s, "  [{id}]");
            }
            if !a.macs.is_empty() {
                let _ = write!(s, "  mac {}", a.macs.join(","));
            }
            if let Some(gap) = a.max_silence {
                let _ = write!(s, "  longest silence {gap:.1} s");
            }
            s.push('\n');
        }
        let weak = self.under_learned();
        if !weak.is_empty() {
            let _ = writeln!(
                s,
                "Under-learned channels ({}: fewer than {MIN_LEARNED_PDUS} PDUs, or fewer than {MIN_LEARNED_CYCLES} cycles of their most repeated request; their alerts carry confidence low):",
                weak.len()
            );
            for w in &weak {
                let _ = writeln!(s, "  {w}");
            }
        }
        let _ = writeln!(s, "\nChannels ({}):", self.channels.len());
        for c in &self.channels {
            let _ = writeln!(
                s,
                "  {}: {} requests, {} responses, {} exceptions{}",
                c.channel,
                c.requests,
                c.responses,
                c.exceptions,
                if c.wrote { ", writes" } else { "" }
            );
            if !c.functions.is_empty() {
                let f: Vec<String> = c
                    .functions
                    .iter()
                    .map(|(k, n)| format!("{k}×{n}"))
                    .collect();
                let _ = writeln!(s, "    functions: {}", f.join(" "));
            }
            for (what, map) in [("reads", &c.reads), ("writes", &c.writes)] {
                for (space, r) in map {
                    let list: Vec<String> =
                        r.0.iter()
                            .map(|[lo, hi]| {
                                if lo == hi {
                                    lo.to_string()
                                } else {
                                    format!("{lo}-{hi}")
                                }
                            })
                            .collect();
                    let _ = writeln!(
                        s,
                        "    {what} {}: {}",
                        c.channel.proto.space_name(*space),
                        list.join(", ")
                    );
                }
            }
            for p in &c.polls {
                let _ = writeln!(
                    s,
                    "    poll: function {} {} {}+{} every {:.3} s (jitter {:.3} s, {} intervals)",
                    p.function,
                    c.channel.proto.space_name(p.space),
                    p.start,
                    p.count,
                    p.period,
                    p.jitter,
                    p.samples
                );
            }
            if let Some(l) = &c.latency {
                let _ = writeln!(
                    s,
                    "    latency: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} responses)",
                    l.p50 * 1e3,
                    l.p95 * 1e3,
                    l.p99 * 1e3,
                    l.max * 1e3,
                    l.samples
                );
            }
            let _ = writeln!(
                s,
                "    rate: at most {} requests and {} exceptions per {} s; {} points with value envelopes",
                c.max_requests_per_window,
                c.max_exceptions_per_window,
                c.rate_window,
                c.points.len()
            );
        }
        match &self.behaviour {
            Some(m) => {
                let _ = writeln!(
                    s,
                    "\nBehaviour model: k-means, {} clusters over {} windows of {} s, features {}; threshold {:.3}",
                    m.centroids.len(),
                    m.training_windows,
                    m.window,
                    m.features.join(","),
                    m.threshold
                );
            }
            None => {
                let _ = writeln!(s, "\nBehaviour model: none (too few training windows)");
            }
        }
        s
    }

    pub fn channel(&self, ch: &Channel) -> Option<&ChannelModel> {
        self.channels.iter().find(|c| &c.channel == ch)
    }
}
