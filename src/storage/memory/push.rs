//! Push registrations in memory: kept on the device they belong to (`accounts`), so they go
//! with it, as Postgres's foreign key removes them.

use async_trait::async_trait;
use uuid::Uuid;

use super::accounts::{MemoryAccountStore, StoredDevice};
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::push::{PushKind, PushRegistration};
use crate::storage::{PushStore, StorageResult, StoredPush};

impl MemoryAccountStore {
    fn with_push<T>(
        &self,
        aci: Aci,
        id: DeviceId,
        f: impl FnOnce(&mut StoredDevice) -> T,
    ) -> StorageResult<Option<T>> {
        Ok(self
            .lock()?
            .get_mut(&aci)
            .and_then(|account| account.devices.get_mut(&id))
            .map(f))
    }
}

#[async_trait]
impl PushStore for MemoryAccountStore {
    async fn set_push(
        &self,
        aci: Aci,
        id: DeviceId,
        registration: &PushRegistration,
        now_ms: i64,
    ) -> StorageResult<bool> {
        let set = self.with_push(aci, id, |device| {
            device.push = Some(StoredPush {
                registration: registration.clone(),
                updated_ms: now_ms,
            });
        })?;
        Ok(set.is_some())
    }

    async fn clear_push(&self, aci: Aci, id: DeviceId, kind: PushKind) -> StorageResult<bool> {
        let cleared = self.with_push(aci, id, |device| {
            let matches = device
                .push
                .as_ref()
                .is_some_and(|p| p.registration.kind() == kind);
            if matches {
                device.push = None;
            }
            matches
        })?;
        Ok(cleared == Some(true))
    }

    async fn clear_push_if(
        &self,
        aci: Aci,
        id: DeviceId,
        registration: &PushRegistration,
    ) -> StorageResult<bool> {
        let cleared = self.with_push(aci, id, |device| {
            let matches = device
                .push
                .as_ref()
                .is_some_and(|p| same_target(&p.registration, registration));
            if matches {
                device.push = None;
            }
            matches
        })?;
        Ok(cleared == Some(true))
    }

    async fn activate_webpush(&self, aci: Aci, id: DeviceId, token: Uuid) -> StorageResult<bool> {
        let activated = self.with_push(aci, id, |device| match device.push.as_mut() {
            Some(StoredPush {
                registration: PushRegistration::WebPush(web),
                ..
            }) if web.activation == token => {
                web.active = true;
                true
            }
            _ => false,
        })?;
        Ok(activated == Some(true))
    }

    async fn push(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<StoredPush>> {
        Ok(self
            .with_push(aci, id, |device| device.push.clone())?
            .flatten())
    }

    async fn idle_devices(
        &self,
        seen_from_day_ms: i64,
        seen_until_day_ms: i64,
        after: Option<(Aci, DeviceId)>,
        limit: usize,
    ) -> StorageResult<Vec<(Aci, DeviceId)>> {
        let accounts = self.lock()?;
        let mut idle: Vec<(Aci, DeviceId)> = accounts
            .iter()
            .flat_map(|(aci, account)| account.devices.iter().map(|(id, d)| ((*aci, *id), d)))
            .filter(|(key, device)| {
                after.is_none_or(|after| *key > after)
                    && (seen_from_day_ms..=seen_until_day_ms).contains(&device.last_seen_day_ms())
                    && device
                        .push
                        .as_ref()
                        .is_some_and(|p| wakeable(&p.registration))
            })
            .map(|(key, _)| key)
            .collect();
        // The accounts map is unordered: sort what matched, then page.
        idle.sort_unstable();
        idle.truncate(limit);
        Ok(idle)
    }
}

/// Whether pushes reach this registration (an inactive WebPush subscription gets none).
fn wakeable(registration: &PushRegistration) -> bool {
    match registration {
        PushRegistration::WebPush(web) => web.active,
        PushRegistration::Fcm(_) | PushRegistration::Apns(_) => true,
    }
}

/// The same registration, whether or not it was activated since (Postgres compares every
/// column but `active` too).
fn same_target(stored: &PushRegistration, given: &PushRegistration) -> bool {
    match (stored, given) {
        (PushRegistration::WebPush(a), PushRegistration::WebPush(b)) => {
            a.subscription == b.subscription && a.activation == b.activation
        }
        (a, b) => a == b,
    }
}
