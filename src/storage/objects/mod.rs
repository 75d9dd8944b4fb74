//! Object storage for attachment bytes (PROTOCOL.md 12): one small trait that a resumable
//! (TUS) upload streams into as S3-style multipart parts, and its backends (`memory`,
//! `directory`, `s3`). It knows keys and bytes only: no HTTP, no accounts; retention is a
//! number of days it hands to a bucket's lifecycle where the backend has one.

use std::ops::Range;

use anyhow::anyhow;
use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{StorageError, StorageResult};

pub mod directory;
pub mod memory;
pub mod s3;

/// S3's smallest part but the last: every backend refuses less so that none accepts an
/// upload S3 would refuse.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// S3's highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// The size of the chunks `get` streams.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// An object's size and last-modified time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub modified_ms: i64,
}

/// A multipart upload in progress, as a string a caller can keep (S3's UploadId) and resume
/// from in another process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(pub String);

/// One stored part, as S3 needs it to complete (its number and ETag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTag {
    pub number: u32,
    pub etag: String,
}

/// The bytes of an object, in chunks.
pub type ByteStream = futures_util::stream::BoxStream<'static, StorageResult<Bytes>>;

/// Where attachment bytes live. Keys are `[A-Za-z0-9_=/-]` segments separated by `/`
/// (`attachments/<20 url-safe chars>`); any other key is refused with an error, so no key
/// can name a path outside a directory backend's root.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    async fn start_upload(&self, key: &str) -> StorageResult<UploadId>;
    /// Parts are numbered from 1 to `MAX_PART_NUMBER`; putting a number again replaces it.
    /// Every part but the last must be at least `MIN_PART_BYTES`, checked at completion.
    async fn put_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        bytes: Bytes,
    ) -> StorageResult<PartTag>;
    /// The object `key` appears, whole, only now (replacing any object of that key); the
    /// parts are the ones `put_part` returned, numbered 1, 2, 3 and so on without a gap (the
    /// S3 backend's client numbers parts by their position). The upload is gone after; a
    /// refused completion (a part too small, an unknown ETag) keeps it. S3 itself may answer
    /// a repeated completion of a finished upload with success: callers must not rely on
    /// that failing.
    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartTag],
    ) -> StorageResult<()>;
    /// Drops the upload's parts; aborting an unknown or finished upload is not an error.
    async fn abort_upload(&self, key: &str, upload: &UploadId) -> StorageResult<()>;
    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>>;
    /// The bytes of `range` (or all), as a stream of chunks; None when there is no such
    /// object. The range is clamped to the object: an end past it stops at its end, and a
    /// start at or past it gives an empty stream (the caller answers 416 from `head`).
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Option<ByteStream>>;
    /// Stores `bytes` as the whole object `key` at once (an upload's tail between
    /// requests): one part of any size, replacing what was there.
    async fn put(&self, key: &str, bytes: Bytes) -> StorageResult<()> {
        let upload = self.start_upload(key).await?;
        let part = match self.put_part(key, &upload, 1, bytes).await {
            Ok(part) => part,
            Err(e) => {
                let _ = self.abort_upload(key, &upload).await;
                return Err(e);
            }
        };
        self.complete_upload(key, &upload, &[part]).await
    }
    /// Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> StorageResult<()>;
    /// Keys under `prefix` last modified before `before_ms` (for the retention sweeper), in
    /// key order, after `after` when given, at most `limit`.
    async fn list_older(
        &self,
        prefix: &str,
        before_ms: i64,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>>;
    /// A URL anyone can GET `key` from for `expires`, where the backend can make one (S3's
    /// presigned GET); None for the local backends, which are served through sealpost.
    /// Whether the object exists is not checked.
    async fn presigned_get(
        &self,
        key: &str,
        expires: std::time::Duration,
    ) -> StorageResult<Option<String>> {
        check_key(key)?;
        let _ = expires;
        Ok(None)
    }
    /// Lets anyone GET the objects under `prefix`, and nothing more (S3's bucket policy),
    /// where the backend serves reads itself. `false`: the backend cannot, and such objects
    /// are read through sealpost.
    async fn allow_anonymous_reads(&self, prefix: &str) -> StorageResult<bool> {
        check_prefix(prefix)?;
        Ok(false)
    }
    /// Has the backend expire objects under `attachments/` after `retention_days` and abort
    /// multipart uploads unfinished after `abort_incomplete_days` (S3's bucket lifecycle).
    /// `false`: the backend cannot, and the retention sweeper must do it.
    async fn apply_lifecycle(
        &self,
        retention_days: u32,
        abort_incomplete_days: u32,
    ) -> StorageResult<bool> {
        let _ = (retention_days, abort_incomplete_days);
        Ok(false)
    }
}

fn refused(what: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(anyhow!("{what}"))
}

/// Refuses a key that is empty, absolute, has an empty or `..` segment or a character outside
/// `[A-Za-z0-9_=/-]`.
pub fn check_key(key: &str) -> StorageResult<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | '/' | '-');
    if key.is_empty()
        || !key.chars().all(allowed)
        || key
            .split('/')
            .any(|segment| segment.is_empty() || segment == "..")
    {
        return Err(refused(format_args!("invalid object key {key:?}")));
    }
    Ok(())
}

/// Refuses a listing prefix the same way as a key, except that it may be empty or end in `/`.
pub fn check_prefix(prefix: &str) -> StorageResult<()> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() && prefix.len() <= 1 {
        return if prefix.is_empty() {
            Ok(())
        } else {
            Err(refused(format_args!("invalid object prefix {prefix:?}")))
        };
    }
    check_key(trimmed)
}

pub fn check_part_number(number: u32) -> StorageResult<()> {
    if !(1..=MAX_PART_NUMBER).contains(&number) {
        return Err(refused(format_args!("invalid part number {number}")));
    }
    Ok(())
}

/// A part's ETag as the local backends make it: its SHA-256, so a re-put of the same bytes
/// gives the same tag.
pub fn part_etag(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Checks a completion list's shape as every backend must: not empty, numbered 1, 2, 3 and
/// so on (stricter than S3, as object_store numbers by position).
pub fn check_part_list(parts: &[PartTag]) -> StorageResult<()> {
    if parts.is_empty() {
        return Err(refused("an upload completes with at least one part"));
    }
    if parts
        .iter()
        .enumerate()
        .any(|(i, part)| part.number as usize != i + 1)
    {
        return Err(refused("parts complete numbered 1, 2, 3 and so on"));
    }
    Ok(())
}

/// Checks a completion list against the stored parts: [`check_part_list`], each part stored
/// with its ETag (`stored` gives a number's ETag and size), every part but the last at least
/// `MIN_PART_BYTES`.
pub fn check_completion(
    parts: &[PartTag],
    stored: impl Fn(u32) -> Option<(String, u64)>,
) -> StorageResult<()> {
    check_part_list(parts)?;
    for (i, part) in parts.iter().enumerate() {
        let Some((etag, size)) = stored(part.number) else {
            return Err(refused(format_args!("no part {}", part.number)));
        };
        if etag != part.etag {
            return Err(refused(format_args!(
                "part {} has another ETag",
                part.number
            )));
        }
        if i + 1 < parts.len() && size < MIN_PART_BYTES as u64 {
            return Err(refused(format_args!(
                "part {} is smaller than {MIN_PART_BYTES} bytes",
                part.number
            )));
        }
    }
    Ok(())
}

/// `range` clamped to an object of `size` bytes.
pub fn clamp(range: Option<Range<u64>>, size: u64) -> Range<u64> {
    match range {
        None => 0..size,
        Some(range) => {
            let end = range.end.min(size);
            range.start.min(end)..end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_leave_a_directory_are_refused() {
        for key in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "a/",
            "a.b",
            "a b",
            "a\\b",
            "ä",
        ] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
        check_key("attachments/AbC-_=09xyzXYZ12345678").unwrap();
    }

    #[test]
    fn prefixes_may_be_empty_or_end_in_a_slash() {
        check_prefix("").unwrap();
        check_prefix("attachments/").unwrap();
        check_prefix("attachments/Ab").unwrap();
        assert!(check_prefix("/").is_err());
        assert!(check_prefix("../").is_err());
    }

    #[test]
    fn ranges_are_clamped_to_the_object() {
        assert_eq!(clamp(None, 10), 0..10);
        assert_eq!(clamp(Some(2..5), 10), 2..5);
        assert_eq!(clamp(Some(8..50), 10), 8..10);
        assert_eq!(clamp(Some(12..50), 10), 10..10);
    }
}
