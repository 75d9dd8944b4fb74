//! Request extractors: the authenticated device (and the primary one), the anonymous caller, the requester (device
//! or access key), the client's address, a new device's password and a multi-recipient send,
//! each a type in a handler's signature.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::StreamExt;

use crate::auth::basic::Credentials;
use crate::auth::extract::{UNIDENTIFIED_ACCESS_KEY, access_key_header};
use crate::domain::accounts::AccessKey;
use crate::domain::multi_recipient::MultiRecipientMessage;
use crate::error::AppError;
use crate::identity::{
    Anonymous, AuthenticatedDevice, ClientAddr, PrimaryDevice, Requester, TunnelIdentity,
};
use crate::state::AppState;

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, AppError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("application state missing")))
}

impl FromRequest for ClientAddr {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(state(req).map(|s| ClientAddr::of(req, s.config.trust_forwarded_for)))
    }
}

/// The identity of a request that came through a WebSocket tunnel, if it did.
fn tunnel_identity(req: &HttpRequest) -> Option<TunnelIdentity> {
    req.extensions().get::<TunnelIdentity>().copied()
}

impl FromRequest for AuthenticatedDevice {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Inside the tunnel the socket's identity counts, not the header.
        if let Some(identity) = tunnel_identity(req) {
            return Box::pin(std::future::ready(match identity {
                TunnelIdentity::Device(device) => Ok(device),
                TunnelIdentity::Anonymous => Err(AppError::Unauthorized),
            }));
        }
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        let state = state(req);
        let client = state
            .as_ref()
            .map(|s| ClientAddr::of(req, s.config.trust_forwarded_for))
            .ok();
        Box::pin(async move {
            let state = state?;
            let authenticator = &state.authenticator;
            let header = match header {
                None => return Err(authenticator.reject_unusable(true)),
                Some(Err(_)) => return Err(authenticator.reject_unusable(false)),
                Some(Ok(h)) => h,
            };
            let Some(credentials) = Credentials::from_header(&header) else {
                return Err(authenticator.reject_unusable(false));
            };
            let client = client.unwrap_or(ClientAddr(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
            authenticator.authenticate(&credentials, client.0).await
        })
    }
}

/// A caller that is not authenticated: 400 on an authenticated socket, and with an
/// `Authorization` header whatever its value (over HTTP and in the tunnel alike, where the
/// header authenticates nothing but still says the client meant to), so that both answer
/// the same.
impl FromRequest for Anonymous {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let authenticated = matches!(tunnel_identity(req), Some(TunnelIdentity::Device(_)))
            || req.headers().contains_key(header::AUTHORIZATION);
        std::future::ready(if authenticated {
            Err(AppError::bad_request(
                "this endpoint must be called without authentication",
            ))
        } else {
            Ok(Anonymous)
        })
    }
}

/// The caller, authenticated as its account's primary device; 403 for a linked device.
impl FromRequest for PrimaryDevice {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let device = AuthenticatedDevice::from_request(req, payload);
        Box::pin(async move {
            PrimaryDevice::of(device.await?)
                .ok_or_else(|| AppError::Forbidden("only the primary device may do this".into()))
        })
    }
}

/// A caller that is either an authenticated device or holds the target's access key. Both
/// at once is a 400 (as in Signal); neither is a 401.
impl FromRequest for Requester {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let access_key = req
            .headers()
            .get(UNIDENTIFIED_ACCESS_KEY)
            .map(|v| v.to_str().map(str::to_owned));
        let has_authorization = match tunnel_identity(req) {
            Some(identity) => matches!(identity, TunnelIdentity::Device(_)),
            None => req.headers().contains_key(header::AUTHORIZATION),
        };
        match (has_authorization, access_key) {
            (true, Some(_)) => Box::pin(std::future::ready(Err(AppError::bad_request(
                "send either Authorization or Unidentified-Access-Key, not both",
            )))),
            (true, None) => {
                let device = AuthenticatedDevice::from_request(req, payload);
                Box::pin(async move { device.await.map(Requester::Device) })
            }
            (false, Some(value)) => Box::pin(std::future::ready(
                value
                    .map_err(|_| AppError::Unauthorized)
                    .and_then(|v| access_key_header(&v))
                    .map(Requester::AccessKey),
            )),
            (false, None) => Box::pin(std::future::ready(Err(AppError::Unauthorized))),
        }
    }
}

/// The password a request sets for a new device (registration, linking): the password of its
/// Basic header, whose username part is ignored, as in Signal. 401 without a Basic header,
/// 400 when the password's length is out of bounds.
pub struct NewPassword(pub crate::domain::accounts::Password);

impl FromRequest for NewPassword {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let password = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::basic::parse_basic)
            .ok_or(AppError::Unauthorized)
            .and_then(|(_, password)| {
                crate::domain::accounts::Password::parse(password).map_err(AppError::from)
            });
        std::future::ready(password.map(NewPassword))
    }
}

/// Largest multi-recipient body (a few thousand recipients plus the shared ciphertext).
pub const MULTI_RECIPIENT_LIMIT: usize = 2 * 1024 * 1024;
pub const MULTI_RECIPIENT_CONTENT_TYPE: &str = "application/vnd.signal-messenger.mrm";

/// The request of a multi-recipient send, checked in this order: `Content-Type:
/// application/vnd.signal-messenger.mrm` (415 otherwise), the `Unidentified-Access-Key`
/// header when present (the recipients' combined key; 401 when malformed), then the body,
/// read to at most `MULTI_RECIPIENT_LIMIT` bytes (a JSON 413 past it, 408 when it stops
/// arriving) and parsed (400).
pub struct MultiRecipientSend {
    pub access_key: Option<AccessKey>,
    pub message: MultiRecipientMessage,
}

impl FromRequest for MultiRecipientSend {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with(MULTI_RECIPIENT_CONTENT_TYPE) {
            return Box::pin(std::future::ready(Err(AppError::UnsupportedMediaType(
                format!("expected Content-Type: {MULTI_RECIPIENT_CONTENT_TYPE}"),
            ))));
        }
        let access_key = match req.headers().get(UNIDENTIFIED_ACCESS_KEY) {
            None => None,
            Some(value) => match value
                .to_str()
                .map_err(|_| AppError::Unauthorized)
                .and_then(access_key_header)
            {
                Ok(key) => Some(key),
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            },
        };
        let mut payload = payload.take();
        Box::pin(async move {
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| match e {
                    e if super::bounds::is_timeout(&e) => AppError::RequestTimeout,
                    e => AppError::bad_request(format!("reading the body: {e}")),
                })?;
                if body.len() + chunk.len() > MULTI_RECIPIENT_LIMIT {
                    return Err(AppError::PayloadTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            let message = MultiRecipientMessage::parse(&body.freeze())?;
            Ok(Self {
                access_key,
                message,
            })
        })
    }
}
