//! Resource limits through the real server and real sockets: the per-process socket
//! maximum (a JSON 503 with `Retry-After`, counted), a client that never reads (closed after
//! the write timeout, its messages kept for its next connection, nobody else held up), and a
//! storm of simultaneous upgrades (each served or cleanly refused), request heads and bodies
//! bounded in time (408, connection closed), and per-client-address caps on sockets and
//! connections (429 for that address, others served). The per-socket cap of
//! unacknowledged deliveries and the body and frame limits are tested in `messages.rs`,
//! `accounts.rs` and `sealed_sender.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::{Backend, TestApp, TestStores};
use futures_util::future::join_all;
use reqwest::StatusCode;
use sealpost::client::DeviceCredentials;
use sealpost::client::ws::{WsClient, WsError};
use sealpost::domain::encoding::encode_base64;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
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

fn api_addr(app: &TestApp) -> SocketAddr {
    app.address.trim_start_matches("http://").parse().unwrap()
}

/// A raw connection to the public listener from `local` (any 127.0.0.0/8 address is this
/// machine: a second "client address" for the per-address caps).
async fn connect_from(app: &TestApp, local: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(api_addr(app)).await.unwrap()
}

/// Everything the server sends until it closes the connection, or `None` if it has not
/// closed it within `limit`. A reset after the answer counts as closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
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
fn parse_response(raw: &str) -> (u16, Value) {
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

const MULTI_RECIPIENT_HEAD: &str = "PUT /v1/messages/multi_recipient?ts=1 HTTP/1.1\r\nHost: x\r\n\
     Content-Type: application/vnd.signal-messenger.mrm\r\nContent-Length: 2097152\r\n\r\n";

async fn a_request_body_that_stalls_half_way_gets_a_json_408_and_its_connection_is_closed(
    backend: Backend,
) {
    let (app, _stores) = start(backend, |c| {
        c.request_body_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = connect_from(&app, "127.0.0.1").await;
    stream
        .write_all(MULTI_RECIPIENT_HEAD.as_bytes())
        .await
        .unwrap();
    stream.write_all(&vec![0u8; 1024 * 1024]).await.unwrap();
    let started = Instant::now();
    // Then nothing more: the body is dropped and the connection closed within the bound.
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server closes a stalled body's connection");
    assert!(started.elapsed() < Duration::from_secs(4));
    let (status, body) = parse_response(&answer);
    assert_eq!((status, &body["code"]), (408, &json!(408)), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(
        app.metric("sealpost_http_request_body_timeouts_total")
            .await,
        1.0
    );
    app.stop().await;
}

async fn a_request_body_trickled_a_byte_at_a_time_gets_a_json_408_within_the_body_timeout(
    backend: Backend,
) {
    let (app, _stores) = start(backend, |c| {
        c.request_body_timeout = Duration::from_secs(1);
    })
    .await;
    let stream = connect_from(&app, "127.0.0.1").await;
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(MULTI_RECIPIENT_HEAD.as_bytes())
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        // One byte every 100 ms, for as long as the server takes them.
        while writer.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
            if received.windows(4).any(|w| w == b"\r\n\r\n") && received.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    trickle.abort();
    assert!(read.is_ok(), "no answer to a trickled body");
    assert!(started.elapsed() < Duration::from_secs(4));
    let (status, body) = parse_response(&String::from_utf8_lossy(&received));
    assert_eq!((status, body["code"].as_u64()), (408, Some(408)));
    app.stop().await;
}

async fn a_later_request_head_trickled_on_a_kept_alive_connection_gets_408_within_the_head_timeout(
    backend: Backend,
) {
    let (app, _stores) = start(backend, |c| {
        c.request_head_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = connect_from(&app, "127.0.0.1").await;
    // A first request answered at once keeps the connection alive...
    stream
        .write_all(b"GET /v1/keepalive HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // ...then the next head comes a byte at a time and never ends.
    let started = Instant::now();
    let head = b"GET /v1/keepalive HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut answer = String::new();
    for byte in head.iter().chain(std::iter::repeat(&b'a')) {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        if let Ok(Ok(n @ 1..)) =
            tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
        {
            answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a trickled head was never answered"
        );
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    app.stop().await;
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

/// A socket upgraded at `path` over a connection with a tiny receive buffer, for a client
/// that is about to stop reading.
async fn unread_socket(
    app: &TestApp,
    path: &str,
    credentials: Option<&DeviceCredentials>,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(api_addr(app)).await.unwrap();
    let url = format!("{}{path}", app.address.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(credentials) = credentials {
        request.headers_mut().insert(
            "Authorization",
            credentials.authorization().parse().unwrap(),
        );
    }
    tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap()
        .0
}

/// Waits until the server counted a write timeout and no socket of `kind` is open.
async fn wait_for_stalled_close(app: &TestApp, kind: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.metric("sealpost_websocket_write_timeouts_total").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the {kind} socket whose client stopped reading was not closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open = format!("sealpost_websocket_open{{kind=\"{kind}\"}}");
    while app.metric(&open).await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the {kind} socket's task did not end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client that keeps pinging but never reads makes the server write pongs it never takes:
/// those writes are under the write timeout like any other, so the socket is closed (1008)
/// instead of living forever on its pings.
async fn a_client_that_pings_without_reading_is_closed_after_the_write_timeout(backend: Backend) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (app, _stores) = start(backend, |c| {
        c.websocket_write_timeout = Duration::from_secs(2);
    })
    .await;
    let (device, _) = app.client.register_new().await.unwrap();
    let mut ws = unread_socket(&app, "/v1/websocket/", Some(&device)).await;
    // Pings as fast as the server takes them; the replies are never read.
    let pinger = tokio::spawn(async move {
        let payload = bytes::Bytes::from(vec![0x70; 125]);
        for _ in 0..500_000 {
            let ping = ws.send(Message::Ping(payload.clone()));
            if !matches!(tokio::time::timeout(WAIT, ping).await, Ok(Ok(()))) {
                break;
            }
        }
        ws
    });
    wait_for_stalled_close(&app, "authenticated").await;
    // Everyone else is served.
    let (other, _) = app.client.register_new().await.unwrap();
    let mut other_ws = WsClient::connect(&app.address, Some(&other)).await.unwrap();
    assert!(other_ws.next_request(WAIT).await.unwrap().is_queue_empty());
    pinger.abort();
    app.stop().await;
}

/// A device waiting to be linked whose client stops reading: the provisioning messages
/// written to it are under the write timeout too, and the socket is closed (1008).
async fn a_provisioning_socket_whose_client_stops_reading_is_closed_after_the_write_timeout(
    backend: Backend,
) {
    use futures_util::StreamExt;
    use prost::Message as _;
    use sealpost::proto::textsecure::{ProvisioningAddress, WebSocketMessage};
    use tokio_tungstenite::tungstenite::Message;
    let (app, _stores) = start(backend, |c| {
        c.websocket_write_timeout = Duration::from_secs(2);
    })
    .await;
    let (primary, _) = app.client.register_new().await.unwrap();
    let mut ws = unread_socket(&app, "/v1/websocket/provisioning/", None).await;
    // The one frame this client reads: its address.
    let Some(Ok(Message::Binary(frame))) = ws.next().await else {
        panic!("no address frame");
    };
    let request = WebSocketMessage::decode(frame).unwrap().request.unwrap();
    let address = ProvisioningAddress::decode(request.body.unwrap())
        .unwrap()
        .address
        .unwrap();

    // Provisioning messages of 60 KiB, far more than the socket buffers hold, until the
    // server stops taking them (404 once the socket's queue is full or it is gone).
    let body = json!({ "body": encode_base64(&vec![0x33; 60 * 1024]) });
    let provision = || {
        let request = app
            .client
            .http()
            .put(app.client.url(&format!("/v1/provisioning/{address}")))
            .header("Authorization", primary.authorization())
            .json(&body);
        async move { request.send().await.unwrap().status() }
    };
    for _ in 0..200 {
        let status = provision().await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    wait_for_stalled_close(&app, "provisioning").await;
    // The address is released with the socket (its pub/sub subscription a moment later).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = provision().await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the address outlived its socket: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(ws);
    app.stop().await;
}

on_both_backends!(
    a_client_that_pings_without_reading_is_closed_after_the_write_timeout,
    a_provisioning_socket_whose_client_stops_reading_is_closed_after_the_write_timeout,
    upgrades_past_the_socket_maximum_get_a_json_503_with_retry_after_and_are_counted,
    a_client_that_never_reads_is_closed_and_its_messages_wait_for_its_next_connection,
    a_storm_of_2000_simultaneous_upgrades_is_served_or_cleanly_refused,
    a_request_body_that_stalls_half_way_gets_a_json_408_and_its_connection_is_closed,
    a_request_body_trickled_a_byte_at_a_time_gets_a_json_408_within_the_body_timeout,
    a_later_request_head_trickled_on_a_kept_alive_connection_gets_408_within_the_head_timeout,
    an_address_past_its_socket_cap_gets_a_json_429_while_another_address_connects,
    a_connection_past_its_addresses_cap_gets_a_json_429_and_is_closed_while_others_are_served,
);
