//! Rate limits through the real server: `registration` and `authFailures` by client
//! address, 429 with `Retry-After`, shared by every server on the same Redis, and off
//! when configured so.

use crate::common::{Backend, TestApp, TestStores};
use reqwest::StatusCode;
use sealpost::client::{ClientError, basic_auth, random_password};
use sealpost::limits::Limit;

fn tight(stores: &TestStores, limit: Limit, bucket_size: u64) -> sealpost::config::Config {
    stores.config_with_limit(limit, bucket_size, 60_000.0)
}

/// The status of `GET /v1/accounts/whoami` with `authorization`, and `X-Forwarded-For` if
/// given.
async fn whoami_status(app: &TestApp, authorization: &str, forwarded: Option<&str>) -> StatusCode {
    let mut request = app
        .client
        .http()
        .get(app.client.url("/v1/accounts/whoami"))
        .header("Authorization", authorization);
    if let Some(forwarded) = forwarded {
        request = request.header("X-Forwarded-For", forwarded);
    }
    request.send().await.unwrap().status()
}

fn retry_after(err: &ClientError) -> u64 {
    match err {
        ClientError::Status {
            status,
            retry_after,
            body,
        } => {
            assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(body.as_ref().map(|b| b.code), Some(429));
            retry_after
                .as_deref()
                .expect("Retry-After is set")
                .parse()
                .expect("Retry-After is whole seconds")
        }
        other => panic!("expected a 429, got {other}"),
    }
}

async fn registration_is_limited_per_client_address(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(tight(&stores, Limit::Registration, 2)).await;
    app.client.register_new().await.unwrap();
    app.client.register_new().await.unwrap();
    let err = app
        .client
        .register_new()
        .await
        .err()
        .expect("the third is refused");
    let wait = retry_after(&err);
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        app.metric("sealpost_ratelimit_hits_total{limit=\"registration\"}")
            .await,
        1.0
    );
    app.stop().await;
}

async fn repeated_authentication_failures_get_429_before_any_more_argon2(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(tight(&stores, Limit::AuthFailures, 3)).await;
    let (credentials, _) = app.client.register_new().await.unwrap();
    let mut wrong = credentials.clone();
    wrong.password = random_password();
    // Each failure takes a permit; the bucket allows three.
    for _ in 0..3 {
        let err = app.client.whoami(&wrong).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    }
    let err = app.client.whoami(&wrong).await.unwrap_err();
    retry_after(&err);
    let verifications = app
        .metric("sealpost_auth_password_verifications_total")
        .await;
    let err = app.client.whoami(&wrong).await.unwrap_err();
    retry_after(&err);
    assert_eq!(
        app.metric("sealpost_auth_password_verifications_total")
            .await,
        verifications,
        "an exhausted client costs no argon2"
    );
    app.stop().await;
}

async fn switching_rate_limits_off_lets_everything_through(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = tight(&stores, Limit::Registration, 1);
    config.rate_limits.enabled = false;
    let app = TestApp::start(config).await;
    for _ in 0..4 {
        app.client.register_new().await.unwrap();
    }
    app.stop().await;
}

async fn forwarded_addresses_are_separate_buckets_only_when_trusted(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = tight(&stores, Limit::AuthFailures, 1);
    config.trust_forwarded_for = true;
    let app = TestApp::start(config).await;
    let header = basic_auth(&uuid::Uuid::new_v4().to_string(), &random_password());
    let status_from = |addr: &'static str| {
        let forwarded = format!("10.9.9.9, {addr}");
        let (app, header) = (&app, &header);
        async move { whoami_status(app, header, Some(&forwarded)).await }
    };
    assert_eq!(status_from("192.0.2.1").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_from("192.0.2.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(status_from("192.0.2.2").await, StatusCode::UNAUTHORIZED);
    app.stop().await;

    // Untrusted: the header is ignored and every request is the TCP peer's.
    let mut config = tight(&stores, Limit::AuthFailures, 2);
    config.trust_forwarded_for = false;
    let app = TestApp::start(config).await;
    let send = |addr: &'static str| whoami_status(&app, &header, Some(addr));
    assert_eq!(send("192.0.2.3").await, StatusCode::UNAUTHORIZED);
    assert_eq!(send("192.0.2.4").await, StatusCode::UNAUTHORIZED);
    assert_eq!(send("192.0.2.5").await, StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}

/// Only the last `X-Forwarded-For` hop (the one the operator's proxy appended) names the
/// client: a hop with a port counts as its address, and an unparsable last hop (`unknown`,
/// garbage) falls back to the TCP peer. An earlier hop, which the client wrote itself, never
/// counts: rotating it does not make a new bucket.
async fn only_the_last_forwarded_hop_counts_even_when_it_does_not_parse(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = tight(&stores, Limit::AuthFailures, 1);
    config.trust_forwarded_for = true;
    let app = TestApp::start(config).await;
    let header = basic_auth(&uuid::Uuid::new_v4().to_string(), &random_password());
    let status_with = |forwarded: String| {
        let (app, header) = (&app, &header);
        async move { whoami_status(app, header, Some(&forwarded)).await }
    };

    // `ip:port` is its address: the port does not make a new bucket.
    assert_eq!(
        status_with("198.51.100.1, 192.0.2.10:4711".into()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with("198.51.100.2, 192.0.2.10:4712".into()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        status_with("[2001:db8::7]:443".into()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with("2001:db8::7".into()).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // An unparsable last hop is the TCP peer's request, whatever the client wrote before it:
    // the spoofed earlier hop changes nothing.
    assert_eq!(
        status_with("203.0.113.1, unknown".into()).await,
        StatusCode::UNAUTHORIZED
    );
    for spoofed in 2..6 {
        for last in ["unknown", "not-an-address", "192.0.2.300"] {
            assert_eq!(
                status_with(format!("203.0.113.{spoofed}, {last}")).await,
                StatusCode::TOO_MANY_REQUESTS,
                "spoofed hop 203.0.113.{spoofed} before {last:?}"
            );
        }
    }
    // Without the header at all, the peer's bucket is the same one.
    assert_eq!(
        whoami_status(&app, &header, None).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.stop().await;
}

on_both_backends!(
    registration_is_limited_per_client_address,
    only_the_last_forwarded_hop_counts_even_when_it_does_not_parse,
    repeated_authentication_failures_get_429_before_any_more_argon2,
    switching_rate_limits_off_lets_everything_through,
    forwarded_addresses_are_separate_buckets_only_when_trusted,
);

#[tokio::test]
async fn two_servers_on_one_redis_share_the_registration_bucket() {
    let stores = TestStores::new(Backend::External).await;
    let a = TestApp::start(tight(&stores, Limit::Registration, 2)).await;
    let b = TestApp::start(tight(&stores, Limit::Registration, 2)).await;
    a.client.register_new().await.unwrap();
    b.client.register_new().await.unwrap();
    let err = a
        .client
        .register_new()
        .await
        .err()
        .expect("the bucket is shared");
    retry_after(&err);
    let err = b
        .client
        .register_new()
        .await
        .err()
        .expect("the bucket is shared");
    retry_after(&err);
    a.stop().await;
    b.stop().await;
}

/// Rate-limit buckets keyed by a client address name it only by a keyed hash: nothing in
/// Redis holds the address, in any form, and two pods on the same stores agree on the hash
/// (the key is a server secret in Postgres), so their buckets stay shared.
#[tokio::test]
async fn no_redis_key_names_a_client_address() {
    let stores = TestStores::new(Backend::External).await;
    let mut config = tight(&stores, Limit::AuthFailures, 1);
    config.trust_forwarded_for = true;
    let a = TestApp::start(config.clone()).await;
    let b = TestApp::start(config).await;
    let header = basic_auth(&uuid::Uuid::new_v4().to_string(), &random_password());
    let whoami = |app| whoami_status(app, &header, Some("192.0.2.199"));
    assert_eq!(whoami(&a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        whoami(&b).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the other pod hashes the address to the same bucket"
    );
    // And the registration bucket of the TCP peer.
    a.client.register_new().await.unwrap();

    let keys = stores.redis.as_ref().unwrap().keys();
    let prefix = &stores.redis.as_ref().unwrap().prefix;
    let buckets: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with(&format!("{prefix}rl:")))
        .collect();
    assert!(buckets.len() >= 2, "the buckets exist: {keys:?}");
    let mut conn = redis::Client::open(crate::common::redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    for key in &keys {
        for address in ["192.0.2.199", "127.0.0.1", "::1", "c000:2c7", "c00002c7"] {
            assert!(!key.contains(address), "{key} names {address}");
        }
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut conn).unwrap();
        let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut conn).unwrap();
        let dump = String::from_utf8_lossy(&dump);
        assert!(
            !dump.contains("192.0.2.199") && !dump.contains("127.0.0.1"),
            "{key} ({kind}) holds an address"
        );
    }
    a.stop().await;
    b.stop().await;
}
