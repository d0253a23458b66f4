//! Per-channel series (requests, response latencies, poll intervals), bounded, fed by observations.

use super::*;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Edges between the usual polling periods (0.05, 0.1, 0.2-0.25, 0.5, 1, 2-3, 5, 10, 15, 30,
/// 60, 120, 300, 600 s), so a steady poll's intervals fill one bucket: with edges at 1 and 2 s
/// an exact 1 s poll straddled two, and its quantiles were seconds off.
const POLL_BUCKETS: &[f64] = &[
    0.035, 0.075, 0.15, 0.35, 0.75, 1.5, 3.5, 7.5, 12.5, 20.0, 45.0, 90.0, 200.0, 450.0, 900.0,
];
/// Poll keys remembered per channel for intervals.
const POLL_KEYS_PER_CHANNEL: usize = 64;
pub const DEFAULT_MAX_CHANNELS: usize = 256;

struct ChannelSeries {
    requests: u64,
    latency: Histogram,
    polls: Histogram,
    pending: Pending,
    last_poll: FastMap<PollKey, i64>,
}

/// Per-channel series: requests, response latency, intervals between identical requests.
pub struct ChannelMetrics {
    channels: FastMap<Channel, ChannelSeries>,
    order: Vec<Channel>,
    max_channels: usize,
    pub overflow: u64,
    assets: FastMap<IpAddr, ()>,
    /// An observation reached these series (detection or per-channel series make them).
    observed: bool,
}

/// Distinct hosts counted for `otwatch_assets_seen`, at most.
const MAX_ASSETS_COUNTED: usize = 100_000;

impl ChannelMetrics {
    pub fn new(max_channels: usize) -> Self {
        ChannelMetrics {
            channels: FastMap::default(),
            order: Vec::new(),
            max_channels,
            overflow: 0,
            assets: FastMap::default(),
            observed: false,
        }
    }

    pub(crate) fn count_assets(&mut self, ch: &Channel) {
        for ip in [ch.client, ch.server] {
            if self.assets.len() < MAX_ASSETS_COUNTED {
                self.assets.insert(ip, ());
            }
        }
    }

    /// False with a cap of 0: no per-channel series (and no events needed for them).
    pub fn enabled(&self) -> bool {
        self.max_channels > 0
    }

    pub fn observe(&mut self, o: &Observation) {
        self.observed = true;
        let ch = o.channel;
        if o.kind == Kind::Conversation {
            self.count_assets(&ch);
            return;
        }
        if !self.channels.contains_key(&ch) {
            // A channel's hosts are counted once, when it is first seen.
            self.count_assets(&ch);
            if self.channels.len() >= self.max_channels {
                // A cap of 0 is a choice (no per-channel series), not an overflow.
                if self.max_channels > 0 {
                    self.overflow += 1;
                }
                return;
            }
            self.order.push(ch);
        }
        let c = self.channels.entry(ch).or_insert_with(|| ChannelSeries {
            requests: 0,
            latency: Histogram::new(LATENCY_BUCKETS),
            polls: Histogram::new(POLL_BUCKETS),
            pending: Pending::default(),
            last_poll: FastMap::default(),
        });
        match o.kind {
            Kind::Request => {
                c.requests += 1;
                c.pending.request(o);
                let key = otwatch_models::learn::poll_key(o);
                // Not across a step back of the clock (a histogram's sum must not decrease).
                if let Some(prev) = c.last_poll.get(&key).filter(|&&prev| prev <= o.ts) {
                    c.polls.observe(otwatch_models::secs(*prev, o.ts));
                }
                if c.last_poll.len() < POLL_KEYS_PER_CHANNEL || c.last_poll.contains_key(&key) {
                    c.last_poll.insert(key, o.ts);
                }
            }
            Kind::Response => {
                if let Some((l, _)) = c.pending.response(o).filter(|(l, _)| *l >= 0.0) {
                    c.latency.observe(l);
                }
            }
            Kind::Unsolicited | Kind::Conversation => {}
        }
    }

    pub(crate) fn families(&self, out: &mut Vec<Family>) {
        let mut req = Family::new(
            "otwatch_requests_total",
            MetricKind::Counter,
            "Requests per channel.",
        );
        let mut lat = Family::new(
            "otwatch_response_latency_seconds",
            MetricKind::Histogram,
            "Request to response time per channel.",
        );
        let mut polls = Family::new(
            "otwatch_poll_interval_seconds",
            MetricKind::Histogram,
            "Interval between two identical requests (same function and address block) per channel.",
        );
        for ch in &self.order {
            let Some(c) = self.channels.get(ch) else {
                continue;
            };
            let mut labels = vec![
                ("proto", ch.proto.name().to_string()),
                ("client", ch.client.to_string()),
                ("server", ch.server.to_string()),
            ];
            // S7 channels have no unit: no label, rather than an empty one (remote-write
            // forbids empty label values).
            let unit = ch.unit_text();
            if !unit.is_empty() {
                labels.push(("unit", unit));
            }
            req.push(labels.clone(), c.requests as f64);
            lat.samples.push(Sample {
                labels: labels.clone(),
                value: Value::Histogram(c.latency.clone()),
            });
            polls.samples.push(Sample {
                labels,
                value: Value::Histogram(c.polls.clone()),
            });
        }
        out.extend([req, lat, polls]);
        out.push(
            Family::new(
                "otwatch_metrics_channels_overflow_total",
                MetricKind::Counter,
                "Observations of channels beyond the label cap (--metrics-max-channels).",
            )
            .with(Vec::new(), self.overflow as f64),
        );
        // Hosts are counted from observations: with a cap of 0 and no detection there are
        // none, and the gauge is left out rather than said to be 0.
        if self.enabled() || self.observed {
            out.push(
                Family::new(
                    "otwatch_assets_seen",
                    MetricKind::Gauge,
                    "Distinct hosts seen in dissected or reported conversations.",
                )
                .with(Vec::new(), self.assets.len() as f64),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// After the capture clock steps back (a file replayed after itself), a poll's interval
    /// and a response's latency across the step are not observed: a histogram's sum never
    /// decreases (Prometheus would read a counter reset).
    #[test]
    fn no_negative_interval_or_latency_across_a_clock_step() {
        let ch = Channel {
            proto: otwatch_models::Proto::Modbus,
            client: IpAddr::from([10, 0, 0, 1]),
            server: IpAddr::from([10, 0, 0, 2]),
            unit: 1,
        };
        let request = |ts: i64, tid: u32| {
            let mut o = Observation::new(ts, Arc::from("t"), 1, ch, Kind::Request, 3);
            o.corr = Some(tid);
            o
        };
        let mut m = ChannelMetrics::new(8);
        let s = otwatch_models::NANOS;
        m.observe(&request(100 * s, 1));
        m.observe(&request(101 * s, 2));
        // Back 60 s: tid 2's answer (another exchange reusing the id) and the same poll.
        let mut answer = request(41 * s, 2);
        answer.kind = Kind::Response;
        m.observe(&answer);
        m.observe(&request(42 * s, 3));
        m.observe(&request(43 * s, 4));
        let c = &m.channels[&ch];
        assert_eq!(c.polls.count(), 2, "100 -> 101 and 42 -> 43 s");
        assert_eq!(c.polls.sum, 2.0);
        assert_eq!(c.latency.count(), 0);
    }

    /// A cap of 0 is a choice: observations (detection makes them) count their hosts and no
    /// overflow; without any observation the hosts gauge is left out, not said to be 0.
    #[test]
    fn a_cap_of_zero_counts_no_overflow_and_no_false_zero() {
        let names = |m: &ChannelMetrics| {
            let mut fams = Vec::new();
            m.families(&mut fams);
            fams.iter()
                .map(|f| (f.name, f.samples.first().map(|s| s.value.clone())))
                .collect::<Vec<_>>()
        };
        let mut m = ChannelMetrics::new(0);
        assert!(!names(&m).iter().any(|n| n.0 == "otwatch_assets_seen"));
        let ch = Channel {
            proto: otwatch_models::Proto::Modbus,
            client: IpAddr::from([10, 0, 0, 1]),
            server: IpAddr::from([10, 0, 0, 2]),
            unit: 1,
        };
        for _ in 0..3 {
            m.observe(&Observation::new(
                1,
                Arc::from("t"),
                1,
                ch,
                Kind::Request,
                3,
            ));
        }
        assert_eq!(m.overflow, 0);
        let got = names(&m);
        let assets = got
            .iter()
            .find(|n| n.0 == "otwatch_assets_seen")
            .expect("assets");
        assert!(
            matches!(assets.1, Some(Value::Number(n)) if n == 2.0),
            "{got:?}"
        );
    }

    /// A Modbus channel's series carry its unit; an S7 channel's carry no `unit` label (it has
    /// none), rather than an empty one.
    #[test]
    fn an_s7_channel_has_no_unit_label() {
        let mut m = ChannelMetrics::new(8);
        for (proto, unit) in [
            (otwatch_models::Proto::Modbus, 1),
            (otwatch_models::Proto::S7comm, 0),
        ] {
            let ch = Channel {
                proto,
                client: IpAddr::from([10, 0, 0, 1]),
                server: IpAddr::from([10, 0, 0, 2]),
                unit,
            };
            m.observe(&Observation::new(
                1,
                Arc::from("t"),
                1,
                ch,
                Kind::Request,
                4,
            ));
        }
        let mut fams = Vec::new();
        m.families(&mut fams);
        for f in &fams {
            for sample in &f.samples {
                let get = |k: &str| {
                    sample
                        .labels
                        .iter()
                        .find(|l| l.0 == k)
                        .map(|l| l.1.as_str())
                };
                match get("proto") {
                    Some("modbus") => assert_eq!(get("unit"), Some("1"), "{}", f.name),
                    _ => assert_eq!(get("unit"), None, "{}", f.name),
                }
            }
        }
    }
}
