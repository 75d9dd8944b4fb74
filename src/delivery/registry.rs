//! This pod's authenticated sockets, one per device. Inserting a second socket for a device
//! displaces the first (4409); entries are removed by the connection's guard however its
//! task ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{CloseCode, DeviceEvent};
use crate::domain::accounts::CredentialDigest;
use crate::domain::ids::{Aci, DeviceId};

/// The registry's side of one socket: how to wake it and how to close it.
pub struct ConnectionHandle {
    pub id: u64,
    /// The credential the socket authenticated with (`None` for an anonymous socket, which
    /// is never registered): a device that no longer has it is not this socket's device.
    pub credential: Option<CredentialDigest>,
    /// Woken for either event; the flags below say which (one waiter, the socket's task).
    wake: Notify,
    messages: AtomicBool,
    close_code: AtomicU16,
}

/// What a socket's handle woke it for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleEvent {
    /// Its queue may hold more (coalesced: many wake-ups, one event).
    MessagesAvailable,
    /// It must close (the first requested reason).
    Close(CloseCode),
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
            wake: Notify::new(),
            messages: AtomicBool::new(false),
            close_code: AtomicU16::new(0),
        })
    }

    /// Wakes the socket to read its queue (coalesces: many wake-ups, one read).
    pub fn message_available(&self) {
        self.messages.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn request_close(&self, code: CloseCode) {
        // The first reason wins.
        let _ =
            self.close_code
                .compare_exchange(0, code.code(), Ordering::SeqCst, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether a close was requested (the socket is on its way out).
    pub fn is_closing(&self) -> bool {
        self.close_code.load(Ordering::SeqCst) != 0
    }

    /// The requested close code, once a close was requested.
    pub fn close_code(&self) -> Option<CloseCode> {
        Some(self.close_code.load(Ordering::SeqCst))
            .filter(|&code| code != 0)
            .map(CloseCode::from_code)
    }

    /// Resolves with the next event: a requested close first, then a wake-up. Cancel-safe
    /// (a wake-up that arrives while nobody waits is kept for the next call).
    pub async fn next_event(&self) -> HandleEvent {
        loop {
            if let Some(code) = self.close_code() {
                return HandleEvent::Close(code);
            }
            if self.messages.swap(false, Ordering::SeqCst) {
                return HandleEvent::MessagesAvailable;
            }
            self.wake.notified().await;
        }
    }

    /// Resolves with the close code once a close was requested.
    pub async fn wait_for_close(&self) -> CloseCode {
        loop {
            if let HandleEvent::Close(code) = self.next_event().await {
                return code;
            }
        }
    }
}

/// The sockets on this pod, by device.
pub struct Registry {
    // std Mutex: every operation is a map lookup or insert, never held across an await.
    sockets: Mutex<HashMap<(Aci, DeviceId), Arc<ConnectionHandle>>>,
    /// This pod's connection ids are `pod << 32 | n`: an announcement of one of them comes
    /// from this pod, whose own registry already ordered its sockets.
    pod: u32,
    next: AtomicU32,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            sockets: Mutex::default(),
            // Never 0: ids made elsewhere (tests) stay foreign.
            pod: rand::random::<u32>() | 1,
            next: AtomicU32::new(0),
        })
    }

    /// A fresh id for a socket opening on this pod.
    pub fn connection_id(&self) -> u64 {
        (u64::from(self.pod) << 32) | u64::from(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn is_local(&self, connection: u64) -> bool {
        (connection >> 32) as u32 == self.pod
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
            // A socket of this pod announced itself: `register` already displaced whatever
            // was here before it, and an announcement that arrives late (its socket was slow
            // to announce, and the device has connected here again since) must not close
            // the newer socket.
            DeviceEvent::Connected(conn) if conn == handle.id || self.is_local(conn) => None,
            DeviceEvent::Connected(_) => {
                handle.request_close(CloseCode::Displaced);
                Some(CloseCode::Displaced)
            }
            DeviceEvent::Removed => {
                handle.request_close(CloseCode::Removed);
                Some(CloseCode::Removed)
            }
        }
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
        assert_eq!(first.wait_for_close().await, CloseCode::Displaced);
        // The displaced socket's guard must not remove the new entry.
        registry.unregister(aci, id, 1);
        assert_eq!(registry.get(aci, id).map(|h| h.id), Some(2));
        registry.unregister(aci, id, 2);
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn a_late_announcement_of_this_pods_older_socket_displaces_nothing() {
        let registry = Registry::new();
        let (aci, id) = (Aci::random(), DeviceId::PRIMARY);
        let (older, newer) = (registry.connection_id(), registry.connection_id());
        assert_ne!(older, newer);
        let first = ConnectionHandle::new(older);
        registry.register(aci, id, first.clone());
        let second = ConnectionHandle::new(newer);
        registry.register(aci, id, second.clone());
        assert_eq!(first.close_code(), Some(CloseCode::Displaced));
        // The older socket's announcement arrives after the newer one registered.
        assert_eq!(
            registry.dispatch(aci, id, DeviceEvent::Connected(older)),
            None
        );
        assert!(!second.is_closing());
        // Another pod's socket still displaces it.
        let elsewhere = Registry::new().connection_id();
        assert_eq!(
            registry.dispatch(aci, id, DeviceEvent::Connected(elsewhere)),
            Some(CloseCode::Displaced)
        );
        assert_eq!(second.close_code(), Some(CloseCode::Displaced));
    }

    #[tokio::test]
    async fn events_reach_the_right_socket() {
        let registry = Registry::new();
        let (aci, id) = (Aci::random(), DeviceId::PRIMARY);
        let handle = ConnectionHandle::new(7);
        registry.register(aci, id, handle.clone());
        registry.dispatch(aci, id, DeviceEvent::MessageAvailable);
        assert_eq!(handle.next_event().await, HandleEvent::MessagesAvailable);
        assert_eq!(registry.dispatch(aci, id, DeviceEvent::Connected(7)), None);
        assert_eq!(
            registry.dispatch(aci, id, DeviceEvent::Connected(8)),
            Some(CloseCode::Displaced)
        );
        assert_eq!(handle.wait_for_close().await, CloseCode::Displaced);
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
