//! The request tunnel: a `WebSocketRequestMessage` becomes an HTTP request to the same
//! actix application (same route table, extractors, handlers, errors, limits and metrics),
//! and its response becomes the `WebSocketResponseMessage` with the request's id.
//!
//! The socket's identity travels as a request extension (`TunnelIdentity`), which the
//! authentication extractors prefer over any `Authorization` header: inside the tunnel that
//! header is ignored, except by the endpoints that read it as a new password (registration).

use std::net::SocketAddr;
use std::rc::Rc;

use actix_http::Request;
use actix_http::header::{HeaderName, HeaderValue};
use actix_service::Service;
use actix_service::boxed::RcService;
use actix_web::dev::ServiceResponse;
use actix_web::{HttpMessage, ResponseError, web};
use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::error::AppError;
use crate::proto::textsecure::{WebSocketRequestMessage, WebSocketResponseMessage};
use crate::state::AppState;

pub use crate::identity::TunnelIdentity;

/// The application a tunnel serves requests with, as one service.
pub type AppService = RcService<Request, ServiceResponse, actix_web::Error>;

/// Builds the application a tunnel serves: `api::tunnel_app`, handed in by the composition
/// root, so that the socket layer never names the API above it.
pub type AppBuilder =
    fn(
        web::Data<AppState>,
    ) -> futures_util::future::LocalBoxFuture<'static, Result<AppService, AppError>>;

/// One per worker thread: the in-process copy of the application that serves tunnelled
/// requests, built on first use.
pub struct Tunnel {
    state: web::Data<AppState>,
    build: AppBuilder,
    service: OnceCell<AppService>,
}

/// Headers a client may not set inside the tunnel: the address is the socket's.
const DROPPED_HEADERS: [&str; 2] = ["x-forwarded-for", "forwarded"];

/// The largest tunnelled response body (a prekey bundle with six devices is about 20 KiB).
const MAX_RESPONSE_BODY: usize = 1024 * 1024;

impl Tunnel {
    pub fn new(state: web::Data<AppState>, build: AppBuilder) -> Self {
        Self {
            state,
            build,
            service: OnceCell::new(),
        }
    }

    async fn service(&self) -> Result<&AppService, AppError> {
        self.service
            .get_or_try_init(|| (self.build)(self.state.clone()))
            .await
    }

    /// Serves one tunnelled request. Never fails: problems become error responses.
    pub async fn handle(
        &self,
        request: WebSocketRequestMessage,
        identity: TunnelIdentity,
        peer: Option<SocketAddr>,
    ) -> WebSocketResponseMessage {
        let id = request.id;
        match self.call(request, identity, peer).await {
            Ok(response) => WebSocketResponseMessage { id, ..response },
            Err(error) => error_message(id, &error),
        }
    }

    async fn call(
        &self,
        request: WebSocketRequestMessage,
        identity: TunnelIdentity,
        peer: Option<SocketAddr>,
    ) -> Result<WebSocketResponseMessage, AppError> {
        let http = to_http_request(request, identity, peer)?;
        let service = self.service().await?;
        let response = match service.call(http).await {
            Ok(response) => response.into_parts().1,
            Err(error) => error.error_response(),
        };
        let (status, headers) = (response.status(), response.headers().clone());
        let body = actix_web::body::to_bytes_limited(response.into_body(), MAX_RESPONSE_BODY)
            .await
            .map_err(|_| AppError::internal(anyhow::anyhow!("tunnelled response too large")))?
            .map_err(|_| AppError::internal(anyhow::anyhow!("tunnelled response body failed")))?;
        Ok(message_of(None, status, &headers, body))
    }
}

/// An HTTP response as the tunnel's answer: status, `name:value` headers, body.
fn message_of(
    id: Option<u64>,
    status: actix_http::StatusCode,
    headers: &actix_http::header::HeaderMap,
    body: Bytes,
) -> WebSocketResponseMessage {
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| format!("{}:{v}", name.as_str()))
        })
        .collect();
    WebSocketResponseMessage {
        id,
        status: Some(u32::from(status.as_u16())),
        message: Some(status.canonical_reason().unwrap_or("").to_owned()),
        headers,
        body: Some(body),
    }
}

/// Turns a tunnelled request into the HTTP request the application serves: verb, absolute
/// path, `name:value` headers (minus the ones only the socket may set) and body. Pure, so the
/// fuzz target `websocket_frame` drives exactly this code with client bytes.
pub fn to_http_request(
    request: WebSocketRequestMessage,
    identity: TunnelIdentity,
    peer: Option<SocketAddr>,
) -> Result<Request, AppError> {
    let verb = request.verb.unwrap_or_default();
    let method = actix_http::Method::from_bytes(verb.as_bytes())
        .map_err(|_| AppError::bad_request("invalid verb"))?;
    let path = request.path.unwrap_or_default();
    let uri: actix_http::Uri = path
        .parse()
        .map_err(|_| AppError::bad_request("invalid path"))?;
    if uri.scheme().is_some() || !path.starts_with('/') {
        return Err(AppError::bad_request("the path must be absolute"));
    }
    let body = request.body.unwrap_or_default();
    let mut http = Request::with_payload(actix_http::Payload::from(body));
    let head = http.head_mut();
    head.method = method;
    head.uri = uri;
    head.peer_addr = peer;
    for header in &request.headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(AppError::bad_request("headers must be name:value"));
        };
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| AppError::bad_request("invalid header name"))?;
        if DROPPED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::try_from(value.trim())
            .map_err(|_| AppError::bad_request("invalid header value"))?;
        head.headers.append(name, value);
    }
    http.extensions_mut().insert(identity);
    Ok(http)
}

/// An error as the tunnel's answer, for a request the application never saw (malformed, or
/// on a closing socket): rendered by the one renderer every error has
/// (`AppError::error_response`, as over HTTP), with the timestamp header the application's
/// middleware adds to everything else.
pub(super) fn error_message(id: Option<u64>, error: &AppError) -> WebSocketResponseMessage {
    let mut response = error.error_response();
    response.headers_mut().insert(
        HeaderName::from_static("x-signal-timestamp"),
        HeaderValue::from(crate::domain::clock::now_ms()),
    );
    let (status, headers) = (response.status(), response.headers().clone());
    let body =
        actix_web::body::MessageBody::try_into_bytes(response.into_body()).unwrap_or_default();
    message_of(id, status, &headers, body)
}

/// Builds the per-worker tunnel; the composition root calls it in the server factory.
pub fn per_worker(state: web::Data<AppState>, build: AppBuilder) -> Rc<Tunnel> {
    Rc::new(Tunnel::new(state, build))
}
