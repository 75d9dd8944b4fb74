//! The WebSocket itself, against the real server: a second socket displaces the first
//! (4409), the tunnel serves every endpoint with the same rules, deleting the account closes
//! its sockets (4401), bad frames and credentials are refused, an over-long fragmented
//! message closes with 1009, an idle client is closed after the idle timeout, and shutdown
//! closes every socket with 1001.

use std::time::Duration;

use crate::common::{Backend, TestApp, TestStores};
use sealpost::client::random_password;
use sealpost::client::ws::WsClient;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::message_helpers::{WAIT, app, body, connect, content, send};

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

on_both_backends!(
    a_message_over_the_bound_sent_in_fragments_closes_with_1009,
    a_second_socket_for_the_device_closes_the_first_with_4409,
    the_tunnel_serves_every_endpoint_with_the_same_rules,
    deleting_the_account_closes_its_sockets_with_4401,
    bad_frames_and_bad_credentials_are_refused,
    a_client_that_sends_nothing_is_closed_after_the_idle_timeout,
);

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
