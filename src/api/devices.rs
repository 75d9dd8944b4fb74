//! `GET /v1/devices`, `DELETE /v1/devices/{id}`, linking, renaming (`PUT
//! /v1/accounts/name/`) and the wait for a linked device: thin handlers over
//! `service::accounts` and `service::devices`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::entities::{LinkCodeJson, LinkDeviceRequestJson, LinkDeviceResponseJson};
use crate::api::extract::NewPassword;
use crate::domain::encoding::{decode_base64, encode_base64};
use crate::domain::ids::DeviceId;
use crate::error::AppError;
use crate::identity::{AuthenticatedDevice, PrimaryDevice};
use crate::service::devices::{DeviceInfo, LinkedDeviceWait};
use crate::state::AppState;

/// `DeviceInfo` (PROTOCOL.md 16.2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJson {
    pub id: u8,
    /// The client-encrypted name, std-pad base64, when the device set one.
    pub name: Option<String>,
    /// Midnight UTC of the last day the device was seen, in ms (kept only to the day).
    pub last_seen: i64,
    pub registration_id: u16,
    /// The creation time (be64 ms) sealed by HPKE to the account's identity key, std-nopad
    /// base64 of libsignal's 57 bytes; `info` "deviceCreatedAt", `aad` the device id then
    /// the be32 registration id.
    pub created_at_ciphertext: String,
}

impl DeviceJson {
    pub fn of(device: &DeviceInfo) -> Self {
        Self {
            id: device.id.get(),
            name: device.name.as_deref().map(encode_base64),
            last_seen: device.last_seen_day_ms,
            registration_id: device.registration_id.get(),
            created_at_ciphertext: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &device.created_at_ciphertext,
            ),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DeviceListJson {
    pub devices: Vec<DeviceJson>,
}

#[utoipa::path(get, path = "/v1/devices", tag = "devices",
    summary = "The account's devices", security(("basic" = [])),
    responses(
        (status = 200, description = "The devices", body = DeviceListJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
    ))]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    let devices = state.devices.list(caller).await?;
    Ok(HttpResponse::Ok().json(DeviceListJson {
        devices: devices.iter().map(DeviceJson::of).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/devices/provisioning/code", tag = "devices",
    summary = "A single-use code (10 minutes) for linking a new device; primary only",
    security(("basic" = [])),
    responses(
        (status = 200, description = "The code", body = crate::api::entities::LinkCodeJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 403, description = "Not the primary device", body = crate::api::entities::ErrorJson),
        (status = 411, description = "The account has as many devices as it may", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (allocateDevice)", body = crate::api::entities::ErrorJson),
    ))]
/// `GET /v1/devices/provisioning/code`.
pub async fn link_code(
    state: web::Data<AppState>,
    caller: PrimaryDevice,
) -> Result<HttpResponse, AppError> {
    let code = state.accounts.link_code(caller).await?;
    Ok(HttpResponse::Ok().json(LinkCodeJson {
        verification_code: code.verification_code,
        token_identifier: code.token_identifier,
    }))
}

#[utoipa::path(put, path = "/v1/devices/link", tag = "devices",
    summary = "Link a new device with a code; the Basic password becomes its password",
    security(("basic" = [])),
    request_body = crate::api::entities::LinkDeviceRequestJson,
    responses(
        (status = 200, description = "Linked", body = crate::api::entities::LinkDeviceResponseJson),
        (status = 403, description = "Unknown or used code", body = crate::api::entities::ErrorJson),
        (status = 409, description = "The new device lacks the optionalPhoneNumber capability", body = crate::api::entities::ErrorJson),
        (status = 411, description = "The account has as many devices as it may", body = crate::api::entities::ErrorJson),
        (status = 422, description = "A signature does not verify", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (verifyDevice)", body = crate::api::entities::ErrorJson),
    ))]
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
        pni: None,
        device_id: id.get(),
    }))
}

#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "devices",
    summary = "Remove a linked device (the primary any, a linked device itself)",
    security(("basic" = [])),
    params(("device_id" = u8, Path, description = "The device to remove")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 403, description = "Not allowed to remove that device", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No such device", body = crate::api::entities::ErrorJson),
    ))]
pub async fn remove(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id: DeviceId = path.into_inner().parse()?;
    state.accounts.remove_device(caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Largest `PUT /v1/accounts/name/` body: a 225-byte name in base64, with room.
pub const DEVICE_NAME_JSON_LIMIT: usize = 1024;

/// `PUT /v1/accounts/name/`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNameJson {
    /// The client-encrypted name, base64 (1..225 bytes decoded).
    pub device_name: String,
}

#[derive(Clone, Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RenameQuery {
    /// The device to rename (the caller's own when absent); others than its own only for
    /// the primary.
    pub device_id: Option<String>,
}

#[utoipa::path(put, path = "/v1/accounts/name/", tag = "devices",
    summary = "Set a device's encrypted name", security(("basic" = [])),
    params(RenameQuery),
    request_body = DeviceNameJson,
    responses(
        (status = 204, description = "Renamed"),
        (status = 400, description = "Malformed body or device id", body = crate::api::entities::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 403, description = "A linked device renaming another", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No such device", body = crate::api::entities::ErrorJson),
        (status = 422, description = "The name is empty or longer than 225 bytes", body = crate::api::entities::ErrorJson),
    ))]
/// `PUT /v1/accounts/name/?deviceId=<n>`.
pub async fn rename(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    query: web::Query<RenameQuery>,
    body: web::Json<DeviceNameJson>,
) -> Result<HttpResponse, AppError> {
    let target = query
        .into_inner()
        .device_id
        .map(|id| id.parse::<DeviceId>())
        .transpose()?;
    let name = decode_base64("deviceName", &body.device_name)?;
    state.devices.rename(caller, target, name).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Clone, Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait, 1..3600 (default 30).
    pub timeout: Option<i64>,
}

#[utoipa::path(get, path = "/v1/devices/wait_for_linked_device/{token_identifier}", tag = "devices",
    summary = "Wait until a device links with the code of this token identifier",
    security(("basic" = [])),
    params(
        ("token_identifier" = String, Path, description = "The tokenIdentifier of GET /v1/devices/provisioning/code"),
        WaitQuery,
    ),
    responses(
        (status = 200, description = "The device that linked", body = DeviceJson),
        (status = 204, description = "No device linked before the wait ended"),
        (status = 400, description = "Malformed token identifier or timeout", body = crate::api::entities::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (waitForLinkedDevice)", body = crate::api::entities::ErrorJson),
        (status = 503, description = "This server holds as many waits as it may", body = crate::api::entities::ErrorJson),
    ))]
/// `GET /v1/devices/wait_for_linked_device/{tokenIdentifier}?timeout=<s>`: a long poll,
/// answered by whichever pod serves it when the device links on any pod.
pub async fn wait_for_linked_device(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    path: web::Path<String>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, AppError> {
    let wait = LinkedDeviceWait::parse(path.into_inner(), query.timeout)?;
    Ok(match state.devices.wait_for_linked(caller, wait).await? {
        Some(device) => HttpResponse::Ok().json(DeviceJson::of(&device)),
        None => HttpResponse::NoContent().finish(),
    })
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ProvisioningMessageJson {
    /// base64 of the (client-encrypted) provisioning message.
    pub body: String,
}

#[utoipa::path(put, path = "/v1/provisioning/{address}", tag = "devices",
    summary = "Hand a provisioning message to the device waiting at an address, on any pod",
    security(("basic" = [])),
    params(("address" = String, Path, description = "The address the provisioning socket announced")),
    request_body = ProvisioningMessageJson,
    responses(
        (status = 204, description = "Delivered"),
        (status = 400, description = "Malformed address or body", body = crate::api::entities::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No device waits at that address", body = crate::api::entities::ErrorJson),
    ))]
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
    state
        .presence
        .provision(&address, bytes::Bytes::from(message))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
