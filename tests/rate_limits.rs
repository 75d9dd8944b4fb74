//! Rate limits through the real server: `registration` and `authFailures` by client
//! address, 429 with `Retry-After`, shared by every server on the same Redis, and off
//! when configured so.

mod common;

use common::{Backend, TestApp, TestStores};
use reqwest::StatusCode;
use sealpost::client::{ClientError, basic_auth, random_password};
use sealpost::limits::{BucketSpec, Limit};

fn tight(stores: &TestStores, limit: Limit, bucket_size: u64) -> sealpost::config::Config {
    let mut config = stores.config();
    config.rate_limits.specs.insert(
        limit,
        BucketSpec {
            bucket_size,
            permit_period_ms: 60_000.0,
        },
    );
    config
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
    let url = app.client.url("/v1/accounts/whoami");
    let header = basic_auth(&uuid::Uuid::new_v4().to_string(), &random_password());
    let status_from = |addr: &'static str| {
        let request = app
            .client
            .http()
            .get(&url)
            .header("Authorization", &header)
            .header("X-Forwarded-For", format!("10.9.9.9, {addr}"));
        async move { request.send().await.unwrap().status() }
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
    let send = |addr: &'static str| {
        let request = app
            .client
            .http()
            .get(app.client.url("/v1/accounts/whoami"))
            .header("Authorization", &header)
            .header("X-Forwarded-For", addr);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(send("192.0.2.3").await, StatusCode::UNAUTHORIZED);
    assert_eq!(send("192.0.2.4").await, StatusCode::UNAUTHORIZED);
    assert_eq!(send("192.0.2.5").await, StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}

on_both_backends!(
    registration_is_limited_per_client_address,
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
