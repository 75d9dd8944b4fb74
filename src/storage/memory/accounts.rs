//! Accounts, devices and signed keys in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::domain::accounts::{
    AccessSettings, Account, Device, DeviceAttributes, NewAccount, NewDevice, lowest_free_device_id,
};
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::keys::{
    ClaimedKeys, KemSignedPreKey, KeyCounts, KeyUpload, PreKey, SignedEcPreKey,
};
use crate::storage::{
    AccountStore, DeviceAdded, KeyStore, StorageError, StorageResult, StoredPush,
};

#[derive(Default)]
struct OneTimeKeys {
    // Ordered by key id, so claims hand out the lowest id first, as Postgres does.
    ec: BTreeMap<u32, PreKey>,
    kem: BTreeMap<u32, KemSignedPreKey>,
}

pub(super) struct StoredDevice {
    device: Device,
    signed_pre_key: Option<SignedEcPreKey>,
    pq_last_resort_pre_key: Option<KemSignedPreKey>,
    one_time: OneTimeKeys,
    /// Its push registration (`memory::push`), gone with it.
    pub(super) push: Option<StoredPush>,
}

impl StoredDevice {
    pub(super) fn last_seen_day_ms(&self) -> i64 {
        self.device.last_seen_day_ms
    }
}

pub(super) struct StoredAccount {
    account: Account,
    pub(super) devices: BTreeMap<DeviceId, StoredDevice>,
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

    pub(super) fn lock(&self) -> StorageResult<MutexGuard<'_, HashMap<Aci, StoredAccount>>> {
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
                one_time: OneTimeKeys::default(),
                push: new.push.clone().map(|registration| StoredPush {
                    registration,
                    updated_ms: new.primary.created_ms,
                }),
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

    async fn devices(&self, aci: Aci) -> StorageResult<Vec<Device>> {
        Ok(self
            .lock()?
            .get(&aci)
            .map(|a| a.devices.values().map(|d| d.device.clone()).collect())
            .unwrap_or_default())
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

    async fn seal_created_at_once(
        &self,
        aci: Aci,
        id: DeviceId,
        sealed: &[u8],
    ) -> StorageResult<bool> {
        let mut accounts = self.lock()?;
        let device = accounts.get_mut(&aci).and_then(|a| a.devices.get_mut(&id));
        Ok(match device {
            Some(device) if device.device.created_at_ciphertext.is_none() => {
                device.device.created_at_ciphertext = Some(sealed.to_vec());
                true
            }
            _ => false,
        })
    }

    async fn set_device_name(&self, aci: Aci, id: DeviceId, name: &[u8]) -> StorageResult<bool> {
        let mut accounts = self.lock()?;
        let device = accounts.get_mut(&aci).and_then(|a| a.devices.get_mut(&id));
        Ok(match device {
            Some(device) => {
                device.device.attributes.name = Some(name.to_vec());
                true
            }
            None => false,
        })
    }

    async fn add_device(
        &self,
        aci: Aci,
        new: &NewDevice,
        max_devices: usize,
    ) -> StorageResult<DeviceAdded> {
        let mut accounts = self.lock()?;
        let Some(account) = accounts.get_mut(&aci) else {
            return Ok(DeviceAdded::NoAccount);
        };
        if account.devices.len() >= max_devices {
            return Ok(DeviceAdded::Full(account.devices.len()));
        }
        let Some(id) = lowest_free_device_id(account.devices.keys().copied()) else {
            return Ok(DeviceAdded::Full(account.devices.len()));
        };
        account.devices.insert(
            id,
            StoredDevice {
                device: new.into_device(aci, id),
                signed_pre_key: Some(new.signed_pre_key.clone()),
                pq_last_resort_pre_key: Some(new.pq_last_resort_pre_key.clone()),
                one_time: OneTimeKeys::default(),
                push: new.push.clone().map(|registration| StoredPush {
                    registration,
                    updated_ms: new.created_ms,
                }),
            },
        );
        Ok(DeviceAdded::Added(id))
    }

    async fn remove_device(&self, aci: Aci, id: DeviceId) -> StorageResult<bool> {
        Ok(self
            .lock()?
            .get_mut(&aci)
            .is_some_and(|a| a.devices.remove(&id).is_some()))
    }

    async fn touch_device(&self, aci: Aci, id: DeviceId, day_ms: i64) -> StorageResult<()> {
        if let Some(device) = self
            .lock()?
            .get_mut(&aci)
            .and_then(|a| a.devices.get_mut(&id))
        {
            device.device.last_seen_day_ms = device.device.last_seen_day_ms.max(day_ms);
        }
        Ok(())
    }

    async fn set_fetches_messages(
        &self,
        aci: Aci,
        id: DeviceId,
        fetches_messages: bool,
    ) -> StorageResult<bool> {
        let mut accounts = self.lock()?;
        let device = accounts.get_mut(&aci).and_then(|a| a.devices.get_mut(&id));
        Ok(match device {
            Some(device) => {
                device.device.attributes.fetches_messages = fetches_messages;
                true
            }
            None => false,
        })
    }

    async fn password_hashes(
        &self,
        devices: &[(Aci, DeviceId)],
    ) -> StorageResult<HashMap<(Aci, DeviceId), String>> {
        let accounts = self.lock()?;
        Ok(devices
            .iter()
            .filter_map(|&(aci, id)| {
                let device = accounts.get(&aci)?.devices.get(&id)?;
                Some(((aci, id), device.device.password_hash.clone()))
            })
            .collect())
    }
}

#[async_trait]
impl KeyStore for MemoryAccountStore {
    async fn store_keys(&self, aci: Aci, id: DeviceId, upload: &KeyUpload) -> StorageResult<bool> {
        let mut accounts = self.lock()?;
        let Some(device) = accounts.get_mut(&aci).and_then(|a| a.devices.get_mut(&id)) else {
            return Ok(false);
        };
        if let Some(keys) = &upload.pre_keys {
            device.one_time.ec = keys.iter().map(|k| (k.key_id, k.clone())).collect();
        }
        if let Some(keys) = &upload.pq_pre_keys {
            device.one_time.kem = keys.iter().map(|k| (k.key_id, k.clone())).collect();
        }
        if let Some(key) = &upload.signed_pre_key {
            device.signed_pre_key = Some(key.clone());
        }
        if let Some(key) = &upload.pq_last_resort_pre_key {
            device.pq_last_resort_pre_key = Some(key.clone());
        }
        Ok(true)
    }

    async fn counts(&self, aci: Aci, id: DeviceId) -> StorageResult<KeyCounts> {
        Ok(self
            .with_device(aci, id, |d| {
                Some(KeyCounts {
                    ec: d.one_time.ec.len() as u32,
                    kem: d.one_time.kem.len() as u32,
                })
            })?
            .unwrap_or_default())
    }

    async fn claim(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<ClaimedKeys>> {
        let mut accounts = self.lock()?;
        let Some(device) = accounts.get_mut(&aci).and_then(|a| a.devices.get_mut(&id)) else {
            return Ok(None);
        };
        let Some(signed_pre_key) = device.signed_pre_key.clone() else {
            return Ok(None);
        };
        Ok(Some(ClaimedKeys {
            signed_pre_key,
            pre_key: device.one_time.ec.pop_first().map(|(_, k)| k),
            pq_pre_key: device.one_time.kem.pop_first().map(|(_, k)| k),
            pq_last_resort_pre_key: device.pq_last_resort_pre_key.clone(),
        }))
    }

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
