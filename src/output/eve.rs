//! `--log-format eve`: alert and event lines as Suricata EVE JSON, so that the pipelines that
//! already read Suricata (Filebeat's Suricata module, Logstash, Splunk's TA, Security Onion,
//! Malcolm) take otwatch without a new parser. docs/siem.md has the mapping.
//!
//! An EVE line has Suricata's common members (`timestamp`, `flow_id`, `event_type`, `src_ip`,
//! `src_port`, `dest_ip`, `dest_port`, `proto`, `app_proto`, `community_id`, `host`), then the
//! record of its `event_type`: `alert` for an alert, and for an event the protocol's object under
//! the protocol's name, as Suricata logs `modbus` and `dnp3`. Whatever EVE has no member for is
//! kept under `otwatch`: nothing of the native line is lost.

use otwatch_models::{Alert, Severity};
use serde_json::{json, Map, Value};

/// Suricata's signature ids 1 000 000–1 999 999 are for local use; otwatch's alert types are
/// 1 700 001 and up, in the order of `otwatch_models::alert::TYPES` (docs/siem.md).
pub const SID_BASE: u64 = 1_700_000;

/// The signature id of an alert type.
pub fn signature_id(r#type: &str) -> u64 {
    let i = otwatch_models::alert::TYPES
        .iter()
        .position(|t| *t == r#type)
        .map_or(0, |i| i as u64 + 1);
    SID_BASE + i
}

/// EVE's timestamp: microseconds and a numeric offset (`2024-01-02T03:04:05.123456+0000`).
fn timestamp(ts: &Value) -> Value {
    match ts.as_str() {
        Some(t) => Value::from(match t.strip_suffix('Z') {
            Some(base) => format!("{base}+0000"),
            None => t.to_string(),
        }),
        None => ts.clone(),
    }
}

/// Moves `from` of `src` to `to` of `dst`, if there.
fn take(src: &mut Map<String, Value>, from: &str, dst: &mut Map<String, Value>, to: &str) {
    if let Some(v) = src.shift_remove(from) {
        dst.insert(to.into(), v);
    }
}

/// An alert's EVE line, from the alert and its native JSON line (docs/alerts.md).
pub fn alert(a: &Alert, native: &Value) -> Value {
    let mut rest = native.as_object().cloned().unwrap_or_default();
    let mut eve = Map::new();
    eve.insert(
        "timestamp".into(),
        timestamp(rest.get("ts").unwrap_or(&Value::Null)),
    );
    take(&mut rest, "flow_id", &mut eve, "flow_id");
    eve.insert("event_type".into(), json!("alert"));
    take(&mut rest, "src_ip", &mut eve, "src_ip");
    take(&mut rest, "src_port", &mut eve, "src_port");
    take(&mut rest, "dst_ip", &mut eve, "dest_ip");
    take(&mut rest, "dst_port", &mut eve, "dest_port");
    if let Some(p) = a.ports {
        eve.insert("proto".into(), json!(if p.udp { "UDP" } else { "TCP" }));
    }
    // An application protocol only where one was dissected (a scan or a new talker on another
    // port has none, as Suricata leaves `app_proto` out of a flow it never identified).
    let app = a.proto.name();
    if !matches!(
        a.proto,
        otwatch_models::Proto::Tcp | otwatch_models::Proto::Udp
    ) {
        eve.insert("app_proto".into(), json!(app));
    }
    take(&mut rest, "community_id", &mut eve, "community_id");
    take(&mut rest, "sensor", &mut eve, "host");
    // Suricata: 1 is the most severe, 3 the least.
    let severity = match a.severity {
        Severity::Critical | Severity::High => 1,
        Severity::Medium => 2,
        Severity::Low => 3,
    };
    let kind = match a.kind {
        otwatch_models::AlertKind::Integrity => "OT integrity anomaly",
        otwatch_models::AlertKind::Availability => "OT availability anomaly",
    };
    let techniques: Vec<&str> = otwatch_models::alert::techniques(a.r#type)
        .iter()
        .map(|(id, _)| *id)
        .collect();
    eve.insert(
        "alert".into(),
        json!({
            "action": "allowed",
            "gid": 1,
            "signature_id": signature_id(a.r#type),
            "rev": 1,
            "signature": format!("OTWATCH {app} {}", a.r#type),
            "category": kind,
            "severity": severity,
            "metadata": {
                "mitre_technique_id": techniques,
                "otwatch_type": [a.r#type],
                "otwatch_state": [rest.get("state").cloned().unwrap_or(Value::Null)],
                "confidence": [rest.get("confidence").cloned().unwrap_or(Value::Null)],
            },
        }),
    );
    eve.insert("otwatch".into(), Value::Object(rest));
    Value::Object(eve)
}

/// An event's EVE line, from its native JSON line (docs/events.md); `None` if that line is
/// not a JSON object (it always is).
pub fn event(native: &[u8]) -> Option<Value> {
    let Value::Object(mut rest) = serde_json::from_slice::<Value>(native).ok()? else {
        return None;
    };
    let proto = rest.get("proto").cloned().unwrap_or(Value::Null);
    let mut eve = Map::new();
    eve.insert(
        "timestamp".into(),
        timestamp(rest.get("ts").unwrap_or(&Value::Null)),
    );
    rest.shift_remove("ts");
    take(&mut rest, "flow_id", &mut eve, "flow_id");
    eve.insert("event_type".into(), proto.clone());
    take(&mut rest, "src_ip", &mut eve, "src_ip");
    take(&mut rest, "src_port", &mut eve, "src_port");
    take(&mut rest, "dst_ip", &mut eve, "dest_ip");
    take(&mut rest, "dst_port", &mut eve, "dest_port");
    if let Some(t) = rest.shift_remove("transport") {
        eve.insert(
            "proto".into(),
            json!(t.as_str().unwrap_or_default().to_uppercase()),
        );
    }
    rest.shift_remove("proto");
    eve.insert("app_proto".into(), proto.clone());
    take(&mut rest, "community_id", &mut eve, "community_id");
    take(&mut rest, "sensor", &mut eve, "host");
    let direction = match rest.get("direction").and_then(Value::as_str) {
        Some("request") => Some("to_server"),
        Some("response") => Some("to_client"),
        _ => None,
    };
    if let Some(d) = direction {
        eve.insert("direction".into(), json!(d));
    }
    let mut ether = Map::new();
    take(&mut rest, "src_mac", &mut ether, "src_mac");
    take(&mut rest, "dst_mac", &mut ether, "dest_mac");
    if !ether.is_empty() {
        eve.insert("ether".into(), Value::Object(ether));
    }
    // The protocol's record, under its name.
    if let Some(name) = proto.as_str() {
        take(&mut rest, name, &mut eve, name);
    }
    eve.insert("otwatch".into(), Value::Object(rest));
    Some(Value::Object(eve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_ids_are_stable_and_in_the_local_range() {
        assert_eq!(signature_id("new_asset"), 1_700_001);
        assert_eq!(signature_id("behaviour_anomaly"), 1_700_022);
        for t in otwatch_models::alert::TYPES {
            assert!((1_000_000..2_000_000).contains(&signature_id(t)));
        }
    }

    #[test]
    fn an_event_maps_member_by_member() {
        let native = br#"{"ts":"2020-07-25T07:03:28.237928Z","source":"f.pcap","frame":4,"proto":"modbus","transport":"tcp","src_ip":"10.0.0.1","src_port":47785,"dst_ip":"10.0.0.2","dst_port":502,"direction":"request","src_mac":"00:00:00:00:00:01","dst_mac":"00:00:00:00:00:02","modbus":{"transaction_id":1,"function_code":1},"community_id":"1:abc=","sensor":"cell-1","flow_id":42}"#;
        let eve = event(native).unwrap();
        assert_eq!(
            eve,
            json!({
                "timestamp": "2020-07-25T07:03:28.237928+0000",
                "flow_id": 42,
                "event_type": "modbus",
                "src_ip": "10.0.0.1",
                "src_port": 47785,
                "dest_ip": "10.0.0.2",
                "dest_port": 502,
                "proto": "TCP",
                "app_proto": "modbus",
                "community_id": "1:abc=",
                "host": "cell-1",
                "direction": "to_server",
                "ether": {"src_mac": "00:00:00:00:00:01", "dest_mac": "00:00:00:00:00:02"},
                "modbus": {"transaction_id": 1, "function_code": 1},
                "otwatch": {"source": "f.pcap", "frame": 4, "direction": "request"},
            })
        );
        // Suricata's member order: timestamp first, the record after the common members.
        let keys: Vec<&String> = eve.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "timestamp");
        assert_eq!(keys[2], "event_type");
    }
}
