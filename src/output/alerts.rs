//! Alert lines (JSON Lines, docs/alerts.md).

use otwatch_models::Alert;
use serde_json::json;

use crate::event::Timestamp;

/// The JSON line of an alert (docs/alerts.md).
pub fn alert_json(a: &Alert) -> serde_json::Value {
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
        "frames": a.frames,
        "message": a.message,
        "learned": a.learned,
        "observed": a.observed,
        "count": a.count,
        "first_seen": Timestamp(a.first_seen).to_string(),
        "last_seen": Timestamp(a.last_seen).to_string(),
        "repeat": a.repeat,
        "state": a.state,
        "confidence": if a.low_confidence { "low" } else { "normal" },
        "line": a.line,
        "techniques": otwatch_models::alert::techniques(a.r#type)
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name}))
            .collect::<Vec<_>>(),
    });
    if let (Some(p), Some(m)) = (a.ports, v.as_object_mut()) {
        m.insert("src_port".into(), json!(p.src));
        m.insert("dst_port".into(), json!(p.dst));
        if let Some(id) = community_id(a.src_ip, a.dst_ip, p) {
            m.insert("community_id".into(), json!(id));
        }
    }
    if let (Some(e), Some(m)) = (&a.evidence, v.as_object_mut()) {
        m.insert("evidence".into(), json!(e));
    }
    v
}

/// The Community ID flow hash (v1, seed 0): the value Zeek and Suricata print for the same
/// flow, whichever direction the packet went.
pub fn community_id(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    p: otwatch_models::Ports,
) -> Option<String> {
    let proto = if p.udp { 17 } else { 6 };
    community_id::calculate_community_id(0, src, dst, Some(p.src), Some(p.dst), proto, false).ok()
}
