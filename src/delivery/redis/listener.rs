//! The pub/sub listener: one connection per pod, reconnected with backoff, whose messages are
//! told apart by channel kind and handled each by its own function: device events (to this
//! pod's sockets), account changes (to the account cache), provisioning messages (to this
//! pod's provisioning sockets).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::RedisNotifier;
use crate::delivery::DeviceEvent;
use crate::domain::ids::{Aci, DeviceId};
use crate::storage::redis::ACCOUNTS_CHANNEL;

/// What a pub/sub channel carries.
#[derive(Debug, PartialEq, Eq)]
enum Channel<'a> {
    /// `…q:{aci:device}:c`: events of one device.
    Device(Aci, DeviceId),
    /// The account-cache invalidations (an ACI per message).
    Accounts,
    /// `…prov:{address}`: the provisioning message for a waiting device.
    Provisioning(&'a str),
    Unknown,
}

impl RedisNotifier {
    fn channel_kind<'a>(&self, channel: &'a str) -> Channel<'a> {
        if channel == self.store.key(ACCOUNTS_CHANNEL) {
            return Channel::Accounts;
        }
        if let Some(address) = channel.strip_prefix(&self.store.key("prov:")) {
            return Channel::Provisioning(address);
        }
        match Self::device_of(channel) {
            Some((aci, id)) => Channel::Device(aci, id),
            None => Channel::Unknown,
        }
    }

    /// Parses `…q:{aci:device}:c` back into the device.
    pub(super) fn device_of(channel: &str) -> Option<(Aci, DeviceId)> {
        let open = channel.rfind('{')?;
        let close = channel.rfind('}')?;
        let (aci, device) = channel.get(open + 1..close)?.split_once(':')?;
        Some((aci.parse().ok()?, device.parse().ok()?))
    }

    fn count(&self, label: &str) {
        self.metrics.pubsub_events.with_label_values(&[label]).inc();
    }

    fn on_message(&self, channel: &str, payload: &[u8]) {
        match self.channel_kind(channel) {
            Channel::Device(aci, id) => self.on_device_event(aci, id, payload),
            Channel::Accounts => self.on_account_changed(payload),
            Channel::Provisioning(address) => self.on_provisioning(address, payload),
            Channel::Unknown => {
                self.count("malformed");
                tracing::warn!("ignoring a message on an unknown channel");
            }
        }
    }

    fn on_device_event(&self, aci: Aci, id: DeviceId, payload: &[u8]) {
        match DeviceEvent::decode(payload) {
            Some(event) => {
                self.count(event.label());
                self.registry.dispatch(aci, id, event);
            }
            None => {
                self.count("malformed");
                tracing::warn!("ignoring a malformed pub/sub message");
            }
        }
    }

    fn on_account_changed(&self, payload: &[u8]) {
        let aci = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse::<Aci>().ok());
        match (aci, &self.accounts) {
            (Some(aci), Some(accounts)) => {
                self.count("account_changed");
                accounts.invalidate(aci)
            }
            (None, _) => {
                self.count("malformed");
                tracing::warn!("ignoring a malformed account event")
            }
            _ => {}
        }
    }

    fn on_provisioning(&self, address: &str, payload: &[u8]) {
        self.count("provisioning");
        self.provisioning
            .deliver(address, Bytes::copy_from_slice(payload));
    }

    /// Keeps one pub/sub connection open until `shutdown`, dispatching its messages;
    /// reconnects with backoff when Redis goes away.
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
                self.set_sink(Some(sink));
                self.metrics.pubsub_up.set(1);
                tracing::info!(devices = channels.len() - 1, "pub/sub connected");
            }
            // Account changes are heard from now on; whatever was missed is forgotten.
            if let Some(accounts) = &self.accounts {
                accounts.resume();
            }
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
                self.on_message(message.get_channel_name(), message.get_payload_bytes());
            }
            self.set_sink(None);
            if let Some(accounts) = &self.accounts {
                accounts.suspend();
            }
            self.metrics.pubsub_up.set(0);
            self.metrics.pubsub_connection_failures.inc();
            tracing::warn!("pub/sub connection lost; reconnecting");
        }
    }

    /// Re-validates every local socket against the account store, retrying (with backoff)
    /// while the store does not answer: until it does, a missed removal cannot be ruled out.
    async fn revalidate_all(self: Arc<Self>, shutdown: CancellationToken) {
        let sockets = self.registry.sockets();
        let mut backoff = Duration::from_millis(100);
        loop {
            match crate::delivery::revalidate(self.devices.as_ref(), &sockets).await {
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
