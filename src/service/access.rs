//! Sealed-sender access keys: who may act on an account without authenticating.

use subtle::ConstantTimeEq;

use crate::auth::AuthenticatedDevice;
use crate::domain::accounts::{AccessKey, Account};
use crate::error::AppError;

/// Who acts on another account: an authenticated device, or a holder of the target's
/// access key (sealed sender).
#[derive(Clone, Copy, Debug)]
pub enum Requester {
    Device(AuthenticatedDevice),
    AccessKey(AccessKey),
}

/// Whether `presented` opens `target`: an unrestricted account accepts any 16 bytes, any
/// other compares in constant time with its stored key. An unknown target, an account
/// without a key and a wrong key are the same 401.
pub fn check_access_key(target: Option<&Account>, presented: &AccessKey) -> Result<(), AppError> {
    let Some(account) = target else {
        return Err(AppError::Unauthorized);
    };
    if account.access.unrestricted_unidentified_access {
        return Ok(());
    }
    match &account.access.unidentified_access_key {
        Some(stored) if bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) => Ok(()),
        _ => Err(AppError::Unauthorized),
    }
}
