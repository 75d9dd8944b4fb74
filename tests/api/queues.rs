//! What a sender may queue and a socket may hold: at most 64 unacknowledged deliveries per
//! socket, the `messages` limit per sender and target, the inbound-bytes limit per target
//! (charging what queueing stores), and the queue caps (a JSON 429 over HTTP and the tunnel,
//! and a send to several devices refused whole when one of them is full).

use crate::common::{Backend, TestApp, TestStores};
use reqwest::StatusCode;
use sealpost::client::ws::WsClient;
use sealpost::domain::encoding::encode_base64;
use sealpost::limits::Limit;
use serde_json::{Value, json};

use super::message_helpers::{WAIT, body, connect, content, round_trip, send, send_body};

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

on_both_backends!(
    the_messages_limit_applies_per_sender_and_target,
    a_socket_never_has_more_than_64_unacknowledged_deliveries,
    inbound_bytes_are_limited_per_target,
    inbound_bytes_charge_every_message_what_queueing_it_stores,
    a_full_queue_refuses_more_over_http_and_the_tunnel_and_loses_nothing,
    a_send_that_overfills_one_device_queues_nothing_for_the_others,
);
