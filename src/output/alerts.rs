//! Alert lines (JSON Lines, docs/alerts.md).

use otwatch_models::Alert;

use crate::event::Timestamp;
use crate::output::flow_ids;

/// An alert's JSON line (docs/alerts.md): its members in the contract's order, the sensor's
/// name last as the alerts file has it. Written straight from the alert, no `Value` built (a
/// flood writes many); [`alert_json`] makes its value from the same struct.
#[derive(serde::Serialize)]
struct AlertLine<'a> {
    ts: String,
    id: u64,
    kind: otwatch_models::AlertKind,
    r#type: &'a str,
    severity: otwatch_models::Severity,
    proto: otwatch_models::Proto,
    src_ip: std::net::IpAddr,
    dst_ip: std::net::IpAddr,
    source: &'a str,
    frames: &'a [u64],
    message: &'a str,
    learned: Object<'a>,
    observed: Object<'a>,
    count: u64,
    first_seen: String,
    last_seen: String,
    repeat: bool,
    state: otwatch_models::alert::AlertState,
    confidence: &'static str,
    line: u64,
    attack: Attack,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sensor: Option<&'a str>,
}

/// An alert type's ATT&CK technique IDs, as a list.
struct Attack(&'static [otwatch_models::alert::Technique]);

impl serde::Serialize for Attack {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(id, _)| id))
    }
}

/// Writes `a`'s JSON line (without the newline), as `alert_json` and the sensor's name make it.
pub fn write_alert_line(
    w: &mut Vec<u8>,
    a: &Alert,
    sensor: Option<&str>,
) -> Result<(), crate::output::json::Error> {
    crate::output::json::to_writer(w, &line_of(a, sensor))
}

/// The members of `a`'s line, in the contract's order.
fn line_of<'a>(a: &'a Alert, sensor: Option<&'a str>) -> AlertLine<'a> {
    let ids = a.ports.and_then(|p| flow_ids::ids(a.src_ip, a.dst_ip, p));
    let (community_id, flow_id) = match ids {
        Some((c, f)) => (Some(c), Some(f)),
        None => (None, None),
    };
    AlertLine {
        ts: Timestamp(a.ts).to_string(),
        id: a.id,
        kind: a.kind,
        r#type: a.r#type,
        severity: a.severity,
        proto: a.proto,
        src_ip: a.src_ip,
        dst_ip: a.dst_ip,
        source: &a.source,
        frames: &a.frames,
        message: &a.message,
        learned: Object(&a.learned),
        observed: Object(&a.observed),
        count: a.count,
        first_seen: Timestamp(a.first_seen).to_string(),
        last_seen: Timestamp(a.last_seen).to_string(),
        repeat: a.repeat,
        state: a.state,
        confidence: if a.low_confidence { "low" } else { "normal" },
        line: a.line,
        attack: Attack(otwatch_models::alert::techniques(a.r#type)),
        src_port: a.ports.map(|p| p.src),
        dst_port: a.ports.map(|p| p.dst),
        community_id,
        flow_id,
        evidence: a.evidence.as_deref(),
        sensor,
    }
}

/// An alert's `learned` or `observed`: always an object in the line; an alert no check filled
/// them for holds `Null` (`Alert::new`), written as `{}`.
struct Object<'a>(&'a serde_json::Value);

impl serde::Serialize for Object<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            serde_json::Value::Null => serde::ser::SerializeMap::end(s.serialize_map(Some(0))?),
            v => v.serialize(s),
        }
    }
}

/// The JSON line of an alert (docs/alerts.md), as a value (EVE and syslog rework it): the
/// members [`write_alert_line`] writes, without the sensor's.
pub fn alert_json(a: &Alert) -> serde_json::Value {
    serde_json::to_value(line_of(a, None)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use otwatch_models::alert::{AlertKey, AlertState, Severity};
    use otwatch_models::obs::{Channel, Ports};
    use otwatch_models::Proto;
    use serde_json::json;

    /// The contract's members spelt out with `json!`, apart from the struct: the reference the
    /// lines are held to (`learned` and `observed` are objects, empty for an alert no check
    /// filled them for).
    fn contract_json(a: &Alert) -> serde_json::Value {
        let mut v = json!({
            "ts": Timestamp(a.ts).to_string(),
            "id": a.id,
            "kind": a.kind,
            "type": a.r#type,
            "severity": a.severity,
            "proto": a.proto,
            "src_ip": a.src_ip,
            "dst_ip": a.dst_ip,
            "source": &*a.source,
            "frames": a.frames.as_slice(),
            "message": a.message,
            "learned": if a.learned.is_null() { json!({}) } else { (*a.learned).clone() },
            "observed": if a.observed.is_null() { json!({}) } else { (*a.observed).clone() },
            "count": a.count,
            "first_seen": Timestamp(a.first_seen).to_string(),
            "last_seen": Timestamp(a.last_seen).to_string(),
            "repeat": a.repeat,
            "state": a.state,
            "confidence": if a.low_confidence { "low" } else { "normal" },
            "line": a.line,
            // The contract's `attack` (../shared/DESIGN.md): MITRE ATT&CK for ICS technique IDs;
            // their names are in docs/alerts.md.
            "attack": otwatch_models::alert::techniques(a.r#type)
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
        });
        if let (Some(p), Some(m)) = (a.ports, v.as_object_mut()) {
            m.insert("src_port".into(), json!(p.src));
            m.insert("dst_port".into(), json!(p.dst));
            if let Some((community, flow)) = flow_ids::ids(a.src_ip, a.dst_ip, p) {
                m.insert("community_id".into(), json!(community));
                m.insert("flow_id".into(), json!(flow));
            }
        }
        if let (Some(e), Some(m)) = (&a.evidence, v.as_object_mut()) {
            m.insert("evidence".into(), json!(e));
        }
        v
    }

    /// The line written straight from an alert, and `alert_json`'s value serialised, are byte
    /// for byte the contract's members spelt out with `json!`, the sensor's name appended: with and without ports, evidence, a
    /// sensor, a lowered confidence, a repeat, text with characters to escape, and types with
    /// and without ATT&CK techniques.
    #[test]
    fn the_direct_line_is_alert_json_byte_for_byte() {
        let mut n = 0;
        let mut with_flow_ids = 0;
        for r#type in [
            "plc_stop",
            "value_out_of_range",
            "new_channel",
            "no_such_type",
        ] {
            for variant in 0..8u32 {
                // IPv4, IPv6, and a mixed pair (no flow IDs).
                let (client, server) = match variant % 3 {
                    0 => ("10.0.0.1", "10.0.0.2"),
                    1 => ("fd00::1", "fd00::2"),
                    _ => ("10.0.0.1", "fd00::2"),
                };
                let ch = Channel {
                    proto: Proto::Modbus,
                    client: client.parse().expect("an address"),
                    server: server.parse().expect("an address"),
                    unit: 3,
                };
                let key = AlertKey::channel(r#type, &ch, u64::from(variant));
                let mut a = Alert::new(
                    Some("/tmp/a \"capture\".pcap".into()),
                    key,
                    Severity::High,
                    ch.proto,
                    ch.client,
                    ch.server,
                    1_700_000_000_123_456_789 + i64::from(variant),
                );
                a.id = u64::from(variant) + 1;
                a.line = 40 + u64::from(variant);
                a.count = 7;
                a.first_seen = a.ts - 1_000_000_000;
                a.last_seen = a.ts;
                a.frames
                    .extend([3u64, 9, 27].into_iter().take(variant as usize % 4));
                a.message = format!("{type} \u{1}\t\"é\" {variant}", type = r#type);
                // Half the alerts with no members filled: written as empty objects.
                if variant < 4 {
                    *a.learned = serde_json::json!({"min": 1.5, "max": 1e300, "list": [1, "x"]});
                    *a.observed = serde_json::json!({"value": -0.0, "write": true});
                }
                if variant & 1 == 1 {
                    a.ports = Some(Ports {
                        src: 50_000,
                        dst: 502,
                        udp: variant & 4 == 4,
                    });
                }
                if variant & 2 == 2 {
                    a.evidence = Some("/var/lib/otwatch/alert-1.pcap".into());
                    a.low_confidence = true;
                    a.repeat = true;
                    a.state = AlertState::Update;
                }
                for sensor in [None, Some("plant-7 \"north\"")] {
                    let with_sensor = |mut v: serde_json::Value| {
                        if let (Some(s), Some(m)) = (sensor, v.as_object_mut()) {
                            m.insert("sensor".into(), json!(s));
                        }
                        String::from_utf8_lossy(&serde_json::to_vec(&v).expect("serialised"))
                            .into_owned()
                    };
                    let expected = with_sensor(contract_json(&a));
                    with_flow_ids += usize::from(expected.contains("\"flow_id\""));
                    let mut got = Vec::new();
                    write_alert_line(&mut got, &a, sensor).expect("written");
                    assert_eq!(String::from_utf8_lossy(&got), expected);
                    // The value EVE and syslog rework holds the same members.
                    assert_eq!(with_sensor(alert_json(&a)), expected);
                    n += 1;
                }
            }
        }
        assert_eq!(n, 64);
        assert!(with_flow_ids >= 8, "{with_flow_ids} lines with flow IDs");
    }
}
