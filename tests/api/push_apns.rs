//! The APNs sender against the local APNs (PROTOCOL.md 11.3, 11.5): what a wake-up looks
//! like on the wire, one provider token for many pushes, how Apple's refusals are read, and
//! that the stand-in's checks are real (a foreign key, a foreign topic, HTTP/1.1 refused).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealpost::domain::push::payloads::APNS_EXPIRY_SECONDS;
use sealpost::push::apns::{ApnsSender, ApnsSettings};
use sealpost::push::http::HttpOptions;
use sealpost::push::{Notification, Outcome, TokenSender};
use serde_json::json;

use crate::common::push::apns::{ApnsServer, p8_key};

const WAIT: Duration = Duration::from_secs(5);
const URGENT: Notification = Notification::NewMessage { urgent: true };
const BACKGROUND: Notification = Notification::NewMessage { urgent: false };

fn options(server: &ApnsServer) -> HttpOptions {
    HttpOptions {
        extra_roots_pem: Some(server.ca_pem().into_bytes()),
        ..HttpOptions::default()
    }
}

fn sender(server: &ApnsServer, settings: ApnsSettings) -> ApnsSender {
    ApnsSender::new(settings, &options(server)).expect("a sender")
}

fn device_token(n: u8) -> String {
    hex(&[n; 32])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn urgent_and_background_pushes_arrive_with_apples_headers_and_payloads() {
    let server = ApnsServer::start().await;
    let apns = sender(&server, server.settings());
    assert_eq!(apns.send(&device_token(1), URGENT).await, Outcome::Accepted);
    assert_eq!(
        apns.send(&device_token(2), BACKGROUND).await,
        Outcome::Accepted
    );

    let received = server.wait_for(2, WAIT).await;
    let (urgent, background) = (&received[0], &received[1]);
    assert_eq!(urgent.token, device_token(1));
    assert_eq!(urgent.topic, server.bundle_id);
    assert_eq!((urgent.push_type.as_str(), urgent.priority), ("alert", 10));
    assert_eq!(urgent.collapse_id.as_deref(), Some("incoming-message"));
    assert_eq!(
        urgent.payload,
        json!({"aps": {"mutable-content": 1, "alert": {"loc-key": "APN_Message"}}})
    );
    let expiry = urgent.expiration.expect("an expiration") as i64;
    assert!((expiry - (now() + APNS_EXPIRY_SECONDS) as i64).abs() <= 5);

    assert_eq!(background.token, device_token(2));
    assert_eq!(background.topic, server.bundle_id);
    assert_eq!(
        (background.push_type.as_str(), background.priority),
        ("background", 5)
    );
    assert_eq!(background.collapse_id, None);
    assert_eq!(background.payload, json!({"aps": {"content-available": 1}}));
    assert!(background.expiration.is_some());
}

#[tokio::test]
async fn one_provider_token_serves_many_pushes() {
    let server = ApnsServer::start().await;
    let apns = sender(&server, server.settings());
    let sends = (0..8).map(|n| {
        let token = device_token(n);
        let apns = &apns;
        async move { apns.send(&token, URGENT).await }
    });
    for outcome in futures_util::future::join_all(sends).await {
        assert_eq!(outcome, Outcome::Accepted);
    }
    assert_eq!(server.wait_for(8, WAIT).await.len(), 8);
    assert_eq!(server.provider_tokens(), 1);
}

#[tokio::test]
async fn an_expired_provider_token_is_made_again_at_once() {
    let server = ApnsServer::start().await;
    let apns = sender(&server, server.settings());
    assert_eq!(apns.send(&device_token(1), URGENT).await, Outcome::Accepted);
    // ES256 signatures here are deterministic: a new token differs only by a later `iat`.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.fail_next(403, "ExpiredProviderToken");
    assert!(matches!(
        apns.send(&device_token(1), URGENT).await,
        Outcome::Retry { .. }
    ));
    assert_eq!(apns.send(&device_token(1), URGENT).await, Outcome::Accepted);
    assert_eq!(server.provider_tokens(), 2);
}

#[tokio::test]
async fn dead_tokens_are_unregistered_with_apples_invalidation_time() {
    let server = ApnsServer::start().await;
    let apns = sender(&server, server.settings());
    server.unregister(&device_token(1), 1_700_000_000_123);
    assert_eq!(
        apns.send(&device_token(1), URGENT).await,
        Outcome::Unregistered {
            invalidated_ms: Some(1_700_000_000_123)
        }
    );
    server.bad_token(&device_token(2));
    assert_eq!(
        apns.send(&device_token(2), BACKGROUND).await,
        Outcome::Unregistered {
            invalidated_ms: None
        }
    );
    server.fail_next(410, "ExpiredToken");
    assert_eq!(
        apns.send(&device_token(3), URGENT).await,
        Outcome::Unregistered {
            invalidated_ms: None
        }
    );
    // Apple itself refuses a token that is not hex; whatever a device registered cannot
    // leave the path it was put in.
    assert_eq!(
        apns.send("../../x?y", URGENT).await,
        Outcome::Unregistered {
            invalidated_ms: None
        }
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn throttling_and_outages_are_retried() {
    let server = ApnsServer::start().await;
    let apns = sender(&server, server.settings());
    for (status, reason) in [
        (429, "TooManyRequests"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
    ] {
        server.fail_next(status, reason);
        match apns.send(&device_token(1), URGENT).await {
            Outcome::Retry { reason: why, .. } => {
                assert_eq!(why, format!("apns {status} {reason}"));
            }
            other => panic!("{status}: {other:?}"),
        }
    }

    // Nothing listening: a connection failure is worth another try too.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut settings = server.settings();
    settings.base_url = Some(format!("https://127.0.0.1:{port}"));
    let outcome = sender(&server, settings)
        .send(&device_token(1), URGENT)
        .await;
    let Outcome::Retry { reason, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(reason.starts_with("apns connect"), "{reason}");
    // reqwest's own message names the URL, and the URL holds the device token.
    assert!(!reason.contains(&device_token(1)) && !reason.contains("127.0.0.1"));
}

#[tokio::test]
async fn other_refusals_fail_with_apples_reason_and_never_the_token() {
    let server = ApnsServer::start().await;
    let apns = sender(&server, server.settings());
    server.fail_next(400, "BadTopic");
    let outcome = apns.send(&device_token(7), URGENT).await;
    assert_eq!(outcome, Outcome::Failed("apns 400 BadTopic".into()));
    assert!(!format!("{outcome:?}").contains(&device_token(7)));

    let activation = Notification::WebPushActivation(uuid::Uuid::new_v4());
    let requests = server.requests();
    assert!(matches!(
        apns.send(&device_token(7), activation).await,
        Outcome::Failed(_)
    ));
    assert_eq!(server.requests(), requests, "nothing was sent");
}

#[tokio::test]
async fn apple_refuses_a_foreign_key_team_or_topic() {
    let server = ApnsServer::start().await;
    let mut foreign_key = server.settings();
    foreign_key.key_pem = p8_key().into_bytes();
    let mut foreign_team = server.settings();
    foreign_team.team_id = "ZZZZZZZZZZ".into();
    let mut foreign_topic = server.settings();
    foreign_topic.bundle_id = "org.example.other".into();
    for (settings, reason) in [
        (foreign_key, "InvalidProviderToken"),
        (foreign_team, "InvalidProviderToken"),
        (foreign_topic, "DeviceTokenNotForTopic"),
    ] {
        let outcome = sender(&server, settings)
            .send(&device_token(1), URGENT)
            .await;
        let Outcome::Failed(why) = outcome else {
            panic!("{reason}: {outcome:?}");
        };
        assert!(why.ends_with(reason), "{why}");
    }
    assert_eq!(server.requests(), 3);
    assert!(server.received().is_empty());
    assert_eq!(server.provider_tokens(), 1, "only the right team's token");
}

#[tokio::test]
async fn apple_speaks_only_http2() {
    let server = ApnsServer::start().await;
    let http1 = sealpost::push::http::client(&options(&server))
        .unwrap()
        .http1_only()
        .build()
        .unwrap();
    let url = format!("{}/3/device/{}", server.url(), device_token(1));
    assert!(http1.post(url).body("{}").send().await.is_err());
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_at_start() {
    let server = ApnsServer::start().await;
    let mut not_a_key = server.settings();
    not_a_key.key_pem = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec();
    let mut plain_http = server.settings();
    plain_http.base_url = Some("http://127.0.0.1:1".into());
    let mut no_team = server.settings();
    no_team.team_id = String::new();
    for settings in [not_a_key, plain_http, no_team] {
        let error = ApnsSender::new(settings, &options(&server))
            .err()
            .expect("refused");
        assert!(!format!("{error:#}").contains("BEGIN"), "{error:#}");
    }
}
