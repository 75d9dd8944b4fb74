//! Device events across pods over Redis pub/sub. Each device has a channel next to its
//! queue (`…q:{aci:device}:c`, the same hash tag, ready for sharded pub/sub); a pod
//! subscribes to the channels of the devices whose sockets it holds, on one pub/sub
//! connection. When that connection drops, the listener reconnects, resubscribes every local
//! device and wakes every local socket to re-read its queue, so a lost event costs a queue
//! read, never a message; it also re-validates every local socket against the account store
//! (a lost "removed" event must not leave a removed device's socket open). PUBLISH answers
//! how many subscribers got the event: that is how a sender learns whether the device is
//! online. The listener, by channel kind, is in `listener`.

mod listener;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::PubSubSink;

use super::{DeviceEvent, Notifier, ProvisioningSockets, Registry};
use crate::domain::ids::{Aci, DeviceId};
use crate::metrics::Metrics;
use crate::storage::cache::AccountCache;
use crate::storage::redis::{RedisStore, redis_error};
use crate::storage::{AccountStore, StorageResult};

pub struct RedisNotifier {
    store: RedisStore,
    client: redis::Client,
    registry: Arc<Registry>,
    provisioning: Arc<ProvisioningSockets>,
    /// Dropped entries on every "account changed" event; live only while subscribed.
    accounts: Option<Arc<AccountCache>>,
    /// Where sockets are re-validated after a reconnect (`AccountStore::password_hashes`
    /// reads the store itself, past any cache).
    devices: Arc<dyn AccountStore>,
    metrics: Metrics,
    // std Mutex: held only to clone the sink out or swap it after a reconnect.
    sink: Mutex<Option<PubSubSink>>,
    /// Sockets per channel on this pod. A tokio Mutex, held across the SUBSCRIBE or
    /// UNSUBSCRIBE it decides on, so that those commands reach Redis in the order the counts
    /// changed: a socket that closes just as the device reconnects on this pod cannot
    /// unsubscribe the new socket's channel.
    subscriptions: tokio::sync::Mutex<HashMap<String, usize>>,
}

impl RedisNotifier {
    pub fn new(
        url: &str,
        store: RedisStore,
        registry: Arc<Registry>,
        provisioning: Arc<ProvisioningSockets>,
        accounts: Option<Arc<AccountCache>>,
        devices: Arc<dyn AccountStore>,
        metrics: Metrics,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            store,
            client: redis::Client::open(url)?,
            registry,
            provisioning,
            accounts,
            devices,
            metrics,
            sink: Mutex::new(None),
            subscriptions: tokio::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// `prefix` + `prov:{address}` (addresses are base64url: no braces, no colons).
    fn provisioning_channel(&self, address: &str) -> String {
        self.store.key(&format!("prov:{address}"))
    }

    fn channel(&self, aci: Aci, id: DeviceId) -> String {
        format!("{}:c", self.store.device_base(aci, id))
    }

    fn sink(&self) -> Option<PubSubSink> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_sink(&self, sink: Option<PubSubSink>) {
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = sink;
    }
}

#[async_trait]
impl Notifier for RedisNotifier {
    async fn publish(&self, aci: Aci, id: DeviceId, event: DeviceEvent) -> StorageResult<bool> {
        // A device has one socket: when it is on this pod, no other pod needs to hear that a
        // message arrived, and the round trip through Redis is saved. (A socket displaced
        // elsewhere just now may miss this wake-up; its successor re-reads its queue within
        // the idle re-read interval, and the message waits queued until then.)
        if event == DeviceEvent::MessageAvailable && self.registry.wake_local(aci, id) {
            return Ok(true);
        }
        // A removal closes this pod's socket at once, even when the PUBLISH below fails (the
        // listener hears it again, which does nothing more).
        if event == DeviceEvent::Removed {
            self.registry.dispatch(aci, id, event);
        }
        let mut conn = self.store.connection();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(self.channel(aci, id))
            .arg(event.encode())
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(receivers > 0)
    }

    async fn publish_provisioning(&self, address: &str, body: Bytes) -> StorageResult<bool> {
        let mut conn = self.store.connection();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(self.provisioning_channel(address))
            .arg(body.as_ref())
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(receivers > 0)
    }

    async fn subscribe_provisioning(&self, address: &str) -> StorageResult<()> {
        self.subscribe_channel(self.provisioning_channel(address))
            .await
    }

    async fn unsubscribe_provisioning(&self, address: &str) -> StorageResult<()> {
        self.unsubscribe_channel(self.provisioning_channel(address))
            .await
    }

    async fn subscribe(&self, aci: Aci, id: DeviceId) -> StorageResult<()> {
        self.subscribe_channel(self.channel(aci, id)).await
    }

    async fn unsubscribe(&self, aci: Aci, id: DeviceId) -> StorageResult<()> {
        self.unsubscribe_channel(self.channel(aci, id)).await
    }
}

impl RedisNotifier {
    async fn subscribe_channel(&self, channel: String) -> StorageResult<()> {
        let mut subscriptions = self.subscriptions.lock().await;
        let count = subscriptions.entry(channel.clone()).or_insert(0);
        *count += 1;
        // Without a connection the listener subscribes the device when it reconnects.
        if *count == 1
            && let Some(mut sink) = self.sink()
        {
            sink.subscribe(channel).await.map_err(redis_error)?;
        }
        Ok(())
    }

    async fn unsubscribe_channel(&self, channel: String) -> StorageResult<()> {
        let mut subscriptions = self.subscriptions.lock().await;
        let Some(count) = subscriptions.get_mut(&channel) else {
            return Ok(());
        };
        *count -= 1;
        if *count == 0 {
            subscriptions.remove(&channel);
            if let Some(mut sink) = self.sink() {
                sink.unsubscribe(channel).await.map_err(redis_error)?;
            }
        }
        Ok(())
    }
}
