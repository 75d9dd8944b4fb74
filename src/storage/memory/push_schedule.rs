//! Scheduled wake-ups in memory: the Redis scripts' rules over ordered maps, per process
//! (the embedded mode has one). The lock is a `std::sync::Mutex`: no critical section
//! awaits, and each is a few map operations.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::ids::{Aci, DeviceId};
use crate::storage::{DuePush, PushScheduleStore, ScheduledKind, StorageError, StorageResult};

type Device = (Aci, DeviceId);

/// Orders kinds due at the same time: a delayed (urgent) one first, as the Redis script.
fn rank(kind: ScheduledKind) -> u8 {
    match kind {
        ScheduledKind::Delayed => 0,
        ScheduledKind::Background => 1,
    }
}

#[derive(Default)]
struct Schedule {
    /// Every scheduled entry by (due time, rank, device): `take_due` reads it in order.
    queue: BTreeSet<(i64, u8, Aci, DeviceId)>,
    /// Each device's due time per kind, to find its entry in `queue`.
    background: HashMap<Device, i64>,
    delayed: HashMap<Device, i64>,
    /// A device's last background push: the time its caller passed, and when the entry
    /// expires in real time (Redis's PX).
    last: HashMap<Device, (i64, Instant)>,
    /// Claimed jobs and when each claim expires.
    jobs: HashMap<String, Instant>,
}

impl Schedule {
    fn times(&mut self, kind: ScheduledKind) -> &mut HashMap<Device, i64> {
        match kind {
            ScheduledKind::Background => &mut self.background,
            ScheduledKind::Delayed => &mut self.delayed,
        }
    }

    fn remove(&mut self, kind: ScheduledKind, device: Device) -> bool {
        let Some(at) = self.times(kind).remove(&device) else {
            return false;
        };
        self.queue.remove(&(at, rank(kind), device.0, device.1));
        true
    }

    fn insert(&mut self, kind: ScheduledKind, device: Device, at: i64) {
        self.remove(kind, device);
        self.times(kind).insert(device, at);
        self.queue.insert((at, rank(kind), device.0, device.1));
    }
}

#[derive(Default)]
pub struct MemoryPushScheduleStore {
    schedule: Mutex<Schedule>,
}

impl MemoryPushScheduleStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StorageResult<MutexGuard<'_, Schedule>> {
        self.schedule
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("push schedule lock poisoned")))
    }
}

/// `ms` from now, for expiries (a non-positive one is already over).
fn expiry(ms: i64) -> Instant {
    Instant::now() + Duration::from_millis(ms.max(0) as u64)
}

#[async_trait]
impl PushScheduleStore for MemoryPushScheduleStore {
    async fn schedule_background(
        &self,
        aci: Aci,
        device: DeviceId,
        now_ms: i64,
        interval_ms: i64,
    ) -> StorageResult<i64> {
        let mut schedule = self.lock()?;
        if let Some(at) = schedule.background.get(&(aci, device)) {
            return Ok(*at);
        }
        let last = schedule
            .last
            .get(&(aci, device))
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(last, _)| *last);
        let at = match last {
            Some(last) if now_ms - last < interval_ms => last + interval_ms,
            _ => now_ms,
        };
        schedule.insert(ScheduledKind::Background, (aci, device), at);
        Ok(at)
    }

    async fn schedule_delayed(&self, aci: Aci, device: DeviceId, at_ms: i64) -> StorageResult<()> {
        self.lock()?
            .insert(ScheduledKind::Delayed, (aci, device), at_ms);
        Ok(())
    }

    async fn cancel(&self, aci: Aci, device: DeviceId) -> StorageResult<bool> {
        let mut schedule = self.lock()?;
        let background = schedule.remove(ScheduledKind::Background, (aci, device));
        let delayed = schedule.remove(ScheduledKind::Delayed, (aci, device));
        Ok(background || delayed)
    }

    async fn take_due(
        &self,
        now_ms: i64,
        limit: usize,
        interval_ms: i64,
    ) -> StorageResult<Vec<DuePush>> {
        let mut schedule = self.lock()?;
        let now = Instant::now();
        schedule.last.retain(|_, (_, expires)| *expires > now);
        let due: Vec<_> = schedule
            .queue
            .iter()
            .take_while(|(at, ..)| *at <= now_ms)
            .take(limit)
            .copied()
            .collect();
        let mut taken = Vec::with_capacity(due.len());
        for (_, rank, aci, device) in due {
            let kind = if rank == 0 {
                ScheduledKind::Delayed
            } else {
                ScheduledKind::Background
            };
            schedule.remove(kind, (aci, device));
            if kind == ScheduledKind::Background {
                schedule
                    .last
                    .insert((aci, device), (now_ms, expiry(interval_ms)));
            }
            taken.push(DuePush { aci, device, kind });
        }
        Ok(taken)
    }

    async fn claim_job(&self, name: &str, ttl_ms: i64) -> StorageResult<bool> {
        let mut schedule = self.lock()?;
        let now = Instant::now();
        schedule.jobs.retain(|_, expires| *expires > now);
        if schedule.jobs.contains_key(name) {
            return Ok(false);
        }
        schedule.jobs.insert(name.to_owned(), expiry(ttl_ms));
        Ok(true)
    }
}
