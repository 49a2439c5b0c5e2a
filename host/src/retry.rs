//! The one backoff every retry loop uses (delivery posts, DynamoDB's
//! `UnprocessedItems`, background rollbacks): exponential with full jitter,
//! so retries from many requests spread out instead of arriving together.

use std::time::Duration;

/// Delays that double from `base` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first retry): uniform
    /// in [0, min(max, base·2^(retry-1))].
    pub fn delay(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(self.max)
            .mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let backoff = Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_millis(800),
        };
        for retry in 0..40 {
            assert!(backoff.delay(retry) <= backoff.max);
        }
        // Full jitter: over many draws the mean of retry 4 (cap 200 ms) sits
        // near 100 ms, well above retry 1's (cap 25 ms).
        let mean = |retry| {
            (0..2000)
                .map(|_| backoff.delay(retry).as_secs_f64())
                .sum::<f64>()
                / 2000.0
        };
        assert!(mean(4) > mean(1) * 3.0);
    }
}
