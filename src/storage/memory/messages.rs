//! Message queues in memory, with the same order, deduplication, expiry and caps as Redis.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::domain::ids::{Aci, DeviceId};
use crate::storage::{
    Inserted, MessageStore, QueuePolicy, QueuedMessage, SharedMessage, StorageError, StorageResult,
    stored,
};

struct Queue {
    next_seq: u64,
    entries: BTreeMap<u64, (Uuid, Bytes)>,
    by_guid: HashMap<Uuid, u64>,
    /// The entries' charged lengths ([`stored::charged_len`]), summed.
    bytes: u64,
    expires_at: Instant,
}

/// A shared payload and how many queued messages still reference it.
struct Shared {
    message: SharedMessage,
    references: u32,
    expires_at: Instant,
}

pub struct MemoryMessageStore {
    ttl: Duration,
    policy: QueuePolicy,
    queues: Mutex<HashMap<(Aci, DeviceId), Queue>>,
    // std Mutex, never held with the queues lock: each method takes one, then the other.
    shared: Mutex<HashMap<Uuid, Shared>>,
}

impl MemoryMessageStore {
    pub fn new(policy: QueuePolicy) -> Self {
        Self {
            ttl: policy.ttl,
            policy,
            queues: Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
        }
    }

    fn shared(&self) -> StorageResult<std::sync::MutexGuard<'_, HashMap<Uuid, Shared>>> {
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("shared payload lock poisoned")))?;
        let now = Instant::now();
        shared.retain(|_, s| s.expires_at > now);
        Ok(shared)
    }

    /// How many shared payloads are held (tests: the last reference frees one).
    pub fn shared_payloads(&self) -> usize {
        self.shared().map(|s| s.len()).unwrap_or(0)
    }

    fn lock(&self) -> StorageResult<std::sync::MutexGuard<'_, HashMap<(Aci, DeviceId), Queue>>> {
        let mut queues = self
            .queues
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("message store lock poisoned")))?;
        // Expire lazily, as Redis would have.
        let now = Instant::now();
        queues.retain(|_, q| q.expires_at > now);
        Ok(queues)
    }
}

#[async_trait]
impl MessageStore for MemoryMessageStore {
    async fn insert(
        &self,
        aci: Aci,
        id: DeviceId,
        guid: Uuid,
        envelope: Bytes,
    ) -> StorageResult<Inserted> {
        let mut queues = self.lock()?;
        let queue = queues.entry((aci, id)).or_insert_with(|| Queue {
            next_seq: 1,
            entries: BTreeMap::new(),
            by_guid: HashMap::new(),
            bytes: 0,
            expires_at: Instant::now(),
        });
        if queue.by_guid.contains_key(&guid) {
            return Ok(Inserted::Duplicate);
        }
        let charged = stored::charged_len(&envelope);
        if !self
            .policy
            .admits(queue.entries.len() as u64, queue.bytes, charged)
        {
            return Ok(Inserted::Full);
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.entries.insert(seq, (guid, envelope));
        queue.by_guid.insert(guid, seq);
        queue.bytes += charged;
        queue.expires_at = Instant::now() + self.ttl;
        Ok(Inserted::Queued)
    }

    async fn read(
        &self,
        aci: Aci,
        id: DeviceId,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<QueuedMessage>> {
        let raw: Vec<QueuedMessage> = {
            let queues = self.lock()?;
            queues
                .get(&(aci, id))
                .map(|q| {
                    q.entries
                        .range(after + 1..)
                        .take(limit)
                        .map(|(seq, (guid, envelope))| QueuedMessage {
                            seq: *seq,
                            guid: *guid,
                            envelope: envelope.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let shared = self.shared()?;
        Ok(raw
            .into_iter()
            .filter_map(|mut message| match stored::shared_id(&message.envelope) {
                None => Some(message),
                Some(shared_id) => {
                    let shared = &shared.get(&shared_id)?.message;
                    message.envelope = shared.envelope_for(aci, message.guid)?;
                    Some(message)
                }
            })
            .collect())
    }

    async fn remove(&self, aci: Aci, id: DeviceId, guid: Uuid) -> StorageResult<bool> {
        let mut queues = self.lock()?;
        let Some(queue) = queues.get_mut(&(aci, id)) else {
            return Ok(false);
        };
        let Some(seq) = queue.by_guid.remove(&guid) else {
            return Ok(false);
        };
        let value = queue.entries.remove(&seq).map(|(_, value)| value);
        if let Some(value) = &value {
            queue.bytes = queue.bytes.saturating_sub(stored::charged_len(value));
        }
        drop(queues);
        if let Some(shared_id) = value.as_ref().and_then(|v| stored::shared_id(v)) {
            let mut shared = self.shared()?;
            if let Some(entry) = shared.get_mut(&shared_id) {
                entry.references = entry.references.saturating_sub(1);
                if entry.references == 0 {
                    shared.remove(&shared_id);
                }
            }
        }
        Ok(true)
    }

    async fn delete_queue(&self, aci: Aci, id: DeviceId) -> StorageResult<()> {
        self.lock()?.remove(&(aci, id));
        Ok(())
    }

    async fn delete_shared(&self, id: Uuid) -> StorageResult<()> {
        self.shared()?.remove(&id);
        Ok(())
    }

    async fn insert_shared(
        &self,
        id: Uuid,
        message: &SharedMessage,
        references: u32,
    ) -> StorageResult<()> {
        self.shared()?.insert(
            id,
            Shared {
                message: message.clone(),
                references,
                expires_at: Instant::now() + self.ttl,
            },
        );
        Ok(())
    }
}
