//! Versioned profiles in memory (the embedded mode): the same rules as Postgres.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::domain::ids::Aci;
use crate::domain::profiles::{ProfileVersion, VersionedProfile};
use crate::storage::profiles::ProfileStore;
use crate::storage::{StorageError, StorageResult};

#[derive(Default)]
struct Profiles {
    versions: BTreeMap<ProfileVersion, VersionedProfile>,
    current: Option<ProfileVersion>,
}

#[derive(Default)]
pub struct MemoryProfileStore {
    // std: a few map operations under the lock, never held across an await.
    accounts: Mutex<HashMap<Aci, Profiles>>,
}

impl MemoryProfileStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StorageResult<MutexGuard<'_, HashMap<Aci, Profiles>>> {
        self.accounts
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("profile store lock poisoned")))
    }
}

#[async_trait]
impl ProfileStore for MemoryProfileStore {
    async fn set(&self, aci: Aci, profile: &VersionedProfile) -> StorageResult<Option<String>> {
        let mut accounts = self.lock()?;
        let profiles = accounts.entry(aci).or_default();
        profiles.current = Some(profile.version.clone());
        Ok(profiles
            .versions
            .insert(profile.version.clone(), profile.clone())
            .and_then(|old| old.avatar))
    }

    async fn get(
        &self,
        aci: Aci,
        version: &ProfileVersion,
    ) -> StorageResult<Option<VersionedProfile>> {
        Ok(self
            .lock()?
            .get(&aci)
            .and_then(|p| p.versions.get(version).cloned()))
    }

    async fn current_version(&self, aci: Aci) -> StorageResult<Option<ProfileVersion>> {
        Ok(self.lock()?.get(&aci).and_then(|p| p.current.clone()))
    }

    async fn delete_all(&self, aci: Aci) -> StorageResult<Vec<String>> {
        Ok(self
            .lock()?
            .remove(&aci)
            .map(|p| p.versions.into_values().filter_map(|v| v.avatar).collect())
            .unwrap_or_default())
    }
}
