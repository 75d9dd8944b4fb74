//! Profile avatars (PROTOCOL.md 13.1, 13.4): the S3 POST-policy form a client uploads its
//! encrypted avatar with, the cdn-0 base it posts to, and the removal of replaced avatars.
//! With a bucket the form is signed with the bucket's credentials and the client posts
//! straight to the bucket; without one the form is signed with a server secret and sealpost
//! serves the cdn-0 base itself (`POST /cdn0/`, `GET /cdn0/profiles/{id}`).

use std::sync::Arc;

use crate::domain::clock::Clock;
use crate::domain::post_policy::{Allowed, PolicyError, PolicyKey, UploadForm};
use crate::domain::profiles::{AVATAR_PREFIX, MAX_AVATAR_BYTES, is_avatar_id};
use crate::error::AppError;
use crate::limits::{Limit, RateLimiter};
use crate::storage::objects::{ByteStream, ObjectStore};

/// The server secret the local cdn-0's forms are signed with, the same on every pod.
pub const AVATAR_SECRET: &str = "avatar-upload-key";
/// The access key id, region and bucket the local cdn-0's forms name.
pub const LOCAL_ACCESS_KEY_ID: &str = "sealpost";
pub const LOCAL_REGION: &str = "sealpost";
pub const LOCAL_BUCKET: &str = "cdn0";

#[derive(Clone)]
pub struct AvatarService {
    objects: Arc<dyn ObjectStore>,
    limiter: RateLimiter,
    key: Arc<PolicyKey>,
    /// The cdn-0 base clients post to and read from, without a trailing slash.
    base: Arc<str>,
    clock: Clock,
}

impl AvatarService {
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        limiter: RateLimiter,
        key: PolicyKey,
        base: String,
        clock: Clock,
    ) -> Self {
        Self {
            objects,
            limiter,
            key: Arc::new(key),
            base: base.into(),
            clock,
        }
    }

    /// The key of the local cdn-0 (no bucket): signed with the server secret.
    pub fn local_key(secret: &[u8; 32]) -> PolicyKey {
        PolicyKey {
            access_key_id: LOCAL_ACCESS_KEY_ID.into(),
            secret_access_key: secret.iter().map(|b| format!("{b:02x}")).collect(),
            region: LOCAL_REGION.into(),
            bucket: LOCAL_BUCKET.into(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The form that lets its holder upload 1 byte to 10 MiB as the object `name` for 30
    /// minutes.
    pub fn form(&self, name: &str) -> Result<UploadForm, AppError> {
        let now = chrono::DateTime::from_timestamp_millis(self.clock.now_ms())
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("the clock is out of range")))?;
        Ok(self.key.form(name, now, MAX_AVATAR_BYTES))
    }

    /// Deletes avatar objects (replaced, or of a deleted account). A failure is logged and
    /// the object left behind: the profile change it belongs to is already stored.
    pub async fn delete(&self, names: &[String]) {
        for name in names.iter().filter(|n| n.starts_with(AVATAR_PREFIX)) {
            if let Err(e) = self.objects.delete(name).await {
                tracing::warn!(error = %e, "could not delete a replaced avatar");
            }
        }
    }

    /// Takes a client address's `avatarUpload` permit, before its form is read.
    pub async fn admit_upload(&self, client: std::net::IpAddr) -> Result<(), AppError> {
        Ok(self
            .limiter
            .check(Limit::AvatarUpload, &self.limiter.address_key(client))
            .await?)
    }

    /// `POST /cdn0/`, before the file is read: what the form allows, when it is one this
    /// server signed, unexpired, and its conditions hold (as S3 checks a POST policy).
    /// `fields` by lowercase name, without the file.
    pub fn authorize_upload(
        &self,
        fields: &std::collections::BTreeMap<String, String>,
    ) -> Result<Allowed, AppError> {
        let now = chrono::DateTime::from_timestamp_millis(self.clock.now_ms())
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("the clock is out of range")))?;
        let allowed = self.key.verify(fields, now).map_err(|e| match e {
            PolicyError::Malformed(msg) => AppError::BadRequest(msg),
            PolicyError::Denied(msg) => AppError::Forbidden(msg),
        })?;
        let id = allowed.key.strip_prefix(AVATAR_PREFIX).unwrap_or_default();
        if !is_avatar_id(id) {
            return Err(AppError::Forbidden("the key is not an avatar's".into()));
        }
        Ok(allowed)
    }

    /// Stores the file of an authorized form (its size checked against the form's range).
    pub async fn store_upload(
        &self,
        allowed: &Allowed,
        file: bytes::Bytes,
    ) -> Result<(), AppError> {
        let size = file.len() as u64;
        if size > allowed.max_bytes {
            return Err(AppError::PayloadTooLarge);
        }
        if size < allowed.min_bytes {
            return Err(AppError::bad_request(format!(
                "the file must be at least {} bytes",
                allowed.min_bytes
            )));
        }
        self.objects.put(&allowed.key, file).await?;
        Ok(())
    }

    /// `GET /cdn0/profiles/{id}`: the avatar's bytes (encrypted by the client; anyone may
    /// read them), or 404; within the client address's `attachmentDownload` permits (the
    /// same budget as attachment downloads: both are anonymous reads a pod streams).
    pub async fn download(
        &self,
        client: std::net::IpAddr,
        id: &str,
    ) -> Result<(u64, ByteStream), AppError> {
        self.limiter
            .check(Limit::AttachmentDownload, &self.limiter.address_key(client))
            .await?;
        let not_found = || AppError::NotFound("no such avatar".into());
        if !is_avatar_id(id) {
            return Err(not_found());
        }
        let name = format!("{AVATAR_PREFIX}{id}");
        let meta = self.objects.head(&name).await?.ok_or_else(not_found)?;
        let body = self.objects.get(&name, None).await?.ok_or_else(not_found)?;
        Ok((meta.size, body))
    }
}
