//! Wake-ups end to end through the real server (PROTOCOL.md 11.4, 11.5, 11.8), against the
//! local push services of `common::push`: a device with a registration and no socket gets
//! exactly one push per urgent message and none while a socket is open (on one pod and
//! across two); a push a minute after a socket closed with messages queued; background
//! pushes coalesced to one per 20 minutes (the server's clock moved forward, not slept
//! through); nothing for ephemeral messages; a token the provider no longer knows is
//! cleared; a hanging push service delays no send; the daily idle reminder.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sealpost::client::DeviceCredentials;
use sealpost::client::ws::WsClient;
use sealpost::config::{Clock, Config};
use sealpost::domain::encoding::encode_base64;
use sealpost::domain::ids::Aci;
use serde_json::{Value, json};

use super::message_helpers::{WAIT, connect, send_body};
use crate::common::push::webpush::{TestSubscription, WebPushServer};
use crate::common::{Backend, TestApp, TestStores, register_with};

/// How long a test waits to be sure a push did not come (the worker looks every second).
pub(super) const QUIET: Duration = Duration::from_millis(2500);

/// A file removed when dropped (a CA bundle or a credential the server reads at start).
pub(super) struct TempFile(pub(super) PathBuf);

impl TempFile {
    pub(super) fn new(contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("sealpost-push-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A server whose clock the test moves, trusting the local push services' CAs.
pub(super) struct Setup {
    pub(super) stores: TestStores,
    pub(super) clock: Clock,
    pub(super) webpush: WebPushServer,
    pub(super) files: Vec<TempFile>,
}

impl Setup {
    pub(super) async fn new(backend: Backend) -> Self {
        let webpush = WebPushServer::start().await;
        let ca = TempFile::new(webpush.ca_pem().as_bytes());
        Self {
            stores: TestStores::new(backend).await,
            clock: Clock::default(),
            webpush,
            files: vec![ca],
        }
    }

    pub(super) fn config(&self) -> Config {
        let mut config = self.stores.config();
        config.rate_limits.enabled = false;
        config.webpush_allow_private = true;
        config.push.ca_file = Some(self.files[0].0.clone());
        config.clock = self.clock.clone();
        config
    }

    pub(super) async fn app(&self) -> TestApp {
        TestApp::start(self.config()).await
    }
}

pub(super) fn message(urgent: bool, online: bool) -> Value {
    json!({
        "messages": [{
            "type": 1,
            "destinationDeviceId": 1,
            "destinationRegistrationId": 0,
            "content": encode_base64(b"wake up"),
        }],
        "online": online,
        "urgent": urgent,
        "timestamp": 1_700_000_000_000u64,
    })
}

pub(super) async fn send(
    app: &TestApp,
    from: &DeviceCredentials,
    to: &Aci,
    urgent: bool,
    online: bool,
) {
    let (status, body) = send_body(app, from, to, message(urgent, online)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

pub(super) async fn put(app: &TestApp, who: &DeviceCredentials, path: &str, body: Value) -> u16 {
    app.client
        .http()
        .put(app.client.url(path))
        .header("Authorization", who.authorization())
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Subscribes `who` and activates the subscription with the token its activation push
/// carried, as a UnifiedPush client does.
pub(super) async fn subscribe(
    setup: &Setup,
    app: &TestApp,
    who: &DeviceCredentials,
) -> TestSubscription {
    let subscription = setup.webpush.new_subscription();
    let before = setup.webpush.received().len();
    let body = json!({
        "endpoint": subscription.endpoint,
        "publicKey": subscription.public_key,
        "auth": subscription.auth,
    });
    assert_eq!(put(app, who, "/v1/accounts/webpush/", body).await, 204);
    let received = setup.webpush.wait_for(before + 1, WAIT).await;
    let activation = &received[before];
    assert_eq!(activation.endpoint, subscription.endpoint);
    assert_eq!(activation.ttl, 3600);
    let token = activation.plaintext["activationToken"]
        .as_str()
        .expect("the activation push carries its token")
        .to_owned();
    assert_eq!(
        activation.plaintext,
        json!({"activationToken": token, "urgency": "high"})
    );
    let body = json!({ "activationToken": token });
    assert_eq!(
        put(app, who, "/v1/accounts/webpush/activate/", body).await,
        204
    );
    subscription
}

/// The pushes `endpoint` got so far.
pub(super) fn pushes_to(setup: &Setup, endpoint: &str) -> Vec<Value> {
    setup
        .webpush
        .received()
        .into_iter()
        .filter(|r| r.endpoint == endpoint && r.plaintext.get("newMessageAlert").is_some())
        .map(|r| r.plaintext)
        .collect()
}

pub(super) async fn wait_for_pushes(setup: &Setup, endpoint: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let pushes = pushes_to(setup, endpoint);
        if pushes.len() >= n {
            return pushes;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} pushes arrived",
            pushes.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads deliveries until `n` came, acknowledging each.
pub(super) async fn receive_and_ack(ws: &mut WsClient, n: usize) {
    let mut got = 0;
    while got < n {
        let request = ws.next_request(WAIT).await.expect("a delivery");
        ws.respond(request.id, 200).await.unwrap();
        if request.envelope().is_some() {
            got += 1;
        }
    }
}

async fn one_push_per_urgent_message_and_none_while_connected(backend: Backend) {
    let setup = Setup::new(backend).await;
    let app = setup.app().await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = register_with(&app, Some([2; 16]), false).await;
    let bobs = subscribe(&setup, &app, &bob).await;

    for _ in 0..3 {
        send(&app, &alice, &bob.aci, true, false).await;
    }
    let pushes = wait_for_pushes(&setup, &bobs.endpoint, 3).await;
    assert!(
        pushes
            .iter()
            .all(|p| *p == json!({"newMessageAlert": "", "urgency": "high"})),
        "content-free urgent wake-ups: {pushes:?}"
    );
    let urgent = setup.webpush.received();
    let last = urgent.last().unwrap();
    assert_eq!(last.urgency.as_deref(), Some("high"));
    assert_eq!(last.topic.as_deref(), Some("newMessageAlert"));
    assert_eq!(last.ttl, 604_800);

    // Online: the socket drains, and no push goes out for what it is sent.
    let (mut ws, backlog) = connect(&app, &bob).await;
    for request in backlog {
        ws.respond(request.id, 200).await.unwrap();
    }
    for _ in 0..3 {
        send(&app, &alice, &bob.aci, true, false).await;
    }
    receive_and_ack(&mut ws, 3).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        pushes_to(&setup, &bobs.endpoint).len(),
        3,
        "none while connected"
    );
    assert_eq!(
        app.metric(r#"sealpost_push_sent_total{kind="urgent",provider="webpush"}"#)
            .await,
        3.0
    );
    ws.close().await;
    app.stop().await;
}

async fn ephemeral_messages_wake_nobody(backend: Backend) {
    let setup = Setup::new(backend).await;
    let app = setup.app().await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = register_with(&app, Some([2; 16]), false).await;
    let bobs = subscribe(&setup, &app, &bob).await;
    send(&app, &alice, &bob.aci, true, true).await;
    tokio::time::sleep(QUIET).await;
    assert!(pushes_to(&setup, &bobs.endpoint).is_empty());
    app.stop().await;
}

async fn background_pushes_are_coalesced_to_one_per_twenty_minutes(backend: Backend) {
    let setup = Setup::new(backend).await;
    let app = setup.app().await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = register_with(&app, Some([2; 16]), false).await;
    let bobs = subscribe(&setup, &app, &bob).await;

    for _ in 0..3 {
        send(&app, &alice, &bob.aci, false, false).await;
    }
    let pushes = wait_for_pushes(&setup, &bobs.endpoint, 1).await;
    assert_eq!(pushes[0], json!({"newMessageAlert": "", "urgency": "low"}));
    tokio::time::sleep(QUIET).await;
    assert_eq!(pushes_to(&setup, &bobs.endpoint).len(), 1, "coalesced");
    assert_eq!(
        setup.webpush.received().last().unwrap().urgency.as_deref(),
        Some("normal")
    );

    // More within the 20 minutes: scheduled for their end, not sent.
    send(&app, &alice, &bob.aci, false, false).await;
    setup.clock.advance(Duration::from_secs(19 * 60));
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        pushes_to(&setup, &bobs.endpoint).len(),
        1,
        "not before 20 minutes"
    );
    setup.clock.advance(Duration::from_secs(61));
    wait_for_pushes(&setup, &bobs.endpoint, 2).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(pushes_to(&setup, &bobs.endpoint).len(), 2);
    app.stop().await;
}

async fn a_socket_closed_with_messages_queued_gets_a_push_a_minute_later(backend: Backend) {
    let setup = Setup::new(backend).await;
    let app = setup.app().await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = register_with(&app, Some([2; 16]), false).await;
    let bobs = subscribe(&setup, &app, &bob).await;

    // Delivered while connected, never acknowledged: still queued when the socket closes.
    let (mut ws, _) = connect(&app, &bob).await;
    send(&app, &alice, &bob.aci, true, false).await;
    let delivery = ws.next_request(WAIT).await.expect("a delivery");
    assert!(delivery.envelope().is_some());
    ws.close().await;
    tokio::time::sleep(QUIET).await;
    assert!(pushes_to(&setup, &bobs.endpoint).is_empty(), "not at once");
    setup.clock.advance(Duration::from_secs(61));
    let pushes = wait_for_pushes(&setup, &bobs.endpoint, 1).await;
    assert_eq!(pushes[0], json!({"newMessageAlert": "", "urgency": "high"}));

    // Reconnecting and draining within the minute cancels it.
    let (ws, backlog) = connect(&app, &bob).await;
    assert_eq!(backlog.len(), 1);
    drop(backlog);
    let scheduled = r#"sealpost_push_scheduled_total{kind="delayed"}"#;
    let before = app.metric(scheduled).await;
    ws.close().await;
    // The close schedules the next wake-up in its own task: wait for it, so that the drain
    // below has a schedule to cancel.
    let deadline = Instant::now() + WAIT;
    while app.metric(scheduled).await <= before {
        assert!(Instant::now() < deadline, "the close schedules a wake-up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ws, backlog) = connect(&app, &bob).await;
    for request in backlog {
        ws.respond(request.id, 200).await.unwrap();
    }
    super::message_helpers::round_trip(&ws).await;
    setup.clock.advance(Duration::from_secs(61));
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        pushes_to(&setup, &bobs.endpoint).len(),
        1,
        "cancelled by draining"
    );
    assert!(
        app.metric("sealpost_push_cancelled_total").await >= 1.0,
        "counted"
    );
    ws.close().await;
    app.stop().await;
}

async fn a_gone_subscription_is_cleared(backend: Backend) {
    let setup = Setup::new(backend).await;
    let app = setup.app().await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = register_with(&app, Some([2; 16]), false).await;
    let bobs = subscribe(&setup, &app, &bob).await;
    setup.webpush.respond(&bobs.endpoint, 410, None);
    send(&app, &alice, &bob.aci, true, false).await;
    let deadline = Instant::now() + WAIT;
    while app
        .stores
        .push
        .push(bob.aci, bob.device)
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the subscription is cleared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.metric(r#"sealpost_push_unregistered_total{provider="webpush"}"#)
            .await,
        1.0
    );
    app.stop().await;
}

async fn a_hanging_push_service_delays_no_send(backend: Backend) {
    let setup = Setup::new(backend).await;
    let app = setup.app().await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = register_with(&app, Some([2; 16]), false).await;
    let bobs = subscribe(&setup, &app, &bob).await;
    setup.webpush.hang(&bobs.endpoint);
    let started = Instant::now();
    for _ in 0..5 {
        send(&app, &alice, &bob.aci, true, false).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "five sends took {:?}",
        started.elapsed()
    );
    app.stop().await;
}

/// Two pods on one Postgres and Redis: a socket on one is seen by a send through the other
/// (no push), and once it is gone the other pod pushes.
#[tokio::test]
async fn across_two_pods_a_socket_on_either_one_keeps_pushes_away() {
    let setup = Setup::new(Backend::External).await;
    let (one, two) = (setup.app().await, setup.app().await);
    let (alice, _) = register_with(&one, Some([1; 16]), false).await;
    let (bob, _) = register_with(&one, Some([2; 16]), false).await;
    let bobs = subscribe(&setup, &one, &bob).await;

    let (mut ws, _) = connect(&one, &bob).await;
    send(&two, &alice, &bob.aci, true, false).await;
    receive_and_ack(&mut ws, 1).await;
    super::message_helpers::round_trip(&ws).await;
    ws.close().await;
    tokio::time::sleep(QUIET).await;
    assert!(
        pushes_to(&setup, &bobs.endpoint).is_empty(),
        "online on pod one"
    );

    send(&two, &alice, &bob.aci, true, false).await;
    wait_for_pushes(&setup, &bobs.endpoint, 1).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        pushes_to(&setup, &bobs.endpoint).len(),
        1,
        "exactly one, from either pod"
    );
    one.stop().await;
    two.stop().await;
}

/// The daily job (11.8): a device with a registration, idle for 5 days with mail queued,
/// gets one urgent push once the server's day has its 14:00.
async fn idle_devices_with_mail_get_a_daily_reminder(backend: Backend) {
    let setup = Setup::new(backend).await;
    let app = setup.app().await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = register_with(&app, Some([2; 16]), false).await;
    let bobs = subscribe(&setup, &app, &bob).await;
    send(&app, &alice, &bob.aci, false, false).await;
    wait_for_pushes(&setup, &bobs.endpoint, 1).await;

    // Five days on, then to the next 15:00 of the server's zone.
    setup.clock.advance(Duration::from_secs(5 * 24 * 3600));
    let hour = local_hour(setup.clock.now_ms());
    let hours = (15 + 24 - hour) % 24;
    setup
        .clock
        .advance(Duration::from_secs(hours as u64 * 3600));
    let pushes = wait_for_pushes(&setup, &bobs.endpoint, 2).await;
    assert_eq!(pushes[1], json!({"newMessageAlert": "", "urgency": "high"}));
    assert!(
        app.metric(r#"sealpost_push_scheduled_total{kind="idle"}"#)
            .await
            >= 1.0
    );
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        pushes_to(&setup, &bobs.endpoint).len(),
        2,
        "one reminder a day"
    );
    app.stop().await;
}

on_both_backends!(
    one_push_per_urgent_message_and_none_while_connected,
    ephemeral_messages_wake_nobody,
    background_pushes_are_coalesced_to_one_per_twenty_minutes,
    a_socket_closed_with_messages_queued_gets_a_push_a_minute_later,
    a_gone_subscription_is_cleared,
    a_hanging_push_service_delays_no_send,
    idle_devices_with_mail_get_a_daily_reminder,
);

/// The hour of `ms` in the server's time zone, as `date` tells it.
fn local_hour(ms: i64) -> u32 {
    let output = std::process::Command::new("date")
        .arg("-d")
        .arg(format!("@{}", ms / 1000))
        .arg("+%H")
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("an hour")
}
