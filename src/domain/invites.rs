//! Who may register (`registration = open | token | closed`) and invite tokens: random,
//! shown once to the operator who made them, stored only as a SHA-256, each good for a
//! number of registrations until an optional expiry.

use std::str::FromStr;

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::DomainError;

/// The longest token a registration may carry (ours are 32 characters).
pub const MAX_INVITE_TOKEN_CHARS: usize = 128;
/// The most registrations one token may admit.
pub const MAX_INVITE_USES: u32 = 100_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegistrationMode {
    /// Anyone who reaches the server may register (limited per address).
    #[default]
    Open,
    /// A registration must carry a valid invite token.
    Token,
    /// Nobody may register.
    Closed,
}

impl FromStr for RegistrationMode {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        match s.trim() {
            "open" => Ok(Self::Open),
            "token" => Ok(Self::Token),
            "closed" => Ok(Self::Closed),
            other => Err(DomainError::invalid(format!(
                "registration {other:?}: expected open, token or closed"
            ))),
        }
    }
}

impl RegistrationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Token => "token",
            Self::Closed => "closed",
        }
    }
}

/// A new token: what the operator hands out, and the hash that is stored.
pub fn new_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// An invite as operators list it (never the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub id: i64,
    /// Registrations it admits in all.
    pub uses: u32,
    /// Registrations it admitted so far.
    pub used: u32,
    pub expires_ms: Option<i64>,
    pub created_ms: i64,
    pub revoked: bool,
}

/// What presenting a token came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redeemed {
    /// One use taken from invite `id`.
    Admitted(i64),
    Unknown,
    Expired,
    UsedUp,
    Revoked,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name_only() {
        assert_eq!(
            "token".parse::<RegistrationMode>().unwrap(),
            RegistrationMode::Token
        );
        assert_eq!(
            " closed ".parse::<RegistrationMode>().unwrap(),
            RegistrationMode::Closed
        );
        assert!("invite".parse::<RegistrationMode>().is_err());
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_matches() {
        let (a, hash) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(token_hash(&a), hash);
        assert_ne!(token_hash(&b), hash);
    }
}
