//! The client's username calls (PROTOCOL.md 14.1). A real client derives the hash from a
//! nickname and proves it (libsignal); this one makes a random Ristretto point and sends a
//! placeholder proof, which sealpost checks for presence only (14.4).

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::scalar::Scalar;
use uuid::Uuid;

use super::{Client, ClientError, DeviceCredentials};
use crate::api::usernames::{
    AccountIdentifierResponseJson, ConfirmUsernameHashRequestJson, EncryptedUsernameJson,
    ReserveUsernameHashRequestJson, ReserveUsernameHashResponseJson, UsernameHashResponseJson,
    UsernameLinkHandleJson,
};
use crate::domain::encoding::encode_url_base64;
use crate::domain::ids::Aci;

/// A username hash nobody else will pick: a random scalar times the Ristretto basepoint.
pub fn random_username_hash() -> [u8; 32] {
    let scalar = Scalar::random(&mut rand::rngs::OsRng);
    (scalar * RISTRETTO_BASEPOINT_POINT).compress().to_bytes()
}

/// What stands for the proof: present and non-empty, as sealpost requires.
const PLACEHOLDER_PROOF: [u8; 16] = [1; 16];

impl Client {
    /// Reserves the first free one of `hashes`; returns it (url-nopad).
    pub async fn reserve_username_hash(
        &self,
        credentials: &DeviceCredentials,
        hashes: &[[u8; 32]],
    ) -> Result<String, ClientError> {
        let body = ReserveUsernameHashRequestJson {
            username_hashes: Some(hashes.iter().map(|h| encode_url_base64(h)).collect()),
        };
        let response = self
            .http
            .put(self.url("/v1/accounts/username_hash/reserve"))
            .header("Authorization", credentials.authorization())
            .json(&body)
            .send()
            .await?;
        let reserved: ReserveUsernameHashResponseJson = Self::check(response).await?.json().await?;
        Ok(reserved.username_hash)
    }

    /// Confirms a reserved hash, with the link value `encrypted_username` when given.
    pub async fn confirm_username_hash(
        &self,
        credentials: &DeviceCredentials,
        hash: &[u8; 32],
        encrypted_username: Option<&[u8]>,
    ) -> Result<UsernameHashResponseJson, ClientError> {
        let body = ConfirmUsernameHashRequestJson {
            username_hash: Some(encode_url_base64(hash)),
            zk_proof: Some(encode_url_base64(&PLACEHOLDER_PROOF)),
            encrypted_username: encrypted_username.map(encode_url_base64),
        };
        let response = self
            .http
            .put(self.url("/v1/accounts/username_hash/confirm"))
            .header("Authorization", credentials.authorization())
            .json(&body)
            .send()
            .await?;
        Ok(Self::check(response).await?.json().await?)
    }

    /// Reserves and confirms `hash`: the account's username from now on.
    pub async fn set_username_hash(
        &self,
        credentials: &DeviceCredentials,
        hash: &[u8; 32],
        encrypted_username: Option<&[u8]>,
    ) -> Result<UsernameHashResponseJson, ClientError> {
        self.reserve_username_hash(credentials, &[*hash]).await?;
        self.confirm_username_hash(credentials, hash, encrypted_username)
            .await
    }

    pub async fn delete_username_hash(
        &self,
        credentials: &DeviceCredentials,
    ) -> Result<(), ClientError> {
        let response = self
            .http
            .delete(self.url("/v1/accounts/username_hash"))
            .header("Authorization", credentials.authorization())
            .send()
            .await?;
        Self::check(response).await?;
        Ok(())
    }

    /// The account whose username has `hash`, asked anonymously.
    pub async fn lookup_username_hash(&self, hash: &[u8; 32]) -> Result<Aci, ClientError> {
        let path = format!("/v1/accounts/username_hash/{}", encode_url_base64(hash));
        let response = self.http.get(self.url(&path)).send().await?;
        let found: AccountIdentifierResponseJson = Self::check(response).await?.json().await?;
        Ok(found.uuid)
    }

    pub async fn set_username_link(
        &self,
        credentials: &DeviceCredentials,
        value: &[u8],
        keep_link_handle: bool,
    ) -> Result<Uuid, ClientError> {
        let body = EncryptedUsernameJson {
            username_link_encrypted_value: Some(encode_url_base64(value)),
            keep_link_handle,
        };
        let response = self
            .http
            .put(self.url("/v1/accounts/username_link"))
            .header("Authorization", credentials.authorization())
            .json(&body)
            .send()
            .await?;
        let handle: UsernameLinkHandleJson = Self::check(response).await?.json().await?;
        Ok(handle.username_link_handle)
    }

    /// The link value behind `handle` (url-nopad), asked anonymously.
    pub async fn lookup_username_link(&self, handle: Uuid) -> Result<String, ClientError> {
        let path = format!("/v1/accounts/username_link/{handle}");
        let response = self.http.get(self.url(&path)).send().await?;
        let value: EncryptedUsernameJson = Self::check(response).await?.json().await?;
        Ok(value.username_link_encrypted_value.unwrap_or_default())
    }
}
