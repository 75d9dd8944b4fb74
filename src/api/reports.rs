//! `POST /v1/messages/report/{source}/{messageGuid}`: spam reports (PROTOCOL.md 17).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::encoding::decode_base64;
use crate::domain::ids::Aci;
use crate::domain::reports::check_token;
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::state::AppState;

/// A report body holds at most a base64 token of 1,024 bytes: 4 KiB is ample.
pub const REPORT_BODY_LIMIT: usize = 4096;

/// The optional body.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SpamReportJson {
    /// A spam-report token (standard base64, at most 1,024 bytes); empty or absent = none.
    #[serde(default)]
    pub token: Option<String>,
}

#[utoipa::path(post, path = "/v1/messages/report/{source}/{messageGuid}", tag = "messages",
    summary = "Report a message as spam (always 202, whether or not it counted)",
    security(("basic" = [])),
    params(
        ("source" = String, Path, description = "The sender's ACI (a phone number is refused)"),
        ("messageGuid" = String, Path, description = "The envelope's server GUID"),
    ),
    request_body(content = Option<SpamReportJson>, description = "Optional: a spam-report token"),
    responses(
        (status = 202, description = "Received"),
        (status = 400, description = "A phone number, a PNI or a malformed ACI or GUID", body = crate::api::entities::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 413, description = "Body over 4 KiB", body = crate::api::entities::ErrorJson),
        (status = 422, description = "The token is not base64 or over 1,024 bytes", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (spamReport, per account)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn report(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let (source, guid) = path.into_inner();
    if source.starts_with('+') {
        return Err(AppError::BadRequest(
            "sealpost has no phone numbers: report the sender by ACI".into(),
        ));
    }
    let source: Aci = source.parse()?;
    let guid = Uuid::try_parse(&guid)
        .map_err(|_| AppError::BadRequest("messageGuid is not a UUID".into()))?;
    if body.len() > REPORT_BODY_LIMIT {
        return Err(AppError::PayloadTooLarge);
    }
    let token = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let json: SpamReportJson = serde_json::from_slice(&body)
            .map_err(|e| AppError::BadRequest(format!("the body is not a spam report: {e}")))?;
        match json.token {
            None => None,
            Some(token) => check_token(
                decode_base64("token", &token)
                    .map_err(|_| AppError::Unprocessable("token is not valid base64".into()))?,
            )
            .map_err(|e| AppError::Unprocessable(e.to_string()))?,
        }
    };
    state.reports.report(caller, source, guid, token).await?;
    Ok(HttpResponse::Accepted().finish())
}
