//! sealpost's TUS 1.0.0 endpoint for attachment uploads (PROTOCOL.md 12.3), where the cdn-3
//! form points: `OPTIONS` and creation-with-upload `POST` on `/upload/attachments`, `HEAD`
//! and `PATCH` resume on `/upload/attachments/{key}`. The form's Bearer token authorizes
//! every call (no account credentials). Thin handlers over `service::uploads`; every answer
//! carries `Tus-Resumable`, and every error a JSON body.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::domain::uploads::{CHECKSUM_HEADER, TUS_EXTENSIONS, TUS_VERSION, check_resumable};
use crate::error::AppError;
use crate::service::uploads::{Append, Creation, Progress};
use crate::state::AppState;

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const TUS_VERSION_HEADER: HeaderName = HeaderName::from_static("tus-version");
const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");

/// Whether a path is one of the upload endpoint's: their bodies get an idle deadline, not
/// a whole-body one (a 100 MiB upload on a slow network takes minutes).
pub fn is_upload_path(path: &str) -> bool {
    path == "/upload/attachments" || path.starts_with("/upload/attachments/")
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    text(headers, "content-length").and_then(|v| v.trim().parse().ok())
}

/// `Tus-Resumable` on every answer, errors included.
fn tus(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

fn answer(result: Result<HttpResponse, AppError>) -> HttpResponse {
    tus(result.unwrap_or_else(|e| {
        let mut response = e.error_response();
        if matches!(e, AppError::PreconditionFailed(_)) {
            response
                .headers_mut()
                .insert(TUS_VERSION_HEADER, HeaderValue::from_static(TUS_VERSION));
        }
        response
    }))
}

fn resumable(request: &HttpRequest) -> Result<(), AppError> {
    check_resumable(text(request.headers(), "tus-resumable"))
        .map_err(|e| AppError::PreconditionFailed(e.to_string()))
}

fn with_progress(
    mut response: actix_web::HttpResponseBuilder,
    progress: &Progress,
) -> HttpResponse {
    response
        .insert_header((UPLOAD_OFFSET, progress.offset.to_string()))
        .insert_header((UPLOAD_EXPIRES, progress.expires.clone()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    response.finish()
}

#[utoipa::path(options, path = "/upload/attachments", tag = "attachments",
    summary = "What the TUS endpoint supports (TUS 1.0.0)",
    responses((status = 204, description = "Tus-Resumable, Tus-Version, Tus-Max-Size and Tus-Extension")))]
pub async fn options(state: web::Data<AppState>) -> HttpResponse {
    tus(HttpResponse::NoContent()
        .insert_header((TUS_VERSION_HEADER, TUS_VERSION))
        .insert_header((TUS_MAX_SIZE, state.uploads.max_bytes().to_string()))
        .insert_header((TUS_EXTENSION, TUS_EXTENSIONS))
        .finish())
}

#[utoipa::path(post, path = "/upload/attachments", tag = "attachments",
    summary = "Create an upload and send its first bytes (TUS creation-with-upload)",
    description = "Authorization: the form's `Bearer` token; Upload-Metadata: the form's; \
        Upload-Length at most the token's maxLen; optional X-Signal-Checksum-Sha256 (std base64), \
        checked when the last byte is in. Body: application/offset+octet-stream.",
    security(("upload_token" = [])),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 201, description = "Created: Location, Upload-Offset (bytes stored), Upload-Expires"),
        (status = 400, description = "A malformed TUS header", body = crate::error::ErrorJson),
        (status = 401, description = "The upload token is missing, invalid, expired or for another key", body = crate::error::ErrorJson),
        (status = 409, description = "This attachment is already uploaded", body = crate::error::ErrorJson),
        (status = 412, description = "Tus-Resumable is not 1.0.0", body = crate::error::ErrorJson),
        (status = 413, description = "Upload-Length over maxLen or the maximum, or a body longer than Upload-Length", body = crate::error::ErrorJson),
        (status = 415, description = "The body is not application/offset+octet-stream", body = crate::error::ErrorJson),
        (status = 423, description = "Another request is uploading to this key", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (attachmentUpload, per key)", body = crate::error::ErrorJson),
        (status = 460, description = "The bytes do not match X-Signal-Checksum-Sha256; the upload is dropped", body = crate::error::ErrorJson),
        (status = 503, description = "The pod streams as many uploads as it may; retry after Retry-After", body = crate::error::ErrorJson),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    answer(
        async {
            resumable(&request)?;
            let headers = request.headers();
            let creation = Creation {
                authorization: text(headers, "authorization"),
                metadata: text(headers, UPLOAD_METADATA.as_str()),
                upload_length: text(headers, UPLOAD_LENGTH.as_str()),
                checksum: text(headers, CHECKSUM_HEADER),
                content_type: text(headers, "content-type"),
                content_length: content_length(headers),
            };
            let progress = state.uploads.create(creation, body).await?;
            let mut response = HttpResponse::Created();
            response.insert_header((header::LOCATION, progress.location.clone()));
            Ok(with_progress(response, &progress))
        }
        .await,
    )
}

#[utoipa::path(head, path = "/upload/attachments/{key}", tag = "attachments",
    summary = "Where an upload stands (TUS resume)",
    security(("upload_token" = [])),
    params(("key" = String, Path, description = "The form's 20-character key")),
    responses(
        (status = 200, description = "Upload-Offset (bytes stored), Upload-Length, Upload-Expires"),
        (status = 401, description = "The upload token is missing, invalid, expired or for another key"),
        (status = 404, description = "No such upload"),
        (status = 410, description = "The upload expired"),
        (status = 412, description = "Tus-Resumable is not 1.0.0"),
        (status = 429, description = "Rate limited (attachmentUpload, per key)"),
    ))]
pub async fn head(
    state: web::Data<AppState>,
    key: web::Path<String>,
    request: HttpRequest,
) -> HttpResponse {
    answer(
        async {
            resumable(&request)?;
            let progress = state
                .uploads
                .head(text(request.headers(), "authorization"), &key)
                .await?;
            let mut response = HttpResponse::Ok();
            response.insert_header((UPLOAD_LENGTH, progress.length.to_string()));
            Ok(with_progress(response, &progress))
        }
        .await,
    )
}

#[utoipa::path(patch, path = "/upload/attachments/{key}", tag = "attachments",
    summary = "Send an upload's next bytes from Upload-Offset (TUS resume)",
    security(("upload_token" = [])),
    params(("key" = String, Path, description = "The form's 20-character key")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Upload-Offset (bytes stored now), Upload-Expires"),
        (status = 400, description = "A malformed Upload-Offset", body = crate::error::ErrorJson),
        (status = 401, description = "The upload token is missing, invalid, expired or for another key", body = crate::error::ErrorJson),
        (status = 404, description = "No such upload", body = crate::error::ErrorJson),
        (status = 409, description = "Upload-Offset is not where the upload stands", body = crate::error::ErrorJson),
        (status = 410, description = "The upload expired", body = crate::error::ErrorJson),
        (status = 412, description = "Tus-Resumable is not 1.0.0", body = crate::error::ErrorJson),
        (status = 413, description = "A body longer than what the upload lacks", body = crate::error::ErrorJson),
        (status = 415, description = "The body is not application/offset+octet-stream", body = crate::error::ErrorJson),
        (status = 423, description = "Another request is uploading to this key", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (attachmentUpload, per key)", body = crate::error::ErrorJson),
        (status = 460, description = "The bytes do not match X-Signal-Checksum-Sha256; the upload is dropped", body = crate::error::ErrorJson),
        (status = 503, description = "The pod streams as many uploads as it may; retry after Retry-After", body = crate::error::ErrorJson),
    ))]
pub async fn patch(
    state: web::Data<AppState>,
    key: web::Path<String>,
    request: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    answer(
        async {
            resumable(&request)?;
            let headers = request.headers();
            let append = Append {
                authorization: text(headers, "authorization"),
                upload_offset: text(headers, UPLOAD_OFFSET.as_str()),
                content_type: text(headers, "content-type"),
                content_length: content_length(headers),
            };
            let progress = state.uploads.patch(&key, append, body).await?;
            Ok(with_progress(HttpResponse::NoContent(), &progress))
        }
        .await,
    )
}
