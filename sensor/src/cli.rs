//! Command-line parsing helpers shared by the subcommands.

/// Parse a duration such as `30s`, `5m`, `1h`, `250ms`, `90` (seconds) or
/// `never`. Returns nanoseconds, `None` for never.
pub fn parse_duration(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("'{s}' is not a duration; use a number with a unit (ms, s, m, h), e.g. 30s or 5m, or 'never'")
    })?;
    let mult = match unit {
        "" | "s" => 1e9,
        "ms" => 1e6,
        "us" => 1e3,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("'{s}' has unknown unit '{unit}'; allowed units are ms, s, m, h (or 'never')")),
    };
    let ns = n * mult;
    if !ns.is_finite() || ns < 1e6 {
        return Err(format!("'{s}' is too short; the smallest allowed duration is 1ms (or 'never')"));
    }
    Ok(Some(ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Some(30_000_000_000)));
        assert_eq!(parse_duration("5m"), Ok(Some(300_000_000_000)));
        assert_eq!(parse_duration("250ms"), Ok(Some(250_000_000)));
        assert_eq!(parse_duration("2"), Ok(Some(2_000_000_000)));
        assert_eq!(parse_duration("1.5h"), Ok(Some(5_400_000_000_000)));
        assert_eq!(parse_duration("never"), Ok(None));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("too short"));
    }

    #[test]
    fn ipfix_mtu_is_auto_or_a_byte_count_in_range() {
        assert_eq!(parse_ipfix_mtu("auto"), Ok(IpfixMtu(None)));
        assert_eq!(parse_ipfix_mtu("1500"), Ok(IpfixMtu(Some(1500))));
        for bad in ["575", "65536", "big", ""] {
            let e = parse_ipfix_mtu(bad).unwrap_err();
            assert!(e.contains("neither `auto` nor a byte count from 576 to 65535"), "{bad}: {e}");
        }
    }
}

/// A timeout from the command line: nanoseconds, or `None` for never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<u64>);

/// [`parse_duration`] for clap.
pub fn parse_timeout(s: &str) -> Result<Timeout, String> {
    parse_duration(s).map(Timeout)
}

/// `--ipfix-mtu`: a byte count, or `None` for `auto` (the kernel's path MTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpfixMtu(pub Option<usize>);

/// Parse `--ipfix-mtu`: `auto` or 576..=65535.
pub fn parse_ipfix_mtu(s: &str) -> Result<IpfixMtu, String> {
    if s == "auto" {
        return Ok(IpfixMtu(None));
    }
    match s.parse::<usize>() {
        Ok(n) if (576..=65535).contains(&n) => Ok(IpfixMtu(Some(n))),
        _ => Err(format!("'{s}' is neither `auto` nor a byte count from 576 to 65535")),
    }
}
