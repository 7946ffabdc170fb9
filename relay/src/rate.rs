//! Token buckets keyed on node identity, so that reconnecting does not reset them.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use nullport_protocol::NodeId;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-identity buckets with one rate and burst.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<NodeId, Bucket>,
}

impl RateLimiter {
    /// `rate` per second, bursts of up to `burst`. A rate of 0 means unlimited.
    pub fn new(rate: u64, burst: u64) -> Self {
        Self {
            rate: rate as f64,
            burst: burst.max(1) as f64,
            buckets: DashMap::new(),
        }
    }

    /// Takes `n` tokens if available now.
    pub fn try_take(&self, id: &NodeId, n: u64, now: Instant) -> bool {
        self.take_or_wait(id, n, now).is_zero()
    }

    /// Takes `n` tokens (possibly going into debt) and returns how long the caller must
    /// wait before proceeding so that the average stays at the rate. For byte rates.
    pub fn take_or_wait(&self, id: &NodeId, n: u64, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let mut bucket = self.buckets.entry(*id).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        let n = n as f64;
        if bucket.tokens >= n {
            bucket.tokens -= n;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((n - bucket.tokens) / self.rate)
        }
    }

    /// Takes `n` tokens even if that leaves the bucket in debt (then waits are longer).
    pub fn charge(&self, id: &NodeId, n: u64, now: Instant) -> Duration {
        let wait = self.take_or_wait(id, n, now);
        if !wait.is_zero()
            && let Some(mut b) = self.buckets.get_mut(id)
        {
            b.tokens -= n as f64;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nullport_protocol::Identity;

    #[test]
    fn bucket_refills_at_rate_and_is_per_identity() {
        let limiter = RateLimiter::new(10, 5);
        let (a, b) = (
            Identity::from_seed([1; 32]).node_id(),
            Identity::from_seed([2; 32]).node_id(),
        );
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.try_take(&a, 1, t0));
        }
        assert!(!limiter.try_take(&a, 1, t0));
        assert!(
            limiter.try_take(&b, 1, t0),
            "other identities are unaffected"
        );
        assert!(limiter.try_take(&a, 1, t0 + Duration::from_millis(110)));
        assert!(!limiter.try_take(&a, 1, t0 + Duration::from_millis(110)));
    }

    #[test]
    fn byte_charges_compute_waits() {
        let limiter = RateLimiter::new(1000, 1000);
        let a = Identity::from_seed([1; 32]).node_id();
        let t0 = Instant::now();
        assert_eq!(limiter.charge(&a, 1000, t0), Duration::ZERO);
        let wait = limiter.charge(&a, 500, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(RateLimiter::new(0, 0).charge(&a, u64::MAX, t0).is_zero());
    }
}
