//! The WebPush sender against a local push service that checks VAPID and decrypts the
//! payload as real ones do (PROTOCOL.md 11.2, 11.8): what a wake-up carries and which
//! headers, the activation rule, how each answer is classified, the 429 back-off, no
//! redirects, the timeout, and no private addresses unless allowed.

use std::time::{Duration, Instant};

use sealpost::push::http::HttpOptions;
use sealpost::push::webpush::{VapidKey, WebPushSender};
use sealpost::push::{Notification, Outcome};
use serde_json::json;

use crate::common::push::webpush::WebPushServer;

const URGENT: Notification = Notification::NewMessage { urgent: true };

fn key() -> VapidKey {
    VapidKey::from_secret(&rand::random()).expect("a VAPID key")
}

fn options(server: &WebPushServer) -> HttpOptions {
    HttpOptions {
        extra_roots_pem: Some(server.ca_pem().into_bytes()),
        request_timeout: Some(Duration::from_secs(1)),
    }
}

fn sender_with(server: &WebPushServer, key: VapidKey, allow_private: bool) -> WebPushSender {
    WebPushSender::new(
        key,
        "mailto:ops@sealpost.test".into(),
        &options(server),
        allow_private,
    )
    .expect("a sender")
}

fn sender(server: &WebPushServer) -> WebPushSender {
    sender_with(server, key(), true)
}

#[tokio::test]
async fn a_new_message_push_is_accepted_and_decrypts_to_the_wake_up_alone() {
    let server = WebPushServer::start().await;
    let key = key();
    let public_key = key.public_key_base64url();
    let sender = sender_with(&server, key, true);
    let subscription = server.new_subscription();

    let outcome = sender.send(&subscription.registration(true), URGENT).await;

    assert_eq!(outcome, Outcome::Accepted);
    let received = server.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 1);
    let push = &received[0];
    assert_eq!(push.endpoint, subscription.endpoint);
    assert_eq!(
        push.plaintext,
        json!({"newMessageAlert": "", "urgency": "high"})
    );
    assert_eq!(push.ttl, 604800);
    assert_eq!(push.urgency.as_deref(), Some("high"));
    assert_eq!(push.topic.as_deref(), Some("newMessageAlert"));
    assert_eq!(push.vapid_key, public_key);
}

#[tokio::test]
async fn a_push_that_is_not_urgent_says_low_and_asks_for_normal_urgency() {
    let server = WebPushServer::start().await;
    let subscription = server.new_subscription();

    let outcome = sender(&server)
        .send(
            &subscription.registration(true),
            Notification::NewMessage { urgent: false },
        )
        .await;

    assert_eq!(outcome, Outcome::Accepted);
    let push = &server.received()[0];
    assert_eq!(
        push.plaintext,
        json!({"newMessageAlert": "", "urgency": "low"})
    );
    assert_eq!(push.urgency.as_deref(), Some("normal"));
    assert_eq!(push.topic.as_deref(), Some("newMessageAlert"));
}

#[tokio::test]
async fn the_activation_push_carries_its_token_for_an_hour() {
    let server = WebPushServer::start().await;
    let registration = server.new_subscription().registration(false);

    let outcome = sender(&server)
        .send(
            &registration,
            Notification::WebPushActivation(registration.activation),
        )
        .await;

    assert_eq!(outcome, Outcome::Accepted);
    let push = &server.received()[0];
    assert_eq!(
        push.plaintext,
        json!({"activationToken": registration.activation.to_string(), "urgency": "high"})
    );
    assert_eq!(push.ttl, 3600);
    assert_eq!(push.urgency.as_deref(), Some("high"));
    assert_eq!(push.topic, None);
}

#[tokio::test]
async fn an_inactive_subscription_gets_no_new_message_push_and_no_request() {
    let server = WebPushServer::start().await;
    let registration = server.new_subscription().registration(false);

    let outcome = sender(&server).send(&registration, URGENT).await;

    assert_eq!(
        outcome,
        Outcome::Failed("subscription not activated".into())
    );
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn gone_unknown_and_refused_subscriptions_are_unregistered() {
    let server = WebPushServer::start().await;
    let sender = sender(&server);
    for status in [410, 404, 401, 403] {
        let subscription = server.new_subscription();
        server.respond(&subscription.endpoint, status, None);
        let outcome = sender.send(&subscription.registration(true), URGENT).await;
        assert_eq!(
            outcome,
            Outcome::Unregistered {
                invalidated_ms: None
            },
            "{status}"
        );
    }
    assert_eq!(server.requests(), 4);
}

#[tokio::test]
async fn a_429_backs_off_that_push_service_for_its_retry_after() {
    let server = WebPushServer::start().await;
    let sender = sender(&server);
    let limited = server.new_subscription();
    server.respond(&limited.endpoint, 429, Some(120));

    let outcome = sender.send(&limited.registration(true), URGENT).await;
    assert_eq!(
        outcome,
        Outcome::Retry {
            after: Some(Duration::from_secs(120)),
            reason: "push service rate-limited (429)".into()
        }
    );
    // Another subscription on the same service waits too, without a request.
    let other = server.new_subscription();
    let outcome = sender.send(&other.registration(true), URGENT).await;
    let Outcome::Retry {
        after: Some(after), ..
    } = outcome
    else {
        panic!("expected a retry, got {outcome:?}");
    };
    assert!(after <= Duration::from_secs(120) && after > Duration::from_secs(110));
    assert_eq!(server.requests(), 1);
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_five_minutes() {
    let server = WebPushServer::start().await;
    let subscription = server.new_subscription();
    server.respond(&subscription.endpoint, 429, None);

    let outcome = sender(&server)
        .send(&subscription.registration(true), URGENT)
        .await;

    assert!(
        matches!(outcome, Outcome::Retry { after: Some(after), .. } if after == Duration::from_secs(300)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_server_error_is_retried_and_the_service_is_contacted_again() {
    let server = WebPushServer::start().await;
    let sender = sender(&server);
    let subscription = server.new_subscription();
    server.respond(&subscription.endpoint, 500, None);

    let outcome = sender.send(&subscription.registration(true), URGENT).await;
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");

    let outcome = sender
        .send(&server.new_subscription().registration(true), URGENT)
        .await;
    assert_eq!(outcome, Outcome::Accepted);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let server = WebPushServer::start().await;
    let subscription = server.new_subscription();
    server.respond(&subscription.endpoint, 307, None);

    let outcome = sender(&server)
        .send(&subscription.registration(true), URGENT)
        .await;

    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn an_endpoint_that_never_answers_is_given_up_on_at_the_timeout() {
    let server = WebPushServer::start().await;
    let subscription = server.new_subscription();
    server.hang(&subscription.endpoint);
    let sender = sender(&server);

    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        sender.send(&subscription.registration(true), URGENT),
    )
    .await
    .expect("the sender gives up by itself");

    assert_eq!(
        outcome,
        Outcome::Retry {
            after: None,
            reason: "push request timed out".into()
        }
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn private_endpoints_get_no_request_unless_allowed() {
    let server = WebPushServer::start().await;
    let sender = sender_with(&server, key(), false);
    let subscription = server.new_subscription();

    let by_address = sender.send(&subscription.registration(true), URGENT).await;
    assert_eq!(
        by_address,
        Outcome::Failed("endpoint address is not public".into())
    );
    let by_name = subscription.with_host("localhost").registration(true);
    assert_eq!(
        sender.send(&by_name, URGENT).await,
        Outcome::Failed("endpoint resolves to no public address".into())
    );
    assert_eq!(server.requests(), 0);

    // The same service by name, allowed: the name resolves and the push arrives.
    let allowed = sender_with(&server, key(), true);
    let outcome = allowed
        .send(
            &subscription.with_host("localhost").registration(true),
            URGENT,
        )
        .await;
    assert_eq!(outcome, Outcome::Accepted);
}

/// The stand-in is only proof if it refuses what a real push service refuses.
#[tokio::test]
async fn the_push_service_refuses_what_a_real_one_refuses() {
    use web_push_native::jwt_simple::algorithms::{
        ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair,
    };
    use web_push_native::jwt_simple::claims::Claims;

    let server = WebPushServer::start().await;
    let subscription = server.new_subscription();
    let origin = subscription
        .endpoint
        .split("/push/")
        .next()
        .unwrap()
        .to_owned();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let signer = ES256KeyPair::generate();
    let k = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signer.public_key().public_key().to_bytes_uncompressed())
    };
    let vapid = |aud: &str, valid: u64, sub: &str| {
        let claims = Claims::create(Duration::from_secs(valid).into())
            .with_audience(aud)
            .with_subject(sub);
        format!("vapid t={},k={k}", signer.sign(claims).unwrap())
    };
    let post = |endpoint: &str, authorization: Option<String>, encoding: &str, body: &[u8]| {
        let mut request = client
            .post(endpoint)
            .header("TTL", "60")
            .header("Content-Encoding", encoding)
            .body(body.to_vec());
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let endpoint = subscription.endpoint.as_str();
    let good = || Some(vapid(&origin, 900, "mailto:ops@sealpost.test"));
    let other_key = {
        let other = ES256KeyPair::generate();
        let claims = Claims::create(Duration::from_secs(900).into()).with_audience(&origin);
        Some(format!("vapid t={},k={k}", other.sign(claims).unwrap()))
    };
    let cases = [
        (
            "no VAPID",
            post(endpoint, None, "aes128gcm", b"x").await,
            401,
        ),
        (
            "signed by another key",
            post(endpoint, other_key, "aes128gcm", b"x").await,
            401,
        ),
        (
            "another audience",
            post(
                endpoint,
                Some(vapid("https://push.example", 900, "mailto:a@b")),
                "aes128gcm",
                b"x",
            )
            .await,
            403,
        ),
        (
            "valid for more than a day",
            post(
                endpoint,
                Some(vapid(&origin, 25 * 3600, "mailto:a@b")),
                "aes128gcm",
                b"x",
            )
            .await,
            403,
        ),
        (
            "no contact",
            post(
                endpoint,
                Some(vapid(&origin, 900, "ops")),
                "aes128gcm",
                b"x",
            )
            .await,
            403,
        ),
        (
            "not aes128gcm",
            post(endpoint, good(), "aesgcm", b"x").await,
            400,
        ),
        (
            "a body that does not decrypt",
            post(endpoint, good(), "aes128gcm", &[0; 100]).await,
            400,
        ),
        (
            "an unknown subscription",
            post(&format!("{origin}/push/unknown"), good(), "aes128gcm", b"x").await,
            404,
        ),
    ];
    for (what, status, expected) in cases {
        assert_eq!(status, expected, "{what}");
    }
    assert!(server.received().is_empty());
    assert_eq!(server.requests(), 8);
}

#[test]
fn a_vapid_key_comes_from_a_secret_the_same_way_every_time_or_from_a_pem() {
    let secret: [u8; 32] = rand::random();
    let a = VapidKey::from_secret(&secret).unwrap();
    let b = VapidKey::from_secret(&secret).unwrap();
    assert_eq!(a.public_key_base64url(), b.public_key_base64url());
    assert_ne!(
        a.public_key_base64url(),
        key().public_key_base64url(),
        "another secret, another key"
    );

    let dir = std::env::temp_dir().join(format!("sealpost-vapid-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_key = p256::SecretKey::from_bytes(&secret.into()).unwrap();
    let pkcs8 = {
        use p256::pkcs8::EncodePrivateKey;
        secret_key
            .to_pkcs8_pem(Default::default())
            .unwrap()
            .to_string()
    };
    let sec1 = secret_key.to_sec1_pem(Default::default()).unwrap();
    let scalar = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    };
    for (name, text) in [
        ("pkcs8.pem", pkcs8.as_str()),
        ("sec1.pem", sec1.as_str()),
        ("scalar.txt", scalar.as_str()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, format!("{text}\n")).unwrap();
        let from_file = VapidKey::from_file(&path).unwrap();
        assert_eq!(
            from_file.public_key_base64url(),
            a.public_key_base64url(),
            "{name}"
        );
    }
    std::fs::write(dir.join("junk"), "not a key").unwrap();
    assert!(VapidKey::from_file(&dir.join("junk")).is_err());
    assert!(VapidKey::from_file(&dir.join("missing")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
