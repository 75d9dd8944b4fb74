//! Usernames and username links through the real server (PROTOCOL.md 14): reserve, confirm,
//! anonymous lookups, links, whoami, holds and lapsed reservations (the server's clock moved
//! forward), every bad input a JSON 4xx, account deletion, the rate limits, the tunnel, and
//! two pods racing for one hash.

use std::time::Duration;

use reqwest::StatusCode;
use sealpost::client::ws::WsClient;
use sealpost::client::{Client, DeviceCredentials, random_username_hash};
use sealpost::config::Clock;
use sealpost::domain::encoding::{encode_base64, encode_url_base64};
use sealpost::limits::Limit;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, TestStores};

/// A server on fresh stores whose clock the test moves.
async fn start(backend: Backend) -> (TestApp, TestStores, Clock) {
    let stores = TestStores::new(backend).await;
    let clock = Clock::default();
    let mut config = stores.config();
    config.clock = clock.clone();
    (TestApp::start(config).await, stores, clock)
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    who: Option<&DeviceCredentials>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.http().request(method, app.client.url(path));
    if let Some(who) = who {
        request = request.header("Authorization", who.authorization());
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    let text = response.text().await.expect("a body");
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"))
    };
    (status, json)
}

/// Asserts a JSON error body with `status` as its code.
fn assert_error(got: (StatusCode, Value), status: u16, what: &str) {
    assert_eq!(got.0.as_u16(), status, "{what}: {:?}", got.1);
    assert_eq!(got.1["code"], status, "{what}: {:?}", got.1);
    assert!(got.1["message"].is_string(), "{what}: {:?}", got.1);
}

fn status(result: Result<impl Sized, sealpost::client::ClientError>) -> Option<u16> {
    result.err().and_then(|e| e.status()).map(|s| s.as_u16())
}

async fn a_confirmed_username_is_found_anonymously_and_shown_by_whoami(backend: Backend) {
    let (app, _stores, _clock) = start(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let (h1, h2) = (random_username_hash(), random_username_hash());

    let reserved = app
        .client
        .reserve_username_hash(&alice, &[h1, h2])
        .await
        .unwrap();
    assert_eq!(reserved, encode_url_base64(&h1));
    assert_eq!(
        status(app.client.reserve_username_hash(&bob, &[h1]).await),
        Some(409),
        "reserved by Alice"
    );
    assert_eq!(
        status(app.client.confirm_username_hash(&bob, &h1, None).await),
        Some(409),
        "Bob has no reservation"
    );
    let confirmed = app
        .client
        .confirm_username_hash(&alice, &h1, Some(&[7; 40]))
        .await
        .unwrap();
    assert_eq!(confirmed.username_hash, encode_url_base64(&h1));
    let handle = confirmed.username_link_handle.expect("a link handle");
    // Idempotent: the same answer again.
    let again = app
        .client
        .confirm_username_hash(&alice, &h1, Some(&[8; 40]))
        .await
        .unwrap();
    assert_eq!(again, confirmed);

    assert_eq!(
        app.client.lookup_username_hash(&h1).await.unwrap(),
        alice.aci
    );
    assert_eq!(
        status(app.client.lookup_username_hash(&h2).await),
        Some(404)
    );
    assert_eq!(
        app.client.lookup_username_link(handle).await.unwrap(),
        encode_url_base64(&[7; 40])
    );
    let whoami = send(
        &app,
        reqwest::Method::GET,
        "/v1/accounts/whoami",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(whoami.1["usernameHash"], encode_url_base64(&h1));
    assert_eq!(whoami.1["usernameLinkHandle"], handle.to_string());
    let whoami = send(
        &app,
        reqwest::Method::GET,
        "/v1/accounts/whoami",
        Some(&bob),
        None,
    )
    .await;
    assert!(whoami.1["usernameHash"].is_null() && whoami.1["usernameLinkHandle"].is_null());

    // Links: a new handle unless kept; gone when deleted.
    let kept = app
        .client
        .set_username_link(&alice, &[9; 10], true)
        .await
        .unwrap();
    assert_eq!(kept, handle);
    let fresh = app
        .client
        .set_username_link(&alice, &[10; 10], false)
        .await
        .unwrap();
    assert_ne!(fresh, handle);
    assert_eq!(
        status(app.client.lookup_username_link(handle).await),
        Some(404)
    );
    assert_eq!(
        status(app.client.set_username_link(&bob, &[1], false).await),
        Some(409),
        "Bob has no username"
    );
    let deleted = send(
        &app,
        reqwest::Method::DELETE,
        "/v1/accounts/username_link",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(deleted.0, StatusCode::NO_CONTENT);
    assert_eq!(
        status(app.client.lookup_username_link(fresh).await),
        Some(404)
    );
    assert_eq!(
        app.client.lookup_username_hash(&h1).await.unwrap(),
        alice.aci
    );
}

async fn every_bad_username_request_is_a_json_4xx(backend: Backend) {
    let (app, _stores, _clock) = start(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let put = reqwest::Method::PUT;
    let get = reqwest::Method::GET;
    let good = encode_url_base64(&random_username_hash());
    let reserve = "/v1/accounts/username_hash/reserve";
    let confirm = "/v1/accounts/username_hash/confirm";
    let cases: Vec<(&str, Value, u16)> = vec![
        ("no list", json!({}), 422),
        ("an empty list", json!({"usernameHashes": []}), 422),
        (
            "21 hashes",
            json!({"usernameHashes": vec![good.clone(); 21]}),
            422,
        ),
        (
            "31 bytes",
            json!({"usernameHashes": [encode_url_base64(&[1; 31])]}),
            422,
        ),
        (
            "33 bytes",
            json!({"usernameHashes": [encode_url_base64(&[1; 33])]}),
            422,
        ),
        (
            "the standard alphabet",
            json!({"usernameHashes": [encode_base64(&[0xfb; 32])]}),
            422,
        ),
        ("not base64", json!({"usernameHashes": ["!!"]}), 422),
        ("not a list", json!({"usernameHashes": 5}), 400),
    ];
    for (what, body, want) in cases {
        assert_error(
            send(&app, put.clone(), reserve, Some(&alice), Some(body)).await,
            want,
            what,
        );
    }

    let proof = encode_url_base64(&[1; 16]);
    let cases: Vec<(&str, Value, u16)> = vec![
        ("no proof", json!({"usernameHash": good}), 422),
        (
            "an empty proof",
            json!({"usernameHash": good, "zkProof": ""}),
            422,
        ),
        ("no hash", json!({"zkProof": proof}), 422),
        (
            "not a Ristretto point",
            json!({"usernameHash": encode_url_base64(&[0xff; 32]), "zkProof": proof}),
            422,
        ),
        (
            "a 129-byte username",
            json!({"usernameHash": good, "zkProof": proof,
                   "encryptedUsername": encode_url_base64(&[1; 129])}),
            422,
        ),
        (
            "an empty username",
            json!({"usernameHash": good, "zkProof": proof, "encryptedUsername": ""}),
            422,
        ),
        (
            "no reservation",
            json!({"usernameHash": good, "zkProof": proof}),
            409,
        ),
    ];
    for (what, body, want) in cases {
        assert_error(
            send(&app, put.clone(), confirm, Some(&alice), Some(body)).await,
            want,
            what,
        );
    }

    let link = "/v1/accounts/username_link";
    let cases: Vec<(&str, Value, u16)> = vec![
        ("no value", json!({"keepLinkHandle": true}), 422),
        (
            "an empty value",
            json!({"usernameLinkEncryptedValue": ""}),
            422,
        ),
        (
            "a 129-byte value",
            json!({"usernameLinkEncryptedValue": encode_url_base64(&[1; 129])}),
            422,
        ),
        (
            "no username",
            json!({"usernameLinkEncryptedValue": encode_url_base64(&[1; 8])}),
            409,
        ),
    ];
    for (what, body, want) in cases {
        assert_error(
            send(&app, put.clone(), link, Some(&alice), Some(body)).await,
            want,
            what,
        );
    }

    let lookups = [
        ("/v1/accounts/username_hash/abc", 422),
        (
            &*format!("/v1/accounts/username_hash/{}", encode_url_base64(&[1; 31])),
            422,
        ),
        ("/v1/accounts/username_hash/+++", 422),
        (&*format!("/v1/accounts/username_hash/{good}"), 404),
        ("/v1/accounts/username_link/not-a-uuid", 404),
        (
            &*format!("/v1/accounts/username_link/{}", uuid::Uuid::new_v4()),
            404,
        ),
    ];
    for (path, want) in lookups {
        assert_error(send(&app, get.clone(), path, None, None).await, want, path);
        // Authenticated callers are refused before anything else.
        assert_error(
            send(&app, get.clone(), path, Some(&alice), None).await,
            400,
            path,
        );
    }

    // Oversized and malformed bodies.
    let huge = json!({"usernameHashes": vec!["A".repeat(100); 100]});
    assert_error(
        send(&app, put.clone(), reserve, Some(&alice), Some(huge)).await,
        413,
        "huge",
    );
    let response = app
        .client
        .http()
        .put(app.client.url(reserve))
        .header("Authorization", alice.authorization())
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 400);
    assert_eq!(
        app.client.whoami(&alice).await.unwrap().username_hash,
        None,
        "nothing was stored"
    );
}

async fn a_lapsed_reservation_taken_by_another_is_gone_and_a_deleted_username_is_held(
    backend: Backend,
) {
    let (app, _stores, clock) = start(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let h = random_username_hash();
    app.client
        .reserve_username_hash(&alice, &[h])
        .await
        .unwrap();
    clock.advance(Duration::from_secs(5 * 60 + 1));
    app.client.reserve_username_hash(&bob, &[h]).await.unwrap();
    assert_eq!(
        status(app.client.confirm_username_hash(&alice, &h, None).await),
        Some(410)
    );
    app.client
        .confirm_username_hash(&bob, &h, None)
        .await
        .unwrap();

    // Bob deletes his username: nobody finds it, Alice cannot take it for 7 days.
    app.client.delete_username_hash(&bob).await.unwrap();
    assert_eq!(status(app.client.lookup_username_hash(&h).await), Some(404));
    assert_eq!(app.client.whoami(&bob).await.unwrap().username_hash, None);
    assert_eq!(
        status(app.client.reserve_username_hash(&alice, &[h]).await),
        Some(409)
    );
    clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    app.client
        .set_username_hash(&alice, &h, None)
        .await
        .unwrap();
    assert_eq!(
        app.client.lookup_username_hash(&h).await.unwrap(),
        alice.aci
    );
}

async fn a_deleted_account_releases_its_username_and_link(backend: Backend) {
    let (app, _stores, _clock) = start(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let h = random_username_hash();
    let handle = app
        .client
        .set_username_hash(&alice, &h, Some(&[3; 30]))
        .await
        .unwrap()
        .username_link_handle
        .unwrap();
    app.client.delete_account(&alice).await.unwrap();
    assert_eq!(status(app.client.lookup_username_hash(&h).await), Some(404));
    assert_eq!(
        status(app.client.lookup_username_link(handle).await),
        Some(404)
    );
    app.client.set_username_hash(&bob, &h, None).await.unwrap();
    assert_eq!(app.client.lookup_username_hash(&h).await.unwrap(), bob.aci);
}

/// The lookups take their permit per client address, the changes per account.
async fn username_requests_are_rate_limited(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config_with_limit(Limit::UsernameLookup, 1, 3_600_000.0);
    for limit in [
        Limit::UsernameReserve,
        Limit::UsernameSet,
        Limit::UsernameLinkOperation,
        Limit::UsernameLinkLookupPerIp,
    ] {
        config.rate_limits.specs.insert(
            limit,
            sealpost::limits::BucketSpec {
                bucket_size: 2,
                permit_period_ms: 3_600_000.0,
            },
        );
    }
    let app = TestApp::start(config).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let h = random_username_hash();
    assert_eq!(status(app.client.lookup_username_hash(&h).await), Some(404));
    assert_eq!(status(app.client.lookup_username_hash(&h).await), Some(429));
    app.client
        .reserve_username_hash(&alice, &[h])
        .await
        .unwrap();
    app.client
        .reserve_username_hash(&alice, &[h])
        .await
        .unwrap();
    assert_eq!(
        status(app.client.reserve_username_hash(&alice, &[h]).await),
        Some(429)
    );
    app.client
        .confirm_username_hash(&alice, &h, None)
        .await
        .unwrap();
    app.client.delete_username_hash(&alice).await.unwrap();
    assert_eq!(
        status(app.client.confirm_username_hash(&alice, &h, None).await),
        Some(429)
    );
    let handle = uuid::Uuid::new_v4();
    for _ in 0..2 {
        assert_eq!(
            status(app.client.lookup_username_link(handle).await),
            Some(404)
        );
    }
    assert_eq!(
        status(app.client.lookup_username_link(handle).await),
        Some(429)
    );
}

/// Through the tunnel: an anonymous socket looks up, an authenticated one is refused (400)
/// and confirms.
async fn the_tunnel_serves_the_same_username_endpoints(backend: Backend) {
    let (app, _stores, _clock) = start(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let h = random_username_hash();
    app.client
        .reserve_username_hash(&alice, &[h])
        .await
        .unwrap();
    let socket = WsClient::connect(&app.address, Some(&alice)).await.unwrap();
    let confirm = json!({"usernameHash": encode_url_base64(&h), "zkProof": "AQ"});
    let answer = socket
        .request_json(
            "PUT",
            "/v1/accounts/username_hash/confirm",
            &confirm,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let path = format!("/v1/accounts/username_hash/{}", encode_url_base64(&h));
    let refused = socket.request("GET", &path, None, vec![]).await.unwrap();
    assert_eq!(refused.status, 400);
    let anonymous = WsClient::connect(&app.address, None).await.unwrap();
    let found = anonymous.request("GET", &path, None, vec![]).await.unwrap();
    assert_eq!(found.status, 200);
    let json: Value = found.json().unwrap();
    assert_eq!(json["uuid"], alice.aci.to_string());
}

on_both_backends!(
    a_confirmed_username_is_found_anonymously_and_shown_by_whoami,
    every_bad_username_request_is_a_json_4xx,
    a_lapsed_reservation_taken_by_another_is_gone_and_a_deleted_username_is_held,
    a_deleted_account_releases_its_username_and_link,
    username_requests_are_rate_limited,
    the_tunnel_serves_the_same_username_endpoints,
);

/// Two pods on one database: accounts on each reserve the same hashes at once and each hash
/// goes to one; then two whose reservations of one hash both lapsed confirm it at once, one
/// on each pod: one 200, one 410.
#[tokio::test]
async fn two_pods_racing_for_a_hash_leave_it_to_exactly_one_account() {
    let stores = TestStores::new(Backend::External).await;
    let clock = Clock::default();
    let mut config = stores.config();
    config.clock = clock.clone();
    config.rate_limits.enabled = false;
    let pod_a = TestApp::start(config.clone()).await;
    let pod_b = TestApp::start(config).await;
    let pods: [&Client; 2] = [&pod_a.client, &pod_b.client];
    let mut accounts = Vec::new();
    for i in 0..8 {
        accounts.push(pods[i % 2].register_new().await.unwrap().0);
    }
    let contested = [random_username_hash(), random_username_hash()];
    let races = accounts
        .iter()
        .enumerate()
        .map(|(i, who)| pods[i % 2].reserve_username_hash(who, &contested));
    let results = futures_util::future::join_all(races).await;
    let mut won: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    won.sort();
    let mut expected: Vec<String> = contested.iter().map(|h| encode_url_base64(h)).collect();
    expected.sort();
    assert_eq!(won, expected, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.status() == Some(StatusCode::CONFLICT)),
        "{results:?}"
    );

    let (alice, bob) = (&accounts[0], &accounts[1]);
    let h = random_username_hash();
    pod_a
        .client
        .reserve_username_hash(alice, &[h])
        .await
        .unwrap();
    clock.advance(Duration::from_secs(5 * 60 + 1));
    pod_b.client.reserve_username_hash(bob, &[h]).await.unwrap();
    clock.advance(Duration::from_secs(5 * 60 + 1));
    let (a, b) = tokio::join!(
        pod_a.client.confirm_username_hash(alice, &h, None),
        pod_b.client.confirm_username_hash(bob, &h, None)
    );
    let mut statuses = [
        a.as_ref()
            .map_or_else(|e| e.status().unwrap().as_u16(), |_| 200),
        b.as_ref()
            .map_or_else(|e| e.status().unwrap().as_u16(), |_| 200),
    ];
    statuses.sort();
    assert_eq!(statuses, [200, 410], "{a:?} {b:?}");
    let owner = pod_b.client.lookup_username_hash(&h).await.unwrap();
    assert!(owner == alice.aci || owner == bob.aci);
    pod_a.stop().await;
    pod_b.stop().await;
}
