//! What PROTOCOL.md 16 adds to `AccountStore`, on every backend: the account's
//! `authCredentialSalt` is kept as made; a device's sealed creation time is stored as given
//! (the primary) or sealed once at linking to the key the link names, with the id the store
//! picked; a device's name is replaced alone.

use sealpost::client::AccountKeys;
use sealpost::domain::accounts::{DeviceAttributes, NewDevice, day_of};
use sealpost::domain::created_at;
use sealpost::domain::ids::{Aci, DeviceId, RegistrationId};
use sealpost::domain::keys::EcPublicKey;
use sealpost::storage::DeviceAdded;

use super::support::{new_account, stores};
use crate::common::Backend;

async fn the_auth_credential_salt_and_the_sealed_creation_time_are_kept(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let account = stores
        .accounts
        .account(new.account.aci)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        account.auth_credential_salt,
        new.account.auth_credential_salt
    );
    let primary = stores
        .accounts
        .device(new.account.aci, DeviceId::PRIMARY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        primary.created_at_ciphertext,
        new.primary.created_at_ciphertext
    );
}

async fn a_linked_device_s_creation_time_is_sealed_with_the_id_it_got(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    let identity = AccountKeys::generate();
    let device_keys = AccountKeys::generate();
    let created_ms = 1_700_000_999_000;
    let registration_id = RegistrationId::new(321).unwrap();
    let link = NewDevice {
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$sealed".into(),
        attributes: DeviceAttributes {
            fetches_messages: true,
            registration_id,
            name: None,
            capabilities: Default::default(),
        },
        created_ms,
        last_seen_day_ms: day_of(created_ms),
        signed_pre_key: device_keys.signed_pre_key_json(1).to_ec("k").unwrap(),
        pq_last_resort_pre_key: device_keys.kem_pre_key_json(2).to_kem("k").unwrap(),
        push: None,
        seal_to: EcPublicKey::parse("k", &identity.identity_public()).unwrap(),
    };
    let added = stores
        .accounts
        .add_device(new.account.aci, &link, 6)
        .await
        .unwrap();
    let DeviceAdded::Added(id) = added else {
        panic!("linked: {added:?}");
    };
    let stored = stores
        .accounts
        .device(new.account.aci, id)
        .await
        .unwrap()
        .unwrap();
    let sealed = stored.created_at_ciphertext.expect("sealed at linking");
    assert_eq!(sealed.len(), created_at::SEALED_LEN);
    assert_eq!(
        created_at::open(&identity.identity.to_bytes(), &sealed, id, registration_id),
        Ok(created_ms)
    );
    let other_id = DeviceId::new(u32::from(id.get()) + 1).unwrap();
    assert!(
        created_at::open(
            &identity.identity.to_bytes(),
            &sealed,
            other_id,
            registration_id
        )
        .is_err(),
        "the id is part of the associated data"
    );
}

async fn renaming_replaces_one_device_s_name_only(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    let aci = new.account.aci;
    stores.accounts.create(&new).await.unwrap();
    assert!(
        stores
            .accounts
            .set_device_name(aci, DeviceId::PRIMARY, b"new name")
            .await
            .unwrap()
    );
    let primary = stores
        .accounts
        .device(aci, DeviceId::PRIMARY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(primary.attributes.name.as_deref(), Some(&b"new name"[..]));
    let mut expected = new.primary.attributes.clone();
    expected.name = Some(b"new name".to_vec());
    assert_eq!(primary.attributes, expected, "nothing else changed");
    assert!(
        !stores
            .accounts
            .set_device_name(aci, DeviceId::new(2).unwrap(), b"x")
            .await
            .unwrap(),
        "no such device"
    );
    assert!(
        !stores
            .accounts
            .set_device_name(Aci::random(), DeviceId::PRIMARY, b"x")
            .await
            .unwrap(),
        "no such account"
    );
}

async fn a_sealed_creation_time_is_stored_once_and_never_replaced(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let mut new = new_account();
    new.primary.created_at_ciphertext = None;
    let aci = new.account.aci;
    stores.accounts.create(&new).await.unwrap();
    let first = vec![0x01; 57];
    assert!(
        stores
            .accounts
            .seal_created_at_once(aci, DeviceId::PRIMARY, &first)
            .await
            .unwrap()
    );
    assert!(
        !stores
            .accounts
            .seal_created_at_once(aci, DeviceId::PRIMARY, &[0x02; 57])
            .await
            .unwrap(),
        "it had one already"
    );
    let stored = stores
        .accounts
        .device(aci, DeviceId::PRIMARY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.created_at_ciphertext, Some(first));
    assert!(
        !stores
            .accounts
            .seal_created_at_once(aci, DeviceId::new(2).unwrap(), &[0x01; 57])
            .await
            .unwrap(),
        "no such device"
    );
}

on_both_backends!(
    the_auth_credential_salt_and_the_sealed_creation_time_are_kept,
    a_sealed_creation_time_is_stored_once_and_never_replaced,
    a_linked_device_s_creation_time_is_sealed_with_the_id_it_got,
    renaming_replaces_one_device_s_name_only,
);

/// V0005 on a database that already holds accounts: each gets a salt of its own, 16 bytes;
/// devices made before have no sealed time (the server seals theirs when it lists them).
#[tokio::test]
async fn the_migration_gives_existing_accounts_a_salt_of_their_own() {
    let db = crate::common::TestDatabase::create().await;
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (before, from): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|p| p.file_name().unwrap().to_string_lossy().as_ref() < "V0005");
    for file in &before {
        client
            .batch_execute(&std::fs::read_to_string(file).unwrap())
            .await
            .unwrap();
    }
    let keys = AccountKeys::generate();
    let acis = [Aci::random(), Aci::random()];
    for aci in acis {
        client
            .execute(
                "INSERT INTO accounts (aci, identity_key) VALUES ($1, $2)",
                &[&aci.uuid(), &keys.identity_public()],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO devices (aci, device_id, password_hash, registration_id, \
                 fetches_messages, created_ms, last_seen_day_ms) VALUES ($1, 1, 'h', 7, true, 0, 0)",
                &[&aci.uuid()],
            )
            .await
            .unwrap();
    }
    let v0005 = from
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("V0005")
        })
        .expect("V0005");
    client
        .batch_execute(&std::fs::read_to_string(v0005).unwrap())
        .await
        .unwrap();
    let salts: Vec<Vec<u8>> = client
        .query("SELECT auth_credential_salt FROM accounts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(salts.len(), 2);
    assert!(salts.iter().all(|s| s.len() == 16));
    assert_ne!(salts[0], salts[1]);
    let sealed: Vec<Option<Vec<u8>>> = client
        .query("SELECT created_at_ciphertext FROM devices", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sealed, vec![None, None]);
    // New rows must carry a salt, of 16 bytes.
    assert!(
        client
            .execute(
                "INSERT INTO accounts (aci, identity_key) VALUES ($1, $2)",
                &[&Aci::random().uuid(), &keys.identity_public()],
            )
            .await
            .is_err()
    );
}
