//! Every family of a publication, from the pipeline's counters, the detection state and the outputs.

use super::*;

/// Capture counters only a live source has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounters {
    pub kernel_drops: u64,
    pub ring_freezes: u64,
    pub queue_drops: u64,
    /// Packets the kernel put in the ring that were not read when the capture stopped (known
    /// at the end of the run).
    pub unread_at_stop: u64,
}

/// The detection state, for its gauges and counters.
#[derive(Debug, Clone, Default)]
pub struct DetectionState {
    pub enabled: bool,
    pub learning: bool,
    /// End of the learning window, capture time in seconds.
    pub learned_until: Option<f64>,
    pub baseline_channels: usize,
    /// Alert causes by (kind, type, severity).
    pub alerts: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Detection's memory bounds hit: (bound, times).
    pub bounds_hit: Vec<(&'static str, u64)>,
    /// Times the capture clock stepped back (detection's time-based state started again).
    pub clock_steps: u64,
}

/// Everything the families are built from.
pub struct Inputs<'a> {
    pub stats: &'a Stats,
    pub active_flows: usize,
    pub capture_ts: i64,
    pub live: Option<LiveCounters>,
    pub workers: &'a [u64],
    pub channels: Option<&'a ChannelMetrics>,
    pub detection: &'a DetectionState,
    /// Failed writes of the run's outputs.
    pub outputs: Option<&'a crate::output::OutputHealth>,
}

fn proto_families(stats: &Stats, out: &mut Vec<Family>) {
    let protos = crate::dissect::ProtoId::all().map(|p| (p.spec().name, &stats[p]));
    let mut pdus = Family::new(
        "otwatch_pdus_total",
        MetricKind::Counter,
        "PDUs by protocol and function code.",
    );
    let mut exc = Family::new(
        "otwatch_exceptions_total",
        MetricKind::Counter,
        "Exception responses by protocol.",
    );
    let mut errs = Family::new(
        "otwatch_parse_errors_total",
        MetricKind::Counter,
        "Malformed PDUs by protocol and reason.",
    );
    let mut events = Family::new(
        "otwatch_protocol_events_total",
        MetricKind::Counter,
        "What a dissector counts besides PDUs, by protocol and event (IEC 104 S frames, U functions and sequence errors, DNP3 CRC errors, ...).",
    );
    for (name, p) in protos {
        for (fc, n) in p.functions() {
            pdus.push(
                vec![("proto", name.to_string()), ("function", fc.to_string())],
                n as f64,
            );
        }
        for (kind, n) in &p.other_pdus {
            pdus.push(
                vec![("proto", name.to_string()), ("function", kind.to_string())],
                *n as f64,
            );
        }
        exc.push(vec![("proto", name.to_string())], p.exceptions as f64);
        for (reason, n) in &p.parse_errors {
            errs.push(
                vec![("proto", name.to_string()), ("reason", reason.to_string())],
                *n as f64,
            );
        }
        for (event, n) in &p.counters {
            events.push(
                vec![("proto", name.to_string()), ("event", event.to_string())],
                *n as f64,
            );
        }
    }
    out.extend([pdus, exc, errs, events]);
}

/// Every family, from the inputs.
/// Adds `sensor="NAME"` to every series (`--sensor-name`): one sensor or fifty in one
/// Prometheus, scraped or pushed, are told apart by it.
pub fn label_all(fams: &mut [Family], sensor: &str) {
    for f in fams {
        for s in &mut f.samples {
            s.labels.push(("sensor", sensor.to_string()));
        }
    }
}

pub fn families(i: &Inputs<'_>) -> Vec<Family> {
    let s = i.stats;
    let mut out = Vec::with_capacity(24);
    out.push(
        Family::new(
            "otwatch_build_info",
            MetricKind::Gauge,
            "The running build (always 1).",
        )
        .with(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            1.0,
        ),
    );
    out.push(
        Family::new(
            "otwatch_packets_total",
            MetricKind::Counter,
            "Packets captured and processed.",
        )
        .with(Vec::new(), s.packets as f64),
    );
    out.push(
        Family::new(
            "otwatch_bytes_total",
            MetricKind::Counter,
            "Bytes on the wire of the packets processed.",
        )
        .with(Vec::new(), s.bytes as f64),
    );
    out.push(
        Family::new(
            "otwatch_capture_timestamp_seconds",
            MetricKind::Gauge,
            "Capture time of the latest packet.",
        )
        .with(Vec::new(), i.capture_ts as f64 / 1e9),
    );
    // What the TCP and IP layers saw that an evasion would show: segments sent again with
    // other bytes, SYNs on open connections, fragments overlapping with other bytes.
    let mut transport = Family::new(
        "otwatch_transport_events_total",
        MetricKind::Counter,
        "TCP and IP events that an evasion would show, and reassembly's ordinary work, by event.",
    );
    for (event, n) in [
        ("tcp_conflicting_overlap", s.tcp.conflicting_overlaps),
        ("tcp_overlapping_segment", s.tcp.overlapping_segments),
        ("tcp_retransmitted_segment", s.tcp.retransmitted_segments),
        ("tcp_out_of_order_segment", s.tcp.out_of_order_segments),
        ("tcp_gap", s.tcp.gaps),
        ("tcp_midstream_pickup", s.tcp.midstream_pickups),
        ("tcp_syn_on_open_connection", s.flows.syn_on_open),
        (
            "ip_fragment_conflicting_overlap",
            s.defrag.conflicting_overlaps,
        ),
        ("ip_fragment_invalid", s.defrag.invalid),
    ] {
        transport.push(vec![("event", event.to_string())], n as f64);
    }
    out.push(transport);
    let live = i.live.unwrap_or_default();
    let mut drops = Family::new(
        "otwatch_drops_total",
        MetricKind::Counter,
        "Packets or data lost, by stage.",
    );
    for (stage, n) in [
        ("kernel", live.kernel_drops),
        ("ring", live.ring_freezes),
        ("queue", live.queue_drops),
        ("stop", live.unread_at_stop),
        (
            "reassembly",
            s.tcp.ooo_bound_gaps + s.tcp.buffer_bound_drops,
        ),
        ("flow_table", s.flows.table_full_drops),
        ("defrag", s.defrag.bound_drops),
        ("talkers", s.flows.talkers_full),
    ] {
        drops.push(vec![("stage", stage.to_string())], n as f64);
    }
    out.push(drops);
    out.push(
        Family::new(
            "otwatch_flows_active",
            MetricKind::Gauge,
            "Flows tracked now.",
        )
        .with(Vec::new(), i.active_flows as f64),
    );
    out.push(
        Family::new(
            "otwatch_flows_created_total",
            MetricKind::Counter,
            "Flows created.",
        )
        .with(Vec::new(), s.flows.created as f64),
    );
    let mut evicted = Family::new(
        "otwatch_flows_evicted_total",
        MetricKind::Counter,
        "Flows evicted, by reason: idle (timeout) or full (to make room in a full table).",
    );
    evicted.push(vec![("reason", "idle".into())], s.flows.evicted_idle as f64);
    evicted.push(vec![("reason", "full".into())], s.flows.evicted_full as f64);
    out.push(evicted);
    out.push(
        Family::new(
            "otwatch_panics_total",
            MetricKind::Counter,
            "Packets whose processing panicked (a bug): their flows were lost, the run went on.",
        )
        .with(Vec::new(), s.worker_panics as f64),
    );
    proto_families(s, &mut out);
    if let Some(c) = i.channels {
        c.families(&mut out);
    }
    if !i.workers.is_empty() {
        let mut w = Family::new(
            "otwatch_worker_packets_total",
            MetricKind::Counter,
            "Packets given to each worker, including those then lost to its full queue.",
        );
        for (n, p) in i.workers.iter().enumerate() {
            w.push(vec![("worker", n.to_string())], *p as f64);
        }
        out.push(w);
    }
    if let Some(h) = i.outputs {
        let mut f = Family::new(
            "otwatch_output_errors_total",
            MetricKind::Counter,
            "Writes an output could not make (lines, evidence files, saves), by output.",
        );
        for k in crate::output::OutputKind::ALL {
            f.push(vec![("output", k.name().to_string())], h.errors(k) as f64);
        }
        out.push(f);
    }
    let d = i.detection;
    if d.enabled {
        let mut bounds = Family::new(
            "otwatch_detection_bound_hits_total",
            MetricKind::Counter,
            "Observations detection could not keep state for, by the memory bound that was hit.",
        );
        for (bound, n) in &d.bounds_hit {
            bounds.push(vec![("bound", bound.to_string())], *n as f64);
        }
        out.push(bounds);
        let mut steps = Family::new(
            "otwatch_detection_clock_steps_total",
            MetricKind::Counter,
            "Times the capture clock stepped back by more than a second; rates, timers and behaviour windows started again.",
        );
        steps.push(vec![], d.clock_steps as f64);
        out.push(steps);
        let mut alerts = Family::new(
            "otwatch_alerts_total",
            MetricKind::Counter,
            "Alert causes raised, by kind, type and severity.",
        );
        for ((kind, t, sev), n) in &d.alerts {
            alerts.push(
                vec![
                    ("kind", kind.to_string()),
                    ("type", t.to_string()),
                    ("severity", sev.to_string()),
                ],
                *n as f64,
            );
        }
        out.push(alerts);
        out.push(
            Family::new(
                "otwatch_learning",
                MetricKind::Gauge,
                "1 while learning the baseline, 0 when detecting.",
            )
            .with(Vec::new(), f64::from(u8::from(d.learning))),
        );
        if let Some(until) = d.learned_until {
            out.push(
                Family::new(
                    "otwatch_baseline_age_seconds",
                    MetricKind::Gauge,
                    "Capture time since the end of the learning window.",
                )
                .with(Vec::new(), (i.capture_ts as f64 / 1e9 - until).max(0.0)),
            );
        }
        out.push(
            Family::new(
                "otwatch_baseline_channels",
                MetricKind::Gauge,
                "Channels in the baseline in use.",
            )
            .with(Vec::new(), d.baseline_channels as f64),
        );
    }
    out
}

/// The families a scrape sees; replaced about once a second by the capture thread.
pub type Published = Arc<Mutex<Vec<Family>>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic (counted by the pipeline) is a counter of its own, as its value.
    #[test]
    fn panics_are_a_metric() {
        let stats = Stats {
            worker_panics: 2,
            ..Stats::default()
        };
        let detection = DetectionState::default();
        let fams = families(&Inputs {
            stats: &stats,
            active_flows: 0,
            capture_ts: 0,
            live: None,
            workers: &[],
            channels: None,
            detection: &detection,
            outputs: None,
        });
        let text = encode_text(&fams);
        assert!(
            text.contains("# TYPE otwatch_panics_total counter\notwatch_panics_total 2\n"),
            "{text}"
        );
    }
}
