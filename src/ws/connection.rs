//! A device's socket (or an anonymous one): it answers tunnelled requests and, when
//! authenticated, delivers the device's queue through its `DeliveryWindow` and closes when
//! the device connects elsewhere (4409) or is removed (4401). Everything every socket does
//! (pings, idle and write timeouts, shutdown, the close) is the loop's, in `socket`.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::web;
use bytes::Bytes;
use tokio::sync::Semaphore;

use super::frames::{self, ClientFrame};
use super::socket::{self, Kind, Socket, Step, Wake};
use super::tunnel::{Tunnel, TunnelIdentity};
use super::window::DeliveryWindow;
use crate::delivery::{CloseCode, ConnectionHandle, HandleEvent};
use crate::domain::accounts::CredentialDigest;
use crate::identity::AuthenticatedDevice;
use crate::limits::sockets::SocketSlot;
use crate::proto::textsecure::WebSocketResponseMessage;
use crate::service::presence::Presence;
use crate::state::AppState;

pub use super::window::MAX_OUTSTANDING;

/// Tunnelled requests served at once per socket; more wait their turn.
const MAX_CONCURRENT_REQUESTS: usize = 16;

pub struct Connection {
    state: web::Data<AppState>,
    tunnel: Rc<Tunnel>,
    /// The client's address (its tunnelled requests are limited by it).
    peer: IpAddr,
    /// How the registry (and other pods, through it) wake or close this socket. Carries the
    /// credential the socket authenticated with: the socket lives only while its device
    /// still has it.
    handle: Arc<ConnectionHandle>,
    /// An authenticated socket's: its device and what it delivers.
    window: Option<DeliveryWindow>,
    presence: Option<Presence>,
    requests: Arc<Semaphore>,
}

impl Connection {
    pub fn new(
        state: web::Data<AppState>,
        tunnel: Rc<Tunnel>,
        identity: Option<(AuthenticatedDevice, CredentialDigest)>,
        peer: IpAddr,
    ) -> Self {
        let handle = ConnectionHandle::with_credential(
            state.registry.connection_id(),
            identity.map(|(_, credential)| credential),
        );
        Self {
            state,
            tunnel,
            peer,
            handle,
            window: identity.map(|(device, _)| DeliveryWindow::new(device)),
            presence: None,
            requests: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
        }
    }

    /// The socket's task (`socket::serve`: the connection and its stream are stored once).
    pub fn run(
        self,
        session: actix_ws::Session,
        stream: actix_ws::MessageStream,
        slot: SocketSlot,
    ) -> impl std::future::Future<Output = ()> + 'static {
        socket::serve(self.state.clone(), session, stream, self, slot)
    }

    /// The device an authenticated socket acts as.
    fn device(&self) -> Option<AuthenticatedDevice> {
        self.window.as_ref().map(DeliveryWindow::device)
    }

    /// Sends the window's worth of queued messages, if this socket delivers.
    async fn fill(&mut self, socket: &mut Socket) {
        if let Some(window) = self.window.as_mut() {
            window.fill(&self.state, socket, &self.handle).await;
        }
    }

    /// Serves a tunnelled request on a task of its own (at most `MAX_CONCURRENT_REQUESTS`
    /// at once: past that the socket stops reading until one finishes).
    async fn on_request(
        &mut self,
        socket: &mut Socket,
        request: crate::proto::textsecure::WebSocketRequestMessage,
    ) -> Step {
        // A closing socket no longer acts as its device (it may have been removed).
        if self.handle.is_closing() {
            socket
                .write(frames::response(unauthorized(request.id)))
                .await;
            return Step::Continue;
        }
        let Ok(permit) = Arc::clone(&self.requests).acquire_owned().await else {
            return Step::Close(CloseCode::Unavailable);
        };
        let tunnel = self.tunnel.clone();
        let mut writer = socket.writer();
        let identity = match self.device() {
            Some(device) => TunnelIdentity::Device(device),
            None => TunnelIdentity::Anonymous,
        };
        let (peer, handle) = (Some(SocketAddr::new(self.peer, 0)), self.handle.clone());
        actix_web::rt::spawn(async move {
            // The socket began to close since: refused too.
            let response = if handle.is_closing() {
                unauthorized(request.id)
            } else {
                tunnel.handle(request, identity, peer).await
            };
            writer.write(frames::response(response)).await;
            drop(permit);
        });
        Step::Continue
    }
}

/// However the socket ended, a device that still has messages queued gets an urgent push
/// a minute later (PROTOCOL.md 11.4 step 3; cancelled if it reconnects and drains first).
impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(device) = self.device() {
            self.state.wakeups.socket_closed(device.aci, device.device);
        }
    }
}

impl Kind for Connection {
    type Event = ();

    fn label(&self) -> &'static str {
        if self.window.is_some() {
            "authenticated"
        } else {
            "unauthenticated"
        }
    }

    async fn start(&mut self, socket: &mut Socket) {
        if let Some(device) = self.device() {
            let presence = self
                .state
                .presence
                .connect(device, self.handle.clone())
                .await;
            self.presence = Some(presence);
            // It drains its queue now: no scheduled push is needed (PROTOCOL.md 11.4 step 4).
            self.state.wakeups.draining(device.aci, device.device);
            // Boxed on its own: a connect storm leaves thousands of sockets waiting in
            // `connect` (their subscriptions go to Redis one at a time), and each waiting
            // start should hold what connecting needs, not the larger delivery state too.
            Box::pin(self.fill(socket)).await;
        }
    }

    fn handle(&self) -> &Arc<ConnectionHandle> {
        &self.handle
    }

    async fn next_event(&mut self) -> Wake<()> {
        // An anonymous socket's handle is never registered: it never fires.
        match self.handle.next_event().await {
            HandleEvent::Close(code) => Wake::Close(code),
            HandleEvent::MessagesAvailable => Wake::Event(()),
        }
    }

    async fn on_event(&mut self, socket: &mut Socket, _: ()) -> Step {
        if let Some(window) = self.window.as_mut() {
            window.wake();
        }
        self.fill(socket).await;
        Step::Continue
    }

    async fn on_binary(&mut self, socket: &mut Socket, frame: Bytes) -> Step {
        match ClientFrame::decode(frame) {
            ClientFrame::Request(request) => self.on_request(socket, request).await,
            ClientFrame::Response(response) => {
                if let Some(window) = self.window.as_mut() {
                    window
                        .on_response(&self.state, socket, &self.handle, response)
                        .await;
                }
                Step::Continue
            }
            ClientFrame::Malformed => Step::Close(CloseCode::Malformed),
        }
    }

    async fn on_tick(&mut self, socket: &mut Socket) {
        // A safety net under pub/sub: an idle socket re-reads its queue now and then, so
        // even a lost wake-up delays a message, never strands it.
        if let Some(window) = self.window.as_mut()
            && window.is_idle()
        {
            window.wake();
            self.fill(socket).await;
        }
    }
}

/// The answer to a tunnelled request on a socket that is closing: its identity may be gone.
fn unauthorized(id: Option<u64>) -> WebSocketResponseMessage {
    super::tunnel::error_message(id, &crate::error::AppError::Unauthorized)
}

#[cfg(test)]
mod tests {
    /// Every idle socket holds this task: it must stay small (docs/operations.md, "Memory
    /// per idle socket"). The handlers it awaits are boxed; were one inlined again (or the
    /// connection stored twice), the task would grow past 2 KiB. The bound sits just above
    /// today's 1,128 bytes (debug): growth shows here first, and `connections` then says
    /// what it costs (loadtests/RESULTS.md, "Issue 15").
    #[test]
    fn the_socket_task_stays_small() {
        fn output_size<F, A, B, C, D, R>(_: F) -> usize
        where
            F: FnOnce(A, B, C, D) -> R,
        {
            std::mem::size_of::<R>()
        }
        let size = output_size(super::Connection::run);
        eprintln!("socket task: {size} bytes");
        assert!(size <= 1152, "the socket task is {size} bytes");
    }
}
