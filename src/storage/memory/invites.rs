//! Invite tokens in memory: the Postgres rules over a map.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::domain::invites::{Invite, Redeemed};
use crate::storage::invites::InviteStore;
use crate::storage::{StorageError, StorageResult};

/// Invites by id, each with its token's hash.
type Invites = BTreeMap<i64, ([u8; 32], Invite)>;

#[derive(Default)]
pub struct MemoryInviteStore {
    invites: Mutex<Invites>,
}

impl MemoryInviteStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StorageResult<MutexGuard<'_, Invites>> {
        self.invites
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("invite lock poisoned")))
    }
}

#[async_trait]
impl InviteStore for MemoryInviteStore {
    async fn create(
        &self,
        hash: &[u8; 32],
        uses: u32,
        expires_ms: Option<i64>,
        created_ms: i64,
    ) -> StorageResult<i64> {
        let mut invites = self.lock()?;
        if invites.values().any(|(h, _)| h == hash) {
            return Err(StorageError::Backend(anyhow::anyhow!(
                "duplicate invite hash"
            )));
        }
        let id = invites.keys().next_back().map_or(1, |last| last + 1);
        let invite = Invite {
            id,
            uses,
            used: 0,
            expires_ms,
            created_ms,
            revoked: false,
        };
        invites.insert(id, (*hash, invite));
        Ok(id)
    }

    async fn list(&self) -> StorageResult<Vec<Invite>> {
        Ok(self.lock()?.values().map(|(_, i)| i.clone()).collect())
    }

    async fn revoke(&self, id: i64) -> StorageResult<bool> {
        Ok(match self.lock()?.get_mut(&id) {
            Some((_, invite)) => {
                invite.revoked = true;
                true
            }
            None => false,
        })
    }

    async fn redeem(&self, hash: &[u8; 32], now_ms: i64) -> StorageResult<Redeemed> {
        let mut invites = self.lock()?;
        let Some((_, invite)) = invites.values_mut().find(|(h, _)| h == hash) else {
            return Ok(Redeemed::Unknown);
        };
        Ok(if invite.revoked {
            Redeemed::Revoked
        } else if invite.expires_ms.is_some_and(|e| e <= now_ms) {
            Redeemed::Expired
        } else if invite.used >= invite.uses {
            Redeemed::UsedUp
        } else {
            invite.used += 1;
            Redeemed::Admitted(invite.id)
        })
    }

    async fn give_back(&self, id: i64) -> StorageResult<()> {
        if let Some((_, invite)) = self.lock()?.get_mut(&id) {
            invite.used = invite.used.saturating_sub(1);
        }
        Ok(())
    }
}
