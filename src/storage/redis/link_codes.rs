//! Device-linking codes in Redis: `{prefix}link:{code}` holding the ACI, with a TTL; using a
//! code up is one GETDEL, so only one caller ever gets it.

use std::time::Duration;

use async_trait::async_trait;

use super::{RedisStore, redis_error};
use crate::domain::ids::Aci;
use crate::storage::{LinkCodeStore, StorageError, StorageResult};

fn parse(value: Option<String>) -> StorageResult<Option<Aci>> {
    value
        .map(|v| {
            v.parse().map_err(|_| {
                StorageError::Backend(anyhow::anyhow!("stored link code is not an ACI"))
            })
        })
        .transpose()
}

#[async_trait]
impl LinkCodeStore for RedisStore {
    async fn put_code(&self, code: &str, aci: Aci, ttl: Duration) -> StorageResult<()> {
        let mut conn = self.connection();
        let _: () = redis::cmd("SET")
            .arg(self.key(&format!("link:{code}")))
            .arg(aci.to_string())
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn peek_code(&self, code: &str) -> StorageResult<Option<Aci>> {
        let mut conn = self.connection();
        let value: Option<String> = redis::cmd("GET")
            .arg(self.key(&format!("link:{code}")))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        parse(value)
    }

    async fn take_code(&self, code: &str) -> StorageResult<Option<Aci>> {
        let mut conn = self.connection();
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(self.key(&format!("link:{code}")))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        parse(value)
    }
}
