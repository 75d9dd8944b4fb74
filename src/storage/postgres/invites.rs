//! Invite tokens in Postgres (`invites`): a use is taken by one conditional UPDATE.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgStore, pg_error};
use crate::domain::invites::{Invite, Redeemed};
use crate::storage::StorageResult;
use crate::storage::invites::InviteStore;

fn invite(row: &Row) -> Invite {
    Invite {
        id: row.get("id"),
        uses: row.get::<_, i32>("uses").max(0) as u32,
        used: row.get::<_, i32>("used").max(0) as u32,
        expires_ms: row.get("expires_ms"),
        created_ms: row.get("created_ms"),
        revoked: row.get("revoked"),
    }
}

#[async_trait]
impl InviteStore for PgStore {
    async fn create(
        &self,
        hash: &[u8; 32],
        uses: u32,
        expires_ms: Option<i64>,
        created_ms: i64,
    ) -> StorageResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO invites (token_hash, uses, expires_ms, created_ms) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[
                    &hash.as_slice(),
                    &(uses.min(i32::MAX as u32) as i32),
                    &expires_ms,
                    &created_ms,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    async fn list(&self) -> StorageResult<Vec<Invite>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, uses, used, expires_ms, created_ms, revoked FROM invites ORDER BY id",
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(invite).collect())
    }

    async fn revoke(&self, id: i64) -> StorageResult<bool> {
        let client = self.client().await?;
        let updated = client
            .execute("UPDATE invites SET revoked = TRUE WHERE id = $1", &[&id])
            .await
            .map_err(pg_error)?;
        Ok(updated == 1)
    }

    async fn redeem(&self, hash: &[u8; 32], now_ms: i64) -> StorageResult<Redeemed> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE invites SET used = used + 1 WHERE token_hash = $1 AND NOT revoked \
                 AND used < uses AND (expires_ms IS NULL OR expires_ms > $2) RETURNING id",
            )
            .await
            .map_err(pg_error)?;
        if let Some(row) = client
            .query_opt(&statement, &[&hash.as_slice(), &now_ms])
            .await
            .map_err(pg_error)?
        {
            return Ok(Redeemed::Admitted(row.get(0)));
        }
        let row = client
            .query_opt(
                "SELECT id, uses, used, expires_ms, created_ms, revoked FROM invites \
                 WHERE token_hash = $1",
                &[&hash.as_slice()],
            )
            .await
            .map_err(pg_error)?;
        Ok(match row.as_ref().map(invite) {
            None => Redeemed::Unknown,
            Some(i) if i.revoked => Redeemed::Revoked,
            Some(i) if i.expires_ms.is_some_and(|e| e <= now_ms) => Redeemed::Expired,
            Some(_) => Redeemed::UsedUp,
        })
    }

    async fn give_back(&self, id: i64) -> StorageResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE invites SET used = used - 1 WHERE id = $1 AND used > 0",
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}
