//! Delivery signalling: "a message is waiting", "the device connected elsewhere" and "the
//! device is gone" reach whichever pod holds the device's socket. `Registry` knows this
//! pod's sockets; a `Notifier` carries events between pods (Redis pub/sub on a per-device
//! channel) or, in the embedded mode, straight to the registry. Owns no messages: the
//! queues are in `storage`.

mod close;
pub mod memory;
pub mod redis;
mod registry;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use close::CloseCode;
pub use registry::{ConnectionHandle, HandleEvent, ProvisioningSockets, Registry};

use crate::domain::accounts::CredentialDigest;
use crate::domain::ids::{Aci, DeviceId};
use crate::storage::{AccountStore, StorageResult};

/// Sockets re-validated by one store read (a pod may hold 100k sockets).
const REVALIDATION_BATCH: usize = 1000;

/// Closes with 4401 every one of `sockets` whose device is gone from the store or no longer
/// has the credential the socket authenticated with (removed, and another device linked at
/// its id). For the sockets whose removal event may never have reached them: one that
/// subscribed just after its device's removal was published, or every socket of a pod
/// whose pub/sub connection was down. Reads the store itself (never the account cache), in
/// batches; returns how many sockets it closed.
pub async fn revalidate(
    accounts: &dyn AccountStore,
    sockets: &[(Aci, DeviceId, Arc<ConnectionHandle>)],
) -> StorageResult<usize> {
    let mut closed = 0;
    for batch in sockets.chunks(REVALIDATION_BATCH) {
        let devices: Vec<(Aci, DeviceId)> = batch.iter().map(|(aci, id, _)| (*aci, *id)).collect();
        let hashes = accounts.password_hashes(&devices).await?;
        for (aci, id, handle) in batch {
            let current = hashes.get(&(*aci, *id)).map(|h| CredentialDigest::of(h));
            if current.is_none() || current != handle.credential {
                handle.request_close(CloseCode::Removed);
                closed += 1;
            }
        }
    }
    Ok(closed)
}

/// What can happen to a device that its socket must hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// Something was queued for it.
    MessageAvailable,
    /// A socket for it opened as connection `id` (any other socket must go: 4409).
    Connected(u64),
    /// The device or its account was removed (4401).
    Removed,
}

impl DeviceEvent {
    pub fn encode(self) -> String {
        match self {
            DeviceEvent::MessageAvailable => "m".to_owned(),
            DeviceEvent::Connected(id) => format!("c{id}"),
            DeviceEvent::Removed => "r".to_owned(),
        }
    }

    /// The event's metric label.
    pub fn label(self) -> &'static str {
        match self {
            DeviceEvent::MessageAvailable => "message_available",
            DeviceEvent::Connected(_) => "connected",
            DeviceEvent::Removed => "removed",
        }
    }

    pub fn decode(payload: &[u8]) -> Option<Self> {
        match payload.first()? {
            b'm' => Some(DeviceEvent::MessageAvailable),
            b'r' => Some(DeviceEvent::Removed),
            b'c' => std::str::from_utf8(&payload[1..])
                .ok()?
                .parse()
                .ok()
                .map(DeviceEvent::Connected),
            _ => None,
        }
    }
}

/// Carries device events to the pod that holds the device's socket.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Returns whether a pod holding a socket for the device received it (the device is
    /// online).
    async fn publish(&self, aci: Aci, id: DeviceId, event: DeviceEvent) -> StorageResult<bool>;

    /// Starts receiving the device's events on this pod.
    async fn subscribe(&self, aci: Aci, id: DeviceId) -> StorageResult<()>;

    async fn unsubscribe(&self, aci: Aci, id: DeviceId) -> StorageResult<()>;

    /// Hands `body` to the provisioning socket holding `address`, on whichever pod; `false`
    /// when no socket holds it.
    async fn publish_provisioning(&self, address: &str, body: Bytes) -> StorageResult<bool>;

    /// Starts receiving provisioning messages for `address` on this pod.
    async fn subscribe_provisioning(&self, address: &str) -> StorageResult<()>;

    async fn unsubscribe_provisioning(&self, address: &str) -> StorageResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_wire_form() {
        for event in [
            DeviceEvent::MessageAvailable,
            DeviceEvent::Removed,
            DeviceEvent::Connected(0),
            DeviceEvent::Connected(u64::MAX),
        ] {
            assert_eq!(DeviceEvent::decode(event.encode().as_bytes()), Some(event));
        }
        assert_eq!(DeviceEvent::decode(b""), None);
        assert_eq!(DeviceEvent::decode(b"cx"), None);
        assert_eq!(DeviceEvent::decode(b"z"), None);
    }
}
