//! What one connection of the public listener may hold: a per-client-address count of open
//! connections (taken when the connection is accepted, given back when it closes), and a
//! deadline on each request body. actix bounds the head (`client_request_timeout`) and the
//! routes bound the body's size; this bounds the body's time, so a trickled or stalled body
//! is answered 408, dropped (its buffer freed) and its connection closed.

use std::cell::Cell;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::limits::clients::{ClientHold, PerClient};

/// Attached to every accepted connection of the public listener (`HttpServer::on_connect`),
/// dropped with it. Tunnelled requests have none, which is how they are told apart.
pub enum ConnectionAdmission {
    /// Within its client's cap (or no cap applies); the hold gives the place back.
    Admitted(#[allow(dead_code)] ClientHold),
    /// Over its client's cap: its requests are answered 429 and the connection closed.
    Refused,
}

impl ConnectionAdmission {
    /// Counts a new connection from `peer` against `caps`.
    pub fn admit(caps: &Arc<PerClient>, peer: IpAddr) -> Self {
        match caps.try_acquire(peer) {
            Some(hold) => Self::Admitted(hold),
            None => Self::Refused,
        }
    }
}

/// The error a body stream yields once its deadline passed.
fn timed_out() -> PayloadError {
    PayloadError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "request body timed out",
    ))
}

/// Whether a payload error is the body deadline (handlers answer 408 for it).
pub fn is_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// `payload` with a deadline: past `deadline` it yields the timeout error and then ends.
/// The timer is only created once the body is not all there yet (most bodies arrive with
/// their head), so a request whose body is complete costs no timer. `fired` tells the
/// middleware afterwards.
pub fn with_deadline(payload: Payload, deadline: Instant, fired: Rc<Cell<bool>>) -> Payload {
    let stream = DeadlineBody {
        inner: payload,
        deadline,
        idle: None,
        timer: None,
        fired,
    };
    Payload::Stream {
        payload: Box::pin(stream),
    }
}

/// `payload` with an idle deadline: it times out as [`with_deadline`] does once `idle`
/// passes without a chunk (the deadline moves with every chunk that arrives).
pub fn with_idle_deadline(payload: Payload, idle: Duration, fired: Rc<Cell<bool>>) -> Payload {
    let stream = DeadlineBody {
        inner: payload,
        deadline: Instant::now() + idle,
        idle: Some(idle),
        timer: None,
        fired,
    };
    Payload::Stream {
        payload: Box::pin(stream),
    }
}

struct DeadlineBody {
    inner: Payload,
    deadline: Instant,
    /// Set for an idle deadline: how far each chunk moves it.
    idle: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    fired: Rc<Cell<bool>>,
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.fired.get() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            if let (Some(idle), Some(Ok(_))) = (this.idle, &item) {
                this.deadline = Instant::now() + idle;
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(this.deadline);
                }
            }
            return Poll::Ready(item);
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            this.fired.set(true);
            // Let go of what was buffered now, not when the handler drops the stream.
            this.inner = Payload::None;
            return Poll::Ready(Some(Err(timed_out())));
        }
        Poll::Pending
    }
}
