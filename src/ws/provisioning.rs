//! `/v1/websocket/provisioning/`: a device that is not yet linked opens it, anonymously, and
//! gets `PUT /v1/address` with a fresh address; the primary device's provisioning message,
//! sent to that address through `PUT /v1/provisioning/{address}` on any pod, arrives as
//! `PUT /v1/message`. The socket carries nothing else: tunnelled requests get 404. Pings,
//! timeouts and the close are the loop's, in `socket`.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use prost::Message as _;
use tokio::sync::mpsc;

use super::frames::{self, ClientFrame};
use super::socket::{self, Kind, Socket, Step, Wake};
use std::sync::Arc;

use crate::delivery::{CloseCode, ConnectionHandle};
use crate::error::AppError;
use crate::proto::textsecure::{ProvisioningAddress, WebSocketResponseMessage};
use crate::service::presence::{Presence, WaitingDevice};
use crate::state::AppState;

/// A waiting device's socket.
struct Provisioning {
    /// Never registered: only a stalled write asks it to close.
    handle: Arc<ConnectionHandle>,
    address: String,
    messages: mpsc::Receiver<Bytes>,
    /// Releases the address however the socket ends.
    _presence: Presence,
}

impl Kind for Provisioning {
    type Event = Bytes;

    fn label(&self) -> &'static str {
        "provisioning"
    }

    async fn start(&mut self, socket: &mut Socket) {
        let announce = ProvisioningAddress {
            address: Some(self.address.clone()),
        };
        socket
            .request(
                "/v1/address",
                Some(Bytes::from(announce.encode_to_vec())),
                false,
            )
            .await;
    }

    fn handle(&self) -> &Arc<ConnectionHandle> {
        &self.handle
    }

    async fn next_event(&mut self) -> Wake<Bytes> {
        tokio::select! {
            code = self.handle.wait_for_close() => Wake::Close(code),
            Some(message) = self.messages.recv() => Wake::Event(message),
        }
    }

    async fn on_event(&mut self, socket: &mut Socket, message: Bytes) -> Step {
        socket.request("/v1/message", Some(message), false).await;
        Step::Continue
    }

    async fn on_binary(&mut self, socket: &mut Socket, frame: Bytes) -> Step {
        match ClientFrame::decode(frame) {
            ClientFrame::Request(request) => {
                // The one request a provisioning socket serves (PROTOCOL.md 16.3): its
                // keepalive, which needs no application; anything else is 404.
                let response = if is_provisioning_keepalive(&request) {
                    WebSocketResponseMessage {
                        id: request.id,
                        status: Some(200),
                        message: Some("OK".into()),
                        headers: vec![format!(
                            "X-Signal-Timestamp:{}",
                            crate::domain::clock::now_ms()
                        )],
                        body: None,
                    }
                } else {
                    WebSocketResponseMessage {
                        id: request.id,
                        status: Some(404),
                        message: Some("Not Found".into()),
                        headers: Vec::new(),
                        body: None,
                    }
                };
                socket.write(frames::response(response)).await;
                Step::Continue
            }
            ClientFrame::Response(_) => Step::Continue,
            ClientFrame::Malformed => Step::Close(CloseCode::Malformed),
        }
    }

    async fn on_tick(&mut self, _: &mut Socket) {}
}

/// `GET /v1/keepalive/provisioning` (query string aside).
fn is_provisioning_keepalive(request: &crate::proto::textsecure::WebSocketRequestMessage) -> bool {
    let path = request.path.as_deref().unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    request
        .verb
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("GET"))
        && path == "/v1/keepalive/provisioning"
}

#[utoipa::path(get, path = "/v1/websocket/provisioning/", tag = "websocket",
    operation_id = "provisioning_websocket",
    summary = "A device waiting to be linked: announces an address, receives the provisioning message",
    responses(
        (status = 101, description = "Upgraded"),
        (status = 400, description = "Not a WebSocket upgrade", body = crate::error::ErrorJson),
        (status = 429, description = "This address holds as many sockets as it may", body = crate::error::ErrorJson),
        (status = 503, description = "This process holds as many sockets as it may", body = crate::error::ErrorJson),
    ))]
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    client: crate::identity::ClientAddr,
) -> Result<HttpResponse, AppError> {
    super::outside_the_tunnel(&req)?;
    let slot = super::take_slot(&state, client)?;
    let (response, session, stream) = super::start(&req, body)?;
    actix_web::rt::spawn(async move {
        let WaitingDevice {
            address,
            messages,
            presence,
        } = state.presence.wait_for_provisioning().await;
        let kind = Provisioning {
            handle: ConnectionHandle::new(state.registry.connection_id()),
            address,
            messages,
            _presence: presence,
        };
        socket::serve(state, session, stream, kind, slot).await
    });
    Ok(response)
}
