//! Postgres backends: accounts, devices, keys and server secrets. Pools come from deadpool-postgres;
//! statements are prepared once per connection (`prepare_cached`); the schema lives in
//! `migrations/` and is applied by refinery under an advisory lock, so pods starting
//! together migrate once.

mod accounts;
mod invites;
mod keys;
mod profiles;
mod push;
mod reports;
mod secrets;
mod usernames;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    ManagerConfig, Pool, PoolConfig, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use tokio_postgres::NoTls;

use crate::storage::{Probe, StorageError, StorageResult};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Every store that lives in Postgres, over one pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

/// An arbitrary constant naming sealpost's migration lock.
const MIGRATION_LOCK: i64 = 0x5ea1_9057;

impl PgStore {
    /// Builds the pool; connections are made on first use, so this does not need the
    /// database to be up.
    pub fn connect(url: &str, max_size: usize) -> anyhow::Result<Self> {
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url.to_owned());
        config.manager = Some(ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        });
        let mut pool = PoolConfig::new(max_size);
        pool.timeouts = Timeouts {
            wait: Some(Duration::from_secs(5)),
            create: Some(Duration::from_secs(5)),
            recycle: Some(Duration::from_secs(5)),
        };
        config.pool = Some(pool);
        let pool = config.create_pool(Some(Runtime::Tokio1), NoTls)?;
        Ok(Self { pool })
    }

    /// Applies pending migrations; safe to run from several processes at once.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let mut client = self.pool.get().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let report = embedded::migrations::runner()
            .run_async(&mut **client)
            .await;
        // Unlock even when migrating failed; the session ending would release it too.
        let unlock = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        let report = report?;
        unlock?;
        Ok(report.applied_migrations().len())
    }

    async fn client(&self) -> StorageResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

fn pool_error(e: PoolError) -> StorageError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        other => StorageError::Unavailable(other.into()),
    }
}

/// Connection-level failures mean "unavailable"; so do the errors of a server that is
/// starting, shutting down, recovering from a crash or out of connections (the fault suite
/// met "the database system is starting up" as a 500 before). Any other server-side error
/// is a backend error.
fn pg_error(e: tokio_postgres::Error) -> StorageError {
    match e.as_db_error() {
        Some(db) if !e.is_closed() && !transient(db.code().code()) => {
            StorageError::Backend(e.into())
        }
        _ => StorageError::Unavailable(e.into()),
    }
}

/// SQLSTATE classes 08 (connection exception), 53 (insufficient resources, e.g. too many
/// connections) and 57 (operator intervention: admin or crash shutdown, cannot connect now).
fn transient(sqlstate: &str) -> bool {
    ["08", "53", "57"]
        .iter()
        .any(|class| sqlstate.starts_with(class))
}

/// Stored data that does not parse back: a bug or a corrupted row, never "not found".
fn corrupt(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(anyhow::anyhow!("stored {what} does not parse: {e}"))
}

#[async_trait]
impl Probe for PgStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StorageResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg_error)?;
        Ok(())
    }

    fn pool(&self) -> Option<crate::storage::PoolStatus> {
        let status = self.pool.status();
        Some(crate::storage::PoolStatus {
            max: status.max_size,
            size: status.size,
            idle: status.available,
            waiting: status.waiting,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::transient;

    #[test]
    fn a_starting_or_stopping_server_is_unavailable_not_broken() {
        for code in ["57P01", "57P02", "57P03", "53300", "08006"] {
            assert!(transient(code), "{code}");
        }
        for code in ["23505", "42P01", "40001", "22P02"] {
            assert!(!transient(code), "{code}");
        }
    }
}
