//! Per-device message queues in Redis. A queue is two keys sharing the device's hash tag
//! (`{aci:device}`), so every script touches one slot and the layout works on Redis Cluster
//! unchanged: `…:i` a sorted set of GUIDs scored by position, `…:m` a hash GUID -> envelope
//! that also holds the position counter (field `__seq`; GUID fields are 16 binary bytes, so
//! they cannot collide with it). Both expire together, a configured time after the last
//! insert. The hash also keeps the queue's charged byte total (field `__bytes`), which the
//! insert script checks with the index's size against the queue's caps and every removal
//! lowers, so a cap costs no extra round trip. A multi-recipient message's shared part is one hash `…mrm:{id}` (payload `d`,
//! envelope template `t`, remaining references `n`, and per recipient account its 16-byte
//! ACI -> content prefix); each device's queue holds only a 21-byte reference to it, so a
//! queue of such copies stays in Redis's compact listpack encoding. The last removal
//! deletes the shared hash.

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;
use uuid::Uuid;

use super::{RedisStore, redis_error};
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::messages::QUEUED_MESSAGE_OVERHEAD;
use crate::storage::{
    Inserted, MessageStore, QueuedMessage, SharedMessage, StorageError, StorageResult, stored,
};

/// What a stored value counts against the byte cap, as `stored::charged_len` computes it.
const CHARGED_LEN: &str = r#"
local function charged_len(value)
  if string.byte(value, 1) == 0 then
    if #value == 21 then
      local a, b, c, d = string.byte(value, 18, 21)
      return ((a * 256 + b) * 256 + c) * 256 + d
    elseif #value == 17 then
      return 0
    end
  end
  return #value
end
"#;

/// Takes a removed value's charged length off the queue's byte total (never below 0).
const UNCHARGE: &str = r#"
local function uncharge(key, value)
  local size = charged_len(value)
  if size > 0 and redis.call('HINCRBY', key, '__bytes', -size) < 0 then
    redis.call('HSET', key, '__bytes', 0)
  end
end
"#;

/// KEYS: index, messages. ARGV: guid, envelope, ttl ms, charged length, max messages, max
/// bytes, per-message overhead. Returns the position, 0 when the GUID is already queued, or
/// -1 when the queue is at a cap (nothing changed). Positions grow by one and never fall behind Redis's clock in
/// microseconds: if Redis loses the queue's tail with its counter (a machine crash under
/// `appendfsync everysec`, a restart without persistence), new positions still come after
/// every position a live socket has already read, so its cursor does not skip them.
const INSERT: &str = r#"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local count = redis.call('ZCARD', KEYS[1])
local bytes = tonumber(redis.call('HGET', KEYS[2], '__bytes') or '0')
local charged = tonumber(ARGV[4])
if count >= tonumber(ARGV[5])
  or bytes + charged + (count + 1) * tonumber(ARGV[7]) > tonumber(ARGV[6]) then
  return -1
end
if charged > 0 then redis.call('HINCRBY', KEYS[2], '__bytes', charged) end
local seq = redis.call('HINCRBY', KEYS[2], '__seq', 1)
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
if seq < floor then
  seq = floor
  redis.call('HSET', KEYS[2], '__seq', string.format('%d', seq))
end
redis.call('ZADD', KEYS[1], string.format('%d', seq), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
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

/// KEYS: index, messages. ARGV: guid. Returns the removed value, or nil.
const REMOVE: &str = r#"
local value = redis.call('HGET', KEYS[2], ARGV[1])
if not value then return false end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
uncharge(KEYS[2], value)
return value
"#;

/// KEYS: index, messages. ARGV: guids. Per GUID: 0 when it was not queued, 1 when removed,
/// or the 16-byte id of the shared payload the removed message referenced.
const REMOVE_MANY: &str = r#"
local out = {}
for i = 1, #ARGV do
  local value = redis.call('HGET', KEYS[2], ARGV[i])
  if value then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('ZREM', KEYS[1], ARGV[i])
    uncharge(KEYS[2], value)
    if (#value == 17 or #value == 21) and string.byte(value, 1) == 0 then
      out[i] = string.sub(value, 2, 17)
    else
      out[i] = 1
    end
  else
    out[i] = 0
  end
end
return out
"#;

/// The scripts, hashed once per store (EVALSHA, with EVAL after a Redis restart).
pub(super) struct QueueScripts {
    insert: Script,
    read: Script,
    remove: Script,
    remove_many: Script,
}

impl QueueScripts {
    pub(super) fn new() -> Self {
        let removal = |body: &str| Script::new(&format!("{CHARGED_LEN}{UNCHARGE}{body}"));
        Self {
            insert: Script::new(INSERT),
            read: Script::new(READ),
            remove: removal(REMOVE),
            remove_many: removal(REMOVE_MANY),
        }
    }
}

/// A shared message's template, payload and one recipient's prefix, as HMGET answers.
type SharedParts = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

impl RedisStore {
    /// Replaces references to shared messages with the completed envelopes (one more round
    /// trip, only when a read holds references); an entry whose shared part expired is
    /// dropped.
    async fn complete_shared(
        &self,
        aci: Aci,
        entries: Vec<QueuedMessage>,
    ) -> StorageResult<Vec<QueuedMessage>> {
        let ids: std::collections::BTreeSet<Uuid> = entries
            .iter()
            .filter_map(|m| stored::shared_id(&m.envelope))
            .collect();
        if ids.is_empty() {
            return Ok(entries);
        }
        let ids: Vec<Uuid> = ids.into_iter().collect();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.shared_key(*id))
                .arg("t")
                .arg("d")
                .arg(aci.as_bytes().as_slice());
        }
        let mut conn = self.conn.clone();
        let parts: Vec<SharedParts> = pipe.query_async(&mut conn).await.map_err(redis_error)?;
        let parts: std::collections::HashMap<Uuid, (Bytes, Vec<u8>, Vec<u8>)> = ids
            .into_iter()
            .zip(parts)
            .filter_map(|(id, (template, payload, prefix))| {
                Some((id, (Bytes::from(template?), payload?, prefix?)))
            })
            .collect();
        Ok(entries
            .into_iter()
            .filter_map(|mut message| match stored::shared_id(&message.envelope) {
                None => Some(message),
                Some(id) => {
                    let (template, payload, prefix) = parts.get(&id)?;
                    message.envelope =
                        stored::complete(template, aci, message.guid, prefix, payload)?;
                    Some(message)
                }
            })
            .collect())
    }

    /// `prefix` + `q:{aci:device}`: every key and the channel of one device share this.
    pub fn device_base(&self, aci: Aci, id: DeviceId) -> String {
        self.key(&format!("q:{{{aci}:{id}}}"))
    }

    fn queue_keys(&self, aci: Aci, id: DeviceId) -> [String; 2] {
        let base = self.device_base(aci, id);
        [format!("{base}:i"), format!("{base}:m")]
    }

    /// Drops one reference to each shared payload (one per removed message that named it),
    /// deleting those left with none. Another slot than the queue's: a separate step after
    /// the removal, so a failure here only leaves a payload to its TTL.
    async fn release_shared(&self, shared: &[Uuid]) -> StorageResult<()> {
        if shared.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in shared {
            pipe.cmd("HINCRBY")
                .arg(self.shared_key(*id))
                .arg("n")
                .arg(-1);
        }
        let left: Vec<i64> = pipe.query_async(&mut conn).await.map_err(redis_error)?;
        let mut done = redis::pipe();
        let mut any = false;
        for (id, left) in shared.iter().zip(left) {
            if left <= 0 {
                done.cmd("DEL").arg(self.shared_key(*id)).ignore();
                any = true;
            }
        }
        if any {
            let _: () = done.query_async(&mut conn).await.map_err(redis_error)?;
        }
        Ok(())
    }

    fn shared_key(&self, id: Uuid) -> String {
        self.key(&format!("mrm:{}", id.simple()))
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
    ) -> StorageResult<Inserted> {
        let [index, messages] = self.queue_keys(aci, id);
        let mut conn = self.conn.clone();
        let seq: i64 = self
            .scripts
            .insert
            .key(index)
            .key(messages)
            .arg(guid.as_bytes().as_slice())
            .arg(envelope.as_ref())
            .arg(self.queue.ttl.as_millis() as u64)
            .arg(stored::charged_len(&envelope))
            .arg(self.queue.max_messages)
            .arg(self.queue.max_bytes)
            .arg(QUEUED_MESSAGE_OVERHEAD)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(match seq {
            0 => Inserted::Duplicate,
            s if s < 0 => Inserted::Full,
            _ => Inserted::Queued,
        })
    }

    async fn read(
        &self,
        aci: Aci,
        id: DeviceId,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<QueuedMessage>> {
        let [index, messages] = self.queue_keys(aci, id);
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
        let entries = flat
            .chunks_exact(3)
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
            .collect::<StorageResult<Vec<_>>>()?;
        self.complete_shared(aci, entries).await
    }

    async fn remove(&self, aci: Aci, id: DeviceId, guid: Uuid) -> StorageResult<bool> {
        let [index, messages] = self.queue_keys(aci, id);
        let mut conn = self.conn.clone();
        let removed: Option<Vec<u8>> = self
            .scripts
            .remove
            .key(index)
            .key(messages)
            .arg(guid.as_bytes().as_slice())
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let Some(value) = removed else {
            return Ok(false);
        };
        if let Some(shared) = stored::shared_id(&value) {
            self.release_shared(&[shared]).await?;
        }
        Ok(true)
    }

    async fn remove_many(
        &self,
        aci: Aci,
        id: DeviceId,
        guids: &[Uuid],
    ) -> StorageResult<Vec<bool>> {
        if guids.is_empty() {
            return Ok(Vec::new());
        }
        let [index, messages] = self.queue_keys(aci, id);
        let mut invocation = self.scripts.remove_many.key(index);
        invocation.key(messages);
        for guid in guids {
            invocation.arg(guid.as_bytes().as_slice());
        }
        let mut conn = self.conn.clone();
        let results: Vec<redis::Value> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let mut removed = Vec::with_capacity(results.len());
        let mut shared = Vec::new();
        for result in &results {
            match result {
                redis::Value::Int(n) => removed.push(*n != 0),
                redis::Value::BulkString(id) => {
                    removed.push(true);
                    shared.push(Uuid::from_slice(id).map_err(|_| {
                        StorageError::Backend(anyhow::anyhow!("malformed shared reference"))
                    })?);
                }
                _ => {
                    return Err(StorageError::Backend(anyhow::anyhow!(
                        "unexpected removal result"
                    )));
                }
            }
        }
        if removed.len() != guids.len() {
            return Err(StorageError::Backend(anyhow::anyhow!(
                "removal answered for {} of {} messages",
                removed.len(),
                guids.len()
            )));
        }
        self.release_shared(&shared).await?;
        Ok(removed)
    }

    async fn insert_shared(
        &self,
        id: Uuid,
        shared: &SharedMessage,
        references: u32,
    ) -> StorageResult<()> {
        let key = self.shared_key(id);
        let mut conn = self.conn.clone();
        let mut set = redis::cmd("HSET");
        set.arg(&key)
            .arg("d")
            .arg(shared.payload.as_ref())
            .arg("t")
            .arg(shared.template.as_ref())
            .arg("n")
            .arg(references);
        for (aci, prefix) in &shared.prefixes {
            set.arg(aci.as_bytes().as_slice()).arg(prefix.as_ref());
        }
        let _: () = redis::pipe()
            .atomic()
            .add_command(set)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(self.queue.ttl.as_millis() as u64)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn delete_shared(&self, id: Uuid) -> StorageResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.shared_key(id))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
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
