//! Token buckets in memory: the same arithmetic as the Redis script, per process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::storage::{BucketDecision, BucketSpec, RateLimitStore, StorageError, StorageResult};

/// Past this many buckets, full ones (which carry no information) are dropped.
const PRUNE_ABOVE: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
    spec: BucketSpec,
}

impl Bucket {
    fn refilled(&self, now: Instant) -> f64 {
        let elapsed_ms = now.saturating_duration_since(self.at).as_secs_f64() * 1000.0;
        (self.tokens + elapsed_ms / self.spec.permit_period_ms).min(self.spec.bucket_size as f64)
    }
}

#[derive(Default)]
pub struct MemoryRateLimitStore {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl MemoryRateLimitStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimitStore for MemoryRateLimitStore {
    async fn take(
        &self,
        key: &str,
        spec: BucketSpec,
        permits: u64,
        consume: bool,
    ) -> StorageResult<BucketDecision> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("rate limit lock poisoned")))?;
        let tokens = buckets
            .get(key)
            .map(|b| b.refilled(now))
            .unwrap_or(spec.bucket_size as f64);
        let wanted = permits as f64;
        if tokens >= wanted {
            if consume {
                if buckets.len() >= PRUNE_ABOVE {
                    buckets.retain(|_, b| b.refilled(now) < b.spec.bucket_size as f64);
                }
                buckets.insert(
                    key.to_owned(),
                    Bucket {
                        tokens: tokens - wanted,
                        at: now,
                        spec,
                    },
                );
            }
            Ok(BucketDecision::Allowed)
        } else {
            let wait_ms = (wanted - tokens) * spec.permit_period_ms;
            Ok(BucketDecision::Denied {
                retry_after: Duration::from_secs_f64(wait_ms / 1000.0),
            })
        }
    }
}
