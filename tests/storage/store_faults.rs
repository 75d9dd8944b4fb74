//! What the server does when Redis loses data under it (a machine crash under `appendfsync
//! everysec`, or a restart without persistence), simulated by deleting a queue's keys from
//! this test's own Redis prefix. Killing and restarting the stores themselves is
//! `scripts/faults`'s work, on private instances.

use std::time::Duration;

use crate::common::{Backend, TestApp, TestStores};
use sealpost::client::ws::WsClient;
use sealpost::domain::encoding::encode_base64;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_live_socket_still_gets_new_messages_after_redis_lost_its_queue() {
    let stores = TestStores::new(Backend::External).await;
    let app = TestApp::start(stores.config()).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let send = |content: &'static str| {
        let (app, alice, bob) = (&app, &alice, &bob);
        async move {
            let status = app
                .client
                .http()
                .put(app.client.url(&format!("/v1/messages/{}", bob.aci)))
                .header("Authorization", alice.authorization())
                .json(&json!({
                    "messages": [{"type": 1, "destinationDeviceId": 1, "content": encode_base64(content.as_bytes())}],
                    "timestamp": 1,
                }))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200);
        }
    };
    let mut ws = WsClient::connect(&app.address, Some(&bob)).await.unwrap();
    assert!(ws.next_request(WAIT).await.unwrap().is_queue_empty());
    for content in ["one", "two", "three"] {
        send(content).await;
        let delivery = ws.next_request(WAIT).await.unwrap();
        ws.respond(delivery.id, 200).await.unwrap();
    }

    // Redis comes back without bob's queue (and its position counter).
    let prefix = &stores.redis.as_ref().unwrap().prefix;
    let base = format!("{prefix}q:{{{}:1}}", bob.aci);
    let client = redis::Client::open(crate::common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("{base}:i"))
        .arg(format!("{base}:m"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        deleted >= 1,
        "the queue's keys are where the test expects them"
    );

    send("after the loss").await;
    let delivery = ws
        .next_request(WAIT)
        .await
        .expect("the live socket gets the new message");
    assert_eq!(
        delivery.envelope().unwrap().content.unwrap().as_ref(),
        b"after the loss"
    );
    app.stop().await;
}
