//! `--log-format eve`: every alert and event line of a run, in Suricata EVE, holds exactly the
//! native line of the same run: mapped back member by member (docs/siem.md), they are equal.
//! So a pipeline that reads EVE loses nothing otwatch says.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value};

const OTWATCH: &str = env!("CARGO_BIN_EXE_otwatch");

/// Alert and event lines of one detection run on `pcap` in `format`.
fn run(dir: &Path, pcap: &str, format: &str) -> (Vec<Value>, Vec<Value>) {
    let alerts = dir.join(format!("alerts-{format}.jsonl"));
    let events = dir.join(format!("events-{format}.jsonl"));
    let out = Command::new(OTWATCH)
        .args(["replay", "-q", "--learn", "60s", "--sensor-name", "cell-3"])
        .args(["--log-format", format, "--alerts"])
        .arg(&alerts)
        .arg("--events")
        .arg(&events)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(pcap))
        .output()
        .expect("otwatch runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .expect("lines")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    };
    (read(&alerts), read(&events))
}

fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

/// Moves EVE's `from` back to the native `to`.
fn back(eve: &mut Map<String, Value>, from: &str, native: &mut Map<String, Value>, to: &str) {
    if let Some(v) = eve.remove(from) {
        native.insert(to.into(), v);
    }
}

fn native_ts(t: &Value) -> Value {
    Value::from(t.as_str().expect("timestamp").replace("+0000", "Z"))
}

/// The native alert line an EVE alert line was made from.
fn alert_back(eve: &Value) -> Value {
    let mut e = obj(eve);
    assert_eq!(e.remove("event_type"), Some(Value::from("alert")));
    let mut n = obj(&e.remove("otwatch").expect("otwatch"));
    assert_eq!(
        native_ts(&e.remove("timestamp").unwrap()),
        n["ts"],
        "timestamp"
    );
    for (from, to) in [
        ("src_ip", "src_ip"),
        ("src_port", "src_port"),
        ("dest_ip", "dst_ip"),
        ("dest_port", "dst_port"),
        ("community_id", "community_id"),
        ("flow_id", "flow_id"),
        ("host", "sensor"),
    ] {
        back(&mut e, from, &mut n, to);
    }
    let alert = e.remove("alert").expect("alert");
    assert_eq!(alert["metadata"]["otwatch_type"][0], n["type"]);
    assert_eq!(alert["metadata"]["mitre_technique_id"], n["attack"]);
    let sid = alert["signature_id"].as_u64().unwrap();
    assert!((1_700_001..=1_700_022).contains(&sid), "{sid}");
    assert!([1, 2, 3].contains(&alert["severity"].as_u64().unwrap()));
    if let Some(app) = e.remove("app_proto") {
        assert_eq!(app, n["proto"]);
    }
    if let Some(p) = e.remove("proto") {
        assert!(p == "TCP" || p == "UDP", "{p}");
    }
    assert!(
        e.is_empty(),
        "EVE members with no native counterpart: {e:?}"
    );
    Value::Object(n)
}

/// The native event line an EVE event line was made from.
fn event_back(eve: &Value) -> Value {
    let mut e = obj(eve);
    let mut n = obj(&e.remove("otwatch").expect("otwatch"));
    n.insert("ts".into(), native_ts(&e.remove("timestamp").unwrap()));
    let app = e.remove("app_proto").expect("app_proto");
    assert_eq!(e.remove("event_type"), Some(app.clone()));
    n.insert("proto".into(), app.clone());
    let transport = e.remove("proto").expect("proto");
    n.insert(
        "transport".into(),
        Value::from(transport.as_str().unwrap().to_lowercase()),
    );
    for (from, to) in [
        ("src_ip", "src_ip"),
        ("src_port", "src_port"),
        ("dest_ip", "dst_ip"),
        ("dest_port", "dst_port"),
        ("community_id", "community_id"),
        ("flow_id", "flow_id"),
        ("host", "sensor"),
    ] {
        back(&mut e, from, &mut n, to);
    }
    back(&mut e, app.as_str().unwrap(), &mut n, app.as_str().unwrap());
    if let Some(Value::Object(mut ether)) = e.remove("ether") {
        back(&mut ether, "src_mac", &mut n, "src_mac");
        back(&mut ether, "dest_mac", &mut n, "dst_mac");
        assert!(ether.is_empty());
    }
    let dir = e.remove("direction").expect("direction");
    let expected = match n["direction"].as_str() {
        Some("request") => "to_server",
        _ => "to_client",
    };
    assert_eq!(dir, expected);
    assert!(
        e.is_empty(),
        "EVE members with no native counterpart: {e:?}"
    );
    Value::Object(n)
}

#[test]
fn eve_lines_hold_the_native_lines() {
    let dir = common::scratch("eve");
    for pcap in [
        "fixtures/scenarios/modbus_write.pcap",
        "fixtures/scenarios/dnp3_restart.pcap",
        "fixtures/s7comm_downloading_block_db1.pcap",
    ] {
        let (alerts, events) = run(&dir, pcap, "otwatch");
        let (eve_alerts, eve_events) = run(&dir, pcap, "eve");
        assert_eq!(alerts.len(), eve_alerts.len(), "{pcap}");
        assert_eq!(events.len(), eve_events.len(), "{pcap}");
        assert!(!events.is_empty(), "{pcap}");
        for (native, eve) in alerts.iter().zip(&eve_alerts) {
            assert_eq!(eve["event_type"], "alert");
            assert_eq!(eve["host"], "cell-3");
            assert_eq!(&alert_back(eve), native, "{pcap}");
        }
        for (native, eve) in events.iter().zip(&eve_events) {
            assert_eq!(eve["event_type"], native["proto"]);
            assert_eq!(&event_back(eve), native, "{pcap}");
        }
    }
    assert!(!run(&dir, "fixtures/scenarios/modbus_write.pcap", "eve")
        .0
        .is_empty());
    let _ = std::fs::remove_dir_all(dir);
}
