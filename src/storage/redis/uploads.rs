//! Resumable uploads in Redis: `{prefix}upload:{<key>}` holds the upload's state (JSON) and
//! `{prefix}upload:{<key>}:lease` the holder of its lease, in one hash slot so the scripts
//! that read both stay on one Redis Cluster shard; `{prefix}uploads:by-age` scores keys by
//! creation for the sweeper (kept apart, and updated after the state: an entry whose state
//! is gone is only dropped). The state expires a day after the upload's own lifetime, so
//! nothing outlives a sweeper that never ran.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{RedisStore, redis_error};
use crate::domain::uploads::{UPLOAD_LIFETIME_MS, Upload};
use crate::storage::uploads::UploadStore;
use crate::storage::{StorageError, StorageResult};

const STATE_TTL_MS: i64 = UPLOAD_LIFETIME_MS + 24 * 3600 * 1000;

/// KEYS[1] lease; ARGV: holder, ttl. Takes a free lease or renews one's own.
const LEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// KEYS[1] lease; ARGV[1] holder.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// KEYS[1] state, KEYS[2] lease; ARGV: holder, state, ttl. Writes only for the lease's
/// holder and only over an existing state.
const SAVE: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

static LEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
static SAVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SAVE));

fn encode(upload: &Upload) -> StorageResult<String> {
    serde_json::to_string(upload).map_err(|e| StorageError::Backend(e.into()))
}

impl RedisStore {
    fn upload_key(&self, key: &str) -> String {
        self.key(&format!("upload:{{{key}}}"))
    }

    fn lease_key(&self, key: &str) -> String {
        self.key(&format!("upload:{{{key}}}:lease"))
    }

    fn uploads_by_age(&self) -> String {
        self.key("uploads:by-age")
    }
}

#[async_trait]
impl UploadStore for RedisStore {
    async fn create(&self, upload: &Upload) -> StorageResult<bool> {
        let mut conn = self.connection();
        let stored: Option<String> = redis::cmd("SET")
            .arg(self.upload_key(&upload.key))
            .arg(encode(upload)?)
            .arg("NX")
            .arg("PX")
            .arg(STATE_TTL_MS)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if stored.is_none() {
            return Ok(false);
        }
        let _: i64 = redis::cmd("ZADD")
            .arg(self.uploads_by_age())
            .arg(upload.created_ms)
            .arg(&upload.key)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(true)
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Upload>> {
        let mut conn = self.connection();
        let value: Option<String> = redis::cmd("GET")
            .arg(self.upload_key(key))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        value
            .map(|json| {
                serde_json::from_str(&json).map_err(|e| {
                    StorageError::Backend(anyhow::anyhow!("an upload's state is corrupt: {e}"))
                })
            })
            .transpose()
    }

    async fn lease(&self, key: &str, holder: &str, ttl_ms: i64) -> StorageResult<bool> {
        let mut conn = self.connection();
        let taken: i64 = LEASE_SCRIPT
            .key(self.lease_key(key))
            .arg(holder)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(taken == 1)
    }

    async fn release(&self, key: &str, holder: &str) -> StorageResult<()> {
        let mut conn = self.connection();
        let _: i64 = RELEASE_SCRIPT
            .key(self.lease_key(key))
            .arg(holder)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn save(&self, upload: &Upload, holder: &str) -> StorageResult<bool> {
        let mut conn = self.connection();
        let saved: i64 = SAVE_SCRIPT
            .key(self.upload_key(&upload.key))
            .key(self.lease_key(&upload.key))
            .arg(holder)
            .arg(encode(upload)?)
            .arg(STATE_TTL_MS)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(saved == 1)
    }

    async fn remove(&self, key: &str) -> StorageResult<()> {
        let mut conn = self.connection();
        let _: i64 = redis::cmd("DEL")
            .arg(self.upload_key(key))
            .arg(self.lease_key(key))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.uploads_by_age())
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn created_before(&self, before_ms: i64, limit: usize) -> StorageResult<Vec<String>> {
        let mut conn = self.connection();
        redis::cmd("ZRANGE")
            .arg(self.uploads_by_age())
            .arg("-inf")
            .arg(format!("({before_ms}"))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)
    }
}
