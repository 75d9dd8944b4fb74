//! The one application error and its one mapping to responses: JSON `{"code","message"}`,
//! the client's message kept apart from the logged cause, nothing internal in a 5xx body.
//! The WebSocket tunnel renders the same type, so HTTP and tunnelled errors cannot drift.

use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::DomainError;
use crate::storage::StorageError;

/// How long a sender is told to wait when a recipient's queue is full: the queue only
/// drains when its device comes online, so an early retry would fail again.
pub const QUEUE_FULL_RETRY_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed input; the message says what was wrong.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// 401 of an attachment upload whose token is missing, forged, expired or for another
    /// key; the message says which.
    #[error("{0}")]
    UploadTokenRejected(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// 410: what the request names existed and is gone for good (an expired upload).
    #[error("{0}")]
    Gone(String),
    /// 412: a precondition header is wrong (a TUS version sealpost does not speak).
    #[error("{0}")]
    PreconditionFailed(String),
    /// 423: another request holds what this one would change (an upload being appended to).
    #[error("{0}")]
    Locked(String),
    /// 460 (TUS's checksum extension): the upload's bytes do not match its checksum; the
    /// upload is dropped.
    #[error("the upload does not match its X-Signal-Checksum-Sha256")]
    ChecksumMismatch,
    /// 409 with the device lists a sender must fix.
    #[error("mismatched devices")]
    MismatchedDevices { missing: Vec<u8>, extra: Vec<u8> },
    /// 410 with the devices whose registration id changed.
    #[error("stale devices")]
    StaleDevices(Vec<u8>),
    /// 411: the account has as many devices as it may.
    #[error("too many devices")]
    DeviceLimit { current: usize, max: usize },
    /// 409 of a multi-recipient send: per recipient, its missing and extra devices.
    #[error("mismatched devices")]
    MultiMismatchedDevices(Vec<(crate::domain::ids::Aci, Vec<u8>, Vec<u8>)>),
    /// 410 of a multi-recipient send: per recipient, its stale devices.
    #[error("stale devices")]
    MultiStaleDevices(Vec<(crate::domain::ids::Aci, Vec<u8>)>),
    #[error("request body too large")]
    PayloadTooLarge,
    /// 416 of a download whose `Range` lies outside the object.
    #[error("the requested range lies outside the attachment")]
    RangeNotSatisfiable,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A signature that does not verify.
    #[error("{0}")]
    InvalidSignature(String),
    /// A push registration Signal's validation refuses: an empty or malformed token or
    /// WebPush subscription (PROTOCOL.md 11.1, 11.2).
    #[error("{0}")]
    Unprocessable(String),
    #[error("rate limit exceeded")]
    RateLimited { retry_after: Duration },
    /// 429: a recipient device's queue is at its cap (`queue_max_messages` or
    /// `queue_max_bytes`); nothing of the send was queued. It drains when the device reads.
    #[error("the recipient's message queue is full")]
    QueueFull,
    /// 503: this process streams as many uploads as it may at once; a retry (or another
    /// pod) can serve. The message says what is busy.
    #[error("{0}")]
    Busy(String),
    /// This process holds as many sockets as it may; another pod (or a retry) can serve.
    #[error("too many connections, try again later")]
    Overloaded,
    /// A request body (or head) did not arrive in time; the connection is closed after this.
    #[error("request not received in time")]
    RequestTimeout,
    /// This client address holds as many sockets or connections as one address may.
    #[error("too many connections from this address, try again later")]
    ClientLimit,
    /// A store does not answer; the detail goes to the log only.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A store answered with an error we did not expect; the detail goes to the log only.
    #[error("internal server error")]
    Store(#[source] anyhow::Error),
    /// Anything else that is our fault; the detail goes to the log only.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

// As clients read it and the OpenAPI document shows it; `ErrorBody` below is the same
// shape, borrowed, for writing it.
/// The error body every endpoint uses.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorJson {
    pub code: u16,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    message: &'a str,
}

impl AppError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// The message a client sees. For 5xx it is generic by construction.
    pub fn client_message(&self) -> String {
        self.to_string()
    }

    /// The JSON body a client sees (HTTP and tunnel alike).
    pub fn body(&self) -> Vec<u8> {
        match self {
            AppError::MismatchedDevices { missing, extra } => {
                return serde_json::to_vec(
                    &serde_json::json!({"missingDevices": missing, "extraDevices": extra}),
                )
                .unwrap_or_default();
            }
            AppError::StaleDevices(stale) => {
                return serde_json::to_vec(&serde_json::json!({"staleDevices": stale}))
                    .unwrap_or_default();
            }
            AppError::MultiMismatchedDevices(entries) => {
                let body: Vec<_> = entries
                    .iter()
                    .map(|(uuid, missing, extra)| {
                        serde_json::json!({"uuid": uuid, "devices": {"missingDevices": missing, "extraDevices": extra}})
                    })
                    .collect();
                return serde_json::to_vec(&body).unwrap_or_default();
            }
            AppError::DeviceLimit { current, max } => {
                return serde_json::to_vec(&serde_json::json!({"current": current, "max": max}))
                    .unwrap_or_default();
            }
            AppError::MultiStaleDevices(entries) => {
                let body: Vec<_> = entries
                    .iter()
                    .map(|(uuid, stale)| serde_json::json!({"uuid": uuid, "devices": {"staleDevices": stale}}))
                    .collect();
                return serde_json::to_vec(&body).unwrap_or_default();
            }
            _ => {}
        }
        let message = self.client_message();
        serde_json::to_vec(&ErrorBody {
            code: self.status_code().as_u16(),
            message: &message,
        })
        .unwrap_or_default()
    }

    /// `unavailable` or `backend` when a store caused this error (the metric label).
    pub fn store_failure(&self) -> Option<&'static str> {
        match self {
            AppError::Unavailable(_) => Some("unavailable"),
            AppError::Store(_) => Some("backend"),
            _ => None,
        }
    }

    /// Extra headers that belong with this error (`Retry-After` on 429 and 503).
    pub fn headers(&self) -> Vec<(header::HeaderName, String)> {
        match self {
            AppError::RateLimited { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                vec![(header::RETRY_AFTER, secs.max(1).to_string())]
            }
            AppError::Unavailable(_)
            | AppError::Overloaded
            | AppError::Busy(_)
            | AppError::ClientLimit => vec![(header::RETRY_AFTER, "5".to_owned())],
            AppError::QueueFull => vec![(header::RETRY_AFTER, QUEUE_FULL_RETRY_SECS.to_string())],
            _ => Vec::new(),
        }
    }

    fn log(&self) {
        match self {
            AppError::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error")
            }
            AppError::Store(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "store error")
            }
            AppError::Unavailable(cause) => {
                tracing::warn!(error = %format!("{cause:#}"), "store unavailable")
            }
            _ => {}
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized | AppError::UploadTokenRejected(_) => StatusCode::UNAUTHORIZED,
            AppError::Gone(_) => StatusCode::GONE,
            AppError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            AppError::Locked(_) => StatusCode::LOCKED,
            AppError::ChecksumMismatch => {
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST)
            }
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::MismatchedDevices { .. } => StatusCode::CONFLICT,
            AppError::StaleDevices(_) => StatusCode::GONE,
            AppError::MultiMismatchedDevices(_) => StatusCode::CONFLICT,
            AppError::MultiStaleDevices(_) => StatusCode::GONE,
            AppError::DeviceLimit { .. } => StatusCode::LENGTH_REQUIRED,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::InvalidSignature(_) | AppError::Unprocessable(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AppError::RateLimited { .. } | AppError::ClientLimit | AppError::QueueFull => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            AppError::Unavailable(_) | AppError::Overloaded | AppError::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Store(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("application/json");
        for (name, value) in self.headers() {
            response.insert_header((name, value));
        }
        // A half-read body cannot be resynchronised, and a client over its connection cap
        // should not keep this one: both close after the answer.
        if matches!(self, AppError::RequestTimeout | AppError::ClientLimit) {
            response.force_close();
        }
        response.body(self.body())
    }
}

impl From<DomainError> for AppError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(msg) => AppError::BadRequest(msg),
            DomainError::BadSignature(msg) => AppError::InvalidSignature(msg),
            DomainError::Unprocessable(msg) => AppError::Unprocessable(msg),
        }
    }
}

impl From<crate::limits::LimitError> for AppError {
    fn from(e: crate::limits::LimitError) -> Self {
        match e {
            crate::limits::LimitError::Limited { retry_after } => {
                AppError::RateLimited { retry_after }
            }
            crate::limits::LimitError::Store(e) => e.into(),
        }
    }
}

impl From<StorageError> for AppError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(cause) => AppError::Unavailable(cause),
            StorageError::Backend(cause) => AppError::Store(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_say_nothing_internal() {
        let err = AppError::internal(anyhow::anyhow!("password authentication failed for db"));
        let body = String::from_utf8(err.body()).unwrap();
        assert_eq!(body, r#"{"code":500,"message":"internal server error"}"#);
    }

    #[test]
    fn rate_limits_round_retry_after_up_to_whole_seconds() {
        let err = AppError::RateLimited {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(err.headers()[0].1, "2");
        assert_eq!(err.status_code(), StatusCode::TOO_MANY_REQUESTS);
    }
}
