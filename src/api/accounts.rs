//! `/v1/registration` and `/v1/accounts/*`: thin handlers over `service::accounts`.

use actix_web::{HttpResponse, web};

use super::entities::{AccountAttributesJson, RegistrationRequestJson, RegistrationResponseJson};
use crate::api::extract::NewPassword;
use crate::error::AppError;
use crate::identity::{AuthenticatedDevice, ClientAddr};
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/registration", tag = "accounts",
    summary = "Register an account; the Basic password becomes the primary device's password",
    security(("basic" = [])),
    request_body = crate::api::entities::RegistrationRequestJson,
    responses(
        (status = 200, description = "Registered", body = crate::api::entities::RegistrationResponseJson),
        (status = 400, description = "Malformed body or password", body = crate::api::entities::ErrorJson),
        (status = 403, description = "Registration is closed, or needs a valid inviteToken (registration = token)", body = crate::api::entities::ErrorJson),
        (status = 422, description = "A signature does not verify", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (registration)", body = crate::api::entities::ErrorJson),
    ))]
/// `POST /v1/registration`: the Basic password becomes the primary device's password (the
/// username part is ignored, as in Signal).
pub async fn register(
    state: web::Data<AppState>,
    password: NewPassword,
    client: ClientAddr,
    body: web::Json<RegistrationRequestJson>,
) -> Result<HttpResponse, AppError> {
    let NewPassword(password) = password;
    let mut body = body.into_inner();
    let invite_token = body.invite_token.take();
    let registration = body.try_into()?;
    let identity = state
        .accounts
        .register(registration, password, client.0, invite_token.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(RegistrationResponseJson::of(&identity, false)))
}

#[utoipa::path(put, path = "/v1/accounts/attributes/", tag = "accounts",
    summary = "Replace the calling device's attributes", security(("basic" = [])),
    request_body = crate::api::entities::AccountAttributesJson,
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "Malformed attributes", body = crate::api::entities::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
    ))]
/// `PUT /v1/accounts/attributes/`.
pub async fn set_attributes(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<AccountAttributesJson>,
) -> Result<HttpResponse, AppError> {
    state
        .accounts
        .set_attributes(caller, body.into_inner().try_into()?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/v1/accounts/me", tag = "accounts",
    summary = "Delete the account with its devices, keys and queues", security(("basic" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
    ))]
/// `DELETE /v1/accounts/me`.
pub async fn delete(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    state.accounts.delete(caller).await?;
    Ok(HttpResponse::NoContent().finish())
}
