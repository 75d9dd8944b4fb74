//! The WebSocket endpoints: `/v1/websocket/` (authentication before the upgrade, 403 when
//! the credentials are wrong, an anonymous socket without them) and
//! `/v1/websocket/provisioning/`. Every socket is one task running the one loop (`socket`)
//! with its kind's behaviour: a device's or anonymous socket (`connection`, delivering
//! through its `window`, tunnelled requests served by the same application: `tunnel`) or a
//! device waiting to be linked (`provisioning`). `frames` is the `WebSocketMessage` wire
//! form.

pub mod connection;
pub mod frames;
pub mod provisioning;
mod socket;
pub mod tunnel;
mod window;

use std::rc::Rc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::basic::Credentials;
use crate::error::AppError;
use crate::identity::ClientAddr;
use crate::state::AppState;
use connection::Connection;
use tunnel::Tunnel;

/// Frames (and reassembled messages) above this close the socket with 1009.
pub const MAX_FRAME_BYTES: usize = 512 * 1024;

/// Starts the WebSocket protocol on an upgrade request (`actix_ws::handle`), with the
/// incoming bytes copied out of the connection's read buffer first.
///
/// actix-ws keeps the first chunk it receives as its frame buffer without copying; that
/// chunk shares the connection's 8 KiB read buffer, so every socket that ever received a
/// frame would keep 8 KiB alive while idle. A right-sized copy per chunk (frames are a
/// few hundred bytes) lets the read buffer go as soon as the connection sleeps
/// (vendor/actix-http/SEALPOST-PATCH.md).
fn start(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<(HttpResponse, actix_ws::Session, actix_ws::MessageStream), AppError> {
    use actix_web::FromRequest;
    use futures_util::{FutureExt, StreamExt};
    let copied = body
        .into_inner()
        .map(|chunk| chunk.map(|bytes| bytes::Bytes::copy_from_slice(&bytes)));
    let mut copied =
        actix_web::dev::Payload::from(Box::pin(copied) as actix_http::BoxedPayloadStream);
    // Taking a payload is immediate and cannot fail; an error here would be actix's.
    let Some(Ok(body)) = web::Payload::from_request(req, &mut copied).now_or_never() else {
        return Err(AppError::internal(anyhow::anyhow!("no WebSocket payload")));
    };
    actix_ws::handle(req, body)
        .map_err(|e| AppError::bad_request(format!("not a WebSocket upgrade: {e}")))
}

use crate::limits::sockets::{SlotRefused, SocketSlot};

/// Refuses a socket opened through the tunnel: only the outer application carries one.
fn outside_the_tunnel(req: &HttpRequest) -> Result<Rc<Tunnel>, AppError> {
    req.app_data::<Rc<Tunnel>>()
        .cloned()
        .ok_or_else(|| AppError::bad_request("not available through the tunnel"))
}

/// Takes a slot for a new socket, or refuses the upgrade (and counts the refusal).
fn take_slot(state: &AppState, client: ClientAddr) -> Result<SocketSlot, AppError> {
    state
        .sockets
        .try_acquire(client.0)
        .map_err(|refused| match refused {
            SlotRefused::Client => {
                state
                    .metrics
                    .client_limit_refusals
                    .with_label_values(&["websockets"])
                    .inc();
                AppError::ClientLimit
            }
            SlotRefused::Process => {
                state.metrics.websocket_refusals.inc();
                AppError::Overloaded
            }
        })
}

/// Whether `path` is one of the WebSocket endpoints, whose request "body" is the socket's
/// incoming frames (so the request body deadline does not apply to them).
pub fn is_socket_path(path: &str) -> bool {
    path.starts_with("/v1/websocket")
}

#[utoipa::path(get, path = "/v1/websocket/", tag = "websocket", operation_id = "websocket",
    summary = "The device's WebSocket: tunnelled requests and delivered envelopes (protobuf frames)",
    description = "Without credentials the socket is anonymous (sealed sends only).",
    security((), ("basic" = [])),
    responses(
        (status = 101, description = "Upgraded"),
        (status = 400, description = "Not a WebSocket upgrade", body = crate::error::ErrorJson),
        (status = 403, description = "Wrong credentials", body = crate::error::ErrorJson),
        (status = 429, description = "This address holds as many sockets as it may", body = crate::error::ErrorJson),
        (status = 503, description = "This process holds as many sockets as it may", body = crate::error::ErrorJson),
    ))]
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    client: ClientAddr,
) -> Result<HttpResponse, AppError> {
    let tunnel = outside_the_tunnel(&req)?;
    // Before authentication: a full process refuses without spending a password check.
    let slot = take_slot(&state, client)?;
    let identity = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let credentials = value
                .to_str()
                .ok()
                .and_then(Credentials::from_header)
                .ok_or_else(|| AppError::Forbidden("invalid credentials".into()))?;
            let device = state
                .authenticator
                .authenticate_socket(&credentials, client.0)
                .await
                .map_err(|e| match e {
                    AppError::Unauthorized => AppError::Forbidden("invalid credentials".into()),
                    other => other,
                })?;
            Some(device)
        }
    };
    let (response, session, stream) = start(&req, body)?;
    let connection = Connection::new(state, tunnel, identity, client.0);
    // The socket's log lines carry the upgrade request's id (its tunnelled requests get their own).
    actix_web::rt::spawn(tracing::Instrument::instrument(
        connection.run(session, stream, slot),
        tracing::Span::current(),
    ));
    Ok(response)
}
