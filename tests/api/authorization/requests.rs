//! The endpoints of the matrix: the request each caller sends (a valid one, so that only
//! who calls decides the status), how it travels (HTTP, tunnel, socket upgrade), and what a
//! successful answer may contain.

use prost::Message as _;
use sealpost::api::entities::{
    CheckKeysRequestJson, IncomingMessageJson, IncomingMessageListJson, LinkDeviceRequestJson,
    SetKeysRequestJson,
};
use sealpost::client::ws::WsClient;
use sealpost::client::{AccountKeys, default_attributes};
use sealpost::domain::encoding::{decode_base64, encode_base64};
use sealpost::domain::ids::Aci;
use sealpost::domain::keys::{EcPublicKey, key_digest};
use sealpost::domain::multi_recipient::{VERSION_SERVICE_ID, encode};
use sealpost::proto::sealed_sender::{SenderCertificate, sender_certificate};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::world::{Account, Caller, World};
use crate::common::TestApp;

/// Whose resource a request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Alice,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Keepalive,
    Register,
    WhoAmI,
    /// `/v1/accounts/attributes/` and its alias without the slash.
    SetAttributes(&'static str),
    ListDevices,
    LinkCode,
    LinkWithBadCode,
    Provision,
    KeyCounts,
    UploadKeys,
    CheckKeys,
    Certificate,
    FetchKeys(Target, &'static str),
    Profile(Target),
    /// `PUT /v1/profile` with a valid profile and no avatar.
    SetProfile,
    /// `GET /v1/profile/{aci}/{version}`.
    VersionedProfile(Target),
    /// `GET /v1/profile/{aci}/{version}/{credentialRequest}?credentialType=expiringProfileKey`.
    CredentialProfile(Target),
    /// `GET /v1/profile/{aci}` with a `Group-Send-Token` (sealpost verifies none).
    ProfileWithGroupSendToken,
    /// `GET /cdn0/profiles/{id}` of an avatar nobody uploaded.
    AvatarDownload,
    /// `POST /cdn0/` with a body that is no multipart form.
    AvatarUpload,
    SendMessage(Target),
    SendMulti(Target),
    /// `/v1/websocket/` or `/v1/websocket`.
    WebSocket(&'static str),
    /// `/v1/websocket/provisioning/` or without the slash.
    ProvisioningSocket(&'static str),
    SetGcm,
    DeleteGcm,
    SetApn,
    DeleteApn,
    SetWebPush,
    ActivateWebPush,
    DeleteWebPush,
    VapidKey,
    CallingRelays,
    ReportSpam,
    UploadForm,
    /// `GET` or `HEAD /attachments/{key}`.
    Download(&'static str),
    /// The TUS endpoint: `OPTIONS`, creation `POST`, resume `HEAD` and `PATCH`, with every
    /// TUS header right; only the form's Bearer token is missing.
    TusOptions,
    TusCreate,
    TusHead,
    TusPatch,
    /// `GET /v1/keepalive/provisioning` (PROTOCOL.md 16.3).
    KeepaliveProvisioning,
    /// `HEAD /v1/accounts/account/{serviceId}`: anonymous callers only.
    AccountExists(Target),
    /// `PUT /v1/accounts/name/` with this query (the caller's own device without one).
    RenameDevice(&'static str),
    /// `GET /v1/devices/wait_for_linked_device/{token}?timeout=1` for a code nobody used.
    WaitForLinkedDevice,
    /// The caller's own account's username hash (`username_hash_of`).
    ReserveUsername,
    ConfirmUsername,
    /// Alice's username hash, or one nobody has.
    LookupUsername(Target),
    SetUsernameLink,
    /// A handle nobody has (the real ones are random).
    LookupUsernameLink,
    DeleteUsernameLink,
    DeleteUsername,
    RemoveDevice(u8),
    RemoveOwnDevice,
    DeleteAccount,
}

/// The username hash the matrix gives an account: a Ristretto point made from its ACI, so
/// every request can name it. `None` for a hash nobody has.
pub fn username_hash_of(aci: Option<Aci>) -> String {
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    use curve25519_dalek::scalar::Scalar;
    let mut seed = [0u8; 32];
    match aci {
        Some(aci) => seed[..16].copy_from_slice(aci.as_bytes()),
        None => seed[0] = 77,
    }
    let point = Scalar::from_bytes_mod_order(seed) * RISTRETTO_BASEPOINT_POINT;
    sealpost::domain::encoding::encode_url_base64(&point.compress().to_bytes())
}

pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub content_type: &'static str,
    pub body: Option<Vec<u8>>,
    /// Headers besides the caller's and `Content-Type`.
    pub headers: Vec<(&'static str, String)>,
}

fn json(method: &'static str, path: impl Into<String>, body: &impl serde::Serialize) -> Request {
    Request {
        method,
        path: path.into(),
        content_type: "application/json",
        body: Some(serde_json::to_vec(body).expect("serializable")),
        headers: Vec::new(),
    }
}

/// The profile version of the profile rows.
static PROFILE_VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| "5a".repeat(32));

/// The key of the TUS rows (no form was made for it).
const TUS_KEY: &str = "AAAAAAAAAAAAAAAAAAAA";

/// A TUS request whose headers are all right but the upload token, which no caller has.
fn tus(method: &'static str, path: String) -> Request {
    use base64::Engine;
    let metadata = base64::engine::general_purpose::STANDARD.encode(TUS_KEY);
    Request {
        method,
        path,
        content_type: "application/offset+octet-stream",
        body: (method != "HEAD").then(|| vec![1u8; 100]),
        headers: vec![
            ("Tus-Resumable", "1.0.0".into()),
            ("Upload-Metadata", format!("filename {metadata}")),
            ("Upload-Length", "100".into()),
            ("Upload-Offset", "0".into()),
        ],
    }
}

fn bare(method: &'static str, path: impl Into<String>) -> Request {
    Request {
        method,
        path: path.into(),
        content_type: "application/json",
        body: None,
        headers: Vec::new(),
    }
}

fn target_aci(world: &World, target: Target) -> Aci {
    match target {
        Target::Alice => world.alice.aci(),
        Target::Unknown => world.unknown,
    }
}

/// The request `caller` sends to `endpoint`: valid in every respect but, possibly, the
/// credentials.
pub fn request(world: &World, endpoint: Endpoint, caller: Caller) -> Request {
    let alice = &world.alice;
    // Whose account the caller's device belongs to (Alice's for the callers that have none,
    // so the body is the one the right caller would send).
    let own = world.account(caller).unwrap_or(alice);
    let own_device = world.device(caller).map_or(1, |d| d.device.get());
    match endpoint {
        Endpoint::Keepalive => bare("GET", "/v1/keepalive"),
        Endpoint::KeepaliveProvisioning => bare("GET", "/v1/keepalive/provisioning"),
        Endpoint::AccountExists(target) => bare(
            "HEAD",
            format!("/v1/accounts/account/{}", target_aci(world, target)),
        ),
        Endpoint::RenameDevice(query) => json(
            "PUT",
            format!("/v1/accounts/name/{query}"),
            // The caller's device's own name again (none: "name"), so later rows see the
            // same world.
            &serde_json::json!({"deviceName": encode_base64(b"name")}),
        ),
        Endpoint::WaitForLinkedDevice => bare(
            "GET",
            format!(
                "/v1/devices/wait_for_linked_device/{}?timeout=1",
                "w".repeat(43)
            ),
        ),
        Endpoint::Register => json(
            "POST",
            "/v1/registration",
            &AccountKeys::generate().registration_request(default_attributes()),
        ),
        Endpoint::WhoAmI => bare("GET", "/v1/accounts/whoami"),
        Endpoint::SetAttributes(path) => {
            // The caller's own attributes again (same registration id and access key), so
            // the rows after this one still see the same world.
            let mut attributes = own.attributes.clone();
            attributes.registration_id = i64::from(own.registration_ids[&own_device]);
            json("PUT", path, &attributes)
        }
        Endpoint::ListDevices => bare("GET", "/v1/devices"),
        Endpoint::LinkCode => bare("GET", "/v1/devices/provisioning/code"),
        Endpoint::LinkWithBadCode => json(
            "PUT",
            "/v1/devices/link",
            &LinkDeviceRequestJson {
                verification_code: "not-a-code".into(),
                account_attributes: default_attributes(),
                aci_signed_pre_key: alice.keys.signed_pre_key_json(7),
                aci_pq_last_resort_pre_key: alice.keys.kem_pre_key_json(8),
                apn_token: None,
                gcm_token: None,
            },
        ),
        Endpoint::Provision => json(
            "PUT",
            "/v1/provisioning/no-socket-here",
            &serde_json::json!({"body": encode_base64(b"provisioning")}),
        ),
        Endpoint::KeyCounts => bare("GET", "/v2/keys"),
        Endpoint::UploadKeys => json(
            "PUT",
            "/v2/keys",
            &SetKeysRequestJson {
                pre_keys: Some(alice.keys.one_time_pre_keys(1..=20)),
                signed_pre_key: Some(alice.keys.signed_pre_key_json(1)),
                ..Default::default()
            },
        ),
        Endpoint::CheckKeys => {
            let identity =
                EcPublicKey::parse("identity", &alice.keys.identity_public()).expect("a valid key");
            let signed = alice.keys.signed_pre_key_json(1).to_ec("s").expect("valid");
            let last_resort = alice.keys.kem_pre_key_json(1).to_kem("k").expect("valid");
            json(
                "POST",
                "/v2/keys/check",
                &CheckKeysRequestJson {
                    identity_type: "aci".into(),
                    digest: encode_base64(&key_digest(&identity, &signed, &last_resort)),
                },
            )
        }
        Endpoint::Certificate => bare("GET", "/v1/certificate/delivery"),
        Endpoint::FetchKeys(target, device) => bare(
            "GET",
            format!("/v2/keys/{}/{device}", target_aci(world, target)),
        ),
        Endpoint::Profile(target) => {
            bare("GET", format!("/v1/profile/{}", target_aci(world, target)))
        }
        Endpoint::SetProfile => json(
            "PUT",
            "/v1/profile",
            &sealpost::client::profile_request(&PROFILE_VERSION, false, false),
        ),
        Endpoint::VersionedProfile(target) => bare(
            "GET",
            format!(
                "/v1/profile/{}/{}",
                target_aci(world, target),
                *PROFILE_VERSION
            ),
        ),
        Endpoint::CredentialProfile(target) => bare(
            "GET",
            format!(
                "/v1/profile/{}/{}/00ff?credentialType=expiringProfileKey",
                target_aci(world, target),
                *PROFILE_VERSION
            ),
        ),
        Endpoint::ProfileWithGroupSendToken => Request {
            headers: vec![("Group-Send-Token", encode_base64(&[1; 64]))],
            ..bare("GET", format!("/v1/profile/{}", alice.aci()))
        },
        Endpoint::AvatarDownload => bare("GET", "/cdn0/profiles/AAAAAAAAAAAAAAAAAAAAAA=="),
        Endpoint::AvatarUpload => json("POST", "/cdn0/", &serde_json::json!({})),
        Endpoint::SendMessage(target) => {
            let sealed =
                world.authorization(caller).is_none() && world.access_key(caller).is_some();
            let devices: Vec<(u8, u16)> = match target {
                // A sync message leaves out the sending device.
                Target::Alice => alice
                    .registration_ids
                    .iter()
                    .filter(|(id, _)| {
                        let sender_is_alice = world
                            .account(caller)
                            .is_some_and(|a| std::ptr::eq(a, alice));
                        !(sender_is_alice && **id == own_device)
                    })
                    .map(|(id, reg)| (*id, *reg))
                    .collect(),
                Target::Unknown => vec![(1, 1)],
            };
            let messages = devices
                .iter()
                .map(|(id, reg)| IncomingMessageJson {
                    r#type: if sealed { 6 } else { 1 },
                    destination_device_id: i64::from(*id),
                    destination_registration_id: i64::from(*reg),
                    content: encode_base64(b"opaque ciphertext"),
                })
                .collect();
            json(
                "PUT",
                format!("/v1/messages/{}", target_aci(world, target)),
                &IncomingMessageListJson {
                    messages,
                    online: false,
                    urgent: true,
                    timestamp: 1_700_000_000_000,
                },
            )
        }
        Endpoint::SendMulti(target) => {
            let devices: Vec<(u8, u16)> = match target {
                Target::Alice => alice
                    .registration_ids
                    .iter()
                    .map(|(i, r)| (*i, *r))
                    .collect(),
                Target::Unknown => vec![(1, 1)],
            };
            let body = encode(
                VERSION_SERVICE_ID,
                &[(target_aci(world, target), devices, [3u8; 48])],
                &[7u8; 32],
                b"shared ciphertext",
            );
            Request {
                method: "PUT",
                path: "/v1/messages/multi_recipient?ts=1700000000000&online=false".into(),
                content_type: "application/vnd.signal-messenger.mrm",
                body: Some(body),
                headers: Vec::new(),
            }
        }
        Endpoint::WebSocket(path) | Endpoint::ProvisioningSocket(path) => bare("GET", path),
        Endpoint::RemoveDevice(id) => bare("DELETE", format!("/v1/devices/{id}")),
        Endpoint::RemoveOwnDevice => bare("DELETE", format!("/v1/devices/{own_device}")),
        Endpoint::SetGcm => json(
            "PUT",
            "/v1/accounts/gcm/",
            &serde_json::json!({"gcmRegistrationId": "fcm-token-of-the-matrix"}),
        ),
        Endpoint::DeleteGcm => bare("DELETE", "/v1/accounts/gcm/"),
        Endpoint::SetApn => json(
            "PUT",
            "/v1/accounts/apn/",
            &serde_json::json!({"apnRegistrationId": "ab".repeat(32)}),
        ),
        Endpoint::DeleteApn => bare("DELETE", "/v1/accounts/apn/"),
        Endpoint::SetWebPush => {
            let mut point = [5u8; 65];
            point[0] = 4;
            let b64 = |b: &[u8]| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
            };
            // A closed local port (the matrix allows private endpoints): the activation
            // push is refused at once, and no name is resolved.
            json(
                "PUT",
                "/v1/accounts/webpush/",
                &serde_json::json!({
                    "endpoint": "https://127.0.0.1:9/push/matrix",
                    "publicKey": b64(&point),
                    "auth": b64(&[6; 16]),
                }),
            )
        }
        Endpoint::ActivateWebPush => json(
            "PUT",
            "/v1/accounts/webpush/activate/",
            &serde_json::json!({"activationToken": "00000000-0000-4000-8000-000000000000"}),
        ),
        Endpoint::DeleteWebPush => bare("DELETE", "/v1/accounts/webpush/"),
        Endpoint::VapidKey => bare("GET", "/v1/webpush/vapid"),
        Endpoint::CallingRelays => bare("GET", "/v2/calling/relays"),
        Endpoint::ReportSpam => bare(
            "POST",
            format!(
                "/v1/messages/report/{}/{}",
                world.alice.aci(),
                uuid::Uuid::new_v4()
            ),
        ),
        Endpoint::Download(method) => bare(method, "/attachments/AAAAAAAAAAAAAAAAAAAA"),
        Endpoint::UploadForm => bare("GET", "/v4/attachments/form/upload?uploadLength=100"),
        Endpoint::TusOptions => bare("OPTIONS", "/upload/attachments"),
        Endpoint::TusCreate => tus("POST", "/upload/attachments".into()),
        Endpoint::TusHead => tus("HEAD", format!("/upload/attachments/{TUS_KEY}")),
        Endpoint::TusPatch => tus("PATCH", format!("/upload/attachments/{TUS_KEY}")),
        Endpoint::ReserveUsername => json(
            "PUT",
            "/v1/accounts/username_hash/reserve",
            &serde_json::json!({"usernameHashes": [username_hash_of(Some(own.aci()))]}),
        ),
        Endpoint::ConfirmUsername => json(
            "PUT",
            "/v1/accounts/username_hash/confirm",
            &serde_json::json!({
                "usernameHash": username_hash_of(Some(own.aci())),
                "zkProof": "AQID",
                "encryptedUsername": "BAUG",
            }),
        ),
        Endpoint::LookupUsername(target) => {
            let aci = (target == Target::Alice).then(|| alice.aci());
            bare(
                "GET",
                format!("/v1/accounts/username_hash/{}", username_hash_of(aci)),
            )
        }
        Endpoint::SetUsernameLink => json(
            "PUT",
            "/v1/accounts/username_link",
            &serde_json::json!({"usernameLinkEncryptedValue": "BwgJ", "keepLinkHandle": true}),
        ),
        Endpoint::LookupUsernameLink => bare(
            "GET",
            "/v1/accounts/username_link/00000000-0000-4000-8000-000000000000",
        ),
        Endpoint::DeleteUsernameLink => bare("DELETE", "/v1/accounts/username_link"),
        Endpoint::DeleteUsername => bare("DELETE", "/v1/accounts/username_hash"),
        Endpoint::DeleteAccount => bare("DELETE", "/v1/accounts/me"),
    }
}

/// Sends over HTTP with the caller's headers; returns status and body.
pub async fn send_http(
    app: &TestApp,
    request: &Request,
    world: &World,
    caller: Caller,
) -> (u16, Vec<u8>) {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("a method");
    let mut builder = app
        .client
        .http()
        .request(method, app.client.url(&request.path))
        .header("Content-Type", request.content_type);
    for (name, value) in world.headers(caller) {
        builder = builder.header(name, value);
    }
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let response = builder.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("a body").to_vec())
}

/// Sends through `socket` with the caller's headers inside the tunnel.
pub async fn send_tunnel(
    socket: &WsClient,
    request: &Request,
    world: &World,
    caller: Caller,
) -> (u16, Vec<u8>) {
    let mut headers = vec![format!("content-type:{}", request.content_type)];
    headers.extend(
        world
            .headers(caller)
            .into_iter()
            .map(|(name, value)| format!("{name}:{value}")),
    );
    headers.extend(
        request
            .headers
            .iter()
            .map(|(name, value)| format!("{name}:{value}")),
    );
    let response = socket
        .request(request.method, &request.path, request.body.clone(), headers)
        .await
        .expect("the tunnel answers");
    (response.status, response.body.to_vec())
}

/// Opens the socket of `endpoint` with the caller's headers; 101 when it opened, else the
/// refusal's status. The socket is closed again at once.
pub async fn upgrade(app: &TestApp, endpoint: Endpoint, world: &World, caller: Caller) -> u16 {
    let path = request(world, endpoint, caller).path;
    let url = format!("{}{path}", app.address.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("a WebSocket URL");
    for (name, value) in world.headers(caller) {
        let value = value.parse().expect("a header value");
        request.headers_mut().insert(name, value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, response)) => {
            let _ = socket.close(None).await;
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("the upgrade failed without an HTTP answer: {e}"),
    }
}

/// Secrets and identifiers of an account that must not appear in an answer about others.
fn fingerprints(account: &Account) -> Vec<String> {
    vec![
        account.aci().to_string(),
        encode_base64(&account.keys.identity_public()),
        encode_base64(&account.access_key),
    ]
}

/// What a 2xx answer may contain: data of the caller's own account and of the request's
/// target, never of anyone else; and the specific fields name the right account.
pub fn check_body(world: &World, endpoint: Endpoint, caller: Caller, status: u16, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    let own = world.account(caller);
    let target = match endpoint {
        Endpoint::FetchKeys(Target::Alice, _)
        | Endpoint::Profile(Target::Alice)
        | Endpoint::VersionedProfile(Target::Alice)
        | Endpoint::CredentialProfile(Target::Alice)
        | Endpoint::SendMessage(Target::Alice)
        | Endpoint::SendMulti(Target::Alice)
        | Endpoint::LookupUsername(Target::Alice) => Some(&world.alice),
        _ => None,
    };
    for account in world.accounts() {
        let allowed = own.is_some_and(|o| std::ptr::eq(o, account))
            || target.is_some_and(|t| std::ptr::eq(t, account));
        if allowed {
            continue;
        }
        for print in fingerprints(account) {
            assert!(
                !text.contains(&print),
                "{endpoint:?} as {caller:?} ({status}) carried another account's data: {text}"
            );
        }
    }
    if !(200..300).contains(&status) || body.is_empty() {
        return;
    }
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let own_aci = own.map(|a| a.aci().to_string());
    match endpoint {
        Endpoint::WhoAmI => assert_eq!(value["uuid"].as_str(), own_aci.as_deref()),
        Endpoint::LookupUsername(_) => {
            assert_eq!(value["uuid"], world.alice.aci().to_string());
        }
        Endpoint::ConfirmUsername => {
            let own = own.expect("authenticated").aci();
            assert_eq!(value["usernameHash"], username_hash_of(Some(own)));
        }
        Endpoint::Register => {
            let uuid = value["uuid"].as_str().expect("a uuid");
            for known in [world.alice.aci(), world.bob.aci(), world.unknown] {
                assert_ne!(uuid, known.to_string(), "registration reused an account");
            }
        }
        Endpoint::ListDevices => {
            let ids: Vec<u64> = value["devices"]
                .as_array()
                .expect("devices")
                .iter()
                .filter_map(|d| d["id"].as_u64())
                .collect();
            let want: Vec<u64> = own
                .expect("authenticated")
                .registration_ids
                .keys()
                .map(|id| u64::from(*id))
                .collect();
            assert_eq!(
                ids, want,
                "{caller:?} listed devices that are not its account's"
            );
        }
        Endpoint::VersionedProfile(_) | Endpoint::CredentialProfile(_) => {
            assert_eq!(
                value["uuid"].as_str(),
                Some(world.alice.aci().to_string().as_str())
            );
            assert_eq!(
                value["identityKey"].as_str(),
                Some(encode_base64(&world.alice.keys.identity_public()).as_str())
            );
        }
        // The matrix's server has no relay configured: an empty list, whoever asks.
        Endpoint::CallingRelays => {
            assert_eq!(value, serde_json::json!({"relays": []}));
        }
        Endpoint::FetchKeys(..) | Endpoint::Profile(_) => {
            assert_eq!(
                value["identityKey"].as_str(),
                Some(encode_base64(&world.alice.keys.identity_public()).as_str())
            );
        }
        Endpoint::Certificate => {
            let bytes = decode_base64("certificate", value["certificate"].as_str().expect("b64"))
                .expect("base64");
            let outer = SenderCertificate::decode(bytes.as_slice()).expect("a certificate");
            let inner = sender_certificate::Certificate::decode(
                outer.certificate.expect("inner certificate"),
            )
            .expect("an inner certificate");
            let device = world.device(caller).expect("authenticated");
            assert_eq!(
                inner.sender_uuid.as_deref(),
                Some(&device.aci.as_bytes()[..])
            );
            assert_eq!(inner.sender_device, Some(u32::from(device.device.get())));
            assert_eq!(
                inner.identity_key.as_deref(),
                Some(
                    own.expect("authenticated")
                        .keys
                        .identity_public()
                        .as_slice()
                )
            );
        }
        _ => {}
    }
}
