//! The account identity's JSON (`AccountIdentityResponse`, PROTOCOL.md 16.1), built in one
//! place for `whoami` and the registration answer, and the anonymous existence check
//! (`HEAD /v1/accounts/account/{serviceId}`, 16.3).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::encoding::encode_base64;
use crate::domain::ids::Aci;
use crate::error::AppError;
use crate::identity::{Anonymous, AuthenticatedDevice, ClientAddr};
use crate::service::identity::AccountIdentity;
use crate::state::AppState;

/// One badge the account holds (sealpost has none: always an empty list).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BadgeEntitlementJson {
    pub id: String,
    pub expiration_seconds: i64,
    pub visible: bool,
}

/// The account's backup entitlement (sealpost has none: always `null`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupEntitlementJson {
    pub backup_level: i64,
    pub expiration_seconds: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct EntitlementsJson {
    pub badges: Vec<BadgeEntitlementJson>,
    pub backup: Option<BackupEntitlementJson>,
}

/// `GET /v1/accounts/whoami`: who the caller's account is. Every field is always present
/// (absent values are `null`), as Signal serializes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountIdentityResponseJson {
    #[schema(value_type = String, format = Uuid)]
    pub uuid: Aci,
    pub number: Option<String>,
    pub pni: Option<String>,
    /// url-nopad, 32 bytes.
    pub username_hash: Option<String>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub username_link_handle: Option<uuid::Uuid>,
    pub storage_capable: bool,
    pub entitlements: EntitlementsJson,
    /// std-pad, 16 bytes.
    pub auth_credential_salt: Option<String>,
}

impl AccountIdentityResponseJson {
    /// The one builder of the shape (whoami and registration).
    pub fn of(identity: &AccountIdentity) -> Self {
        Self {
            uuid: identity.aci,
            number: None,
            pni: None,
            username_hash: identity.username_hash.map(|h| {
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h)
            }),
            username_link_handle: identity.username_link_handle,
            storage_capable: identity.storage_capable,
            entitlements: EntitlementsJson::default(),
            auth_credential_salt: Some(encode_base64(&identity.auth_credential_salt)),
        }
    }
}

/// `POST /v1/registration`'s answer: the account identity plus `reregistration`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResponseJson {
    #[serde(flatten)]
    pub identity: AccountIdentityResponseJson,
    pub reregistration: bool,
}

impl RegistrationResponseJson {
    pub fn of(identity: &AccountIdentity, reregistration: bool) -> Self {
        Self {
            identity: AccountIdentityResponseJson::of(identity),
            reregistration,
        }
    }
}

#[utoipa::path(get, path = "/v1/accounts/whoami", tag = "accounts",
    summary = "The caller's account identity", security(("basic" = [])),
    responses(
        (status = 200, description = "The account", body = AccountIdentityResponseJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
    ))]
/// `GET /v1/accounts/whoami`.
pub async fn whoami(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    let identity = state.identity.whoami(caller).await?;
    Ok(HttpResponse::Ok().json(AccountIdentityResponseJson::of(&identity)))
}

#[utoipa::path(head, path = "/v1/accounts/account/{service_id}", tag = "accounts",
    summary = "Whether an account exists; anonymous callers only",
    params(("service_id" = String, Path, description = "The account's ACI (plain or `ACI:`)")),
    responses(
        (status = 200, description = "The account exists"),
        (status = 400, description = "The request is authenticated, or names a PNI", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No such account", body = crate::api::entities::ErrorJson),
        (status = 422, description = "Not a service id", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (checkAccountExistence)", body = crate::api::entities::ErrorJson),
    ))]
/// `HEAD /v1/accounts/account/{serviceId}`.
pub async fn account_exists(
    state: web::Data<AppState>,
    _anonymous: Anonymous,
    client: ClientAddr,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let service_id = path.into_inner();
    let pni = service_id
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("PNI:"));
    if pni {
        return Err(AppError::bad_request("PNI identifiers are not supported"));
    }
    let aci: Aci = service_id
        .parse()
        .map_err(|_| AppError::Unprocessable("not a valid service identifier".into()))?;
    if state.identity.exists(client.0, aci).await? {
        Ok(HttpResponse::Ok().finish())
    } else {
        Err(AppError::NotFound("no such account".into()))
    }
}
