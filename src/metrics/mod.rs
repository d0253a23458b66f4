//! Prometheus metrics (docs/metrics.md): families built from the pipeline's counters and the
//! detection state, served on `/metrics` from a thread of their own, and recorded with capture
//! timestamps as OpenMetrics for backfilling (`replay --openmetrics FILE`).
//!
//! The capture thread never waits for a scraper: it publishes a fresh set of families about once
//! a second, and skips a publication when a scrape holds the lock. One encoder writes both the
//! Prometheus text format and OpenMetrics (with sample timestamps, which backfilling needs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use otwatch_models::learn::{FastMap, Pending, PollKey};
use otwatch_models::{Channel, Kind, Observation};

use crate::stats::Stats;

mod server;
pub mod web_config;

pub use server::{parse_listen, MetricsServer, ServerCounters};

mod backfill;
pub use backfill::MAX_RECORDED_POINTS;
mod channels;
mod encode;
mod families;

pub use backfill::*;
pub use channels::*;
pub use encode::*;
pub use families::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_families() -> Vec<Family> {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        vec![
            Family::new("otwatch_packets_total", MetricKind::Counter, "Packets.")
                .with(Vec::new(), 42.0),
            Family::new("otwatch_flows_active", MetricKind::Gauge, "Flows.")
                .with(vec![("a", "x\"y".into())], 1.5),
            Family {
                name: "otwatch_lat_seconds",
                help: "Latency.",
                kind: MetricKind::Histogram,
                samples: vec![Sample {
                    labels: vec![("proto", "modbus".into())],
                    value: Value::Histogram(h),
                }],
            },
        ]
    }

    #[test]
    fn text_format() {
        let t = encode_text(&sample_families());
        assert!(t.contains("# TYPE otwatch_packets_total counter\notwatch_packets_total 42\n"));
        assert!(t.contains("otwatch_flows_active{a=\"x\\\"y\"} 1.5\n"));
        assert!(t.contains("otwatch_lat_seconds_bucket{proto=\"modbus\",le=\"0.1\"} 1\n"));
        assert!(t.contains("otwatch_lat_seconds_bucket{proto=\"modbus\",le=\"1.0\"} 2\n"));
        assert!(t.contains("otwatch_lat_seconds_bucket{proto=\"modbus\",le=\"+Inf\"} 3\n"));
        assert!(t.contains("otwatch_lat_seconds_sum{proto=\"modbus\"} 5.55\n"));
        assert!(t.contains("otwatch_lat_seconds_count{proto=\"modbus\"} 3\n"));
        assert!(!t.contains("# EOF"));
    }

    #[test]
    fn openmetrics_format() {
        let t = encode_openmetrics(&sample_families());
        assert!(t.contains("# TYPE otwatch_packets counter\notwatch_packets_total 42\n"));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn recorder_groups_by_family_then_series_in_time_order() {
        let mut r = OpenMetricsRecorder::new(10.0);
        assert!(r.due(0));
        r.record(5_000_000_000, &sample_families());
        assert!(!r.due(9_000_000_000));
        assert!(r.due(10_000_000_000));
        r.record(12_000_000_000, &sample_families());
        let mut out = Vec::new();
        r.write(&mut out).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let packets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("otwatch_packets_total"))
            .collect();
        assert_eq!(
            packets,
            vec![
                "otwatch_packets_total 42 5.000",
                "otwatch_packets_total 42 12.000"
            ]
        );
        assert_eq!(text.matches("# TYPE otwatch_packets counter").count(), 1);
        // A histogram's lines stay together per sample time, buckets in bound order.
        let lat: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("otwatch_lat_seconds"))
            .collect();
        assert_eq!(lat.len(), 2 * 5, "{lat:?}");
        assert!(lat[0].contains("le=\"0.1\"") && lat[2].contains("le=\"+Inf\""));
        assert!(lat[4].starts_with("otwatch_lat_seconds_count") && lat[4].ends_with(" 5.000"));
        assert!(lat[5].contains("le=\"0.1\"") && lat[5].ends_with(" 12.000"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("9464").as_deref(), Ok("127.0.0.1:9464"));
        assert_eq!(parse_listen(":9464").as_deref(), Ok("127.0.0.1:9464"));
        assert_eq!(parse_listen("0.0.0.0:9464").as_deref(), Ok("0.0.0.0:9464"));
        assert!(parse_listen("nonsense").is_err());
    }
}
