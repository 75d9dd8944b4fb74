//! `/v2/keys`: thin handlers over `service::keys`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::entities::{
    CheckKeysRequestJson, PreKeyCountJson, PreKeyJson, PreKeyResponseItemJson, PreKeyResponseJson,
    SetKeysRequestJson, SignedPreKeyJson,
};
use crate::domain::encoding::{decode_base64, encode_base64};
use crate::domain::ids::Aci;
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::identity::Requester;
use crate::service::keys::DeviceSelector;
use crate::state::AppState;

/// `?identity=aci|pni`: sealpost has ACIs only.
#[derive(Deserialize)]
pub struct IdentityQuery {
    identity: Option<String>,
}

fn require_aci(identity: Option<&str>) -> Result<(), AppError> {
    match identity.map(str::to_ascii_lowercase).as_deref() {
        None | Some("aci") => Ok(()),
        Some("pni") => Err(AppError::bad_request("PNI identities are not supported")),
        Some(other) => Err(AppError::bad_request(format!(
            "unknown identity type {other:?}"
        ))),
    }
}

#[utoipa::path(get, path = "/v2/keys", tag = "keys",
    summary = "How many one-time prekeys the calling device has left", security(("basic" = [])),
    params(("identity" = Option<String>, Query, description = "aci (default); pni is refused")),
    responses(
        (status = 200, description = "The counts", body = PreKeyCountJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
    ))]
/// `GET /v2/keys`.
pub async fn counts(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    query: web::Query<IdentityQuery>,
) -> Result<HttpResponse, AppError> {
    require_aci(query.identity.as_deref())?;
    let counts = state.keys.counts(caller).await?;
    Ok(HttpResponse::Ok().json(PreKeyCountJson {
        count: counts.ec,
        pq_count: counts.kem,
    }))
}

#[utoipa::path(put, path = "/v2/keys", tag = "keys",
    summary = "Upload prekeys: a given list replaces the stored one of its kind",
    security(("basic" = [])),
    params(("identity" = Option<String>, Query, description = "aci (default); pni is refused")),
    request_body = SetKeysRequestJson,
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "Malformed keys", body = crate::api::entities::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 422, description = "A signature does not verify", body = crate::api::entities::ErrorJson),
    ))]
/// `PUT /v2/keys`.
pub async fn upload(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    query: web::Query<IdentityQuery>,
    body: web::Json<SetKeysRequestJson>,
) -> Result<HttpResponse, AppError> {
    require_aci(query.identity.as_deref())?;
    state
        .keys
        .upload(caller, body.into_inner().try_into()?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v2/keys/{identifier}/{device_id}", tag = "keys",
    summary = "Claim one device's (or every device's) prekeys of an account",
    security(("basic" = []), ("accessKey" = [])),
    params(
        ("identifier" = String, Path, description = "The target's ACI"),
        ("device_id" = String, Path, description = "A device id, or * for every device"),
    ),
    responses(
        (status = 200, description = "The keys", body = PreKeyResponseJson),
        (status = 401, description = "Missing credentials or wrong access key", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No such account or device", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (prekeys)", body = crate::api::entities::ErrorJson),
    ))]
/// `GET /v2/keys/{aci}/{deviceId|*}`.
pub async fn fetch(
    state: web::Data<AppState>,
    requester: Requester,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (target, selector) = path.into_inner();
    let target: Aci = target.parse()?;
    let selector: DeviceSelector = selector.parse()?;
    let fetched = state.keys.fetch(requester, target, selector).await?;
    Ok(HttpResponse::Ok().json(PreKeyResponseJson {
        identity_key: encode_base64(fetched.identity_key.as_bytes()),
        devices: fetched
            .devices
            .iter()
            .map(|d| PreKeyResponseItemJson {
                device_id: d.device_id.get(),
                registration_id: d.registration_id,
                signed_pre_key: SignedPreKeyJson::from_key(&d.signed_pre_key),
                pre_key: d.pre_key.as_ref().map(PreKeyJson::from_pre_key),
                pq_pre_key: d.pq_pre_key.as_ref().map(SignedPreKeyJson::from_key),
            })
            .collect(),
    }))
}

#[utoipa::path(post, path = "/v2/keys/check", tag = "keys",
    summary = "Whether the stored keys match a digest", security(("basic" = [])),
    request_body = CheckKeysRequestJson,
    responses(
        (status = 200, description = "They match"),
        (status = 409, description = "They do not match", body = crate::api::entities::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
    ))]
/// `POST /v2/keys/check`: 200 when the digest matches, 409 when it does not.
pub async fn check(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<CheckKeysRequestJson>,
) -> Result<HttpResponse, AppError> {
    let body = body.into_inner();
    require_aci(Some(&body.identity_type))?;
    let digest: [u8; 32] = decode_base64("digest", &body.digest)?
        .try_into()
        .map_err(|_| AppError::bad_request("digest must be 32 bytes"))?;
    if state.keys.check(caller, &digest).await? {
        Ok(HttpResponse::Ok().finish())
    } else {
        Err(AppError::Conflict("keys do not match".into()))
    }
}
