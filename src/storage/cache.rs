//! A read-through cache of accounts and device lists in front of an [`AccountStore`], so that
//! the hot paths (authentication, the send path's device check, `needsSync`, delivery
//! receipts) do not pay a Postgres round trip per message. Owns no data of its own: every
//! write goes to the store first, then drops the account's entry here and tells the other
//! pods to drop theirs.
//!
//! Correctness rules, in order of importance:
//! - The cache is used only while invalidations are being heard (`resume` after the pub/sub
//!   listener subscribed, `suspend` when it lost its connection). A reconnect clears it:
//!   invalidations sent meanwhile were lost.
//! - A value read from the store is cached only if no invalidation of any account happened
//!   since the read began (a generation counter), so a read racing a write elsewhere cannot
//!   put the old value back after its invalidation arrived.
//! - Entries live at most `ttl`: the bound on staleness if an invalidation never arrives
//!   (another pod's PUBLISH failed after its write).
//! - Unknown accounts are never cached (no negative entries), so registration needs no
//!   invalidation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{AccountStore, DeviceAdded, StorageResult};
use crate::domain::accounts::{
    AccessSettings, Account, Device, DeviceAttributes, NewAccount, NewDevice,
};
use crate::domain::ids::{Aci, DeviceId};
use crate::metrics::Metrics;

/// How long an entry may serve without being re-read.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// Past this many accounts the cache drops what has expired, then everything.
const MAX_ENTRIES: usize = 200_000;

/// Tells the other pods that an account or its devices changed.
#[async_trait]
pub trait InvalidationBus: Send + Sync {
    async fn publish_invalidation(&self, aci: Aci) -> StorageResult<()>;
}

#[derive(Default)]
struct Entry {
    account: Option<(Instant, Account)>,
    devices: Option<(Instant, Arc<[Device]>)>,
}

/// The shared state: what the listener invalidates and the store decorator reads.
pub struct AccountCache {
    // std Mutex: held for a map lookup or insert, never across an await.
    entries: Mutex<HashMap<Aci, Entry>>,
    generation: AtomicU64,
    live: AtomicBool,
    ttl: Duration,
}

impl AccountCache {
    /// A cache that serves nothing until [`AccountCache::resume`].
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            ttl,
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Aci, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Invalidations are heard again: start from nothing (some may have been missed).
    pub fn resume(&self) {
        let mut entries = self.entries();
        entries.clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.live.store(true, Ordering::Release);
    }

    /// Invalidations can no longer be heard: serve nothing until `resume`.
    pub fn suspend(&self) {
        self.live.store(false, Ordering::Release);
        let mut entries = self.entries();
        entries.clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The account or its devices changed (here or on another pod).
    pub fn invalidate(&self, aci: Aci) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(&aci);
    }

    /// The generation a read from the store starts at; `None` when the cache is off.
    fn begin(&self) -> Option<u64> {
        self.live
            .load(Ordering::Acquire)
            .then(|| self.generation.load(Ordering::Acquire))
    }

    fn fresh<T: Clone>(&self, slot: &Option<(Instant, T)>) -> Option<T> {
        slot.as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn account(&self, aci: Aci) -> Option<Account> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.entries()
            .get(&aci)
            .and_then(|e| self.fresh(&e.account))
    }

    fn devices(&self, aci: Aci) -> Option<Arc<[Device]>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.entries()
            .get(&aci)
            .and_then(|e| self.fresh(&e.devices))
    }

    /// Stores what a read that began at `generation` found, unless something was
    /// invalidated since.
    fn put(&self, aci: Aci, generation: u64, fill: impl FnOnce(&mut Entry)) {
        let mut entries = self.entries();
        if !self.live.load(Ordering::Acquire)
            || self.generation.load(Ordering::Acquire) != generation
        {
            return;
        }
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&aci) {
            let ttl = self.ttl;
            entries.retain(|_, e| {
                e.account.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl)
                    || e.devices.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl)
            });
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        fill(entries.entry(aci).or_default());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

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

    async fn password_hashes(
        &self,
        devices: &[(Aci, DeviceId)],
    ) -> StorageResult<HashMap<(Aci, DeviceId), String>> {
        // Never cached: this read is what tells a socket whether its device still exists.
        self.inner.password_hashes(devices).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::client::AccountKeys;
    use crate::domain::accounts::day_of;
    use crate::domain::ids::RegistrationId;
    use crate::domain::keys::EcPublicKey as IdentityKey;
    use crate::storage::memory::MemoryAccountStore;

    #[derive(Default)]
    struct CountingBus(AtomicUsize);

    #[async_trait]
    impl InvalidationBus for CountingBus {
        async fn publish_invalidation(&self, _: Aci) -> StorageResult<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn new_account() -> NewAccount {
        let keys = AccountKeys::generate();
        let aci = Aci::random();
        NewAccount {
            account: Account {
                aci,
                identity_key: IdentityKey::parse("k", &keys.identity_public()).unwrap(),
                access: AccessSettings {
                    unidentified_access_key: None,
                    unrestricted_unidentified_access: false,
                },
            },
            primary: Device {
                aci,
                id: DeviceId::PRIMARY,
                password_hash: "hash".into(),
                attributes: DeviceAttributes {
                    fetches_messages: true,
                    registration_id: RegistrationId::new(7).unwrap(),
                    name: None,
                    capabilities: Default::default(),
                },
                created_ms: 1,
                last_seen_day_ms: day_of(1),
            },
            signed_pre_key: keys.signed_pre_key_json(1).to_ec("k").unwrap(),
            pq_last_resort_pre_key: keys.kem_pre_key_json(2).to_kem("k").unwrap(),
        }
    }

    struct Fixture {
        store: Arc<MemoryAccountStore>,
        cache: Arc<AccountCache>,
        bus: Arc<CountingBus>,
        cached: CachedAccountStore,
        metrics: Metrics,
    }

    fn fixture(ttl: Duration) -> Fixture {
        let store = Arc::new(MemoryAccountStore::new());
        let cache = AccountCache::new(ttl);
        let bus = Arc::new(CountingBus::default());
        let metrics = Metrics::new();
        let cached = CachedAccountStore::new(
            store.clone(),
            cache.clone(),
            bus.clone(),
            Some(metrics.clone()),
        );
        Fixture {
            store,
            cache,
            bus,
            cached,
            metrics,
        }
    }

    fn lookups(metrics: &Metrics, result: &str) -> u64 {
        metrics
            .account_cache_lookups
            .with_label_values(&[result])
            .get()
    }

    /// Changes the device behind the cache's back, as another pod would.
    async fn rename_behind_the_back(f: &Fixture, aci: Aci) {
        let mut attributes = f
            .store
            .device(aci, DeviceId::PRIMARY)
            .await
            .unwrap()
            .unwrap()
            .attributes;
        attributes.name = Some(vec![9]);
        f.store
            .update_attributes(aci, DeviceId::PRIMARY, &attributes, None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_suspended_cache_reads_through_every_time() {
        let f = fixture(DEFAULT_TTL);
        let new = new_account();
        f.cached.create(&new).await.unwrap();
        f.cached.devices(new.account.aci).await.unwrap();
        rename_behind_the_back(&f, new.account.aci).await;
        let devices = f.cached.devices(new.account.aci).await.unwrap();
        assert_eq!(devices[0].attributes.name, Some(vec![9]));
        assert_eq!(lookups(&f.metrics, "hit"), 0);
        assert_eq!(f.cache.len(), 0);
    }

    #[tokio::test]
    async fn a_live_cache_serves_repeated_reads_and_forgets_on_invalidation() {
        let f = fixture(DEFAULT_TTL);
        f.cache.resume();
        let new = new_account();
        let aci = new.account.aci;
        f.cached.create(&new).await.unwrap();
        let first = f.cached.devices(aci).await.unwrap();
        rename_behind_the_back(&f, aci).await;
        assert_eq!(
            f.cached.devices(aci).await.unwrap(),
            first,
            "served from the cache"
        );
        assert_eq!(
            f.cached
                .device(aci, DeviceId::PRIMARY)
                .await
                .unwrap()
                .as_ref(),
            first.first()
        );
        assert_eq!(lookups(&f.metrics, "hit"), 2);
        f.cache.invalidate(aci);
        let after = f.cached.devices(aci).await.unwrap();
        assert_eq!(after[0].attributes.name, Some(vec![9]));
    }

    #[tokio::test]
    async fn every_write_invalidates_here_and_tells_the_other_pods() {
        let f = fixture(DEFAULT_TTL);
        f.cache.resume();
        let new = new_account();
        let aci = new.account.aci;
        f.cached.create(&new).await.unwrap();
        assert_eq!(
            f.bus.0.load(Ordering::SeqCst),
            0,
            "creation needs no invalidation"
        );
        f.cached.account(aci).await.unwrap();
        f.cached.devices(aci).await.unwrap();
        let mut attributes = new.primary.attributes.clone();
        attributes.name = Some(vec![5]);
        assert!(
            f.cached
                .update_attributes(aci, DeviceId::PRIMARY, &attributes, None)
                .await
                .unwrap()
        );
        assert_eq!(f.bus.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            f.cached.devices(aci).await.unwrap()[0].attributes.name,
            Some(vec![5])
        );
        f.cached
            .touch_device(aci, DeviceId::PRIMARY, day_of(1) + 86_400_000)
            .await
            .unwrap();
        assert!(f.cached.delete(aci).await.unwrap());
        assert_eq!(f.bus.0.load(Ordering::SeqCst), 3);
        assert_eq!(f.cached.account(aci).await.unwrap(), None);
        assert!(f.cached.devices(aci).await.unwrap().is_empty());
        assert_eq!(f.cached.device(aci, DeviceId::PRIMARY).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_read_that_raced_an_invalidation_is_not_cached() {
        let f = fixture(DEFAULT_TTL);
        f.cache.resume();
        let aci = Aci::random();
        let generation = f.cache.begin().unwrap();
        f.cache.invalidate(Aci::random());
        f.cache.put(aci, generation, |_| {});
        assert_eq!(f.cache.len(), 0);
        f.cache.put(aci, f.cache.begin().unwrap(), |_| {});
        assert_eq!(f.cache.len(), 1);
        f.cache.suspend();
        assert_eq!(f.cache.len(), 0);
        assert_eq!(f.cache.begin(), None);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let f = fixture(Duration::from_millis(50));
        f.cache.resume();
        let new = new_account();
        let aci = new.account.aci;
        f.cached.create(&new).await.unwrap();
        f.cached.devices(aci).await.unwrap();
        rename_behind_the_back(&f, aci).await;
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            f.cached.devices(aci).await.unwrap()[0].attributes.name,
            Some(vec![9])
        );
    }
}
