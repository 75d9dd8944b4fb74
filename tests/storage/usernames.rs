//! `UsernameStore` on every backend (PROTOCOL.md 14.2): reservations that lapse after five
//! minutes, idempotent confirmation, holds of released hashes (seven days, three at most),
//! links, account deletion, and one winner when accounts race for one hash.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::scalar::Scalar;
use futures_util::future::join_all;
use sealpost::domain::ids::Aci;
use sealpost::domain::usernames::{EncryptedUsername, HOLD_MS, RESERVATION_MS, UsernameHash};
use sealpost::storage::Stores;
use sealpost::storage::usernames::{AccountUsername, Confirmed};

use super::support::{new_account, stores};
use crate::common::Backend;

const T0: i64 = 1_800_000_000_000;

/// A valid hash: a random scalar times the basepoint.
fn hash() -> UsernameHash {
    let scalar = Scalar::random(&mut rand::rngs::OsRng);
    let bytes = (scalar * RISTRETTO_BASEPOINT_POINT).compress().to_bytes();
    UsernameHash::from_slice("h", &bytes).unwrap()
}

fn encrypted(byte: u8) -> EncryptedUsername {
    EncryptedUsername::from_vec("e", vec![byte; 40]).unwrap()
}

async fn account(stores: &Stores) -> Aci {
    let new = new_account();
    stores.accounts.create(&new).await.unwrap();
    new.account.aci
}

/// Reserves and confirms `hash` for `aci` at `now`, with a link value.
async fn take(stores: &Stores, aci: Aci, hash: UsernameHash, now: i64) -> Confirmed {
    let names = &stores.usernames;
    assert_eq!(names.reserve(aci, &[hash], now).await.unwrap(), Some(hash));
    names
        .confirm(aci, hash, Some(&encrypted(1)), now)
        .await
        .unwrap()
}

async fn the_first_free_hash_is_reserved_and_confirmation_is_idempotent(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let names = &stores.usernames;
    let (alice, bob) = (account(&stores).await, account(&stores).await);
    let (h1, h2) = (hash(), hash());
    assert_eq!(names.reserve(alice, &[h1, h2], T0).await.unwrap(), Some(h1));
    assert_eq!(names.reserve(bob, &[h1, h2], T0).await.unwrap(), Some(h2));
    assert_eq!(names.reserve(bob, &[h1], T0).await.unwrap(), None);
    assert_eq!(
        names.lookup(h1).await.unwrap(),
        None,
        "a reservation is not a username"
    );
    assert_eq!(
        names.confirm(bob, h1, None, T0).await.unwrap(),
        Confirmed::NoReservation
    );

    let value = encrypted(9);
    let Confirmed::Confirmed {
        link_handle: Some(handle),
    } = names.confirm(alice, h1, Some(&value), T0).await.unwrap()
    else {
        panic!("confirmed with a link");
    };
    assert_eq!(names.lookup(h1).await.unwrap(), Some(alice));
    assert_eq!(names.link(handle).await.unwrap(), Some(value));
    assert_eq!(
        names.username(alice).await.unwrap(),
        AccountUsername {
            hash: Some(h1),
            link_handle: Some(handle)
        }
    );
    // Again: nothing changes, the handle stays.
    assert_eq!(
        names
            .confirm(alice, h1, Some(&encrypted(3)), T0 + 1)
            .await
            .unwrap(),
        Confirmed::Confirmed {
            link_handle: Some(handle)
        }
    );
    // Reserving the confirmed hash returns it and changes nothing.
    assert_eq!(names.reserve(alice, &[h2, h1], T0).await.unwrap(), Some(h1));
    assert_eq!(names.username(alice).await.unwrap().hash, Some(h1));
    // Confirming without a value clears the link.
    let h3 = hash();
    names.reserve(alice, &[h3], T0).await.unwrap();
    assert_eq!(
        names.confirm(alice, h3, None, T0).await.unwrap(),
        Confirmed::Confirmed { link_handle: None }
    );
    assert_eq!(names.link(handle).await.unwrap(), None);
    assert_eq!(names.lookup(h3).await.unwrap(), Some(alice));
    assert_eq!(
        names.lookup(h1).await.unwrap(),
        None,
        "the old one is on hold"
    );
}

async fn a_reservation_lapses_after_five_minutes(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let names = &stores.usernames;
    let (alice, bob) = (account(&stores).await, account(&stores).await);
    let h = hash();
    assert_eq!(names.reserve(alice, &[h], T0).await.unwrap(), Some(h));
    let almost = T0 + RESERVATION_MS - 1;
    assert_eq!(names.reserve(bob, &[h], almost).await.unwrap(), None);
    // Re-reserving extends it.
    assert_eq!(names.reserve(alice, &[h], almost).await.unwrap(), Some(h));
    assert_eq!(names.reserve(bob, &[h], almost + 2).await.unwrap(), None);
    let lapsed = almost + RESERVATION_MS;
    assert_eq!(names.reserve(bob, &[h], lapsed).await.unwrap(), Some(h));
    assert_eq!(
        names.confirm(alice, h, None, lapsed).await.unwrap(),
        Confirmed::Taken,
        "someone else took the lapsed reservation"
    );
    // A lapsed reservation nobody took can still be confirmed.
    let h2 = hash();
    names.reserve(alice, &[h2], T0).await.unwrap();
    let late = T0 + 10 * RESERVATION_MS;
    assert!(matches!(
        names.confirm(alice, h2, None, late).await.unwrap(),
        Confirmed::Confirmed { .. }
    ));
    // A new reservation lets the previous one go.
    let (h3, h4) = (hash(), hash());
    names.reserve(bob, &[h3], late).await.unwrap();
    names.reserve(bob, &[h4], late).await.unwrap();
    assert_eq!(names.reserve(alice, &[h3], late).await.unwrap(), Some(h3));
}

async fn a_released_hash_is_held_seven_days_and_at_most_three_are_held(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let names = &stores.usernames;
    let (alice, bob) = (account(&stores).await, account(&stores).await);
    let hashes: Vec<_> = (0..5).map(|_| hash()).collect();
    take(&stores, alice, hashes[0], T0).await;
    take(&stores, alice, hashes[1], T0 + 1).await;
    // hashes[0] is held for Alice: Bob cannot have it, Alice could take it back.
    assert_eq!(
        names.reserve(bob, &[hashes[0]], T0 + 2).await.unwrap(),
        None
    );
    // Three more changes: holds on 0, 1, 2, 3, of which the oldest (0) is released.
    take(&stores, alice, hashes[2], T0 + 3).await;
    take(&stores, alice, hashes[3], T0 + 4).await;
    take(&stores, alice, hashes[4], T0 + 5).await;
    assert_eq!(
        names.reserve(bob, &[hashes[0]], T0 + 6).await.unwrap(),
        Some(hashes[0]),
        "the oldest hold went"
    );
    for held in &hashes[1..4] {
        assert_eq!(names.reserve(bob, &[*held], T0 + 6).await.unwrap(), None);
    }
    assert_eq!(
        names
            .reserve(bob, &[hashes[1]], T0 + 3 + HOLD_MS)
            .await
            .unwrap(),
        Some(hashes[1]),
        "a hold ends after seven days"
    );

    // Deleting the username holds it too, and clears the link.
    let handle = names.username(alice).await.unwrap().link_handle.unwrap();
    names.clear(alice, T0 + 7).await.unwrap();
    assert_eq!(
        names.username(alice).await.unwrap(),
        AccountUsername::default()
    );
    assert_eq!(names.lookup(hashes[4]).await.unwrap(), None);
    assert_eq!(names.link(handle).await.unwrap(), None);
    assert_eq!(
        names.reserve(bob, &[hashes[4]], T0 + 8).await.unwrap(),
        None
    );
    assert_eq!(
        names.reserve(alice, &[hashes[4]], T0 + 8).await.unwrap(),
        Some(hashes[4])
    );
}

async fn a_link_needs_a_username_and_keeps_its_handle_when_asked(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let names = &stores.usernames;
    let alice = account(&stores).await;
    assert_eq!(
        names.set_link(alice, &encrypted(1), true).await.unwrap(),
        None
    );
    let h = hash();
    names.reserve(alice, &[h], T0).await.unwrap();
    names.confirm(alice, h, None, T0).await.unwrap();
    let first = names
        .set_link(alice, &encrypted(2), true)
        .await
        .unwrap()
        .unwrap();
    let kept = names
        .set_link(alice, &encrypted(3), true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept, first);
    assert_eq!(names.link(first).await.unwrap(), Some(encrypted(3)));
    let fresh = names
        .set_link(alice, &encrypted(4), false)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(fresh, first);
    assert_eq!(names.link(first).await.unwrap(), None);
    assert_eq!(names.link(fresh).await.unwrap(), Some(encrypted(4)));
    assert_eq!(
        names.username(alice).await.unwrap().link_handle,
        Some(fresh)
    );
    names.clear_link(alice).await.unwrap();
    assert_eq!(names.link(fresh).await.unwrap(), None);
    assert_eq!(names.username(alice).await.unwrap().link_handle, None);
    assert_eq!(names.username(alice).await.unwrap().hash, Some(h));
}

async fn a_deleted_account_frees_its_hash_holds_and_link_at_once(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let names = &stores.usernames;
    let (alice, bob) = (account(&stores).await, account(&stores).await);
    let (old, current) = (hash(), hash());
    take(&stores, alice, old, T0).await;
    take(&stores, alice, current, T0).await;
    let handle = names.username(alice).await.unwrap().link_handle.unwrap();
    names.forget(alice).await.unwrap();
    assert!(stores.accounts.delete(alice).await.unwrap());
    assert_eq!(names.lookup(current).await.unwrap(), None);
    assert_eq!(names.link(handle).await.unwrap(), None);
    assert_eq!(
        names.reserve(bob, &[current, old], T0).await.unwrap(),
        Some(current)
    );
    assert_eq!(names.reserve(bob, &[old], T0).await.unwrap(), Some(old));
}

/// Sixteen accounts reserve the same hashes at once: each hash goes to one of them; then
/// two whose reservations of one hash both lapsed confirm it at once: one wins.
async fn accounts_racing_for_a_hash_leave_it_to_exactly_one(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let names = &stores.usernames;
    let mut racers = Vec::new();
    for _ in 0..16 {
        racers.push(account(&stores).await);
    }
    let contested = [hash(), hash()];
    let reserved = join_all(racers.iter().map(|aci| names.reserve(*aci, &contested, T0))).await;
    let mut winners: Vec<UsernameHash> = reserved.into_iter().filter_map(|r| r.unwrap()).collect();
    winners.sort();
    let mut expected = contested.to_vec();
    expected.sort();
    assert_eq!(winners, expected, "each hash reserved by exactly one");

    // Offered in opposite orders: the racers lock candidate rows in different orders,
    // and a reservation that loses a deadlock is run again, never an error.
    let crossed: Vec<UsernameHash> = (0..4).map(|_| hash()).collect();
    let reversed: Vec<UsernameHash> = crossed.iter().rev().copied().collect();
    let reserved = join_all(racers.iter().enumerate().map(|(i, aci)| {
        let order = if i % 2 == 0 { &crossed } else { &reversed };
        names.reserve(*aci, order, T0 + 1)
    }))
    .await;
    let mut winners: Vec<UsernameHash> = reserved.into_iter().filter_map(|r| r.unwrap()).collect();
    winners.sort();
    let mut expected = crossed.clone();
    expected.sort();
    assert_eq!(winners, expected, "each hash reserved by exactly one");

    let (alice, bob) = (racers[0], racers[1]);
    let h = hash();
    names.reserve(alice, &[h], T0).await.unwrap();
    let later = T0 + RESERVATION_MS;
    assert_eq!(names.reserve(bob, &[h], later).await.unwrap(), Some(h));
    let both_lapsed = later + RESERVATION_MS;
    let (a, b) = tokio::join!(
        names.confirm(alice, h, None, both_lapsed),
        names.confirm(bob, h, None, both_lapsed)
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    let confirmed = outcomes
        .iter()
        .filter(|o| matches!(o, Confirmed::Confirmed { .. }))
        .count();
    assert_eq!(confirmed, 1, "{outcomes:?}");
    assert!(outcomes.contains(&Confirmed::Taken), "{outcomes:?}");
    let owner = names.lookup(h).await.unwrap().unwrap();
    assert!(owner == alice || owner == bob);
}

on_both_backends!(
    the_first_free_hash_is_reserved_and_confirmation_is_idempotent,
    a_reservation_lapses_after_five_minutes,
    a_released_hash_is_held_seven_days_and_at_most_three_are_held,
    a_link_needs_a_username_and_keeps_its_handle_when_asked,
    a_deleted_account_frees_its_hash_holds_and_link_at_once,
    accounts_racing_for_a_hash_leave_it_to_exactly_one,
);
