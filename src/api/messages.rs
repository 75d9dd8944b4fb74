//! `PUT /v1/messages/{aci}` and `GET /v1/keepalive`: thin handlers over `service::messages`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::entities::{
    IncomingMessageListJson, MultiRecipientResponseJson, SendMessageResponseJson,
};
use super::extract::MultiRecipientSend;
use crate::domain::ids::Aci;
use crate::error::AppError;
use crate::identity::Requester;
use crate::service::messages::MultiRecipientOptions;
use crate::state::AppState;

/// Largest `PUT /v1/messages` body: six devices of 96 KiB content, base64, with room.
pub const MESSAGES_JSON_LIMIT: usize = 1024 * 1024;

#[utoipa::path(put, path = "/v1/messages/{destination}", tag = "messages",
    summary = "Queue one envelope per device of the destination (identified or sealed)",
    security(("basic" = []), ("accessKey" = [])),
    params(("destination" = String, Path, description = "The recipient's ACI")),
    request_body = IncomingMessageListJson,
    responses(
        (status = 200, description = "Queued", body = SendMessageResponseJson),
        (status = 401, description = "Missing credentials or wrong access key", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No such recipient", body = crate::api::entities::ErrorJson),
        (status = 409, description = "Missing or extra devices"),
        (status = 410, description = "Stale devices"),
        (status = 408, description = "The body did not arrive within the body timeout", body = crate::api::entities::ErrorJson),
        (status = 413, description = "Body too large", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (messages, the recipient's inboundMessageBytes), or a recipient device's queue is full; nothing queued", body = crate::api::entities::ErrorJson),
    ))]
pub async fn send(
    state: web::Data<AppState>,
    sender: Requester,
    path: web::Path<String>,
    body: web::Json<IncomingMessageListJson>,
) -> Result<HttpResponse, AppError> {
    let target: Aci = path.into_inner().parse()?;
    let outgoing = body.into_inner().try_into()?;
    let needs_sync = state.messages.send(sender, target, outgoing).await?;
    Ok(HttpResponse::Ok().json(SendMessageResponseJson { needs_sync }))
}

#[derive(Deserialize)]
pub struct MultiRecipientQuery {
    #[serde(default)]
    ts: u64,
    #[serde(default)]
    online: bool,
    #[serde(default = "default_true")]
    urgent: bool,
    /// Accepted and ignored: sealpost has no stories.
    #[serde(default)]
    #[allow(dead_code)]
    story: bool,
}

fn default_true() -> bool {
    true
}

#[utoipa::path(put, path = "/v1/messages/multi_recipient", tag = "messages",
    summary = "Sealed send to many recipients, authorized by their combined access key",
    security(("accessKey" = [])),
    params(
        ("ts" = Option<u64>, Query, description = "The message timestamp"),
        ("online" = Option<bool>, Query, description = "Deliver only to connected devices"),
        ("urgent" = Option<bool>, Query, description = "Default true"),
        ("story" = Option<bool>, Query, description = "Accepted and ignored"),
    ),
    request_body(content = String, content_type = "application/vnd.signal-messenger.mrm",
        description = "libsignal's multi-recipient message"),
    responses(
        (status = 200, description = "Queued", body = MultiRecipientResponseJson),
        (status = 401, description = "Wrong combined access key", body = crate::api::entities::ErrorJson),
        (status = 404, description = "An unknown recipient", body = crate::api::entities::ErrorJson),
        (status = 409, description = "Missing or extra devices"),
        (status = 410, description = "Stale devices"),
        (status = 408, description = "The body did not arrive within the body timeout", body = crate::api::entities::ErrorJson),
        (status = 413, description = "Body too large", body = crate::api::entities::ErrorJson),
        (status = 415, description = "Wrong Content-Type", body = crate::api::entities::ErrorJson),
        (status = 429, description = "A recipient over its inboundMessageBytes budget, or a recipient device's queue is full; nothing queued", body = crate::api::entities::ErrorJson),
    ))]
/// `PUT /v1/messages/multi_recipient`: sealed only, authorized by the combined access key.
pub async fn send_multi(
    state: web::Data<AppState>,
    query: web::Query<MultiRecipientQuery>,
    send: MultiRecipientSend,
) -> Result<HttpResponse, AppError> {
    let MultiRecipientSend {
        access_key,
        message,
    } = send;
    state
        .messages
        .send_multi(
            access_key,
            message,
            MultiRecipientOptions {
                timestamp: query.ts,
                online: query.online,
                urgent: query.urgent,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(MultiRecipientResponseJson {
        uuids404: Vec::new(),
    }))
}

#[utoipa::path(get, path = "/v1/keepalive", tag = "messages",
    summary = "Answers 200 (clients ping through the tunnel with it)",
    responses((status = 200, description = "Alive")))]
pub async fn keepalive() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[utoipa::path(get, path = "/v1/keepalive/provisioning", tag = "messages",
    summary = "Answers 200, without authentication (provisioning sockets ping with it)",
    responses((status = 200, description = "Alive")))]
/// `GET /v1/keepalive/provisioning` (PROTOCOL.md 16.3). The provisioning socket answers it
/// itself (`ws::provisioning`); this is the same answer over HTTP.
pub async fn keepalive_provisioning() -> HttpResponse {
    HttpResponse::Ok().finish()
}
