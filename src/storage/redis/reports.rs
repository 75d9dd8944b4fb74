//! Spam-report hashes and reporter sets in Redis (PROTOCOL.md 17): `{prefix}report:{hex}`
//! kept a week with `SET … PX`, used up by `DEL` (only the caller that deleted it counts);
//! `{prefix}reported_account:{aci}` a HyperLogLog of reporters, its expiry renewed on add.

use std::time::Duration;

use async_trait::async_trait;

use super::{RedisStore, redis_error};
use crate::domain::ids::Aci;
use crate::storage::StorageResult;
use crate::storage::reports::ReportHashStore;

impl RedisStore {
    fn report_key(&self, hash: &[u8; 32]) -> String {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        self.key(&format!("report:{hex}"))
    }

    fn reporters_key(&self, source: Aci) -> String {
        self.key(&format!("reported_account:{source}"))
    }
}

#[async_trait]
impl ReportHashStore for RedisStore {
    async fn remember(&self, hash: &[u8; 32], ttl: Duration) -> StorageResult<()> {
        let mut conn = self.connection();
        let _: () = redis::cmd("SET")
            .arg(self.report_key(hash))
            .arg(1)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn take(&self, hash: &[u8; 32]) -> StorageResult<bool> {
        let mut conn = self.connection();
        let deleted: u64 = redis::cmd("DEL")
            .arg(self.report_key(hash))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(deleted == 1)
    }

    async fn add_reporter(&self, source: Aci, reporter: Aci, ttl: Duration) -> StorageResult<()> {
        let key = self.reporters_key(source);
        let mut conn = self.connection();
        let _: () = redis::pipe()
            .atomic()
            .cmd("PFADD")
            .arg(&key)
            .arg(reporter.as_bytes().as_slice())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn reporters(&self, source: Aci) -> StorageResult<u64> {
        let mut conn = self.connection();
        redis::cmd("PFCOUNT")
            .arg(self.reporters_key(source))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)
    }
}
