//! Linked devices in Redis: `{prefix}linked:{token}` holds `<aci>.<device>` for an hour,
//! and the same name is a pub/sub channel on which the write is announced. A waiter opens
//! its own pub/sub connection, subscribes, and only then reads the key, so a device linked
//! between the two is seen either way; the wait ends at the first announcement or the
//! timeout. One connection per waiting request: waits are few (a primary linking a device,
//! `waitForLinkedDevice` limits them per account, and the service caps them per pod).

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{RedisStore, redis_error};
use crate::storage::linked_devices::{LinkedDevice, LinkedDeviceStore};
use crate::storage::{StorageError, StorageResult};

/// How long opening and subscribing a waiter's pub/sub connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn parse(value: Option<String>) -> StorageResult<Option<LinkedDevice>> {
    value
        .map(|v| {
            LinkedDevice::decode(&v).ok_or_else(|| {
                StorageError::Backend(anyhow::anyhow!("stored linked device does not parse"))
            })
        })
        .transpose()
}

impl RedisStore {
    /// The key and the channel of `token` (token identifiers are base64url: no braces).
    fn linked_key(&self, token: &str) -> String {
        self.key(&format!("linked:{token}"))
    }
}

#[async_trait]
impl LinkedDeviceStore for RedisStore {
    async fn record_linked(
        &self,
        token: &str,
        device: LinkedDevice,
        ttl: Duration,
    ) -> StorageResult<()> {
        let key = self.linked_key(token);
        let value = device.encode();
        let mut conn = self.connection();
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(&value)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore()
            .cmd("PUBLISH")
            .arg(&key)
            .arg(&value)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn wait_for_linked(
        &self,
        token: &str,
        timeout: Duration,
    ) -> StorageResult<Option<LinkedDevice>> {
        let key = self.linked_key(token);
        // Bounded like every other command (the shared connection's 2 s): a Redis that does
        // not answer is a 503 at once, not a wait on the operating system's TCP timeout.
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&key).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                StorageError::Unavailable(anyhow::anyhow!(
                    "redis did not answer a pub/sub subscription in time"
                ))
            })?
            .map_err(redis_error)?;
        let mut conn = self.connection();
        let stored: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if let Some(device) = parse(stored)? {
            return Ok(Some(device));
        }
        let mut messages = pubsub.on_message();
        match tokio::time::timeout(timeout, messages.next()).await {
            Err(_) => Ok(None),
            Ok(Some(message)) => {
                let payload: String = message.get_payload().map_err(redis_error)?;
                parse(Some(payload))
            }
            Ok(None) => Err(StorageError::Unavailable(anyhow::anyhow!(
                "pub/sub connection lost while waiting for a linked device"
            ))),
        }
    }
}
