//! Device events across pods over Redis pub/sub. Each device has a channel next to its
//! queue (`…q:{aci:device}:c`, the same hash tag, ready for sharded pub/sub); a pod
//! subscribes to the channels of the devices whose sockets it holds, on one pub/sub
//! connection. When that connection drops, the listener reconnects, resubscribes every local
//! device and wakes every local socket to re-read its queue, so a lost event costs a queue
//! read, never a message; it also re-validates every local socket against the account store
//! (a lost "removed" event must not leave a removed device's socket open). PUBLISH answers how many subscribers got the event: that is how
//! a sender learns whether the device is online.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;

use super::{DeviceEvent, Notifier, ProvisioningSockets, Registry};
use crate::domain::ids::{Aci, DeviceId};
use crate::metrics::Metrics;
use crate::storage::cache::AccountCache;
use crate::storage::redis::{ACCOUNTS_CHANNEL, RedisStore, redis_error};
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

    /// Parses `…q:{aci:device}:c` back into the device.
    fn device_of(channel: &str) -> Option<(Aci, DeviceId)> {
        let open = channel.rfind('{')?;
        let close = channel.rfind('}')?;
        let (aci, device) = channel.get(open + 1..close)?.split_once(':')?;
        Some((aci.parse().ok()?, device.parse().ok()?))
    }

    fn sink(&self) -> Option<PubSubSink> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keeps one pub/sub connection open until `shutdown`, dispatching events to the
    /// registry; reconnects with backoff when Redis goes away.
    pub async fn listen(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = self.client.get_async_pubsub() => c,
            };
            let pubsub = match connected {
                Ok(pubsub) => pubsub,
                Err(e) => {
                    self.metrics.pubsub_connection_failures.inc();
                    tracing::warn!(error = %e, "pub/sub connection failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let (mut sink, mut stream) = pubsub.split();
            {
                // Hold the counts while resubscribing and installing the sink: a socket that
                // subscribes meanwhile waits, then goes through the new sink.
                let subscriptions = self.subscriptions.lock().await;
                let mut channels: Vec<String> = subscriptions.keys().cloned().collect();
                channels.push(self.store.key(ACCOUNTS_CHANNEL));
                if sink.subscribe(&channels).await.is_err() {
                    drop(subscriptions);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
                self.metrics.pubsub_up.set(1);
                tracing::info!(devices = channels.len() - 1, "pub/sub connected");
            }
            // Account changes are heard from now on; whatever was missed is forgotten.
            if let Some(accounts) = &self.accounts {
                accounts.resume();
            }
            let accounts_channel = self.store.key(ACCOUNTS_CHANNEL);
            // Events published while we were away are lost: every socket re-reads its queue,
            // and every socket whose device was removed meanwhile closes (4401). The sockets
            // are those registered now; a later one re-validates itself after subscribing.
            self.registry.wake_all();
            tokio::spawn(self.clone().revalidate_all(shutdown.clone()));
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = stream.next() => m,
                };
                let Some(message) = message else { break };
                if message.get_channel_name() == accounts_channel {
                    let aci = std::str::from_utf8(message.get_payload_bytes())
                        .ok()
                        .and_then(|s| s.parse::<Aci>().ok());
                    match (aci, &self.accounts) {
                        (Some(aci), Some(accounts)) => {
                            self.metrics
                                .pubsub_events
                                .with_label_values(&["account_changed"])
                                .inc();
                            accounts.invalidate(aci)
                        }
                        (None, _) => {
                            self.metrics
                                .pubsub_events
                                .with_label_values(&["malformed"])
                                .inc();
                            tracing::warn!("ignoring a malformed account event")
                        }
                        _ => {}
                    }
                    continue;
                }
                let provisioning_prefix = self.store.key("prov:");
                if let Some(address) = message
                    .get_channel_name()
                    .strip_prefix(&provisioning_prefix)
                {
                    self.metrics
                        .pubsub_events
                        .with_label_values(&["provisioning"])
                        .inc();
                    let body = Bytes::copy_from_slice(message.get_payload_bytes());
                    self.provisioning.deliver(address, body);
                    continue;
                }
                let event = DeviceEvent::decode(message.get_payload_bytes());
                match (Self::device_of(message.get_channel_name()), event) {
                    (Some((aci, id)), Some(event)) => {
                        self.metrics
                            .pubsub_events
                            .with_label_values(&[event.label()])
                            .inc();
                        self.registry.dispatch(aci, id, event);
                    }
                    _ => {
                        self.metrics
                            .pubsub_events
                            .with_label_values(&["malformed"])
                            .inc();
                        tracing::warn!("ignoring a malformed pub/sub message")
                    }
                }
            }
            *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if let Some(accounts) = &self.accounts {
                accounts.suspend();
            }
            self.metrics.pubsub_up.set(0);
            self.metrics.pubsub_connection_failures.inc();
            tracing::warn!("pub/sub connection lost; reconnecting");
        }
    }
}

impl RedisNotifier {
    /// Re-validates every local socket against the account store, retrying (with backoff)
    /// while the store does not answer: until it does, a missed removal cannot be ruled out.
    async fn revalidate_all(self: Arc<Self>, shutdown: CancellationToken) {
        let sockets = self.registry.sockets();
        let mut backoff = Duration::from_millis(100);
        loop {
            match super::revalidate(self.devices.as_ref(), &sockets).await {
                Ok(closed) => {
                    if closed > 0 {
                        tracing::info!(
                            closed,
                            "closed sockets of devices removed while pub/sub was down"
                        );
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "re-validating sockets failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_back_into_their_device() {
        let aci = Aci::random();
        let channel = format!("sealpost:q:{{{aci}:3}}:c");
        assert_eq!(
            RedisNotifier::device_of(&channel),
            Some((aci, DeviceId::new(3).unwrap()))
        );
        assert_eq!(RedisNotifier::device_of("sealpost:q:nothing"), None);
    }
}
