//! `PUT /v1/messages/{aci}` and `GET /v1/keepalive`: thin handlers over `service::messages`.

use actix_web::{HttpResponse, web};

use super::entities::{IncomingMessageListJson, SendMessageResponseJson};
use crate::domain::ids::Aci;
use crate::error::AppError;
use crate::service::access::Requester;
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

pub async fn keepalive() -> HttpResponse {
    HttpResponse::Ok().finish()
}
