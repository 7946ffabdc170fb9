//! Exponential backoff with jitter for reconnecting to the relay.

use std::time::Duration;

/// Doubles from `min` up to `max`, each wait randomised to 50-100% ("equal jitter") so that
/// nodes cut off together do not come back together.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A new backoff.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let mut r = [0u8; 2];
        let frac = if getrandom::getrandom(&mut r).is_ok() {
            f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX)
        } else {
            0.5
        };
        base.mul_f64(0.5 + 0.5 * frac)
    }

    /// Back to the minimum (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<_> = (0..10).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(2)));
        assert!(waits[9] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
