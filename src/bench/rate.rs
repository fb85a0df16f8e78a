//! Pacing for `--rate`: record *n* (0-based) is due at `n / rate` seconds
//! after the start. Pacing is by schedule, not by gaps between sends, so a
//! late sender catches up instead of drifting.

use std::time::Duration;

/// Slack for float rounding when converting a due time back to a count, in
/// records: a record is never counted as not yet due at its own due time.
const ROUNDING_SLACK: f64 = 1e-6;

/// A fixed rate of records per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimiter {
    per_sec: f64,
}

impl RateLimiter {
    /// A limiter of `per_sec` records per second; `None` unless `per_sec`
    /// is finite and positive.
    pub fn new(per_sec: f64) -> Option<Self> {
        (per_sec.is_finite() && per_sec > 0.0).then_some(RateLimiter { per_sec })
    }

    /// The rate, records per second.
    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }

    /// When record `n` (0-based) is due, as time since the start.
    pub fn due_at(&self, n: u64) -> Duration {
        let secs = n as f64 / self.per_sec;
        // Far beyond any run; keeps from_secs_f64 from panicking on overflow.
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    /// How many records are due `elapsed` after the start: those whose due
    /// time is at or before `elapsed` (so 1 at the start itself).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        let due = elapsed.as_secs_f64() * self.per_sec + ROUNDING_SLACK;
        if due >= u64::MAX as f64 {
            u64::MAX
        } else {
            (due.floor() as u64).saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_positive_or_non_finite_rates() {
        assert!(RateLimiter::new(0.0).is_none());
        assert!(RateLimiter::new(-1.0).is_none());
        assert!(RateLimiter::new(f64::NAN).is_none());
        assert!(RateLimiter::new(f64::INFINITY).is_none());
        assert_eq!(RateLimiter::new(10.0).map(|r| r.per_sec()), Some(10.0));
    }

    #[test]
    fn due_times_follow_the_schedule() {
        let r = RateLimiter::new(1000.0).unwrap();
        assert_eq!(r.due_at(0), Duration::ZERO);
        assert_eq!(r.due_at(1), Duration::from_millis(1));
        assert_eq!(r.due_at(10_000), Duration::from_secs(10));
        assert_eq!(r.due_by(Duration::ZERO), 1);
        assert_eq!(r.due_by(Duration::from_micros(999)), 1);
        assert_eq!(r.due_by(Duration::from_millis(1)), 2);
        assert_eq!(r.due_by(Duration::from_secs(1)), 1001);
    }

    #[test]
    fn every_record_is_due_at_its_own_due_time() {
        // 0.3 * 10 is 2.9999999999999996 in floating point.
        for rate in [3.0, 7.0, 10.0, 333.3, 10_000.0, 100_000.0] {
            let r = RateLimiter::new(rate).unwrap();
            for n in 0..2000u64 {
                assert!(r.due_by(r.due_at(n)) > n, "rate {rate}, record {n}");
            }
        }
    }

    #[test]
    fn fractional_rates_and_huge_values_do_not_overflow() {
        let r = RateLimiter::new(0.5).unwrap();
        assert_eq!(r.due_at(1), Duration::from_secs(2));
        assert_eq!(r.due_by(Duration::from_millis(1999)), 1);
        assert_eq!(r.due_by(Duration::from_secs(2)), 2);
        let slow = RateLimiter::new(1e-300).unwrap();
        assert_eq!(slow.due_at(u64::MAX), Duration::MAX);
        let fast = RateLimiter::new(1e300).unwrap();
        assert_eq!(fast.due_by(Duration::from_secs(1)), u64::MAX);
    }
}
