//! Sealed-sender access keys: who may act on an account without authenticating.

use subtle::ConstantTimeEq;

use crate::domain::accounts::{AccessKey, Account};
use crate::error::AppError;
use crate::metrics::Metrics;

pub use crate::identity::Requester;

/// Whether `presented` opens `target`: an unrestricted account accepts any 16 bytes, any
/// other compares in constant time with its stored key. An unknown target, an account
/// without a key and a wrong key are the same 401.
pub fn check_access_key(
    target: Option<&Account>,
    presented: &AccessKey,
    metrics: &Metrics,
) -> Result<(), AppError> {
    let opens = target.is_some_and(|account| {
        account.access.unrestricted_unidentified_access
            || account
                .access
                .unidentified_access_key
                .is_some_and(|stored| bool::from(stored.as_bytes().ct_eq(presented.as_bytes())))
    });
    if opens {
        Ok(())
    } else {
        metrics.access_key_failures.inc();
        Err(AppError::Unauthorized)
    }
}

/// The key a multi-recipient send must present: the XOR of its recipients' access keys,
/// unrestricted recipients left out. `None` when every recipient is unrestricted (any 16
/// bytes do); an error when a restricted recipient has no key (nothing can open it).
pub fn combined_access_key<'a>(
    recipients: impl IntoIterator<Item = &'a Account>,
) -> Result<Option<[u8; 16]>, AppError> {
    let mut combined: Option<[u8; 16]> = None;
    for account in recipients {
        if account.access.unrestricted_unidentified_access {
            continue;
        }
        let key = account
            .access
            .unidentified_access_key
            .ok_or(AppError::Unauthorized)?;
        let acc = combined.get_or_insert([0u8; 16]);
        for (a, k) in acc.iter_mut().zip(key.as_bytes()) {
            *a ^= k;
        }
    }
    Ok(combined)
}
