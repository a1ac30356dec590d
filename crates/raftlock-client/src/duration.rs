//! Durations as raftlock's command line, docs and environment variables
//! write them: a whole number and a unit (`500ms`, `30s`, `5m`, `24h`).

use std::time::Duration;

/// The longest duration [`parse_duration`] accepts: a lease's longest ttl.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parse `500ms`, `30s`, `5m`, `2h` (or `0`), at most [`MAX_DURATION`].
/// The error says what is expected, for a person to read.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = "expected a whole number and a unit, ms, s, m or h (e.g. 500ms, 30s, 5m)";
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    if number.is_empty() {
        return Err(hint.to_string());
    }
    let n: u64 = number
        .parse()
        .map_err(|_| "the number is too large (at most 24h)".to_string())?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" if n == 0 => 1,
        "" => return Err(format!("no unit; {hint}")),
        _ => return Err(format!("unknown unit `{unit}`; {hint}")),
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| "longer than the maximum, 24h".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_stay_within_a_day() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 30s "), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        for bad in ["5x", "10", "s", "", "1.5s", "-1s", "10 s"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("ms, s, m or h"), "{bad}: {e}");
        }
        assert!(parse_duration("99999999999999999999s").is_err());
    }
}
