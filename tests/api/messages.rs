//! Store-and-forward messaging with real WebSocket clients against the real server: live and
//! backlog delivery, acknowledgement and redelivery, the device check, the tunnel,
//! displacement, removal, receipts and limits. Every test runs embedded and on
//! Postgres+Redis; the cross-process tests run two server processes.

use std::time::Duration;

use crate::common::{Backend, TestApp, TestStores};
use reqwest::StatusCode;
use sealpost::client::ws::{ServerRequest, WsClient};
use sealpost::client::{DeviceCredentials, random_password};
use sealpost::domain::encoding::encode_base64;
use sealpost::domain::ids::Aci;
use sealpost::limits::Limit;
use sealpost::proto::textsecure::Envelope;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

async fn app(backend: Backend) -> (TestApp, TestStores) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    (app, stores)
}

fn body(contents: &[&str], timestamp: u64) -> Value {
    json!({
        "messages": contents.iter().map(|c| json!({
            "type": 1,
            "destinationDeviceId": 1,
            "destinationRegistrationId": 0,
            "content": encode_base64(c.as_bytes()),
        })).collect::<Vec<_>>(),
        "online": false,
        "urgent": true,
        "timestamp": timestamp,
    })
}

/// One message per call, each its own request.
async fn send(
    app: &TestApp,
    from: &DeviceCredentials,
    to: &Aci,
    content: &str,
) -> (StatusCode, Value) {
    send_body(app, from, to, body(&[content], 1_700_000_000_000)).await
}

async fn send_body(
    app: &TestApp,
    from: &DeviceCredentials,
    to: &Aci,
    body: Value,
) -> (StatusCode, Value) {
    let response = app
        .client
        .http()
        .put(app.client.url(&format!("/v1/messages/{to}")))
        .header("Authorization", from.authorization())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Connects and consumes the initial backlog, returning its deliveries (not acked).
async fn connect(app: &TestApp, who: &DeviceCredentials) -> (WsClient, Vec<ServerRequest>) {
    let mut ws = WsClient::connect(&app.address, Some(who)).await.unwrap();
    let mut backlog = Vec::new();
    loop {
        let request = ws
            .next_request(WAIT)
            .await
            .expect("the server sends queue/empty");
        if request.is_queue_empty() {
            ws.respond(request.id, 200).await.unwrap();
            return (ws, backlog);
        }
        backlog.push(request);
    }
}

fn content(request: &ServerRequest) -> String {
    String::from_utf8(request.envelope().unwrap().content.unwrap().to_vec()).unwrap()
}

/// A tunnelled request and its response over `ws`. The socket's one task reads client frames
/// in order and handles each (an acknowledgement, and the queue read it may trigger) before
/// it reads the next: when this returns, whatever the frames sent before it made the server
/// write to the socket has been written, and received ([`WsClient::received`]).
async fn round_trip(ws: &WsClient) {
    let keepalive = ws
        .request("GET", "/v1/keepalive", None, vec![])
        .await
        .unwrap();
    assert_eq!(keepalive.status, 200);
}

/// Proves that `ws` (the socket of `to`) was sent nothing since the last request it read:
/// a round trip (so the server has handled everything the client sent before), then a
/// marker message from `from`. The socket's task writes its requests in order and delivers
/// the queue in order, so anything due before the marker would come first: the marker must
/// be the very next request.
async fn assert_nothing_before_a_marker(
    app: &TestApp,
    ws: &mut WsClient,
    from: &DeviceCredentials,
    to: &Aci,
    what: &str,
) {
    round_trip(ws).await;
    assert_eq!(send(app, from, to, "marker").await.0, StatusCode::OK);
    let next = ws.next_request(WAIT).await.expect("the marker arrives");
    assert!(
        next.envelope().is_some(),
        "{what}: {} {} came before the marker",
        next.verb,
        next.path
    );
    assert_eq!(content(&next), "marker", "{what}");
}

async fn a_connected_device_gets_messages_live_with_every_envelope_field(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let (mut ws, backlog) = connect(&app, &bob).await;
    assert!(backlog.is_empty());

    let (status, answer) = send(&app, &alice, &bob.aci, "hello bob").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"needsSync": false}));

    let delivery = ws.next_request(WAIT).await.expect("a live delivery");
    assert_eq!(
        (delivery.verb.as_str(), delivery.path.as_str()),
        ("PUT", "/api/v1/message")
    );
    let envelope: Envelope = delivery.envelope().unwrap();
    assert_eq!(envelope.r#type, Some(1));
    assert_eq!(
        envelope.source_service_id.as_deref(),
        Some(&alice.aci.as_bytes()[..])
    );
    assert_eq!(envelope.source_device, Some(1));
    assert_eq!(
        envelope.destination_service_id.as_deref(),
        Some(&bob.aci.as_bytes()[..])
    );
    assert_eq!(envelope.content.as_deref(), Some(&b"hello bob"[..]));
    assert_eq!(envelope.client_timestamp, Some(1_700_000_000_000));
    assert!(envelope.server_timestamp.unwrap() > 1_700_000_000_000);
    assert_eq!(envelope.server_guid.as_ref().map(|g| g.len()), Some(16));
    assert_eq!(
        (envelope.urgent, envelope.ephemeral),
        (Some(true), Some(false))
    );
    ws.respond(delivery.id, 200).await.unwrap();
    assert_nothing_before_a_marker(
        &app,
        &mut ws,
        &alice,
        &bob.aci,
        "exactly one queue/empty, once",
    )
    .await;
    app.stop().await;
}

async fn an_offline_backlog_arrives_in_order_then_one_queue_empty_then_live(backend: Backend) {
    // More than one socket's worth of outstanding deliveries, faster than `messages` allows.
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.rate_limits.enabled = false;
    let app = TestApp::start(config).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    for i in 0..150 {
        assert_eq!(
            send(&app, &alice, &bob.aci, &format!("m{i}")).await.0,
            StatusCode::OK
        );
    }
    let mut ws = WsClient::connect(&app.address, Some(&bob)).await.unwrap();
    let mut received = Vec::new();
    loop {
        let request = ws
            .next_request(WAIT)
            .await
            .expect("deliveries then queue/empty");
        if request.is_queue_empty() {
            break;
        }
        received.push(content(&request));
        ws.respond(request.id, 200).await.unwrap();
    }
    let expected: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
    assert_eq!(received, expected);
    send(&app, &alice, &bob.aci, "live").await;
    let live = ws.next_request(WAIT).await.unwrap();
    assert_eq!(content(&live), "live");
    app.stop().await;
}

async fn unacknowledged_messages_come_again_on_the_next_connection(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    for i in 0..3 {
        send(&app, &alice, &bob.aci, &format!("m{i}")).await;
    }
    // Alice's socket hears of each acknowledgement: its receipt is queued only after the
    // acknowledged message was removed, so a receipt says that the removal is done.
    let (mut alice_ws, _) = connect(&app, &alice).await;
    let receipt = |request: Option<ServerRequest>| {
        let envelope = request.expect("a receipt").envelope().unwrap();
        assert_eq!(envelope.r#type, Some(5), "a delivery receipt");
    };
    let (ws, backlog) = connect(&app, &bob).await;
    assert_eq!(
        backlog.iter().map(content).collect::<Vec<_>>(),
        ["m0", "m1", "m2"]
    );
    ws.respond(backlog[0].id, 200).await.unwrap();
    // A non-2xx answer is not an acknowledgement either.
    ws.respond(backlog[1].id, 500).await.unwrap();
    receipt(alice_ws.next_request(WAIT).await);
    // The socket handled the 500 before this round trip's request.
    round_trip(&ws).await;
    ws.close().await;
    drop(ws);

    let (ws, backlog) = connect(&app, &bob).await;
    assert_eq!(
        backlog.iter().map(content).collect::<Vec<_>>(),
        ["m1", "m2"]
    );
    for request in &backlog {
        ws.respond(request.id, 200).await.unwrap();
    }
    receipt(alice_ws.next_request(WAIT).await);
    receipt(alice_ws.next_request(WAIT).await);
    drop(ws);
    let (_ws, backlog) = connect(&app, &bob).await;
    assert!(backlog.is_empty(), "acknowledged messages are gone");
    app.stop().await;
}

async fn the_device_check_answers_409_and_410_with_exact_bodies_and_queues_nothing(
    backend: Backend,
) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let registration_id = app
        .client
        .fetch_keys(sealpost::client::KeyAccess::Device(&alice), &bob.aci, "1")
        .await
        .unwrap()
        .devices[0]
        .registration_id;
    let message = |device: u32, registration: u32| json!({"type": 1, "destinationDeviceId": device, "destinationRegistrationId": registration, "content": "AQ=="});
    let cases = [
        (
            json!({"messages": [message(1, registration_id as u32), message(2, 7)]}),
            StatusCode::CONFLICT,
            json!({"missingDevices": [], "extraDevices": [2]}),
        ),
        (
            json!({"messages": []}),
            StatusCode::CONFLICT,
            json!({"missingDevices": [1], "extraDevices": []}),
        ),
        (
            json!({"messages": [message(3, 1)]}),
            StatusCode::CONFLICT,
            json!({"missingDevices": [1], "extraDevices": [3]}),
        ),
        (
            json!({"messages": [message(1, (registration_id as u32 % 16383) + 1)]}),
            StatusCode::GONE,
            json!({"staleDevices": [1]}),
        ),
    ];
    for (body, status, expected) in cases {
        let (got_status, got) = send_body(&app, &alice, &bob.aci, body).await;
        assert_eq!((got_status, got), (status, expected));
    }
    let (status, _) = send_body(
        &app,
        &alice,
        &bob.aci,
        json!({"messages": [message(1, registration_id as u32)]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_ws, backlog) = connect(&app, &bob).await;
    assert_eq!(backlog.len(), 1, "only the valid send was queued");
    app.stop().await;
}

async fn malformed_sends_get_clear_errors(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let one = |kind: i64, content: &str| json!({"messages": [{"type": kind, "destinationDeviceId": 1, "content": content}]});
    let big = encode_base64(&vec![7u8; 96 * 1024 + 1]);
    let cases = [
        (one(2, "AQ=="), StatusCode::BAD_REQUEST),
        (one(1, ""), StatusCode::BAD_REQUEST),
        (one(1, "%%%"), StatusCode::BAD_REQUEST),
        (one(1, &big), StatusCode::PAYLOAD_TOO_LARGE),
        (
            json!({"messages": [{"type": 1, "destinationDeviceId": 1, "content": "AQ=="}, {"type": 1, "destinationDeviceId": 1, "content": "AQ=="}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"messages": [{"type": 1, "destinationDeviceId": 0, "content": "AQ=="}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 99999, "content": "AQ=="}]}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"messages": "no"}), StatusCode::BAD_REQUEST),
    ];
    for (body, status) in cases {
        let (got, error) = send_body(&app, &alice, &bob.aci, body.clone()).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(error["code"], json!(status.as_u16()));
    }
    let (status, _) = send(&app, &alice, &Aci::random(), "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let anonymous = app
        .client
        .http()
        .put(app.client.url(&format!("/v1/messages/{}", bob.aci)))
        .json(&body(&["x"], 1))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let (_ws, backlog) = connect(&app, &bob).await;
    assert!(backlog.is_empty(), "nothing was queued by a refused send");
    app.stop().await;
}

async fn sealed_sends_need_the_access_key_and_carry_no_sender(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (bob, _) = crate::common::register_with(&app, Some([5u8; 16]), false).await;
    let sealed = |key: [u8; 16], to: Aci| {
        let request = app
            .client
            .http()
            .put(app.client.url(&format!("/v1/messages/{to}")))
            .header("Unidentified-Access-Key", encode_base64(&key))
            .json(&json!({"messages": [{"type": 6, "destinationDeviceId": 1, "content": "c2VhbGVk"}]}));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(sealed([5u8; 16], bob.aci).await, StatusCode::OK);
    assert_eq!(sealed([6u8; 16], bob.aci).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        sealed([5u8; 16], Aci::random()).await,
        StatusCode::UNAUTHORIZED
    );
    let (_ws, backlog) = connect(&app, &bob).await;
    assert_eq!(backlog.len(), 1);
    let envelope = backlog[0].envelope().unwrap();
    assert_eq!(envelope.r#type, Some(6));
    assert_eq!(envelope.source_service_id, None);
    assert_eq!(envelope.source_device, None);
    assert_eq!(envelope.content.as_deref(), Some(&b"sealed"[..]));
    assert_eq!(
        app.metric("sealpost_messages_sent_total{kind=\"sealed\",recipient=\"offline\"}")
            .await,
        1.0
    );
    app.stop().await;
}

async fn a_sync_message_leaves_out_the_sending_device(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (status, answer) = send(&app, &alice, &alice.aci, "note to self").await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::CONFLICT,
            json!({"missingDevices": [], "extraDevices": [1]})
        )
    );
    let (status, answer) = send_body(&app, &alice, &alice.aci, json!({"messages": []})).await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"needsSync": false}))
    );
    app.stop().await;
}

async fn a_second_socket_for_the_device_closes_the_first_with_4409(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let (mut first, _) = connect(&app, &bob).await;
    let (mut second, _) = connect(&app, &bob).await;
    assert_eq!(first.closed(WAIT).await, Some(4409));
    send(&app, &alice, &bob.aci, "to the new socket").await;
    let delivery = second.next_request(WAIT).await.unwrap();
    assert_eq!(content(&delivery), "to the new socket");
    assert_eq!(
        app.metric("sealpost_websocket_displacements_total").await,
        1.0
    );
    app.stop().await;
}

async fn the_tunnel_serves_every_endpoint_with_the_same_rules(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let (alice_ws, _) = connect(&app, &alice).await;
    let (mut bob_ws, _) = connect(&app, &bob).await;

    let response = alice_ws
        .request_json(
            "PUT",
            &format!("/v1/messages/{}", bob.aci),
            &body(&["via tunnel"], 5),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json::<Value>().unwrap(),
        json!({"needsSync": false})
    );
    assert!(response.header("x-signal-timestamp").is_some());
    let delivery = bob_ws.next_request(WAIT).await.unwrap();
    assert_eq!(content(&delivery), "via tunnel");

    let whoami = alice_ws
        .request("GET", "/v1/accounts/whoami", None, vec![])
        .await
        .unwrap();
    assert_eq!(
        whoami.json::<Value>().unwrap()["uuid"],
        json!(alice.aci.to_string())
    );
    // An Authorization header inside an authenticated tunnel changes nothing.
    let other = alice_ws
        .request(
            "GET",
            "/v1/accounts/whoami",
            None,
            vec![format!("Authorization:{}", bob.authorization())],
        )
        .await
        .unwrap();
    assert_eq!(
        other.json::<Value>().unwrap()["uuid"],
        json!(alice.aci.to_string())
    );
    let missing = alice_ws
        .request("GET", "/v1/nothing", None, vec![])
        .await
        .unwrap();
    assert_eq!(
        (
            missing.status,
            missing.json::<Value>().unwrap()["code"].clone()
        ),
        (404, json!(404))
    );
    let conflict = alice_ws
        .request_json(
            "PUT",
            &format!("/v1/messages/{}", bob.aci),
            &json!({"messages": []}),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(conflict.status, 409);
    assert_eq!(
        conflict.json::<Value>().unwrap(),
        json!({"missingDevices": [1], "extraDevices": []})
    );
    let keepalive = alice_ws
        .request("GET", "/v1/keepalive", None, vec![])
        .await
        .unwrap();
    assert_eq!(keepalive.status, 200);

    // An anonymous socket acts as nobody.
    let anonymous = WsClient::connect(&app.address, None).await.unwrap();
    let whoami = anonymous
        .request("GET", "/v1/accounts/whoami", None, vec![])
        .await
        .unwrap();
    assert_eq!(whoami.status, 401);
    let keepalive = anonymous
        .request("GET", "/v1/keepalive", None, vec![])
        .await
        .unwrap();
    assert_eq!(keepalive.status, 200);
    app.stop().await;
}

async fn receipts_go_to_every_device_of_an_identified_sender(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let (mut alice_ws, _) = connect(&app, &alice).await;
    let (mut bob_ws, _) = connect(&app, &bob).await;
    send_body(&app, &alice, &bob.aci, body(&["please confirm"], 4242)).await;
    let delivery = bob_ws.next_request(WAIT).await.unwrap();
    bob_ws.respond(delivery.id, 200).await.unwrap();

    let receipt = alice_ws
        .next_request(WAIT)
        .await
        .expect("a delivery receipt");
    let envelope = receipt.envelope().unwrap();
    assert_eq!(envelope.r#type, Some(5));
    assert_eq!(
        envelope.source_service_id.as_deref(),
        Some(&bob.aci.as_bytes()[..])
    );
    assert_eq!(envelope.source_device, Some(1));
    assert_eq!(envelope.client_timestamp, Some(4242));
    assert_eq!(envelope.content, None);
    assert_eq!(envelope.urgent, Some(false));
    alice_ws.respond(receipt.id, 200).await.unwrap();
    // Acknowledging a receipt makes no receipt of its own. Proof: Bob sends Alice a marker
    // and Alice acknowledges it. Her socket's acknowledgements are applied by one task, in
    // order (a later batch, or the same batch, whose receipts are queued in acknowledgement
    // order), so a receipt for the receipt would be queued to Bob before the marker's
    // receipt: that must be the next thing Bob gets.
    send_body(&app, &bob, &alice.aci, body(&["marker"], 4343)).await;
    let marker = alice_ws.next_request(WAIT).await.expect("the marker");
    assert_eq!(content(&marker), "marker");
    alice_ws.respond(marker.id, 200).await.unwrap();
    let next = bob_ws
        .next_request(WAIT)
        .await
        .expect("the marker's receipt");
    let envelope = next.envelope().unwrap();
    assert_eq!(
        (envelope.r#type, envelope.client_timestamp),
        (Some(5), Some(4343)),
        "the marker's receipt, and no receipt before it"
    );
    assert!(
        app.metric("sealpost_messages_delivery_latency_seconds_count")
            .await
            >= 2.0
    );
    app.stop().await;
}

async fn deleting_the_account_closes_its_sockets_with_4401(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    send(&app, &alice, &bob.aci, "left behind").await;
    let (mut ws, backlog) = connect(&app, &bob).await;
    assert_eq!(backlog.len(), 1);
    app.client.delete_account(&bob).await.unwrap();
    assert_eq!(ws.closed(WAIT).await, Some(4401));
    assert!(matches!(
        WsClient::connect(&app.address, Some(&bob)).await,
        Err(sealpost::client::ws::WsError::Refused(403))
    ));
    app.stop().await;
}

async fn bad_frames_and_bad_credentials_are_refused(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (bob, _) = app.client.register_new().await.unwrap();
    let mut wrong = bob.clone();
    wrong.password = random_password();
    assert!(matches!(
        WsClient::connect(&app.address, Some(&wrong)).await,
        Err(sealpost::client::ws::WsError::Refused(403))
    ));

    let (mut ws, _) = connect(&app, &bob).await;
    ws.send_raw(Message::Text("ignored".into())).await.unwrap();
    assert_eq!(
        ws.request("GET", "/v1/keepalive", None, vec![])
            .await
            .unwrap()
            .status,
        200
    );
    ws.send_raw(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .unwrap();
    assert_eq!(ws.closed(WAIT).await, Some(1007));

    let mut ws = WsClient::connect(&app.address, None).await.unwrap();
    ws.send_raw(Message::Binary(vec![0u8; 513 * 1024].into()))
        .await
        .unwrap();
    assert_eq!(ws.closed(WAIT).await, Some(1009));
    app.stop().await;
}

async fn online_messages_reach_connected_devices_only(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let mut ephemeral = body(&["typing..."], 1);
    ephemeral["online"] = json!(true);
    assert_eq!(
        send_body(&app, &alice, &bob.aci, ephemeral.clone()).await.0,
        StatusCode::OK
    );
    let (mut ws, backlog) = connect(&app, &bob).await;
    assert!(backlog.is_empty(), "not stored for an offline device");
    assert_eq!(
        send_body(&app, &alice, &bob.aci, ephemeral).await.0,
        StatusCode::OK
    );
    let delivery = ws.next_request(WAIT).await.unwrap();
    assert_eq!(delivery.envelope().unwrap().ephemeral, Some(true));
    app.stop().await;
}

async fn the_messages_limit_applies_per_sender_and_target(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let config = stores.config_with_limit(Limit::Messages, 2, 60_000.0);
    let app = TestApp::start(config).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let (carol, _) = app.client.register_new().await.unwrap();
    assert_eq!(send(&app, &alice, &bob.aci, "1").await.0, StatusCode::OK);
    assert_eq!(send(&app, &alice, &bob.aci, "2").await.0, StatusCode::OK);
    assert_eq!(
        send(&app, &alice, &bob.aci, "3").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&app, &alice, &carol.aci, "1").await.0, StatusCode::OK);
    app.stop().await;
}

/// A message over the frame bound closes the socket with 1009 (too big), not 1002, when it
/// arrives as fragments that are each small enough: on the authenticated, the anonymous and
/// the provisioning socket alike.
async fn a_message_over_the_bound_sent_in_fragments_closes_with_1009(backend: Backend) {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let (app, _stores) = app(backend).await;
    let (bob, _) = app.client.register_new().await.unwrap();
    let sockets = [
        connect(&app, &bob).await.0,
        WsClient::connect(&app.address, None).await.unwrap(),
        WsClient::connect_provisioning(&app.address).await.unwrap(),
    ];
    for (i, mut ws) in sockets.into_iter().enumerate() {
        // 3 fragments of 200 KiB: each under the 512 KiB bound, together over it.
        let fragments = [
            (OpCode::Data(Data::Binary), false),
            (OpCode::Data(Data::Continue), false),
            (OpCode::Data(Data::Continue), true),
        ];
        for (opcode, last) in fragments {
            let frame = Frame::message(vec![0u8; 200 * 1024], opcode, last);
            // The server may close before the last fragment is written.
            if ws.send_raw(Message::Frame(frame)).await.is_err() {
                break;
            }
        }
        assert_eq!(ws.closed(WAIT).await, Some(1009), "socket {i}");
    }
    // A fragmented message under the bound is taken whole (a text message: ignored), and the
    // socket goes on answering.
    let (ws, _) = connect(&app, &bob).await;
    for (opcode, last) in [
        (OpCode::Data(Data::Text), false),
        (OpCode::Data(Data::Continue), true),
    ] {
        let frame = Frame::message(vec![b'a'; 200 * 1024], opcode, last);
        ws.send_raw(Message::Frame(frame)).await.unwrap();
    }
    assert_eq!(
        ws.request("GET", "/v1/keepalive", None, vec![])
            .await
            .unwrap()
            .status,
        200
    );
    app.stop().await;
}

on_both_backends!(
    a_message_over_the_bound_sent_in_fragments_closes_with_1009,
    a_sender_with_several_devices_needs_sync,
    a_connected_device_gets_messages_live_with_every_envelope_field,
    an_offline_backlog_arrives_in_order_then_one_queue_empty_then_live,
    unacknowledged_messages_come_again_on_the_next_connection,
    the_device_check_answers_409_and_410_with_exact_bodies_and_queues_nothing,
    malformed_sends_get_clear_errors,
    sealed_sends_need_the_access_key_and_carry_no_sender,
    a_sync_message_leaves_out_the_sending_device,
    a_second_socket_for_the_device_closes_the_first_with_4409,
    the_tunnel_serves_every_endpoint_with_the_same_rules,
    receipts_go_to_every_device_of_an_identified_sender,
    deleting_the_account_closes_its_sockets_with_4401,
    bad_frames_and_bad_credentials_are_refused,
    online_messages_reach_connected_devices_only,
    the_messages_limit_applies_per_sender_and_target,
    a_socket_never_has_more_than_64_unacknowledged_deliveries,
    sealed_messages_and_messages_within_an_account_make_no_receipt,
    inbound_bytes_are_limited_per_target,
    inbound_bytes_charge_every_message_what_queueing_it_stores,
    a_full_queue_refuses_more_over_http_and_the_tunnel_and_loses_nothing,
    a_send_that_overfills_one_device_queues_nothing_for_the_others,
    a_client_that_sends_nothing_is_closed_after_the_idle_timeout,
);

/// Two server processes on the same Postgres and Redis: a message sent through one reaches
/// a socket held by the other live; a new socket on one process closes the device's socket
/// on the other with 4409; deleting the account through one closes sockets on the other
/// with 4401.
#[tokio::test]
async fn delivery_and_displacement_work_across_two_server_processes() {
    use crate::common::process::Server;
    let stores = TestStores::new(Backend::External).await;
    let env = stores.process_env();
    let a = Server::start(&env).await;
    let b = Server::start(&env).await;
    let (alice, _) = a.client.register_new().await.unwrap();
    let (bob, _) = a.client.register_new().await.unwrap();
    let b_address = b.client.url("");

    let mut on_b = WsClient::connect(&b_address, Some(&bob)).await.unwrap();
    assert!(on_b.next_request(WAIT).await.unwrap().is_queue_empty());
    let response = a
        .client
        .http()
        .put(a.client.url(&format!("/v1/messages/{}", bob.aci)))
        .header("Authorization", alice.authorization())
        .json(&body(&["across pods"], 9))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let delivery = on_b
        .next_request(WAIT)
        .await
        .expect("live delivery from the other process");
    assert_eq!(content(&delivery), "across pods");
    on_b.respond(delivery.id, 200).await.unwrap();

    let a_address = a.client.url("");
    let mut on_a = WsClient::connect(&a_address, Some(&bob)).await.unwrap();
    assert!(on_a.next_request(WAIT).await.unwrap().is_queue_empty());
    assert_eq!(
        on_b.closed(WAIT).await,
        Some(4409),
        "displaced from the other process"
    );

    b.client.delete_account(&bob).await.unwrap();
    assert_eq!(
        on_a.closed(WAIT).await,
        Some(4401),
        "removed through the other process"
    );
    a.terminate();
    b.terminate();
}

/// SIGTERM closes every socket with 1001 and the process still exits 0.
#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    use crate::common::process::Server;
    let server = Server::start(&[]).await;
    let (bob, _) = server.client.register_new().await.unwrap();
    let address = server.client.url("");
    let mut authenticated = WsClient::connect(&address, Some(&bob)).await.unwrap();
    assert!(
        authenticated
            .next_request(WAIT)
            .await
            .unwrap()
            .is_queue_empty()
    );
    let mut anonymous = WsClient::connect(&address, None).await.unwrap();
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(authenticated.closed(WAIT).await, Some(1001));
    assert_eq!(anonymous.closed(WAIT).await, Some(1001));
}

async fn a_socket_never_has_more_than_64_unacknowledged_deliveries(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.rate_limits.enabled = false;
    let app = TestApp::start(config).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    for i in 0..100 {
        send(&app, &alice, &bob.aci, &format!("m{i}")).await;
    }
    let mut ws = WsClient::connect(&app.address, Some(&bob)).await.unwrap();
    let max = sealpost::ws::connection::MAX_OUTSTANDING;
    let mut held = Vec::new();
    for _ in 0..max {
        let request = ws.next_request(WAIT).await.expect("a delivery");
        assert!(!request.is_queue_empty(), "the backlog is not drained yet");
        held.push(request);
    }
    // No more than these: the socket's first queue reads all happen before it reads a client
    // frame, so after a round trip anything more would already have been received. (A marker
    // message would prove nothing here: the window holds it back too.)
    round_trip(&ws).await;
    if let Some(more) = ws.received() {
        held.push(more);
    }
    assert_eq!(held.len(), max);
    // Acknowledgements open the window again in batches: nothing more until half of it is
    // free, then the next half, in order, and never more than the maximum outstanding.
    for request in &held[..max / 2 - 1] {
        ws.respond(request.id, 200).await.unwrap();
    }
    // The acknowledgements are handled, with any refill they trigger, before the round trip's
    // request is read.
    round_trip(&ws).await;
    assert!(ws.received().is_none(), "no refill yet");
    ws.respond(held[max / 2 - 1].id, 200).await.unwrap();
    for i in 0..max / 2 {
        let next = ws.next_request(WAIT).await.unwrap();
        assert_eq!(content(&next), format!("m{}", max + i));
    }
    // The refill that sent them ran before the round trip's request was read; no other
    // queue read sends anything while the window is full.
    round_trip(&ws).await;
    assert!(ws.received().is_none(), "still at most {max} outstanding");
    app.stop().await;
}

async fn sealed_messages_and_messages_within_an_account_make_no_receipt(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (bob, _) = crate::common::register_with(&app, None, true).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (mut alice_ws, _) = connect(&app, &alice).await;
    let (mut bob_ws, _) = connect(&app, &bob).await;
    let response = alice_ws
        .request_json(
            "PUT",
            &format!("/v1/messages/{}", bob.aci),
            &json!({"messages": [{"type": 6, "destinationDeviceId": 1, "content": "AQ=="}]}),
            vec![format!(
                "Unidentified-Access-Key:{}",
                encode_base64(&[0u8; 16])
            )],
        )
        .await
        .unwrap();
    // Both the socket's identity and an access key: refused, as over HTTP.
    assert_eq!(response.status, 400);
    let anonymous = WsClient::connect(&app.address, None).await.unwrap();
    let response = anonymous
        .request_json(
            "PUT",
            &format!("/v1/messages/{}", bob.aci),
            &json!({"messages": [{"type": 6, "destinationDeviceId": 1, "content": "AQ=="}]}),
            vec![format!(
                "Unidentified-Access-Key:{}",
                encode_base64(&[0u8; 16])
            )],
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let delivery = bob_ws.next_request(WAIT).await.unwrap();
    assert_eq!(delivery.envelope().unwrap().source_service_id, None);
    bob_ws.respond(delivery.id, 200).await.unwrap();
    // Proof that no receipt came of it: Alice sends Bob a marker, identified, and Bob
    // acknowledges it. Bob's acknowledgements are applied by one task, in order, so a
    // receipt for the sealed message would be queued to Alice before the marker's receipt,
    // which must be the next thing Alice gets.
    send_body(&app, &alice, &bob.aci, body(&["marker"], 4343)).await;
    let marker = bob_ws.next_request(WAIT).await.expect("the marker");
    assert_eq!(content(&marker), "marker");
    bob_ws.respond(marker.id, 200).await.unwrap();
    let next = alice_ws
        .next_request(WAIT)
        .await
        .expect("the marker's receipt");
    let envelope = next.envelope().unwrap();
    assert_eq!(
        (envelope.r#type, envelope.client_timestamp),
        (Some(5), Some(4343)),
        "no receipt for a sealed message"
    );
    // The counter moves just after the marker's receipt is queued: once it has, it counts
    // that one receipt and none for the sealed message.
    let receipts = "sealpost_messages_receipts_total";
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.metric(receipts).await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "{receipts} stays 0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.metric(receipts).await, 1.0);
    app.stop().await;
}

async fn inbound_bytes_are_limited_per_target(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let config = stores.config_with_limit(Limit::InboundMessageBytes, 1000, 60_000.0);
    let app = TestApp::start(config).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let (carol, _) = app.client.register_new().await.unwrap();
    let big = "x".repeat(600);
    assert_eq!(send(&app, &alice, &bob.aci, &big).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, &carol, &bob.aci, &big).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&app, &carol, &alice.aci, &big).await.0, StatusCode::OK);
    app.stop().await;
}

/// Each message is charged its content plus the per-message overhead, so a flood of 1-byte
/// messages runs out of budget as fast as what it stores would fill Redis.
async fn inbound_bytes_charge_every_message_what_queueing_it_stores(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let config = stores.config_with_limit(Limit::InboundMessageBytes, 1000, 600_000.0);
    let app = TestApp::start(config).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    // 257 bytes a message: three fit in 1000, the fourth does not, over HTTP or the tunnel.
    for content in ["1", "2", "3"] {
        assert_eq!(
            send(&app, &alice, &bob.aci, content).await.0,
            StatusCode::OK
        );
    }
    let (status, answer) = send(&app, &alice, &bob.aci, "4").await;
    assert_eq!(
        (status, answer["code"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!(429))
    );
    let (alice_ws, _) = connect(&app, &alice).await;
    let tunnelled = alice_ws
        .request_json(
            "PUT",
            &format!("/v1/messages/{}", bob.aci),
            &body(&["5"], 1),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(tunnelled.status, 429);
    assert!(tunnelled.header("retry-after").is_some());
    app.stop().await;
}

fn full_queue_body() -> Value {
    json!({"code": 429, "message": "the recipient's message queue is full"})
}

/// Past `queue_max_messages` a send gets a JSON 429 over HTTP and the tunnel alike, and
/// everything queued before is still delivered.
async fn a_full_queue_refuses_more_over_http_and_the_tunnel_and_loses_nothing(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.queue_max_messages = 2;
    let app = TestApp::start(config).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    for content in ["1", "2"] {
        assert_eq!(
            send(&app, &alice, &bob.aci, content).await.0,
            StatusCode::OK
        );
    }
    let response = app
        .client
        .http()
        .put(app.client.url(&format!("/v1/messages/{}", bob.aci)))
        .header("Authorization", alice.authorization())
        .json(&body(&["3"], 3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "60");
    assert_eq!(response.json::<Value>().await.unwrap(), full_queue_body());
    let (alice_ws, _) = connect(&app, &alice).await;
    let tunnelled = alice_ws
        .request_json(
            "PUT",
            &format!("/v1/messages/{}", bob.aci),
            &body(&["4"], 4),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(tunnelled.status, 429);
    assert_eq!(tunnelled.header("retry-after"), Some("60"));
    assert_eq!(tunnelled.json::<Value>().unwrap(), full_queue_body());
    let (_bob_ws, backlog) = connect(&app, &bob).await;
    assert_eq!(
        backlog.iter().map(content).collect::<Vec<_>>(),
        vec!["1", "2"]
    );
    app.stop().await;
}

/// One message for each of two devices, with its own content.
fn to_two_devices(first: &str, second: &str, timestamp: u64) -> Value {
    let message = |device: u32, content: &str| {
        json!({
            "type": 1,
            "destinationDeviceId": device,
            "destinationRegistrationId": 0,
            "content": encode_base64(content.as_bytes()),
        })
    };
    json!({
        "messages": [message(1, first), message(2, second)],
        "online": false,
        "urgent": true,
        "timestamp": timestamp,
    })
}

/// Past `queue_max_bytes` of one device a send to several is refused whole: the copy
/// already queued for the device with room is taken back out.
async fn a_send_that_overfills_one_device_queues_nothing_for_the_others(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    // A 1400-byte message (about 1480 stored, plus 256 overhead) fits; a second one beside it
    // does not, while a device holding only small ones has room.
    config.queue_max_bytes = 2000;
    let app = TestApp::start(config).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, bob_keys) = app.client.register_new().await.unwrap();
    let code = app.client.link_code(&bob).await.unwrap();
    let bob2 = app
        .client
        .link_device(
            &code.verification_code,
            &bob_keys,
            sealpost::client::default_attributes(),
        )
        .await
        .unwrap();
    let big = "b".repeat(1400);
    let (status, _) = send_body(&app, &alice, &bob.aci, to_two_devices(&big, "s1", 1)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = send_body(&app, &alice, &bob.aci, to_two_devices("t", "s2", 2)).await;
    assert_eq!(
        (status, answer),
        (StatusCode::TOO_MANY_REQUESTS, full_queue_body())
    );
    let (_bob2_ws, backlog) = connect(&app, &bob2).await;
    assert_eq!(backlog.iter().map(content).collect::<Vec<_>>(), vec!["s1"]);
    let (_bob_ws, backlog) = connect(&app, &bob).await;
    assert_eq!(backlog.iter().map(content).collect::<Vec<_>>(), vec![big]);
    app.stop().await;
}

async fn a_client_that_sends_nothing_is_closed_after_the_idle_timeout(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.websocket_idle_timeout = Duration::from_secs(1);
    let app = TestApp::start(config).await;
    let (bob, _) = app.client.register_new().await.unwrap();

    // A client that answers pings (this one does, as it reads) stays connected.
    let (mut lively, _) = connect(&app, &bob).await;
    assert_eq!(lively.closed(Duration::from_millis(2500)).await, None);

    // A socket that never answers a ping is closed with 1000. Hand-made handshake on a
    // plain TCP stream: a WebSocket library would answer the pings by itself.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut raw = tokio::net::TcpStream::connect(&host).await.unwrap();
    raw.write_all(
        format!(
            "GET /v1/websocket/ HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut received)).await;
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 101"));
    // An unmasked close frame with a two-byte payload: code 1000 (0x03e8).
    let close = received
        .windows(4)
        .any(|w| w == [0x88, 0x02, 0x03, 0xe8])
        .then_some(1000u16);
    assert_eq!(close, Some(1000));
    app.stop().await;
}

/// An identified sender with more than one device is told to sync, as soon as its second
/// device is linked (the account cache forgets the old device list on the write).
async fn a_sender_with_several_devices_needs_sync(backend: Backend) {
    let (app, _stores) = crate::common::spawn_app(backend).await;
    let (alice, alice_keys) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    assert_eq!(
        send(&app, &alice, &bob.aci, "one device").await.1,
        json!({"needsSync": false})
    );
    let code = app.client.link_code(&alice).await.unwrap();
    app.client
        .link_device(
            &code.verification_code,
            &alice_keys,
            sealpost::client::default_attributes(),
        )
        .await
        .unwrap();
    assert_eq!(
        send(&app, &alice, &bob.aci, "two devices").await.1,
        json!({"needsSync": true})
    );
    app.stop().await;
}
