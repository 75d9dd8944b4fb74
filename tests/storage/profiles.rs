//! `ProfileStore` on every backend: versions kept per (account, version), one replaced
//! whole with the avatar it had handed back, the current version the last one set, and
//! everything of an account removed at once with its avatars' names.

use sealpost::domain::ids::Aci;
use sealpost::domain::profiles::{ProfileVersion, VersionedProfile};
use sealpost::storage::Stores;

use super::support::{new_account, stores};
use crate::common::Backend;

fn version(c: char) -> ProfileVersion {
    ProfileVersion::parse(&c.to_string().repeat(64)).unwrap()
}

fn profile(v: char, avatar: Option<&str>) -> VersionedProfile {
    VersionedProfile {
        version: version(v),
        commitment: vec![9; 97],
        name: vec![1; 81],
        about_emoji: Some(vec![2; 60]),
        about: Some(Vec::new()),
        payment_address: None,
        phone_number_sharing: Some(vec![3; 29]),
        avatar: avatar.map(str::to_owned),
    }
}

/// An account in the account store (Postgres keeps profiles only for accounts it has).
async fn account(stores: &Stores) -> Aci {
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    new.account.aci
}

async fn versions_are_kept_apart_and_the_last_set_is_current(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let profiles = &stores.profiles;
    let (alice, bob) = (account(&stores).await, account(&stores).await);
    assert_eq!(profiles.current_version(alice).await.unwrap(), None);
    assert_eq!(profiles.get(alice, &version('a')).await.unwrap(), None);

    let a = profile('a', Some("profiles/one"));
    assert_eq!(
        profiles.set(alice, &a).await.unwrap(),
        None,
        "nothing replaced"
    );
    let b = profile('b', None);
    assert_eq!(profiles.set(alice, &b).await.unwrap(), None);
    assert_eq!(
        profiles.get(alice, &version('a')).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(profiles.get(alice, &version('b')).await.unwrap(), Some(b));
    assert_eq!(
        profiles.current_version(alice).await.unwrap(),
        Some(version('b'))
    );
    // Setting an older version again makes it current.
    assert_eq!(
        profiles.set(alice, &a).await.unwrap(),
        Some("profiles/one".into())
    );
    assert_eq!(
        profiles.current_version(alice).await.unwrap(),
        Some(version('a'))
    );
    // Another account's versions are its own.
    assert_eq!(profiles.get(bob, &version('a')).await.unwrap(), None);
    assert_eq!(profiles.current_version(bob).await.unwrap(), None);
}

async fn a_version_is_replaced_whole_and_hands_back_its_avatar(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let profiles = &stores.profiles;
    let alice = account(&stores).await;
    profiles
        .set(alice, &profile('a', Some("profiles/old")))
        .await
        .unwrap();
    let replacement = VersionedProfile {
        about_emoji: None,
        about: None,
        phone_number_sharing: None,
        payment_address: Some(vec![4; 582]),
        name: vec![5; 285],
        ..profile('a', Some("profiles/new"))
    };
    assert_eq!(
        profiles.set(alice, &replacement).await.unwrap(),
        Some("profiles/old".into())
    );
    assert_eq!(
        profiles.get(alice, &version('a')).await.unwrap(),
        Some(replacement),
        "no field of the old one is left"
    );
}

async fn deleting_an_account_s_profiles_removes_every_version_and_names_the_avatars(
    backend: Backend,
) {
    let (stores, _test) = stores(backend).await;
    let profiles = &stores.profiles;
    let (alice, bob) = (account(&stores).await, account(&stores).await);
    profiles
        .set(alice, &profile('a', Some("profiles/a")))
        .await
        .unwrap();
    profiles.set(alice, &profile('b', None)).await.unwrap();
    profiles
        .set(alice, &profile('c', Some("profiles/c")))
        .await
        .unwrap();
    profiles
        .set(bob, &profile('a', Some("profiles/bob")))
        .await
        .unwrap();
    let mut avatars = profiles.delete_all(alice).await.unwrap();
    avatars.sort();
    assert_eq!(avatars, ["profiles/a", "profiles/c"]);
    for v in ['a', 'b', 'c'] {
        assert_eq!(profiles.get(alice, &version(v)).await.unwrap(), None);
    }
    assert_eq!(profiles.current_version(alice).await.unwrap(), None);
    assert!(profiles.delete_all(alice).await.unwrap().is_empty());
    assert!(profiles.get(bob, &version('a')).await.unwrap().is_some());
}

on_both_backends!(
    versions_are_kept_apart_and_the_last_set_is_current,
    a_version_is_replaced_whole_and_hands_back_its_avatar,
    deleting_an_account_s_profiles_removes_every_version_and_names_the_avatars,
);

/// Postgres drops an account's profiles with it (the foreign keys cascade).
#[tokio::test]
async fn postgres_drops_the_profiles_with_their_account() {
    let (stores, _test) = stores(Backend::External).await;
    let alice = account(&stores).await;
    stores
        .profiles
        .set(alice, &profile('a', None))
        .await
        .unwrap();
    assert!(stores.accounts.delete(alice).await.unwrap());
    assert_eq!(
        stores.profiles.get(alice, &version('a')).await.unwrap(),
        None
    );
    assert_eq!(stores.profiles.current_version(alice).await.unwrap(), None);
}
