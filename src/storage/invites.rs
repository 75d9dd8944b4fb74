//! Invite tokens (Postgres, or memory): stored by hash; redeeming one takes a use
//! atomically, so a token for one registration admits exactly one however many race.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::invites::{Invite, Redeemed};

#[async_trait]
pub trait InviteStore: Send + Sync {
    /// Stores a new invite for `uses` registrations; its id.
    async fn create(
        &self,
        hash: &[u8; 32],
        uses: u32,
        expires_ms: Option<i64>,
        created_ms: i64,
    ) -> StorageResult<i64>;

    /// Every invite, oldest first.
    async fn list(&self) -> StorageResult<Vec<Invite>>;

    /// Revokes invite `id`; false when there is none.
    async fn revoke(&self, id: i64) -> StorageResult<bool>;

    /// Takes one use of the invite with this hash, if it is valid at `now_ms`.
    async fn redeem(&self, hash: &[u8; 32], now_ms: i64) -> StorageResult<Redeemed>;

    /// Gives back a use taken by a registration that then failed.
    async fn give_back(&self, id: i64) -> StorageResult<()>;
}
