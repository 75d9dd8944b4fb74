//! Presence: which pod holds a socket, and what every pod hears when one opens. One place for
//! the protocol of both socket kinds (register here, subscribe for events from other pods,
//! announce, and release all of it however the socket ends):
//!
//! - a device's socket is registered in this pod's `Registry` (a second local socket
//!   displaces the first), subscribed to its device's events, re-validated against the store
//!   (a removal published before the subscription was not heard), and announced so that
//!   sockets of the device on other pods close with 4409;
//! - a device waiting to be linked gets a fresh provisioning address, registered here and
//!   subscribed, so that the primary's provisioning message reaches it from any pod.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use rand::RngCore;
use tokio::sync::mpsc;

use crate::auth::Authenticator;
use crate::delivery::{
    CloseCode, ConnectionHandle, DeviceEvent, Notifier, ProvisioningSockets, Registry,
};
use crate::domain::ids::{Aci, DeviceId};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;

/// Provisioning messages waiting for their socket to write them.
const PROVISIONING_BACKLOG: usize = 4;

pub struct PresenceService {
    registry: Arc<Registry>,
    provisioning: Arc<ProvisioningSockets>,
    notifier: Arc<dyn Notifier>,
    authenticator: Authenticator,
}

/// A socket's place in presence, released when it drops (however the socket's task ends).
pub struct Presence {
    notifier: Arc<dyn Notifier>,
    held: Held,
}

enum Held {
    Device {
        registry: Arc<Registry>,
        aci: Aci,
        id: DeviceId,
        connection: u64,
    },
    Provisioning {
        sockets: Arc<ProvisioningSockets>,
        address: String,
    },
}

/// A provisioning socket's address, the channel its message arrives on, and its presence.
pub struct WaitingDevice {
    pub address: String,
    pub messages: mpsc::Receiver<Bytes>,
    pub presence: Presence,
}

impl PresenceService {
    pub fn new(
        registry: Arc<Registry>,
        provisioning: Arc<ProvisioningSockets>,
        notifier: Arc<dyn Notifier>,
        authenticator: Authenticator,
    ) -> Self {
        Self {
            registry,
            provisioning,
            notifier,
            authenticator,
        }
    }

    /// Makes `handle` the device's socket: registered here, subscribed, re-validated and
    /// announced. A device gone, or linked again at its id with another credential, is not
    /// this socket's: its handle is asked to close (4401, or 1011 when the store cannot say)
    /// before anything is delivered or served.
    pub async fn connect(
        &self,
        device: AuthenticatedDevice,
        handle: Arc<ConnectionHandle>,
    ) -> Presence {
        let (aci, id) = (device.aci, device.device);
        // A displaced socket on this pod is told to close (and counts itself when it does).
        self.registry.register(aci, id, handle.clone());
        let presence = Presence {
            notifier: self.notifier.clone(),
            held: Held::Device {
                registry: self.registry.clone(),
                aci,
                id,
                connection: handle.id,
            },
        };
        if let Err(e) = self.notifier.subscribe(aci, id).await {
            // The listener is reconnecting: it subscribes the device and re-validates every
            // socket once it is back.
            tracing::warn!(error = %e, "could not subscribe to device events");
        }
        // Read the device again now that any later removal will be heard (both from the
        // store itself, so a removal this read misses publishes after the subscription).
        if let Some(credential) = handle.credential {
            match self.authenticator.still_holds(device, credential).await {
                Ok(true) => {}
                Ok(false) => handle.request_close(CloseCode::Removed),
                Err(e) => {
                    tracing::warn!(error = %e, "could not re-validate a new socket's device");
                    handle.request_close(CloseCode::Unavailable);
                }
            }
        }
        // Sockets of this device on other pods close with 4409. A socket displaced meanwhile
        // (the device connected again) announces nothing: it is not the device's socket.
        if handle.is_closing() {
            return presence;
        }
        if let Err(e) = self
            .notifier
            .publish(aci, id, DeviceEvent::Connected(handle.id))
            .await
        {
            tracing::warn!(error = %e, "could not announce the connection");
        }
        presence
    }

    /// A fresh provisioning address (16 random bytes, base64url), registered here and
    /// subscribed on every pod.
    pub async fn wait_for_provisioning(&self) -> WaitingDevice {
        let mut random = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let address = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let (sender, messages) = mpsc::channel(PROVISIONING_BACKLOG);
        self.provisioning.register(&address, sender);
        let presence = Presence {
            notifier: self.notifier.clone(),
            held: Held::Provisioning {
                sockets: self.provisioning.clone(),
                address: address.clone(),
            },
        };
        if let Err(e) = self.notifier.subscribe_provisioning(&address).await {
            tracing::warn!(error = %e, "could not subscribe a provisioning address");
        }
        WaitingDevice {
            address,
            messages,
            presence,
        }
    }

    /// Hands a provisioning message to the socket waiting at `address`, on whichever pod;
    /// 404 when none does.
    pub async fn provision(&self, address: &str, message: Bytes) -> Result<(), AppError> {
        if self.notifier.publish_provisioning(address, message).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("no device waits at that address".into()))
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let notifier = self.notifier.clone();
        match &self.held {
            Held::Device {
                registry,
                aci,
                id,
                connection,
            } => {
                let (aci, id) = (*aci, *id);
                registry.unregister(aci, id, *connection);
                // The notifier counts sockets per device: this releases only this socket's
                // share.
                spawn(async move {
                    if let Err(e) = notifier.unsubscribe(aci, id).await {
                        tracing::debug!(error = %e, "unsubscribe failed");
                    }
                });
            }
            Held::Provisioning { sockets, address } => {
                sockets.unregister(address);
                let address = address.clone();
                spawn(async move {
                    if let Err(e) = notifier.unsubscribe_provisioning(&address).await {
                        tracing::debug!(error = %e, "unsubscribe failed");
                    }
                });
            }
        }
    }
}

/// Runs a release step on the current runtime (a socket's presence drops inside one).
fn spawn(release: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(release);
    }
}
