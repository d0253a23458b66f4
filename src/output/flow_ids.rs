//! Identifiers other tools already use for a flow, so a SIEM can join otwatch's lines to
//! Zeek's, Suricata's or tshark's: the Community ID flow hash, and a numeric `flow_id` derived
//! from it.

use std::net::IpAddr;

use otwatch_models::Ports;

/// The Community ID flow hash (v1, seed 0) of the flow between `src` and `dst`: the value Zeek,
/// Suricata and tshark's `communityid` give it, whichever direction a packet went.
pub fn community_id(src: IpAddr, dst: IpAddr, p: Ports) -> Option<String> {
    ids(src, dst, p).map(|i| i.0)
}

/// The flow's Community ID and a number for it, from one hash. The number is the same on
/// every event and alert line of the flow (and in every run and sensor): the first 53 bits of
/// the Community ID hash, so that JSON readers that hold numbers as doubles keep it exact. Not
/// Suricata's own `flow_id`, which is random per run.
pub fn ids(src: IpAddr, dst: IpAddr, p: Ports) -> Option<(String, u64)> {
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
        let _ = serde_json::to_writer(&mut *line, k);
        line.push(b':');
        let _ = serde_json::to_writer(&mut *line, v);
    }
    for (k, v) in numbers {
        sep(line);
        let _ = serde_json::to_writer(&mut *line, k);
        line.push(b':');
        line.extend_from_slice(v.to_string().as_bytes());
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
