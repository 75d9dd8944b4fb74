//! Spam reports (PROTOCOL.md 17): what makes a report count. When an identified message is
//! queued for another account, a hash of its GUID and sender is kept for a week; a report
//! counts only if it names a message whose hash is still there, and uses it up. Sealed
//! messages leave no hash, so reports of them never count: the server never learns who
//! sent them.

use std::time::Duration;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::DomainError;
use super::ids::Aci;

/// How long a message stays reportable (Signal's `reportTtl`).
pub const REPORT_HASH_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the set of accounts that reported one sender lives after the last report
/// (Signal's `counterTtl`).
pub const REPORTERS_TTL: Duration = Duration::from_secs(24 * 3600);
/// The spam-report token a client may send is opaque; this bounds what is stored.
pub const MAX_REPORT_TOKEN_BYTES: usize = 1024;

/// `SHA-256(16-byte GUID ‖ UTF-8 of the sender's service id)`, as Signal's
/// `ReportMessageManager` makes it.
pub fn report_hash(guid: Uuid, source: Aci) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(guid.as_bytes());
    hash.update(source.to_string().as_bytes());
    hash.finalize().into()
}

/// A report that counted, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpamReport {
    pub reporter: Aci,
    pub source: Aci,
    pub guid: Uuid,
    /// The client's spam-report token, when it sent one (empty counts as none).
    pub token: Option<Vec<u8>>,
    pub reported_at_ms: i64,
}

/// The optional token: empty means none; at most [`MAX_REPORT_TOKEN_BYTES`].
pub fn check_token(token: Vec<u8>) -> Result<Option<Vec<u8>>, DomainError> {
    if token.len() > MAX_REPORT_TOKEN_BYTES {
        return Err(DomainError::invalid(format!(
            "token must be at most {MAX_REPORT_TOKEN_BYTES} bytes"
        )));
    }
    Ok(Some(token).filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_the_guid_and_the_senders_service_id_string() {
        let guid = Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
        let source: Aci = "a1b2c3d4-0000-4000-8000-000000000001".parse().unwrap();
        let mut expected = Sha256::new();
        expected.update(guid.as_bytes());
        expected.update(b"a1b2c3d4-0000-4000-8000-000000000001");
        let expected: [u8; 32] = expected.finalize().into();
        assert_eq!(report_hash(guid, source), expected);
        let other: Aci = "a1b2c3d4-0000-4000-8000-000000000002".parse().unwrap();
        assert_ne!(report_hash(guid, other), expected);
    }

    #[test]
    fn an_empty_token_is_none_and_a_long_one_is_refused() {
        assert_eq!(check_token(Vec::new()).unwrap(), None);
        assert_eq!(check_token(vec![1; 8]).unwrap(), Some(vec![1; 8]));
        assert!(check_token(vec![0; MAX_REPORT_TOKEN_BYTES + 1]).is_err());
    }
}
