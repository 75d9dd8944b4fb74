//! Time bounds through the real server and real sockets: request heads and bodies that
//! stall or trickle get a JSON 408 within their timeout (connection closed), and a client
//! that stops reading is closed after the write timeout, whether it is sent messages (kept
//! for its next connection, nobody else held up), pongs or provisioning messages.

use std::time::{Duration, Instant};

use crate::common::{Backend, TestApp};
use reqwest::StatusCode;
use sealpost::client::DeviceCredentials;
use sealpost::client::ws::WsClient;
use sealpost::domain::encoding::encode_base64;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::limits::{
    WAIT, api_addr, connect_from, parse_response, read_until_closed, start, ws_url,
};

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
    a_client_that_never_reads_is_closed_and_its_messages_wait_for_its_next_connection,
    a_request_body_that_stalls_half_way_gets_a_json_408_and_its_connection_is_closed,
    a_request_body_trickled_a_byte_at_a_time_gets_a_json_408_within_the_body_timeout,
    a_later_request_head_trickled_on_a_kept_alive_connection_gets_408_within_the_head_timeout,
);
