//! `LinkCodeStore` on every backend: a code names its account until it is used up (once,
//! whatever the concurrency) or expires.

use std::time::Duration;

use futures_util::future::join_all;
use sealpost::domain::ids::Aci;

use super::support::stores;
use crate::common::Backend;

const LONG: Duration = Duration::from_secs(600);

async fn a_code_is_peeked_without_being_used_up_and_taken_once(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let codes = &stores.link_codes;
    let (alice, bob) = (Aci::random(), Aci::random());
    codes.put_code("code-a", alice, LONG).await.unwrap();
    codes.put_code("code-b", bob, LONG).await.unwrap();
    assert_eq!(codes.peek_code("code-a").await.unwrap(), Some(alice));
    assert_eq!(
        codes.peek_code("code-a").await.unwrap(),
        Some(alice),
        "still there"
    );
    assert_eq!(codes.take_code("code-a").await.unwrap(), Some(alice));
    assert_eq!(codes.take_code("code-a").await.unwrap(), None, "used up");
    assert_eq!(codes.peek_code("code-a").await.unwrap(), None);
    // Another code is its own.
    assert_eq!(codes.peek_code("code-b").await.unwrap(), Some(bob));
    assert_eq!(codes.take_code("code-b").await.unwrap(), Some(bob));
    assert_eq!(codes.peek_code("never-issued").await.unwrap(), None);
    assert_eq!(codes.take_code("never-issued").await.unwrap(), None);
}

async fn a_code_expires_after_its_ttl(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let codes = &stores.link_codes;
    let aci = Aci::random();
    codes
        .put_code("short", aci, Duration::from_millis(300))
        .await
        .unwrap();
    codes.put_code("long", aci, LONG).await.unwrap();
    assert_eq!(codes.peek_code("short").await.unwrap(), Some(aci));
    // A timing test: the TTL is what is checked.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(codes.peek_code("short").await.unwrap(), None);
    assert_eq!(codes.take_code("short").await.unwrap(), None);
    assert_eq!(codes.peek_code("long").await.unwrap(), Some(aci));
}

async fn concurrent_takes_hand_a_code_to_exactly_one_caller(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let codes = &stores.link_codes;
    let aci = Aci::random();
    codes.put_code("contended", aci, LONG).await.unwrap();
    let taken = join_all((0..16).map(|_| codes.take_code("contended"))).await;
    let winners: Vec<Aci> = taken.into_iter().filter_map(|t| t.unwrap()).collect();
    assert_eq!(winners, [aci]);
}

on_both_backends!(
    a_code_is_peeked_without_being_used_up_and_taken_once,
    a_code_expires_after_its_ttl,
    concurrent_takes_hand_a_code_to_exactly_one_caller,
);
