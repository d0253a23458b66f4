//! Metrics pushed out (`--remote-write URL`): Prometheus remote-write 1.0 — a protobuf
//! `WriteRequest`, snappy block-compressed, POSTed over HTTP(S).
//!
//! A plant's sensor may not be scraped from IT: it pushes outward through the DMZ. Every
//! `--remote-write-interval` of wall-clock time (and once at the end of the run) the run's
//! metric families become one request, stamped with the wall clock (a receiver takes no samples
//! hours old, and a replay's capture time may be years old). Requests go through a bounded queue
//! to a sender thread (`outbox.rs`) that retries, with a backoff, what the receiver could not
//! take for now (a connection error, 5xx, 429). Samples that find the queue full, that the
//! receiver refuses for good (any other 4xx), or that are still unsent 10 s after the end of
//! input are counted as failures of the `remote_write` output (summary,
//! `otwatch_output_errors_total`, exit status).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;

use super::outbox::{Backoff, Courier, Delivery, Outbox};
use super::{OutputHealth, OutputKind};
use crate::metrics::{points, Family};

/// Requests waiting for the receiver at most (at the default interval, half an hour of outage).
/// They wait compressed: at the default 256 channels a request is about 6 MB of series as
/// built and a few hundred KB compressed, so the queue stays within tens of MB.
pub const QUEUE: usize = 120;
/// How long the end of a run waits for the queue to reach a reachable receiver.
const DRAIN: Duration = Duration::from_secs(10);
/// One request's time limit (connect, send, answer).
const TIMEOUT: Duration = Duration::from_secs(5);
/// The default push interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// The remote-write 1.0 messages (prometheus/prompb/types.proto and remote.proto), the fields
/// 1.0 requires.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// One request: every series of the families at one time, each labelled `sensor`.
pub fn write_request(families: &[Family], sensor: &str, timestamp_ms: i64) -> WriteRequest {
    let mut timeseries = Vec::new();
    for f in families {
        for s in &f.samples {
            points(s, |suffix, extra, value| {
                let mut labels: Vec<Label> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .chain(extra)
                    .filter(|(k, _)| *k != "sensor")
                    .chain([("__name__", &*format!("{}{suffix}", f.name))])
                    .chain([("sensor", sensor)])
                    .map(|(k, v)| Label {
                        name: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect();
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                timeseries.push(TimeSeries {
                    labels,
                    samples: vec![Sample {
                        value,
                        timestamp: timestamp_ms,
                    }],
                });
            });
        }
    }
    WriteRequest { timeseries }
}

/// The body of a request: protobuf, then snappy's block format.
pub fn encode(req: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())
}

/// One request as it waits in the queue: its body, compressed, and how many samples it holds.
pub struct Body {
    pub snappy: Vec<u8>,
    pub samples: u64,
}

/// The pushing half, owned by the metrics; the outbox's thread does the network work.
pub struct RemoteWrite {
    outbox: Outbox<Body>,
    sensor: Arc<str>,
    interval: Duration,
    last: Option<Instant>,
    /// The timestamp of the last push: the next is later, even if the wall clock is not (a
    /// receiver refuses a second sample of a series at the same or an earlier time).
    last_ms: i64,
    health: Arc<OutputHealth>,
    /// Requests queued and the samples in them, for the summary.
    pub requests: u64,
    pub samples: u64,
    pub url: String,
}

impl RemoteWrite {
    /// Checks the URL, loads the CA (PEM, for an `https` receiver with a private CA) and
    /// starts the sender thread.
    pub fn start(
        url: &str,
        ca: Option<&Path>,
        interval: Duration,
        sensor: Arc<str>,
        health: Arc<OutputHealth>,
    ) -> Result<RemoteWrite, String> {
        let courier = Sender::new(url, ca, Arc::clone(&health))?;
        let outbox = Outbox::start(
            courier,
            "otwatch-remote-write",
            QUEUE,
            DRAIN,
            OutputKind::RemoteWrite,
            Arc::clone(&health),
        )?;
        Ok(RemoteWrite {
            outbox,
            sensor,
            interval,
            last: None,
            last_ms: 0,
            health,
            requests: 0,
            samples: 0,
            url: url.to_string(),
        })
    }

    /// Whether a push is due (the first one when first asked).
    pub fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Queues the families as one request, stamped now; never blocks.
    pub fn push(&mut self, families: &[Family]) {
        self.last = Some(Instant::now());
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.last_ms = now_ms.max(self.last_ms + 1);
        let req = write_request(families, &self.sensor, self.last_ms);
        let samples = req.timeseries.len() as u64;
        self.requests += 1;
        self.samples += samples;
        match encode(&req) {
            Ok(snappy) => self.outbox.push(Body { snappy, samples }),
            Err(e) => self
                .health
                .fail(OutputKind::RemoteWrite, samples, &format!("snappy: {e}")),
        }
    }

    /// End of the run: what is queued drains for 10 s at most; the rest is counted.
    pub fn finish(&mut self) {
        self.outbox.finish();
    }

    /// The summary's line.
    pub fn summary(&self) -> String {
        format!(
            "  remote-write: {} samples in {} requests queued for {}\n",
            self.samples, self.requests, self.url
        )
    }
}

struct Sender {
    agent: ureq::Agent,
    url: String,
    health: Arc<OutputHealth>,
    backoff: Backoff,
    /// The receiver is known to be unreachable (said once per outage).
    down: bool,
}

impl Sender {
    fn new(url: &str, ca: Option<&Path>, health: Arc<OutputHealth>) -> Result<Sender, String> {
        let bad = || format!("--remote-write {url}: expected http://HOST:PORT/PATH or https://…");
        let uri: ureq::http::Uri = url.parse().map_err(|_| bad())?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        let host_ok = uri.host().is_some_and(|h| !h.is_empty())
            && (uri.port().is_none() || uri.port_u16().is_some());
        if !scheme_ok || !host_ok {
            return Err(bad());
        }
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .user_agent(concat!("otwatch/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("--remote-write-ca {}: {e}", ca.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!(
                    "--remote-write-ca {}: no PEM certificate in it",
                    ca.display()
                ));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Sender {
            agent: config.build().into(),
            url: url.to_string(),
            health,
            backoff: Backoff::default(),
            down: false,
        })
    }

    fn post(&self, body: &[u8]) -> Result<u16, ureq::Error> {
        let resp = self
            .agent
            .post(&self.url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .send(body)?;
        Ok(resp.status().as_u16())
    }

    fn away(&mut self, why: &str) -> Delivery {
        if !self.down {
            self.down = true;
            eprintln!(
                "otwatch: warning: remote-write receiver {}: {why} (retrying; requests wait in a bounded queue)",
                self.url
            );
        }
        self.backoff.failed();
        Delivery::Retry
    }
}

impl Courier for Sender {
    type Item = Body;

    fn deliver(&mut self, body: &Body) -> Delivery {
        if !self.backoff.ready() {
            return Delivery::Retry;
        }
        match self.post(&body.snappy) {
            Ok(s) if (200..300).contains(&s) => {
                self.down = false;
                self.backoff.succeeded();
                Delivery::Done
            }
            // The spec's retryable answers: the receiver is overloaded or failing for now.
            Ok(s) if s == 429 || s >= 500 => self.away(&format!("HTTP {s}")),
            Ok(s) => {
                // The receiver refuses these samples for good: retrying cannot help.
                self.health.fail(
                    OutputKind::RemoteWrite,
                    body.samples,
                    &format!("{}: HTTP {s}: samples refused", self.url),
                );
                Delivery::Done
            }
            Err(e) => self.away(&e.to_string()),
        }
    }

    const UNITS: &'static str = "sample(s)";

    fn units(body: &Body) -> u64 {
        body.samples
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Histogram, MetricKind, Sample as MSample, Value};

    #[test]
    fn series_are_labelled_sorted_and_histograms_expanded() {
        let mut h = Histogram::new(&[0.01, 1.0]);
        h.observe(0.005);
        h.observe(3.0);
        let fams = vec![
            Family {
                name: "otwatch_packets_total",
                help: "",
                kind: MetricKind::Counter,
                samples: vec![MSample {
                    labels: vec![("proto", "modbus".into())],
                    value: Value::Number(7.0),
                }],
            },
            Family {
                name: "otwatch_rt_seconds",
                help: "",
                kind: MetricKind::Histogram,
                samples: vec![MSample {
                    labels: vec![],
                    value: Value::Histogram(h),
                }],
            },
        ];
        let req = write_request(&fams, "cell-1", 1_700_000_000_000);
        let names: Vec<String> = req
            .timeseries
            .iter()
            .map(|t| {
                t.labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        assert_eq!(
            names,
            [
                "__name__=otwatch_packets_total,proto=modbus,sensor=cell-1",
                "__name__=otwatch_rt_seconds_bucket,le=0.01,sensor=cell-1",
                "__name__=otwatch_rt_seconds_bucket,le=1.0,sensor=cell-1",
                "__name__=otwatch_rt_seconds_bucket,le=+Inf,sensor=cell-1",
                "__name__=otwatch_rt_seconds_sum,sensor=cell-1",
                "__name__=otwatch_rt_seconds_count,sensor=cell-1",
            ]
        );
        let values: Vec<f64> = req.timeseries.iter().map(|t| t.samples[0].value).collect();
        assert_eq!(values, [7.0, 1.0, 1.0, 2.0, 3.005, 2.0]);
        // The body decodes back to the same request.
        let body = encode(&req).unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(WriteRequest::decode(&raw[..]).unwrap(), req);
    }

    #[test]
    fn urls_are_checked() {
        let h = Arc::new(OutputHealth::default());
        assert!(Sender::new("prometheus:9090", None, Arc::clone(&h)).is_err());
        assert!(Sender::new("http:///api/v1/write", None, Arc::clone(&h)).is_err());
        assert!(Sender::new("http://:9090/api/v1/write", None, Arc::clone(&h)).is_err());
        assert!(Sender::new("http://a b/", None, Arc::clone(&h)).is_err());
        assert!(Sender::new("ftp://prometheus/", None, Arc::clone(&h)).is_err());
        assert!(Sender::new("http://127.0.0.1:9090/api/v1/write", None, h).is_ok());
    }
}
