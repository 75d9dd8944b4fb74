//! Resource limits through the real server and real sockets: the per-process socket
//! maximum (a JSON 503 with `Retry-After`, counted), a client that never reads (closed after
//! the write timeout, its messages kept for its next connection, nobody else held up), and a
//! storm of simultaneous upgrades (each served or cleanly refused). The per-socket cap of
//! unacknowledged deliveries and the body and frame limits are tested in `messages.rs`,
//! `accounts.rs` and `sealed_sender.rs`.

mod common;

use std::time::Duration;

use common::{Backend, TestApp, TestStores};
use futures_util::future::join_all;
use reqwest::StatusCode;
use sealpost::client::DeviceCredentials;
use sealpost::client::ws::{WsClient, WsError};
use sealpost::domain::encoding::encode_base64;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

async fn start(
    backend: Backend,
    configure: impl FnOnce(&mut sealpost::config::Config),
) -> (TestApp, TestStores) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.rate_limits.enabled = false;
    configure(&mut config);
    (TestApp::start(config).await, stores)
}

fn ws_url(app: &TestApp) -> String {
    format!("{}/v1/websocket/", app.address.replacen("http", "ws", 1))
}

async fn send(
    app: &TestApp,
    from: &DeviceCredentials,
    to: &DeviceCredentials,
    content: &[u8],
) -> StatusCode {
    app.client
        .http()
        .put(app.client.url(&format!("/v1/messages/{}", to.aci)))
        .header("Authorization", from.authorization())
        .json(&json!({
            "messages": [{"type": 1, "destinationDeviceId": 1, "content": encode_base64(content)}],
            "timestamp": 1,
        }))
        .send()
        .await
        .unwrap()
        .status()
}

async fn upgrades_past_the_socket_maximum_get_a_json_503_with_retry_after_and_are_counted(
    backend: Backend,
) {
    let (app, _stores) = start(backend, |c| c.max_websockets = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(WsClient::connect(&app.address, None).await.unwrap());
    }
    let refused = tokio_tungstenite::connect_async(ws_url(&app)).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("the fourth upgrade was not refused: {refused:?}");
    };
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body["code"], 503);
    assert_eq!(app.metric("sealpost_websocket_refusals_total").await, 1.0);

    // A closed socket frees its slot.
    let first = open.remove(0);
    first.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match WsClient::connect(&app.address, None).await {
            Ok(_) => break,
            Err(WsError::Refused(503)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("no slot came free: {e}"),
        }
    }
    app.stop().await;
}

async fn a_client_that_never_reads_is_closed_and_its_messages_wait_for_its_next_connection(
    backend: Backend,
) {
    let (app, _stores) = start(backend, |c| {
        c.websocket_write_timeout = Duration::from_secs(2);
    })
    .await;
    let (sender, _) = app.client.register_new().await.unwrap();
    let (slow, _) = app.client.register_new().await.unwrap();
    let (other, _) = app.client.register_new().await.unwrap();

    // A socket with a tiny receive buffer whose reader never reads.
    let address = app.address.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address).await.unwrap();
    let mut request = ws_url(&app).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", slow.authorization().parse().unwrap());
    let (never_read, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();

    // 64 deliveries of 90 KiB: far more than the socket buffers and the session's queue hold.
    let messages = 64;
    for i in 0..messages {
        let mut content = vec![0x5a; 90 * 1024];
        content[..4].copy_from_slice(&(i as u32).to_be_bytes());
        assert_eq!(send(&app, &sender, &slow, &content).await, StatusCode::OK);
    }

    // Meanwhile everyone else is served as usual.
    let mut other_ws = WsClient::connect(&app.address, Some(&other)).await.unwrap();
    assert!(other_ws.next_request(WAIT).await.unwrap().is_queue_empty());
    assert_eq!(send(&app, &sender, &other, b"hello").await, StatusCode::OK);
    let delivery = other_ws.next_request(WAIT).await.unwrap();
    assert_eq!(
        delivery.envelope().unwrap().content.unwrap().as_ref(),
        b"hello"
    );

    // The stalled socket is closed after the write timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.metric("sealpost_websocket_write_timeouts_total").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled socket was not closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open = "sealpost_websocket_open{kind=\"authenticated\"}";
    while app.metric(open).await > 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled socket's task did not end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(never_read);

    // Nothing was lost: its next connection gets every message.
    let mut ws = WsClient::connect(&app.address, Some(&slow)).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < messages {
        let request = ws
            .next_request(WAIT)
            .await
            .expect("every message is delivered");
        if let Some(envelope) = request.envelope() {
            let content = envelope.content.unwrap();
            seen.insert(u32::from_be_bytes(content[..4].try_into().unwrap()));
        }
        ws.respond(request.id, 200).await.unwrap();
    }
    assert_eq!(seen.len(), messages);
    app.stop().await;
}

async fn a_storm_of_2000_simultaneous_upgrades_is_served_or_cleanly_refused(backend: Backend) {
    let (app, _stores) = start(backend, |c| c.max_websockets = 1500).await;
    let outcomes = join_all((0..2000).map(|_| async {
        match WsClient::connect(&app.address, None).await {
            Ok(ws) => {
                // A socket that opened also works: one tunnelled request through it.
                let response = ws.request("GET", "/v1/accounts/whoami", None, vec![]).await;
                Ok((ws, response.map(|r| r.status)))
            }
            Err(e) => Err(e),
        }
    }))
    .await;
    let mut sockets = Vec::new();
    let mut refused = 0;
    for outcome in outcomes {
        match outcome {
            Ok((ws, Ok(401))) => sockets.push(ws),
            Ok((_, other)) => panic!("an open socket did not answer: {other:?}"),
            Err(WsError::Refused(503)) => refused += 1,
            Err(e) => panic!("an upgrade failed uncleanly: {e}"),
        }
    }
    assert_eq!((sockets.len(), refused), (1500, 500));
    assert_eq!(app.metric("sealpost_websocket_refusals_total").await, 500.0);
    for ws in &sockets {
        ws.close().await;
    }
    drop(sockets);
    // Once they are gone the process takes new sockets again.
    let deadline = tokio::time::Instant::now() + WAIT;
    while WsClient::connect(&app.address, None).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots were not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

on_both_backends!(
    upgrades_past_the_socket_maximum_get_a_json_503_with_retry_after_and_are_counted,
    a_client_that_never_reads_is_closed_and_its_messages_wait_for_its_next_connection,
    a_storm_of_2000_simultaneous_upgrades_is_served_or_cleanly_refused,
);
