//! The cdn-0 base sealpost serves itself (PROTOCOL.md 13.4): `POST /cdn0/`, an avatar
//! posted as S3's POST-policy form (multipart, parsed by `multer`), and
//! `GET /cdn0/profiles/{id}`, an avatar's encrypted bytes for anyone who knows its name.
//! Thin handlers over `service::avatars`.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

use crate::domain::profiles::MAX_AVATAR_BYTES;
use crate::error::AppError;
use crate::identity::ClientAddr;
use crate::state::AppState;

/// The largest form body: the avatar and 64 KiB of fields and multipart framing.
pub const MAX_FORM_BYTES: usize = MAX_AVATAR_BYTES as usize + 64 * 1024;
/// At most this many fields besides the file (a form has nine).
const MAX_FIELDS: usize = 32;

/// The body, read up to `MAX_FORM_BYTES` (413 past it, 408 when it stalls).
async fn read_body(mut payload: web::Payload) -> Result<bytes::Bytes, AppError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match super::bounds::is_timeout(&e) {
            true => AppError::RequestTimeout,
            false => AppError::bad_request(format!("the body did not arrive: {e}")),
        })?;
        if body.len() + chunk.len() > MAX_FORM_BYTES {
            return Err(AppError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The form's fields by lowercase name, and its file (the field named `file`, last as S3
/// wants it: fields after it are ignored, as S3 does).
async fn parse_form(
    content_type: &str,
    body: bytes::Bytes,
) -> Result<(BTreeMap<String, String>, bytes::Bytes), AppError> {
    let malformed = |e: multer::Error| AppError::bad_request(format!("not a multipart form: {e}"));
    let boundary = multer::parse_boundary(content_type).map_err(malformed)?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = BTreeMap::new();
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name == "file" {
            return Ok((fields, field.bytes().await.map_err(malformed)?));
        }
        if fields.len() == MAX_FIELDS {
            return Err(AppError::bad_request("too many form fields"));
        }
        fields.insert(name, field.text().await.map_err(malformed)?);
    }
    Err(AppError::bad_request("the form has no file"))
}

#[utoipa::path(post, path = "/cdn0/", tag = "profiles",
    summary = "Upload an avatar with the S3 POST-policy form of PUT /v1/profile (multipart/form-data: the form's fields, Content-Type, then file)",
    responses(
        (status = 204, description = "Stored under the form's key"),
        (status = 400, description = "Not a multipart form, a field missing or malformed, an empty file", body = crate::error::ErrorJson),
        (status = 403, description = "Not signed by this server, expired, another key, or a field the policy does not name", body = crate::error::ErrorJson),
        (status = 413, description = "The file is over the policy's 10 MiB", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (avatarUpload, per client address)", body = crate::error::ErrorJson),
    ))]
pub async fn upload_avatar(
    state: web::Data<AppState>,
    client: ClientAddr,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let avatars = state.profiles.avatars();
    avatars.admit_upload(client.0).await?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = read_body(payload).await?;
    let (fields, file) = parse_form(&content_type, body).await?;
    avatars.upload(&fields, file).await?;
    Ok(HttpResponse::NoContent().finish())
}

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
