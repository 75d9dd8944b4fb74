//! Request extractors: the authenticated device and the client's address.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};

use super::basic::Credentials;
pub use super::credentials::AuthenticatedDevice;
use crate::domain::accounts::AccessKey;
use crate::domain::encoding::decode_base64;
use crate::error::AppError;
use crate::service::access::Requester;
use crate::state::AppState;
use crate::ws::tunnel::TunnelIdentity;

/// The client's IP address: the TCP peer, or the last `X-Forwarded-For` hop when the
/// configuration says a trusted proxy sets it. Used as a rate-limit key, never logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    pub fn of(req: &HttpRequest, trust_forwarded_for: bool) -> Self {
        if trust_forwarded_for {
            let values = req
                .headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok());
            if let Some(ip) = last_forwarded_hop(values) {
                return Self(ip);
            }
        }
        Self(
            req.peer_addr()
                .map(|a| a.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        )
    }
}

/// The last hop of `X-Forwarded-For` header values: the one our proxy appended. Only that
/// hop is trusted: when it does not parse (`unknown`, garbage), `None`, and the caller falls
/// back to the TCP peer; an earlier hop is the client's own word and never counts. A hop with
/// a port (`1.2.3.4:5678`, `[::1]:5678`, as some proxies write it) counts as its address.
pub fn last_forwarded_hop<'a>(values: impl Iterator<Item = &'a str>) -> Option<IpAddr> {
    let hop = values.flat_map(|v| v.split(',')).last()?.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

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

/// The sealed-sender header.
pub const UNIDENTIFIED_ACCESS_KEY: &str = "unidentified-access-key";

/// Parses `Unidentified-Access-Key`: anything but 16 bytes of base64 is a 401, like a wrong
/// key.
pub fn access_key_header(value: &str) -> Result<AccessKey, AppError> {
    decode_base64("Unidentified-Access-Key", value)
        .ok()
        .and_then(|bytes| AccessKey::parse("Unidentified-Access-Key", &bytes).ok())
        .ok_or(AppError::Unauthorized)
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
            .and_then(super::basic::parse_basic)
            .ok_or(AppError::Unauthorized)
            .and_then(|(_, password)| {
                crate::domain::accounts::Password::parse(password).map_err(AppError::from)
            });
        std::future::ready(password.map(NewPassword))
    }
}
