//! The one middleware of the public API (plain and tunnelled requests alike): a request id
//! in the request's log span and the response, `X-Signal-Timestamp` on every response, and
//! the request, latency and store-error metrics by route template (never the raw path).
//! For requests off the network it also applies `bounds`: a connection over its client's
//! cap is answered 429, and a body gets its deadline.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use tracing::Instrument;

use super::bounds::{self, ConnectionAdmission};
use crate::domain::clock::now_ms;
use crate::error::AppError;
use crate::state::AppState;

pub const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static("x-signal-timestamp");
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's `X-Request-Id` when it is sane (1 to 64 characters of `[A-Za-z0-9._:-]`, so
/// it cannot forge log lines or grow them), otherwise a fresh one.
pub fn request_id(given: Option<&HeaderValue>) -> String {
    given
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c))
        })
        .map(str::to_owned)
        // 128 random bits from the thread-local generator: no system call per request.
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

pub async fn observe<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let started = Instant::now();
    let id = request_id(req.headers().get(REQUEST_ID_HEADER));
    let span = tracing::info_span!("request", request_id = %id);
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let metrics = state.as_ref().map(|s| s.metrics.clone());
    let (req, body_timed_out) = bound(req, state.as_ref().map(|s| s.get_ref()));
    let mut res = match req {
        Ok(req) => next
            .call(req)
            .instrument(span.clone())
            .await?
            .map_into_left_body(),
        Err(refused) => refused.map_into_right_body(),
    };
    if body_timed_out.as_ref().is_some_and(|fired| fired.get()) {
        // The rest of the body never comes: whatever the handler answered, the connection
        // cannot serve another request (AppError::RequestTimeout closes it too).
        res.response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        if let Some(metrics) = &metrics {
            metrics.request_body_timeouts.inc();
        }
    }
    let headers = res.headers_mut();
    headers.insert(TIMESTAMP_HEADER, HeaderValue::from(now_ms()));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    if let Some(metrics) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let method = res.request().method().as_str().to_owned();
        let status = res.status().as_u16().to_string();
        let method = match method.as_str() {
            "GET" | "PUT" | "POST" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" => method,
            _ => "other".to_owned(),
        };
        metrics
            .http_requests
            .with_label_values(&[&route, &method, &status])
            .inc();
        metrics
            .http_request_duration
            .with_label_values(&[&route, &method])
            .observe(started.elapsed().as_secs_f64());
        if let Some(kind) = res
            .response()
            .error()
            .and_then(|e| e.as_error::<AppError>())
            .and_then(AppError::store_failure)
        {
            metrics.store_errors.with_label_values(&[kind]).inc();
        }
        span.in_scope(|| {
            tracing::debug!(%route, %method, %status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
        });
    }
    Ok(res)
}

/// Applies `bounds` to a request off the network (tunnelled requests carry no connection
/// data and are bounded by their socket): the connection cap's answer, or the request with
/// its body under the deadline (and the flag that says whether the deadline fired).
#[allow(clippy::type_complexity)]
fn bound(
    req: ServiceRequest,
    state: Option<&AppState>,
) -> (
    Result<ServiceRequest, ServiceResponse>,
    Option<Rc<Cell<bool>>>,
) {
    let (Some(state), Some(admission)) = (state, req.conn_data::<ConnectionAdmission>()) else {
        return (Ok(req), None);
    };
    if matches!(admission, ConnectionAdmission::Refused) {
        state
            .metrics
            .client_limit_refusals
            .with_label_values(&["connections"])
            .inc();
        return (Err(req.error_response(AppError::ClientLimit)), None);
    }
    // A WebSocket's "body" is its frames, bounded by the socket's own timeouts.
    if req.head().upgrade() && crate::ws::is_socket_path(req.path()) {
        return (Ok(req), None);
    }
    let (http, payload) = req.into_parts();
    if matches!(payload, Payload::None) {
        return (Ok(ServiceRequest::from_parts(http, payload)), None);
    }
    let fired = Rc::new(Cell::new(false));
    let timeout = state.config.request_body_timeout;
    // An upload's body may take minutes: it only has to keep moving.
    let payload = if super::uploads::is_upload_path(http.path()) {
        bounds::with_idle_deadline(payload, timeout, fired.clone())
    } else {
        bounds::with_deadline(
            payload,
            tokio::time::Instant::now() + timeout,
            fired.clone(),
        )
    };
    (Ok(ServiceRequest::from_parts(http, payload)), Some(fired))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_request_id_is_kept_and_anything_else_replaced() {
        let kept = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(request_id(Some(&kept)), "abc-123_x.y:z");
        for bad in ["", "has space", "new\tline", &"x".repeat(65)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let id = request_id(Some(&value));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
        assert_eq!(request_id(None).len(), 32);
    }
}
