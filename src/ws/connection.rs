//! One WebSocket connection: a single task that reads client frames, answers tunnelled
//! requests, delivers the device's queue as server requests, and closes the socket when the
//! device connects elsewhere (4409), is removed (4401), goes idle (90 s, configurable) or the server shuts
//! down (1001). Delivery keeps at most `MAX_OUTSTANDING` unacknowledged messages in flight:
//! the queue stays in the store, not in this task's memory. A client that reads nothing for
//! the write timeout (30 s by default) while the server writes is closed with 1008: its
//! unsent messages stay queued for its next connection, and its buffers are freed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_web::web;
use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode as WsCloseCode, CloseReason, Session,
};
use bytes::Bytes;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::tunnel::{Tunnel, TunnelIdentity};
use crate::delivery::{CloseCode, ConnectionHandle, DeviceEvent};
use crate::domain::accounts::CredentialDigest;
use crate::domain::messages::DeliveredMeta;
use crate::identity::AuthenticatedDevice;
use crate::proto::textsecure::{
    WebSocketMessage, WebSocketRequestMessage, WebSocketResponseMessage, web_socket_message,
};
use crate::state::AppState;

/// Unacknowledged deliveries in flight per socket.
pub const MAX_OUTSTANDING: usize = 64;
/// A socket reads more of its queue once this few deliveries are still unacknowledged.
const REFILL_AT: usize = MAX_OUTSTANDING / 2;
/// Tunnelled requests served at once per socket; more wait their turn.
const MAX_CONCURRENT_REQUESTS: usize = 16;
/// Acknowledgements waiting for the socket's ack task; when full, the socket stops reading
/// (back-pressure on a client that acks faster than the store removes).
const ACK_BACKLOG: usize = 2 * MAX_OUTSTANDING;
/// The server pings an idle client this many times per idle timeout before closing.
const PINGS_PER_IDLE_TIMEOUT: u32 = 3;

struct Outstanding {
    guid: Uuid,
    meta: Option<DeliveredMeta>,
}

/// The delivery state of an authenticated socket.
struct Delivery {
    device: AuthenticatedDevice,
    /// Position of the last message sent; the next read starts after it.
    cursor: u64,
    outstanding: HashMap<u64, Outstanding>,
    /// Whether the queue may hold more than what was read.
    more: bool,
    queue_empty_sent: bool,
    /// When the socket connected and how many messages it found queued (metrics).
    connected: Instant,
    backlog: u64,
    /// To the socket's ack task: acknowledgements are applied off this task, so a slow
    /// removal (or the receipts it sends) never holds up reads and deliveries, and in
    /// batches, one store step for whatever arrived meanwhile.
    /// Made on the first acknowledgement: an idle socket holds no channel and no task.
    acks: Option<tokio::sync::mpsc::Sender<(Uuid, Option<DeliveredMeta>)>>,
}

/// Applies a socket's acknowledgements in batches until the socket's task drops its sender
/// (what was already acknowledged is still applied then).
async fn apply_acks(
    state: web::Data<AppState>,
    device: AuthenticatedDevice,
    mut acks: tokio::sync::mpsc::Receiver<(Uuid, Option<DeliveredMeta>)>,
) {
    let mut batch = Vec::with_capacity(MAX_OUTSTANDING);
    while acks.recv_many(&mut batch, MAX_OUTSTANDING).await > 0 {
        if let Err(e) = state.messages.acknowledge(device, &batch).await {
            // Not removed: delivered again on the next connection.
            tracing::warn!(error = %e, "acknowledging messages failed");
        }
        batch.clear();
    }
}

pub struct Connection {
    pub state: web::Data<AppState>,
    pub tunnel: Rc<Tunnel>,
    pub session: Session,
    pub identity: Option<AuthenticatedDevice>,
    /// The credential `identity` authenticated with; the socket lives only while its device
    /// still has it.
    pub credential: Option<CredentialDigest>,
    pub peer: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    /// Cancelled when a write waited longer than the write timeout: the client is not
    /// reading, and the socket closes.
    pub stalled: CancellationToken,
}

/// Writes `frame` unless the client has not made room for it within `timeout`; then marks
/// the socket stalled. `false` when the frame was not written.
async fn write(
    session: &mut Session,
    frame: Bytes,
    timeout: std::time::Duration,
    stalled: &CancellationToken,
) -> bool {
    match timed(timeout, session.binary(frame)).await {
        Ok(written) => written,
        Err(Stalled) => {
            stalled.cancel();
            false
        }
    }
}

/// A write the client made no room for within the write timeout.
pub(super) struct Stalled;

/// Runs one write of any kind (data, ping, pong) under `timeout`: `Ok(true)` written,
/// `Ok(false)` the session is closed, `Err(Stalled)` the client is not reading. Every write a
/// socket makes goes through here, so a client that stops reading is closed whatever it
/// provokes the server to write (a client pinging without reading gets no pass).
pub(super) async fn timed(
    timeout: std::time::Duration,
    write: impl std::future::Future<Output = Result<(), actix_ws::Closed>>,
) -> Result<bool, Stalled> {
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => Ok(result.is_ok()),
        Err(_) => Err(Stalled),
    }
}

/// The close code of a socket whose client stopped reading (policy violation).
pub(super) const CLOSE_STALLED: u16 = 1008;

/// Unregisters the socket however the task ends.
struct Registration {
    state: web::Data<AppState>,
    device: AuthenticatedDevice,
    handle: Arc<ConnectionHandle>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (aci, id) = (self.device.aci, self.device.device);
        self.state.registry.unregister(aci, id, self.handle.id);
        // The notifier counts sockets per device: this releases only this socket's share.
        let notifier = self.state.notifier.clone();
        actix_web::rt::spawn(async move {
            if let Err(e) = notifier.unsubscribe(aci, id).await {
                tracing::debug!(error = %e, "unsubscribe failed");
            }
        });
    }
}

/// Keeps the open-socket gauge right however the task ends.
pub(super) struct OpenGauge(pub(super) prometheus::IntGauge);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn encode(message: WebSocketMessage) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

fn request_frame(id: u64, path: &str, body: Option<Bytes>) -> Bytes {
    encode(WebSocketMessage {
        r#type: Some(web_socket_message::Type::Request as i32),
        request: Some(WebSocketRequestMessage {
            verb: Some("PUT".into()),
            path: Some(path.into()),
            body,
            headers: vec![format!(
                "X-Signal-Timestamp:{}",
                crate::domain::clock::now_ms()
            )],
            id: Some(id),
        }),
        response: None,
    })
}

/// The answer to a tunnelled request on a socket that is closing: its identity may be gone.
fn unauthorized(id: Option<u64>) -> WebSocketResponseMessage {
    super::tunnel::error_message(id, &crate::error::AppError::Unauthorized)
}

fn response_frame(response: WebSocketResponseMessage) -> Bytes {
    encode(WebSocketMessage {
        r#type: Some(web_socket_message::Type::Response as i32),
        request: None,
        response: Some(response),
    })
}

enum Step {
    Continue,
    Close(u16),
}

impl Connection {
    /// The socket's task. Built so that the connection and its stream are stored once in
    /// the task (an `async fn` would keep a moved copy of each argument beside the
    /// original: about 270 bytes more per idle socket).
    pub fn run(
        self,
        stream: actix_ws::MessageStream,
        slot: super::SocketSlot,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let mut connection = self;
        let mut stream = stream
            .max_frame_size(super::MAX_FRAME_BYTES)
            .aggregate_continuations()
            .max_continuation_size(super::MAX_FRAME_BYTES);
        async move {
            let _slot = slot;
            connection.serve(&mut stream).await
        }
    }

    async fn serve(&mut self, stream: &mut AggregatedMessageStream) {
        let metrics = self.state.metrics.clone();
        let kind = if self.identity.is_some() {
            "authenticated"
        } else {
            "unauthenticated"
        };
        let gauge = metrics.websockets_open.with_label_values(&[kind]);
        gauge.inc();
        let _gauge = OpenGauge(gauge);
        metrics.websocket_connects.with_label_values(&[kind]).inc();

        let handle = ConnectionHandle::with_credential(rand::random(), self.credential);
        let mut delivery = None;
        let _registration = match self.identity {
            Some(device) => {
                let registration = self.register(device, handle.clone()).await;
                delivery = Some(Delivery {
                    device,
                    cursor: 0,
                    outstanding: HashMap::new(),
                    more: true,
                    queue_empty_sent: false,
                    connected: Instant::now(),
                    backlog: 0,
                    acks: None,
                });
                Some(registration)
            }
            None => None,
        };

        let requests = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
        let mut next_id: u64 = 1;
        let mut last_seen = Instant::now();
        // A client that answers pings (or sends anything) stays; one that does not is closed
        // after the configured idle timeout (90 s by default).
        let idle_timeout = self.state.config.websocket_idle_timeout;
        let mut ping = tokio::time::interval(idle_timeout / PINGS_PER_IDLE_TIMEOUT);
        ping.tick().await;

        if let Some(delivery) = delivery.as_mut() {
            Box::pin(self.fill(delivery, &handle, &mut next_id)).await;
        }

        // The handlers below run boxed: this task's future stays small (an idle socket holds
        // only the select's state), at the price of one allocation per frame or wake-up.
        let close_code = loop {
            // A close requested while a handler ran wins over whatever else is ready: a
            // removed device's socket serves nothing more.
            if let Some(code) = handle.close_code() {
                break Some(code);
            }
            let step = tokio::select! {
                code = handle.wait_for_close() => Step::Close(code),
                _ = self.shutdown.cancelled() => Step::Close(CloseCode::GoingAway.code()),
                _ = self.stalled.cancelled() => {
                    metrics.websocket_write_timeouts.inc();
                    Step::Close(CLOSE_STALLED)
                }
                _ = handle.wait_for_messages(), if delivery.is_some() => {
                    if let Some(delivery) = delivery.as_mut() {
                        delivery.more = true;
                        Box::pin(self.fill(delivery, &handle, &mut next_id)).await;
                    }
                    Step::Continue
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() >= idle_timeout {
                        Step::Close(1000)
                    } else {
                        let write_timeout = self.state.config.websocket_write_timeout;
                        if Box::pin(timed(write_timeout, self.session.ping(b""))).await.is_err() {
                            self.stalled.cancel();
                        }
                        // A safety net under pub/sub: an idle socket re-reads its queue now
                        // and then, so even a lost wake-up delays a message, never strands it.
                        if let Some(delivery) = delivery.as_mut()
                            && delivery.outstanding.is_empty()
                        {
                            delivery.more = true;
                            Box::pin(self.fill(delivery, &handle, &mut next_id)).await;
                        }
                        Step::Continue
                    }
                }
                frame = stream.recv() => {
                    last_seen = Instant::now();
                    match frame {
                        None => break None,
                        Some(Ok(AggregatedMessage::Binary(bytes))) => {
                            Box::pin(self.on_binary(bytes, &mut delivery, &handle, &requests, &mut next_id)).await
                        }
                        Some(Ok(AggregatedMessage::Text(_) | AggregatedMessage::Pong(_))) => Step::Continue,
                        Some(Ok(AggregatedMessage::Ping(payload))) => {
                            let write_timeout = self.state.config.websocket_write_timeout;
                            if Box::pin(timed(write_timeout, self.session.pong(&payload))).await.is_err() {
                                self.stalled.cancel();
                            }
                            Step::Continue
                        }
                        Some(Ok(AggregatedMessage::Close(reason))) => {
                            let code = reason.map(|r| u16::from(r.code)).unwrap_or(1005);
                            metrics.websocket_closes.with_label_values(&[close_label(code)]).inc();
                            let _ = self.session.clone().close(None).await;
                            break None;
                        }
                        Some(Err(error)) => Step::Close(super::refused_frame_code(&error)),
                    }
                }
            };
            if let Step::Close(code) = step {
                break Some(code);
            }
        };

        if let Some(code) = close_code {
            if code == CloseCode::Displaced.code() {
                metrics.websocket_displacements.inc();
            }
            metrics
                .websocket_closes
                .with_label_values(&[close_label(code)])
                .inc();
            // Bounded too: a client that reads nothing would hold this close forever.
            let close = self.session.clone().close(Some(CloseReason {
                code: WsCloseCode::from(code),
                description: None,
            }));
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), close).await;
        }
    }

    async fn register(
        &self,
        device: AuthenticatedDevice,
        handle: Arc<ConnectionHandle>,
    ) -> Registration {
        let (aci, id) = (device.aci, device.device);
        let state = &self.state;
        // A displaced socket on this pod is told to close (and counts itself when it does).
        state.registry.register(aci, id, handle.clone());
        if let Err(e) = state.notifier.subscribe(aci, id).await {
            // The listener is reconnecting: it subscribes the device and re-validates every
            // socket once it is back.
            tracing::warn!(error = %e, "could not subscribe to device events");
        }
        // A removal published before the subscription was not heard: read the device again,
        // now that any later removal will be (both from the store itself, so a removal this
        // read misses publishes after the subscription). A device gone, or linked again at
        // its id with another credential, is not this socket's: 4401 before anything is
        // delivered or served.
        if let Some(credential) = handle.credential {
            match state.authenticator.still_holds(device, credential).await {
                Ok(true) => {}
                Ok(false) => handle.request_close(CloseCode::Removed),
                Err(e) => {
                    tracing::warn!(error = %e, "could not re-validate a new socket's device");
                    handle.request_close(CloseCode::Unavailable);
                }
            }
        }
        // Sockets of this device on other pods close with 4409.
        if let Err(e) = state
            .notifier
            .publish(aci, id, DeviceEvent::Connected(handle.id))
            .await
        {
            tracing::warn!(error = %e, "could not announce the connection");
        }
        Registration {
            state: state.clone(),
            device,
            handle,
        }
    }

    /// Sends queued messages until `MAX_OUTSTANDING` are in flight or the queue is drained;
    /// the first time it is drained, sends the one `queue/empty`.
    async fn fill(
        &mut self,
        delivery: &mut Delivery,
        handle: &ConnectionHandle,
        next_id: &mut u64,
    ) {
        while delivery.more && delivery.outstanding.len() < MAX_OUTSTANDING {
            // A closing socket (its device removed, perhaps already linked again at the same
            // id) delivers nothing more.
            if handle.is_closing() {
                return;
            }
            let want = MAX_OUTSTANDING - delivery.outstanding.len();
            let batch = match self
                .state
                .messages
                .read_queue(delivery.device, delivery.cursor, want)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    // The next wake-up (or reconnect) retries; nothing is lost.
                    tracing::warn!(error = %e, "reading a queue failed");
                    return;
                }
            };
            if handle.is_closing() {
                return;
            }
            let drained = batch.len() < want;
            if !delivery.queue_empty_sent {
                delivery.backlog += batch.len() as u64;
            }
            for message in batch {
                let id = *next_id;
                *next_id += 1;
                delivery.cursor = message.seq;
                delivery.outstanding.insert(
                    id,
                    Outstanding {
                        guid: message.guid,
                        meta: DeliveredMeta::of(&message.envelope),
                    },
                );
                let frame = request_frame(id, "/api/v1/message", Some(message.envelope));
                let timeout = self.state.config.websocket_write_timeout;
                if !write(&mut self.session, frame, timeout, &self.stalled).await {
                    return;
                }
            }
            if drained {
                delivery.more = false;
                if !delivery.queue_empty_sent {
                    delivery.queue_empty_sent = true;
                    let metrics = &self.state.metrics;
                    metrics.queue_backlog.observe(delivery.backlog as f64);
                    metrics
                        .queue_drain
                        .observe(delivery.connected.elapsed().as_secs_f64());
                    let id = *next_id;
                    *next_id += 1;
                    let frame = request_frame(id, "/api/v1/queue/empty", None);
                    let timeout = self.state.config.websocket_write_timeout;
                    write(&mut self.session, frame, timeout, &self.stalled).await;
                }
            }
        }
    }

    async fn on_binary(
        &mut self,
        bytes: Bytes,
        delivery: &mut Option<Delivery>,
        handle: &Arc<ConnectionHandle>,
        requests: &Arc<Semaphore>,
        next_id: &mut u64,
    ) -> Step {
        match ClientFrame::decode(bytes) {
            ClientFrame::Request(request) => {
                // A closing socket no longer acts as its device (it may have been removed).
                if handle.is_closing() {
                    let timeout = self.state.config.websocket_write_timeout;
                    let frame = response_frame(unauthorized(request.id));
                    write(&mut self.session, frame, timeout, &self.stalled).await;
                    return Step::Continue;
                }
                let Ok(permit) = Arc::clone(requests).acquire_owned().await else {
                    return Step::Close(1011);
                };
                let tunnel = self.tunnel.clone();
                let mut session = self.session.clone();
                let identity = match self.identity {
                    Some(device) => TunnelIdentity::Device(device),
                    None => TunnelIdentity::Anonymous,
                };
                let peer = self.peer;
                let handle = handle.clone();
                let (stalled, timeout) = (
                    self.stalled.clone(),
                    self.state.config.websocket_write_timeout,
                );
                actix_web::rt::spawn(async move {
                    // The socket began to close since: refused too.
                    let response = if handle.is_closing() {
                        unauthorized(request.id)
                    } else {
                        tunnel.handle(request, identity, peer).await
                    };
                    write(&mut session, response_frame(response), timeout, &stalled).await;
                    drop(permit);
                });
                Step::Continue
            }
            ClientFrame::Response(response) => {
                if let Some(delivery) = delivery.as_mut() {
                    self.on_response(delivery, handle, response, next_id).await;
                }
                Step::Continue
            }
            ClientFrame::Malformed => Step::Close(1007),
        }
    }

    async fn on_response(
        &mut self,
        delivery: &mut Delivery,
        handle: &ConnectionHandle,
        response: WebSocketResponseMessage,
        next_id: &mut u64,
    ) {
        let Some(outstanding) = response.id.and_then(|id| delivery.outstanding.remove(&id)) else {
            return;
        };
        let status = response.status.unwrap_or(0);
        if (200..300).contains(&status) {
            let acks = delivery.acks.get_or_insert_with(|| {
                let (acks, pending) = tokio::sync::mpsc::channel(ACK_BACKLOG);
                actix_web::rt::spawn(apply_acks(self.state.clone(), delivery.device, pending));
                acks
            });
            // Fails only if the ack task is gone, which it is not while this socket runs.
            let _ = acks.send((outstanding.guid, outstanding.meta)).await;
        }
        // Refill in batches: waiting until half the window is free turns a backlog's drain
        // into one queue read per 32 messages instead of one per acknowledgement.
        if delivery.more && delivery.outstanding.len() <= REFILL_AT {
            self.fill(delivery, handle, next_id).await;
        }
    }
}

/// What a binary frame from the client is. Pure, so the fuzz target `websocket_frame` drives
/// exactly the decoding the socket task does.
#[derive(Debug)]
pub enum ClientFrame {
    Request(WebSocketRequestMessage),
    Response(WebSocketResponseMessage),
    /// Not a `WebSocketMessage`, or a type without its part: the socket closes with 1007.
    Malformed,
}

impl ClientFrame {
    pub fn decode(bytes: Bytes) -> Self {
        let Ok(message) = WebSocketMessage::decode(bytes) else {
            return Self::Malformed;
        };
        match (message.r#type, message.request, message.response) {
            (Some(t), Some(request), _) if t == web_socket_message::Type::Request as i32 => {
                Self::Request(request)
            }
            (Some(t), _, Some(response)) if t == web_socket_message::Type::Response as i32 => {
                Self::Response(response)
            }
            _ => Self::Malformed,
        }
    }
}

/// Close codes as bounded metric labels.
pub(super) fn close_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1005 => "1005",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1011 => "1011",
        4401 => "4401",
        4409 => "4409",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    /// Every idle socket holds this task: it must stay small (ARCHITECTURE.md, "Memory per
    /// idle socket"). The handlers it awaits are boxed; were one inlined again (or the
    /// connection stored twice), the task would grow past 2 KiB.
    #[test]
    fn the_socket_task_stays_small() {
        fn output_size<F, A, B, C, R>(_: F) -> usize
        where
            F: FnOnce(A, B, C) -> R,
        {
            std::mem::size_of::<R>()
        }
        let size = output_size(super::Connection::run);
        eprintln!("socket task: {size} bytes");
        assert!(size <= 1280, "the socket task is {size} bytes");
    }
}
