//! Durations on the command line: `60`, `90s`, `15m`, `2h`, `1d`.

/// `60`, `90s`, `15m`, `2h`, `1d` into nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a duration (e.g. 90s, 15m, 2h, 1d)"))?;
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d)")),
    };
    let nanos = n * mult * 1e9;
    if !nanos.is_finite() || nanos < 0.0 || nanos > i64::MAX as f64 {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(nanos as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90_000_000_000));
        assert_eq!(parse_duration("90s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5m"), Ok(90_000_000_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000_000_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000_000_000));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
