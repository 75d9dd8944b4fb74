//! Who a request acts as, as plain types every layer may name: the authenticated device,
//! the requester of a sealed-sender-capable endpoint, the identity a tunnelled request
//! carries, and the client's address. How they are taken from a request (actix extractors)
//! lives in `api::extract`; how a device is authenticated, in `auth`.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::HttpRequest;

use crate::domain::accounts::AccessKey;
use crate::domain::ids::{Aci, DeviceId};

/// Who a request acts as, once authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthenticatedDevice {
    pub aci: Aci,
    pub device: DeviceId,
}

/// An authenticated account's primary device (device 1): what only the primary may do takes
/// this instead of an `AuthenticatedDevice`, so the check cannot be forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimaryDevice(AuthenticatedDevice);

impl PrimaryDevice {
    /// `None` for a linked device.
    pub fn of(device: AuthenticatedDevice) -> Option<Self> {
        device.device.is_primary().then_some(Self(device))
    }

    pub fn device(self) -> AuthenticatedDevice {
        self.0
    }
}

/// A caller on an endpoint that must not be authenticated (400 otherwise, as Signal's
/// anonymous-only endpoints answer): no `Authorization` header on an unauthenticated socket
/// or over HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anonymous;

/// Who acts on another account: an authenticated device, or a holder of the target's
/// access key (sealed sender).
#[derive(Clone, Copy, Debug)]
pub enum Requester {
    Device(AuthenticatedDevice),
    AccessKey(AccessKey),
}

/// Who a tunnelled request acts as: the socket's device, or nobody.
#[derive(Clone, Copy, Debug)]
pub enum TunnelIdentity {
    Device(AuthenticatedDevice),
    Anonymous,
}

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
