//! `GET /v1/profile/{aci}` and `GET /v1/certificate/delivery`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::auth::AuthenticatedDevice;
use crate::domain::encoding::encode_base64;
use crate::domain::ids::Aci;
use crate::error::AppError;
use crate::service::access::Requester;
use crate::state::AppState;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileJson {
    pub identity_key: String,
    pub unidentified_access: Option<String>,
    pub unrestricted_unidentified_access: bool,
    pub capabilities: BTreeMap<String, bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CertificateJson {
    pub certificate: String,
}

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

pub async fn delivery_certificate(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    let certificate = state.profiles.delivery_certificate(caller).await?;
    Ok(HttpResponse::Ok().json(CertificateJson {
        certificate: encode_base64(&certificate),
    }))
}
