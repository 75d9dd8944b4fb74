//! Username hashes and links in Postgres (`usernames`, `account_usernames`): the hash is
//! the primary key, so two accounts (on any pods) racing for one hash meet on its row, and
//! an upsert whose condition fails leaves it to its holder. Each operation is one
//! transaction that first locks the account's own row, so one account's operations never
//! interleave. Rows go with the account by their foreign keys.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{PgStore, corrupt, pg_error};
use crate::domain::ids::Aci;
use crate::domain::usernames::{
    EncryptedUsername, HOLD_MS, MAX_HOLDS, RESERVATION_MS, UsernameHash,
};
use crate::storage::StorageResult;
use crate::storage::usernames::{AccountUsername, Confirmed, UsernameStore};

/// How often an operation that lost a deadlock (two reservations locking each other's
/// candidate rows) is run again before its error is returned.
const ATTEMPTS: usize = 5;

/// Whether another account visibly holds the row of `$1` at `$3` (`$2` the asking account):
/// read without a lock, so a reservation skips taken hashes instead of locking their rows
/// (an upsert locks the row it conflicts with even when its condition fails, and racers
/// offering the same hashes in other orders would then wait on each other).
const TAKEN: &str = "SELECT EXISTS (SELECT 1 FROM usernames WHERE hash = $1 AND (confirmed OR \
     (aci <> $2 AND ((reserved_until_ms IS NOT NULL AND reserved_until_ms > $3) OR \
                     (held_until_ms IS NOT NULL AND held_until_ms > $3)))))";

/// The condition under which `EXCLUDED.aci` may take an existing row at `$now`: not anyone's
/// username, and the account's own row or another's lapsed reservation and hold.
const FREE: &str = "NOT usernames.confirmed AND (usernames.aci = EXCLUDED.aci OR \
     ((usernames.reserved_until_ms IS NULL OR usernames.reserved_until_ms <= $3) AND \
      (usernames.held_until_ms IS NULL OR usernames.held_until_ms <= $3)))";

fn hash_of(bytes: Vec<u8>) -> StorageResult<UsernameHash> {
    UsernameHash::from_slice("username hash", &bytes).map_err(|e| corrupt("username hash", e))
}

fn lost_deadlock(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Locks (creating it if need be) the account's row; its reservation and link handle.
async fn lock_account(
    tx: &Transaction<'_>,
    aci: Aci,
) -> Result<(Option<Vec<u8>>, Option<Uuid>), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO account_usernames (aci) VALUES ($1) ON CONFLICT (aci) DO NOTHING",
        &[&aci.uuid()],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT reserved_hash, link_handle FROM account_usernames WHERE aci = $1 FOR UPDATE",
            &[&aci.uuid()],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

async fn confirmed_of(
    client: &Transaction<'_>,
    aci: Aci,
) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT hash FROM usernames WHERE aci = $1 AND confirmed",
            &[&aci.uuid()],
        )
        .await?
        .map(|row| row.get(0)))
}

/// Puts the account's username on hold and keeps its newest `MAX_HOLDS` holds.
async fn hold_current(
    tx: &Transaction<'_>,
    aci: Aci,
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE usernames SET confirmed = FALSE, reserved_until_ms = NULL, held_until_ms = $2 \
         WHERE aci = $1 AND confirmed",
        &[&aci.uuid(), &(now_ms + HOLD_MS)],
    )
    .await?;
    tx.execute(
        "DELETE FROM usernames WHERE aci = $1 AND NOT confirmed AND held_until_ms IS NOT NULL \
         AND (held_until_ms <= $2 OR hash NOT IN (SELECT hash FROM usernames WHERE aci = $1 \
              AND NOT confirmed AND held_until_ms > $2 ORDER BY held_until_ms DESC LIMIT $3))",
        &[&aci.uuid(), &now_ms, &(MAX_HOLDS as i64)],
    )
    .await?;
    Ok(())
}

/// How a transaction ends: kept, or undone with its answer still returned.
enum Tx<T> {
    Commit(T),
    Rollback(T),
}

type TxFuture<'a, T> = futures_util::future::BoxFuture<'a, Result<Tx<T>, tokio_postgres::Error>>;

impl PgStore {
    /// Runs `op` in a transaction, again when it lost a deadlock.
    async fn in_transaction<T, F>(&self, op: F) -> StorageResult<T>
    where
        F: for<'a> Fn(&'a Transaction<'a>) -> TxFuture<'a, T> + Send + Sync,
        T: Send,
    {
        let mut client = self.client().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = client.transaction().await.map_err(pg_error)?;
            let result = match op(&tx).await {
                Ok(Tx::Commit(value)) => tx.commit().await.map(|()| value),
                Ok(Tx::Rollback(value)) => tx.rollback().await.map(|()| value),
                Err(e) => Err(e),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(e) if lost_deadlock(&e) && attempt < ATTEMPTS => continue,
                Err(e) => return Err(pg_error(e)),
            }
        }
    }
}

#[async_trait]
impl UsernameStore for PgStore {
    async fn reserve(
        &self,
        aci: Aci,
        hashes: &[UsernameHash],
        now_ms: i64,
    ) -> StorageResult<Option<UsernameHash>> {
        let candidates: Vec<Vec<u8>> = hashes.iter().map(|h| h.as_bytes().to_vec()).collect();
        let reserved = self
            .in_transaction(|tx| {
                let candidates = candidates.clone();
                Box::pin(async move {
                    let (previous, _) = lock_account(tx, aci).await?;
                    if let Some(current) = confirmed_of(tx, aci).await?
                        && candidates.contains(&current)
                    {
                        return Ok(Tx::Commit(Some(current)));
                    }
                    let take = tx
                        .prepare_cached(&format!(
                            "INSERT INTO usernames (hash, aci, reserved_until_ms) \
                             VALUES ($1, $2, $4) ON CONFLICT (hash) DO UPDATE SET \
                             aci = EXCLUDED.aci, reserved_until_ms = EXCLUDED.reserved_until_ms, \
                             held_until_ms = CASE WHEN usernames.aci = EXCLUDED.aci \
                                 THEN usernames.held_until_ms END, \
                             reclaimable = usernames.reclaimable AND usernames.aci = EXCLUDED.aci \
                             WHERE {FREE} RETURNING hash"
                        ))
                        .await?;
                    let taken_by_another = tx.prepare_cached(TAKEN).await?;
                    for hash in &candidates {
                        let visibly_taken: bool = tx
                            .query_one(&taken_by_another, &[hash, &aci.uuid(), &now_ms])
                            .await?
                            .get(0);
                        if visibly_taken {
                            continue;
                        }
                        let until = now_ms + RESERVATION_MS;
                        let taken = tx
                            .query_opt(&take, &[hash, &aci.uuid(), &now_ms, &until])
                            .await?;
                        if taken.is_none() {
                            continue;
                        }
                        if let Some(previous) = previous.filter(|p| p != hash) {
                            // The earlier reservation goes; a hold stays a hold.
                            tx.execute(
                                "DELETE FROM usernames WHERE hash = $1 AND aci = $2 \
                                 AND NOT confirmed AND (held_until_ms IS NULL OR held_until_ms <= $3)",
                                &[&previous, &aci.uuid(), &now_ms],
                            )
                            .await?;
                            tx.execute(
                                "UPDATE usernames SET reserved_until_ms = NULL \
                                 WHERE hash = $1 AND aci = $2 AND NOT confirmed",
                                &[&previous, &aci.uuid()],
                            )
                            .await?;
                        }
                        tx.execute(
                            "UPDATE account_usernames SET reserved_hash = $2 WHERE aci = $1",
                            &[&aci.uuid(), hash],
                        )
                        .await?;
                        return Ok(Tx::Commit(Some(hash.clone())));
                    }
                    Ok(Tx::Commit(None))
                })
            })
            .await?;
        reserved.map(hash_of).transpose()
    }

    async fn confirm(
        &self,
        aci: Aci,
        hash: UsernameHash,
        encrypted: Option<&EncryptedUsername>,
        now_ms: i64,
    ) -> StorageResult<Confirmed> {
        let bytes = hash.as_bytes().to_vec();
        let value = encrypted.map(|e| e.as_bytes().to_vec());
        self.in_transaction(|tx| {
            let (bytes, value) = (bytes.clone(), value.clone());
            Box::pin(async move {
                let (reserved, old_handle) = lock_account(tx, aci).await?;
                if confirmed_of(tx, aci).await?.as_ref() == Some(&bytes) {
                    return Ok(Tx::Commit(Confirmed::Confirmed {
                        link_handle: old_handle,
                    }));
                }
                if reserved.as_ref() != Some(&bytes) {
                    return Ok(Tx::Commit(Confirmed::NoReservation));
                }
                let reclaimable = tx
                    .query_opt(
                        "SELECT reclaimable FROM usernames WHERE hash = $1 AND aci = $2",
                        &[&bytes, &aci.uuid()],
                    )
                    .await?
                    .is_some_and(|row| row.get::<_, bool>(0));
                hold_current(tx, aci, now_ms).await?;
                let taken = tx
                    .query_opt(
                        &format!(
                            "INSERT INTO usernames (hash, aci, confirmed) VALUES ($1, $2, TRUE) \
                             ON CONFLICT (hash) DO UPDATE SET aci = EXCLUDED.aci, confirmed = TRUE, \
                             reserved_until_ms = NULL, held_until_ms = NULL, reclaimable = FALSE \
                             WHERE {FREE} RETURNING hash"
                        ),
                        &[&bytes, &aci.uuid(), &now_ms],
                    )
                    .await?;
                if taken.is_none() {
                    // Nothing of this transaction is kept: the old username stays confirmed.
                    return Ok(Tx::Rollback(Confirmed::Taken));
                }
                let link_handle = value
                    .as_ref()
                    .map(|_| old_handle.filter(|_| reclaimable).unwrap_or_else(Uuid::new_v4));
                tx.execute(
                    "UPDATE account_usernames SET reserved_hash = NULL, link_handle = $2, \
                     encrypted_username = $3 WHERE aci = $1",
                    &[&aci.uuid(), &link_handle, &value],
                )
                .await?;
                Ok(Tx::Commit(Confirmed::Confirmed { link_handle }))
            })
        })
        .await
    }

    async fn clear(&self, aci: Aci, now_ms: i64) -> StorageResult<()> {
        self.in_transaction(|tx| {
            Box::pin(async move {
                lock_account(tx, aci).await?;
                hold_current(tx, aci, now_ms).await?;
                tx.execute(
                    "UPDATE account_usernames SET link_handle = NULL, encrypted_username = NULL \
                     WHERE aci = $1",
                    &[&aci.uuid()],
                )
                .await?;
                Ok(Tx::Commit(()))
            })
        })
        .await
    }

    async fn lookup(&self, hash: UsernameHash) -> StorageResult<Option<Aci>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT aci FROM usernames WHERE hash = $1 AND confirmed")
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(&statement, &[&hash.as_bytes().as_slice()])
            .await
            .map_err(pg_error)?;
        Ok(row.map(|row| Aci::from_uuid(row.get(0))))
    }

    async fn username(&self, aci: Aci) -> StorageResult<AccountUsername> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT (SELECT hash FROM usernames WHERE aci = $1 AND confirmed), \
                        (SELECT link_handle FROM account_usernames WHERE aci = $1)",
                &[&aci.uuid()],
            )
            .await
            .map_err(pg_error)?;
        let hash: Option<Vec<u8>> = row.get(0);
        Ok(AccountUsername {
            hash: hash.map(hash_of).transpose()?,
            link_handle: row.get(1),
        })
    }

    async fn set_link(
        &self,
        aci: Aci,
        encrypted: &EncryptedUsername,
        keep_handle: bool,
    ) -> StorageResult<Option<Uuid>> {
        let value = encrypted.as_bytes().to_vec();
        self.in_transaction(|tx| {
            let value = value.clone();
            Box::pin(async move {
                let (_, old_handle) = lock_account(tx, aci).await?;
                if confirmed_of(tx, aci).await?.is_none() {
                    return Ok(Tx::Commit(None));
                }
                let handle = old_handle
                    .filter(|_| keep_handle)
                    .unwrap_or_else(Uuid::new_v4);
                tx.execute(
                    "UPDATE account_usernames SET link_handle = $2, encrypted_username = $3 \
                     WHERE aci = $1",
                    &[&aci.uuid(), &handle, &value],
                )
                .await?;
                Ok(Tx::Commit(Some(handle)))
            })
        })
        .await
    }

    async fn clear_link(&self, aci: Aci) -> StorageResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE account_usernames SET link_handle = NULL, encrypted_username = NULL \
                 WHERE aci = $1",
                &[&aci.uuid()],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn link(&self, handle: Uuid) -> StorageResult<Option<EncryptedUsername>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT encrypted_username FROM account_usernames WHERE link_handle = $1",
                &[&handle],
            )
            .await
            .map_err(pg_error)?;
        row.map(|row| {
            EncryptedUsername::from_vec("encrypted username", row.get(0))
                .map_err(|e| corrupt("encrypted username", e))
        })
        .transpose()
    }

    async fn forget(&self, aci: Aci) -> StorageResult<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM usernames WHERE aci = $1", &[&aci.uuid()])
            .await
            .map_err(pg_error)?;
        client
            .execute(
                "DELETE FROM account_usernames WHERE aci = $1",
                &[&aci.uuid()],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}
