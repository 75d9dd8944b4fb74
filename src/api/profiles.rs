//! Profiles (PROTOCOL.md 7, 13): `PUT /v1/profile`, the three `GET /v1/profile/...` forms,
//! and `GET /v1/certificate/delivery`. Thin handlers over `service::profiles`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

use crate::domain::encoding::encode_base64;
use crate::domain::ids::Aci;
use crate::domain::profiles::{ProfileVersion, RawProfileUpdate};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::identity::Requester;
use crate::service::profiles::{Profile, VersionFields};
use crate::state::AppState;

/// Largest `PUT /v1/profile` body: the fields are under 3 KiB of base64, 100 badge ids of
/// 255 characters about 26 KiB.
pub const PROFILE_JSON_LIMIT: usize = 64 * 1024;

/// Signal's `BaseProfileResponse`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileJson {
    pub identity_key: String,
    pub unidentified_access: Option<String>,
    pub unrestricted_unidentified_access: bool,
    pub capabilities: BTreeMap<String, bool>,
    /// Always empty: sealpost has no badges.
    pub badges: Vec<serde_json::Value>,
    /// The account's service id (its ACI).
    pub uuid: String,
}

impl ProfileJson {
    fn of(profile: Profile) -> Self {
        Self {
            identity_key: encode_base64(profile.identity_key.as_bytes()),
            unidentified_access: profile.unidentified_access.map(|mac| encode_base64(&mac)),
            unrestricted_unidentified_access: profile.unrestricted_unidentified_access,
            capabilities: profile.capabilities,
            badges: Vec::new(),
            uuid: profile.aci.to_string(),
        }
    }
}

/// Signal's `VersionedProfileResponse` and `ExpiringProfileKeyCredentialProfileResponse`:
/// the base profile and one version's fields (std-pad base64, null when not stored), and
/// `credential`, always null (sealpost issues no zkgroup credentials).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionedProfileJson {
    #[serde(flatten)]
    pub base: ProfileJson,
    pub name: Option<String>,
    pub about: Option<String>,
    pub about_emoji: Option<String>,
    pub payment_address: Option<String>,
    pub phone_number_sharing: Option<String>,
    /// The avatar's path under the cdn-0 base (`profiles/<id>`).
    pub avatar: Option<String>,
    /// Only in the credential form's answer; always null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<Option<String>>,
}

impl VersionedProfileJson {
    fn of(profile: Profile, fields: VersionFields, credential: bool) -> Self {
        let b64 = |v: Option<Vec<u8>>| v.map(|bytes| encode_base64(&bytes));
        Self {
            base: ProfileJson::of(profile),
            name: b64(fields.name),
            about: b64(fields.about),
            about_emoji: b64(fields.about_emoji),
            payment_address: b64(fields.payment_address),
            phone_number_sharing: b64(fields.phone_number_sharing),
            avatar: fields.avatar,
            credential: credential.then_some(None),
        }
    }
}

/// Signal's `CreateProfileRequest`; unknown fields are ignored, every size checked by
/// `domain::profiles`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateProfileJson {
    /// 64 hex characters.
    pub version: Option<String>,
    /// std base64 of the 97-byte zkgroup `ProfileKeyCommitment`.
    pub commitment: Option<String>,
    /// std base64, 81 or 285 bytes.
    pub name: Option<String>,
    /// std base64, 0 or 60 bytes.
    pub about_emoji: Option<String>,
    /// std base64, 0, 156, 282 or 540 bytes.
    pub about: Option<String>,
    /// std base64, 0 or 582 bytes.
    pub payment_address: Option<String>,
    /// std base64, 0 or 29 bytes.
    pub phone_number_sharing: Option<String>,
    /// Whether the profile has an avatar.
    #[serde(default)]
    pub avatar: bool,
    /// Keep the avatar stored under this same version.
    #[serde(default)]
    pub same_avatar: bool,
    /// At most 100; accepted and ignored.
    pub badge_ids: Option<Vec<String>>,
}

/// Signal's `ProfileAvatarUploadAttributes`: the S3 POST-policy fields to post the avatar
/// with, as a multipart form with the file, to the cdn-0 base.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AvatarUploadJson {
    /// `profiles/<id>`.
    pub key: String,
    pub credential: String,
    pub acl: String,
    pub algorithm: String,
    pub date: String,
    /// std base64 of the JSON policy.
    pub policy: String,
    /// Hex SigV4 signature of the policy.
    pub signature: String,
}

#[utoipa::path(put, path = "/v1/profile", tag = "profiles",
    summary = "Store a version of the caller's encrypted profile and make it current",
    security(("basic" = [])),
    request_body = CreateProfileJson,
    responses(
        (status = 200, description = "Stored; with the avatar upload form when `avatar` is true and `sameAvatar` false, else an empty body", body = AvatarUploadJson),
        (status = 400, description = "Not JSON", body = crate::error::ErrorJson),
        (status = 401, description = "Missing or invalid credentials", body = crate::error::ErrorJson),
        (status = 413, description = "Body over 64 KiB", body = crate::error::ErrorJson),
        (status = 422, description = "A field missing, of the wrong size or not std base64; nothing stored", body = crate::error::ErrorJson),
        (status = 429, description = "Rate limited (profileSet, per account)", body = crate::error::ErrorJson),
    ))]
pub async fn set_profile(
    state: web::Data<AppState>,
    caller: AuthenticatedDevice,
    body: web::Json<CreateProfileJson>,
) -> Result<HttpResponse, AppError> {
    let body = body.into_inner();
    let update = RawProfileUpdate {
        version: body.version.as_deref(),
        commitment: body.commitment.as_deref(),
        name: body.name.as_deref(),
        about_emoji: body.about_emoji.as_deref(),
        about: body.about.as_deref(),
        payment_address: body.payment_address.as_deref(),
        phone_number_sharing: body.phone_number_sharing.as_deref(),
        has_avatar: body.avatar,
        same_avatar: body.same_avatar,
        badge_ids: body.badge_ids.as_deref(),
    }
    .check()?;
    Ok(match state.profiles.set_profile(caller, update).await? {
        Some(form) => HttpResponse::Ok().json(AvatarUploadJson {
            key: form.key,
            credential: form.credential,
            acl: form.acl,
            algorithm: form.algorithm,
            date: form.date,
            policy: form.policy,
            signature: form.signature,
        }),
        None => HttpResponse::Ok().finish(),
    })
}

/// sealpost verifies no group send endorsements (zkgroup): a request carrying one is 401.
fn refuse_group_send_token(request: &HttpRequest) -> Result<(), AppError> {
    match request.headers().contains_key("group-send-token") {
        true => Err(AppError::Unauthorized),
        false => Ok(()),
    }
}

/// A version named in a path: 64 hex characters, else 400.
fn path_version(value: &str) -> Result<ProfileVersion, AppError> {
    ProfileVersion::parse(value).map_err(|e| AppError::BadRequest(e.to_string()))
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
        (status = 401, description = "Missing credentials, wrong access key, unknown account (anonymous) or a Group-Send-Token", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No such account (authenticated)", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (profile, authenticated callers)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn profile(
    state: web::Data<AppState>,
    requester: Requester,
    path: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, AppError> {
    refuse_group_send_token(&request)?;
    let target: Aci = path.into_inner().parse()?;
    let profile = state.profiles.profile(requester, target).await?;
    Ok(HttpResponse::Ok().json(ProfileJson::of(profile)))
}

#[utoipa::path(get, path = "/v1/profile/{identifier}/{version}", tag = "profiles",
    summary = "An account's profile and one version of its encrypted fields",
    security(("basic" = []), ("accessKey" = [])),
    params(
        ("identifier" = String, Path, description = "The target's ACI"),
        ("version" = String, Path, description = "64 hex characters"),
    ),
    responses(
        (status = 200, description = "The profile; the version's fields are null when it is not stored", body = VersionedProfileJson),
        (status = 400, description = "Not an ACI or not a version", body = crate::api::entities::ErrorJson),
        (status = 401, description = "Missing credentials, wrong access key, unknown account (anonymous) or a Group-Send-Token", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No such account (authenticated)", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (profile, authenticated callers)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn versioned_profile(
    state: web::Data<AppState>,
    requester: Requester,
    path: web::Path<(String, String)>,
    request: HttpRequest,
) -> Result<HttpResponse, AppError> {
    refuse_group_send_token(&request)?;
    let (target, version) = path.into_inner();
    let target: Aci = target.parse()?;
    let version = path_version(&version)?;
    let (profile, fields) = state
        .profiles
        .versioned_profile(requester, target, &version)
        .await?;
    Ok(HttpResponse::Ok().json(VersionedProfileJson::of(profile, fields, false)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct CredentialQuery {
    /// Must be `expiringProfileKey`.
    pub credential_type: Option<String>,
}

#[utoipa::path(get, path = "/v1/profile/{identifier}/{version}/{credentialRequest}", tag = "profiles",
    summary = "The versioned profile and a profile key credential (always null: sealpost has no zkgroup)",
    security(("basic" = []), ("accessKey" = [])),
    params(
        ("identifier" = String, Path, description = "The target's ACI"),
        ("version" = String, Path, description = "64 hex characters"),
        ("credentialRequest" = String, Path, description = "Hex of a zkgroup ProfileKeyCredentialRequest"),
        CredentialQuery,
    ),
    responses(
        (status = 200, description = "The versioned profile with `credential: null`", body = VersionedProfileJson),
        (status = 400, description = "Not an ACI, not a version, a request that is not hex, or a credentialType other than expiringProfileKey", body = crate::api::entities::ErrorJson),
        (status = 401, description = "Missing credentials, wrong access key, unknown account (anonymous) or a Group-Send-Token", body = crate::api::entities::ErrorJson),
        (status = 404, description = "No such account (authenticated)", body = crate::api::entities::ErrorJson),
        (status = 429, description = "Rate limited (profile, authenticated callers)", body = crate::api::entities::ErrorJson),
    ))]
pub async fn credential_profile(
    state: web::Data<AppState>,
    requester: Requester,
    path: web::Path<(String, String, String)>,
    query: web::Query<CredentialQuery>,
    request: HttpRequest,
) -> Result<HttpResponse, AppError> {
    refuse_group_send_token(&request)?;
    let (target, version, credential_request) = path.into_inner();
    let target: Aci = target.parse()?;
    let version = path_version(&version)?;
    if query.credential_type.as_deref() != Some("expiringProfileKey") {
        return Err(AppError::bad_request(
            "credentialType must be expiringProfileKey",
        ));
    }
    let hex = credential_request.len() % 2 == 0
        && !credential_request.is_empty()
        && credential_request.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex {
        return Err(AppError::bad_request("credentialRequest must be hex"));
    }
    let (profile, fields) = state
        .profiles
        .versioned_profile(requester, target, &version)
        .await?;
    Ok(HttpResponse::Ok().json(VersionedProfileJson::of(profile, fields, true)))
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
