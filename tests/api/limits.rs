//! Socket and connection caps through the real server and real sockets: the per-process
//! socket maximum (a JSON 503 with `Retry-After`, counted), a storm of simultaneous upgrades
//! (each served or cleanly refused), and per-client-address caps on sockets and connections
//! (429 for that address, others served). Request and write timeouts are in `timeouts.rs`;
//! the per-socket cap of unacknowledged deliveries and the body and frame limits are tested
//! in `queues.rs`, `websocket.rs`, `accounts.rs` and `sealed_sender/multi_recipient.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{Backend, TestApp, TestStores};
use futures_util::future::join_all;
use sealpost::client::ws::{WsClient, WsError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub(super) const WAIT: Duration = Duration::from_secs(10);

pub(super) async fn start(
    backend: Backend,
    configure: impl FnOnce(&mut sealpost::config::Config),
) -> (TestApp, TestStores) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.rate_limits.enabled = false;
    configure(&mut config);
    (TestApp::start(config).await, stores)
}

pub(super) fn ws_url(app: &TestApp) -> String {
    format!("{}/v1/websocket/", app.address.replacen("http", "ws", 1))
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

/// One storm at a time: each holds 2,000 client sockets and up to 1,500 server sides
/// (about 3,500 descriptors) in the process that runs every `tests/api/` test, so the two
/// backends' storms at once would take twice that from everyone's open-file limit.
static ONE_STORM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn a_storm_of_2000_simultaneous_upgrades_is_served_or_cleanly_refused(backend: Backend) {
    let _one_storm = ONE_STORM.lock().await;
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

pub(super) fn api_addr(app: &TestApp) -> SocketAddr {
    app.address.trim_start_matches("http://").parse().unwrap()
}

/// A raw connection to the public listener from `local` (any 127.0.0.0/8 address is this
/// machine: a second "client address" for the per-address caps).
pub(super) async fn connect_from(app: &TestApp, local: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(api_addr(app)).await.unwrap()
}

/// Everything the server sends until it closes the connection, or `None` if it has not
/// closed it within `limit`. A reset after the answer counts as closed.
pub(super) async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

/// The status code and JSON body of a raw HTTP/1.1 response.
pub(super) fn parse_response(raw: &str) -> (u16, Value) {
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn an_address_past_its_socket_cap_gets_a_json_429_while_another_address_connects(
    backend: Backend,
) {
    let (app, _stores) = start(backend, |c| c.max_websockets_per_client = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(WsClient::connect(&app.address, None).await.unwrap());
    }
    let refused = tokio_tungstenite::connect_async(ws_url(&app)).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("the fourth socket of one address was not refused: {refused:?}");
    };
    assert_eq!(response.status().as_u16(), 429);
    let body: Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body["code"], 429);
    assert_eq!(
        app.metric("sealpost_client_limit_refusals_total{limit=\"websockets\"}")
            .await,
        1.0
    );
    assert_eq!(app.metric("sealpost_websocket_refusals_total").await, 0.0);

    // Another address is not held up by the first one's cap.
    let stream = connect_from(&app, "127.0.0.2").await;
    let request = ws_url(&app).into_client_request().unwrap();
    tokio_tungstenite::client_async(request, stream)
        .await
        .expect("another address opens a socket");

    // A closed socket gives its address's place back.
    open.remove(0).close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match WsClient::connect(&app.address, None).await {
            Ok(_) => break,
            Err(WsError::Refused(429)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("no place came free: {e}"),
        }
    }
    app.stop().await;
}

async fn a_connection_past_its_addresses_cap_gets_a_json_429_and_is_closed_while_others_are_served(
    backend: Backend,
) {
    let (app, _stores) = start(backend, |c| c.max_connections_per_client = 4).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect_from(&app, "127.0.0.1").await);
    }
    let keepalive = b"GET /v1/keepalive HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut fifth = connect_from(&app, "127.0.0.1").await;
    fifth.write_all(keepalive).await.unwrap();
    let answer = read_until_closed(&mut fifth, WAIT)
        .await
        .expect("a connection over the cap is closed after its answer");
    let (status, body) = parse_response(&answer);
    assert_eq!(
        (status, body["code"].as_u64()),
        (429, Some(429)),
        "{answer}"
    );
    assert_eq!(
        app.metric("sealpost_client_limit_refusals_total{limit=\"connections\"}")
            .await,
        1.0
    );

    // Another address is served meanwhile, and so is this one once a connection closes.
    let mut other = connect_from(&app, "127.0.0.2").await;
    other.write_all(keepalive).await.unwrap();
    let n = other.read(&mut [0u8; 1024]).await.unwrap();
    assert!(n > 0);
    drop(idle.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = connect_from(&app, "127.0.0.1").await;
        again.write_all(keepalive).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = again.read(&mut buf).await.unwrap_or(0);
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection's place did not come free"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

on_both_backends!(
    upgrades_past_the_socket_maximum_get_a_json_503_with_retry_after_and_are_counted,
    a_storm_of_2000_simultaneous_upgrades_is_served_or_cleanly_refused,
    an_address_past_its_socket_cap_gets_a_json_429_while_another_address_connects,
    a_connection_past_its_addresses_cap_gets_a_json_429_and_is_closed_while_others_are_served,
);
