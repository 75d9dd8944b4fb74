//! Per-device message queues in Redis. A queue is three keys sharing the device's hash tag
//! (`{aci:device}`), so every script touches one slot and the layout works on Redis Cluster
//! unchanged: `…:i` a sorted set of GUIDs scored by position, `…:m` a hash GUID -> envelope,
//! `…:s` the position counter. All three expire together, a configured time after the last
//! insert.

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;
use uuid::Uuid;

use super::{RedisStore, redis_error};
use crate::domain::ids::{Aci, DeviceId};
use crate::storage::{MessageStore, QueuedMessage, StorageError, StorageResult};

/// KEYS: index, messages, counter. ARGV: guid, envelope, ttl ms. Returns the position, or 0
/// when the GUID is already queued.
const INSERT: &str = r#"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return seq
"#;

/// KEYS: index, messages. ARGV: after, limit. Returns {seq, guid, envelope, ...}.
const READ: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #ids, 2 do
  local envelope = redis.call('HGET', KEYS[2], ids[i])
  if envelope then
    out[#out + 1] = ids[i + 1]
    out[#out + 1] = ids[i]
    out[#out + 1] = envelope
  else
    redis.call('ZREM', KEYS[1], ids[i])
  end
end
return out
"#;

/// KEYS: index, messages. ARGV: guid. Returns 1 when it was queued.
const REMOVE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
"#;

/// The scripts, hashed once per store (EVALSHA, with EVAL after a Redis restart).
pub(super) struct QueueScripts {
    insert: Script,
    read: Script,
    remove: Script,
}

impl QueueScripts {
    pub(super) fn new() -> Self {
        Self {
            insert: Script::new(INSERT),
            read: Script::new(READ),
            remove: Script::new(REMOVE),
        }
    }
}

impl RedisStore {
    /// `prefix` + `q:{aci:device}`: every key and the channel of one device share this.
    pub fn device_base(&self, aci: Aci, id: DeviceId) -> String {
        self.key(&format!("q:{{{aci}:{id}}}"))
    }

    fn queue_keys(&self, aci: Aci, id: DeviceId) -> [String; 3] {
        let base = self.device_base(aci, id);
        [
            format!("{base}:i"),
            format!("{base}:m"),
            format!("{base}:s"),
        ]
    }
}

#[async_trait]
impl MessageStore for RedisStore {
    async fn insert(
        &self,
        aci: Aci,
        id: DeviceId,
        guid: Uuid,
        envelope: Bytes,
    ) -> StorageResult<bool> {
        let [index, messages, counter] = self.queue_keys(aci, id);
        let mut conn = self.conn.clone();
        let seq: i64 = self
            .scripts
            .insert
            .key(index)
            .key(messages)
            .key(counter)
            .arg(guid.as_bytes().as_slice())
            .arg(envelope.as_ref())
            .arg(self.queue_ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(seq > 0)
    }

    async fn read(
        &self,
        aci: Aci,
        id: DeviceId,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<QueuedMessage>> {
        let [index, messages, _] = self.queue_keys(aci, id);
        let mut conn = self.conn.clone();
        let flat: Vec<redis::Value> = self
            .scripts
            .read
            .key(index)
            .key(messages)
            .arg(after)
            .arg(limit)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let malformed = || StorageError::Backend(anyhow::anyhow!("malformed queue entry"));
        flat.chunks_exact(3)
            .map(|entry| {
                let seq: u64 = redis::from_redis_value_ref::<String>(&entry[0])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(malformed)?;
                let guid: Vec<u8> =
                    redis::from_redis_value_ref(&entry[1]).map_err(|_| malformed())?;
                let envelope: Vec<u8> =
                    redis::from_redis_value_ref(&entry[2]).map_err(|_| malformed())?;
                Ok(QueuedMessage {
                    seq,
                    guid: Uuid::from_slice(&guid).map_err(|_| malformed())?,
                    envelope: Bytes::from(envelope),
                })
            })
            .collect()
    }

    async fn remove(&self, aci: Aci, id: DeviceId, guid: Uuid) -> StorageResult<bool> {
        let [index, messages, _] = self.queue_keys(aci, id);
        let mut conn = self.conn.clone();
        let removed: i64 = self
            .scripts
            .remove
            .key(index)
            .key(messages)
            .arg(guid.as_bytes().as_slice())
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(removed > 0)
    }

    async fn delete_queue(&self, aci: Aci, id: DeviceId) -> StorageResult<()> {
        let keys = self.queue_keys(aci, id);
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(&keys[..])
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }
}
