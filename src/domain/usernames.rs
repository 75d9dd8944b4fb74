//! Usernames as the server sees them (PROTOCOL.md 14): a 32-byte hash, never the name, and
//! an encrypted username behind a link handle. Parsing, sizes and the timing rules; no IO.
//! The Schnorr proof is only checked to be there (14.4): verifying it needs libsignal's
//! `usernames` crate, which is not on crates.io.

use curve25519_dalek::ristretto::CompressedRistretto;
use uuid::Uuid;

use super::DomainError;
use super::encoding::{decode_url_base64, encode_url_base64};

/// Bytes of a username hash (a compressed Ristretto point).
pub const HASH_LEN: usize = 32;
/// Hashes one reservation may offer (PROTOCOL.md 14.1).
pub const MAX_RESERVE_HASHES: usize = 20;
/// Bytes of an encrypted username (confirm's `encryptedUsername`, a link's value).
pub const MAX_ENCRYPTED_USERNAME: usize = 128;
/// How long a reservation lasts (14.2).
pub const RESERVATION_MS: i64 = 5 * 60 * 1000;
/// How long a released hash stays its former owner's (14.2).
pub const HOLD_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Holds an account keeps at most; the oldest goes first (14.2).
pub const MAX_HOLDS: usize = 3;

/// A username hash, 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsernameHash([u8; HASH_LEN]);

impl UsernameHash {
    /// Parses url-nopad base64 of exactly 32 bytes; anything else is a 422 (Signal's
    /// `@ExactlySize(32)` through its JSON mapper).
    pub fn parse(field: &str, value: &str) -> Result<Self, DomainError> {
        let bytes = decode_url_base64(field, value)?;
        Self::from_slice(field, &bytes)
    }

    pub fn from_slice(field: &str, bytes: &[u8]) -> Result<Self, DomainError> {
        let bytes: [u8; HASH_LEN] = bytes.try_into().map_err(|_| {
            DomainError::unprocessable(format!(
                "{field} must be {HASH_LEN} bytes, not {}",
                bytes.len()
            ))
        })?;
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// url-nopad, as the wire carries it.
    pub fn encode(&self) -> String {
        encode_url_base64(&self.0)
    }

    /// Whether the bytes are the canonical encoding of a Ristretto point: the first thing
    /// libsignal's proof verification requires (14.3).
    pub fn is_canonical_point(&self) -> bool {
        CompressedRistretto(self.0).decompress().is_some()
    }
}

/// An encrypted username: 1..=128 bytes the server never reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedUsername(Vec<u8>);

impl EncryptedUsername {
    /// Parses url-nopad base64 of 1..=128 bytes (422 otherwise).
    pub fn parse(field: &str, value: &str) -> Result<Self, DomainError> {
        let bytes = decode_url_base64(field, value)?;
        Self::from_vec(field, bytes)
    }

    pub fn from_vec(field: &str, bytes: Vec<u8>) -> Result<Self, DomainError> {
        if bytes.is_empty() || bytes.len() > MAX_ENCRYPTED_USERNAME {
            return Err(DomainError::unprocessable(format!(
                "{field} must be 1 to {MAX_ENCRYPTED_USERNAME} bytes, not {}",
                bytes.len()
            )));
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn encode(&self) -> String {
        encode_url_base64(&self.0)
    }
}

/// A reservation request: 1..=20 hashes, in the client's order of preference.
pub fn parse_reserve_hashes(values: Option<&[String]>) -> Result<Vec<UsernameHash>, DomainError> {
    let values = values.unwrap_or_default();
    if values.is_empty() || values.len() > MAX_RESERVE_HASHES {
        return Err(DomainError::unprocessable(format!(
            "usernameHashes must hold 1 to {MAX_RESERVE_HASHES} hashes, not {}",
            values.len()
        )));
    }
    values
        .iter()
        .map(|v| UsernameHash::parse("usernameHashes", v))
        .collect()
}

/// A confirmation, checked as 14.4 says: the hash 32 bytes and a canonical Ristretto point,
/// a proof present and non-empty (not verified), the encrypted username absent or 1..=128
/// bytes. Every failure is a 422.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    pub hash: UsernameHash,
    pub encrypted_username: Option<EncryptedUsername>,
}

impl Confirmation {
    pub fn parse(
        hash: Option<&str>,
        zk_proof: Option<&str>,
        encrypted_username: Option<&str>,
    ) -> Result<Self, DomainError> {
        let hash = UsernameHash::parse(
            "usernameHash",
            hash.ok_or_else(|| DomainError::unprocessable("usernameHash is missing"))?,
        )?;
        let proof = decode_url_base64(
            "zkProof",
            zk_proof.ok_or_else(|| DomainError::unprocessable("zkProof is missing"))?,
        )?;
        if proof.is_empty() {
            return Err(DomainError::unprocessable("zkProof is empty"));
        }
        if !hash.is_canonical_point() {
            return Err(DomainError::unprocessable(
                "usernameHash is not a canonical Ristretto point",
            ));
        }
        let encrypted_username = encrypted_username
            .map(|v| EncryptedUsername::parse("encryptedUsername", v))
            .transpose()?;
        Ok(Self {
            hash,
            encrypted_username,
        })
    }
}

/// A username link handle from a path: anything but a UUID is simply not found (Signal).
pub fn parse_link_handle(value: &str) -> Option<Uuid> {
    Uuid::parse_str(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    use curve25519_dalek::scalar::Scalar;

    fn point() -> [u8; 32] {
        (Scalar::from(77u64) * RISTRETTO_BASEPOINT_POINT)
            .compress()
            .to_bytes()
    }

    #[test]
    fn a_hash_is_exactly_32_bytes_of_url_safe_base64() {
        let hash = UsernameHash::parse("h", &encode_url_base64(&point())).unwrap();
        assert_eq!(hash.as_bytes(), &point());
        assert!(UsernameHash::parse("h", &encode_url_base64(&[1; 31])).is_err());
        assert!(UsernameHash::parse("h", &encode_url_base64(&[1; 33])).is_err());
        let standard = crate::domain::encoding::encode_base64(&[0xfb; 32]);
        assert!(
            UsernameHash::parse("h", &standard).is_err(),
            "standard alphabet"
        );
    }

    #[test]
    fn only_canonical_ristretto_points_are_confirmable() {
        let good = UsernameHash::from_slice("h", &point()).unwrap();
        assert!(good.is_canonical_point());
        assert!(!UsernameHash([0xff; 32]).is_canonical_point());
        let encoded = UsernameHash([0xff; 32]).encode();
        let err = Confirmation::parse(Some(&encoded), Some("AQ"), None).unwrap_err();
        assert!(matches!(err, DomainError::Unprocessable(_)), "{err:?}");
    }

    #[test]
    fn a_confirmation_needs_a_non_empty_proof_and_a_bounded_ciphertext() {
        let hash = encode_url_base64(&point());
        assert!(Confirmation::parse(Some(&hash), None, None).is_err());
        assert!(Confirmation::parse(Some(&hash), Some(""), None).is_err());
        let ok = Confirmation::parse(Some(&hash), Some("AQ"), Some("AQ")).unwrap();
        assert_eq!(ok.encrypted_username.unwrap().as_bytes(), &[1]);
        let long = encode_url_base64(&[1; 129]);
        assert!(Confirmation::parse(Some(&hash), Some("AQ"), Some(&long)).is_err());
        assert!(Confirmation::parse(Some(&hash), Some("AQ"), Some("")).is_err());
    }

    #[test]
    fn a_reservation_offers_one_to_twenty_hashes() {
        let one = encode_url_base64(&point());
        assert!(parse_reserve_hashes(None).is_err());
        assert!(parse_reserve_hashes(Some(&[])).is_err());
        assert_eq!(
            parse_reserve_hashes(Some(&vec![one.clone(); 20]))
                .unwrap()
                .len(),
            20
        );
        assert!(parse_reserve_hashes(Some(&vec![one; 21])).is_err());
    }
}
