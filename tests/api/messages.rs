//! Store-and-forward messaging with real WebSocket clients against the real server: live
//! and backlog delivery, acknowledgement and redelivery, the device check, malformed and
//! sealed sends, sync messages, online-only messages, and delivery across two server
//! processes. Socket behaviour is in `websocket.rs`, receipts in `receipts.rs`, queue and
//! window bounds in `queues.rs`. Every test runs embedded and on Postgres+Redis; the
//! cross-process test runs two server processes.

use crate::common::{Backend, TestApp, TestStores};
use reqwest::StatusCode;
use sealpost::client::ws::{ServerRequest, WsClient};
use sealpost::domain::encoding::encode_base64;
use sealpost::domain::ids::Aci;
use sealpost::proto::textsecure::Envelope;
use serde_json::json;

use super::message_helpers::{
    WAIT, app, assert_nothing_before_a_marker, body, connect, content, round_trip, send, send_body,
};

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

on_both_backends!(
    a_sender_with_several_devices_needs_sync,
    a_connected_device_gets_messages_live_with_every_envelope_field,
    an_offline_backlog_arrives_in_order_then_one_queue_empty_then_live,
    unacknowledged_messages_come_again_on_the_next_connection,
    the_device_check_answers_409_and_410_with_exact_bodies_and_queues_nothing,
    malformed_sends_get_clear_errors,
    sealed_sends_need_the_access_key_and_carry_no_sender,
    a_sync_message_leaves_out_the_sending_device,
    online_messages_reach_connected_devices_only,
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
