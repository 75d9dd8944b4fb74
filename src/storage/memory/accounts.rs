//! Accounts, devices and signed keys in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::domain::accounts::{AccessSettings, Account, Device, DeviceAttributes, NewAccount};
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::keys::{KemSignedPreKey, SignedEcPreKey};
use crate::storage::{AccountStore, KeyStore, StorageError, StorageResult};

struct StoredDevice {
    device: Device,
    signed_pre_key: Option<SignedEcPreKey>,
    pq_last_resort_pre_key: Option<KemSignedPreKey>,
}

struct StoredAccount {
    account: Account,
    devices: BTreeMap<DeviceId, StoredDevice>,
}

/// Accounts (and, as in Postgres, the keys that hang off their devices) in one map.
#[derive(Default)]
pub struct MemoryAccountStore {
    accounts: Mutex<HashMap<Aci, StoredAccount>>,
}

impl MemoryAccountStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StorageResult<MutexGuard<'_, HashMap<Aci, StoredAccount>>> {
        self.accounts
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("memory store lock poisoned")))
    }

    fn with_device<T>(
        &self,
        aci: Aci,
        id: DeviceId,
        f: impl FnOnce(&StoredDevice) -> Option<T>,
    ) -> StorageResult<Option<T>> {
        Ok(self
            .lock()?
            .get(&aci)
            .and_then(|a| a.devices.get(&id))
            .and_then(f))
    }
}

#[async_trait]
impl AccountStore for MemoryAccountStore {
    async fn create(&self, new: &NewAccount) -> StorageResult<()> {
        let mut accounts = self.lock()?;
        if accounts.contains_key(&new.account.aci) {
            return Err(StorageError::Backend(anyhow::anyhow!(
                "account identifier collision"
            )));
        }
        let mut devices = BTreeMap::new();
        devices.insert(
            new.primary.id,
            StoredDevice {
                device: new.primary.clone(),
                signed_pre_key: Some(new.signed_pre_key.clone()),
                pq_last_resort_pre_key: Some(new.pq_last_resort_pre_key.clone()),
            },
        );
        accounts.insert(
            new.account.aci,
            StoredAccount {
                account: new.account.clone(),
                devices,
            },
        );
        Ok(())
    }

    async fn account(&self, aci: Aci) -> StorageResult<Option<Account>> {
        Ok(self.lock()?.get(&aci).map(|a| a.account.clone()))
    }

    async fn device(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<Device>> {
        self.with_device(aci, id, |d| Some(d.device.clone()))
    }

    async fn update_attributes(
        &self,
        aci: Aci,
        id: DeviceId,
        attributes: &DeviceAttributes,
        access: Option<&AccessSettings>,
    ) -> StorageResult<bool> {
        let mut accounts = self.lock()?;
        let Some(account) = accounts.get_mut(&aci) else {
            return Ok(false);
        };
        let Some(device) = account.devices.get_mut(&id) else {
            return Ok(false);
        };
        device.device.attributes = attributes.clone();
        if let Some(access) = access {
            account.account.access = access.clone();
        }
        Ok(true)
    }

    async fn delete(&self, aci: Aci) -> StorageResult<bool> {
        Ok(self.lock()?.remove(&aci).is_some())
    }
}

#[async_trait]
impl KeyStore for MemoryAccountStore {
    async fn signed_pre_key(
        &self,
        aci: Aci,
        id: DeviceId,
    ) -> StorageResult<Option<SignedEcPreKey>> {
        self.with_device(aci, id, |d| d.signed_pre_key.clone())
    }

    async fn pq_last_resort_pre_key(
        &self,
        aci: Aci,
        id: DeviceId,
    ) -> StorageResult<Option<KemSignedPreKey>> {
        self.with_device(aci, id, |d| d.pq_last_resort_pre_key.clone())
    }
}
