//! `GET /v4/attachments/form/upload` (PROTOCOL.md 12.1, 12.3): always `cdn: 3`, the TUS
//! endpoint sealpost serves itself; `GET`/`HEAD /attachments/{key}`, the public download with
//! one `Range`. Thin handlers over `service::attachments`.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::AppError;
use crate::identity::{AuthenticatedDevice, ClientAddr};
use crate::service::attachments::Download;
use crate::state::AppState;

/// The socket a request arrived on (connection data, set when the connection is accepted;
/// absent for tunnelled requests).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionSocket(pub std::os::fd::RawFd);

/// Turns Nagle's algorithm off on the download's connection: a streamed body's last short
/// segment would otherwise wait for the client's delayed ACK (measured: 1 MiB downloads
/// took about 33 ms, 0.19 of a plain read from the bucket). Only here: messaging traffic
/// gains from the coalescing (measured: `pairs` 6% lower with it off for every connection).
fn no_delay(request: &HttpRequest) {
    if let Some(ConnectionSocket(fd)) = request.conn_data::<ConnectionSocket>() {
        let on: libc::c_int = 1;
        // SAFETY: the descriptor is this request's connection, open while the request is
        // served; TCP_NODELAY takes an int, passed with its size.
        unsafe {
            libc::setsockopt(
                *fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// The cdn number of sealpost's own TUS endpoint.
pub const CDN: u8 = 3;

/// Signal's `AttachmentDescriptorV3`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadFormJson {
    pub cdn: u8,
    /// 20 url-safe characters.
    pub key: String,
    /// `Authorization` (the upload token) and `Upload-Metadata`, to send with the upload.
    pub headers: BTreeMap<String, String>,
    pub signed_upload_location: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UploadFormQuery {
    /// Bytes the upload will have (positive, at most the maximum); absent: the maximum.
    pub upload_length: Option<i64>,
}

#[utoipa::path(get, path = "/v4/attachments/form/upload", tag = "attachments",
    summary = "A form to upload one attachment to sealpost's TUS endpoint (cdn 3)",
    security(("basic" = [])),
    params(UploadFormQuery),
    responses(
        (status = 200, description = "The form", body = UploadFormJson),
        (status = 400, description = "uploadLength not a positive integer", body = crate::error::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorJson),
        (status = 413, description = "uploadLength over the maximum", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (attachmentCreate, attachmentCreateBytes)", body = crate::error::ErrorJson),
    ))]
pub async fn upload_form(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    query: web::Query<UploadFormQuery>,
) -> Result<HttpResponse, AppError> {
    let form = state
        .attachments
        .upload_form(caller, query.into_inner().upload_length)
        .await?;
    let headers = BTreeMap::from([
        ("Authorization".to_owned(), form.authorization),
        ("Upload-Metadata".to_owned(), form.upload_metadata),
    ]);
    Ok(HttpResponse::Ok().json(UploadFormJson {
        cdn: CDN,
        key: form.key.as_str().to_owned(),
        headers,
        signed_upload_location: form.location,
    }))
}

#[utoipa::path(get, path = "/attachments/{key}", tag = "attachments",
    summary = "Download an attachment (no authentication: the bytes are end-to-end encrypted)",
    params(("key" = String, Path, description = "The 20-character key of the upload form")),
    responses(
        (status = 200, description = "The whole object", content_type = "application/octet-stream"),
        (status = 206, description = "The requested byte range, with Content-Range", content_type = "application/octet-stream"),
        (status = 302, description = "SEALPOST_ATTACHMENTS_REDIRECT=on: Location is a presigned GET of the bucket, valid one hour (it honours Range itself)"),
        (status = 404, description = "No such attachment", body = crate::error::ErrorJson),
        (status = 416, description = "The range lies outside the object", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (attachmentDownload, per client address)", body = crate::error::ErrorJson),
    ))]
pub async fn download(
    state: web::Data<AppState>,
    key: web::Path<String>,
    client: ClientAddr,
    request: HttpRequest,
) -> Result<HttpResponse, AppError> {
    serve(state, client, &key, &request, true).await
}

#[utoipa::path(head, path = "/attachments/{key}", tag = "attachments",
    summary = "An attachment's size (and a range's) without its bytes",
    params(("key" = String, Path, description = "The 20-character key of the upload form")),
    responses(
        (status = 200, description = "Content-Length: the object's size"),
        (status = 206, description = "Content-Range and Content-Length of the range"),
        (status = 404, description = "No such attachment"),
        (status = 416, description = "The range lies outside the object"),
        (status = 429, description = "Rate limited (attachmentDownload, per client address)"),
    ))]
pub async fn download_head(
    state: web::Data<AppState>,
    key: web::Path<String>,
    client: ClientAddr,
    request: HttpRequest,
) -> Result<HttpResponse, AppError> {
    serve(state, client, &key, &request, false).await
}

async fn serve(
    state: web::Data<AppState>,
    client: ClientAddr,
    key: &str,
    request: &HttpRequest,
    with_body: bool,
) -> Result<HttpResponse, AppError> {
    if with_body {
        no_delay(request);
    }
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    match state
        .attachments
        .download(client.0, key, range, with_body)
        .await?
    {
        Download::Unsatisfiable { size } => {
            let mut response = AppError::RangeNotSatisfiable.error_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header::HeaderValue::from_str(&format!("bytes */{size}"))
                    .map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?,
            );
            Ok(response)
        }
        Download::Redirect(url) => Ok(HttpResponse::Found()
            .insert_header((header::LOCATION, url))
            .finish()),
        Download::Found { size, range, body } => {
            let mut response = match &range {
                Some(bytes) => {
                    let mut partial = HttpResponse::PartialContent();
                    partial.insert_header((
                        header::CONTENT_RANGE,
                        format!("bytes {}-{}/{size}", bytes.start, bytes.end - 1),
                    ));
                    partial
                }
                None => HttpResponse::Ok(),
            };
            let length = range.map_or(size, |bytes| bytes.end - bytes.start);
            response
                .content_type("application/octet-stream")
                .insert_header((header::ACCEPT_RANGES, "bytes"))
                .no_chunking(length);
            let metrics = state.metrics.clone();
            Ok(match body {
                Some(body) => response.streaming(
                    body.inspect_ok({
                        let metrics = metrics.clone();
                        move |bytes| {
                            metrics
                                .attachment_bytes
                                .with_label_values(&["out"])
                                .inc_by(bytes.len() as u64)
                        }
                    })
                    .map_err(move |e| {
                        metrics
                            .object_store_errors
                            .with_label_values(&["download"])
                            .inc();
                        tracing::warn!(error = %e, "an attachment download failed midway");
                        actix_web::error::ErrorInternalServerError("the object store failed")
                    }),
                ),
                // HEAD: the length of what GET would send (a sized body the server never
                // writes for HEAD; `finish` would say 0).
                None => response.body(actix_web::body::SizedStream::new(
                    length,
                    futures_util::stream::empty::<Result<bytes::Bytes, actix_web::Error>>(),
                )),
            })
        }
    }
}
