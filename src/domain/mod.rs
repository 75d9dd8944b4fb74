//! The domain: identifiers, keys, signatures and account rules. Parsing and validation
//! only; no IO, no HTTP, no storage.

pub mod accounts;
pub mod attachments;
pub mod calling;
pub mod certificates;
pub mod clock;
pub mod created_at;
pub mod encoding;
pub mod ids;
pub mod invites;
pub mod keys;
pub mod messages;
pub mod multi_recipient;
pub mod post_policy;
pub mod profiles;
pub mod push;
pub mod queued;
pub mod reports;
pub mod uploads;
pub mod usernames;
pub mod xeddsa;

/// Why client input was refused. `Invalid` is a 400; `BadSignature` and `Unprocessable` (a
/// push registration Signal's validation refuses) are 422s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    Unprocessable(String),
}

impl DomainError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    pub fn unprocessable(msg: impl Into<String>) -> Self {
        Self::Unprocessable(msg.into())
    }
}
