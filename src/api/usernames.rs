//! `/v1/accounts/username_hash*` and `/v1/accounts/username_link*` (PROTOCOL.md 14.1): thin
//! handlers over `service::usernames`, and their JSON shapes. Bytes are url-nopad; every
//! field is optional in the JSON so that a missing one is the 422 Signal's validation gives,
//! not a parse error.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::ids::Aci;
use crate::domain::usernames::{Confirmation, EncryptedUsername, parse_reserve_hashes};
use crate::error::AppError;
use crate::identity::Anonymous;
use crate::identity::{AuthenticatedDevice, ClientAddr};
use crate::state::AppState;

/// Largest body of a username request: 20 hashes are about 1 KiB of JSON, a proof a few
/// hundred bytes.
pub const USERNAME_JSON_LIMIT: usize = 8 * 1024;

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ReserveUsernameHashRequestJson {
    /// 1 to 20 hashes (url-nopad, 32 bytes each), in order of preference.
    pub username_hashes: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveUsernameHashResponseJson {
    pub username_hash: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfirmUsernameHashRequestJson {
    pub username_hash: Option<String>,
    /// The proof that the hash came from a username (present, not verified: PROTOCOL.md 14.4).
    pub zk_proof: Option<String>,
    /// 1 to 128 bytes, or null to clear the link.
    pub encrypted_username: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsernameHashResponseJson {
    pub username_hash: String,
    pub username_link_handle: Option<Uuid>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AccountIdentifierResponseJson {
    #[schema(value_type = String, format = Uuid)]
    pub uuid: Aci,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct EncryptedUsernameJson {
    /// 1 to 128 bytes, url-nopad.
    pub username_link_encrypted_value: Option<String>,
    pub keep_link_handle: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsernameLinkHandleJson {
    pub username_link_handle: Uuid,
}

#[utoipa::path(put, path = "/v1/accounts/username_hash/reserve", tag = "usernames",
    summary = "Reserve the first free one of up to 20 username hashes for 5 minutes",
    security(("basic" = [])),
    request_body = ReserveUsernameHashRequestJson,
    responses(
        (status = 200, description = "Reserved", body = ReserveUsernameHashResponseJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 409, description = "Every hash is taken", body = crate::api::entities::ErrorJson),
        (status = 422, description = "No hashes, more than 20, or one not 32 bytes of url-safe base64", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (usernameReserve)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn reserve_username_hash(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<ReserveUsernameHashRequestJson>,
) -> Result<HttpResponse, AppError> {
    let hashes = parse_reserve_hashes(body.username_hashes.as_deref())?;
    let hash = state.usernames.reserve(caller, &hashes).await?;
    Ok(HttpResponse::Ok().json(ReserveUsernameHashResponseJson {
        username_hash: hash.encode(),
    }))
}

#[utoipa::path(put, path = "/v1/accounts/username_hash/confirm", tag = "usernames",
    summary = "Make the reserved hash the account's username, with an optional link value",
    security(("basic" = [])),
    request_body = ConfirmUsernameHashRequestJson,
    responses(
        (status = 200, description = "Confirmed (or already the account's)", body = UsernameHashResponseJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 409, description = "No reservation for this hash", body = crate::api::entities::ErrorJson),
        (status = 410, description = "The reservation lapsed and another account took the hash", body = crate::api::entities::ErrorJson),
        (status = 422, description = "A missing or empty proof, a hash that is not a canonical Ristretto point, bad sizes or base64", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (usernameSet)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn confirm_username_hash(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<ConfirmUsernameHashRequestJson>,
) -> Result<HttpResponse, AppError> {
    let confirmation = Confirmation::parse(
        body.username_hash.as_deref(),
        body.zk_proof.as_deref(),
        body.encrypted_username.as_deref(),
    )?;
    let link_handle = state.usernames.confirm(caller, &confirmation).await?;
    Ok(HttpResponse::Ok().json(UsernameHashResponseJson {
        username_hash: confirmation.hash.encode(),
        username_link_handle: link_handle,
    }))
}

#[utoipa::path(delete, path = "/v1/accounts/username_hash", tag = "usernames",
    summary = "Delete the account's username (its hash is held for the account 7 days) and link",
    security(("basic" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (usernameSet)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn delete_username_hash(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    state.usernames.delete(caller).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/accounts/username_hash/{usernameHash}", tag = "usernames",
    summary = "The account whose username has this hash (anonymous only)",
    params(("usernameHash" = String, Path, description = "url-nopad, 32 bytes")),
    responses(
        (status = 200, description = "The account", body = AccountIdentifierResponseJson),
        (status = 400, description = "The request is authenticated", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No account has this username hash", body = crate::api::entities::ErrorJson),
        (status = 422, description = "Not 32 bytes of url-safe base64", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (usernameLookup, per client address)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn lookup_username_hash(
    state: web::Data<AppState>,
    _anonymous: Anonymous,
    client: ClientAddr,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let aci = state.usernames.lookup(client.0, &path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(AccountIdentifierResponseJson { uuid: aci }))
}

#[utoipa::path(put, path = "/v1/accounts/username_link", tag = "usernames",
    summary = "Set the account's username link value; returns its handle",
    security(("basic" = [])),
    request_body = EncryptedUsernameJson,
    responses(
        (status = 200, description = "Set", body = UsernameLinkHandleJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 409, description = "The account has no username", body = crate::api::entities::ErrorJson),
        (status = 422, description = "The value is missing, empty or over 128 bytes", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (usernameLinkOperation)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn set_username_link(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<EncryptedUsernameJson>,
) -> Result<HttpResponse, AppError> {
    let value = body
        .username_link_encrypted_value
        .as_deref()
        .ok_or_else(|| AppError::Unprocessable("usernameLinkEncryptedValue is missing".into()))?;
    let value = EncryptedUsername::parse("usernameLinkEncryptedValue", value)?;
    let handle = state
        .usernames
        .set_link(caller, &value, body.keep_link_handle)
        .await?;
    Ok(HttpResponse::Ok().json(UsernameLinkHandleJson {
        username_link_handle: handle,
    }))
}

#[utoipa::path(delete, path = "/v1/accounts/username_link", tag = "usernames",
    summary = "Delete the account's username link (handle and value)",
    security(("basic" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (usernameLinkOperation)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn delete_username_link(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    state.usernames.delete_link(caller).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/accounts/username_link/{uuid}", tag = "usernames",
    summary = "The encrypted username behind a link handle (anonymous only)",
    params(("uuid" = String, Path, description = "The link handle")),
    responses(
        (status = 200, description = "The link value", body = EncryptedUsernameJson),
        (status = 400, description = "The request is authenticated", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No link has this handle, or it is not a UUID", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (usernameLinkLookupPerIp)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn lookup_username_link(
    state: web::Data<AppState>,
    _anonymous: Anonymous,
    client: ClientAddr,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let value = state.usernames.link(client.0, &path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(EncryptedUsernameJson {
        username_link_encrypted_value: Some(value.encode()),
        keep_link_handle: false,
    }))
}
