//! The JSON shapes of the REST API (PROTOCOL.md), and their parsing into domain types.
//! Shared by the handlers and the typed client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::DomainError;
use crate::domain::accounts::{AccessKey, AccessSettings, AccountAttributes, DeviceAttributes};
use crate::domain::encoding::{decode_base64, encode_base64};
use crate::domain::ids::DeviceId;
use crate::domain::ids::{Aci, RegistrationId};
use crate::domain::keys::{
    EcPublicKey, IdentityKey, KemPublicKey, KemSignedPreKey, Signature, SignedEcPreKey,
    SignedPreKey, parse_key_id,
};
use crate::domain::keys::{KeyUpload, PreKey, check_key_list};
use crate::domain::messages::{MessageType, OutgoingMessage, OutgoingMessages};
use crate::domain::push::{PushRegistration, PushToken};
use crate::service::accounts::Registration;
use bytes::Bytes;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountAttributesJson {
    #[serde(default)]
    pub fetches_messages: bool,
    pub registration_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub capabilities: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unidentified_access_key: Option<String>,
    #[serde(default)]
    pub unrestricted_unidentified_access: bool,
    /// Accepted for compatibility and ignored: without phone numbers there is no
    /// re-registration for a lock to guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_lock: Option<String>,
}

impl TryFrom<AccountAttributesJson> for AccountAttributes {
    type Error = DomainError;

    fn try_from(json: AccountAttributesJson) -> Result<Self, DomainError> {
        let name = json
            .name
            .map(|n| decode_base64("accountAttributes.name", &n))
            .transpose()?;
        let unidentified_access_key = json
            .unidentified_access_key
            .map(|k| {
                let bytes = decode_base64("accountAttributes.unidentifiedAccessKey", &k)?;
                AccessKey::parse("accountAttributes.unidentifiedAccessKey", &bytes)
            })
            .transpose()?;
        Ok(AccountAttributes {
            device: DeviceAttributes {
                fetches_messages: json.fetches_messages,
                registration_id: RegistrationId::new(json.registration_id)?,
                name: DeviceAttributes::check_name(name)?,
                capabilities: DeviceAttributes::check_capabilities(json.capabilities)?,
            },
            access: AccessSettings {
                unidentified_access_key,
                unrestricted_unidentified_access: json.unrestricted_unidentified_access,
            },
        })
    }
}

/// `{keyId, publicKey, signature}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedPreKeyJson {
    pub key_id: i64,
    pub public_key: String,
    pub signature: String,
}

impl SignedPreKeyJson {
    fn parts(&self, field: &str) -> Result<(u32, Vec<u8>, Signature), DomainError> {
        let key_id = parse_key_id(&format!("{field}.keyId"), self.key_id)?;
        let public_key = decode_base64(&format!("{field}.publicKey"), &self.public_key)?;
        let signature = Signature::parse(
            &format!("{field}.signature"),
            &decode_base64(&format!("{field}.signature"), &self.signature)?,
        )?;
        Ok((key_id, public_key, signature))
    }

    pub fn to_ec(&self, field: &str) -> Result<SignedEcPreKey, DomainError> {
        let (key_id, public_key, signature) = self.parts(field)?;
        Ok(SignedPreKey {
            key_id,
            public_key: EcPublicKey::parse(&format!("{field}.publicKey"), &public_key)?,
            signature,
        })
    }

    pub fn to_kem(&self, field: &str) -> Result<KemSignedPreKey, DomainError> {
        let (key_id, public_key, signature) = self.parts(field)?;
        Ok(SignedPreKey {
            key_id,
            public_key: KemPublicKey::parse(&format!("{field}.publicKey"), public_key)?,
            signature,
        })
    }

    pub fn from_key<K: crate::domain::keys::SerializedKey>(key: &SignedPreKey<K>) -> Self {
        Self {
            key_id: i64::from(key.key_id),
            public_key: encode_base64(key.public_key.serialized()),
            signature: encode_base64(key.signature.as_bytes()),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationRequestJson {
    pub account_attributes: AccountAttributesJson,
    pub aci_identity_key: String,
    pub aci_signed_pre_key: SignedPreKeyJson,
    pub aci_pq_last_resort_pre_key: SignedPreKeyJson,
    #[serde(default)]
    pub skip_device_transfer: bool,
    /// sealpost's: the invite token a server in `registration = "token"` mode asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_token: Option<String>,
    /// The device's APNs token (then `fetchesMessages` must be false and no `gcmToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apn_token: Option<ApnTokenJson>,
    /// The device's FCM token (then `fetchesMessages` must be false and no `apnToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcm_token: Option<GcmTokenJson>,
}

/// `"apnToken"` of a registration or link.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApnTokenJson {
    #[serde(default)]
    pub apn_registration_id: String,
}

/// `"gcmToken"` of a registration or link.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcmTokenJson {
    #[serde(default)]
    pub gcm_registration_id: String,
}

/// Signal's rule for a new device: exactly one way to learn of messages, a socket
/// (`fetchesMessages`) or one push token (422 otherwise).
fn delivery_channel(
    fetches_messages: bool,
    apn: Option<ApnTokenJson>,
    gcm: Option<GcmTokenJson>,
) -> Result<Option<PushRegistration>, DomainError> {
    match (fetches_messages, apn, gcm) {
        (true, None, None) => Ok(None),
        (false, Some(apn), None) => Ok(Some(PushRegistration::Apns(PushToken::parse(
            "apnToken.apnRegistrationId",
            &apn.apn_registration_id,
        )?))),
        (false, None, Some(gcm)) => Ok(Some(PushRegistration::Fcm(PushToken::parse(
            "gcmToken.gcmRegistrationId",
            &gcm.gcm_registration_id,
        )?))),
        _ => Err(DomainError::unprocessable(
            "exactly one of fetchesMessages, apnToken or gcmToken is required",
        )),
    }
}

impl TryFrom<RegistrationRequestJson> for Registration {
    type Error = DomainError;

    fn try_from(json: RegistrationRequestJson) -> Result<Self, DomainError> {
        let identity_key: IdentityKey = EcPublicKey::parse(
            "aciIdentityKey",
            &decode_base64("aciIdentityKey", &json.aci_identity_key)?,
        )?;
        let push = delivery_channel(
            json.account_attributes.fetches_messages,
            json.apn_token,
            json.gcm_token,
        )?;
        Ok(Registration {
            push,
            signed_pre_key: json.aci_signed_pre_key.to_ec("aciSignedPreKey")?,
            pq_last_resort_pre_key: json
                .aci_pq_last_resort_pre_key
                .to_kem("aciPqLastResortPreKey")?,
            attributes: json.account_attributes.try_into()?,
            identity_key,
        })
    }
}

pub use super::identity::{AccountIdentityResponseJson, RegistrationResponseJson};
/// `GET /v1/accounts/whoami`'s answer (PROTOCOL.md 16.1).
pub type WhoAmIJson = AccountIdentityResponseJson;

/// `{keyId, publicKey}`: an EC one-time prekey.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreKeyJson {
    pub key_id: i64,
    pub public_key: String,
}

impl PreKeyJson {
    pub fn to_pre_key(&self, field: &str) -> Result<PreKey, DomainError> {
        Ok(PreKey {
            key_id: parse_key_id(&format!("{field}.keyId"), self.key_id)?,
            public_key: EcPublicKey::parse(
                &format!("{field}.publicKey"),
                &decode_base64(&format!("{field}.publicKey"), &self.public_key)?,
            )?,
        })
    }

    pub fn from_pre_key(key: &PreKey) -> Self {
        Self {
            key_id: i64::from(key.key_id),
            public_key: encode_base64(key.public_key.as_bytes()),
        }
    }
}

/// `PUT /v2/keys`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetKeysRequestJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_keys: Option<Vec<PreKeyJson>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_pre_key: Option<SignedPreKeyJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pq_pre_keys: Option<Vec<SignedPreKeyJson>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pq_last_resort_pre_key: Option<SignedPreKeyJson>,
}

impl TryFrom<SetKeysRequestJson> for KeyUpload {
    type Error = DomainError;

    /// An absent or empty list keeps the stored keys, so both become `None`.
    fn try_from(json: SetKeysRequestJson) -> Result<Self, DomainError> {
        let pre_keys = match json.pre_keys.filter(|l| !l.is_empty()) {
            None => None,
            Some(list) => {
                let keys = list
                    .iter()
                    .enumerate()
                    .map(|(i, k)| k.to_pre_key(&format!("preKeys[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                check_key_list("preKeys", keys.iter().map(|k| k.key_id))?;
                Some(keys)
            }
        };
        let pq_pre_keys = match json.pq_pre_keys.filter(|l| !l.is_empty()) {
            None => None,
            Some(list) => {
                let keys = list
                    .iter()
                    .enumerate()
                    .map(|(i, k)| k.to_kem(&format!("pqPreKeys[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                check_key_list("pqPreKeys", keys.iter().map(|k| k.key_id))?;
                Some(keys)
            }
        };
        Ok(KeyUpload {
            pre_keys,
            signed_pre_key: json
                .signed_pre_key
                .map(|k| k.to_ec("signedPreKey"))
                .transpose()?,
            pq_pre_keys,
            pq_last_resort_pre_key: json
                .pq_last_resort_pre_key
                .map(|k| k.to_kem("pqLastResortPreKey"))
                .transpose()?,
        })
    }
}

/// `GET /v2/keys`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreKeyCountJson {
    pub count: u32,
    pub pq_count: u32,
}

/// `GET /v2/keys/{aci}/{deviceId|*}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreKeyResponseJson {
    pub identity_key: String,
    pub devices: Vec<PreKeyResponseItemJson>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreKeyResponseItemJson {
    pub device_id: u8,
    pub registration_id: u16,
    pub signed_pre_key: SignedPreKeyJson,
    pub pre_key: Option<PreKeyJson>,
    pub pq_pre_key: Option<SignedPreKeyJson>,
}

/// `POST /v2/keys/check`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckKeysRequestJson {
    pub identity_type: String,
    pub digest: String,
}

/// One device's message in `PUT /v1/messages/{aci}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingMessageJson {
    pub r#type: i64,
    pub destination_device_id: i64,
    #[serde(default)]
    pub destination_registration_id: i64,
    pub content: String,
}

/// `PUT /v1/messages/{aci}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingMessageListJson {
    pub messages: Vec<IncomingMessageJson>,
    #[serde(default)]
    pub online: bool,
    #[serde(default = "default_true")]
    pub urgent: bool,
    #[serde(default)]
    pub timestamp: u64,
}

fn default_true() -> bool {
    true
}

impl TryFrom<IncomingMessageListJson> for OutgoingMessages {
    type Error = DomainError;

    fn try_from(json: IncomingMessageListJson) -> Result<Self, DomainError> {
        let messages = json
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let registration_id = match m.destination_registration_id {
                    0 => 0,
                    id => RegistrationId::new(id)
                        .map_err(|_| {
                            DomainError::invalid(format!(
                                "messages[{i}].destinationRegistrationId {id} is out of range"
                            ))
                        })?
                        .get(),
                };
                Ok(OutgoingMessage {
                    kind: MessageType::parse(m.r#type)?,
                    device: u32::try_from(m.destination_device_id)
                        .map_err(|_| DomainError::invalid("destinationDeviceId out of range"))
                        .and_then(DeviceId::new)?,
                    registration_id,
                    content: Bytes::from(decode_base64(
                        &format!("messages[{i}].content"),
                        &m.content,
                    )?),
                })
            })
            .collect::<Result<Vec<_>, DomainError>>()?;
        Ok(OutgoingMessages {
            messages,
            online: json.online,
            urgent: json.urgent,
            timestamp: json.timestamp,
        })
    }
}

/// The 200 answer of `PUT /v1/messages/{aci}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageResponseJson {
    pub needs_sync: bool,
}

/// `PUT /v1/devices/link`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkDeviceRequestJson {
    pub verification_code: String,
    pub account_attributes: AccountAttributesJson,
    pub aci_signed_pre_key: SignedPreKeyJson,
    pub aci_pq_last_resort_pre_key: SignedPreKeyJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apn_token: Option<ApnTokenJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcm_token: Option<GcmTokenJson>,
}

impl TryFrom<LinkDeviceRequestJson> for crate::service::accounts::LinkRequest {
    type Error = DomainError;

    fn try_from(json: LinkDeviceRequestJson) -> Result<Self, DomainError> {
        let push = delivery_channel(
            json.account_attributes.fetches_messages,
            json.apn_token,
            json.gcm_token,
        )?;
        Ok(Self {
            push,
            signed_pre_key: json.aci_signed_pre_key.to_ec("aciSignedPreKey")?,
            pq_last_resort_pre_key: json
                .aci_pq_last_resort_pre_key
                .to_kem("aciPqLastResortPreKey")?,
            attributes: json.account_attributes.try_into()?,
            verification_code: json.verification_code,
        })
    }
}

/// `GET /v1/devices/provisioning/code`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkCodeJson {
    pub verification_code: String,
    pub token_identifier: String,
}

/// The answer of `PUT /v1/devices/link`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkDeviceResponseJson {
    #[schema(value_type = String, format = Uuid)]
    pub uuid: Aci,
    /// Always `null`: sealpost accounts have no PNI.
    pub pni: Option<String>,
    pub device_id: u8,
}

pub use crate::error::ErrorJson;

/// The answer of `PUT /v1/messages/multi_recipient`: recipients that do not exist (always
/// empty: an unknown recipient fails the whole send with 404, as the access key cannot open it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct MultiRecipientResponseJson {
    #[schema(value_type = Vec<String>)]
    pub uuids404: Vec<Aci>,
}
