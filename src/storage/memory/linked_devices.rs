//! Linked devices in memory: a map of token identifier to device with its expiry, and a
//! broadcast of each recorded token that wakes this process's waiters (the embedded mode is
//! one process).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::storage::linked_devices::{LinkedDevice, LinkedDeviceStore};
use crate::storage::{StorageError, StorageResult};

pub struct MemoryLinkedDeviceStore {
    // std Mutex: held for a map operation, never across an await.
    records: Mutex<HashMap<String, (LinkedDevice, Instant)>>,
    recorded: broadcast::Sender<String>,
}

impl Default for MemoryLinkedDeviceStore {
    fn default() -> Self {
        Self {
            records: Mutex::new(HashMap::new()),
            recorded: broadcast::channel(256).0,
        }
    }
}

impl MemoryLinkedDeviceStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, token: &str) -> StorageResult<Option<LinkedDevice>> {
        let mut records = self
            .records
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("linked device lock poisoned")))?;
        let now = Instant::now();
        records.retain(|_, (_, expires)| *expires > now);
        Ok(records.get(token).map(|(device, _)| *device))
    }
}

#[async_trait]
impl LinkedDeviceStore for MemoryLinkedDeviceStore {
    async fn record_linked(
        &self,
        token: &str,
        device: LinkedDevice,
        ttl: Duration,
    ) -> StorageResult<()> {
        self.records
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("linked device lock poisoned")))?
            .insert(token.to_owned(), (device, Instant::now() + ttl));
        // No receiver means no waiter: nothing to wake.
        let _ = self.recorded.send(token.to_owned());
        Ok(())
    }

    async fn wait_for_linked(
        &self,
        token: &str,
        timeout: Duration,
    ) -> StorageResult<Option<LinkedDevice>> {
        let deadline = Instant::now() + timeout;
        // Subscribed before the first look: a record made in between is heard.
        let mut recorded = self.recorded.subscribe();
        loop {
            if let Some(device) = self.get(token)? {
                return Ok(Some(device));
            }
            loop {
                match tokio::time::timeout_at(deadline, recorded.recv()).await {
                    Err(_) => return Ok(None),
                    Ok(Ok(t)) if t != token => continue,
                    // This token, or missed wake-ups (lagged): look again.
                    Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(None),
                }
            }
        }
    }
}
