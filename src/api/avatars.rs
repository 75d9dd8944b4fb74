//! The cdn-0 base sealpost serves itself (PROTOCOL.md 13.4): `POST /cdn0/`, an avatar
//! posted as S3's POST-policy form (multipart, parsed by `multer` as it arrives, the form
//! checked before the file is read), and
//! `GET /cdn0/profiles/{id}`, an avatar's encrypted bytes for anyone who knows its name.
//! Thin handlers over `service::avatars`.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

use crate::domain::profiles::MAX_AVATAR_BYTES;
use crate::error::AppError;
use crate::identity::ClientAddr;
use crate::service::avatars::AvatarService;
use crate::state::AppState;

/// The largest form body: the avatar and 64 KiB of fields and multipart framing.
pub const MAX_FORM_BYTES: usize = MAX_AVATAR_BYTES as usize + 64 * 1024;
/// At most this many fields besides the file (a form has eight), each of at most
/// `MAX_FIELD_BYTES` (the policy, the longest, is under 1 KiB): 64 KiB of fields at most.
const MAX_FIELDS: usize = 16;
const MAX_FIELD_BYTES: u64 = 4 * 1024;

/// Feeds the body into `sender` chunk by chunk, up to `MAX_FORM_BYTES` (413 past it, 408
/// when it stalls); stops early, without error, once the parser is gone.
async fn feed(
    mut payload: web::Payload,
    sender: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) -> Result<(), AppError> {
    let mut total = 0;
    while let Some(chunk) = payload.next().await {
        let failed = match chunk {
            Ok(chunk) => {
                total += chunk.len();
                if total <= MAX_FORM_BYTES {
                    if sender.send(Ok(chunk)).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                AppError::PayloadTooLarge
            }
            Err(e) if super::bounds::is_timeout(&e) => AppError::RequestTimeout,
            Err(e) => AppError::bad_request(format!("the body did not arrive: {e}")),
        };
        let _ = sender
            .send(Err(std::io::Error::other("the body was cut")))
            .await;
        return Err(failed);
    }
    Ok(())
}

/// Reads the form: its fields by lowercase name, then, once the field named `file` starts
/// (last, as S3 wants it), the form is checked before a byte of the file is read, and the
/// file read only up to what the form allows, then stored.
async fn parse_and_store(
    avatars: &AvatarService,
    content_type: &str,
    chunks: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> Result<(), AppError> {
    let malformed = |e: multer::Error| AppError::bad_request(format!("not a multipart form: {e}"));
    let boundary = multer::parse_boundary(content_type).map_err(malformed)?;
    let stream = futures_util::stream::unfold(chunks, |mut chunks| async move {
        chunks.recv().await.map(|chunk| (chunk, chunks))
    });
    let limits = multer::SizeLimit::new()
        .per_field(MAX_FIELD_BYTES)
        .for_field("file", MAX_AVATAR_BYTES + 1);
    let mut form = multer::Multipart::with_constraints(
        stream,
        boundary,
        multer::Constraints::new().size_limit(limits),
    );
    let mut fields = BTreeMap::new();
    while let Some(mut field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name != "file" {
            if fields.len() == MAX_FIELDS {
                return Err(AppError::bad_request("too many form fields"));
            }
            fields.insert(name, field.text().await.map_err(malformed)?);
            continue;
        }
        let allowed = avatars.authorize_upload(&fields)?;
        let mut file = bytes::BytesMut::new();
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            if (file.len() + chunk.len()) as u64 > allowed.max_bytes {
                return Err(AppError::PayloadTooLarge);
            }
            file.extend_from_slice(&chunk);
        }
        return avatars.store_upload(&allowed, file.freeze()).await;
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
    // One task, no spawn (the payload is not Send): the feeder and the parser take turns,
    // a small channel between them, so a refused form costs its fields, not its file.
    let (sender, chunks) = tokio::sync::mpsc::channel(4);
    let (fed, stored) = futures_util::join!(
        feed(payload, sender),
        parse_and_store(avatars, &content_type, chunks)
    );
    fed?;
    stored?;
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
