//! Token buckets in Redis, refilled and taken by one atomic script so that every pod sees
//! one bucket. The script reads Redis's own clock, so pods with skewed clocks agree.

use std::time::Duration;

use async_trait::async_trait;

use super::{RedisStore, redis_error};
use crate::storage::{BucketDecision, BucketSpec, RateLimitStore, StorageResult};

/// KEYS[1] bucket; ARGV: bucket size, ms per permit, permits wanted, 1 to consume.
/// Returns {1, 0} when allowed, {0, ms until enough permits} when not.
const TAKE: &str = r#"
local size = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = size
  at = now
end
local elapsed = now - at
if elapsed < 0 then elapsed = 0 end
tokens = math.min(size, tokens + elapsed / period)
if tokens >= wanted then
  if ARGV[4] == '1' then
    tokens = tokens - wanted
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
    redis.call('PEXPIRE', KEYS[1], math.ceil((size - tokens) * period) + 1000)
  end
  return {1, 0}
end
return {0, math.ceil((wanted - tokens) * period)}
"#;

#[async_trait]
impl RateLimitStore for RedisStore {
    async fn take(
        &self,
        key: &str,
        spec: BucketSpec,
        permits: u64,
        consume: bool,
    ) -> StorageResult<BucketDecision> {
        // `Script` hashes once and uses EVALSHA, falling back to EVAL after a Redis restart.
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(TAKE));
        let mut conn = self.conn.clone();
        let (allowed, wait_ms): (i64, i64) = SCRIPT
            .key(self.key(&format!("rl:{key}")))
            .arg(spec.bucket_size)
            .arg(spec.permit_period_ms)
            .arg(permits)
            .arg(if consume { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if allowed == 1 {
            Ok(BucketDecision::Allowed)
        } else {
            Ok(BucketDecision::Denied {
                retry_after: Duration::from_millis(wait_ms.max(0) as u64),
            })
        }
    }
}
