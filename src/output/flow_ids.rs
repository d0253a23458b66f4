//! Identifiers other tools already use for a flow, so a SIEM can join otwatch's lines to
//! Zeek's, Suricata's or tshark's: the Community ID flow hash, and a numeric `flow_id` derived
//! from it.

use std::net::IpAddr;

use otwatch_models::Ports;

use crate::output::json::push_str;

/// The Community ID flow hash (v1, seed 0) of the flow between `src` and `dst`: the value Zeek,
/// Suricata and tshark's `communityid` give it, whichever direction a packet went.
pub fn community_id(src: IpAddr, dst: IpAddr, p: Ports) -> Option<String> {
    ids(src, dst, p).map(|i| i.0)
}

/// The flow's Community ID and a number for it, from one hash. The number is the same on
/// every event and alert line of the flow (and in every run and sensor): the first 53 bits of
/// the Community ID hash, so that JSON readers that hold numbers as doubles keep it exact. Not
/// Suricata's own `flow_id`, which is random per run.
///
/// Made once per flow in a while: those of up to 64 recent flows are kept ([`RECENT`], one flow
/// per place), since an events file writes one line per PDU and a flow's PDUs come in runs, and
/// making them (a SHA-1 whose result the crate gives as hex, read back to bytes and written in
/// base64) costs about 6 000 instructions, as much as the rest of an event's line.
pub fn ids(src: IpAddr, dst: IpAddr, p: Ports) -> Option<(String, u64)> {
    let key = (src, dst, p);
    let slot = slot_of(&key);
    RECENT.with_borrow_mut(|recent| {
        let entry = &mut recent[slot];
        match entry {
            Some((k, made)) if *k == key => made.clone(),
            _ => {
                let made = make_ids(src, dst, p);
                *entry = Some((key, made.clone()));
                made
            }
        }
    })
}

/// The places in [`RECENT`], each for one flow's identifiers: at most this many flows' are kept
/// (two flows whose keys share a place take it in turns).
const RECENT_FLOWS: usize = 64;

/// A flow's addresses and ports, as [`ids`] takes them.
type FlowKey = (IpAddr, IpAddr, Ports);

thread_local! {
    /// The identifiers of the last flows [`ids`] was asked for, each at the place its key
    /// hashes to (a newer flow at the same place takes it). Per thread: the reader and each
    /// worker write lines of their own.
    #[allow(clippy::type_complexity)]
    static RECENT: std::cell::RefCell<[Option<(FlowKey, Option<(String, u64)>)>; RECENT_FLOWS]> =
        const { std::cell::RefCell::new([const { None }; RECENT_FLOWS]) };
}

/// The place of `key` in [`RECENT`] (a fixed hash: the table is a cache, and a collision only
/// costs the identifiers being made again).
fn slot_of(key: &FlowKey) -> usize {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0).hash_one(key) as usize % RECENT_FLOWS
}

/// [`ids`], made.
fn make_ids(src: IpAddr, dst: IpAddr, p: Ports) -> Option<(String, u64)> {
    use base64::Engine as _;
    let proto = if p.udp { 17 } else { 6 };
    let hex =
        community_id::calculate_community_id(0, src, dst, Some(p.src), Some(p.dst), proto, true)
            .ok()?;
    let digits = hex.strip_prefix("1:")?;
    let bytes: Vec<u8> = (0..digits.len() / 2)
        .map(|i| u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let first: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let flow = u64::from_be_bytes(first) >> 11;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Some((format!("1:{b64}"), flow))
}

/// Appends string and number members to the JSON object just written at the end of `line`
/// (its closing brace is moved after them). Strings are escaped as JSON.
pub fn append_members(line: &mut Vec<u8>, strings: &[(&str, &str)], numbers: &[(&str, u64)]) {
    if line.last() != Some(&b'}') {
        return;
    }
    line.pop();
    let empty = line.last() == Some(&b'{');
    let mut first = empty;
    let mut sep = |line: &mut Vec<u8>| {
        if !first {
            line.push(b',');
        }
        first = false;
    };
    for (k, v) in strings {
        sep(line);
        push_str(line, k);
        line.push(b':');
        push_str(line, v);
    }
    for (k, v) in numbers {
        sep(line);
        push_str(line, k);
        line.push(b':');
        let _ = crate::output::json::to_writer(line, v);
    }
    line.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn community_id_is_the_specifications_and_flow_id_fits_a_double() {
        let p = Ports {
            src: 1122,
            dst: 3344,
            udp: false,
        };
        let (a, b) = ([1, 2, 3, 4].into(), [5, 6, 7, 8].into());
        assert_eq!(
            community_id(a, b, p).as_deref(),
            Some("1:wCb3OG7yAFWelaUydu0D+125CLM=")
        );
        // The same flow either way round.
        assert_eq!(community_id(b, a, p.reversed()), community_id(a, b, p));
        let id = ids(a, b, p).unwrap().1;
        assert_eq!(ids(b, a, p.reversed()).map(|i| i.1), Some(id));
        assert!(id < 1 << 53);
        // "1:" + hex of wCb3OG7y… = c026f7386ef2…: its first 64 bits, shifted to 53.
        assert_eq!(id, 0xc026_f738_6ef2_0055 >> 11);
    }

    /// The kept identifiers are those of the flow asked for: flows that share a place, asked
    /// for in turn, each get their own, either way round.
    #[test]
    fn kept_identifiers_are_the_flows_own() {
        let flows: Vec<(IpAddr, IpAddr, Ports)> = (0..4 * RECENT_FLOWS as u16)
            .map(|i| {
                let p = Ports {
                    src: 40000 + i,
                    dst: 502,
                    udp: i % 3 == 0,
                };
                let (a, b) = if i % 2 == 0 {
                    ([10, 0, 0, 1].into(), [10, 0, 0, 2].into())
                } else {
                    ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
                };
                (a, b, p)
            })
            .collect();
        for _ in 0..3 {
            for &(a, b, p) in flows.iter().chain(flows.iter().rev()) {
                assert_eq!(ids(a, b, p), make_ids(a, b, p));
                assert_eq!(ids(b, a, p.reversed()), make_ids(a, b, p));
            }
        }
        // Flows that differ in one thing only, the ports the same: over UDP or TCP, another
        // host, another address family. Each asked for right after the other.
        let p = Ports {
            src: 40000,
            dst: 502,
            udp: false,
        };
        let udp = Ports { udp: true, ..p };
        let v4: (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let other: (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 3].into());
        let v6: (IpAddr, IpAddr) = (
            "::ffff:10.0.0.1".parse().unwrap(),
            "::ffff:10.0.0.2".parse().unwrap(),
        );
        for _ in 0..2 {
            for ((a, b), p) in [(v4, p), (v4, udp), (other, p), (v6, p), (v4, p)] {
                assert_eq!(ids(a, b, p), make_ids(a, b, p), "{a} {b} {p:?}");
            }
        }
        assert_ne!(make_ids(v4.0, v4.1, p), make_ids(v4.0, v4.1, udp));
        assert_ne!(make_ids(v4.0, v4.1, p), make_ids(other.0, other.1, p));
        assert_ne!(make_ids(v4.0, v4.1, p), make_ids(v6.0, v6.1, p));
    }

    #[test]
    fn members_are_appended_escaped() {
        let mut line = br#"{"a":1}"#.to_vec();
        append_members(&mut line, &[("sensor", "plant \"7\"")], &[("flow_id", 42)]);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"{"a":1,"sensor":"plant \"7\"","flow_id":42}"#
        );
        let mut empty = b"{}".to_vec();
        append_members(&mut empty, &[("s", "x")], &[]);
        assert_eq!(empty, br#"{"s":"x"}"#);
    }
}
