//! Resumable attachment uploads (PROTOCOL.md 12.3), the TUS 1.0.0 subset Signal clients
//! speak: creation-with-upload, `HEAD` and `PATCH` resume. Every call shows the form's upload
//! token; the bytes stream into the object store's multipart upload in parts of
//! `PART_BYTES`, so a request holds at most one part in memory; what arrived after the last
//! part when a request ends (finished or cut off) is kept as the upload's tail object, so a
//! resume on any pod continues at the offset the last request reached. The object
//! `attachments/<key>` appears only when the last byte is in and the checksum, if given,
//! matches. One request at a time appends to an upload: it holds the upload's lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2_11::Digest;
use sha2_11::digest::common::hazmat::SerializableState;

use crate::domain::attachments::{AttachmentKey, UPLOAD_AUDIENCE, UploadClaims};
use crate::domain::clock::Clock;
use crate::domain::uploads::{self, Upload};
use crate::error::AppError;
use crate::limits::{Limit, RateLimiter};
use crate::metrics::Metrics;
use crate::service::attachments::object_key;
use crate::storage::objects::{MIN_PART_BYTES, ObjectStore, PartTag, UploadId};
use crate::storage::uploads::{LEASE_MS, UploadStore};
use crate::storage::{StorageError, StorageResult};

/// The size of every part but the last: S3's minimum, so a request holds little.
pub const PART_BYTES: usize = MIN_PART_BYTES;
/// How often a streaming request renews its lease.
const RENEW_EVERY: Duration = Duration::from_millis(LEASE_MS as u64 / 3);

/// Where an upload stands, as `HEAD`, `POST` and `PATCH` answer it.
#[derive(Clone, Debug)]
pub struct Progress {
    pub key: AttachmentKey,
    pub offset: u64,
    pub length: u64,
    /// `Upload-Expires`.
    pub expires: String,
    /// `<attachments base>/upload/attachments/<key>`.
    pub location: String,
}

/// What a `POST` carries besides its body.
pub struct Creation<'a> {
    pub authorization: Option<&'a str>,
    pub metadata: Option<&'a str>,
    pub upload_length: Option<&'a str>,
    pub checksum: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// `Content-Length`, when the request has one.
    pub content_length: Option<u64>,
}

/// What a `PATCH` carries besides its body.
pub struct Append<'a> {
    pub authorization: Option<&'a str>,
    pub upload_offset: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub content_length: Option<u64>,
}

/// The tail object of an upload: the bytes after its last part, between requests.
pub fn tail_key(key: &str) -> String {
    format!("uploads/{key}/tail")
}

#[derive(Clone)]
pub struct UploadService {
    objects: Arc<dyn ObjectStore>,
    uploads: Arc<dyn UploadStore>,
    limiter: RateLimiter,
    verifying: Arc<DecodingKey>,
    clock: Clock,
    max_bytes: u64,
    /// `<attachments base>/upload/attachments`.
    location: Arc<str>,
    metrics: Metrics,
    /// One permit per upload request streaming on this pod: each may hold a part in memory.
    streams: Arc<tokio::sync::Semaphore>,
}

/// The parts of an [`UploadService`].
pub struct UploadParts {
    pub objects: Arc<dyn ObjectStore>,
    pub uploads: Arc<dyn UploadStore>,
    pub limiter: RateLimiter,
    /// The secret the upload forms' tokens are signed with.
    pub secret: [u8; 32],
    pub clock: Clock,
    pub max_bytes: u64,
    /// The cdn-3 base URL, without a trailing slash.
    pub base: String,
    pub metrics: Metrics,
    /// Upload requests this pod streams at once (each may hold one part, `PART_BYTES`).
    pub max_streams: usize,
}

impl UploadService {
    pub fn new(parts: UploadParts) -> anyhow::Result<Self> {
        let verifying = DecodingKey::from_secret(&parts.secret)
            .map_err(|e| anyhow::anyhow!("the upload-token key: {e}"))?;
        Ok(Self {
            objects: parts.objects,
            uploads: parts.uploads,
            limiter: parts.limiter,
            verifying: Arc::new(verifying),
            clock: parts.clock,
            max_bytes: parts.max_bytes,
            location: format!("{}/upload/attachments", parts.base).into(),
            metrics: parts.metrics,
            streams: Arc::new(tokio::sync::Semaphore::new(parts.max_streams.max(1))),
        })
    }

    /// A streaming slot of this pod, or 503 with `Retry-After` when all are taken: memory
    /// stays bounded however many uploads clients open.
    fn stream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            AppError::Busy("this server is receiving as many uploads as it may; retry".into())
        })
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The token's claims when it is a valid, unexpired upload token for `key` (401
    /// otherwise, saying why; the token itself is never logged).
    fn verify(
        &self,
        authorization: Option<&str>,
        key: &AttachmentKey,
    ) -> Result<UploadClaims, AppError> {
        let rejected = |why: &str| AppError::UploadTokenRejected(why.to_owned());
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| rejected("an upload needs the form's Bearer token"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[UPLOAD_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        // Expiry is checked below against the server's clock.
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<UploadClaims>(token, &self.verifying, &validation)
            .map_err(|_| rejected("the upload token is not valid"))?
            .claims;
        if claims.exp <= self.clock.now_ms() / 1000 {
            return Err(rejected("the upload token has expired"));
        }
        if claims.sub != key.as_str() {
            return Err(rejected("the upload token is for another key"));
        }
        Ok(claims)
    }

    /// Every upload call counts against `attachmentUpload` for its key: a token's holder
    /// cannot spin on one upload.
    async fn limit(&self, key: &AttachmentKey) -> Result<(), AppError> {
        self.limiter
            .check(Limit::AttachmentUpload, key.as_str())
            .await
            .map_err(AppError::from)
    }

    fn progress(&self, upload: &Upload) -> Result<Progress, AppError> {
        Ok(Progress {
            key: AttachmentKey::parse(&upload.key).map_err(|_| {
                AppError::internal(anyhow::anyhow!("a stored upload has a bad key"))
            })?,
            offset: upload.offset,
            length: upload.length,
            expires: uploads::expires_header(upload),
            location: format!("{}/{}", self.location, upload.key),
        })
    }

    fn counted<T>(&self, operation: &str, result: StorageResult<T>) -> Result<T, AppError> {
        if result.is_err() {
            self.metrics
                .object_store_errors
                .with_label_values(&[operation])
                .inc();
        }
        result.map_err(AppError::from)
    }

    /// The upload of `key` unless it expired (410) or never was (404).
    async fn current(&self, key: &AttachmentKey) -> Result<Upload, AppError> {
        let upload = self
            .uploads
            .get(key.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound("no such upload".into()))?;
        if upload.expires_ms() <= self.clock.now_ms() {
            return Err(AppError::Gone("the upload has expired".into()));
        }
        Ok(upload)
    }

    /// `HEAD /upload/attachments/<key>`.
    pub async fn head(&self, authorization: Option<&str>, key: &str) -> Result<Progress, AppError> {
        let key =
            AttachmentKey::parse(key).map_err(|_| AppError::NotFound("no such upload".into()))?;
        self.verify(authorization, &key)?;
        self.limit(&key).await?;
        let upload = self.current(&key).await?;
        self.progress(&upload)
    }

    /// `POST /upload/attachments` (creation-with-upload): 201 with the offset its body
    /// reached. A new upload of a key whose earlier one never finished replaces it; one
    /// that finished is not replaced (409).
    pub async fn create<S, E>(&self, request: Creation<'_>, body: S) -> Result<Progress, AppError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let key = uploads::metadata_key(request.metadata)?;
        let claims = self.verify(request.authorization, &key)?;
        self.limit(&key).await?;
        if request.upload_length.is_none() {
            return Err(AppError::BadRequest(
                "Upload-Length is required (deferred lengths are not supported)".into(),
            ));
        }
        let length = uploads::byte_count("Upload-Length", request.upload_length)?;
        if length == 0 {
            return Err(AppError::BadRequest(
                "Upload-Length must be positive".into(),
            ));
        }
        if length > claims.max_len || length > self.max_bytes {
            return Err(AppError::PayloadTooLarge);
        }
        let checksum = uploads::checksum(request.checksum)?;
        let has_body = request.content_length.is_none_or(|n| n > 0);
        if has_body {
            check_content_type(request.content_type)?;
        }
        if request.content_length.is_some_and(|n| n > length) {
            return Err(AppError::PayloadTooLarge);
        }
        let _slot = if has_body {
            Some(self.stream_slot()?)
        } else {
            None
        };
        let name = object_key(&key);
        if self
            .counted("download", self.objects.head(&name).await)?
            .is_some()
        {
            return Err(AppError::Conflict(
                "this attachment is already uploaded".into(),
            ));
        }
        let holder = uuid::Uuid::new_v4().to_string();
        if let Some(earlier) = self.uploads.get(key.as_str()).await? {
            if earlier.complete {
                return Err(AppError::Conflict(
                    "this attachment is already uploaded".into(),
                ));
            }
            if !self.uploads.lease(key.as_str(), &holder, LEASE_MS).await? {
                return Err(locked());
            }
            self.discard(&earlier).await;
            self.metrics
                .attachment_uploads_aborted
                .with_label_values(&["replaced"])
                .inc();
        }
        let upload_id = self.counted("upload", self.objects.start_upload(&name).await)?;
        let upload = Upload::new(&key, length, upload_id.0, checksum, self.clock.now_ms());
        if !self.uploads.create(&upload).await? {
            let _ = self
                .objects
                .abort_upload(&name, &UploadId(upload.upload_id))
                .await;
            return Err(locked());
        }
        self.metrics.attachment_uploads_started.inc();
        if !self.uploads.lease(key.as_str(), &holder, LEASE_MS).await? {
            return Err(locked());
        }
        let result = if has_body {
            self.append(upload, &holder, body).await
        } else {
            Ok(upload)
        };
        let _ = self.uploads.release(key.as_str(), &holder).await;
        self.progress(&result?)
    }

    /// `PATCH /upload/attachments/<key>`: the bytes from `Upload-Offset` on, which must be
    /// where the upload stands (409 otherwise).
    pub async fn patch<S, E>(
        &self,
        key: &str,
        request: Append<'_>,
        body: S,
    ) -> Result<Progress, AppError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let key =
            AttachmentKey::parse(key).map_err(|_| AppError::NotFound("no such upload".into()))?;
        self.verify(request.authorization, &key)?;
        self.limit(&key).await?;
        check_content_type(request.content_type)?;
        let offset = uploads::byte_count("Upload-Offset", request.upload_offset)?;
        self.current(&key).await?;
        let _slot = self.stream_slot()?;
        let holder = uuid::Uuid::new_v4().to_string();
        if !self.uploads.lease(key.as_str(), &holder, LEASE_MS).await? {
            return Err(locked());
        }
        let result = self
            .patch_leased(&key, &holder, offset, request.content_length, body)
            .await;
        let _ = self.uploads.release(key.as_str(), &holder).await;
        self.progress(&result?)
    }

    async fn patch_leased<S, E>(
        &self,
        key: &AttachmentKey,
        holder: &str,
        offset: u64,
        content_length: Option<u64>,
        body: S,
    ) -> Result<Upload, AppError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        // Read again under the lease: the state before it may have moved on.
        let upload = self.current(key).await?;
        if offset != upload.offset {
            return Err(AppError::Conflict(format!(
                "Upload-Offset {offset} does not match the upload's offset {}",
                upload.offset
            )));
        }
        if content_length.is_some_and(|n| n > upload.length - upload.offset) {
            return Err(AppError::PayloadTooLarge);
        }
        if upload.complete {
            return Ok(upload);
        }
        self.append(upload, holder, body).await
    }

    /// Streams `body` into `upload` from its offset, under `holder`'s lease: full parts as
    /// they fill, then (cut off or not finished) the rest as the tail, or (all bytes in) the
    /// last part, the checksum and the object.
    async fn append<S, E>(
        &self,
        mut upload: Upload,
        holder: &str,
        mut body: S,
    ) -> Result<Upload, AppError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let name = object_key(&AttachmentKey::parse(&upload.key).map_err(AppError::from)?);
        let id = UploadId(upload.upload_id.clone());
        let mut buffer = self.read_tail(&upload).await?;
        let mut hasher = match (&upload.checksum, &upload.hash_state) {
            (None, _) => None,
            (Some(_), None) => Some(sha2_11::Sha256::new()),
            (Some(_), Some(state)) => Some(restore_hash(state)?),
        };
        let remaining = upload.length - upload.offset;
        let mut received = 0u64;
        let mut renewed = Instant::now();
        let mut over = false;
        let mut cut_off = false;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::debug!(error = %e, "an upload's body ended early");
                    cut_off = true;
                    break;
                }
            };
            if received + chunk.len() as u64 > remaining {
                over = true;
                break;
            }
            received += chunk.len() as u64;
            self.metrics
                .attachment_bytes
                .with_label_values(&["in"])
                .inc_by(chunk.len() as u64);
            buffer.extend_from_slice(&chunk);
            while buffer.len() >= PART_BYTES {
                // The next buffer is allocated only once the part is stored and let go, so
                // the allocator hands the same memory back: one part's worth per upload.
                let rest = buffer[PART_BYTES..].to_vec();
                buffer.truncate(PART_BYTES);
                let part = Bytes::from(std::mem::take(&mut buffer));
                self.put_part(&mut upload, &name, &id, part, hasher.as_mut(), holder)
                    .await?;
                buffer = Vec::with_capacity(PART_BYTES + 64 * 1024);
                buffer.extend_from_slice(&rest);
            }
            if renewed.elapsed() >= RENEW_EVERY {
                if !self.uploads.lease(&upload.key, holder, LEASE_MS).await? {
                    return Err(locked());
                }
                renewed = Instant::now();
            }
        }
        if over {
            // Nothing past the last stored part of this request is kept: the state is the
            // one the last part left.
            return Err(AppError::PayloadTooLarge);
        }
        let done = upload.parts_bytes() + buffer.len() as u64 == upload.length;
        if !done {
            if received > 0 && !buffer.is_empty() {
                // The body may have stalled until its deadline: hold the upload again
                // before what arrived is written down.
                if !self.uploads.lease(&upload.key, holder, LEASE_MS).await? {
                    return Err(locked());
                }
                let tail = Bytes::from(buffer);
                let tail_len = tail.len() as u64;
                self.counted(
                    "upload",
                    self.objects.put(&tail_key(&upload.key), tail).await,
                )?;
                let parts_bytes = upload.parts_bytes();
                upload.tail_bytes = tail_len;
                upload.offset = parts_bytes + tail_len;
                self.save(&upload, holder).await?;
            }
            if cut_off {
                tracing::debug!(
                    offset = upload.offset,
                    "an upload was cut off; it can resume"
                );
            }
            return Ok(upload);
        }
        if !buffer.is_empty() || upload.parts.is_empty() {
            self.put_part(
                &mut upload,
                &name,
                &id,
                Bytes::from(buffer),
                hasher.as_mut(),
                holder,
            )
            .await?;
        }
        if let (Some(expected), Some(hasher)) = (upload.checksum, hasher) {
            let actual: [u8; 32] = hasher.finalize().into();
            if actual != expected {
                self.discard(&upload).await;
                self.metrics
                    .attachment_uploads_aborted
                    .with_label_values(&["checksum"])
                    .inc();
                return Err(AppError::ChecksumMismatch);
            }
        }
        let parts: Vec<PartTag> = upload
            .parts
            .iter()
            .map(|(number, etag)| PartTag {
                number: *number,
                etag: etag.clone(),
            })
            .collect();
        self.counted(
            "upload",
            self.objects.complete_upload(&name, &id, &parts).await,
        )?;
        if upload.tail_bytes > 0 {
            let _ = self.objects.delete(&tail_key(&upload.key)).await;
        }
        upload.complete = true;
        upload.tail_bytes = 0;
        upload.offset = upload.length;
        upload.parts.clear();
        upload.hash_state = None;
        self.save(&upload, holder).await?;
        self.metrics.attachment_uploads_completed.inc();
        Ok(upload)
    }

    /// Stores `bytes` as the upload's next part and records it (with the hash over the
    /// parts): the offset moves to the end of the parts, the tail being inside them now.
    async fn put_part(
        &self,
        upload: &mut Upload,
        name: &str,
        id: &UploadId,
        bytes: Bytes,
        hasher: Option<&mut sha2_11::Sha256>,
        holder: &str,
    ) -> Result<(), AppError> {
        let number = upload.parts.len() as u32 + 1;
        let len = bytes.len() as u64;
        if let Some(hasher) = hasher {
            hasher.update(&bytes);
            upload.hash_state = Some(save_hash(hasher));
        }
        let tag = self.counted(
            "upload",
            self.objects.put_part(name, id, number, bytes).await,
        )?;
        let parts_bytes = upload.parts_bytes();
        upload.parts.push((tag.number, tag.etag));
        upload.tail_bytes = 0;
        upload.offset = parts_bytes + len;
        self.save(upload, holder).await
    }

    async fn save(&self, upload: &Upload, holder: &str) -> Result<(), AppError> {
        if self.uploads.save(upload, holder).await? {
            Ok(())
        } else {
            // Another request took the upload over after this one's lease lapsed.
            Err(locked())
        }
    }

    /// The bytes of the upload's tail, to continue after them.
    async fn read_tail(&self, upload: &Upload) -> Result<Vec<u8>, AppError> {
        let mut buffer = Vec::with_capacity(PART_BYTES + 64 * 1024);
        if upload.tail_bytes == 0 {
            return Ok(buffer);
        }
        let lost = || {
            AppError::Store(anyhow::anyhow!(
                "the tail of an upload is missing or shorter than recorded"
            ))
        };
        let mut stream = self
            .counted(
                "download",
                self.objects.get(&tail_key(&upload.key), None).await,
            )?
            .ok_or_else(lost)?;
        while let Some(chunk) = stream.next().await {
            buffer.extend_from_slice(&self.counted("download", chunk)?);
        }
        if buffer.len() as u64 != upload.tail_bytes {
            return Err(lost());
        }
        Ok(buffer)
    }

    /// Drops an unfinished upload's parts, tail and state (best effort: what fails here the
    /// sweeper or the bucket's lifecycle takes later).
    async fn discard(&self, upload: &Upload) {
        if let Ok(key) = AttachmentKey::parse(&upload.key) {
            let name = object_key(&key);
            if !upload.complete {
                let result = self
                    .objects
                    .abort_upload(&name, &UploadId(upload.upload_id.clone()))
                    .await;
                let _ = self.counted("delete", result);
            }
            let result = self.objects.delete(&tail_key(&upload.key)).await;
            let _ = self.counted("delete", result);
        }
        if let Err(e) = self.uploads.remove(&upload.key).await {
            tracing::warn!(error = %e, "forgetting an upload failed");
        }
    }

    /// The sweeper's half of uploads: every upload begun before `before_ms`, finished or
    /// not, is forgotten, an unfinished one's parts and tail dropped. How many it removed.
    pub async fn expire_before(&self, before_ms: i64) -> Result<usize, StorageError> {
        let mut removed = 0;
        loop {
            let keys = self.uploads.created_before(before_ms, 100).await?;
            if keys.is_empty() {
                return Ok(removed);
            }
            for key in keys {
                match self.uploads.get(&key).await? {
                    Some(upload) => {
                        if !upload.complete {
                            self.metrics
                                .attachment_uploads_aborted
                                .with_label_values(&["expired"])
                                .inc();
                        }
                        self.discard(&upload).await;
                    }
                    // Its state expired on its own: only the index entry is left.
                    None => self.uploads.remove(&key).await?,
                }
                removed += 1;
            }
        }
    }
}

fn locked() -> AppError {
    AppError::Locked("another request is uploading to this key; retry shortly".into())
}

fn check_content_type(content_type: Option<&str>) -> Result<(), AppError> {
    match content_type.map(str::trim) {
        Some(uploads::OFFSET_OCTET_STREAM) => Ok(()),
        _ => Err(AppError::UnsupportedMediaType(format!(
            "upload bytes must be sent as {}",
            uploads::OFFSET_OCTET_STREAM
        ))),
    }
}

fn save_hash(hasher: &sha2_11::Sha256) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(hasher.serialize().as_slice())
}

fn restore_hash(state: &str) -> Result<sha2_11::Sha256, AppError> {
    use base64::Engine;
    let corrupt = || AppError::Store(anyhow::anyhow!("an upload's hash state is corrupt"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(state)
        .map_err(|_| corrupt())?;
    let state = bytes.as_slice().try_into().map_err(|_| corrupt())?;
    sha2_11::Sha256::deserialize(state).map_err(|_| corrupt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_carried_across_requests_equals_one_over_the_whole() {
        let mut first = sha2_11::Sha256::new();
        first.update([1u8; 1000]);
        let mut resumed = restore_hash(&save_hash(&first)).unwrap();
        resumed.update([2u8; 10]);
        let mut whole = sha2_11::Sha256::new();
        whole.update([1u8; 1000]);
        whole.update([2u8; 10]);
        assert_eq!(resumed.finalize(), whole.finalize());
        assert!(restore_hash("AAAA").is_err());
    }
}
