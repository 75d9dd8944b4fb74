//! Message queues in memory, with the same order, deduplication and expiry as Redis.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::domain::ids::{Aci, DeviceId};
use crate::storage::{MessageStore, QueuedMessage, StorageError, StorageResult};

struct Queue {
    next_seq: u64,
    entries: BTreeMap<u64, (Uuid, Bytes)>,
    by_guid: HashMap<Uuid, u64>,
    expires_at: Instant,
}

pub struct MemoryMessageStore {
    ttl: Duration,
    queues: Mutex<HashMap<(Aci, DeviceId), Queue>>,
}

impl MemoryMessageStore {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            queues: Mutex::new(HashMap::new()),
        }
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
    ) -> StorageResult<bool> {
        let mut queues = self.lock()?;
        let queue = queues.entry((aci, id)).or_insert_with(|| Queue {
            next_seq: 1,
            entries: BTreeMap::new(),
            by_guid: HashMap::new(),
            expires_at: Instant::now(),
        });
        if queue.by_guid.contains_key(&guid) {
            return Ok(false);
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.entries.insert(seq, (guid, envelope));
        queue.by_guid.insert(guid, seq);
        queue.expires_at = Instant::now() + self.ttl;
        Ok(true)
    }

    async fn read(
        &self,
        aci: Aci,
        id: DeviceId,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<QueuedMessage>> {
        let queues = self.lock()?;
        Ok(queues
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
            .unwrap_or_default())
    }

    async fn remove(&self, aci: Aci, id: DeviceId, guid: Uuid) -> StorageResult<bool> {
        let mut queues = self.lock()?;
        let Some(queue) = queues.get_mut(&(aci, id)) else {
            return Ok(false);
        };
        match queue.by_guid.remove(&guid) {
            Some(seq) => {
                queue.entries.remove(&seq);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete_queue(&self, aci: Aci, id: DeviceId) -> StorageResult<()> {
        self.lock()?.remove(&(aci, id));
        Ok(())
    }
}
