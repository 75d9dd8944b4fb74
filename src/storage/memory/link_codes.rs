//! Device-linking codes in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::ids::Aci;
use crate::storage::{LinkCodeStore, StorageError, StorageResult};

#[derive(Default)]
pub struct MemoryLinkCodeStore {
    codes: Mutex<HashMap<String, (Aci, Instant)>>,
}

impl MemoryLinkCodeStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StorageResult<std::sync::MutexGuard<'_, HashMap<String, (Aci, Instant)>>> {
        let mut codes = self
            .codes
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("link code lock poisoned")))?;
        let now = Instant::now();
        codes.retain(|_, (_, expires)| *expires > now);
        Ok(codes)
    }
}

#[async_trait]
impl LinkCodeStore for MemoryLinkCodeStore {
    async fn put_code(&self, code: &str, aci: Aci, ttl: Duration) -> StorageResult<()> {
        self.lock()?
            .insert(code.to_owned(), (aci, Instant::now() + ttl));
        Ok(())
    }

    async fn peek_code(&self, code: &str) -> StorageResult<Option<Aci>> {
        Ok(self.lock()?.get(code).map(|(aci, _)| *aci))
    }

    async fn take_code(&self, code: &str) -> StorageResult<Option<Aci>> {
        Ok(self.lock()?.remove(code).map(|(aci, _)| aci))
    }
}
