//! `/v1/accounts/{gcm,apn,webpush}/`: a device registers where its wake-ups go (PROTOCOL.md
//! 11.1, 11.2, 11.8). Thin handlers over `service::push`; an empty, missing or malformed
//! token or subscription is a 422, as in Signal.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::push::{PushKind, PushToken, WebPushSubscription};
use crate::error::AppError;
use crate::identity::{AuthenticatedDevice, ClientAddr};
use crate::state::AppState;

/// Largest push registration body (a subscription's endpoint is at most 2 KiB).
pub const PUSH_JSON_LIMIT: usize = 8 * 1024;

/// `PUT /v1/accounts/gcm/`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcmRegistrationIdJson {
    /// The FCM registration token.
    #[serde(default)]
    pub gcm_registration_id: Option<String>,
    /// Accepted and ignored (Signal's legacy field).
    #[serde(default)]
    #[allow(dead_code)]
    pub web_socket_channel: Option<bool>,
}

/// `PUT /v1/accounts/apn/`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApnRegistrationIdJson {
    /// The APNs device token.
    #[serde(default)]
    pub apn_registration_id: Option<String>,
    /// Accepted and ignored (Signal's legacy VoIP token).
    #[serde(default)]
    #[allow(dead_code)]
    pub voip_registration_id: Option<String>,
}

/// `PUT /v1/accounts/webpush/`: a WebPush (UnifiedPush) subscription.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebPushSubscriptionJson {
    /// Where wake-ups are POSTed: an `https` URL.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Unpadded base64url of the subscription's 65-byte uncompressed P-256 point.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Unpadded base64url of the subscription's 16-byte auth secret.
    #[serde(default)]
    pub auth: Option<String>,
}

/// `PUT /v1/accounts/webpush/activate/`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebPushActivationJson {
    /// The token the activation push carried.
    #[serde(default)]
    pub activation_token: Option<String>,
}

fn token(field: &str, value: Option<String>) -> Result<PushToken, AppError> {
    Ok(PushToken::parse(field, value.as_deref().unwrap_or(""))?)
}

#[utoipa::path(put, path = "/v1/accounts/gcm/", tag = "push",
    summary = "Register the device's FCM token (replaces any APNs token or WebPush subscription)",
    security(("basic" = [])),
    request_body = GcmRegistrationIdJson,
    responses(
        (status = 204, description = "Registered"),
        (status = 400, description = "Not JSON", body = crate::error::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorJson),
        (status = 413, description = "Body too large", body = crate::error::ErrorJson),
        (status = 422, description = "Empty or malformed token", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (pushRegistration)", body = crate::error::ErrorJson),
    ))]
pub async fn set_gcm(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<GcmRegistrationIdJson>,
) -> Result<HttpResponse, AppError> {
    let token = token("gcmRegistrationId", body.into_inner().gcm_registration_id)?;
    state.push.set_fcm(caller, token).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/v1/accounts/gcm/", tag = "push",
    summary = "Remove the device's FCM token",
    security(("basic" = [])),
    responses(
        (status = 204, description = "Removed (or there was none)"),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (pushRegistration)", body = crate::error::ErrorJson),
    ))]
pub async fn delete_gcm(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    state.push.clear(caller, PushKind::Fcm).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(put, path = "/v1/accounts/apn/", tag = "push",
    summary = "Register the device's APNs token (replaces any FCM token or WebPush subscription)",
    security(("basic" = [])),
    request_body = ApnRegistrationIdJson,
    responses(
        (status = 204, description = "Registered"),
        (status = 400, description = "Not JSON", body = crate::error::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorJson),
        (status = 413, description = "Body too large", body = crate::error::ErrorJson),
        (status = 422, description = "Empty or malformed token", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (pushRegistration)", body = crate::error::ErrorJson),
    ))]
pub async fn set_apn(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<ApnRegistrationIdJson>,
) -> Result<HttpResponse, AppError> {
    let token = token("apnRegistrationId", body.into_inner().apn_registration_id)?;
    state.push.set_apns(caller, token).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/v1/accounts/apn/", tag = "push",
    summary = "Remove the device's APNs token",
    security(("basic" = [])),
    responses(
        (status = 204, description = "Removed (or there was none)"),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (pushRegistration)", body = crate::error::ErrorJson),
    ))]
pub async fn delete_apn(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    state.push.clear(caller, PushKind::Apns).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(put, path = "/v1/accounts/webpush/", tag = "push",
    summary = "Register a WebPush (UnifiedPush) subscription, inactive until activated",
    security(("basic" = [])),
    request_body = WebPushSubscriptionJson,
    responses(
        (status = 204, description = "Stored (inactive until activated)"),
        (status = 400, description = "Not JSON", body = crate::error::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorJson),
        (status = 413, description = "Body too large", body = crate::error::ErrorJson),
        (status = 422, description = "Missing or malformed field, not https, or an endpoint on a loopback, private or link-local address", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (webPushSet)", body = crate::error::ErrorJson),
    ))]
pub async fn set_webpush(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<WebPushSubscriptionJson>,
) -> Result<HttpResponse, AppError> {
    let body = body.into_inner();
    let subscription = WebPushSubscription::parse(
        body.endpoint.as_deref().unwrap_or(""),
        body.public_key.as_deref().unwrap_or(""),
        body.auth.as_deref().unwrap_or(""),
    )?;
    state.push.subscribe_webpush(caller, subscription).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(put, path = "/v1/accounts/webpush/activate/", tag = "push",
    summary = "Activate the device's WebPush subscription with the token its activation push carried",
    security(("basic" = [])),
    request_body = WebPushActivationJson,
    responses(
        (status = 204, description = "Done (activated only if the token matched)"),
        (status = 400, description = "Not JSON", body = crate::error::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (webPushSet)", body = crate::error::ErrorJson),
    ))]
pub async fn activate_webpush(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<WebPushActivationJson>,
) -> Result<HttpResponse, AppError> {
    // A token that is not a UUID cannot match: 204 as for any other wrong token.
    let token = body
        .into_inner()
        .activation_token
        .and_then(|t| Uuid::parse_str(&t).ok());
    state.push.activate_webpush(caller, token).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/v1/accounts/webpush/", tag = "push",
    summary = "Remove the device's WebPush subscription",
    security(("basic" = [])),
    responses(
        (status = 204, description = "Removed (or there was none)"),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (webPushSet)", body = crate::error::ErrorJson),
    ))]
pub async fn delete_webpush(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
) -> Result<HttpResponse, AppError> {
    state.push.clear(caller, PushKind::WebPush).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/webpush/vapid", tag = "push",
    summary = "The VAPID public key WebPush subscriptions must be made for (sealpost)",
    responses(
        (status = 200, description = "The key: url-safe base64 without padding of the 65-byte uncompressed P-256 point", body = VapidKeyJson),
        (status = 429, description = "Rate limited (webPushVapid, per client address)", body = crate::error::ErrorJson),
    ))]
pub async fn vapid_key(
    state: web::Data<AppState>,
    client: ClientAddr,
) -> Result<HttpResponse, AppError> {
    let key = state.push.vapid_public_key(client.0).await?;
    Ok(HttpResponse::Ok().json(VapidKeyJson {
        public_key: key.to_string(),
    }))
}

/// `{"publicKey": ...}`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VapidKeyJson {
    pub public_key: String,
}
