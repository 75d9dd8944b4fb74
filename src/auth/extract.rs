//! Request extractors: the authenticated device and the client's address.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::basic::Credentials;
pub use super::credentials::AuthenticatedDevice;
use crate::error::AppError;
use crate::state::AppState;

/// The client's IP address: the TCP peer, or the last `X-Forwarded-For` hop when the
/// configuration says a trusted proxy sets it. Used as a rate-limit key, never logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    pub fn of(req: &HttpRequest, trust_forwarded_for: bool) -> Self {
        if trust_forwarded_for {
            let forwarded = req
                .headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
                .last();
            if let Some(ip) = forwarded {
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

impl FromRequest for AuthenticatedDevice {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
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
