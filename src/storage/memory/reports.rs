//! Spam-report hashes, reporter sets and the report log in memory, for the embedded mode.
//! Hashes expire in real time as Redis's do; the reporter sets are exact sets.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::ids::Aci;
use crate::domain::reports::SpamReport;
use crate::storage::reports::{ReportHashStore, SpamReportLog};
use crate::storage::{StorageError, StorageResult};

#[derive(Default)]
struct State {
    hashes: HashMap<[u8; 32], Instant>,
    /// Every remembered hash with its expiry, in the order remembered: with one TTL for
    /// all, the front expires first, so pruning never scans the rest.
    expiries: VecDeque<(Instant, [u8; 32])>,
    reporters: HashMap<Aci, (HashSet<Aci>, Instant)>,
    /// (time, sequence) -> report.
    log: BTreeMap<(i64, u64), SpamReport>,
}

impl State {
    fn prune(&mut self, now: Instant) {
        while let Some((expires, hash)) = self.expiries.front().copied() {
            if expires > now {
                break;
            }
            self.expiries.pop_front();
            if self.hashes.get(&hash).is_some_and(|e| *e <= now) {
                self.hashes.remove(&hash);
            }
        }
    }
}

#[derive(Default)]
pub struct MemoryReportStore {
    state: Mutex<State>,
}

impl MemoryReportStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StorageResult<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("report store lock poisoned")))
    }
}

#[async_trait]
impl ReportHashStore for MemoryReportStore {
    async fn remember(&self, hash: &[u8; 32], ttl: Duration) -> StorageResult<()> {
        let now = Instant::now();
        let mut state = self.lock()?;
        state.prune(now);
        let expires = now + ttl;
        state.hashes.insert(*hash, expires);
        state.expiries.push_back((expires, *hash));
        Ok(())
    }

    async fn take(&self, hash: &[u8; 32]) -> StorageResult<bool> {
        let now = Instant::now();
        let mut state = self.lock()?;
        state.prune(now);
        Ok(state.hashes.remove(hash).is_some_and(|e| e > now))
    }

    async fn add_reporter(&self, source: Aci, reporter: Aci, ttl: Duration) -> StorageResult<()> {
        let now = Instant::now();
        let mut state = self.lock()?;
        state.reporters.retain(|_, (_, expires)| *expires > now);
        let entry = state
            .reporters
            .entry(source)
            .or_insert_with(|| (HashSet::new(), now));
        entry.0.insert(reporter);
        entry.1 = now + ttl;
        Ok(())
    }

    async fn reporters(&self, source: Aci) -> StorageResult<u64> {
        let now = Instant::now();
        let state = self.lock()?;
        Ok(state
            .reporters
            .get(&source)
            .filter(|(_, expires)| *expires > now)
            .map_or(0, |(set, _)| set.len() as u64))
    }
}

#[async_trait]
impl SpamReportLog for MemoryReportStore {
    async fn record(&self, report: &SpamReport) -> StorageResult<()> {
        let mut state = self.lock()?;
        let sequence = state.log.len() as u64;
        state
            .log
            .insert((report.reported_at_ms, sequence), report.clone());
        Ok(())
    }

    async fn since(&self, since_ms: i64, limit: usize) -> StorageResult<Vec<SpamReport>> {
        let state = self.lock()?;
        Ok(state
            .log
            .range((since_ms, 0)..)
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }
}
