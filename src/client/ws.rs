//! The client side of sealpost's WebSocket: tunnelled requests with ids, server requests
//! (deliveries, `queue/empty`) handed to the caller, acknowledgements, and the close code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::DeviceCredentials;
use crate::proto::textsecure::{
    Envelope, WebSocketMessage, WebSocketRequestMessage, WebSocketResponseMessage,
    web_socket_message,
};

type Writer = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// A request the server sent (a delivery or `queue/empty`).
#[derive(Clone, Debug)]
pub struct ServerRequest {
    pub id: u64,
    pub verb: String,
    pub path: String,
    pub body: Bytes,
}

impl ServerRequest {
    pub fn is_queue_empty(&self) -> bool {
        self.path == "/api/v1/queue/empty"
    }

    /// The envelope of a `PUT /api/v1/message` delivery.
    pub fn envelope(&self) -> Option<Envelope> {
        (self.path == "/api/v1/message")
            .then(|| Envelope::decode(self.body.clone()).ok())
            .flatten()
    }
}

/// The answer to a tunnelled request.
#[derive(Clone, Debug)]
pub struct WsResponse {
    pub status: u16,
    pub headers: Vec<String>,
    pub body: Bytes,
}

impl WsResponse {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The upgrade was refused with this HTTP status.
    #[error("upgrade refused with HTTP {0}")]
    Refused(u16),
    #[error("WebSocket: {0}")]
    Protocol(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the socket closed")]
    Closed,
    #[error("no answer in time")]
    Timeout,
}

pub struct WsClient {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<WsResponse>>>>,
    incoming: mpsc::UnboundedReceiver<ServerRequest>,
    closed: watch::Receiver<Option<u16>>,
    next_id: AtomicU64,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

impl WsClient {
    /// Opens `/v1/websocket/` on `base` (`http://host:port`), authenticated when
    /// `credentials` are given.
    pub async fn connect(
        base: &str,
        credentials: Option<&DeviceCredentials>,
    ) -> Result<Self, WsError> {
        Self::connect_to(base, "/v1/websocket/", credentials).await
    }

    /// Opens `/v1/websocket/provisioning/` (a device waiting to be linked).
    pub async fn connect_provisioning(base: &str) -> Result<Self, WsError> {
        Self::connect_to(base, "/v1/websocket/provisioning/", None).await
    }

    async fn connect_to(
        base: &str,
        path: &str,
        credentials: Option<&DeviceCredentials>,
    ) -> Result<Self, WsError> {
        let url = format!("{}{path}", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request()?;
        if let Some(credentials) = credentials {
            let value = credentials
                .authorization()
                .parse()
                .map_err(|_| WsError::Refused(0))?;
            request.headers_mut().insert("Authorization", value);
        }
        let (socket, _) =
            match tokio_tungstenite::connect_async_with_config(request, None, true).await {
                Ok(ok) => ok,
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    return Err(WsError::Refused(response.status().as_u16()));
                }
                Err(e) => return Err(e.into()),
            };
        let (writer, mut reader) = socket.split();
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<WsResponse>>>> = Arc::default();
        let (to_caller, incoming) = mpsc::unbounded_channel();
        let (closed_tx, closed) = watch::channel(None);
        let responses = pending.clone();
        tokio::spawn(async move {
            let mut code = 1006;
            while let Some(frame) = reader.next().await {
                match frame {
                    Ok(Message::Binary(bytes)) => {
                        let Ok(message) = WebSocketMessage::decode(bytes) else {
                            continue;
                        };
                        if let Some(response) = message.response {
                            let waiter = response
                                .id
                                .and_then(|id| responses.lock().ok()?.remove(&id));
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(WsResponse {
                                    status: response.status.unwrap_or(0) as u16,
                                    headers: response.headers,
                                    body: response.body.unwrap_or_default(),
                                });
                            }
                        } else if let Some(request) = message.request {
                            let _ = to_caller.send(ServerRequest {
                                id: request.id.unwrap_or(0),
                                verb: request.verb.unwrap_or_default(),
                                path: request.path.unwrap_or_default(),
                                body: request.body.unwrap_or_default(),
                            });
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = closed_tx.send(Some(code));
        });
        Ok(Self {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            pending,
            incoming,
            closed,
            next_id: AtomicU64::new(1),
        })
    }

    /// Sends a raw frame (tests of malformed input).
    pub async fn send_raw(&self, message: Message) -> Result<(), WsError> {
        self.writer.lock().await.send(message).await?;
        Ok(())
    }

    /// A tunnelled request; waits for its response.
    pub async fn request(
        &self,
        verb: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: Vec<String>,
    ) -> Result<WsResponse, WsError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| WsError::Closed)?
            .insert(id, tx);
        let message = WebSocketMessage {
            r#type: Some(web_socket_message::Type::Request as i32),
            request: Some(WebSocketRequestMessage {
                verb: Some(verb.to_owned()),
                path: Some(path.to_owned()),
                body: body.map(Bytes::from),
                headers,
                id: Some(id),
            }),
            response: None,
        };
        self.send_raw(Message::Binary(message.encode_to_vec().into()))
            .await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(WsError::Closed),
            Err(_) => Err(WsError::Timeout),
        }
    }

    /// A tunnelled request with a JSON body.
    pub async fn request_json<T: serde::Serialize>(
        &self,
        verb: &str,
        path: &str,
        body: &T,
        mut headers: Vec<String>,
    ) -> Result<WsResponse, WsError> {
        headers.push("content-type:application/json".to_owned());
        let body = serde_json::to_vec(body).map_err(|_| WsError::Closed)?;
        self.request(verb, path, Some(body), headers).await
    }

    /// The next request from the server, if one comes within `timeout`.
    pub async fn next_request(&mut self, timeout: Duration) -> Option<ServerRequest> {
        tokio::time::timeout(timeout, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// A request the server already sent, without waiting; `None` when there is none. After
    /// a tunnelled round trip it tells whether the server wrote anything before that
    /// response: frames are read in order, so a request written before the response has
    /// been handed over by the time [`WsClient::request`] returns.
    pub fn received(&mut self) -> Option<ServerRequest> {
        self.incoming.try_recv().ok()
    }

    /// Answers a server request (a 2xx acknowledges a delivery).
    pub async fn respond(&self, id: u64, status: u16) -> Result<(), WsError> {
        let message = WebSocketMessage {
            r#type: Some(web_socket_message::Type::Response as i32),
            request: None,
            response: Some(WebSocketResponseMessage {
                id: Some(id),
                status: Some(u32::from(status)),
                message: Some(if status < 300 { "OK" } else { "Error" }.to_owned()),
                headers: Vec::new(),
                body: None,
            }),
        };
        self.send_raw(Message::Binary(message.encode_to_vec().into()))
            .await
    }

    /// The close code, once the socket closed (waits up to `timeout`).
    pub async fn closed(&mut self, timeout: Duration) -> Option<u16> {
        let wait = self.closed.wait_for(Option::is_some);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(code)) => *code,
            _ => None,
        }
    }

    /// Closes the socket from the client side.
    pub async fn close(&self) {
        let _ = self.writer.lock().await.send(Message::Close(None)).await;
    }
}
