//! What the message tests share: a server on fresh stores, send bodies and sends over
//! HTTP, a socket that has consumed its backlog, and the round trip and marker that prove
//! what a socket was (not) sent.

use std::time::Duration;

use crate::common::{Backend, TestApp, TestStores};
use reqwest::StatusCode;
use sealpost::client::DeviceCredentials;
use sealpost::client::ws::{ServerRequest, WsClient};
use sealpost::domain::encoding::encode_base64;
use sealpost::domain::ids::Aci;
use serde_json::{Value, json};

pub(super) const WAIT: Duration = Duration::from_secs(5);

pub(super) async fn app(backend: Backend) -> (TestApp, TestStores) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    (app, stores)
}

pub(super) fn body(contents: &[&str], timestamp: u64) -> Value {
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
pub(super) async fn send(
    app: &TestApp,
    from: &DeviceCredentials,
    to: &Aci,
    content: &str,
) -> (StatusCode, Value) {
    send_body(app, from, to, body(&[content], 1_700_000_000_000)).await
}

pub(super) async fn send_body(
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
pub(super) async fn connect(
    app: &TestApp,
    who: &DeviceCredentials,
) -> (WsClient, Vec<ServerRequest>) {
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

pub(super) fn content(request: &ServerRequest) -> String {
    String::from_utf8(request.envelope().unwrap().content.unwrap().to_vec()).unwrap()
}

/// A tunnelled request and its response over `ws`. The socket's one task reads client frames
/// in order and handles each (an acknowledgement, and the queue read it may trigger) before
/// it reads the next: when this returns, whatever the frames sent before it made the server
/// write to the socket has been written, and received ([`WsClient::received`]).
pub(super) async fn round_trip(ws: &WsClient) {
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
pub(super) async fn assert_nothing_before_a_marker(
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
