//! Username hashes and links (PROTOCOL.md 14.2): which account holds, has reserved or keeps
//! on hold each hash, unique whatever the concurrency and across pods, and each account's
//! link handle and encrypted username. The clock is passed in, never read here.

use async_trait::async_trait;
use uuid::Uuid;

use super::StorageResult;
use crate::domain::ids::Aci;
use crate::domain::usernames::{EncryptedUsername, UsernameHash};

/// What a confirmation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// The hash is the account's now (or already was), with this link handle.
    Confirmed { link_handle: Option<Uuid> },
    /// The account has no reservation for this hash (409).
    NoReservation,
    /// The reservation lapsed and another account holds the hash now (410).
    Taken,
}

/// An account's username and link, as whoami shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountUsername {
    pub hash: Option<UsernameHash>,
    pub link_handle: Option<Uuid>,
}

#[async_trait]
pub trait UsernameStore: Send + Sync {
    /// Reserves for `aci` the first of `hashes` that is free at `now_ms` (no row; or a row
    /// of this account that is not its confirmed one; or another account's lapsed
    /// reservation or hold) until `now_ms + RESERVATION_MS`; the account's previous
    /// reservation is let go. When the account's confirmed hash is among `hashes` it is
    /// returned and nothing changes. `None` when every hash is taken.
    async fn reserve(
        &self,
        aci: Aci,
        hashes: &[UsernameHash],
        now_ms: i64,
    ) -> StorageResult<Option<UsernameHash>>;

    /// Makes `hash`, which the account reserved (even if the reservation lapsed, while no
    /// other account took it), the account's username; the previous one goes on hold for
    /// `HOLD_MS` (at most `MAX_HOLDS`, the oldest released first). With `encrypted` the link
    /// is set with a new random handle (a reclaimable hash keeps its old one), without it the
    /// link is cleared. Confirming the account's current hash changes nothing.
    async fn confirm(
        &self,
        aci: Aci,
        hash: UsernameHash,
        encrypted: Option<&EncryptedUsername>,
        now_ms: i64,
    ) -> StorageResult<Confirmed>;

    /// Deletes the account's username (it goes on hold, as in `confirm`) and its link.
    async fn clear(&self, aci: Aci, now_ms: i64) -> StorageResult<()>;

    /// The account whose confirmed username `hash` is.
    async fn lookup(&self, hash: UsernameHash) -> StorageResult<Option<Aci>>;

    async fn username(&self, aci: Aci) -> StorageResult<AccountUsername>;

    /// Sets the account's link value; the handle is kept when `keep_handle` and one exists,
    /// else a new random one. `None` (nothing stored) when the account has no username.
    async fn set_link(
        &self,
        aci: Aci,
        encrypted: &EncryptedUsername,
        keep_handle: bool,
    ) -> StorageResult<Option<Uuid>>;

    /// Clears the account's link handle and value.
    async fn clear_link(&self, aci: Aci) -> StorageResult<()>;

    /// The link value behind `handle`.
    async fn link(&self, handle: Uuid) -> StorageResult<Option<EncryptedUsername>>;

    /// Forgets everything of the account (it was deleted): its hash, reservation, holds and
    /// link are free at once.
    async fn forget(&self, aci: Aci) -> StorageResult<()>;
}
