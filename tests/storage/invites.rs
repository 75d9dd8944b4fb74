//! `InviteStore`: a use is taken atomically, and only from a valid invite.

use sealpost::domain::invites::{Redeemed, new_token, token_hash};

use super::support::stores;
use crate::common::Backend;

async fn an_invite_admits_its_uses_and_then_nothing(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let invites = stores.invites.clone();
    let (token, hash) = new_token();
    let id = invites.create(&hash, 2, None, 1_000).await.unwrap();
    assert_eq!(
        invites.redeem(&token_hash(&token), 2_000).await.unwrap(),
        Redeemed::Admitted(id)
    );
    assert_eq!(
        invites.redeem(&hash, 2_000).await.unwrap(),
        Redeemed::Admitted(id)
    );
    assert_eq!(
        invites.redeem(&hash, 2_000).await.unwrap(),
        Redeemed::UsedUp
    );
    invites.give_back(id).await.unwrap();
    assert_eq!(
        invites.redeem(&hash, 2_000).await.unwrap(),
        Redeemed::Admitted(id)
    );
    let (_, unknown) = new_token();
    assert_eq!(
        invites.redeem(&unknown, 2_000).await.unwrap(),
        Redeemed::Unknown
    );
    let listed = invites.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].used, listed[0].uses), (id, 2, 2));
    assert_eq!(
        (
            listed[0].created_ms,
            listed[0].expires_ms,
            listed[0].revoked
        ),
        (1_000, None, false)
    );
}

async fn expired_and_revoked_invites_admit_nobody(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let invites = stores.invites.clone();
    let (_, expiring) = new_token();
    invites
        .create(&expiring, 5, Some(10_000), 1_000)
        .await
        .unwrap();
    assert!(matches!(
        invites.redeem(&expiring, 9_999).await.unwrap(),
        Redeemed::Admitted(_)
    ));
    assert_eq!(
        invites.redeem(&expiring, 10_000).await.unwrap(),
        Redeemed::Expired
    );
    let (_, revoked) = new_token();
    let id = invites.create(&revoked, 5, None, 1_000).await.unwrap();
    assert!(invites.revoke(id).await.unwrap());
    assert_eq!(
        invites.redeem(&revoked, 2_000).await.unwrap(),
        Redeemed::Revoked
    );
    assert!(!invites.revoke(id + 100).await.unwrap());
    let ids: Vec<i64> = invites.list().await.unwrap().iter().map(|i| i.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
}

async fn racing_redemptions_take_exactly_the_invites_uses(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let invites = stores.invites.clone();
    let (_, hash) = new_token();
    invites.create(&hash, 3, None, 1_000).await.unwrap();
    let racers: Vec<_> = (0..10)
        .map(|_| {
            let invites = invites.clone();
            tokio::spawn(async move { invites.redeem(&hash, 2_000).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for racer in racers {
        if matches!(racer.await.unwrap(), Redeemed::Admitted(_)) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
}

on_both_backends!(
    an_invite_admits_its_uses_and_then_nothing,
    expired_and_revoked_invites_admit_nobody,
    racing_redemptions_take_exactly_the_invites_uses,
);
