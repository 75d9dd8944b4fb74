//! `GET /v1/devices` and `DELETE /v1/devices/{id}`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::entities::{LinkCodeJson, LinkDeviceRequestJson, LinkDeviceResponseJson};
use crate::auth::{AuthenticatedDevice, NewPassword};
use crate::domain::encoding::encode_base64;
use crate::domain::ids::DeviceId;
use crate::error::AppError;
use crate::state::AppState;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJson {
    pub id: u8,
    /// The client-encrypted name, base64, when the device set one.
    pub name: Option<String>,
    /// Midnight UTC of the last day the device was seen, in ms (kept only to the day).
    pub last_seen: i64,
    pub registration_id: u16,
    pub created: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeviceListJson {
    pub devices: Vec<DeviceJson>,
}

pub async fn list(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    let devices = state.accounts.devices(caller).await?;
    Ok(HttpResponse::Ok().json(DeviceListJson {
        devices: devices
            .iter()
            .map(|d| DeviceJson {
                id: d.id.get(),
                name: d.attributes.name.as_deref().map(encode_base64),
                last_seen: d.last_seen_day_ms,
                registration_id: d.attributes.registration_id.get(),
                created: d.created_ms,
            })
            .collect(),
    }))
}

/// `GET /v1/devices/provisioning/code`.
pub async fn link_code(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    let code = state.accounts.link_code(caller).await?;
    Ok(HttpResponse::Ok().json(LinkCodeJson {
        verification_code: code.verification_code,
        token_identifier: code.token_identifier,
    }))
}

/// `PUT /v1/devices/link`: the Basic password becomes the new device's (the username part
/// is ignored).
pub async fn link(
    state: web::Data<AppState>,
    password: NewPassword,
    body: web::Json<LinkDeviceRequestJson>,
) -> Result<HttpResponse, AppError> {
    let NewPassword(password) = password;
    let (aci, id) = state
        .accounts
        .link_device(body.into_inner().try_into()?, password)
        .await?;
    Ok(HttpResponse::Ok().json(LinkDeviceResponseJson {
        uuid: aci,
        device_id: id.get(),
    }))
}

pub async fn remove(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id: DeviceId = path.into_inner().parse()?;
    state.accounts.remove_device(caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProvisioningMessageJson {
    /// base64 of the (client-encrypted) provisioning message.
    pub body: String,
}

/// `PUT /v1/provisioning/{address}`: hands the body to the provisioning socket holding the
/// address, on any pod; 404 when none does.
pub async fn provision(
    state: web::Data<AppState>,
    _caller: AuthenticatedDevice,
    path: web::Path<String>,
    body: web::Json<ProvisioningMessageJson>,
) -> Result<HttpResponse, AppError> {
    let address = path.into_inner();
    let valid = !address.is_empty()
        && address.len() <= 64
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(AppError::bad_request("invalid provisioning address"));
    }
    let message = crate::domain::encoding::decode_base64("body", &body.body)?;
    if state
        .notifier
        .publish_provisioning(&address, bytes::Bytes::from(message))
        .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(AppError::NotFound("no device waits at that address".into()))
    }
}
