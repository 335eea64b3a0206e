//! Requests per caller: a token bucket per caller fingerprint, so one client (or one leaked
//! token) cannot take the server from everyone else. Over the limit is a 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::ApiError;

/// Buckets kept at most; beyond this, full (idle) buckets are forgotten.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    /// Requests per second, sustained; 0 turns limiting off.
    per_second: f64,
    /// Requests allowed at once after a quiet period.
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request from `caller`'s bucket.
    pub fn check(&self, caller: &str) -> Result<(), ApiError> {
        self.check_at(caller, Instant::now())
    }

    /// Refuse `key` if its bucket is empty, without taking from it.
    pub fn check_not_exhausted(&self, key: &str) -> Result<(), ApiError> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match buckets.get(key) {
            Some(bucket)
                if bucket.tokens
                    + now.duration_since(bucket.updated).as_secs_f64() * self.per_second
                    < 1.0 =>
            {
                Err(ApiError::TooManyRequests {
                    retry_after_secs: (1.0 / self.per_second).ceil().max(1.0) as u64,
                })
            }
            _ => Ok(()),
        }
    }

    fn check_at(&self, caller: &str, now: Instant) -> Result<(), ApiError> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(caller.to_string()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / self.per_second).ceil().max(1.0) as u64;
        Err(ApiError::TooManyRequests {
            retry_after_secs: wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills() {
        let limiter = RateLimiter::new(2, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", start).is_ok());
        }
        assert!(matches!(
            limiter.check_at("a", start),
            Err(ApiError::TooManyRequests {
                retry_after_secs: 1
            })
        ));
        // Another caller has its own bucket.
        assert!(limiter.check_at("b", start).is_ok());
        assert!(
            limiter
                .check_at("a", start + Duration::from_millis(600))
                .is_ok()
        );
    }

    #[test]
    fn an_empty_bucket_is_seen_without_taking_from_it() {
        let limiter = RateLimiter::new(1, 2);
        assert!(
            limiter.check_not_exhausted("refused:10.0.0.1").is_ok(),
            "unknown keys are not exhausted"
        );
        assert!(
            limiter.check("refused:10.0.0.1").is_ok() && limiter.check("refused:10.0.0.1").is_ok()
        );
        assert!(matches!(
            limiter.check_not_exhausted("refused:10.0.0.1"),
            Err(ApiError::TooManyRequests { .. })
        ));
        assert!(limiter.check_not_exhausted("refused:10.0.0.2").is_ok());
    }

    #[test]
    fn zero_turns_it_off() {
        let limiter = RateLimiter::new(0, 0);
        let now = Instant::now();
        assert!((0..10_000).all(|_| limiter.check_at("a", now).is_ok()));
    }
}
