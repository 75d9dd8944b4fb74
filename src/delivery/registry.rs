//! This pod's authenticated sockets, one per device. Inserting a second socket for a device
//! displaces the first (4409); entries are removed by the connection's guard however its
//! task ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::DeviceEvent;
use crate::domain::accounts::CredentialDigest;
use crate::domain::ids::{Aci, DeviceId};

/// Why the server closes a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the server is shutting down.
    GoingAway,
    /// 4401: the device or account was removed.
    Removed,
    /// 4409: a newer socket for the same device opened.
    Displaced,
    /// 1011: the server could not check that the socket's device still exists (the store
    /// did not answer); the client reconnects.
    Unavailable,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::Removed => 4401,
            CloseCode::Displaced => 4409,
            CloseCode::Unavailable => 1011,
        }
    }
}

/// The registry's side of one socket: how to wake it and how to close it.
pub struct ConnectionHandle {
    pub id: u64,
    /// The credential the socket authenticated with (`None` for an anonymous socket, which
    /// is never registered): a device that no longer has it is not this socket's device.
    pub credential: Option<CredentialDigest>,
    messages: Notify,
    close: Notify,
    close_code: AtomicU16,
}

impl ConnectionHandle {
    pub fn new(id: u64) -> Arc<Self> {
        Self::with_credential(id, None)
    }

    /// The handle of a socket that authenticated with `credential`.
    pub fn with_credential(id: u64, credential: Option<CredentialDigest>) -> Arc<Self> {
        Arc::new(Self {
            id,
            credential,
            messages: Notify::new(),
            close: Notify::new(),
            close_code: AtomicU16::new(0),
        })
    }

    /// Wakes the socket to read its queue (coalesces: many wake-ups, one read).
    pub fn message_available(&self) {
        self.messages.notify_one();
    }

    pub async fn wait_for_messages(&self) {
        self.messages.notified().await;
    }

    pub fn request_close(&self, code: CloseCode) {
        // The first reason wins.
        let _ =
            self.close_code
                .compare_exchange(0, code.code(), Ordering::SeqCst, Ordering::SeqCst);
        self.close.notify_one();
    }

    /// Whether a close was requested (the socket is on its way out).
    pub fn is_closing(&self) -> bool {
        self.close_code.load(Ordering::SeqCst) != 0
    }

    /// The requested close code, once a close was requested.
    pub fn close_code(&self) -> Option<u16> {
        Some(self.close_code.load(Ordering::SeqCst)).filter(|&code| code != 0)
    }

    /// Resolves with the close code once a close was requested.
    pub async fn wait_for_close(&self) -> u16 {
        loop {
            let code = self.close_code.load(Ordering::SeqCst);
            if code != 0 {
                return code;
            }
            self.close.notified().await;
        }
    }
}

/// The sockets on this pod, by device.
#[derive(Default)]
pub struct Registry {
    // std Mutex: every operation is a map lookup or insert, never held across an await.
    sockets: Mutex<HashMap<(Aci, DeviceId), Arc<ConnectionHandle>>>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Aci, DeviceId), Arc<ConnectionHandle>>> {
        // A poisoned map is still a valid map: every critical section leaves it consistent.
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a socket; a previous socket of the device is told to close (4409).
    pub fn register(&self, aci: Aci, id: DeviceId, handle: Arc<ConnectionHandle>) -> bool {
        let previous = self.lock().insert((aci, id), handle);
        match previous {
            Some(old) => {
                old.request_close(CloseCode::Displaced);
                true
            }
            None => false,
        }
    }

    /// Removes the entry if it is still connection `conn`'s.
    pub fn unregister(&self, aci: Aci, id: DeviceId, conn: u64) {
        let mut sockets = self.lock();
        if sockets.get(&(aci, id)).is_some_and(|h| h.id == conn) {
            sockets.remove(&(aci, id));
        }
    }

    pub fn get(&self, aci: Aci, id: DeviceId) -> Option<Arc<ConnectionHandle>> {
        self.lock().get(&(aci, id)).cloned()
    }

    /// Wakes this pod's socket for the device if it has one that is not closing; whether it
    /// did.
    pub fn wake_local(&self, aci: Aci, id: DeviceId) -> bool {
        match self.get(aci, id) {
            Some(handle) if !handle.is_closing() => {
                handle.message_available();
                true
            }
            _ => false,
        }
    }

    /// Applies an event to this pod's socket for the device, if it has one.
    pub fn dispatch(&self, aci: Aci, id: DeviceId, event: DeviceEvent) -> Option<CloseCode> {
        let handle = self.get(aci, id)?;
        match event {
            DeviceEvent::MessageAvailable => {
                handle.message_available();
                None
            }
            DeviceEvent::Connected(conn) if conn != handle.id => {
                handle.request_close(CloseCode::Displaced);
                Some(CloseCode::Displaced)
            }
            DeviceEvent::Connected(_) => None,
            DeviceEvent::Removed => {
                handle.request_close(CloseCode::Removed);
                Some(CloseCode::Removed)
            }
        }
    }

    /// Every device with a socket here (to resubscribe after a pub/sub reconnect).
    pub fn devices(&self) -> Vec<(Aci, DeviceId)> {
        self.lock().keys().copied().collect()
    }

    /// Every socket here with its device (to re-validate them after a pub/sub reconnect).
    pub fn sockets(&self) -> Vec<(Aci, DeviceId, Arc<ConnectionHandle>)> {
        self.lock()
            .iter()
            .map(|(&(aci, id), handle)| (aci, id, handle.clone()))
            .collect()
    }

    /// Wakes every socket to re-read its queue (events may have been missed).
    pub fn wake_all(&self) {
        for handle in self.lock().values() {
            handle.message_available();
        }
    }

    /// Asks every socket to close (shutdown).
    pub fn close_all(&self, code: CloseCode) {
        for handle in self.lock().values() {
            handle.request_close(code);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_socket_displaces_the_first() {
        let registry = Registry::new();
        let (aci, id) = (Aci::random(), DeviceId::PRIMARY);
        let first = ConnectionHandle::new(1);
        assert!(!registry.register(aci, id, first.clone()));
        assert!(registry.register(aci, id, ConnectionHandle::new(2)));
        assert_eq!(first.wait_for_close().await, 4409);
        // The displaced socket's guard must not remove the new entry.
        registry.unregister(aci, id, 1);
        assert_eq!(registry.get(aci, id).map(|h| h.id), Some(2));
        registry.unregister(aci, id, 2);
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn events_reach_the_right_socket() {
        let registry = Registry::new();
        let (aci, id) = (Aci::random(), DeviceId::PRIMARY);
        let handle = ConnectionHandle::new(7);
        registry.register(aci, id, handle.clone());
        registry.dispatch(aci, id, DeviceEvent::MessageAvailable);
        handle.wait_for_messages().await;
        assert_eq!(registry.dispatch(aci, id, DeviceEvent::Connected(7)), None);
        assert_eq!(
            registry.dispatch(aci, id, DeviceEvent::Connected(8)),
            Some(CloseCode::Displaced)
        );
        assert_eq!(handle.wait_for_close().await, 4409);
        assert_eq!(
            registry.dispatch(Aci::random(), id, DeviceEvent::Removed),
            None
        );
    }
}

/// This pod's provisioning sockets, by address. Each waits for one message (the primary
/// device's provisioning message), delivered through its channel.
#[derive(Default)]
pub struct ProvisioningSockets {
    // std Mutex: map operations only, never held across an await.
    sockets: Mutex<HashMap<String, tokio::sync::mpsc::Sender<bytes::Bytes>>>,
}

impl ProvisioningSockets {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::mpsc::Sender<bytes::Bytes>>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, address: &str, sender: tokio::sync::mpsc::Sender<bytes::Bytes>) {
        self.lock().insert(address.to_owned(), sender);
    }

    pub fn unregister(&self, address: &str) {
        self.lock().remove(address);
    }

    /// Hands `body` to the socket holding `address`; `false` when none here does.
    pub fn deliver(&self, address: &str, body: bytes::Bytes) -> bool {
        match self.lock().get(address) {
            Some(sender) => sender.try_send(body).is_ok(),
            None => false,
        }
    }
}
