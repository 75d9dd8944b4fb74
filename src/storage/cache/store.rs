//! [`CachedAccountStore`]: the [`AccountStore`] decorator that reads through the cache and
//! invalidates it after every write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{AccountCache, InvalidationBus};
use crate::domain::accounts::{
    AccessSettings, Account, Device, DeviceAttributes, NewAccount, NewDevice,
};
use crate::domain::ids::{Aci, DeviceId};
use crate::metrics::Metrics;
use crate::storage::{AccountStore, DeviceAdded, StorageResult};

/// An [`AccountStore`] that serves reads from an [`AccountCache`] and invalidates it (here
/// and, through the bus, on every pod) after each write.
pub struct CachedAccountStore {
    inner: Arc<dyn AccountStore>,
    cache: Arc<AccountCache>,
    bus: Arc<dyn InvalidationBus>,
    metrics: Option<Metrics>,
}

impl CachedAccountStore {
    pub fn new(
        inner: Arc<dyn AccountStore>,
        cache: Arc<AccountCache>,
        bus: Arc<dyn InvalidationBus>,
        metrics: Option<Metrics>,
    ) -> Self {
        Self {
            inner,
            cache,
            bus,
            metrics,
        }
    }

    fn count(&self, result: &str) {
        if let Some(metrics) = &self.metrics {
            metrics
                .account_cache_lookups
                .with_label_values(&[result])
                .inc();
        }
    }

    /// After a write: drop the local entry, then tell the other pods. A failed publish is
    /// logged, not returned: the write itself is done, and other pods' entries expire
    /// within the TTL.
    async fn changed(&self, aci: Aci) {
        self.cache.invalidate(aci);
        if let Err(e) = self.bus.publish_invalidation(aci).await {
            tracing::warn!(error = %e, "could not tell other pods that an account changed");
        }
    }

    async fn device_list(&self, aci: Aci) -> StorageResult<Arc<[Device]>> {
        if let Some(devices) = self.cache.devices(aci) {
            self.count("hit");
            return Ok(devices);
        }
        let generation = self.cache.begin();
        let devices: Arc<[Device]> = self.inner.devices(aci).await?.into();
        match generation {
            Some(generation) if !devices.is_empty() => {
                self.count("miss");
                let cached = devices.clone();
                self.cache.put(aci, generation, |e| {
                    e.devices = Some((Instant::now(), cached))
                });
            }
            _ => self.count("bypass"),
        }
        Ok(devices)
    }
}

#[async_trait]
impl AccountStore for CachedAccountStore {
    async fn create(&self, new: &NewAccount) -> StorageResult<()> {
        // Nothing to invalidate: unknown accounts are never cached.
        self.inner.create(new).await
    }

    async fn account(&self, aci: Aci) -> StorageResult<Option<Account>> {
        if let Some(account) = self.cache.account(aci) {
            self.count("hit");
            return Ok(Some(account));
        }
        let generation = self.cache.begin();
        let account = self.inner.account(aci).await?;
        match (generation, &account) {
            (Some(generation), Some(found)) => {
                self.count("miss");
                let found = found.clone();
                self.cache.put(aci, generation, |e| {
                    e.account = Some((Instant::now(), found))
                });
            }
            _ => self.count("bypass"),
        }
        Ok(account)
    }

    async fn device(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<Device>> {
        if self.cache.begin().is_none() {
            self.count("bypass");
            return self.inner.device(aci, id).await;
        }
        Ok(self
            .device_list(aci)
            .await?
            .iter()
            .find(|d| d.id == id)
            .cloned())
    }

    async fn devices(&self, aci: Aci) -> StorageResult<Vec<Device>> {
        Ok(self.device_list(aci).await?.to_vec())
    }

    async fn update_attributes(
        &self,
        aci: Aci,
        id: DeviceId,
        attributes: &DeviceAttributes,
        access: Option<&AccessSettings>,
    ) -> StorageResult<bool> {
        let result = self
            .inner
            .update_attributes(aci, id, attributes, access)
            .await;
        self.changed(aci).await;
        result
    }

    async fn delete(&self, aci: Aci) -> StorageResult<bool> {
        let result = self.inner.delete(aci).await;
        self.changed(aci).await;
        result
    }

    async fn add_device(
        &self,
        aci: Aci,
        device: &NewDevice,
        max_devices: usize,
    ) -> StorageResult<DeviceAdded> {
        let result = self.inner.add_device(aci, device, max_devices).await;
        self.changed(aci).await;
        result
    }

    async fn seal_created_at_once(
        &self,
        aci: Aci,
        id: DeviceId,
        sealed: &[u8],
    ) -> StorageResult<bool> {
        let result = self.inner.seal_created_at_once(aci, id, sealed).await;
        self.changed(aci).await;
        result
    }

    async fn set_device_name(&self, aci: Aci, id: DeviceId, name: &[u8]) -> StorageResult<bool> {
        let result = self.inner.set_device_name(aci, id, name).await;
        self.changed(aci).await;
        result
    }

    async fn remove_device(&self, aci: Aci, id: DeviceId) -> StorageResult<bool> {
        let result = self.inner.remove_device(aci, id).await;
        self.changed(aci).await;
        result
    }

    async fn touch_device(&self, aci: Aci, id: DeviceId, day_ms: i64) -> StorageResult<()> {
        let result = self.inner.touch_device(aci, id, day_ms).await;
        self.changed(aci).await;
        result
    }

    async fn set_fetches_messages(
        &self,
        aci: Aci,
        id: DeviceId,
        fetches_messages: bool,
    ) -> StorageResult<bool> {
        let result = self
            .inner
            .set_fetches_messages(aci, id, fetches_messages)
            .await;
        self.changed(aci).await;
        result
    }

    async fn password_hashes(
        &self,
        devices: &[(Aci, DeviceId)],
    ) -> StorageResult<HashMap<(Aci, DeviceId), String>> {
        // Never cached: this read is what tells a socket whether its device still exists.
        self.inner.password_hashes(devices).await
    }
}
