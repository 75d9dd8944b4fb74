//! Versioned profiles (PROTOCOL.md 13): every version an account stored, keyed by (ACI,
//! version), and the account's current version. Postgres in production (gone with the
//! account by its foreign key), memory in the embedded mode. The avatar bytes live in the
//! object store; this keeps their names.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::ids::Aci;
use crate::domain::profiles::{ProfileVersion, VersionedProfile};

#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// Stores `profile` under (aci, its version), replacing that version whole, and makes it
    /// the account's current version, in one step. Returns the avatar the replaced version
    /// had (None when there was none or no such version), for the caller to delete.
    async fn set(&self, aci: Aci, profile: &VersionedProfile) -> StorageResult<Option<String>>;

    async fn get(
        &self,
        aci: Aci,
        version: &ProfileVersion,
    ) -> StorageResult<Option<VersionedProfile>>;

    /// The version last stored by [`ProfileStore::set`], if any remains.
    async fn current_version(&self, aci: Aci) -> StorageResult<Option<ProfileVersion>>;

    /// Removes every version of the account; returns their avatars' names (to delete).
    async fn delete_all(&self, aci: Aci) -> StorageResult<Vec<String>>;
}
