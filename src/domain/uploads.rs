//! Resumable attachment uploads (PROTOCOL.md 12.3): the TUS 1.0.0 subset Signal clients
//! speak, as rules over header values, and the state of one upload between requests. No
//! IO: the service streams the bytes, the storage keeps the [`Upload`].

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::DomainError;
use super::attachments::AttachmentKey;

/// The one TUS version sealpost speaks.
pub const TUS_VERSION: &str = "1.0.0";
/// What `OPTIONS` advertises (PROTOCOL.md 12.3).
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,expiration";
/// The content type of every body that carries upload bytes.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// The optional whole-upload checksum header: std base64 of a SHA-256.
pub const CHECKSUM_HEADER: &str = "X-Signal-Checksum-Sha256";
/// How long an unfinished upload may be resumed, and how long a finished one's state is
/// kept (so a client that lost the last answer reads its offset back): 7 days, as Signal's
/// TUS server.
pub const UPLOAD_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// One upload between requests: where its bytes are and how far it got. `offset` bytes are
/// stored for good: `parts` (each `part_size` bytes, in the object store's multipart
/// upload) and then `tail_bytes` more in the upload's tail object, which a resumed request
/// reads back before it continues. `hash_state` is the SHA-256 state over the parts' bytes
/// only (the tail is hashed when it becomes a part).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub key: String,
    pub length: u64,
    pub offset: u64,
    /// The object store's multipart upload id.
    pub upload_id: String,
    /// `(number, etag)` of each stored part, ascending from 1.
    pub parts: Vec<(u32, String)>,
    pub tail_bytes: u64,
    /// The expected SHA-256 (from `X-Signal-Checksum-Sha256`), if the client gave one.
    pub checksum: Option<[u8; 32]>,
    /// Serialized SHA-256 state over the parts (hex), present when `checksum` is.
    pub hash_state: Option<String>,
    pub created_ms: i64,
    /// The object is complete and visible; the state is kept only to answer `HEAD`.
    pub complete: bool,
}

impl Upload {
    pub fn new(
        key: &AttachmentKey,
        length: u64,
        upload_id: String,
        checksum: Option<[u8; 32]>,
        now_ms: i64,
    ) -> Self {
        Self {
            key: key.as_str().to_owned(),
            length,
            offset: 0,
            upload_id,
            parts: Vec::new(),
            tail_bytes: 0,
            checksum,
            hash_state: None,
            created_ms: now_ms,
            complete: false,
        }
    }

    /// Bytes in the stored parts.
    pub fn parts_bytes(&self) -> u64 {
        self.offset - self.tail_bytes
    }

    /// When the upload may no longer be resumed (and its state goes).
    pub fn expires_ms(&self) -> i64 {
        self.created_ms + UPLOAD_LIFETIME_MS
    }
}

/// `Tus-Resumable` must name the version sealpost speaks (else 412).
pub fn check_resumable(header: Option<&str>) -> Result<(), DomainError> {
    match header.map(str::trim) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(DomainError::invalid(format!(
            "Tus-Resumable must be {TUS_VERSION}"
        ))),
    }
}

/// A non-negative byte count header (`Upload-Length`, `Upload-Offset`, `Content-Length`).
pub fn byte_count(name: &str, header: Option<&str>) -> Result<u64, DomainError> {
    let value = header.ok_or_else(|| DomainError::invalid(format!("{name} is required")))?;
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DomainError::invalid(format!(
            "{name} must be a non-negative integer"
        )));
    }
    value
        .parse()
        .map_err(|_| DomainError::invalid(format!("{name} is too large")))
}

/// The key `Upload-Metadata` names: its `filename` pair, the std base64 of the key (the
/// other pairs, if any, are ignored as TUS allows).
pub fn metadata_key(header: Option<&str>) -> Result<AttachmentKey, DomainError> {
    let header = header.ok_or_else(|| DomainError::invalid("Upload-Metadata is required"))?;
    let encoded = header
        .split(',')
        .filter_map(|pair| {
            let mut words = pair.split_whitespace();
            (words.next() == Some("filename")).then(|| words.next())
        })
        .next()
        .flatten()
        .ok_or_else(|| DomainError::invalid("Upload-Metadata names no filename"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| DomainError::invalid("Upload-Metadata's filename is not base64"))?;
    let key = std::str::from_utf8(&bytes)
        .map_err(|_| DomainError::invalid("Upload-Metadata's filename is not a key"))?;
    AttachmentKey::parse(key)
        .map_err(|_| DomainError::invalid("Upload-Metadata's filename is not a key"))
}

/// `X-Signal-Checksum-Sha256`: std base64 of 32 bytes.
pub fn checksum(header: Option<&str>) -> Result<Option<[u8; 32]>, DomainError> {
    let Some(value) = header else {
        return Ok(None);
    };
    let bad = || DomainError::invalid(format!("{CHECKSUM_HEADER} must be base64 of 32 bytes"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| bad())?;
    let digest: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
    Ok(Some(digest))
}

/// The `Upload-Expires` value of an upload (RFC 9110 date), for the `expiration` extension.
pub fn expires_header(upload: &Upload) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(upload.expires_ms().max(0) as u64);
    httpdate::fmt_http_date(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tus_1_0_0_is_spoken() {
        check_resumable(Some("1.0.0")).unwrap();
        assert!(check_resumable(Some("0.2.2")).is_err());
        assert!(check_resumable(None).is_err());
    }

    #[test]
    fn byte_counts_are_plain_non_negative_integers() {
        assert_eq!(byte_count("Upload-Offset", Some("0")).unwrap(), 0);
        assert_eq!(byte_count("Upload-Offset", Some(" 42 ")).unwrap(), 42);
        for bad in ["", "-1", "+1", "1.5", "0x10", "99999999999999999999999"] {
            assert!(byte_count("Upload-Offset", Some(bad)).is_err(), "{bad:?}");
        }
        assert!(byte_count("Upload-Length", None).is_err());
    }

    #[test]
    fn the_metadata_names_the_key() {
        let key = AttachmentKey::parse("abcdefghijklmnopqrst").unwrap();
        assert_eq!(
            metadata_key(Some(&key.upload_metadata())).unwrap(),
            key.clone()
        );
        assert_eq!(
            metadata_key(Some(&format!("type aW1hZ2U=,{}", key.upload_metadata()))).unwrap(),
            key
        );
        for bad in [
            "",
            "filename",
            "filename !!!",
            "name YWJjZGVmZ2hpamtsbW5vcHFyc3Q=",
            "filename c2hvcnQ=",
        ] {
            assert!(metadata_key(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(metadata_key(None).is_err());
    }

    #[test]
    fn checksums_are_base64_sha256() {
        assert_eq!(checksum(None).unwrap(), None);
        let digest = [7u8; 32];
        let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(checksum(Some(&encoded)).unwrap(), Some(digest));
        assert!(checksum(Some("AAAA")).is_err());
        assert!(checksum(Some("not base64!")).is_err());
    }

    #[test]
    fn an_upload_expires_seven_days_after_it_began() {
        let key = AttachmentKey::parse("abcdefghijklmnopqrst").unwrap();
        let upload = Upload::new(&key, 10, "id".into(), None, 1_000);
        assert_eq!(upload.expires_ms(), 1_000 + UPLOAD_LIFETIME_MS);
        assert_eq!(expires_header(&upload), "Thu, 08 Jan 1970 00:00:01 GMT");
    }
}
