//! `/v1/registration` and `/v1/accounts/*`: thin handlers over `service::accounts`.

use actix_web::{HttpResponse, web};

use super::entities::{
    AccountAttributesJson, RegistrationRequestJson, RegistrationResponseJson, WhoAmIJson,
};
use crate::auth::{AuthenticatedDevice, ClientAddr, NewPassword};
use crate::error::AppError;
use crate::state::AppState;

/// `POST /v1/registration`: the Basic password becomes the primary device's password (the
/// username part is ignored, as in Signal).
pub async fn register(
    state: web::Data<AppState>,
    password: NewPassword,
    client: ClientAddr,
    body: web::Json<RegistrationRequestJson>,
) -> Result<HttpResponse, AppError> {
    let NewPassword(password) = password;
    let registration = body.into_inner().try_into()?;
    let aci = state
        .accounts
        .register(registration, password, client.0)
        .await?;
    Ok(HttpResponse::Ok().json(RegistrationResponseJson {
        uuid: aci,
        number: None,
        pni: None,
        storage_capable: false,
        reregistration: false,
    }))
}

/// `GET /v1/accounts/whoami`.
pub async fn whoami(caller: AuthenticatedDevice) -> HttpResponse {
    HttpResponse::Ok().json(WhoAmIJson {
        uuid: caller.aci,
        number: None,
    })
}

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

/// `DELETE /v1/accounts/me`.
pub async fn delete(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    state.accounts.delete(caller).await?;
    Ok(HttpResponse::NoContent().finish())
}
