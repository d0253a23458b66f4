//! Alert lines (JSON Lines, docs/alerts.md).

use otwatch_models::Alert;
use serde_json::json;

use crate::event::Timestamp;
use crate::output::flow_ids;

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
        "frames": a.frames.as_slice(),
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
