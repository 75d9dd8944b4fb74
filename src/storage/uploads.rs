//! Resumable uploads between requests (PROTOCOL.md 12.3): each upload's state and a lease
//! that lets one request at a time, on any pod, append to it. The bytes themselves live in
//! the object store; this keeps where they are.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::uploads::Upload;

/// How long a request's hold on an upload lasts unless renewed: long enough that a
/// request renewing every few seconds keeps it, short enough that a pod that died
/// mid-request frees it soon.
pub const LEASE_MS: i64 = 30_000;

#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Stores a new upload unless one with its key exists; whether it was stored.
    async fn create(&self, upload: &Upload) -> StorageResult<bool>;

    async fn get(&self, key: &str) -> StorageResult<Option<Upload>>;

    /// Takes the upload's lease for `holder` (a request's random id) for `ttl_ms`, or
    /// renews it when `holder` has it already; false while another holder has it.
    async fn lease(&self, key: &str, holder: &str, ttl_ms: i64) -> StorageResult<bool>;

    /// Gives the lease up if `holder` has it.
    async fn release(&self, key: &str, holder: &str) -> StorageResult<()>;

    /// Replaces the upload's state, only while `holder` has its lease (else false and
    /// nothing changes): a request whose lease ran out never overwrites a newer one.
    async fn save(&self, upload: &Upload, holder: &str) -> StorageResult<bool>;

    /// Forgets the upload (and its lease).
    async fn remove(&self, key: &str) -> StorageResult<()>;

    /// Keys of uploads created before `before_ms`, oldest first, at most `limit` (the
    /// sweeper aborts the unfinished ones and forgets them all).
    async fn created_before(&self, before_ms: i64, limit: usize) -> StorageResult<Vec<String>>;
}
