//! Delivery receipts: an acknowledged message from an identified sender makes a receipt
//! for every device of the sender, and neither a receipt, a sealed message nor a message
//! within one account makes one of its own.

use std::time::Duration;

use crate::common::Backend;
use sealpost::client::ws::WsClient;
use sealpost::domain::encoding::encode_base64;
use serde_json::json;

use super::message_helpers::{WAIT, app, body, connect, content, send_body};

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

on_both_backends!(
    receipts_go_to_every_device_of_an_identified_sender,
    sealed_messages_and_messages_within_an_account_make_no_receipt,
);
