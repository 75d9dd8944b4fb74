//! A small typed client of sealpost's API, used by the integration tests and `loadtests/`.
//! It makes real keys and real signatures, as a Signal client would; `ws` is its WebSocket
//! side.

pub mod cli;
mod profiles;
mod usernames;
pub mod ws;

pub use profiles::profile_request;
pub use usernames::random_username_hash;

use base64::Engine;
use rand::RngCore;
use reqwest::StatusCode;

use crate::api::entities::{
    AccountAttributesJson, CheckKeysRequestJson, ErrorJson, LinkCodeJson, LinkDeviceRequestJson,
    LinkDeviceResponseJson, PreKeyCountJson, PreKeyJson, PreKeyResponseJson,
    RegistrationRequestJson, RegistrationResponseJson, SetKeysRequestJson, SignedPreKeyJson,
    WhoAmIJson,
};
use crate::domain::encoding::encode_base64;
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::keys::{EC_KEY_TYPE, KEM_KEY_LENGTH, KEM_KEY_TYPE};
use crate::domain::xeddsa::PrivateKey;

/// A device's credentials.
#[derive(Clone, Debug)]
pub struct DeviceCredentials {
    pub aci: Aci,
    pub device: DeviceId,
    pub password: String,
}

impl DeviceCredentials {
    pub fn authorization(&self) -> String {
        basic_auth(&format!("{}.{}", self.aci, self.device), &self.password)
    }
}

pub fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A non-2xx answer, with the JSON error body when there was one.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP {status}: {body:?}")]
    Status {
        status: StatusCode,
        body: Option<ErrorJson>,
        retry_after: Option<String>,
    },
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Transport(_) => None,
        }
    }
}

/// How a key fetch is authorized.
#[derive(Clone, Copy)]
pub enum KeyAccess<'a> {
    Device(&'a DeviceCredentials),
    AccessKey(&'a [u8; 16]),
}

/// An identity key pair and the signed keys a registration carries.
pub struct AccountKeys {
    pub identity: PrivateKey,
    pub signed_pre_key: PrivateKey,
    pub kem_public_key: Vec<u8>,
}

impl AccountKeys {
    pub fn generate() -> Self {
        let mut kem = vec![0u8; KEM_KEY_LENGTH];
        rand::rngs::OsRng.fill_bytes(&mut kem);
        kem[0] = KEM_KEY_TYPE;
        Self {
            identity: PrivateKey::generate(),
            signed_pre_key: PrivateKey::generate(),
            kem_public_key: kem,
        }
    }

    pub fn identity_public(&self) -> Vec<u8> {
        serialize_ec(&self.identity)
    }

    /// `{keyId, publicKey, signature}` of the signed EC prekey, signed by the identity key.
    pub fn signed_pre_key_json(&self, key_id: i64) -> SignedPreKeyJson {
        let public = serialize_ec(&self.signed_pre_key);
        SignedPreKeyJson {
            key_id,
            signature: encode_base64(&self.identity.sign(&public)),
            public_key: encode_base64(&public),
        }
    }

    /// The Kyber last-resort key, signed by the identity key.
    pub fn kem_pre_key_json(&self, key_id: i64) -> SignedPreKeyJson {
        SignedPreKeyJson {
            key_id,
            signature: encode_base64(&self.identity.sign(&self.kem_public_key)),
            public_key: encode_base64(&self.kem_public_key),
        }
    }

    /// Fresh EC one-time prekeys with the given ids.
    pub fn one_time_pre_keys(&self, ids: impl IntoIterator<Item = i64>) -> Vec<PreKeyJson> {
        ids.into_iter()
            .map(|key_id| PreKeyJson {
                key_id,
                public_key: encode_base64(&serialize_ec(&PrivateKey::generate())),
            })
            .collect()
    }

    /// Fresh Kyber one-time prekeys with the given ids, signed by the identity key.
    pub fn one_time_pq_pre_keys(
        &self,
        ids: impl IntoIterator<Item = i64>,
    ) -> Vec<SignedPreKeyJson> {
        ids.into_iter()
            .map(|key_id| {
                let mut kem = vec![0u8; KEM_KEY_LENGTH];
                rand::rngs::OsRng.fill_bytes(&mut kem);
                kem[0] = KEM_KEY_TYPE;
                SignedPreKeyJson {
                    key_id,
                    signature: encode_base64(&self.identity.sign(&kem)),
                    public_key: encode_base64(&kem),
                }
            })
            .collect()
    }

    pub fn registration_request(
        &self,
        attributes: AccountAttributesJson,
    ) -> RegistrationRequestJson {
        RegistrationRequestJson {
            account_attributes: attributes,
            aci_identity_key: encode_base64(&self.identity_public()),
            aci_signed_pre_key: self.signed_pre_key_json(1),
            aci_pq_last_resort_pre_key: self.kem_pre_key_json(1),
            skip_device_transfer: true,
            invite_token: None,
            apn_token: None,
            gcm_token: None,
        }
    }
}

pub fn serialize_ec(key: &PrivateKey) -> Vec<u8> {
    let mut bytes = vec![EC_KEY_TYPE];
    bytes.extend_from_slice(&key.public_key());
    bytes
}

/// A random password of the length Signal clients use.
pub fn random_password() -> String {
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    encode_base64(&bytes)
}

/// Attributes with a random registration id and access key.
pub fn default_attributes() -> AccountAttributesJson {
    let mut access_key = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut access_key);
    AccountAttributesJson {
        fetches_messages: true,
        registration_id: 1 + i64::from(rand::rngs::OsRng.next_u32() % 16383),
        // `optionalPhoneNumber`: what a device needs to link to an account without a phone
        // number (PROTOCOL.md 16.2), as every sealpost account is.
        capabilities: [
            ("storage".to_owned(), true),
            ("optionalPhoneNumber".to_owned(), true),
        ]
        .into_iter()
        .collect(),
        unidentified_access_key: Some(encode_base64(&access_key)),
        ..Default::default()
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// `base` like `http://127.0.0.1:8080` (no trailing slash needed).
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .expect("a client without TLS always builds"),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.json::<ErrorJson>().await.ok();
        Err(ClientError::Status {
            status,
            body,
            retry_after,
        })
    }

    /// Registers a new account with fresh keys; returns its primary device's credentials.
    pub async fn register_new(&self) -> Result<(DeviceCredentials, AccountKeys), ClientError> {
        let keys = AccountKeys::generate();
        let password = random_password();
        let response = self
            .register(&keys.registration_request(default_attributes()), &password)
            .await?;
        Ok((
            DeviceCredentials {
                aci: response.identity.uuid,
                device: DeviceId::PRIMARY,
                password,
            },
            keys,
        ))
    }

    pub async fn register(
        &self,
        request: &RegistrationRequestJson,
        password: &str,
    ) -> Result<RegistrationResponseJson, ClientError> {
        let response = self
            .http
            .post(self.url("/v1/registration"))
            .header("Authorization", basic_auth("", password))
            .json(request)
            .send()
            .await?;
        Ok(Self::check(response).await?.json().await?)
    }

    pub async fn whoami(&self, credentials: &DeviceCredentials) -> Result<WhoAmIJson, ClientError> {
        let response = self
            .http
            .get(self.url("/v1/accounts/whoami"))
            .header("Authorization", credentials.authorization())
            .send()
            .await?;
        Ok(Self::check(response).await?.json().await?)
    }

    pub async fn set_attributes(
        &self,
        credentials: &DeviceCredentials,
        attributes: &AccountAttributesJson,
    ) -> Result<(), ClientError> {
        let response = self
            .http
            .put(self.url("/v1/accounts/attributes/"))
            .header("Authorization", credentials.authorization())
            .json(attributes)
            .send()
            .await?;
        Self::check(response).await?;
        Ok(())
    }

    pub async fn upload_keys(
        &self,
        credentials: &DeviceCredentials,
        keys: &SetKeysRequestJson,
    ) -> Result<(), ClientError> {
        let response = self
            .http
            .put(self.url("/v2/keys"))
            .header("Authorization", credentials.authorization())
            .json(keys)
            .send()
            .await?;
        Self::check(response).await?;
        Ok(())
    }

    pub async fn key_counts(
        &self,
        credentials: &DeviceCredentials,
    ) -> Result<PreKeyCountJson, ClientError> {
        let response = self
            .http
            .get(self.url("/v2/keys"))
            .header("Authorization", credentials.authorization())
            .send()
            .await?;
        Ok(Self::check(response).await?.json().await?)
    }

    /// `GET /v2/keys/{target}/{device}` as `access`: a device's credentials or an access key.
    pub async fn fetch_keys(
        &self,
        access: KeyAccess<'_>,
        target: &Aci,
        device: &str,
    ) -> Result<PreKeyResponseJson, ClientError> {
        let request = self
            .http
            .get(self.url(&format!("/v2/keys/{target}/{device}")));
        let request = match access {
            KeyAccess::Device(credentials) => {
                request.header("Authorization", credentials.authorization())
            }
            KeyAccess::AccessKey(key) => {
                request.header("Unidentified-Access-Key", encode_base64(key))
            }
        };
        Ok(Self::check(request.send().await?).await?.json().await?)
    }

    /// `POST /v2/keys/check`: `Ok(true)` on 200, `Ok(false)` on 409.
    pub async fn check_keys(
        &self,
        credentials: &DeviceCredentials,
        digest: &[u8; 32],
    ) -> Result<bool, ClientError> {
        let response = self
            .http
            .post(self.url("/v2/keys/check"))
            .header("Authorization", credentials.authorization())
            .json(&CheckKeysRequestJson {
                identity_type: "aci".into(),
                digest: encode_base64(digest),
            })
            .send()
            .await?;
        if response.status() == StatusCode::CONFLICT {
            return Ok(false);
        }
        Self::check(response).await?;
        Ok(true)
    }

    /// `GET /v1/devices/provisioning/code` (primary device).
    pub async fn link_code(
        &self,
        primary: &DeviceCredentials,
    ) -> Result<LinkCodeJson, ClientError> {
        let response = self
            .http
            .get(self.url("/v1/devices/provisioning/code"))
            .header("Authorization", primary.authorization())
            .send()
            .await?;
        Ok(Self::check(response).await?.json().await?)
    }

    /// Links a new device with `code`, signing its keys with the account's identity key
    /// (`keys`); returns the new device's credentials.
    pub async fn link_device(
        &self,
        code: &str,
        keys: &AccountKeys,
        attributes: AccountAttributesJson,
    ) -> Result<DeviceCredentials, ClientError> {
        let password = random_password();
        let request = LinkDeviceRequestJson {
            verification_code: code.to_owned(),
            account_attributes: attributes,
            aci_signed_pre_key: keys.signed_pre_key_json(2),
            aci_pq_last_resort_pre_key: keys.kem_pre_key_json(3),
            apn_token: None,
            gcm_token: None,
        };
        let response = self
            .http
            .put(self.url("/v1/devices/link"))
            .header("Authorization", basic_auth("", &password))
            .json(&request)
            .send()
            .await?;
        let linked: LinkDeviceResponseJson = Self::check(response).await?.json().await?;
        Ok(DeviceCredentials {
            aci: linked.uuid,
            device: DeviceId::new(u32::from(linked.device_id)).map_err(|_| {
                ClientError::Status {
                    status: StatusCode::BAD_GATEWAY,
                    body: None,
                    retry_after: None,
                }
            })?,
            password,
        })
    }

    pub async fn delete_account(&self, credentials: &DeviceCredentials) -> Result<(), ClientError> {
        let response = self
            .http
            .delete(self.url("/v1/accounts/me"))
            .header("Authorization", credentials.authorization())
            .send()
            .await?;
        Self::check(response).await?;
        Ok(())
    }
}
