//! One lean WebSocket client for both targets, so sealpost and the bare relay see the same
//! client: TCP_NODELAY, 4 KiB read buffers, optional bind-before-connect to a 127.0.0.x
//! source address, one I/O task per socket that batches writes, answers pings and sends
//! its own keepalive pings. Only the framing differs: sealpost's protobuf request tunnel,
//! or the relay's few-byte header (see `relay`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use sealpost::client::DeviceCredentials;
use sealpost::proto::textsecure::{
    Envelope, WebSocketMessage, WebSocketRequestMessage, WebSocketResponseMessage,
    web_socket_message,
};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::relay::{frame, websocket_config};

/// How long a request waits for its answer before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Client keepalive: a ping this often (sealpost closes sockets silent for 90 s).
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Which server a socket talks to, and as whom.
#[derive(Clone)]
pub enum Peer {
    /// sealpost's `/v1/websocket/`, authenticated when credentials are given.
    Sealpost(Option<DeviceCredentials>),
    /// The bare relay, registered under this id.
    Relay(u64),
}

/// What the server pushed: a delivery (or `queue/empty`) to acknowledge.
pub struct Delivery {
    pub id: u64,
    /// The envelope's content (sealpost) or the payload (relay).
    pub content: Option<Bytes>,
    pub queue_empty: bool,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<u16>>>>;

/// The sending half: requests (sealpost) or relayed sends, each awaiting its answer.
pub struct Conn {
    out: mpsc::Sender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    relay: bool,
}

/// The receiving half: deliveries in order, acknowledged through `ack`.
pub struct Inbox {
    incoming: mpsc::UnboundedReceiver<Delivery>,
    out: mpsc::Sender<Message>,
    relay: bool,
}

/// Opens a socket to `base` (`http://host:port`). `source` binds the client end to that
/// loopback address first; `auto_ack` makes the I/O task answer every delivery itself
/// (idle sockets that hold no `Inbox` reader).
pub async fn connect(
    base: &str,
    peer: &Peer,
    source: Option<Ipv4Addr>,
    auto_ack: bool,
) -> anyhow::Result<(Conn, Inbox)> {
    let ws_base = base.replacen("http", "ws", 1);
    let (url, relay) = match peer {
        Peer::Sealpost(_) => (format!("{ws_base}/v1/websocket/"), false),
        Peer::Relay(id) => (format!("{ws_base}/?id={id}"), true),
    };
    let mut request = url.as_str().into_client_request()?;
    if let Peer::Sealpost(Some(credentials)) = peer {
        request
            .headers_mut()
            .insert("Authorization", credentials.authorization().parse()?);
    }
    let host_port = base
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow::anyhow!("no host in {base}"))?;
    let address: SocketAddr = match host_port.parse() {
        Ok(address) => address,
        Err(_) => tokio::net::lookup_host(host_port)
            .await?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| anyhow::anyhow!("no IPv4 address for {host_port}"))?,
    };
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        bind_source(&socket, source)?;
    }
    socket.set_nodelay(true)?;
    let stream = socket.connect(address).await?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(websocket_config()))
            .await?;
    let (out, mut outgoing) = mpsc::channel::<Message>(256);
    let (to_inbox, incoming) = mpsc::unbounded_channel();
    let pending: Pending = Arc::default();
    let responses = pending.clone();
    // Weak: once the caller drops both halves, the socket's task ends and closes it.
    let answers = out.downgrade();
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            tokio::select! {
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    let Message::Binary(bytes) = frame else {
                        if matches!(frame, Message::Close(_)) { break }
                        continue;
                    };
                    let Some(inbound) = decode(relay, bytes) else { continue };
                    match inbound {
                        Inbound::Response { id, status } => {
                            let waiter = responses.lock().ok().and_then(|mut p| p.remove(&id));
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(status);
                            }
                        }
                        Inbound::Delivery(delivery) if auto_ack => {
                            let Some(answers) = answers.upgrade() else { break };
                            let _ = answers.try_send(ack_frame(relay, delivery.id));
                        }
                        Inbound::Delivery(delivery) => {
                            let _ = to_inbox.send(delivery);
                        }
                    }
                }
                message = outgoing.recv() => {
                    let Some(message) = message else { break };
                    // Batch what is already queued into one flush.
                    if sink.feed(message).await.is_err() { break }
                    while let Ok(more) = outgoing.try_recv() {
                        if sink.feed(more).await.is_err() { break }
                    }
                    if sink.flush().await.is_err() { break }
                }
                _ = keepalive.tick() => {
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() { break }
                }
            }
        }
        // Whoever still waits for an answer learns the socket is gone.
        if let Ok(mut pending) = responses.lock() {
            pending.clear();
        }
    });
    Ok((
        Conn {
            out: out.clone(),
            pending,
            next_id: AtomicU64::new(1),
            relay,
        },
        Inbox {
            incoming,
            out,
            relay,
        },
    ))
}

/// Binds the client end to `source` without choosing a port yet (IP_BIND_ADDRESS_NO_PORT),
/// so each source address gets its own ephemeral port range towards the server.
fn bind_source(socket: &TcpSocket, source: Ipv4Addr) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a correctly sized int option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(
        rc == 0,
        "IP_BIND_ADDRESS_NO_PORT: {}",
        std::io::Error::last_os_error()
    );
    socket.bind(SocketAddr::from((source, 0)))?;
    Ok(())
}

enum Inbound {
    Response { id: u64, status: u16 },
    Delivery(Delivery),
}

fn decode(relay: bool, bytes: Bytes) -> Option<Inbound> {
    if relay {
        return match frame::parse(&bytes)? {
            frame::Parsed::Ok { request } => Some(Inbound::Response {
                id: request,
                status: 200,
            }),
            frame::Parsed::NoPeer { request } => Some(Inbound::Response {
                id: request,
                status: 404,
            }),
            frame::Parsed::Deliver { request, payload } => Some(Inbound::Delivery(Delivery {
                id: request,
                content: Some(bytes.slice_ref(payload)),
                queue_empty: false,
            })),
            _ => None,
        };
    }
    let message = WebSocketMessage::decode(bytes).ok()?;
    if let Some(response) = message.response {
        return Some(Inbound::Response {
            id: response.id?,
            status: response.status.unwrap_or(0) as u16,
        });
    }
    let request = message.request?;
    let path = request.path.unwrap_or_default();
    let content = (path == "/api/v1/message")
        .then(|| Envelope::decode(request.body.unwrap_or_default()).ok())
        .flatten()
        .and_then(|e| e.content);
    Some(Inbound::Delivery(Delivery {
        id: request.id.unwrap_or(0),
        content,
        queue_empty: path == "/api/v1/queue/empty",
    }))
}

fn ack_frame(relay: bool, id: u64) -> Message {
    if relay {
        return Message::Binary(frame::ack(id));
    }
    let message = WebSocketMessage {
        r#type: Some(web_socket_message::Type::Response as i32),
        request: None,
        response: Some(WebSocketResponseMessage {
            id: Some(id),
            status: Some(200),
            message: Some("OK".to_owned()),
            headers: Vec::new(),
            body: None,
        }),
    };
    Message::Binary(message.encode_to_vec().into())
}

impl Conn {
    async fn exchange(&self, id: u64, frame: Message) -> anyhow::Result<u16> {
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id, tx);
        self.out
            .send(frame)
            .await
            .map_err(|_| anyhow::anyhow!("the socket closed"))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(_)) => anyhow::bail!("the socket closed"),
            Err(_) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.remove(&id);
                }
                anyhow::bail!("no answer in {REQUEST_TIMEOUT:?}")
            }
        }
    }

    /// A tunnelled request to sealpost; returns the status.
    pub async fn request(
        &self,
        verb: &str,
        path: &str,
        body: Vec<u8>,
        headers: Vec<String>,
    ) -> anyhow::Result<u16> {
        debug_assert!(!self.relay);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = WebSocketMessage {
            r#type: Some(web_socket_message::Type::Request as i32),
            request: Some(WebSocketRequestMessage {
                verb: Some(verb.to_owned()),
                path: Some(path.to_owned()),
                body: Some(body.into()),
                headers,
                id: Some(id),
            }),
            response: None,
        };
        self.exchange(id, Message::Binary(message.encode_to_vec().into()))
            .await
    }

    /// A payload for relay peer `to`; returns 200 once the relay forwarded it.
    pub async fn relay_send(&self, to: u64, payload: &[u8]) -> anyhow::Result<u16> {
        debug_assert!(self.relay);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = BytesMut::with_capacity(frame::SEND_HEADER + payload.len());
        frame.put_u8(frame::SEND);
        frame.put_u64(to);
        frame.put_u64(id);
        frame.put_slice(payload);
        self.exchange(id, Message::Binary(frame.freeze())).await
    }

    /// Whether the socket's task still runs (the server has not closed it).
    pub fn is_open(&self) -> bool {
        !self.out.is_closed()
    }

    /// Closes the socket from the client side.
    pub async fn close(&self) {
        let _ = self.out.send(Message::Close(None)).await;
    }
}

impl Inbox {
    /// The next delivery, if one comes within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Delivery> {
        tokio::time::timeout(timeout, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next delivery of a measured phase ending at `deadline`: waits in 5 s steps until
    /// then, and afterwards takes what is still arriving (1 s steps, at most 30 s past the
    /// deadline); `None` once nothing more comes.
    pub async fn next_until(&mut self, deadline: std::time::Instant) -> Option<Delivery> {
        let hard_stop = deadline + Duration::from_secs(30);
        while std::time::Instant::now() < hard_stop {
            let wait = if std::time::Instant::now() < deadline {
                5
            } else {
                1
            };
            match self.next(Duration::from_secs(wait)).await {
                Some(delivery) => return Some(delivery),
                None if std::time::Instant::now() >= deadline => return None,
                None => {}
            }
        }
        None
    }

    /// Acknowledges a delivery (sealpost then deletes it from the queue).
    pub async fn ack(&self, id: u64) -> anyhow::Result<()> {
        self.out
            .send(ack_frame(self.relay, id))
            .await
            .map_err(|_| anyhow::anyhow!("the socket closed"))
    }
}
