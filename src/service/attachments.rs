//! Attachment upload forms (PROTOCOL.md 12.1, 12.3): a fresh key, and a token that lets its
//! holder upload at most the given length under that key to sealpost's TUS endpoint, within
//! the account's `attachmentCreate` and `attachmentCreateBytes` limits.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::domain::attachments::{
    AttachmentKey, RangeRequest, UploadClaims, UploadLengthError, range_request, upload_length,
};
use crate::domain::clock::Clock;
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::storage::objects::{ByteStream, ObjectStore};

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

/// What a download answers.
pub enum Download {
    /// 200 (`range` None) or 206: the object's size, the bytes sent, and their stream (none
    /// for `HEAD`).
    Found {
        size: u64,
        range: Option<std::ops::Range<u64>>,
        body: Option<ByteStream>,
    },
    /// 416: nothing of the object is in the range.
    Unsatisfiable { size: u64 },
    /// 302 to this presigned URL of the bucket (`SEALPOST_ATTACHMENTS_REDIRECT=on`, GET
    /// only), which honours the `Range` itself.
    Redirect(String),
}

/// How long a download redirect's presigned URL is valid.
pub const REDIRECT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where an attachment's bytes live in the object store.
pub fn object_key(key: &AttachmentKey) -> String {
    format!("attachments/{}", key.as_str())
}

#[derive(Clone)]
pub struct AttachmentService {
    objects: Arc<dyn ObjectStore>,
    limiter: RateLimiter,
    signing: Arc<EncodingKey>,
    max_bytes: u64,
    /// The cdn-3 base URL, without a trailing slash.
    base: Arc<str>,
    /// The server's clock (tokens are dated by it and checked against it).
    clock: Clock,
    /// Downloads answer 302 to a presigned URL where the store makes one.
    redirect: bool,
}

impl AttachmentService {
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        limiter: RateLimiter,
        secret: [u8; 32],
        max_bytes: u64,
        base: String,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let signing = EncodingKey::from_secret(&secret)
            .map_err(|e| anyhow::anyhow!("the upload-token key: {e}"))?;
        Ok(Self {
            objects,
            limiter,
            signing: Arc::new(signing),
            max_bytes,
            base: base.into(),
            clock,
            redirect: false,
        })
    }

    /// Downloads (GET, not HEAD) redirect to the object store's presigned URL when `on` and
    /// the store makes one.
    pub fn redirecting(mut self, on: bool) -> Self {
        self.redirect = on;
        self
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
        if requested.is_some() {
            // Signal returns the count permit when the bytes check fails: here the count is
            // only looked at first and taken after the bytes, so a refused form costs none.
            self.limiter
                .ensure_available(Limit::AttachmentCreate, &account)
                .await?;
            self.limiter
                .check_permits(Limit::AttachmentCreateBytes, &account, length)
                .await?;
        }
        self.limiter
            .check(Limit::AttachmentCreate, &account)
            .await?;
        let key = AttachmentKey::generate();
        let claims = UploadClaims::new(&key, length, self.clock.now_ms() / 1000);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.signing)
            .map_err(|e| AppError::internal(anyhow::anyhow!("signing an upload token: {e}")))?;
        Ok(UploadForm {
            upload_metadata: key.upload_metadata(),
            key,
            authorization: format!("Bearer {token}"),
            location: format!("{}/upload/attachments", self.base),
        })
    }

    /// `GET`/`HEAD /attachments/{key}`, without authentication (the bytes are end-to-end
    /// encrypted) but within `attachmentDownload` per client address: 404 for a key that is not
    /// one or names nothing, one `Range` honoured; with redirects on, a GET of an existing
    /// object is sent to the bucket instead.
    pub async fn download(
        &self,
        client: std::net::IpAddr,
        key: &str,
        range: Option<&str>,
        with_body: bool,
    ) -> Result<Download, AppError> {
        self.limiter
            .check(Limit::AttachmentDownload, &self.limiter.address_key(client))
            .await?;
        let missing = || AppError::NotFound("no such attachment".into());
        let key = AttachmentKey::parse(key).map_err(|_| missing())?;
        let name = object_key(&key);
        let meta = self.objects.head(&name).await?.ok_or_else(missing)?;
        if self.redirect
            && with_body
            && let Some(url) = self.objects.presigned_get(&name, REDIRECT_VALIDITY).await?
        {
            return Ok(Download::Redirect(url));
        }
        let (partial, bytes) = match range_request(range, meta.size) {
            RangeRequest::Unsatisfiable => return Ok(Download::Unsatisfiable { size: meta.size }),
            RangeRequest::Whole => (None, 0..meta.size),
            RangeRequest::Partial(bytes) => (Some(bytes.clone()), bytes),
        };
        let body = if with_body {
            // Deleted since `head`: gone.
            Some(
                self.objects
                    .get(&name, Some(bytes))
                    .await?
                    .ok_or_else(missing)?,
            )
        } else {
            None
        };
        Ok(Download::Found {
            size: meta.size,
            range: partial,
            body,
        })
    }
}
