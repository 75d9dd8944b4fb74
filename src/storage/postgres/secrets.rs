//! Server secrets in Postgres: the first pod to ask makes one, every pod reads that one.

use async_trait::async_trait;

use super::{PgStore, corrupt, pg_error};
use crate::storage::{SecretStore, StorageResult};

#[async_trait]
impl SecretStore for PgStore {
    async fn secret(&self, name: &str) -> StorageResult<[u8; 32]> {
        let client = self.client().await?;
        let mut candidate = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut candidate);
        // Pods starting together race here: the first insert wins, every pod reads it back.
        client
            .execute(
                "INSERT INTO server_secrets (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &candidate.as_slice()],
            )
            .await
            .map_err(pg_error)?;
        let row = client
            .query_one("SELECT value FROM server_secrets WHERE name = $1", &[&name])
            .await
            .map_err(pg_error)?;
        let value: Vec<u8> = row.get(0);
        value
            .try_into()
            .map_err(|v: Vec<u8>| corrupt("server secret", format!("{} bytes", v.len())))
    }
}
