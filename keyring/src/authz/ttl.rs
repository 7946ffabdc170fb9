//! Lifetimes as people type them (`30s`, `10m`, `2h`, `1d`) for tokens and invites.

/// Why a lifetime could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad --ttl {0:?}: use 30s, 10m, 2h or 1d")]
pub struct TtlError(pub String);

/// Seconds in `text`: a number with an optional unit `s` (default), `m`, `h` or `d`.
pub fn parse(text: &str) -> Result<u64, TtlError> {
    let bad = || TtlError(text.to_owned());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let factor = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_errors() {
        assert_eq!(parse("30s"), Ok(30));
        assert_eq!(parse("45"), Ok(45));
        assert_eq!(parse("10m"), Ok(600));
        assert_eq!(parse("2h"), Ok(7200));
        assert_eq!(parse("1d"), Ok(86_400));
        for bad in ["", "m", "10w", "-1s", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
