//! `GET /v1/profile/{aci}` and `GET /v1/certificate/delivery`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::domain::encoding::encode_base64;
use crate::domain::ids::Aci;
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::identity::Requester;
use crate::state::AppState;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileJson {
    pub identity_key: String,
    pub unidentified_access: Option<String>,
    pub unrestricted_unidentified_access: bool,
    pub capabilities: BTreeMap<String, bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CertificateJson {
    pub certificate: String,
}

#[utoipa::path(get, path = "/v1/profile/{identifier}", tag = "profiles",
    summary = "An account's identity key and sealed-sender settings",
    security(("basic" = []), ("accessKey" = [])),
    params(("identifier" = String, Path, description = "The target's ACI")),
    responses(
        (status = 200, description = "The profile", body = ProfileJson),
        (status = 401, description = "Missing credentials or wrong access key", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No such account", body = crate::api::entities::ErrorJson),
    ))]
pub async fn profile(
    state: web::Data<AppState>,
    requester: Requester,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let target: Aci = path.into_inner().parse()?;
    let profile = state.profiles.profile(requester, target).await?;
    Ok(HttpResponse::Ok().json(ProfileJson {
        identity_key: encode_base64(profile.identity_key.as_bytes()),
        unidentified_access: profile.unidentified_access.map(|mac| encode_base64(&mac)),
        unrestricted_unidentified_access: profile.unrestricted_unidentified_access,
        capabilities: profile.capabilities,
    }))
}

#[utoipa::path(get, path = "/v1/certificate/delivery", tag = "profiles",
    summary = "A sender certificate for sealed sender, signed by the server key",
    security(("basic" = [])),
    responses(
        (status = 200, description = "The certificate", body = CertificateJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
    ))]
pub async fn delivery_certificate(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    let certificate = state.profiles.delivery_certificate(caller).await?;
    Ok(HttpResponse::Ok().json(CertificateJson {
        certificate: encode_base64(&certificate),
    }))
}
