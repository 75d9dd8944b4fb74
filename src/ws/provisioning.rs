//! `/v1/websocket/provisioning/`: a device that is not yet linked opens it, anonymously, and
//! gets `PUT /v1/address` with a fresh address; the primary device's provisioning message,
//! sent to that address through `PUT /v1/provisioning/{address}` on any pod, arrives as
//! `PUT /v1/message`. The socket carries nothing else: tunnelled requests get 404.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use base64::Engine;
use bytes::Bytes;
use prost::Message as _;
use rand::RngCore;

use super::connection::{CLOSE_STALLED, Stalled, timed};
use crate::error::AppError;
use crate::proto::textsecure::{
    ProvisioningAddress, WebSocketMessage, WebSocketRequestMessage, WebSocketResponseMessage,
    web_socket_message,
};
use crate::state::AppState;

fn request(id: u64, path: &str, body: Bytes) -> Bytes {
    Bytes::from(
        WebSocketMessage {
            r#type: Some(web_socket_message::Type::Request as i32),
            request: Some(WebSocketRequestMessage {
                verb: Some("PUT".into()),
                path: Some(path.into()),
                body: Some(body),
                headers: Vec::new(),
                id: Some(id),
            }),
            response: None,
        }
        .encode_to_vec(),
    )
}

/// Releases the address however the socket's task ends.
struct Address {
    state: web::Data<AppState>,
    address: String,
}

impl Drop for Address {
    fn drop(&mut self) {
        self.state.provisioning.unregister(&self.address);
        let (notifier, address) = (self.state.notifier.clone(), self.address.clone());
        actix_web::rt::spawn(async move {
            let _ = notifier.unsubscribe_provisioning(&address).await;
        });
    }
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
    if req
        .app_data::<std::rc::Rc<super::tunnel::Tunnel>>()
        .is_none()
    {
        return Err(AppError::bad_request("not available through the tunnel"));
    }
    let slot = super::take_slot(&state, client)?;
    let (response, mut session, stream) = super::start(&req, body)?;
    let mut random = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let address = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
    let (sender, mut messages) = tokio::sync::mpsc::channel::<Bytes>(4);
    state.provisioning.register(&address, sender);
    let guard = Address {
        state: state.clone(),
        address: address.clone(),
    };
    let notifier = state.notifier.clone();
    let shutdown = state.shutdown.clone();
    let idle_timeout = state.config.websocket_idle_timeout;
    let write_timeout = state.config.websocket_write_timeout;
    let write_timeouts = state.metrics.websocket_write_timeouts.clone();
    let gauge = state
        .metrics
        .websockets_open
        .with_label_values(&["provisioning"]);
    gauge.inc();
    let open = super::connection::OpenGauge(gauge);
    let closes = state.metrics.websocket_closes.clone();
    state
        .metrics
        .websocket_connects
        .with_label_values(&["provisioning"])
        .inc();
    actix_web::rt::spawn(async move {
        let (_guard, _open, _slot) = (guard, open, slot);
        if let Err(e) = notifier.subscribe_provisioning(&address).await {
            tracing::warn!(error = %e, "could not subscribe a provisioning address");
        }
        let announce = ProvisioningAddress {
            address: Some(address.clone()),
        };
        let mut next_id = 1u64;
        // Every write is bounded by the write timeout, as on the authenticated socket: a
        // client that stops reading is closed with 1008 instead of holding its slot forever.
        let frame = request(
            next_id,
            "/v1/address",
            Bytes::from(announce.encode_to_vec()),
        );
        let stalled_at_once = match timed(write_timeout, session.binary(frame)).await {
            Ok(written) => {
                if !written {
                    return;
                }
                false
            }
            Err(Stalled) => true,
        };
        let mut stream = stream
            .max_frame_size(super::MAX_FRAME_BYTES)
            .aggregate_continuations()
            .max_continuation_size(super::MAX_FRAME_BYTES);
        let mut last_seen = Instant::now();
        let mut tick = tokio::time::interval(idle_timeout / 3);
        let code = if stalled_at_once {
            Some(CLOSE_STALLED)
        } else {
            loop {
                let written = tokio::select! {
                    _ = shutdown.cancelled() => break Some(1001),
                    Some(body) = messages.recv() => {
                        next_id += 1;
                        timed(write_timeout, session.binary(request(next_id, "/v1/message", body))).await
                    }
                    _ = tick.tick() => {
                        if last_seen.elapsed() >= idle_timeout {
                            break Some(1000);
                        }
                        timed(write_timeout, session.ping(b"")).await
                    }
                    frame = stream.recv() => {
                        last_seen = Instant::now();
                        match frame {
                            None | Some(Ok(AggregatedMessage::Close(_))) => break None,
                            Some(Ok(AggregatedMessage::Ping(p))) => {
                                timed(write_timeout, session.pong(&p)).await
                            }
                            Some(Ok(AggregatedMessage::Binary(bytes))) => {
                                let Ok(message) = WebSocketMessage::decode(bytes) else {
                                    break Some(1007);
                                };
                                if let Some(request) = message.request {
                                    let response = WebSocketMessage {
                                        r#type: Some(web_socket_message::Type::Response as i32),
                                        request: None,
                                        response: Some(WebSocketResponseMessage {
                                            id: request.id,
                                            status: Some(404),
                                            message: Some("Not Found".into()),
                                            headers: Vec::new(),
                                            body: None,
                                        }),
                                    };
                                    timed(write_timeout, session.binary(response.encode_to_vec())).await
                                } else {
                                    Ok(true)
                                }
                            }
                            Some(Ok(_)) => Ok(true),
                            Some(Err(error)) => break Some(super::refused_frame_code(&error)),
                        }
                    }
                };
                match written {
                    Ok(true) => {}
                    Ok(false) => break None,
                    Err(Stalled) => break Some(CLOSE_STALLED),
                }
            }
        };
        if let Some(code) = code {
            if code == CLOSE_STALLED {
                write_timeouts.inc();
            }
            closes
                .with_label_values(&[super::connection::close_label(code)])
                .inc();
            // Bounded too: a client that reads nothing would hold this close forever.
            let close = session.close(Some(CloseReason {
                code: CloseCode::from(code),
                description: None,
            }));
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), close).await;
        }
    });
    Ok(response)
}
