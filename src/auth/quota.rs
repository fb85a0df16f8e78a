//! Byte-rate quotas: a token bucket per principal and direction.
//!
//! A bucket refills at `rate` bytes per second up to one second's worth
//! (the burst). A produce of `n` bytes is admitted when the bucket holds
//! `min(n, burst)` tokens and then takes all `n`, so the balance may go
//! negative (a debt that later requests wait out); a request larger than the
//! burst is therefore not refused forever, and the long-run rate is exact.
//! A fetch's size is known only after it ran, so a fetch is admitted while
//! the balance is positive and charged afterwards. A refusal carries how
//! long until the request would be admitted: the retry hint.
//!
//! Pure: the caller passes `now`, so tests need no clock.

use std::time::{Duration, Instant};

/// A token bucket of bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate_bytes_per_sec` (at least 1).
    pub fn new(rate_bytes_per_sec: u64, now: Instant) -> TokenBucket {
        let rate = rate_bytes_per_sec.max(1) as f64;
        TokenBucket {
            rate_per_sec: rate,
            burst: rate,
            tokens: rate,
            last: now,
        }
    }

    /// The configured rate, bytes/s.
    pub fn rate_bytes_per_sec(&self) -> u64 {
        self.rate_per_sec as u64
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        self.last = now;
    }

    fn wait_for(&self, needed: f64) -> Duration {
        let missing = (needed - self.tokens).max(0.0);
        let ms = (missing / self.rate_per_sec * 1000.0).ceil().max(1.0);
        Duration::from_millis(ms as u64)
    }

    /// Takes `bytes` if the bucket holds `min(bytes, burst)` tokens.
    ///
    /// # Errors
    /// How long until it would: nothing is taken.
    pub fn try_take(&mut self, bytes: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let needed = (bytes as f64).min(self.burst);
        if self.tokens < needed {
            return Err(self.wait_for(needed));
        }
        self.tokens -= bytes as f64;
        Ok(())
    }

    /// Admits a request whose size is not known yet: Ok while the balance
    /// is positive.
    ///
    /// # Errors
    /// How long until the debt is paid.
    pub fn check_positive(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens > 0.0 {
            Ok(())
        } else {
            Err(self.wait_for(f64::MIN_POSITIVE))
        }
    }

    /// Charges `bytes` after the fact (a fetch that has run).
    pub fn charge(&mut self, bytes: u64, now: Instant) {
        self.refill(now);
        self.tokens -= bytes as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_hint() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert!(b.try_take(600, t0).is_ok());
        assert!(b.try_take(400, t0).is_ok());
        let wait = b.try_take(100, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Refusal takes nothing: after 100 ms exactly 100 bytes fit.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.try_take(100, t1).is_ok());
        assert!(b.try_take(1, t1).is_err());
    }

    #[test]
    fn oversized_request_needs_a_full_bucket_and_leaves_a_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert!(b.try_take(3000, t0).is_ok(), "a full bucket admits it");
        // 2000 bytes of debt plus the 1000-byte burst needed for the next one.
        let wait = b.try_take(3000, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(3000));
        assert!(b.try_take(3000, t0 + Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn fetches_are_charged_after_the_fact() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert!(b.check_positive(t0).is_ok());
        b.charge(2500, t0);
        let wait = b.check_positive(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(1500));
        assert!(b.check_positive(t0 + Duration::from_millis(1501)).is_ok());
    }

    #[test]
    fn the_bucket_never_holds_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(b.try_take(10, later).is_ok());
        assert!(b.try_take(1, later).is_err());
    }
}
