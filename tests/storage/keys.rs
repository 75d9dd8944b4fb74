//! `KeyStore` on every backend: one-time keys are counted, replaced per list and claimed
//! lowest first beside the signed keys, and concurrent claims never return a key twice.

use std::sync::Arc;

use crate::common::Backend;
use sealpost::client::AccountKeys;
use sealpost::domain::ids::{Aci, DeviceId};
use sealpost::domain::keys::{KeyCounts, KeyUpload};

use super::support::{new_account, one_time_upload, stores};

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

on_both_backends!(
    stored_keys_are_counted_replaced_and_claimed_lowest_first,
    concurrent_claims_never_return_a_key_twice,
);
