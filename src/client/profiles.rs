//! The typed client's profile calls (PROTOCOL.md 13): a valid `PUT /v1/profile` body with
//! fields of Signal's sizes, storing it, and the avatar upload as Signal's clients post it.

use super::{Client, ClientError, DeviceCredentials};
use crate::api::profiles::{AvatarUploadJson, CreateProfileJson};
use crate::domain::encoding::encode_base64;

/// A profile of version `version` (64 hex characters) whose every field has a valid size
/// (name 81 bytes, about 156, emoji 60, payment address 582, phone-number sharing 29), with
/// the avatar flags given.
pub fn profile_request(version: &str, avatar: bool, same_avatar: bool) -> CreateProfileJson {
    let bytes = |len: usize, fill: u8| Some(encode_base64(&vec![fill; len]));
    CreateProfileJson {
        version: Some(version.to_owned()),
        commitment: bytes(97, 1),
        name: bytes(81, 2),
        about_emoji: bytes(60, 3),
        about: bytes(156, 4),
        payment_address: bytes(582, 5),
        phone_number_sharing: bytes(29, 6),
        avatar,
        same_avatar,
        badge_ids: Some(vec!["early-supporter".into()]),
    }
}

impl Client {
    /// `PUT /v1/profile`; the avatar form when the server expects a new avatar.
    pub async fn set_profile(
        &self,
        credentials: &DeviceCredentials,
        profile: &CreateProfileJson,
    ) -> Result<Option<AvatarUploadJson>, ClientError> {
        let response = self
            .http
            .put(self.url("/v1/profile"))
            .header("Authorization", credentials.authorization())
            .json(profile)
            .send()
            .await?;
        let response = Self::check(response).await?;
        // 200 with an empty body when no avatar upload is expected.
        if response.content_length() == Some(0) {
            return Ok(None);
        }
        Ok(Some(response.json().await?))
    }
}
