//! Parsing of the CLI's timestamps: milliseconds since the Unix epoch, or an
//! RFC 3339 date-time such as `2024-05-01T12:30:00Z`.
//!
//! Accepted RFC 3339 form: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, with
//! `T`/`Z` in either case. The fraction may have 1–9 digits and is truncated
//! to milliseconds. Leap seconds (`:60`) are rejected.

/// Why a timestamp could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp '{input}': {reason} (expected milliseconds since the epoch or YYYY-MM-DDTHH:MM:SS[.sss]Z)")]
pub struct TimestampError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses milliseconds since the epoch (an optionally negative integer) or an
/// RFC 3339 date-time, returning milliseconds since the epoch (UTC).
///
/// # Errors
/// [`TimestampError`] naming the problem.
pub fn parse_timestamp(input: &str) -> Result<i64, TimestampError> {
    let s = input.trim();
    let error = |reason| TimestampError {
        input: input.to_string(),
        reason,
    };
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| error("out of range"));
    }
    parse_rfc3339(s).map_err(error)
}

/// A cursor over the ASCII bytes of a date-time.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// Reads exactly `n` decimal digits.
    fn digits(&mut self, n: usize, what: &'static str) -> Result<u32, &'static str> {
        let end = self.pos + n;
        let field = self.bytes.get(self.pos..end).ok_or(what)?;
        if !field.iter().all(u8::is_ascii_digit) {
            return Err(what);
        }
        self.pos = end;
        Ok(field
            .iter()
            .fold(0, |acc, b| acc * 10 + u32::from(b - b'0')))
    }

    /// Consumes one of `expected` (case-insensitive), or fails with `what`.
    fn byte(&mut self, expected: u8, what: &'static str) -> Result<(), &'static str> {
        match self.bytes.get(self.pos) {
            Some(b) if b.eq_ignore_ascii_case(&expected) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(what),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }
}

/// Parses the RFC 3339 form described in the module docs.
fn parse_rfc3339(s: &str) -> Result<i64, &'static str> {
    let mut c = Cursor {
        bytes: s.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4, "bad year")?;
    c.byte(b'-', "expected '-' after the year")?;
    let month = c.digits(2, "bad month")?;
    c.byte(b'-', "expected '-' after the month")?;
    let day = c.digits(2, "bad day")?;
    c.byte(b'T', "expected 'T' between date and time")?;
    let hour = c.digits(2, "bad hour")?;
    c.byte(b':', "expected ':' after the hour")?;
    let minute = c.digits(2, "bad minute")?;
    c.byte(b':', "expected ':' after the minute")?;
    let second = c.digits(2, "bad second")?;
    let millis = fraction_millis(&mut c)?;
    let offset_minutes = zone_offset_minutes(&mut c)?;
    if c.pos != c.bytes.len() {
        return Err("unexpected text after the time zone");
    }
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("time of day out of range");
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Ok((seconds - offset_minutes * 60) * 1000 + millis)
}

/// Reads an optional `.fraction` and returns it in whole milliseconds.
fn fraction_millis(c: &mut Cursor<'_>) -> Result<i64, &'static str> {
    if c.peek() != Some(b'.') {
        return Ok(0);
    }
    c.pos += 1;
    let start = c.pos;
    while c.peek().is_some_and(|b| b.is_ascii_digit()) {
        c.pos += 1;
    }
    let digits = &c.bytes[start..c.pos];
    if digits.is_empty() || digits.len() > 9 {
        return Err("the fraction of a second needs 1 to 9 digits");
    }
    let millis = digits
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0, |acc, b| acc * 10 + i64::from(b - b'0'));
    Ok(millis)
}

/// Reads `Z` or `±HH:MM` and returns the offset from UTC in minutes.
fn zone_offset_minutes(c: &mut Cursor<'_>) -> Result<i64, &'static str> {
    let sign = match c.peek() {
        Some(b'Z' | b'z') => {
            c.pos += 1;
            return Ok(0);
        }
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err("expected a time zone: 'Z' or ±HH:MM"),
    };
    c.pos += 1;
    let hours = c.digits(2, "bad time zone hours")?;
    c.byte(b':', "expected ':' in the time zone")?;
    let minutes = c.digits(2, "bad time zone minutes")?;
    if hours > 23 || minutes > 59 {
        return Err("time zone out of range");
    }
    Ok(sign * i64::from(hours * 60 + minutes))
}

fn is_leap_year(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_epoch_millis() {
        assert_eq!(parse_timestamp("0"), Ok(0));
        assert_eq!(parse_timestamp("1714566600000"), Ok(1_714_566_600_000));
        assert_eq!(parse_timestamp("-5"), Ok(-5));
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_timestamp("2024-05-01T12:30:00Z"),
            Ok(1_714_566_600_000)
        );
        assert_eq!(
            parse_timestamp("2024-05-01t12:30:00.5z"),
            Ok(1_714_566_600_500)
        );
        assert_eq!(
            parse_timestamp("2024-05-01T12:30:00.123456789Z"),
            Ok(1_714_566_600_123)
        );
        assert_eq!(
            parse_timestamp("2024-05-01T14:30:00+02:00"),
            Ok(1_714_566_600_000)
        );
        assert_eq!(
            parse_timestamp("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800_000)
        );
        assert_eq!(parse_timestamp("2000-03-01T00:00:00Z"), Ok(951_868_800_000));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.999Z"), Ok(-1));
    }

    #[test]
    fn rejects_malformed_dates() {
        for bad in [
            "",
            "yesterday",
            "2024-05-01",
            "2024-05-01T12:30Z",
            "2024-05-01T12:30:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:30:60Z",
            "2024-05-01T12:30:00.Z",
            "2024-05-01T12:30:00Zjunk",
            "99999999999999999999",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = parse_timestamp("2024-13-01T00:00:00Z").unwrap_err();
        assert_eq!(e.reason, "month out of range");
    }
}
