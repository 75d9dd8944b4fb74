//! Attachment upload forms (PROTOCOL.md 12.1, 12.3): a fresh key, and a token that lets its
//! holder upload at most the given length under that key to sealpost's TUS endpoint, within
//! the account's `attachmentCreate` and `attachmentCreateBytes` limits.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::domain::attachments::{AttachmentKey, UploadClaims, UploadLengthError, upload_length};
use crate::domain::clock::now_ms;
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};

/// The server secret upload tokens are signed with (HS256), the same on every pod.
pub const UPLOAD_SECRET: &str = "attachment-upload-key";

/// An upload form: where and how to upload one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadForm {
    pub key: AttachmentKey,
    /// `Bearer <JWT>`.
    pub authorization: String,
    /// `filename <std base64 of the key>`.
    pub upload_metadata: String,
    /// `<attachments base>/upload/attachments`.
    pub location: String,
}

#[derive(Clone)]
pub struct AttachmentService {
    limiter: RateLimiter,
    signing: Arc<EncodingKey>,
    max_bytes: u64,
    /// The cdn-3 base URL, without a trailing slash.
    base: Arc<str>,
}

impl AttachmentService {
    pub fn new(
        limiter: RateLimiter,
        secret: [u8; 32],
        max_bytes: u64,
        base: String,
    ) -> anyhow::Result<Self> {
        let signing = EncodingKey::from_secret(&secret)
            .map_err(|e| anyhow::anyhow!("the upload-token key: {e}"))?;
        Ok(Self {
            limiter,
            signing: Arc::new(signing),
            max_bytes,
            base: base.into(),
        })
    }

    /// `GET /v4/attachments/form/upload`: 400 for a length that is not positive, 413 over
    /// the maximum; the count limit first, then (only for a given length) the bytes.
    pub async fn upload_form(
        &self,
        caller: AuthenticatedDevice,
        requested: Option<i64>,
    ) -> Result<UploadForm, AppError> {
        let length = upload_length(requested, self.max_bytes).map_err(|e| match e {
            UploadLengthError::NotPositive => {
                AppError::BadRequest("uploadLength must be positive".into())
            }
            UploadLengthError::TooLarge => AppError::PayloadTooLarge,
        })?;
        let account = caller.aci.to_string();
        self.limiter
            .check(Limit::AttachmentCreate, &account)
            .await?;
        if requested.is_some() {
            self.limiter
                .check_permits(Limit::AttachmentCreateBytes, &account, length)
                .await?;
        }
        let key = AttachmentKey::generate();
        let claims = UploadClaims::new(&key, length, now_ms() / 1000);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.signing)
            .map_err(|e| AppError::internal(anyhow::anyhow!("signing an upload token: {e}")))?;
        Ok(UploadForm {
            upload_metadata: key.upload_metadata(),
            key,
            authorization: format!("Bearer {token}"),
            location: format!("{}/upload/attachments", self.base),
        })
    }
}
