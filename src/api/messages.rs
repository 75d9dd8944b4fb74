//! `PUT /v1/messages/{aci}` and `GET /v1/keepalive`: thin handlers over `service::messages`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Deserialize;

use super::entities::{IncomingMessageListJson, SendMessageResponseJson};
use crate::auth::extract::{UNIDENTIFIED_ACCESS_KEY, access_key_header};
use crate::domain::ids::Aci;
use crate::domain::multi_recipient::MultiRecipientMessage;
use crate::error::AppError;
use crate::service::access::Requester;
use crate::service::messages::MultiRecipientOptions;
use crate::state::AppState;

/// Largest `PUT /v1/messages` body: six devices of 96 KiB content, base64, with room.
pub const MESSAGES_JSON_LIMIT: usize = 1024 * 1024;

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

/// Largest multi-recipient body (a few thousand recipients plus the shared ciphertext).
pub const MULTI_RECIPIENT_LIMIT: usize = 2 * 1024 * 1024;
pub const MULTI_RECIPIENT_CONTENT_TYPE: &str = "application/vnd.signal-messenger.mrm";

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

/// `PUT /v1/messages/multi_recipient`: sealed only, authorized by the combined access key.
pub async fn send_multi(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<MultiRecipientQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with(MULTI_RECIPIENT_CONTENT_TYPE) {
        return Err(AppError::UnsupportedMediaType(format!(
            "expected Content-Type: {MULTI_RECIPIENT_CONTENT_TYPE}"
        )));
    }
    let access_key = match req.headers().get(UNIDENTIFIED_ACCESS_KEY) {
        Some(value) => Some(access_key_header(
            value.to_str().map_err(|_| AppError::Unauthorized)?,
        )?),
        None => None,
    };
    // Read the body by hand so an oversized one gets the usual JSON 413.
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| AppError::bad_request(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > MULTI_RECIPIENT_LIMIT {
            return Err(AppError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let message = MultiRecipientMessage::parse(&body.freeze())?;
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
    Ok(HttpResponse::Ok().json(serde_json::json!({"uuids404": []})))
}

pub async fn keepalive() -> HttpResponse {
    HttpResponse::Ok().finish()
}
