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
//!
//! `entries` holds [`AccountCache`], `store` the [`CachedAccountStore`] decorator.

use std::time::Duration;

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::ids::Aci;

mod entries;
mod store;

pub use entries::AccountCache;
pub use store::CachedAccountStore;

/// How long an entry may serve without being re-read.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Tells the other pods that an account or its devices changed.
#[async_trait]
pub trait InvalidationBus: Send + Sync {
    async fn publish_invalidation(&self, aci: Aci) -> StorageResult<()>;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::client::AccountKeys;
    use crate::domain::accounts::{
        AccessSettings, Account, Device, DeviceAttributes, NewAccount, day_of,
    };
    use crate::domain::ids::{Aci, DeviceId, RegistrationId};
    use crate::domain::keys::EcPublicKey as IdentityKey;
    use crate::metrics::Metrics;
    use crate::storage::memory::MemoryAccountStore;
    use crate::storage::{AccountStore, StorageResult};

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
                auth_credential_salt: [9; 16],
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
                created_at_ciphertext: None,
            },
            signed_pre_key: keys.signed_pre_key_json(1).to_ec("k").unwrap(),
            pq_last_resort_pre_key: keys.kem_pre_key_json(2).to_kem("k").unwrap(),
            push: None,
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
