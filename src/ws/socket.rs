//! The one loop every socket runs, whatever its kind: pings and the idle timeout, the write
//! timeout on every write (a client that stops reading is closed with 1008), shutdown
//! (1001), frame bounds (1009) and protocol errors, the client's close, and a bounded close
//! with one `CloseCode`. A socket kind (`Kind`) says only what is its own: what it does
//! first, what wakes it, and what it does with a binary frame.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseReason, MessageStream, Session};
use bytes::Bytes;

use crate::delivery::{CloseCode, ConnectionHandle};
use crate::limits::sockets::SocketSlot;
use crate::state::AppState;

/// The server pings an idle client this many times per idle timeout before closing.
const PINGS_PER_IDLE_TIMEOUT: u32 = 3;
/// How long the server waits for its close frame to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a socket kind's handler asks of the loop.
pub(super) enum Step {
    Continue,
    Close(CloseCode),
}

/// What wakes a socket kind: a close it was asked for, or an event of its own.
pub(super) enum Wake<E> {
    Close(CloseCode),
    Event(E),
}

/// What one kind of socket does; the loop does everything else. Every handler runs boxed,
/// so the socket's task stays small (an idle socket holds only the loop's state).
pub(super) trait Kind {
    type Event;

    /// The kind's label in the open-socket and connect metrics.
    fn label(&self) -> &'static str;

    /// Runs once, before the loop: registration, the first deliveries or announcement.
    async fn start(&mut self, socket: &mut Socket);

    /// How the socket is asked to close (by the registry, by a stalled write): a requested
    /// close is checked before each turn, so that it wins over whatever else is ready (a
    /// removed device's socket serves nothing more).
    fn handle(&self) -> &Arc<ConnectionHandle>;

    /// Resolves when the kind has something to do, or its handle asks for a close.
    /// Cancel-safe: the loop drops it when something else happens first.
    async fn next_event(&mut self) -> Wake<Self::Event>;

    async fn on_event(&mut self, socket: &mut Socket, event: Self::Event) -> Step;

    async fn on_binary(&mut self, socket: &mut Socket, frame: Bytes) -> Step;

    /// Every ping interval while the client is not idle.
    async fn on_tick(&mut self, socket: &mut Socket);
}

/// The writing side of a socket, cloned into the tasks that answer tunnelled requests.
#[derive(Clone)]
pub(super) struct Writer {
    session: Session,
    timeout: Duration,
    /// Asked to close (1008) when a write waited longer than the write timeout: the client
    /// is not reading.
    handle: Arc<ConnectionHandle>,
}

impl Writer {
    /// Writes `frame` unless the client has not made room for it within the write timeout
    /// (then the socket is marked stalled); `false` when the frame was not written.
    pub(super) async fn write(&mut self, frame: Bytes) -> bool {
        let written = timed(self.timeout, self.session.binary(frame)).await;
        self.settle(written)
    }

    async fn ping(&mut self) -> bool {
        let written = timed(self.timeout, self.session.ping(b"")).await;
        self.settle(written)
    }

    async fn pong(&mut self, payload: &[u8]) -> bool {
        let written = timed(self.timeout, self.session.pong(payload)).await;
        self.settle(written)
    }

    fn settle(&self, written: Result<bool, Stalled>) -> bool {
        match written {
            Ok(written) => written,
            Err(Stalled) => {
                self.handle.request_close(CloseCode::Stalled);
                false
            }
        }
    }
}

/// A write the client made no room for within the write timeout.
struct Stalled;

/// Runs one write under `timeout`: `Ok(true)` written, `Ok(false)` the session is closed,
/// `Err(Stalled)` the client is not reading. Every write a socket makes goes through here, so
/// a client that stops reading is closed whatever it provokes the server to write (a client
/// pinging without reading gets no pass).
async fn timed(
    timeout: Duration,
    write: impl std::future::Future<Output = Result<(), actix_ws::Closed>>,
) -> Result<bool, Stalled> {
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => Ok(result.is_ok()),
        Err(_) => Err(Stalled),
    }
}

/// One open socket as its kind sees it: where to write, and the ids of server requests.
pub(super) struct Socket {
    writer: Writer,
    next_id: u64,
}

impl Socket {
    pub(super) async fn write(&mut self, frame: Bytes) -> bool {
        self.writer.write(frame).await
    }

    /// Writes a server request (`PUT path`) with the next request id.
    pub(super) async fn request(
        &mut self,
        path: &str,
        body: Option<Bytes>,
        timestamped: bool,
    ) -> bool {
        let id = self.next_id();
        self.write(super::frames::request(id, path, body, timestamped))
            .await
    }

    /// The id of the next server request.
    pub(super) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(super) fn writer(&self) -> Writer {
        self.writer.clone()
    }
}

/// Keeps the open-socket gauge right however the task ends.
struct OpenGauge(prometheus::IntGauge);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The task of a socket of kind `kind`, holding `slot` until it ends. Built so that the
/// kind, the socket and its stream are stored once in the task (an `async fn` would keep a
/// moved copy of each argument beside what it makes of them: hundreds of bytes more per
/// idle socket).
pub(super) fn serve<K: Kind + 'static>(
    state: web::Data<AppState>,
    session: Session,
    stream: MessageStream,
    kind: K,
    slot: SocketSlot,
) -> impl std::future::Future<Output = ()> + 'static {
    let mut stream = stream
        .max_frame_size(super::MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(super::MAX_FRAME_BYTES);
    let mut socket = Socket {
        writer: Writer {
            session,
            timeout: state.config.websocket_write_timeout,
            handle: kind.handle().clone(),
        },
        next_id: 1,
    };
    let mut kind = kind;
    async move {
        let _slot = slot;
        run(&state, &mut socket, &mut stream, &mut kind).await
    }
}

async fn run<K: Kind>(
    state: &AppState,
    socket: &mut Socket,
    stream: &mut AggregatedMessageStream,
    kind: &mut K,
) {
    let metrics = &state.metrics;
    let label = kind.label();
    let gauge = metrics.websockets_open.with_label_values(&[label]);
    gauge.inc();
    let _open = OpenGauge(gauge);
    metrics.websocket_connects.with_label_values(&[label]).inc();
    // Not boxed: a connect storm leaves thousands of sockets waiting here (their
    // subscriptions reach Redis one at a time), and inline the wait shares the task's
    // storage with the loop's select instead of holding an allocation of its own.
    kind.start(socket).await;

    // A client that answers pings (or sends anything) stays; one that does not is closed
    // after the configured idle timeout (90 s by default).
    let idle_timeout = state.config.websocket_idle_timeout;
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval(idle_timeout / PINGS_PER_IDLE_TIMEOUT);
    ping.tick().await;
    let close = loop {
        if let Some(code) = kind.handle().close_code() {
            break Some(code);
        }
        let step = tokio::select! {
            wake = kind.next_event() => match wake {
                Wake::Close(code) => Step::Close(code),
                Wake::Event(event) => Box::pin(kind.on_event(socket, event)).await,
            },
            _ = state.shutdown.cancelled() => Step::Close(CloseCode::GoingAway),
            _ = ping.tick() => {
                if last_seen.elapsed() >= idle_timeout {
                    Step::Close(CloseCode::Idle)
                } else {
                    Box::pin(socket.writer.ping()).await;
                    Box::pin(kind.on_tick(socket)).await;
                    Step::Continue
                }
            }
            frame = stream.recv() => {
                last_seen = Instant::now();
                match frame {
                    None => break None,
                    Some(Ok(AggregatedMessage::Binary(bytes))) => {
                        Box::pin(kind.on_binary(socket, bytes)).await
                    }
                    Some(Ok(AggregatedMessage::Text(_) | AggregatedMessage::Pong(_))) => {
                        Step::Continue
                    }
                    Some(Ok(AggregatedMessage::Ping(payload))) => {
                        Box::pin(socket.writer.pong(&payload)).await;
                        Step::Continue
                    }
                    Some(Ok(AggregatedMessage::Close(reason))) => {
                        let code = reason
                            .map(|r| CloseCode::from_code(u16::from(r.code)))
                            .unwrap_or(CloseCode::NoStatus);
                        metrics.websocket_closes.with_label_values(&[code.label()]).inc();
                        let _ = Box::pin(socket.writer.session.clone().close(None)).await;
                        break None;
                    }
                    Some(Err(error)) => Step::Close(refused_frame_code(&error)),
                }
            }
        };
        if let Step::Close(code) = step {
            break Some(code);
        }
    };

    if let Some(code) = close {
        match code {
            CloseCode::Displaced => metrics.websocket_displacements.inc(),
            CloseCode::Stalled => metrics.websocket_write_timeouts.inc(),
            _ => {}
        }
        metrics
            .websocket_closes
            .with_label_values(&[code.label()])
            .inc();
        // Bounded too: a client that reads nothing would hold this close forever.
        let close = socket.writer.session.clone().close(Some(CloseReason {
            code: actix_ws::CloseCode::from(code.code()),
            description: None,
        }));
        let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, close)).await;
    }
}

/// The close code for a frame the incoming stream refused: 1009 (too big) for a message over
/// `MAX_FRAME_BYTES`, whether it came as one frame (`Overflow`) or as fragments (the
/// aggregator's continuation bound, which actix-ws reports as an I/O error with this text);
/// 1002 (protocol error) for anything else.
fn refused_frame_code(error: &actix_ws::ProtocolError) -> CloseCode {
    match error {
        actix_ws::ProtocolError::Overflow => CloseCode::TooBig,
        actix_ws::ProtocolError::Io(e)
            if e.kind() == std::io::ErrorKind::Other
                && e.to_string() == "Exceeded maximum continuation size" =>
        {
            CloseCode::TooBig
        }
        _ => CloseCode::ProtocolError,
    }
}
