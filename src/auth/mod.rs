//! Authentication: Basic credentials, argon2id password hashing (always off the async
//! threads), the verified-credential cache, and the extractor that makes "this handler needs
//! an authenticated device" a type in its signature.

pub mod basic;
pub mod credentials;
pub mod extract;
pub mod password;

pub use credentials::Authenticator;
pub use extract::{AuthenticatedDevice, ClientAddr, NewPassword};
