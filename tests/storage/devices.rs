//! `AccountStore`'s device lifecycle on every backend: linking (`add_device`: the lowest
//! free id from 2, refused when full or for an unknown account, nothing stored when
//! refused, one id per caller under concurrency), removal (`remove_device`: with its keys,
//! nothing else) and `touch_device` (only ever forward). Postgres is read through the
//! account cache, as the server reads it.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use sealpost::client::AccountKeys;
use sealpost::domain::accounts::{DeviceAttributes, NewDevice, day_of};
use sealpost::domain::ids::{Aci, DeviceId, RegistrationId};
use sealpost::domain::keys::KeyCounts;
use sealpost::storage::{DeviceAdded, Stores};

use super::support::{new_account, one_time_upload, stores};
use crate::common::Backend;

const MANY: usize = 6;

fn id(n: u32) -> DeviceId {
    DeviceId::new(n).unwrap()
}

/// A device to link, told apart from the others by its registration id.
fn new_device(registration_id: u16) -> NewDevice {
    let keys = AccountKeys::generate();
    NewDevice {
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ${registration_id}"),
        attributes: DeviceAttributes {
            fetches_messages: registration_id.is_multiple_of(2),
            registration_id: RegistrationId::new(i64::from(registration_id)).unwrap(),
            name: Some(vec![registration_id as u8]),
            capabilities: [("storage".to_owned(), true)].into_iter().collect(),
        },
        created_ms: 1_700_000_000_000 + i64::from(registration_id),
        last_seen_day_ms: day_of(1_700_000_000_000),
        signed_pre_key: keys.signed_pre_key_json(21).to_ec("k").unwrap(),
        pq_last_resort_pre_key: keys.kem_pre_key_json(22).to_kem("k").unwrap(),
        push: None,
        seal_to: sealpost::domain::keys::EcPublicKey::parse("k", &keys.identity_public()).unwrap(),
    }
}

async fn ids(stores: &Stores, aci: Aci) -> Vec<u8> {
    let devices = stores.accounts.devices(aci).await.unwrap();
    devices.iter().map(|d| d.id.get()).collect()
}

async fn a_linked_device_takes_the_lowest_free_id_from_2_with_its_signed_keys(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let aci = new.account.aci;
    let second = new_device(1002);
    assert_eq!(
        stores
            .accounts
            .add_device(aci, &second, MANY)
            .await
            .unwrap(),
        DeviceAdded::Added(id(2))
    );
    assert_eq!(
        stores
            .accounts
            .add_device(aci, &new_device(1003), MANY)
            .await
            .unwrap(),
        DeviceAdded::Added(id(3))
    );
    let device = stores.accounts.device(aci, id(2)).await.unwrap().unwrap();
    assert_eq!(
        (
            device.aci,
            device.id,
            &device.password_hash,
            &device.attributes,
            device.created_ms,
            device.last_seen_day_ms
        ),
        (
            aci,
            id(2),
            &second.password_hash,
            &second.attributes,
            second.created_ms,
            second.last_seen_day_ms
        )
    );
    assert_eq!(
        stores.keys.signed_pre_key(aci, id(2)).await.unwrap(),
        Some(second.signed_pre_key.clone())
    );
    assert_eq!(
        stores
            .keys
            .pq_last_resort_pre_key(aci, id(2))
            .await
            .unwrap(),
        Some(second.pq_last_resort_pre_key.clone())
    );
    assert_eq!(ids(&stores, aci).await, [1, 2, 3]);

    // A freed id is taken again before a higher one.
    assert!(stores.accounts.remove_device(aci, id(2)).await.unwrap());
    assert_eq!(
        stores
            .accounts
            .add_device(aci, &new_device(1004), MANY)
            .await
            .unwrap(),
        DeviceAdded::Added(id(2))
    );
    assert_eq!(
        stores
            .accounts
            .device(aci, id(2))
            .await
            .unwrap()
            .unwrap()
            .attributes
            .registration_id,
        RegistrationId::new(1004).unwrap()
    );
    assert_eq!(ids(&stores, aci).await, [1, 2, 3]);
}

async fn linking_is_refused_when_full_or_for_an_unknown_account_and_stores_nothing(
    backend: Backend,
) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let aci = new.account.aci;
    assert_eq!(
        stores
            .accounts
            .add_device(aci, &new_device(1002), 2)
            .await
            .unwrap(),
        DeviceAdded::Added(id(2))
    );
    assert_eq!(
        stores
            .accounts
            .add_device(aci, &new_device(1003), 2)
            .await
            .unwrap(),
        DeviceAdded::Full(2)
    );
    // A maximum below what the account has is still "full", with the real count.
    assert_eq!(
        stores
            .accounts
            .add_device(aci, &new_device(1003), 1)
            .await
            .unwrap(),
        DeviceAdded::Full(2)
    );
    assert_eq!(ids(&stores, aci).await, [1, 2]);
    assert_eq!(stores.accounts.device(aci, id(3)).await.unwrap(), None);
    assert_eq!(stores.keys.signed_pre_key(aci, id(3)).await.unwrap(), None);
    assert_eq!(
        stores
            .keys
            .pq_last_resort_pre_key(aci, id(3))
            .await
            .unwrap(),
        None
    );

    let unknown = Aci::random();
    assert_eq!(
        stores
            .accounts
            .add_device(unknown, &new_device(1005), MANY)
            .await
            .unwrap(),
        DeviceAdded::NoAccount
    );
    assert_eq!(stores.accounts.account(unknown).await.unwrap(), None);
    assert!(stores.accounts.devices(unknown).await.unwrap().is_empty());
    assert_eq!(
        stores.keys.signed_pre_key(unknown, id(2)).await.unwrap(),
        None
    );
}

async fn concurrent_links_never_take_the_same_id(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let aci = new.account.aci;
    let devices: Vec<NewDevice> = (0..12).map(|i| new_device(2000 + i)).collect();
    let outcomes = join_all(
        devices
            .iter()
            .map(|device| stores.accounts.add_device(aci, device, MANY)),
    )
    .await;
    let mut added = BTreeSet::new();
    let mut full = 0;
    for outcome in outcomes {
        match outcome.unwrap() {
            DeviceAdded::Added(id) => assert!(added.insert(id.get()), "{id:?} taken twice"),
            DeviceAdded::Full(count) => {
                assert_eq!(count, MANY);
                full += 1;
            }
            DeviceAdded::NoAccount => panic!("the account exists"),
        }
    }
    assert_eq!(added, (2..=MANY as u8).collect::<BTreeSet<_>>());
    assert_eq!(full, 12 - (MANY - 1));
    assert_eq!(
        ids(&stores, aci).await,
        (1..=MANY as u8).collect::<Vec<_>>()
    );
    // Each id holds the device that was told it got it: one registration id per device.
    let registrations: BTreeSet<u16> = stores
        .accounts
        .devices(aci)
        .await
        .unwrap()
        .iter()
        .map(|d| d.attributes.registration_id.get())
        .collect();
    assert_eq!(registrations.len(), MANY);
}

async fn removing_a_device_removes_its_keys_and_nothing_else(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let aci = new.account.aci;
    let keys = AccountKeys::generate();
    for n in [2u16, 3] {
        assert_eq!(
            stores
                .accounts
                .add_device(aci, &new_device(1000 + n), MANY)
                .await
                .unwrap(),
            DeviceAdded::Added(id(u32::from(n)))
        );
        assert!(
            stores
                .keys
                .store_keys(aci, id(u32::from(n)), &one_time_upload(&keys, 1..4, 1..3))
                .await
                .unwrap()
        );
    }
    let both = KeyCounts { ec: 3, kem: 2 };
    assert_eq!(stores.keys.counts(aci, id(2)).await.unwrap(), both);

    assert!(stores.accounts.remove_device(aci, id(2)).await.unwrap());
    assert!(
        !stores.accounts.remove_device(aci, id(2)).await.unwrap(),
        "already gone"
    );
    assert!(!stores.accounts.remove_device(aci, id(5)).await.unwrap());
    assert!(
        !stores
            .accounts
            .remove_device(Aci::random(), id(2))
            .await
            .unwrap()
    );

    assert_eq!(stores.accounts.device(aci, id(2)).await.unwrap(), None);
    assert_eq!(stores.keys.signed_pre_key(aci, id(2)).await.unwrap(), None);
    assert_eq!(
        stores
            .keys
            .pq_last_resort_pre_key(aci, id(2))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        stores.keys.counts(aci, id(2)).await.unwrap(),
        KeyCounts::default()
    );
    assert!(stores.keys.claim(aci, id(2)).await.unwrap().is_none());
    let hashes = stores
        .accounts
        .password_hashes(&[(aci, id(2)), (aci, id(3))])
        .await
        .unwrap();
    assert_eq!(
        hashes.keys().copied().collect::<Vec<_>>(),
        [(aci, id(3))],
        "only the remaining device has a hash"
    );

    // The account, its primary and the other linked device are untouched.
    assert_eq!(ids(&stores, aci).await, [1, 3]);
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
    assert_eq!(stores.keys.counts(aci, id(3)).await.unwrap(), both);
    assert!(
        stores
            .keys
            .signed_pre_key(aci, id(3))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        stores
            .keys
            .signed_pre_key(aci, DeviceId::PRIMARY)
            .await
            .unwrap(),
        Some(new.signed_pre_key.clone())
    );
}

async fn a_device_is_only_ever_seen_later(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let aci = new.account.aci;
    let first = new.primary.last_seen_day_ms;
    let day = 86_400_000;
    let last_seen = |stores: Stores| async move {
        stores
            .accounts
            .device(aci, DeviceId::PRIMARY)
            .await
            .unwrap()
            .unwrap()
            .last_seen_day_ms
    };

    stores
        .accounts
        .touch_device(aci, DeviceId::PRIMARY, first + 3 * day)
        .await
        .unwrap();
    assert_eq!(last_seen(stores.clone()).await, first + 3 * day);
    stores
        .accounts
        .touch_device(aci, DeviceId::PRIMARY, first + day)
        .await
        .unwrap();
    assert_eq!(
        last_seen(stores.clone()).await,
        first + 3 * day,
        "never back"
    );
    stores
        .accounts
        .touch_device(aci, DeviceId::PRIMARY, first + 3 * day)
        .await
        .unwrap();
    assert_eq!(last_seen(stores.clone()).await, first + 3 * day);

    // Touching a device that does not exist is not an error and creates nothing.
    stores
        .accounts
        .touch_device(aci, id(4), first)
        .await
        .unwrap();
    stores
        .accounts
        .touch_device(Aci::random(), DeviceId::PRIMARY, first)
        .await
        .unwrap();
    assert_eq!(stores.accounts.device(aci, id(4)).await.unwrap(), None);
    assert_eq!(ids(&stores, aci).await, [1]);
    // Nothing else about the device changed.
    let device = stores
        .accounts
        .device(aci, DeviceId::PRIMARY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (device.password_hash, device.attributes, device.created_ms),
        (
            new.primary.password_hash.clone(),
            new.primary.attributes.clone(),
            new.primary.created_ms
        )
    );
}

on_both_backends!(
    a_linked_device_takes_the_lowest_free_id_from_2_with_its_signed_keys,
    linking_is_refused_when_full_or_for_an_unknown_account_and_stores_nothing,
    concurrent_links_never_take_the_same_id,
    removing_a_device_removes_its_keys_and_nothing_else,
    a_device_is_only_ever_seen_later,
);
