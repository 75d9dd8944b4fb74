//! `PushStore` on every backend: one registration per device, of one kind (setting one
//! replaces any other), cleared by kind or only while unchanged, a WebPush subscription
//! activated only by its own token, nothing stored for an unknown device, every
//! registration gone with its device or account, and the wakeable devices last seen in a
//! range of days, paged in (ACI, device) order.

use base64::Engine;
use sealpost::client::AccountKeys;
use sealpost::domain::accounts::{DeviceAttributes, NewDevice};
use sealpost::domain::ids::{Aci, DeviceId, RegistrationId};
use sealpost::domain::push::{
    PushKind, PushRegistration, PushToken, WebPushRegistration, WebPushSubscription,
};
use sealpost::storage::{DeviceAdded, StoredPush};
use uuid::Uuid;

use super::support::{new_account, stores};
use crate::common::Backend;

fn fcm(token: &str) -> PushRegistration {
    PushRegistration::Fcm(PushToken::parse("t", token).unwrap())
}

fn apns(token: &str) -> PushRegistration {
    PushRegistration::Apns(PushToken::parse("t", token).unwrap())
}

fn webpush(endpoint: &str, activation: Uuid) -> PushRegistration {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut point = [9u8; 65];
    point[0] = 4;
    PushRegistration::WebPush(WebPushRegistration {
        subscription: WebPushSubscription::parse(endpoint, &b64(&point), &b64(&[3; 16])).unwrap(),
        activation,
        active: false,
    })
}

async fn one_registration_per_device_replaced_by_any_kind(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    let aci = new.account.aci;
    stores.accounts.create(&new).await.unwrap();
    let push = &stores.push;
    let primary = DeviceId::PRIMARY;
    assert_eq!(push.push(aci, primary).await.unwrap(), None);

    assert!(push.set_push(aci, primary, &fcm("f1"), 10).await.unwrap());
    assert_eq!(
        push.push(aci, primary).await.unwrap(),
        Some(StoredPush {
            registration: fcm("f1"),
            updated_ms: 10
        })
    );
    // Another kind replaces it, with its own time.
    assert!(push.set_push(aci, primary, &apns("a1"), 20).await.unwrap());
    assert_eq!(
        push.push(aci, primary).await.unwrap().unwrap(),
        StoredPush {
            registration: apns("a1"),
            updated_ms: 20
        }
    );
    let activation = Uuid::new_v4();
    let web = webpush("https://push.example/up/1", activation);
    assert!(push.set_push(aci, primary, &web, 30).await.unwrap());
    assert_eq!(
        push.push(aci, primary).await.unwrap().unwrap().registration,
        web
    );
    // Clearing another kind clears nothing; clearing its own kind clears it.
    assert!(!push.clear_push(aci, primary, PushKind::Fcm).await.unwrap());
    assert!(push.push(aci, primary).await.unwrap().is_some());
    assert!(
        push.clear_push(aci, primary, PushKind::WebPush)
            .await
            .unwrap()
    );
    assert_eq!(push.push(aci, primary).await.unwrap(), None);
    assert!(
        !push
            .clear_push(aci, primary, PushKind::WebPush)
            .await
            .unwrap()
    );

    // An unknown device or account stores nothing.
    let absent = DeviceId::new(9).unwrap();
    assert!(!push.set_push(aci, absent, &fcm("f"), 1).await.unwrap());
    assert_eq!(push.push(aci, absent).await.unwrap(), None);
    assert!(
        !push
            .set_push(Aci::random(), primary, &fcm("f"), 1)
            .await
            .unwrap()
    );
}

async fn a_refused_token_is_cleared_only_while_unchanged(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    let aci = new.account.aci;
    stores.accounts.create(&new).await.unwrap();
    let push = &stores.push;
    let primary = DeviceId::PRIMARY;
    push.set_push(aci, primary, &fcm("old"), 1).await.unwrap();
    // The device registered a new token since the provider refused the old one.
    push.set_push(aci, primary, &fcm("new"), 2).await.unwrap();
    assert!(!push.clear_push_if(aci, primary, &fcm("old")).await.unwrap());
    assert!(
        !push
            .clear_push_if(aci, primary, &apns("new"))
            .await
            .unwrap()
    );
    assert_eq!(
        push.push(aci, primary).await.unwrap().unwrap().registration,
        fcm("new")
    );
    assert!(push.clear_push_if(aci, primary, &fcm("new")).await.unwrap());
    assert_eq!(push.push(aci, primary).await.unwrap(), None);

    // A WebPush subscription is the same one whether or not it was activated since.
    let activation = Uuid::new_v4();
    let web = webpush("https://push.example/up/2", activation);
    push.set_push(aci, primary, &web, 3).await.unwrap();
    assert!(
        push.activate_webpush(aci, primary, activation)
            .await
            .unwrap()
    );
    let other = webpush("https://push.example/up/3", activation);
    assert!(!push.clear_push_if(aci, primary, &other).await.unwrap());
    assert!(push.clear_push_if(aci, primary, &web).await.unwrap());
}

async fn a_webpush_subscription_is_activated_only_by_its_own_token(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    let aci = new.account.aci;
    stores.accounts.create(&new).await.unwrap();
    let push = &stores.push;
    let primary = DeviceId::PRIMARY;
    let activation = Uuid::new_v4();
    push.set_push(
        aci,
        primary,
        &webpush("https://push.example/a", activation),
        5,
    )
    .await
    .unwrap();
    let active = |stored: Option<StoredPush>| match stored.map(|s| s.registration) {
        Some(PushRegistration::WebPush(web)) => web.active,
        other => panic!("not a WebPush registration: {other:?}"),
    };
    assert!(
        !push
            .activate_webpush(aci, primary, Uuid::new_v4())
            .await
            .unwrap()
    );
    assert!(!active(push.push(aci, primary).await.unwrap()));
    assert!(
        push.activate_webpush(aci, primary, activation)
            .await
            .unwrap()
    );
    assert!(active(push.push(aci, primary).await.unwrap()));
    // An FCM token has nothing to activate.
    push.set_push(aci, primary, &fcm("f"), 6).await.unwrap();
    assert!(
        !push
            .activate_webpush(aci, primary, activation)
            .await
            .unwrap()
    );
}

async fn registrations_go_with_their_device_and_account(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let new = new_account();
    let aci = new.account.aci;
    stores.accounts.create(&new).await.unwrap();
    let primary = DeviceId::PRIMARY;
    stores
        .push
        .set_push(aci, primary, &fcm("gone"), 1)
        .await
        .unwrap();
    // With its device.
    assert!(stores.accounts.remove_device(aci, primary).await.unwrap());
    assert_eq!(stores.push.push(aci, primary).await.unwrap(), None);
    // With its account.
    assert!(stores.accounts.delete(aci).await.unwrap());
    stores.accounts.create(&new).await.unwrap();
    stores
        .push
        .set_push(aci, primary, &fcm("gone-too"), 2)
        .await
        .unwrap();
    assert!(stores.accounts.delete(aci).await.unwrap());
    assert_eq!(stores.push.push(aci, primary).await.unwrap(), None);
    // An account made again under the same ACI does not inherit it.
    stores.accounts.create(&new).await.unwrap();
    assert_eq!(stores.push.push(aci, primary).await.unwrap(), None);
}

const DAY: i64 = 86_400_000;
/// "Today" for the idle-device tests.
const TODAY: i64 = 20_000 * DAY;

fn linked_device(last_seen_day_ms: i64) -> NewDevice {
    let keys = AccountKeys::generate();
    NewDevice {
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$linked".into(),
        attributes: DeviceAttributes {
            fetches_messages: false,
            registration_id: RegistrationId::new(5).unwrap(),
            name: None,
            capabilities: Default::default(),
        },
        created_ms: TODAY,
        last_seen_day_ms,
        signed_pre_key: keys.signed_pre_key_json(21).to_ec("k").unwrap(),
        pq_last_resort_pre_key: keys.kem_pre_key_json(22).to_kem("k").unwrap(),
        push: None,
        seal_to: sealpost::domain::keys::EcPublicKey::parse("k", &keys.identity_public()).unwrap(),
    }
}

/// An account whose primary was last seen `days_ago`, with `registration` if given.
async fn seen(
    stores: &sealpost::storage::Stores,
    days_ago: i64,
    registration: Option<PushRegistration>,
) -> Aci {
    let mut new = new_account();
    new.primary.last_seen_day_ms = TODAY - days_ago * DAY;
    let aci = new.account.aci;
    stores.accounts.create(&new).await.unwrap();
    if let Some(registration) = registration {
        assert!(
            stores
                .push
                .set_push(aci, DeviceId::PRIMARY, &registration, 1)
                .await
                .unwrap()
        );
    }
    aci
}

async fn idle_devices_are_the_wakeable_ones_last_seen_in_the_range(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let primary = DeviceId::PRIMARY;
    let (from, until) = (TODAY - 30 * DAY, TODAY - 3 * DAY);
    // In the range, with a token: the primary, and a linked device seen on another day.
    let a = seen(&stores, 5, Some(fcm("a"))).await;
    let DeviceAdded::Added(linked) = stores
        .accounts
        .add_device(a, &linked_device(TODAY - 10 * DAY), 6)
        .await
        .unwrap()
    else {
        panic!("linked")
    };
    stores
        .push
        .set_push(a, linked, &apns("a2"), 1)
        .await
        .unwrap();
    // The range's two ends are in it.
    let first_day = seen(&stores, 30, Some(apns("f"))).await;
    let last_day = seen(&stores, 3, Some(fcm("l"))).await;
    // Outside it, on either side.
    seen(&stores, 31, Some(fcm("old"))).await;
    seen(&stores, 2, Some(fcm("recent"))).await;
    // No registration, or an inactive WebPush subscription: nothing could wake it.
    seen(&stores, 10, None).await;
    let activation = Uuid::new_v4();
    let web = seen(
        &stores,
        10,
        Some(webpush("https://push.example/idle", activation)),
    )
    .await;

    let mut expected = vec![
        (a, primary),
        (a, linked),
        (first_day, primary),
        (last_day, primary),
    ];
    expected.sort();
    let idle = stores
        .push
        .idle_devices(from, until, None, 100)
        .await
        .unwrap();
    assert_eq!(idle, expected);

    // Once active, the WebPush subscription counts.
    assert!(
        stores
            .push
            .activate_webpush(web, primary, activation)
            .await
            .unwrap()
    );
    expected.push((web, primary));
    expected.sort();
    let idle = stores
        .push
        .idle_devices(from, until, None, 100)
        .await
        .unwrap();
    assert_eq!(idle, expected);
    // A narrower range: only the last day.
    assert_eq!(
        stores
            .push
            .idle_devices(until, until, None, 100)
            .await
            .unwrap(),
        [(last_day, primary)]
    );
}

async fn idle_devices_page_by_aci_and_device_after_the_last_one_seen(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let (from, until) = (TODAY - 30 * DAY, TODAY);
    let mut all = Vec::new();
    for i in 0..5 {
        let aci = seen(&stores, i, Some(fcm(&format!("t{i}")))).await;
        all.push((aci, DeviceId::PRIMARY));
        let DeviceAdded::Added(linked) = stores
            .accounts
            .add_device(aci, &linked_device(TODAY - DAY), 6)
            .await
            .unwrap()
        else {
            panic!("linked")
        };
        stores
            .push
            .set_push(aci, linked, &fcm(&format!("l{i}")), 1)
            .await
            .unwrap();
        all.push((aci, linked));
    }
    all.sort();
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = stores
            .push
            .idle_devices(from, until, after, 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last().copied() else {
            break;
        };
        paged.extend(page);
        after = Some(last);
    }
    assert_eq!(paged, all, "every device once, in order");
    assert_eq!(
        stores
            .push
            .idle_devices(from, until, None, 0)
            .await
            .unwrap(),
        []
    );
}

on_both_backends!(
    one_registration_per_device_replaced_by_any_kind,
    a_refused_token_is_cleared_only_while_unchanged,
    a_webpush_subscription_is_activated_only_by_its_own_token,
    registrations_go_with_their_device_and_account,
    idle_devices_are_the_wakeable_ones_last_seen_in_the_range,
    idle_devices_page_by_aci_and_device_after_the_last_one_seen,
);
