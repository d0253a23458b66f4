//! Devices (new ones, new Ethernet addresses behind a known one) and scans: one client walking
//! units, functions, addresses, ports or hosts beyond what learning saw.

use super::*;

pub(super) struct AssetRt {
    pub(super) ip: IpAddr,
    pub(super) threshold: f64,
    /// `threshold` in nanoseconds, worked out once: every PDU of the device moves its timer
    /// (a float product and its conversion to an integer a PDU).
    pub(super) threshold_nanos: i64,
    pub(super) last: i64,
    pub(super) last_frame: u64,
    pub(super) source: Option<Arc<str>>,
    pub(super) proto: Proto,
    pub(super) peer: Option<IpAddr>,
    pub(super) silent: bool,
}

/// What a client did new in the last [`SCAN_WINDOW`]: each new unit, function, address or
/// port with the time it was first seen, and the frames that brought them. A sliding window:
/// what is older than the window is forgotten when the oldest item ages out, so a scan is
/// caught whenever it falls (a tumbling window restarted by the client's own routine requests
/// split a scan that crossed its edge).
#[derive(Default)]
pub(super) struct ScanRt {
    /// The time of the oldest item held (or of the request that found the window empty).
    pub(super) start: i64,
    pub(super) units: FastMap<(IpAddr, u32), i64>,
    pub(super) functions: FastMap<(IpAddr, u32), i64>,
    pub(super) addresses: FastMap<(IpAddr, u32, u32), i64>,
    pub(super) ports: FastMap<(IpAddr, u32), i64>,
    /// The first frames (at most 8) that brought something new, with their times.
    pub(super) frames: Vec<(i64, u64)>,
}

impl ScanRt {
    /// Forgets what was first seen before `cutoff`; the window then starts at its oldest item
    /// left, or at `now` when none is.
    fn slide(&mut self, cutoff: i64, now: i64) {
        self.units.retain(|_, t| *t >= cutoff);
        self.functions.retain(|_, t| *t >= cutoff);
        self.addresses.retain(|_, t| *t >= cutoff);
        self.ports.retain(|_, t| *t >= cutoff);
        self.frames.retain(|f| f.0 >= cutoff);
        let oldest = [
            self.units.values().min(),
            self.functions.values().min(),
            self.addresses.values().min(),
            self.ports.values().min(),
        ];
        self.start = oldest.into_iter().flatten().copied().min().unwrap_or(now);
    }

    /// Notes `key` in `set` as new at `o`'s time (its first sighting kept), with `o`'s frame.
    pub(super) fn note<K: std::hash::Hash + Eq>(
        set: &mut FastMap<K, i64>,
        frames: &mut Vec<(i64, u64)>,
        key: K,
        o: &Observation,
    ) {
        if set.len() >= SCAN_SET_BOUND || set.contains_key(&key) {
            return;
        }
        set.insert(key, o.ts);
        if frames.len() < 8 && frames.last().map(|f| f.1) != Some(o.frame) {
            frames.push((o.ts, o.frame));
        }
    }
}

/// `new_asset` for the sender of `o`, a known device, sending from `mac`, not one of the
/// `learned`.
#[cold]
#[inline(never)]
fn new_mac(
    raised: &mut Raised,
    o: &Observation,
    mac: [u8; 6],
    learned: &[[u8; 6]],
    out: &mut Vec<Alert>,
) {
    let ip = o.src();
    let mac_extra = mac.iter().fold(1u64, |acc, b| acc << 8 | u64::from(*b));
    let key = AlertKey::host_about("new_asset", ip, mac_extra);
    if let Some(mut a) = fresh(raised, o, (key, Severity::High), out) {
        let learned_text: Vec<String> =
            learned.iter().map(|m| crate::learn::mac_text(*m)).collect();
        a.message = format!(
            "{ip} sends from Ethernet address {}, learned {}",
            crate::learn::mac_text(mac),
            learned_text.join(", ")
        );
        *a.learned = json!({"macs": learned_text});
        *a.observed = json!({"ip": ip, "mac": crate::learn::mac_text(mac)});
        out.push(a);
    }
}

/// A UDP conversation of a protocol otwatch does not dissect to a broadcast or multicast
/// address: hosts' housekeeping (NetBIOS, LLMNR, mDNS, SSDP, DHCP), which no OT process depends
/// on. A new device behind it is still reported (`new_asset`); the conversation itself is not.
/// (TCP cannot be broadcast: a TCP host at x.x.x.255 of a wider subnet is a host.)
pub(super) fn background(ch: &Channel) -> bool {
    ch.proto == Proto::Udp && is_group_address(ch.server)
}

/// Broadcast and multicast destinations are not devices. IPv4 `x.x.x.255` is taken for a /24
/// broadcast, the usual plant subnet. Nor is the unspecified address (0.0.0.0, `::`): a known
/// device asking DHCP for its address, or an IPv6 duplicate address check, sends from it.
pub(super) fn is_group_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified() || v4.octets()[3] == 255
        }
        IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
    }
}

pub(super) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The clients' scan windows; `index` finds one. `generation` counts the times the table was
/// full and started afresh: a place remembered from an older generation is stale.
#[derive(Default)]
pub(super) struct Scans {
    windows: Vec<ScanRt>,
    index: FastMap<IpAddr, usize>,
    generation: u64,
}

/// Where a learned channel's client last found its scan window: (generation, place).
pub(super) type ScanPlace = Option<(u64, usize)>;

/// The client's scan window, started afresh when it has expired (or the table is full), with
/// this PDU's frame among its first eight. `place`: where this channel found it last (kept up
/// to date here), so that a learned channel's request needs no lookup.
pub(super) fn scan_window<'a>(
    scans: &'a mut Scans,
    resets: &mut u64,
    o: &Observation,
    place: &mut ScanPlace,
) -> &'a mut ScanRt {
    let client = o.channel.client;
    let at = match *place {
        Some((generation, at)) if generation == scans.generation => at,
        _ => {
            let at = match scans.index.get(&client) {
                Some(&at) => at,
                None => {
                    if scans.windows.len() >= MAX_SCAN_CLIENTS {
                        scans.windows.clear();
                        scans.index.clear();
                        scans.generation += 1;
                        *resets += 1;
                    }
                    scans.index.insert(client, scans.windows.len());
                    scans.windows.push(ScanRt::default());
                    scans.windows.len() - 1
                }
            };
            *place = Some((scans.generation, at));
            at
        }
    };
    let s = &mut scans.windows[at];
    if o.ts < s.start {
        // The clock stepped back: start afresh.
        *s = ScanRt {
            start: o.ts,
            ..ScanRt::default()
        };
    } else if o.ts.saturating_sub(s.start) > SCAN_WINDOW {
        s.slide(o.ts.saturating_sub(SCAN_WINDOW), o.ts);
    }
    s
}

/// A scan alert when the client's window holds enough new units, functions, addresses or ports.
pub(super) fn scan_alert(s: &ScanRt, raised: &mut Raised, o: &Observation, out: &mut Vec<Alert>) {
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
    scan(s, raised, o, (what, [u, f, a, p]), out);
}

/// `scan` for `o`'s client, walking `what` (its window's counts of new units, functions,
/// addresses and ports). Out of line, as the detector's other alert texts.
#[cold]
#[inline(never)]
fn scan(
    s: &ScanRt,
    raised: &mut Raised,
    o: &Observation,
    (what, [u, f, a, p]): (&str, [usize; 4]),
    out: &mut Vec<Alert>,
) {
    if let Some(mut al) = fresh(
        raised,
        o,
        (AlertKey::host("scan", o.channel.client), Severity::High),
        out,
    ) {
        al.message = format!(
            "{} is walking {what} it never used in learning",
            o.channel.client
        );
        al.frames = s.frames.iter().map(|f| f.1).collect();
        *al.learned = json!({"window_s": SCAN_WINDOW / NANOS, "thresholds": {"units": SCAN_UNITS, "functions": SCAN_FUNCTIONS, "addresses": SCAN_ADDRESSES, "ports": SCAN_PORTS}});
        *al.observed =
            json!({"new_units": u, "new_functions": f, "new_addresses": a, "new_ports": p});
        out.push(al);
    }
}

impl Detector {
    /// New devices and new Ethernet addresses; returns whether either end is a new device.
    /// `ends_known`: both ends are learned devices (a learned channel's, worked out once);
    /// `device`: the sender's place in `devices`, if it has one.
    pub(super) fn check_assets(
        &mut self,
        o: &Observation,
        ends_known: bool,
        device: Option<usize>,
        out: &mut Vec<Alert>,
    ) -> bool {
        let ch = &o.channel;
        let mut new_device = false;
        let ends: &[(IpAddr, &str)] = if ends_known {
            &[]
        } else {
            &[(ch.client, "client"), (ch.server, "server")]
        };
        for &(ip, role) in ends {
            if !self.assets.contains(&ip) && !is_group_address(ip) && !self.known_link_local(o, ip)
            {
                new_device = true;
                self.new_asset(o, (ip, role), out);
            }
        }
        // A known device sending from an Ethernet address it never used: replaced hardware,
        // or someone else answering for its IP.
        let learned = device.and_then(|d| self.devices.get(d)?.macs.as_ref());
        if let (Some(mac), Some(learned)) = (o.src_mac, learned) {
            if !learned.is_empty() && !learned.contains(&mac) {
                new_mac(&mut self.raised, o, mac, learned, out);
            }
        }
        new_device
    }

    /// `new_asset` for `ip`, an end (`role`) of `o` learning never saw. Out of line, as the
    /// detector's other alert texts.
    #[cold]
    #[inline(never)]
    fn new_asset(&mut self, o: &Observation, (ip, role): (IpAddr, &str), out: &mut Vec<Alert>) {
        let ch = &o.channel;
        if let Some(mut a) = fresh(
            &mut self.raised,
            o,
            (AlertKey::host("new_asset", ip), Severity::High),
            out,
        ) {
            a.message = format!(
                "{ip}: a device learning never saw, as {} {role}",
                ch.proto.name()
            );
            *a.learned = json!({"assets": self.baseline.assets.len()});
            *a.observed = json!({"ip": ip, "role": role, "proto": ch.proto});
            out.push(a);
        }
    }

    /// A known device under its IPv6 link-local address: `ip` sent this PDU from an Ethernet
    /// address a learned asset used. A link-local address is never routed, so the Ethernet
    /// address is the device's own, not a router's.
    /// A link-local address that only receives this PDU is judged when it sends (its own
    /// Ethernet address then known): a request would flag the server's and its answer the
    /// client's, both learned devices.
    pub(super) fn known_link_local(&self, o: &Observation, ip: IpAddr) -> bool {
        let IpAddr::V6(v6) = ip else { return false };
        v6.segments()[0] & 0xffc0 == 0xfe80
            && (ip != o.src() || o.src_mac.is_some_and(|m| self.learned_macs.contains(&m)))
    }

    /// What this request adds to its client's scan window, and a scan alert when it is one.
    /// Only a request that brings something learning never saw (a unit, a function, addresses)
    /// counts: a scan is walking what is new, and the client's routine requests between its
    /// probes are not more of it (nor do they change the window: what it forgets with time it
    /// forgets when it is next looked at). With N workers, only these go to the stage.
    pub(super) fn note_scan(
        &mut self,
        o: &Observation,
        known: Option<usize>,
        fnew: bool,
        new_unit: bool,
        new_addresses: Vec<(u32, u32)>,
        out: &mut Vec<Alert>,
    ) {
        if o.channel.proto.is_ot() && (fnew || new_unit || !new_addresses.is_empty()) {
            let mut none = None;
            let place = match known.and_then(|i| self.chans.slots.get_mut(i)) {
                Some(slot) => &mut slot.scan,
                None => &mut none,
            };
            let new = ScanNew {
                unit: new_unit,
                function: fnew,
                addresses: new_addresses,
            };
            self.across.scan(o, place, new, &mut self.raised, out);
        }
    }
}
