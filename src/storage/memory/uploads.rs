//! Resumable uploads in memory: the Redis rules over maps, for the embedded mode. Leases
//! expire in real time, as Redis's PX does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::uploads::Upload;
use crate::storage::StorageResult;
use crate::storage::uploads::UploadStore;

#[derive(Default)]
struct State {
    uploads: HashMap<String, Upload>,
    /// (created, key) of every upload, for `created_before`.
    by_age: BTreeSet<(i64, String)>,
    leases: HashMap<String, (String, Instant)>,
}

impl State {
    fn lease_holder(&self, key: &str) -> Option<&str> {
        self.leases
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(holder, _)| holder.as_str())
    }
}

#[derive(Default)]
pub struct MemoryUploadStore {
    state: Mutex<State>,
}

impl MemoryUploadStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl UploadStore for MemoryUploadStore {
    async fn create(&self, upload: &Upload) -> StorageResult<bool> {
        let mut state = self.state();
        if state.uploads.contains_key(&upload.key) {
            return Ok(false);
        }
        state.by_age.insert((upload.created_ms, upload.key.clone()));
        state.uploads.insert(upload.key.clone(), upload.clone());
        Ok(true)
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Upload>> {
        Ok(self.state().uploads.get(key).cloned())
    }

    async fn lease(&self, key: &str, holder: &str, ttl_ms: i64) -> StorageResult<bool> {
        let mut state = self.state();
        if state.lease_holder(key).is_some_and(|h| h != holder) {
            return Ok(false);
        }
        let until = Instant::now() + Duration::from_millis(ttl_ms.max(1) as u64);
        state
            .leases
            .insert(key.to_owned(), (holder.to_owned(), until));
        Ok(true)
    }

    async fn release(&self, key: &str, holder: &str) -> StorageResult<()> {
        let mut state = self.state();
        if state.lease_holder(key) == Some(holder) {
            state.leases.remove(key);
        }
        Ok(())
    }

    async fn save(&self, upload: &Upload, holder: &str) -> StorageResult<bool> {
        let mut state = self.state();
        if state.lease_holder(&upload.key) != Some(holder)
            || !state.uploads.contains_key(&upload.key)
        {
            return Ok(false);
        }
        state.uploads.insert(upload.key.clone(), upload.clone());
        Ok(true)
    }

    async fn remove(&self, key: &str) -> StorageResult<()> {
        let mut state = self.state();
        if let Some(upload) = state.uploads.remove(key) {
            state.by_age.remove(&(upload.created_ms, upload.key));
        }
        state.leases.remove(key);
        Ok(())
    }

    async fn created_before(&self, before_ms: i64, limit: usize) -> StorageResult<Vec<String>> {
        Ok(self
            .state()
            .by_age
            .iter()
            .take_while(|(created, _)| *created < before_ms)
            .take(limit)
            .map(|(_, key)| key.clone())
            .collect())
    }
}
