//! `GET /v2/calling/relays`: TURN relays and credentials for calls (PROTOCOL.md 15.2).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::service::calling::Relay;
use crate::state::AppState;

/// One relay, in Signal's shape (`GetCallingRelaysResponse`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayJson {
    /// `<expiry unix seconds>:<random tag>` (coturn's `use-auth-secret` scheme).
    pub username: String,
    /// Standard base64 of HMAC-SHA1(secret, username).
    pub password: String,
    /// Seconds the client may cache the credential for (it is valid twice as long).
    pub ttl: u64,
    pub urls: Vec<String>,
    /// `urls` templates filled with the relay host's addresses; empty without a host name.
    pub urls_with_ips: Vec<String>,
    /// The host name TLS on the IP URLs is checked against, or null.
    pub hostname: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RelaysJson {
    /// Empty when this server has no relay configured.
    pub relays: Vec<RelayJson>,
}

impl From<Relay> for RelayJson {
    fn from(relay: Relay) -> Self {
        Self {
            username: relay.credentials.username,
            password: relay.credentials.password,
            ttl: relay.ttl_s,
            urls: relay.urls,
            urls_with_ips: relay.urls_with_ips,
            hostname: relay.hostname,
        }
    }
}

#[utoipa::path(get, path = "/v2/calling/relays", tag = "calling",
    summary = "TURN relays and short-lived credentials for calls",
    security(("basic" = [])),
    responses(
        (status = 200, description = "The relays (none when not configured)", body = RelaysJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (getCallingRelays, per account)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn relays(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    let relays = state.calling.relays(caller).await?;
    Ok(HttpResponse::Ok().json(RelaysJson {
        relays: relays.into_iter().map(RelayJson::from).collect(),
    }))
}
