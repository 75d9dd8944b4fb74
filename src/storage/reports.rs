//! Spam reports (PROTOCOL.md 17): which queued messages may be reported (a week-long hash
//! per identified message, with the per-sender set of reporters: Redis, or memory), and the
//! reports that counted, kept for operators (Postgres, or memory).

use std::time::Duration;

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::ids::Aci;
use crate::domain::reports::SpamReport;

#[async_trait]
pub trait ReportHashStore: Send + Sync {
    /// Keeps `hash` for `ttl`: the message it stands for may be reported until then.
    async fn remember(&self, hash: &[u8; 32], ttl: Duration) -> StorageResult<()>;

    /// Uses `hash` up: true only for the one call that found it (a message counts once).
    async fn take(&self, hash: &[u8; 32]) -> StorageResult<bool>;

    /// Adds `reporter` to the set of accounts that reported `source` (a HyperLogLog in
    /// Redis), which then lives `ttl` from now.
    async fn add_reporter(&self, source: Aci, reporter: Aci, ttl: Duration) -> StorageResult<()>;

    /// About how many distinct accounts reported `source` within the set's life.
    async fn reporters(&self, source: Aci) -> StorageResult<u64>;
}

#[async_trait]
pub trait SpamReportLog: Send + Sync {
    async fn record(&self, report: &SpamReport) -> StorageResult<()>;

    /// Reports made at or after `since_ms`, oldest first, at most `limit`.
    async fn since(&self, since_ms: i64, limit: usize) -> StorageResult<Vec<SpamReport>>;
}
