//! Redis backends: rate-limit buckets, per-device message queues, link codes, linked devices and scheduled
//! wake-ups (pub/sub lives in `delivery`). Every key starts with the configured prefix, so several deployments (or
//! test runs) can share one Redis. One `ConnectionManager` multiplexes all commands and
//! reconnects by itself.

mod link_codes;
mod linked_devices;
mod messages;
mod push_schedule;
mod rate_limits;
mod reports;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::storage::{Probe, QueuePolicy, StorageError, StorageResult};

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// For the dedicated pub/sub connection of a long wait (`linked_devices`).
    client: redis::Client,
    prefix: String,
    queue: QueuePolicy,
    scripts: Arc<messages::QueueScripts>,
}

impl RedisStore {
    /// Creates the connection manager without connecting: the server may start before
    /// Redis answers, and readiness says so until it does.
    pub fn connect(url: &str, prefix: &str, queue: QueuePolicy) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            conn,
            client,
            prefix: prefix.to_owned(),
            queue,
            scripts: Arc::new(messages::QueueScripts::new()),
        })
    }

    /// A handle on the shared multiplexed connection.
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// `prefix` + `rest`: the only way keys are built.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }
}

/// Connection failures, and the answers of a Redis that is loading its data after a restart
/// (`LOADING`) or cannot serve writes for now, mean "unavailable" (503), not a broken store.
pub(crate) fn redis_error(e: redis::RedisError) -> StorageError {
    use redis::{ErrorKind, ServerErrorKind};
    let transient = matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::ReadOnly
        )
    );
    if transient
        || e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
    {
        StorageError::Unavailable(e.into())
    } else {
        StorageError::Backend(e.into())
    }
}

#[async_trait]
impl Probe for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StorageResult<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }
}

/// The channel every pod listens on for "this account changed" (the payload is the ACI).
pub const ACCOUNTS_CHANNEL: &str = "accounts";

#[async_trait]
impl crate::storage::cache::InvalidationBus for RedisStore {
    async fn publish_invalidation(&self, aci: crate::domain::ids::Aci) -> StorageResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.key(ACCOUNTS_CHANNEL))
            .arg(aci.to_string())
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    #[test]
    fn a_redis_loading_its_data_is_unavailable_not_broken() {
        let loading = RedisError::from((
            ErrorKind::Server(ServerErrorKind::BusyLoading),
            "Redis is loading the dataset in memory",
        ));
        assert!(matches!(redis_error(loading), StorageError::Unavailable(_)));
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR Error running script",
        ));
        assert!(matches!(redis_error(script), StorageError::Backend(_)));
    }
}
