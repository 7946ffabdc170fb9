//! Reading times people give: RFC 3339 (`2026-11-22T08:00:00Z`, `2026-11-22T09:00:00+01:00`,
//! with or without fractional seconds) and durations back from now (`90s`, `10m`, `1h`,
//! `2d`), for `audit export --since`. Anything else is an error that says what is accepted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a time was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time: use RFC 3339 (2026-11-22T08:00:00Z, or with an offset like +01:00) or a duration back from now (90s, 10m, 1h, 2d)"
)]
pub struct TimeError(pub String);

/// `text` as an instant: RFC 3339, or `now` minus a duration.
pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, TimeError> {
    let bad = || TimeError(text.to_owned());
    if let Some(t) = parse_rfc3339(text) {
        return Ok(t);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3_600).ok_or_else(bad)?,
        "d" => n.checked_mul(86_400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    now.checked_sub(Duration::from_secs(secs)).ok_or_else(bad)
}

/// An RFC 3339 date-time (`T` or space between date and time; `Z` or `±hh:mm`).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let scaled = format!("{:0<9}", &frac[..digits.min(9)]);
        nanos = scaled.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let (sign, hm) = match rest.as_bytes().first()? {
                b'+' => (1, &rest[1..]),
                b'-' => (-1, &rest[1..]),
                _ => return None,
            };
            let (h, m) = hm.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3_600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::rfc3339;

    #[test]
    fn rfc3339_round_trips_with_and_without_offsets() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        let z = parse_rfc3339("2026-11-22T08:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-11-22T09:30:00+01:30"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-22T07:00:00-01:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-22 08:00:00Z"), Some(z));
        assert_eq!(
            z.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_334_400
        );
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_since("90s", now), Ok(now - Duration::from_secs(90)));
        assert_eq!(
            parse_since("2d", now),
            Ok(now - Duration::from_secs(172_800))
        );
        assert_eq!(parse_since("1h", now), Ok(now - Duration::from_secs(3_600)));
    }

    #[test]
    fn anything_else_is_refused() {
        let now = SystemTime::now();
        for bad in [
            "yesterday",
            "",
            "1w",
            "-1h",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T08:00:00",
            "2026-11-22T08:00:00+0100",
            "99999999999999999999d",
        ] {
            assert_eq!(
                parse_since(bad, now),
                Err(TimeError(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
