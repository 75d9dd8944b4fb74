//! The cdn-0 base sealpost serves itself (PROTOCOL.md 13.4): `GET /cdn0/profiles/{id}`,
//! an avatar's encrypted bytes for anyone who knows its name. Thin handlers over
//! `service::avatars`.

use actix_web::{HttpResponse, web};

use crate::error::AppError;
use crate::identity::ClientAddr;
use crate::state::AppState;

#[utoipa::path(get, path = "/cdn0/profiles/{id}", tag = "profiles",
    summary = "Download an avatar (no authentication: the bytes are encrypted with the profile key)",
    params(("id" = String, Path, description = "The avatar name's part after `profiles/`")),
    responses(
        (status = 200, description = "The avatar's bytes", content_type = "application/octet-stream"),
        (status = 404, description = "No such avatar", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (attachmentDownload, per client address)", body = crate::error::ErrorJson),
    ))]
pub async fn download_avatar(
    state: web::Data<AppState>,
    id: web::Path<String>,
    client: ClientAddr,
) -> Result<HttpResponse, AppError> {
    let (size, body) = state.profiles.avatars().download(client.0, &id).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .no_chunking(size)
        .streaming(body))
}
