//! Usernames and username links (PROTOCOL.md 14): reserving, confirming and deleting an
//! account's hash, anonymous lookups by hash and by link handle, each behind its rate limit.
//! Input arrives parsed (`domain::usernames`); the rules of who holds a hash live in the
//! store, the time comes from the app's clock.

use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::domain::clock::Clock;
use crate::domain::ids::Aci;
use crate::domain::usernames::{Confirmation, EncryptedUsername, UsernameHash};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::storage::usernames::{AccountUsername, Confirmed, UsernameStore};

#[derive(Clone)]
pub struct UsernameService {
    store: Arc<dyn UsernameStore>,
    limiter: RateLimiter,
    clock: Clock,
}

impl UsernameService {
    pub fn new(store: Arc<dyn UsernameStore>, limiter: RateLimiter, clock: Clock) -> Self {
        Self {
            store,
            limiter,
            clock,
        }
    }

    fn account_key(caller: AuthenticatedDevice) -> String {
        caller.aci.to_string()
    }

    /// `PUT /v1/accounts/username_hash/reserve`: the first free hash, or 409.
    pub async fn reserve(
        &self,
        caller: AuthenticatedDevice,
        hashes: &[UsernameHash],
    ) -> Result<UsernameHash, AppError> {
        self.limiter
            .check(Limit::UsernameReserve, &Self::account_key(caller))
            .await?;
        self.store
            .reserve(caller.aci, hashes, self.clock.now_ms())
            .await?
            .ok_or_else(|| AppError::Conflict("none of the username hashes is available".into()))
    }

    /// `PUT /v1/accounts/username_hash/confirm`: the hash and the new link handle; 409
    /// without a reservation, 410 when it lapsed and another account took the hash.
    pub async fn confirm(
        &self,
        caller: AuthenticatedDevice,
        confirmation: &Confirmation,
    ) -> Result<Option<Uuid>, AppError> {
        self.limiter
            .check(Limit::UsernameSet, &Self::account_key(caller))
            .await?;
        let confirmed = self
            .store
            .confirm(
                caller.aci,
                confirmation.hash,
                confirmation.encrypted_username.as_ref(),
                self.clock.now_ms(),
            )
            .await?;
        match confirmed {
            Confirmed::Confirmed { link_handle } => Ok(link_handle),
            Confirmed::NoReservation => Err(AppError::Conflict(
                "the account has no reservation for this username hash".into(),
            )),
            Confirmed::Taken => Err(AppError::Gone(
                "the reservation lapsed and the username hash was taken".into(),
            )),
        }
    }

    /// `DELETE /v1/accounts/username_hash`: the hash goes on hold, the link goes.
    pub async fn delete(&self, caller: AuthenticatedDevice) -> Result<(), AppError> {
        self.limiter
            .check(Limit::UsernameSet, &Self::account_key(caller))
            .await?;
        Ok(self.store.clear(caller.aci, self.clock.now_ms()).await?)
    }

    /// `GET /v1/accounts/username_hash/{hash}` (anonymous): the rate limit is taken before
    /// the hash is parsed, as in Signal; 422 for a bad hash, 404 for an unknown one.
    pub async fn lookup(&self, client: IpAddr, hash: &str) -> Result<Aci, AppError> {
        self.limiter
            .check(Limit::UsernameLookup, &self.limiter.address_key(client))
            .await?;
        let hash = UsernameHash::parse("usernameHash", hash)?;
        self.store
            .lookup(hash)
            .await?
            .ok_or_else(|| AppError::NotFound("no account has this username hash".into()))
    }

    /// `PUT /v1/accounts/username_link`: the handle; 409 without a username.
    pub async fn set_link(
        &self,
        caller: AuthenticatedDevice,
        value: &EncryptedUsername,
        keep_handle: bool,
    ) -> Result<Uuid, AppError> {
        self.limiter
            .check(Limit::UsernameLinkOperation, &Self::account_key(caller))
            .await?;
        self.store
            .set_link(caller.aci, value, keep_handle)
            .await?
            .ok_or_else(|| AppError::Conflict("the account has no username".into()))
    }

    /// `DELETE /v1/accounts/username_link`.
    pub async fn delete_link(&self, caller: AuthenticatedDevice) -> Result<(), AppError> {
        self.limiter
            .check(Limit::UsernameLinkOperation, &Self::account_key(caller))
            .await?;
        Ok(self.store.clear_link(caller.aci).await?)
    }

    /// `GET /v1/accounts/username_link/{handle}` (anonymous): 404 for an unknown handle and
    /// for one that is not a UUID.
    pub async fn link(&self, client: IpAddr, handle: &str) -> Result<EncryptedUsername, AppError> {
        self.limiter
            .check(
                Limit::UsernameLinkLookupPerIp,
                &self.limiter.address_key(client),
            )
            .await?;
        let not_found = || AppError::NotFound("no username link has this handle".into());
        let handle = crate::domain::usernames::parse_link_handle(handle).ok_or_else(not_found)?;
        self.store.link(handle).await?.ok_or_else(not_found)
    }

    /// The account's username hash and link handle (whoami).
    pub async fn of_account(&self, aci: Aci) -> Result<AccountUsername, AppError> {
        Ok(self.store.username(aci).await?)
    }

    /// Frees everything of a deleted account at once (Postgres drops it with the account
    /// too; memory keeps it apart).
    pub async fn forget(&self, aci: Aci) -> Result<(), AppError> {
        Ok(self.store.forget(aci).await?)
    }
}
