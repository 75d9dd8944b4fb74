//! Authentication: Basic credentials, argon2id password hashing (always off the async
//! threads) and the verified-credential cache. The extractors that make "this handler needs
//! an authenticated device" a type in its signature are `api::extract`'s; the types they
//! produce are `identity`'s.

pub mod basic;
pub mod credentials;
pub mod extract;
pub mod password;

pub use crate::identity::{AuthenticatedDevice, ClientAddr};
pub use credentials::Authenticator;
