//! The FCM sender against the local FCM (PROTOCOL.md 11.3, 11.5): data-only v1 messages,
//! one access token for many sends (and one token request under concurrency), how
//! Google's refusals are read, and that the stand-in's checks are real (a foreign key, an
//! access token it never issued).

use std::time::Duration;

use sealpost::domain::push::payloads::fcm_new_message;
use sealpost::push::fcm::{FcmSender, FcmSettings};
use sealpost::push::http::HttpOptions;
use sealpost::push::{Notification, Outcome, TokenSender};
use serde_json::{Value, json};

use crate::common::push::fcm::{FcmServer, rsa_key_pem};

const WAIT: Duration = Duration::from_secs(5);
const URGENT: Notification = Notification::NewMessage { urgent: true };
const NORMAL: Notification = Notification::NewMessage { urgent: false };

fn options(server: &FcmServer) -> HttpOptions {
    HttpOptions {
        extra_roots_pem: Some(server.ca_pem().into_bytes()),
        ..HttpOptions::default()
    }
}

fn sender(server: &FcmServer, settings: FcmSettings) -> FcmSender {
    FcmSender::new(settings, &options(server)).expect("a sender")
}

/// The server's settings with one field of the service-account JSON replaced.
fn with_credential(server: &FcmServer, field: &str, value: Value) -> FcmSettings {
    let mut settings = server.settings();
    let mut json: Value = serde_json::from_slice(&settings.credentials_json).unwrap();
    json[field] = value;
    settings.credentials_json = serde_json::to_vec(&json).unwrap();
    settings
}

#[tokio::test]
async fn urgent_and_normal_pushes_arrive_as_data_only_v1_messages() {
    let server = FcmServer::start().await;
    let fcm = sender(&server, server.settings());
    assert_eq!(fcm.send("token-one", URGENT).await, Outcome::Accepted);
    assert_eq!(fcm.send("token-two", NORMAL).await, Outcome::Accepted);

    let received = server.wait_for(2, WAIT).await;
    let (urgent, normal) = (&received[0], &received[1]);
    assert_eq!(urgent.token, "token-one");
    assert_eq!(urgent.body, fcm_new_message("token-one", true));
    assert_eq!(urgent.priority.as_deref(), Some("HIGH"));
    assert_eq!(urgent.ttl.as_deref(), Some("2419200s"));
    assert_eq!(
        serde_json::to_value(&urgent.data).unwrap(),
        json!({"newMessageAlert": ""})
    );
    assert_eq!(normal.token, "token-two");
    assert_eq!(normal.body, fcm_new_message("token-two", false));
    assert_eq!(normal.priority.as_deref(), Some("NORMAL"));
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test]
async fn one_access_token_serves_many_concurrent_sends() {
    let server = FcmServer::start().await;
    let fcm = sender(&server, server.settings());
    let sends = (0..10).map(|n| {
        let fcm = &fcm;
        async move { fcm.send(&format!("token-{n}"), URGENT).await }
    });
    for outcome in futures_util::future::join_all(sends).await {
        assert_eq!(outcome, Outcome::Accepted);
    }
    assert_eq!(server.wait_for(10, WAIT).await.len(), 10);
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test]
async fn a_refused_access_token_is_dropped_and_the_next_send_gets_another() {
    let server = FcmServer::start().await;
    let fcm = sender(&server, server.settings());
    assert_eq!(fcm.send("token-one", URGENT).await, Outcome::Accepted);
    server.revoke_access_tokens();
    assert!(matches!(
        fcm.send("token-one", URGENT).await,
        Outcome::Retry { .. }
    ));
    assert_eq!(fcm.send("token-one", URGENT).await, Outcome::Accepted);
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test]
async fn unregistered_tokens_are_reported_without_a_time() {
    let server = FcmServer::start().await;
    let fcm = sender(&server, server.settings());
    server.unregister("token-gone");
    assert_eq!(
        fcm.send("token-gone", URGENT).await,
        Outcome::Unregistered {
            invalidated_ms: None
        }
    );
    assert_eq!(fcm.send("token-kept", URGENT).await, Outcome::Accepted);
}

#[tokio::test]
async fn quota_and_outages_are_retried_with_googles_retry_after() {
    let server = FcmServer::start().await;
    let fcm = sender(&server, server.settings());
    server.fail_next(429, Some(7));
    assert_eq!(
        fcm.send("token-one", URGENT).await,
        Outcome::Retry {
            after: Some(Duration::from_secs(7)),
            reason: "fcm 429 QUOTA_EXCEEDED".into()
        }
    );
    for status in [500, 503] {
        server.fail_next(status, None);
        assert!(
            matches!(
                fcm.send("token-one", URGENT).await,
                Outcome::Retry { after: None, .. }
            ),
            "{status}"
        );
    }
    assert!(server.received().is_empty());
    assert_eq!(
        server.token_requests(),
        1,
        "the token outlives the refusals"
    );
}

#[tokio::test]
async fn invalid_arguments_and_other_notifications_fail() {
    let server = FcmServer::start().await;
    let fcm = sender(&server, server.settings());
    server.fail_next(400, None);
    assert_eq!(
        fcm.send("token-one", URGENT).await,
        Outcome::Failed("fcm 400 INVALID_ARGUMENT".into())
    );
    let activation = Notification::WebPushActivation(uuid::Uuid::new_v4());
    assert!(matches!(
        fcm.send("token-one", activation).await,
        Outcome::Failed(_)
    ));
    assert_eq!(server.requests(), 1, "the activation was never sent");
}

#[tokio::test]
async fn google_refuses_a_foreign_key_and_tokens_it_never_issued() {
    let server = FcmServer::start().await;
    let foreign = with_credential(&server, "private_key", json!(rsa_key_pem()));
    let outcome = sender(&server, foreign).send("token-one", URGENT).await;
    assert_eq!(
        outcome,
        Outcome::Failed("fcm token 400 invalid_grant".into())
    );
    let other_account = with_credential(&server, "client_email", json!("else@example.com"));
    assert!(matches!(
        sender(&server, other_account)
            .send("token-one", URGENT)
            .await,
        Outcome::Failed(_)
    ));
    assert_eq!(server.token_requests(), 2);
    assert_eq!(server.requests(), 0);

    let url = format!(
        "{}/v1/projects/{}/messages:send",
        server.url(),
        server.project_id
    );
    let client = sealpost::push::http::client(&options(&server))
        .unwrap()
        .build()
        .unwrap();
    let answer = client
        .post(url)
        .header("authorization", "Bearer ya29.made-up")
        .json(&fcm_new_message("token-one", true))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn credentials_that_cannot_work_are_refused_at_start() {
    let server = FcmServer::start().await;
    let cases = [
        with_credential(&server, "type", json!("authorized_user")),
        with_credential(&server, "private_key", json!("not a key")),
        with_credential(&server, "token_uri", json!("http://127.0.0.1:1/token")),
        FcmSettings {
            credentials_json: b"{not json".to_vec(),
            base_url: None,
        },
    ];
    for settings in cases {
        let error = FcmSender::new(settings, &options(&server))
            .err()
            .expect("refused");
        assert!(!format!("{error:#}").contains("PRIVATE KEY"), "{error:#}");
    }
}
