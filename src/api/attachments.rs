//! `GET /v4/attachments/form/upload` (PROTOCOL.md 12.1, 12.3): always `cdn: 3`, the TUS
//! endpoint sealpost serves itself. A thin handler over `service::attachments`.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::state::AppState;

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
