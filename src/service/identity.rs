//! Who an account is, as `whoami` and the registration answer tell its own devices
//! (`AccountIdentityResponse`, PROTOCOL.md 16.1), and whether an account exists at all
//! (`HEAD /v1/accounts/account/{serviceId}`, 16.3). No HTTP types.

use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::domain::accounts::{Account, AuthCredentialSalt};
use crate::domain::ids::Aci;
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::storage::AccountStore;

/// What an account's own devices learn about it. One value, built by
/// [`AccountIdentity::of`], for `whoami` and the registration answer alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountIdentity {
    pub aci: Aci,
    /// The confirmed username's hash (32 bytes) and the username link's handle: section 14's
    /// (usernames) to fill, in [`AccountIdentity::with_username`]; `None` until then.
    pub username_hash: Option<[u8; 32]>,
    pub username_link_handle: Option<Uuid>,
    /// Always `false` in sealpost (PROTOCOL.md 16.1): there is no storage service.
    pub storage_capable: bool,
    pub auth_credential_salt: AuthCredentialSalt,
}

impl AccountIdentity {
    /// The identity of `account`, without username (see [`AccountIdentity::with_username`]).
    pub fn of(account: &Account) -> Self {
        Self {
            aci: account.aci,
            username_hash: None,
            username_link_handle: None,
            storage_capable: false,
            auth_credential_salt: account.auth_credential_salt,
        }
    }

    /// The one place the username fields are set (section 14's store provides them).
    pub fn with_username(
        mut self,
        username_hash: Option<[u8; 32]>,
        username_link_handle: Option<Uuid>,
    ) -> Self {
        self.username_hash = username_hash;
        self.username_link_handle = username_link_handle;
        self
    }
}

#[derive(Clone)]
pub struct IdentityService {
    accounts: Arc<dyn AccountStore>,
    limiter: RateLimiter,
    /// Where whoami's username hash and link handle come from.
    usernames: super::usernames::UsernameService,
}

impl IdentityService {
    pub fn new(
        accounts: Arc<dyn AccountStore>,
        limiter: RateLimiter,
        usernames: super::usernames::UsernameService,
    ) -> Self {
        Self {
            accounts,
            limiter,
            usernames,
        }
    }

    /// The caller's account identity (`GET /v1/accounts/whoami`).
    pub async fn whoami(&self, caller: AuthenticatedDevice) -> Result<AccountIdentity, AppError> {
        let account = self
            .accounts
            .account(caller.aci)
            .await?
            // Deleted between authentication and now: the credentials no longer hold.
            .ok_or(AppError::Unauthorized)?;
        let username = self.usernames.of_account(caller.aci).await?;
        Ok(AccountIdentity::of(&account)
            .with_username(username.hash.map(|h| *h.as_bytes()), username.link_handle))
    }

    /// Whether an account exists, for an anonymous caller: `checkAccountExistence` per
    /// client address first, so that the answer cannot be enumerated quickly.
    pub async fn exists(&self, client: IpAddr, aci: Aci) -> Result<bool, AppError> {
        self.limiter
            .check(
                Limit::CheckAccountExistence,
                &self.limiter.address_key(client),
            )
            .await?;
        Ok(self.accounts.account(aci).await?.is_some())
    }
}
