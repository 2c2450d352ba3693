//! RFC 3339 timestamps to and from Unix milliseconds, without a date library.
//!
//! The schedule of a sale is written as RFC 3339 (`2026-11-27T09:00:00Z`,
//! `2026-11-27T10:00:00.250+01:00`); the room works in Unix milliseconds. Only years
//! 1970..=9999 are accepted: a sale before the epoch is a typo.

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) into Unix
/// milliseconds. `t`/`z` and a space in place of `T` are accepted, as RFC 3339 allows.
/// Fractions beyond milliseconds are truncated.
pub fn parse_rfc3339_ms(text: &str) -> Result<u64, String> {
    let b = text.as_bytes();
    let err = |what: &str| Err(format!("`{text}` is not an RFC 3339 timestamp: {what}"));
    if b.len() < 20 {
        return err("too short (expected e.g. 2026-11-27T09:00:00Z)");
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let s = b.get(range)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
    };
    let (Some(year), Some(month), Some(day)) = (num(0..4), num(5..7), num(8..10)) else {
        return err("bad date digits");
    };
    if b[4] != b'-' || b[7] != b'-' {
        return err("date must be YYYY-MM-DD");
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return err("missing `T` between date and time");
    }
    let (Some(hour), Some(minute), Some(second)) = (num(11..13), num(14..16), num(17..19)) else {
        return err("bad time digits");
    };
    if b[13] != b':' || b[16] != b':' {
        return err("time must be HH:MM:SS");
    }
    if !(1970..=9999).contains(&year) {
        return err("year out of range 1970..=9999");
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return err("no such date");
    }
    // A leap second (60) is folded onto the next second's start, as most systems do.
    if hour > 23 || minute > 59 || second > 60 {
        return err("no such time of day");
    }
    let mut i = 19;
    let mut millis = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return err("empty fraction of a second");
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (Some(oh), Some(om)) = (num(i + 1..i + 3), num(i + 4..i + 6)) else {
                return err("bad offset digits");
            };
            if oh > 23 || om > 59 {
                return err("offset out of range");
            }
            let o = (oh * 3600 + om * 60) as i64;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return err("missing or malformed offset (`Z` or `±HH:MM`)"),
    };
    let days = days_from_civil(year as i64, month as i64, day as i64);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_secs;
    if secs < 0 {
        return err("before 1970-01-01T00:00:00Z");
    }
    Ok(secs as u64 * 1000 + millis)
}

/// Formats Unix milliseconds as RFC 3339 in UTC with millisecond precision
/// (`2026-11-27T09:00:00.000Z`).
pub fn format_rfc3339_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (public domain algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-27T09:00:00Z"),
            Ok(1_795_770_000_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-27T10:00:00.25+01:00"),
            Ok(1_795_770_000_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-27t04:00:00.123456-05:00"),
            Ok(1_795_770_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29 00:00:00Z"),
            Ok(1_709_164_800_000)
        );
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "2026-11-27",
            "2026-11-27T09:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T09:00:00.Z",
            "2026-11-27T09:00:00+0100",
            "2026-11-27T09:00:00Zjunk",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+01:00",
            "２０２６-11-27T09:00:00Z",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad} accepted");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in 0u64..253_402_300_799_999) {
            prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339_ms(&s);
        }
    }
}
