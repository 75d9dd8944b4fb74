//! The delivery window of an authenticated socket: at most `MAX_OUTSTANDING` unacknowledged
//! messages in flight (the queue stays in the store, not in the socket's memory), a cursor
//! past the last one sent, one `queue/empty` after the first drain, and an ack task that
//! removes acknowledged messages in batches off the socket's task.

use std::time::Instant;

use actix_web::web;
use tokio::sync::mpsc;

use super::socket::Socket;
use crate::delivery::ConnectionHandle;
use crate::domain::messages::DeliveryAck;
use crate::identity::AuthenticatedDevice;
use crate::proto::textsecure::WebSocketResponseMessage;
use crate::state::AppState;

/// Unacknowledged deliveries in flight per socket.
pub const MAX_OUTSTANDING: usize = 64;
/// A socket reads more of its queue once this few deliveries are still unacknowledged.
const REFILL_AT: usize = MAX_OUTSTANDING / 2;
/// Acknowledgements waiting for the socket's ack task; when full, the socket stops reading
/// (back-pressure on a client that acks faster than the store removes).
const ACK_BACKLOG: usize = 2 * MAX_OUTSTANDING;

pub(super) struct DeliveryWindow {
    device: AuthenticatedDevice,
    /// Position of the last message sent; the next read starts after it.
    cursor: u64,
    /// By server request id, oldest first (at most `MAX_OUTSTANDING`: a scan is cheaper
    /// than a hash map, and smaller in every idle socket).
    outstanding: Vec<(u64, DeliveryAck)>,
    /// Whether the queue may hold more than what was read.
    more: bool,
    queue_empty_sent: bool,
    /// When the socket connected and how many messages it found queued (metrics).
    connected: Instant,
    backlog: u64,
    /// To the socket's ack task: acknowledgements are applied off the socket's task, so a
    /// slow removal (or the receipts it sends) never holds up reads and deliveries, and in
    /// batches, one store step for whatever arrived meanwhile. Made on the first
    /// acknowledgement: an idle socket holds no channel and no task.
    acks: Option<mpsc::Sender<DeliveryAck>>,
}

impl DeliveryWindow {
    pub(super) fn new(device: AuthenticatedDevice) -> Self {
        Self {
            device,
            cursor: 0,
            outstanding: Vec::new(),
            more: true,
            queue_empty_sent: false,
            connected: Instant::now(),
            backlog: 0,
            acks: None,
        }
    }

    pub(super) fn device(&self) -> AuthenticatedDevice {
        self.device
    }

    /// The queue may hold more (a wake-up, or the idle re-read).
    pub(super) fn wake(&mut self) {
        self.more = true;
    }

    /// Nothing is in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Sends queued messages until `MAX_OUTSTANDING` are in flight or the queue is drained;
    /// the first time it is drained, sends the one `queue/empty`.
    pub(super) async fn fill(
        &mut self,
        state: &AppState,
        socket: &mut Socket,
        handle: &ConnectionHandle,
    ) {
        while self.more && self.outstanding.len() < MAX_OUTSTANDING {
            // A closing socket (its device removed, perhaps already linked again at the same
            // id) delivers nothing more.
            if handle.is_closing() {
                return;
            }
            let want = MAX_OUTSTANDING - self.outstanding.len();
            let batch = match state
                .messages
                .read_queue(self.device, self.cursor, want)
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
            if !self.queue_empty_sent {
                self.backlog += batch.len() as u64;
            }
            for delivery in batch {
                let id = socket.next_id();
                self.cursor = delivery.seq;
                self.outstanding.push((id, delivery.ack));
                let frame =
                    super::frames::request(id, "/api/v1/message", Some(delivery.envelope), true);
                if !socket.write(frame).await {
                    return;
                }
            }
            if drained {
                self.more = false;
                if !self.queue_empty_sent {
                    self.queue_empty_sent = true;
                    let metrics = &state.metrics;
                    metrics.queue_backlog.observe(self.backlog as f64);
                    metrics
                        .queue_drain
                        .observe(self.connected.elapsed().as_secs_f64());
                    socket.request("/api/v1/queue/empty", None, true).await;
                }
            }
        }
    }

    /// The client's answer to a delivery: a 2xx acknowledges it (removed by the ack task);
    /// either way its slot in the window is free again.
    pub(super) async fn on_response(
        &mut self,
        state: &web::Data<AppState>,
        socket: &mut Socket,
        handle: &ConnectionHandle,
        response: WebSocketResponseMessage,
    ) {
        let Some(position) = response
            .id
            .and_then(|id| self.outstanding.iter().position(|(sent, _)| *sent == id))
        else {
            return;
        };
        let (_, ack) = self.outstanding.remove(position);
        let status = response.status.unwrap_or(0);
        if (200..300).contains(&status) {
            let acks = self.acks.get_or_insert_with(|| {
                let (acks, pending) = mpsc::channel(ACK_BACKLOG);
                actix_web::rt::spawn(apply_acks(state.clone(), self.device, pending));
                acks
            });
            // Fails only if the ack task is gone, which it is not while this socket runs.
            let _ = acks.send(ack).await;
        }
        // Refill in batches: waiting until half the window is free turns a backlog's drain
        // into one queue read per 32 messages instead of one per acknowledgement.
        if self.more && self.outstanding.len() <= REFILL_AT {
            self.fill(state, socket, handle).await;
        }
    }
}

/// Applies a socket's acknowledgements in batches until the socket's task drops its sender
/// (what was already acknowledged is still applied then).
async fn apply_acks(
    state: web::Data<AppState>,
    device: AuthenticatedDevice,
    mut acks: mpsc::Receiver<DeliveryAck>,
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
