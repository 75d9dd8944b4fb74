//! [`AccountCache`]: the entries, their generation counter and whether the cache is live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::accounts::{Account, Device};
use crate::domain::ids::Aci;

/// Past this many accounts the cache drops what has expired, then everything.
const MAX_ENTRIES: usize = 200_000;

#[derive(Default)]
pub(super) struct Entry {
    pub(super) account: Option<(Instant, Account)>,
    pub(super) devices: Option<(Instant, Arc<[Device]>)>,
}

/// The shared state: what the listener invalidates and the store decorator reads.
pub struct AccountCache {
    // std Mutex: held for a map lookup or insert, never across an await.
    entries: Mutex<HashMap<Aci, Entry>>,
    generation: AtomicU64,
    live: AtomicBool,
    ttl: Duration,
}

impl AccountCache {
    /// A cache that serves nothing until [`AccountCache::resume`].
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            ttl,
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Aci, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Invalidations are heard again: start from nothing (some may have been missed).
    pub fn resume(&self) {
        let mut entries = self.entries();
        entries.clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.live.store(true, Ordering::Release);
    }

    /// Invalidations can no longer be heard: serve nothing until `resume`.
    pub fn suspend(&self) {
        self.live.store(false, Ordering::Release);
        let mut entries = self.entries();
        entries.clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The account or its devices changed (here or on another pod).
    pub fn invalidate(&self, aci: Aci) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(&aci);
    }

    /// The generation a read from the store starts at; `None` when the cache is off.
    pub(super) fn begin(&self) -> Option<u64> {
        self.live
            .load(Ordering::Acquire)
            .then(|| self.generation.load(Ordering::Acquire))
    }

    fn fresh<T: Clone>(&self, slot: &Option<(Instant, T)>) -> Option<T> {
        slot.as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub(super) fn account(&self, aci: Aci) -> Option<Account> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.entries()
            .get(&aci)
            .and_then(|e| self.fresh(&e.account))
    }

    pub(super) fn devices(&self, aci: Aci) -> Option<Arc<[Device]>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.entries()
            .get(&aci)
            .and_then(|e| self.fresh(&e.devices))
    }

    /// Stores what a read that began at `generation` found, unless something was
    /// invalidated since.
    pub(super) fn put(&self, aci: Aci, generation: u64, fill: impl FnOnce(&mut Entry)) {
        let mut entries = self.entries();
        if !self.live.load(Ordering::Acquire)
            || self.generation.load(Ordering::Acquire) != generation
        {
            return;
        }
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&aci) {
            let ttl = self.ttl;
            entries.retain(|_, e| {
                e.account.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl)
                    || e.devices.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl)
            });
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        fill(entries.entry(aci).or_default());
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries().len()
    }
}
