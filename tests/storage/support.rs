//! What the storage tests share: the stores of a backend (memory, or Postgres/Redis on a
//! fresh database and key prefix) under a queue policy, and the accounts, key uploads and
//! queue sizes the tests build on.

use std::time::Duration;

use crate::common::{Backend, TestStores};
use sealpost::client::AccountKeys;
use sealpost::domain::accounts::{
    AccessKey, AccessSettings, Account, Device, DeviceAttributes, NewAccount, day_of,
};
use sealpost::domain::ids::{Aci, DeviceId, RegistrationId};
use sealpost::domain::keys::{EcPublicKey, KeyUpload};
use sealpost::domain::messages::QUEUED_MESSAGE_OVERHEAD;
use sealpost::startup::connect_stores;
use sealpost::storage::{QueuePolicy, Stores};

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

pub(crate) async fn stores_with(backend: Backend, queue: QueuePolicy) -> (Stores, TestStores) {
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
            auth_credential_salt: [42; 16],
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
            created_at_ciphertext: Some(vec![0x01; 57]),
        },
        signed_pre_key: signed,
        pq_last_resort_pre_key: kem,
        push: None,
    }
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

/// What a queue of `count` messages whose charged lengths sum to `bytes` holds against the
/// byte cap.
pub(crate) fn held(count: u64, bytes: u64) -> u64 {
    bytes + count * QUEUED_MESSAGE_OVERHEAD
}
