//! The storage conformance suite: every storage test runs against every backend (memory,
//! and Postgres/Redis on a fresh database and key prefix), so the embedded mode cannot
//! drift from production.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Backend, TestStores};
use sealpost::client::AccountKeys;
use sealpost::domain::accounts::{
    AccessKey, AccessSettings, Account, Device, DeviceAttributes, NewAccount, day_of,
};
use sealpost::domain::ids::{Aci, DeviceId, RegistrationId};
use sealpost::domain::keys::{EcPublicKey, KeyCounts, KeyUpload};
use sealpost::domain::messages::QUEUED_MESSAGE_OVERHEAD;
use sealpost::limits::BucketSpec;
use sealpost::startup::connect_stores;
use sealpost::storage::{BucketDecision, Inserted, QueuePolicy, Stores};

/// Queue bounds far above what any test here fills, but for the caps' own test.
pub(crate) fn policy(ttl: Duration) -> QueuePolicy {
    QueuePolicy {
        ttl,
        max_messages: 1_000_000,
        max_bytes: 1 << 40,
    }
}

pub(crate) async fn stores(backend: Backend) -> (Stores, TestStores) {
    stores_with(backend, policy(Duration::from_secs(3600))).await
}

async fn stores_with(backend: Backend, queue: QueuePolicy) -> (Stores, TestStores) {
    let test = TestStores::new(backend).await;
    let stores = connect_stores(&test.store_config(), queue)
        .await
        .expect("stores connect");
    // Postgres is read through the account cache, switched on as the pub/sub listener
    // would: the suite holds for the cached store too (every write here goes through it).
    if let Some(cache) = &stores.account_cache {
        cache.resume();
    }
    (stores, test)
}

pub(crate) fn new_account() -> NewAccount {
    let keys = AccountKeys::generate();
    let aci = Aci::random();
    let signed = keys.signed_pre_key_json(11).to_ec("k").unwrap();
    let kem = keys.kem_pre_key_json(12).to_kem("k").unwrap();
    NewAccount {
        account: Account {
            aci,
            identity_key: EcPublicKey::parse("k", &keys.identity_public()).unwrap(),
            access: AccessSettings {
                unidentified_access_key: Some(AccessKey::parse("k", &[7; 16]).unwrap()),
                unrestricted_unidentified_access: false,
            },
        },
        primary: Device {
            aci,
            id: DeviceId::PRIMARY,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
                .into(),
            attributes: DeviceAttributes {
                fetches_messages: true,
                registration_id: RegistrationId::new(77).unwrap(),
                name: Some(vec![1, 2, 3]),
                capabilities: [("storage".to_owned(), true), ("unknown".to_owned(), false)]
                    .into_iter()
                    .collect(),
            },
            created_ms: 1_700_000_123_456,
            last_seen_day_ms: day_of(1_700_000_123_456),
        },
        signed_pre_key: signed,
        pq_last_resort_pre_key: kem,
    }
}

async fn a_created_account_reads_back_exactly(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let aci = new.account.aci;
    assert_eq!(
        stores.accounts.account(aci).await.unwrap(),
        Some(new.account.clone())
    );
    assert_eq!(
        stores
            .accounts
            .device(aci, DeviceId::PRIMARY)
            .await
            .unwrap(),
        Some(new.primary.clone())
    );
    assert_eq!(
        stores
            .keys
            .signed_pre_key(aci, DeviceId::PRIMARY)
            .await
            .unwrap(),
        Some(new.signed_pre_key.clone())
    );
    assert_eq!(
        stores
            .keys
            .pq_last_resort_pre_key(aci, DeviceId::PRIMARY)
            .await
            .unwrap(),
        Some(new.pq_last_resort_pre_key.clone())
    );
}

async fn unknown_accounts_and_devices_are_none_not_errors(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let other = DeviceId::new(2).unwrap();
    assert_eq!(stores.accounts.account(Aci::random()).await.unwrap(), None);
    assert_eq!(
        stores
            .accounts
            .device(Aci::random(), DeviceId::PRIMARY)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores
            .accounts
            .device(new.account.aci, other)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores
            .keys
            .signed_pre_key(new.account.aci, other)
            .await
            .unwrap(),
        None
    );
    assert!(!stores.accounts.delete(Aci::random()).await.unwrap());
}

async fn attributes_replace_the_device_and_optionally_the_access_settings(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let aci = new.account.aci;
    let attributes = DeviceAttributes {
        fetches_messages: false,
        registration_id: RegistrationId::new(16383).unwrap(),
        name: None,
        capabilities: Default::default(),
    };
    assert!(
        stores
            .accounts
            .update_attributes(aci, DeviceId::PRIMARY, &attributes, None)
            .await
            .unwrap()
    );
    let device = stores
        .accounts
        .device(aci, DeviceId::PRIMARY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(device.attributes, attributes);
    assert_eq!(device.password_hash, new.primary.password_hash);
    assert_eq!(
        stores.accounts.account(aci).await.unwrap().unwrap().access,
        new.account.access
    );

    let access = AccessSettings {
        unidentified_access_key: None,
        unrestricted_unidentified_access: true,
    };
    assert!(
        stores
            .accounts
            .update_attributes(aci, DeviceId::PRIMARY, &attributes, Some(&access))
            .await
            .unwrap()
    );
    assert_eq!(
        stores.accounts.account(aci).await.unwrap().unwrap().access,
        access
    );

    assert!(
        !stores
            .accounts
            .update_attributes(aci, DeviceId::new(3).unwrap(), &attributes, Some(&access))
            .await
            .unwrap()
    );
    assert!(
        !stores
            .accounts
            .update_attributes(Aci::random(), DeviceId::PRIMARY, &attributes, None)
            .await
            .unwrap()
    );
}

async fn deleting_an_account_removes_its_devices_and_keys(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    let keep = new_account();
    stores.accounts.create(&new).await.unwrap();
    stores.accounts.create(&keep).await.unwrap();
    let aci = new.account.aci;
    assert!(stores.accounts.delete(aci).await.unwrap());
    assert_eq!(stores.accounts.account(aci).await.unwrap(), None);
    assert_eq!(
        stores
            .accounts
            .device(aci, DeviceId::PRIMARY)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores
            .keys
            .signed_pre_key(aci, DeviceId::PRIMARY)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores
            .keys
            .pq_last_resort_pre_key(aci, DeviceId::PRIMARY)
            .await
            .unwrap(),
        None
    );
    assert!(!stores.accounts.delete(aci).await.unwrap());
    assert!(
        stores
            .accounts
            .account(keep.account.aci)
            .await
            .unwrap()
            .is_some()
    );
}

async fn an_aci_collision_fails_and_keeps_the_first_account(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let first = new_account();
    stores.accounts.create(&first).await.unwrap();
    let mut second = new_account();
    second.account.aci = first.account.aci;
    second.primary.aci = first.account.aci;
    assert!(stores.accounts.create(&second).await.is_err());
    assert_eq!(
        stores.accounts.account(first.account.aci).await.unwrap(),
        Some(first.account.clone())
    );
    assert_eq!(
        stores
            .keys
            .signed_pre_key(first.account.aci, DeviceId::PRIMARY)
            .await
            .unwrap(),
        Some(first.signed_pre_key.clone())
    );
}

async fn a_token_bucket_allows_its_size_then_refuses_then_refills(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let spec = BucketSpec {
        bucket_size: 3,
        permit_period_ms: 200.0,
    };
    for _ in 0..3 {
        assert_eq!(
            stores.rate_limits.take("t:a", spec, 1, true).await.unwrap(),
            BucketDecision::Allowed
        );
    }
    match stores.rate_limits.take("t:a", spec, 1, true).await.unwrap() {
        BucketDecision::Denied { retry_after } => {
            assert!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200),
                "{retry_after:?}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Another key has its own bucket.
    assert_eq!(
        stores.rate_limits.take("t:b", spec, 1, true).await.unwrap(),
        BucketDecision::Allowed
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        stores.rate_limits.take("t:a", spec, 1, true).await.unwrap(),
        BucketDecision::Allowed
    );
    assert!(matches!(
        stores.rate_limits.take("t:a", spec, 1, true).await.unwrap(),
        BucketDecision::Denied { .. }
    ));
}

async fn checking_a_bucket_without_consuming_takes_nothing(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let spec = BucketSpec {
        bucket_size: 2,
        permit_period_ms: 60_000.0,
    };
    for _ in 0..10 {
        assert_eq!(
            stores
                .rate_limits
                .take("t:peek", spec, 1, false)
                .await
                .unwrap(),
            BucketDecision::Allowed
        );
    }
    assert_eq!(
        stores
            .rate_limits
            .take("t:peek", spec, 2, true)
            .await
            .unwrap(),
        BucketDecision::Allowed
    );
    assert!(matches!(
        stores
            .rate_limits
            .take("t:peek", spec, 1, false)
            .await
            .unwrap(),
        BucketDecision::Denied { .. }
    ));
}

async fn many_permits_are_taken_at_once_or_not_at_all(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let spec = BucketSpec {
        bucket_size: 1000,
        permit_period_ms: 60_000.0,
    };
    assert_eq!(
        stores
            .rate_limits
            .take("t:bytes", spec, 600, true)
            .await
            .unwrap(),
        BucketDecision::Allowed
    );
    match stores
        .rate_limits
        .take("t:bytes", spec, 600, true)
        .await
        .unwrap()
    {
        BucketDecision::Denied { retry_after } => {
            assert!(retry_after >= Duration::from_secs(60 * 199))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        stores
            .rate_limits
            .take("t:bytes", spec, 400, true)
            .await
            .unwrap(),
        BucketDecision::Allowed
    );
}

async fn concurrent_takes_never_hand_out_more_than_the_bucket(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let spec = BucketSpec {
        bucket_size: 25,
        permit_period_ms: 3_600_000.0,
    };
    let limiter = stores.rate_limits.clone();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.take("t:race", spec, 1, true).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if task.await.unwrap() == BucketDecision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 25);
}

async fn readiness_probes_answer_when_the_stores_do(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    for probe in &stores.probes {
        probe
            .ping()
            .await
            .unwrap_or_else(|e| panic!("{} does not answer: {e}", probe.name()));
    }
    assert_eq!(
        stores.probes.len(),
        if backend == Backend::External { 2 } else { 0 }
    );
}

/// A server secret is made once and is the same for every caller, however many ask at
/// once (pods starting together); different names are different secrets.
async fn a_server_secret_is_made_once_and_shared_by_every_caller(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let secrets = stores.secrets.clone();
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let secrets = secrets.clone();
            tokio::spawn(async move { secrets.secret("conformance-a").await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for racer in racers {
        seen.push(racer.await.unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "one secret for all");
    assert_ne!(seen[0], [0u8; 32], "random, not zero");
    assert_eq!(secrets.secret("conformance-a").await.unwrap(), seen[0]);
    assert_ne!(secrets.secret("conformance-b").await.unwrap(), seen[0]);
}

pub(crate) fn one_time_upload(
    keys: &AccountKeys,
    ec: std::ops::Range<i64>,
    kem: std::ops::Range<i64>,
) -> KeyUpload {
    KeyUpload {
        pre_keys: Some(
            keys.one_time_pre_keys(ec)
                .iter()
                .map(|k| k.to_pre_key("k").unwrap())
                .collect(),
        ),
        pq_pre_keys: Some(
            keys.one_time_pq_pre_keys(kem)
                .iter()
                .map(|k| k.to_kem("k").unwrap())
                .collect(),
        ),
        ..Default::default()
    }
}

async fn stored_keys_are_counted_replaced_and_claimed_lowest_first(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let (aci, primary) = (new.account.aci, DeviceId::PRIMARY);
    let keys = AccountKeys::generate();
    assert_eq!(
        stores.keys.counts(aci, primary).await.unwrap(),
        KeyCounts::default()
    );
    let upload = one_time_upload(&keys, 5..8, 20..22);
    assert!(stores.keys.store_keys(aci, primary, &upload).await.unwrap());
    assert_eq!(
        stores.keys.counts(aci, primary).await.unwrap(),
        KeyCounts { ec: 3, kem: 2 }
    );

    let claimed = stores.keys.claim(aci, primary).await.unwrap().unwrap();
    assert_eq!(claimed.signed_pre_key, new.signed_pre_key);
    assert_eq!(
        claimed.pq_last_resort_pre_key.as_ref(),
        Some(&new.pq_last_resort_pre_key)
    );
    assert_eq!(
        claimed.pre_key.as_ref(),
        Some(&upload.pre_keys.as_ref().unwrap()[0])
    );
    assert_eq!(
        claimed.pq_pre_key.as_ref(),
        Some(&upload.pq_pre_keys.as_ref().unwrap()[0])
    );
    stores.keys.claim(aci, primary).await.unwrap();
    let third = stores.keys.claim(aci, primary).await.unwrap().unwrap();
    assert_eq!(third.pre_key.map(|k| k.key_id), Some(7));
    assert_eq!(third.pq_pre_key, None);
    let dry = stores.keys.claim(aci, primary).await.unwrap().unwrap();
    assert_eq!((dry.pre_key, dry.pq_pre_key), (None, None));
    assert_eq!(dry.signed_pre_key, new.signed_pre_key);
    assert_eq!(
        stores
            .keys
            .claim(aci, DeviceId::new(2).unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores.keys.claim(Aci::random(), primary).await.unwrap(),
        None
    );

    // Replacing signed keys and one list leaves the other list alone.
    let more = one_time_upload(&keys, 1..3, 0..0);
    let replacement = KeyUpload {
        pre_keys: more.pre_keys.clone(),
        signed_pre_key: Some(keys.signed_pre_key_json(99).to_ec("s").unwrap()),
        pq_last_resort_pre_key: Some(keys.kem_pre_key_json(98).to_kem("k").unwrap()),
        pq_pre_keys: None,
    };
    assert!(
        stores
            .keys
            .store_keys(aci, primary, &replacement)
            .await
            .unwrap()
    );
    assert_eq!(
        stores.keys.counts(aci, primary).await.unwrap(),
        KeyCounts { ec: 2, kem: 0 }
    );
    assert_eq!(
        stores.keys.signed_pre_key(aci, primary).await.unwrap(),
        replacement.signed_pre_key
    );
    assert_eq!(
        stores
            .keys
            .pq_last_resort_pre_key(aci, primary)
            .await
            .unwrap(),
        replacement.pq_last_resort_pre_key
    );
    // Another device of nobody: nothing stored.
    assert!(
        !stores
            .keys
            .store_keys(aci, DeviceId::new(5).unwrap(), &upload)
            .await
            .unwrap()
    );
    assert!(
        !stores
            .keys
            .store_keys(Aci::random(), primary, &upload)
            .await
            .unwrap()
    );

    // Deleting the account takes its one-time keys with it.
    stores.accounts.delete(aci).await.unwrap();
    assert_eq!(
        stores.keys.counts(aci, primary).await.unwrap(),
        KeyCounts::default()
    );
}

async fn concurrent_claims_never_return_a_key_twice(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let aci = new.account.aci;
    let keys = AccountKeys::generate();
    stores
        .keys
        .store_keys(
            aci,
            DeviceId::PRIMARY,
            &one_time_upload(&keys, 0..50, 0..50),
        )
        .await
        .unwrap();
    let tasks: Vec<_> = (0..80)
        .map(|_| {
            let store = Arc::clone(&stores.keys);
            tokio::spawn(async move { store.claim(aci, DeviceId::PRIMARY).await.unwrap() })
        })
        .collect();
    let (mut ec, mut kem) = (Vec::new(), Vec::new());
    for task in tasks {
        let claimed = task.await.unwrap().expect("the device has a signed prekey");
        ec.extend(claimed.pre_key.map(|k| k.key_id));
        kem.extend(claimed.pq_pre_key.map(|k| k.key_id));
    }
    ec.sort_unstable();
    kem.sort_unstable();
    assert_eq!(ec, (0..50).collect::<Vec<u32>>());
    assert_eq!(kem, (0..50).collect::<Vec<u32>>());
}

async fn devices_are_listed_by_id(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    assert_eq!(
        stores.accounts.devices(new.account.aci).await.unwrap(),
        vec![new.primary.clone()]
    );
    assert_eq!(
        stores.accounts.devices(Aci::random()).await.unwrap(),
        Vec::new()
    );
}

async fn password_hashes_are_those_of_existing_devices_read_past_any_cache(backend: Backend) {
    let (stores, test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let aci = new.account.aci;
    let primary = (aci, DeviceId::PRIMARY);
    let absent = [
        (aci, DeviceId::new(2).unwrap()),
        (Aci::random(), DeviceId::PRIMARY),
    ];
    assert!(
        stores
            .accounts
            .password_hashes(&[])
            .await
            .unwrap()
            .is_empty()
    );
    let hashes = stores
        .accounts
        .password_hashes(&[absent[0], primary, absent[1]])
        .await
        .unwrap();
    assert_eq!(
        hashes.into_iter().collect::<Vec<_>>(),
        vec![(primary, new.primary.password_hash.clone())]
    );
    // A device list now cached; a removal the cache does not hear of (written straight into
    // Postgres, as another pod's would be before its invalidation arrives) is seen at once.
    assert_eq!(stores.accounts.devices(aci).await.unwrap().len(), 1);
    if let Some(db) = &test.db {
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .execute("DELETE FROM devices WHERE aci = $1", &[&aci.uuid()])
            .await
            .unwrap();
        assert_eq!(
            stores.accounts.devices(aci).await.unwrap().len(),
            1,
            "still cached"
        );
        assert!(
            stores
                .accounts
                .password_hashes(&[primary])
                .await
                .unwrap()
                .is_empty()
        );
    }
}

async fn queues_are_fifo_deduplicated_and_read_after_a_cursor(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    let other = DeviceId::new(2).unwrap();
    let guids: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::new_v4()).collect();
    for (i, guid) in guids.iter().enumerate() {
        let envelope = bytes::Bytes::from(format!("envelope {i}"));
        assert!(
            stores
                .messages
                .insert(aci, device, *guid, envelope)
                .await
                .unwrap()
                == Inserted::Queued
        );
    }
    // The same GUID again is not queued twice.
    assert_eq!(
        stores
            .messages
            .insert(aci, device, guids[1], "dup".into())
            .await
            .unwrap(),
        Inserted::Duplicate
    );
    assert_eq!(
        stores
            .messages
            .insert(aci, other, guids[0], "other device".into())
            .await
            .unwrap(),
        Inserted::Queued
    );

    let all = stores.messages.read(aci, device, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|m| m.guid).collect::<Vec<_>>(), guids);
    assert_eq!(all[3].envelope, bytes::Bytes::from("envelope 3"));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let page = stores
        .messages
        .read(aci, device, all[1].seq, 2)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|m| m.guid).collect::<Vec<_>>(),
        guids[2..4].to_vec()
    );

    assert!(stores.messages.remove(aci, device, guids[2]).await.unwrap());
    assert!(!stores.messages.remove(aci, device, guids[2]).await.unwrap());
    let left = stores.messages.read(aci, device, 0, 100).await.unwrap();
    assert_eq!(left.len(), 4);
    assert!(!left.iter().any(|m| m.guid == guids[2]));
    // A new message goes after everything, even after removals.
    let late = uuid::Uuid::new_v4();
    stores
        .messages
        .insert(aci, device, late, "late".into())
        .await
        .unwrap();
    assert_eq!(
        stores
            .messages
            .read(aci, device, 0, 100)
            .await
            .unwrap()
            .last()
            .unwrap()
            .guid,
        late
    );

    stores.messages.delete_queue(aci, device).await.unwrap();
    assert!(
        stores
            .messages
            .read(aci, device, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        stores
            .messages
            .read(aci, other, 0, 100)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn queues_expire_their_ttl_after_the_last_insert(backend: Backend) {
    let test = TestStores::new(backend).await;
    let stores = connect_stores(&test.store_config(), policy(Duration::from_millis(300)))
        .await
        .unwrap();
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    stores
        .messages
        .insert(aci, device, uuid::Uuid::new_v4(), "a".into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stores
        .messages
        .insert(aci, device, uuid::Uuid::new_v4(), "b".into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stores
            .messages
            .read(aci, device, 0, 10)
            .await
            .unwrap()
            .len(),
        2,
        "refreshed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        stores
            .messages
            .read(aci, device, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "expired"
    );
}

async fn concurrent_inserts_keep_one_order_for_every_reader(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = Arc::clone(&stores.messages);
            tokio::spawn(async move {
                store
                    .insert(
                        aci,
                        device,
                        uuid::Uuid::new_v4(),
                        bytes::Bytes::from(format!("{i}")),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Inserted::Queued);
    }
    let first = stores.messages.read(aci, device, 0, 1000).await.unwrap();
    let second = stores.messages.read(aci, device, 0, 1000).await.unwrap();
    assert_eq!(first.len(), 100);
    assert_eq!(first, second);
}

async fn a_shared_payload_completes_every_referencing_message_and_goes_with_the_last(
    backend: Backend,
) {
    use prost::Message as _;
    use sealpost::proto::textsecure::Envelope;
    use sealpost::storage::SharedMessage;
    let (stores, test) = stores(backend).await;
    let shared_id = uuid::Uuid::new_v4();
    let payload = bytes::Bytes::from(vec![0xabu8; 1000]);
    let (a, b) = (Aci::random(), Aci::random());
    let template = Envelope {
        r#type: Some(6),
        client_timestamp: Some(42),
        server_timestamp: Some(43),
        urgent: Some(true),
        ..Default::default()
    };
    let shared = SharedMessage {
        template: bytes::Bytes::from(template.encode_to_vec()),
        payload: payload.clone(),
        prefixes: vec![
            (a, bytes::Bytes::from_static(b"for a")),
            (b, bytes::Bytes::from_static(b"for b")),
        ],
    };
    stores
        .messages
        .insert_shared(shared_id, &shared, 3)
        .await
        .unwrap();
    let (ga, gb, gb2) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let b2 = DeviceId::new(2).unwrap();
    for (aci, device, guid) in [
        (a, DeviceId::PRIMARY, ga),
        (b, DeviceId::PRIMARY, gb),
        (b, b2, gb2),
    ] {
        assert_eq!(
            stores
                .messages
                .insert_referencing(aci, device, guid, shared_id, 1005)
                .await
                .unwrap(),
            Inserted::Queued
        );
    }
    for (aci, device, guid, prefix) in [
        (a, DeviceId::PRIMARY, ga, &b"for a"[..]),
        (b, DeviceId::PRIMARY, gb, &b"for b"[..]),
        (b, b2, gb2, &b"for b"[..]),
    ] {
        let read = stores.messages.read(aci, device, 0, 10).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].guid, guid);
        let mut expected = template.clone();
        let mut content = prefix.to_vec();
        content.extend_from_slice(&payload);
        expected.content = Some(content.into());
        expected.destination_service_id = Some(bytes::Bytes::copy_from_slice(aci.as_bytes()));
        expected.server_guid = Some(bytes::Bytes::copy_from_slice(guid.as_bytes()));
        assert_eq!(
            Envelope::decode(read[0].envelope.clone()).unwrap(),
            expected
        );
    }
    let shared_keys = |test: &TestStores| {
        test.redis
            .as_ref()
            .map(|r| r.keys().into_iter().filter(|k| k.contains("mrm:")).count())
    };
    assert!(
        stores
            .messages
            .remove(a, DeviceId::PRIMARY, ga)
            .await
            .unwrap()
    );
    assert!(
        stores
            .messages
            .remove(b, DeviceId::PRIMARY, gb)
            .await
            .unwrap()
    );
    if backend == Backend::External {
        assert_eq!(
            shared_keys(&test),
            Some(1),
            "still referenced by b's second device"
        );
    }
    assert!(stores.messages.remove(b, b2, gb2).await.unwrap());
    if backend == Backend::External {
        assert_eq!(shared_keys(&test), Some(0), "the last removal deletes it");
    }
}

async fn removing_many_reports_each_message_and_releases_shared_payloads(backend: Backend) {
    let (stores, test) = stores(backend).await;
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    let shared_id = uuid::Uuid::new_v4();
    stores
        .messages
        .insert_shared(
            shared_id,
            &sealpost::storage::SharedMessage {
                template: bytes::Bytes::new(),
                payload: bytes::Bytes::from(vec![1u8; 100]),
                prefixes: vec![(aci, bytes::Bytes::from_static(b"p"))],
            },
            2,
        )
        .await
        .unwrap();
    let plain: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    for guid in &plain {
        stores
            .messages
            .insert(aci, device, *guid, bytes::Bytes::from_static(b"\x08\x01"))
            .await
            .unwrap();
    }
    let referencing: Vec<uuid::Uuid> = (0..2).map(|_| uuid::Uuid::new_v4()).collect();
    for guid in &referencing {
        stores
            .messages
            .insert_referencing(aci, device, *guid, shared_id, 101)
            .await
            .unwrap();
    }
    let unknown = uuid::Uuid::new_v4();
    let removed = stores
        .messages
        .remove_many(
            aci,
            device,
            &[plain[0], unknown, referencing[0], plain[2], plain[0]],
        )
        .await
        .unwrap();
    assert_eq!(removed, vec![true, false, true, true, false]);
    let left: Vec<uuid::Uuid> = stores
        .messages
        .read(aci, device, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.guid)
        .collect();
    assert_eq!(left, vec![plain[1], referencing[1]]);
    let shared_keys = |test: &TestStores| {
        test.redis
            .as_ref()
            .map(|r| r.keys().into_iter().filter(|k| k.contains("mrm:")).count())
    };
    if backend == Backend::External {
        assert_eq!(shared_keys(&test), Some(1), "still referenced once");
    }
    assert_eq!(
        stores
            .messages
            .remove_many(aci, device, &[referencing[1], plain[1]])
            .await
            .unwrap(),
        vec![true, true]
    );
    if backend == Backend::External {
        assert_eq!(shared_keys(&test), Some(0), "the last reference deletes it");
    }
    assert!(
        stores
            .messages
            .read(aci, device, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        stores
            .messages
            .remove_many(aci, device, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

/// What a queue of `count` messages whose charged lengths sum to `bytes` holds against the
/// byte cap.
fn held(count: u64, bytes: u64) -> u64 {
    bytes + count * QUEUED_MESSAGE_OVERHEAD
}

async fn a_full_queue_refuses_more_keeps_what_it_has_and_takes_again_after_removals(
    backend: Backend,
) {
    // Room for three 100-byte envelopes by count, and by bytes for two of 1000 beside them.
    let queue = QueuePolicy {
        ttl: Duration::from_secs(3600),
        max_messages: 3,
        max_bytes: held(3, 1200),
    };
    let (stores, _test) = stores_with(backend, queue).await;
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    let small = || bytes::Bytes::from(vec![0x0a; 100]);
    let guids: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
    for guid in &guids[..3] {
        assert_eq!(
            stores
                .messages
                .insert(aci, device, *guid, small())
                .await
                .unwrap(),
            Inserted::Queued
        );
    }
    // The count cap: a fourth is refused, a duplicate is still a duplicate, and the queue
    // keeps exactly what it had.
    assert_eq!(
        stores
            .messages
            .insert(aci, device, guids[3], small())
            .await
            .unwrap(),
        Inserted::Full
    );
    assert_eq!(
        stores
            .messages
            .insert(aci, device, guids[0], small())
            .await
            .unwrap(),
        Inserted::Duplicate
    );
    let read = stores.messages.read(aci, device, 0, 10).await.unwrap();
    assert_eq!(read.iter().map(|m| m.guid).collect::<Vec<_>>(), guids[..3]);
    // Another device's queue is its own.
    let other = DeviceId::new(2).unwrap();
    assert_eq!(
        stores
            .messages
            .insert(aci, other, guids[3], small())
            .await
            .unwrap(),
        Inserted::Queued
    );

    // A removal makes room again, by count and by bytes.
    assert!(stores.messages.remove(aci, device, guids[0]).await.unwrap());
    let big = bytes::Bytes::from(vec![0x0a; 1000]);
    assert_eq!(
        stores
            .messages
            .insert(aci, device, guids[3], big.clone())
            .await
            .unwrap(),
        Inserted::Queued
    );
    assert!(stores.messages.remove(aci, device, guids[1]).await.unwrap());
    // The byte cap: 1100 of 1200 held, so another 1000 does not fit though the count would.
    let refused = uuid::Uuid::new_v4();
    assert_eq!(
        stores
            .messages
            .insert(aci, device, refused, big.clone())
            .await
            .unwrap(),
        Inserted::Full
    );
    // Removing many lowers the byte total too, and a shared copy counts what it stands
    // for (the recorded length), not its short reference.
    assert_eq!(
        stores
            .messages
            .remove_many(aci, device, &[guids[2], guids[3]])
            .await
            .unwrap(),
        vec![true, true]
    );
    assert_eq!(
        stores
            .messages
            .insert(aci, device, refused, big)
            .await
            .unwrap(),
        Inserted::Queued
    );
    let shared_id = uuid::Uuid::new_v4();
    stores
        .messages
        .insert_shared(
            shared_id,
            &sealpost::storage::SharedMessage {
                template: bytes::Bytes::new(),
                payload: bytes::Bytes::from(vec![1u8; 500]),
                prefixes: vec![(aci, bytes::Bytes::from_static(b"p"))],
            },
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        stores
            .messages
            .insert_referencing(aci, device, uuid::Uuid::new_v4(), shared_id, 501)
            .await
            .unwrap(),
        Inserted::Full,
        "1000 + 501 with two overheads is over the cap, though the reference is 21 bytes"
    );
    assert_eq!(
        stores
            .messages
            .insert_referencing(aci, device, uuid::Uuid::new_v4(), shared_id, 200)
            .await
            .unwrap(),
        Inserted::Queued
    );
    assert_eq!(
        stores
            .messages
            .read(aci, device, 0, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

on_both_backends!(
    a_full_queue_refuses_more_keeps_what_it_has_and_takes_again_after_removals,
    removing_many_reports_each_message_and_releases_shared_payloads,
    a_shared_payload_completes_every_referencing_message_and_goes_with_the_last,
    queues_are_fifo_deduplicated_and_read_after_a_cursor,
    queues_expire_their_ttl_after_the_last_insert,
    concurrent_inserts_keep_one_order_for_every_reader,
    stored_keys_are_counted_replaced_and_claimed_lowest_first,
    concurrent_claims_never_return_a_key_twice,
    devices_are_listed_by_id,
    password_hashes_are_those_of_existing_devices_read_past_any_cache,
    a_created_account_reads_back_exactly,
    unknown_accounts_and_devices_are_none_not_errors,
    attributes_replace_the_device_and_optionally_the_access_settings,
    deleting_an_account_removes_its_devices_and_keys,
    an_aci_collision_fails_and_keeps_the_first_account,
    a_token_bucket_allows_its_size_then_refuses_then_refills,
    checking_a_bucket_without_consuming_takes_nothing,
    many_permits_are_taken_at_once_or_not_at_all,
    concurrent_takes_never_hand_out_more_than_the_bucket,
    readiness_probes_answer_when_the_stores_do,
    a_server_secret_is_made_once_and_shared_by_every_caller,
);

/// Every key of a device's queue shares one hash tag, so each script touches one Redis
/// Cluster slot.
#[tokio::test]
async fn a_device_queue_lives_under_one_hash_tag() {
    let (stores, test) = stores(Backend::External).await;
    let aci = Aci::random();
    stores
        .messages
        .insert(aci, DeviceId::PRIMARY, uuid::Uuid::new_v4(), "x".into())
        .await
        .unwrap();
    let prefix = &test.redis.as_ref().unwrap().prefix;
    let mut keys = test.redis.as_ref().unwrap().keys();
    keys.sort();
    let base = format!("{prefix}q:{{{aci}:1}}");
    assert_eq!(keys, vec![format!("{base}:i"), format!("{base}:m")]);
}

#[tokio::test]
async fn the_redis_bucket_lives_under_the_configured_prefix() {
    let (stores, test) = stores(Backend::External).await;
    let spec = BucketSpec {
        bucket_size: 1,
        permit_period_ms: 1000.0,
    };
    stores
        .rate_limits
        .take("registration:127.0.0.1", spec, 1, true)
        .await
        .unwrap();
    let prefix = &test.redis.as_ref().unwrap().prefix;
    assert_eq!(
        test.redis.as_ref().unwrap().keys(),
        vec![format!("{prefix}rl:registration:127.0.0.1")]
    );
}

#[tokio::test]
async fn postgres_migrations_are_idempotent_and_safe_to_run_concurrently() {
    let test = TestStores::new(Backend::External).await;
    let url = &test.db.as_ref().unwrap().url;
    let a = sealpost::storage::postgres::PgStore::connect(url, 2).unwrap();
    let b = sealpost::storage::postgres::PgStore::connect(url, 2).unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    assert_eq!(
        ra.unwrap() + rb.unwrap(),
        migrations,
        "each migration is applied once, by one of the two processes"
    );
    assert_eq!(a.migrate().await.unwrap(), 0);
}
