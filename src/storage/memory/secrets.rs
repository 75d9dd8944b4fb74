//! Server secrets in memory: made on first use, gone with the process (the embedded mode
//! has one process, so nobody else needs them).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::storage::{SecretStore, StorageError, StorageResult};

#[derive(Default)]
pub struct MemorySecretStore {
    secrets: Mutex<HashMap<String, [u8; 32]>>,
}

impl MemorySecretStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SecretStore for MemorySecretStore {
    async fn secret(&self, name: &str) -> StorageResult<[u8; 32]> {
        let mut secrets = self
            .secrets
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("secret store lock poisoned")))?;
        Ok(*secrets.entry(name.to_owned()).or_insert_with(|| {
            let mut secret = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
            secret
        }))
    }
}
