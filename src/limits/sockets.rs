//! The process's socket slots: how many WebSockets of every kind this process holds, and
//! how many each client address holds (the upgrade handlers in `ws` take one per socket).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::clients::{ClientHold, PerClient};

/// Why a socket got no slot: its client address holds its share (429), or the process holds
/// its maximum (503).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRefused {
    Client,
    Process,
}

/// This process's sockets of every kind, counted against `max_websockets`: past it an upgrade
/// gets a JSON 503 with `Retry-After` (another pod, or a retry, can serve it) instead of the
/// process running out of memory or file descriptors. Each client address may hold at most
/// `max_websockets_per_client` of them (429 past it), so one client cannot take them all.
pub struct SocketSlots {
    max: usize,
    open: AtomicUsize,
    per_client: Arc<PerClient>,
}

impl SocketSlots {
    pub fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: AtomicUsize::new(0),
            per_client: PerClient::new(per_client),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The process-wide maximum (after the descriptor limit had its say).
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `client`, released when the returned guard drops (however the socket's
    /// task ends).
    pub fn try_acquire(self: &Arc<Self>, client: IpAddr) -> Result<SocketSlot, SlotRefused> {
        let hold = self
            .per_client
            .try_acquire(client)
            .ok_or(SlotRefused::Client)?;
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < self.max).then_some(open + 1)
            })
            .map_err(|_| SlotRefused::Process)?;
        Ok(SocketSlot(self.clone(), hold))
    }
}

/// A socket's place: one of the process's and one of its client's (the hold gives that back).
pub struct SocketSlot(Arc<SocketSlots>, #[allow(dead_code)] ClientHold);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}
