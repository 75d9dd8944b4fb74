//! `AccountStore` on every backend: accounts and their primary device read back exactly,
//! unknown ones are `None`, attributes and access settings are replaced, deletion takes the
//! devices and keys along, an ACI collision keeps the first account, devices are listed by
//! id, and password hashes are read past the account cache.

use crate::common::Backend;
use sealpost::domain::accounts::{AccessSettings, DeviceAttributes};
use sealpost::domain::ids::{Aci, DeviceId, RegistrationId};

use super::support::{new_account, stores};

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

on_both_backends!(
    devices_are_listed_by_id,
    password_hashes_are_those_of_existing_devices_read_past_any_cache,
    a_created_account_reads_back_exactly,
    unknown_accounts_and_devices_are_none_not_errors,
    attributes_replace_the_device_and_optionally_the_access_settings,
    deleting_an_account_removes_its_devices_and_keys,
    an_aci_collision_fails_and_keeps_the_first_account,
);
