//! Attachments (PROTOCOL.md 12): the keys uploads are stored under, the upload form's size
//! rule and the claims of its upload token. An attachment is an encrypted blob the server
//! never reads; its pointer travels inside the end-to-end encrypted message.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::DomainError;

/// Random bytes in a key (Signal's `AttachmentUtil.generateAttachmentKey`).
pub const KEY_BYTES: usize = 15;
/// Characters in a key: base64url of 15 bytes, which never needs padding.
pub const KEY_LENGTH: usize = 20;
/// `SEALPOST_MAX_ATTACHMENT_BYTES`' default: 100 MiB (Signal's production value is unknown).
pub const DEFAULT_MAX_ATTACHMENT_BYTES: u64 = 100 * 1024 * 1024;
/// The upload token's audience (Signal's `TusAttachmentGenerator`).
pub const UPLOAD_AUDIENCE: &str = "attachments";
/// How long an upload token is valid (sealpost adds `exp`; Signal's has none).
pub const UPLOAD_TOKEN_SECONDS: i64 = 24 * 3600;

/// Where an attachment is stored: 20 url-safe characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttachmentKey(String);

impl AttachmentKey {
    /// A fresh key from 15 random bytes.
    pub fn generate() -> Self {
        let bytes: [u8; KEY_BYTES] = rand::random();
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A key as a path or a token names it: exactly 20 base64url characters.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let valid = value.len() == KEY_LENGTH
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(DomainError::invalid("not an attachment key"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `Upload-Metadata` header the form hands out: `filename <std base64 of the key>`.
    pub fn upload_metadata(&self) -> String {
        format!(
            "filename {}",
            base64::engine::general_purpose::STANDARD.encode(self.0.as_bytes())
        )
    }
}

/// Why an upload length is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadLengthError {
    /// Zero or negative (400).
    NotPositive,
    /// Over the configured maximum (413).
    TooLarge,
}

/// The length an upload may have (PROTOCOL.md 12.1): the one asked for, if positive and at
/// most `max`; the maximum when none was asked for.
pub fn upload_length(requested: Option<i64>, max: u64) -> Result<u64, UploadLengthError> {
    match requested {
        None => Ok(max),
        Some(n) if n <= 0 => Err(UploadLengthError::NotPositive),
        Some(n) if n as u64 > max => Err(UploadLengthError::TooLarge),
        Some(n) => Ok(n as u64),
    }
}

/// The upload token's claims (PROTOCOL.md 12.1, 12.3): HS256 over a server secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadClaims {
    pub aud: String,
    /// The key the token may upload.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// The most bytes the upload may have.
    #[serde(rename = "maxLen")]
    pub max_len: u64,
}

impl UploadClaims {
    pub fn new(key: &AttachmentKey, max_len: u64, now_seconds: i64) -> Self {
        Self {
            aud: UPLOAD_AUDIENCE.into(),
            sub: key.as_str().to_owned(),
            iat: now_seconds,
            exp: now_seconds + UPLOAD_TOKEN_SECONDS,
            max_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_twenty_url_safe_characters_and_parse_back() {
        for _ in 0..100 {
            let key = AttachmentKey::generate();
            assert_eq!(key.as_str().len(), KEY_LENGTH);
            assert_eq!(AttachmentKey::parse(key.as_str()).unwrap(), key);
        }
        assert!(AttachmentKey::parse("short").is_err());
        assert!(AttachmentKey::parse("../../../../etc/pass").is_err());
        assert!(AttachmentKey::parse("aaaaaaaaaaaaaaaaaaa=").is_err());
    }

    #[test]
    fn the_metadata_names_the_key_in_standard_base64() {
        let key = AttachmentKey::parse("abcdefghijklmnopqrst").unwrap();
        assert_eq!(
            key.upload_metadata(),
            "filename YWJjZGVmZ2hpamtsbW5vcHFyc3Q="
        );
    }

    #[test]
    fn upload_lengths_follow_signals_rules() {
        assert_eq!(upload_length(None, 100), Ok(100));
        assert_eq!(upload_length(Some(1), 100), Ok(1));
        assert_eq!(upload_length(Some(100), 100), Ok(100));
        assert_eq!(
            upload_length(Some(101), 100),
            Err(UploadLengthError::TooLarge)
        );
        assert_eq!(
            upload_length(Some(0), 100),
            Err(UploadLengthError::NotPositive)
        );
        assert_eq!(
            upload_length(Some(-5), 100),
            Err(UploadLengthError::NotPositive)
        );
    }
}

/// What a download's `Range` header asks for (RFC 9110 14.2), against an object of `size`
/// bytes: one byte range, clamped to the object; several ranges or a header that does not
/// parse are ignored (the whole object, 200), as RFC 9110 allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Whole,
    /// Bytes `start..end` (end exclusive), 206.
    Partial(std::ops::Range<u64>),
    /// Nothing of the object is in the range (416).
    Unsatisfiable,
}

pub fn range_request(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `bytes=-n`: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(size.saturating_sub(n)..size),
            None => RangeRequest::Whole,
        },
        // `bytes=a-`: from a to the end.
        (false, true) => match number(first) {
            Some(a) if a >= size => RangeRequest::Unsatisfiable,
            Some(a) => RangeRequest::Partial(a..size),
            None => RangeRequest::Whole,
        },
        // `bytes=a-b`: a to b inclusive.
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a > b => RangeRequest::Whole,
            (Some(a), Some(_)) if a >= size => RangeRequest::Unsatisfiable,
            (Some(a), Some(b)) => RangeRequest::Partial(a..b.saturating_add(1).min(size)),
            _ => RangeRequest::Whole,
        },
        (true, true) => RangeRequest::Whole,
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(range_request(None, 10), Whole);
        assert_eq!(range_request(Some("bytes=0-3"), 10), Partial(0..4));
        assert_eq!(range_request(Some("bytes=5-"), 10), Partial(5..10));
        assert_eq!(range_request(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(range_request(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(range_request(Some("bytes=8-100"), 10), Partial(8..10));
        assert_eq!(range_request(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(range_request(Some("bytes=10-12"), 10), Unsatisfiable);
        assert_eq!(range_request(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(range_request(Some("bytes=0-0"), 0), Unsatisfiable);
        // Ignored: several ranges, other units, nonsense, a reversed range.
        assert_eq!(range_request(Some("bytes=0-1,3-4"), 10), Whole);
        assert_eq!(range_request(Some("items=0-1"), 10), Whole);
        assert_eq!(range_request(Some("bytes=x-y"), 10), Whole);
        assert_eq!(range_request(Some("bytes=5-2"), 10), Whole);
    }
}
