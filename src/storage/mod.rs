//! Storage traits, one small trait per area, and their backends: `postgres` (accounts,
//! devices, keys, server secrets, push registrations, usernames), `redis` (queues, rate-limit buckets,
//! link codes, scheduled wake-ups), `memory` (the embedded mode) and `objects` (attachment
//! bytes, behind their own trait). Storage never sees HTTP types; a failure is an error, never "not found".

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::domain::accounts::{
    AccessSettings, Account, Device, DeviceAttributes, NewAccount, NewDevice,
};
pub use crate::domain::clock::now_ms;
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::keys::{ClaimedKeys, KemSignedPreKey, KeyCounts, KeyUpload, SignedEcPreKey};
use crate::domain::messages::QUEUED_MESSAGE_OVERHEAD;
use crate::domain::push::{PushKind, PushRegistration};
pub use crate::domain::queued::SharedMessage;
pub(crate) use crate::domain::queued::stored;

pub mod cache;
pub mod invites;
pub mod linked_devices;
pub mod memory;
pub mod objects;
pub mod postgres;
pub mod profiles;
pub mod redis;
pub mod reports;
pub mod uploads;
pub mod usernames;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store does not answer (connection refused, pool timeout): retry later.
    #[error("store unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// The store answered with an error we did not expect.
    #[error("store error: {0:#}")]
    Backend(anyhow::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// Accounts and their devices (Postgres in production).
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates the account, its primary device and its signed keys atomically.
    async fn create(&self, new: &NewAccount) -> StorageResult<()>;

    async fn account(&self, aci: Aci) -> StorageResult<Option<Account>>;

    async fn device(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<Device>>;

    /// Every device of the account, by ascending id (empty when the account is unknown).
    async fn devices(&self, aci: Aci) -> StorageResult<Vec<Device>>;

    /// Replaces a device's attributes (and the account's access settings when given);
    /// `false` when the device does not exist.
    async fn update_attributes(
        &self,
        aci: Aci,
        id: DeviceId,
        attributes: &DeviceAttributes,
        access: Option<&AccessSettings>,
    ) -> StorageResult<bool>;

    /// Deletes the account with its devices and keys; `false` when it did not exist.
    async fn delete(&self, aci: Aci) -> StorageResult<bool>;

    /// Replaces one device's (client-encrypted) name; `false` when the device does not
    /// exist (`PUT /v1/accounts/name/`).
    async fn set_device_name(&self, aci: Aci, id: DeviceId, name: &[u8]) -> StorageResult<bool>;

    /// Stores a device's sealed creation time unless it has one (a device stored before
    /// sealpost kept it; PROTOCOL.md 16.2): `false` when it had one already, or does not
    /// exist. So a device's sealed time, once stored, never changes.
    async fn seal_created_at_once(
        &self,
        aci: Aci,
        id: DeviceId,
        sealed: &[u8],
    ) -> StorageResult<bool>;

    /// Adds a device to the account with the lowest free id (2 or more), with its signed
    /// keys, in one transaction (nothing is stored unless it is `Added`).
    async fn add_device(
        &self,
        aci: Aci,
        device: &NewDevice,
        max_devices: usize,
    ) -> StorageResult<DeviceAdded>;

    /// Deletes one device with its keys; `false` when it did not exist.
    async fn remove_device(&self, aci: Aci, id: DeviceId) -> StorageResult<bool>;

    /// Records that the device was seen on the day starting at `day_ms` (only ever forward).
    async fn touch_device(&self, aci: Aci, id: DeviceId, day_ms: i64) -> StorageResult<()>;

    /// Sets whether the device fetches its messages over its socket instead of being woken
    /// by push (registering a push token clears it); `false` when the device does not exist.
    async fn set_fetches_messages(
        &self,
        aci: Aci,
        id: DeviceId,
        fetches_messages: bool,
    ) -> StorageResult<bool>;

    /// The password hashes of those of `devices` that exist (absent ones are left out), read
    /// from the store itself, never from a cache: re-validating open sockets must see a
    /// removal made a moment ago on any pod. One round trip for the whole slice.
    async fn password_hashes(
        &self,
        devices: &[(Aci, DeviceId)],
    ) -> StorageResult<std::collections::HashMap<(Aci, DeviceId), String>>;
}

/// Prekeys (Postgres in production). Registration writes the signed ones through
/// [`AccountStore::create`]; the prekey API reads and replaces them here.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Applies an upload in one transaction: a given list replaces every stored one-time
    /// key of its type, a given signed or last-resort key replaces the stored one. `false`
    /// (and nothing stored) when the device does not exist.
    async fn store_keys(&self, aci: Aci, id: DeviceId, upload: &KeyUpload) -> StorageResult<bool>;

    async fn counts(&self, aci: Aci, id: DeviceId) -> StorageResult<KeyCounts>;

    /// Removes and returns one EC and one Kyber one-time key of the device (the lowest ids),
    /// each `None` when none is left, with the device's signed keys, in one step. Whatever
    /// the concurrency, across processes, a key is returned by at most one call. `None`, and
    /// nothing consumed, when the device has no signed prekey (or does not exist).
    async fn claim(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<ClaimedKeys>>;

    async fn signed_pre_key(&self, aci: Aci, id: DeviceId)
    -> StorageResult<Option<SignedEcPreKey>>;

    async fn pq_last_resort_pre_key(
        &self,
        aci: Aci,
        id: DeviceId,
    ) -> StorageResult<Option<KemSignedPreKey>>;
}

/// What `AccountStore::add_device` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceAdded {
    /// Linked with this id.
    Added(DeviceId),
    /// The account does not exist (nothing was stored).
    NoAccount,
    /// The account already has this many devices, `max_devices` or more (nothing was stored).
    Full(usize),
}

/// A queued message: its position in the device's queue, its server GUID and the serialized
/// envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    pub seq: u64,
    pub guid: Uuid,
    pub envelope: Bytes,
}

/// How long every device queue lives and how much it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePolicy {
    /// A queue expires this long after its last insert.
    pub ttl: Duration,
    /// Messages one device queue holds at most.
    pub max_messages: u64,
    /// Bytes one device queue holds at most: per message its charged length
    /// ([`stored::charged_len`]) plus [`QUEUED_MESSAGE_OVERHEAD`].
    pub max_bytes: u64,
}

impl QueuePolicy {
    /// Whether a queue holding `count` messages of `bytes` charged bytes can take one more
    /// of `charged` bytes.
    pub fn admits(&self, count: u64, bytes: u64, charged: u64) -> bool {
        count < self.max_messages
            && bytes + charged + (count + 1) * QUEUED_MESSAGE_OVERHEAD <= self.max_bytes
    }
}

/// What queueing one message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    Queued,
    /// A message with this GUID is already queued; nothing changed.
    Duplicate,
    /// The queue is at its [`QueuePolicy`] cap; nothing changed.
    Full,
}

/// Per-device message queues (Redis in production): FIFO, deduplicated by server GUID,
/// expiring a configured time after the last insert, bounded per [`QueuePolicy`].
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Appends to the device's queue unless a message with this GUID is already queued or
    /// the queue is at its cap, and refreshes the queue's expiry. Atomic: a full queue is
    /// left exactly as it was.
    async fn insert(
        &self,
        aci: Aci,
        id: DeviceId,
        guid: Uuid,
        envelope: Bytes,
    ) -> StorageResult<Inserted>;

    /// Up to `limit` messages queued after position `after` (0: from the start), oldest first.
    async fn read(
        &self,
        aci: Aci,
        id: DeviceId,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<QueuedMessage>>;

    /// Removes one message (it was acknowledged); `false` when it was not queued.
    async fn remove(&self, aci: Aci, id: DeviceId, guid: Uuid) -> StorageResult<bool>;

    /// Removes several acknowledged messages of one queue in one step; one `bool` per GUID,
    /// in order, `false` for one that was not queued.
    async fn remove_many(
        &self,
        aci: Aci,
        id: DeviceId,
        guids: &[Uuid],
    ) -> StorageResult<Vec<bool>> {
        let mut removed = Vec::with_capacity(guids.len());
        for guid in guids {
            removed.push(self.remove(aci, id, *guid).await?);
        }
        Ok(removed)
    }

    /// Drops the device's whole queue (the device or account is gone).
    async fn delete_queue(&self, aci: Aci, id: DeviceId) -> StorageResult<()>;

    /// Stores the part of a multi-recipient message that `references` queued messages
    /// share, once; it goes with the last of them, or the queue TTL.
    async fn insert_shared(
        &self,
        id: Uuid,
        shared: &SharedMessage,
        references: u32,
    ) -> StorageResult<()>;

    /// Drops a shared payload whatever references are left (a refused send takes back
    /// what it queued).
    async fn delete_shared(&self, id: Uuid) -> StorageResult<()>;

    /// Queues, for `aci`'s device `id`, the copy of shared message `shared` that reads
    /// return as `SharedMessage::envelope_for(aci, guid)`. Otherwise like
    /// [`MessageStore::insert`]. The queued value is the reference alone (21 bytes), but it
    /// counts `charged` bytes (its recipient's prefix and the shared payload) against the
    /// queue's cap, like the envelope it stands for.
    async fn insert_referencing(
        &self,
        aci: Aci,
        id: DeviceId,
        guid: Uuid,
        shared: Uuid,
        charged: u32,
    ) -> StorageResult<Inserted> {
        self.insert(aci, id, guid, stored::reference(shared, charged))
            .await
    }
}

/// Single-use device-linking codes (Redis in production), each naming its account.
#[async_trait]
pub trait LinkCodeStore: Send + Sync {
    async fn put_code(&self, code: &str, aci: Aci, ttl: Duration) -> StorageResult<()>;

    /// The code's account, without using the code up.
    async fn peek_code(&self, code: &str) -> StorageResult<Option<Aci>>;

    /// Uses the code up: only one caller ever gets `Some`.
    async fn take_code(&self, code: &str) -> StorageResult<Option<Aci>>;
}

/// Server-wide secrets that every pod shares and that no store they protect holds
/// (Postgres in production; Redis holds what they key).
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The 32-byte secret `name`: made at random by the first caller, the same for every
    /// caller, on every pod, ever after.
    async fn secret(&self, name: &str) -> StorageResult<[u8; 32]>;
}

/// A token bucket: holds up to `bucket_size` permits and regains one every
/// `permit_period_ms` milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketSpec {
    pub bucket_size: u64,
    pub permit_period_ms: f64,
}

/// The outcome of asking a token bucket for permits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BucketDecision {
    Allowed,
    Denied { retry_after: Duration },
}

/// Token buckets (Redis in production, shared by every pod).
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Refills the bucket `key` per `spec`, then takes `permits` if `consume` and enough are
    /// there; with `consume == false` it only reports whether they are. One atomic step.
    async fn take(
        &self,
        key: &str,
        spec: BucketSpec,
        permits: u64,
        consume: bool,
    ) -> StorageResult<BucketDecision>;
}

/// Something readiness can ask "do you answer?".
#[async_trait]
pub trait Probe: Send + Sync {
    /// The metric label and log name of this store.
    fn name(&self) -> &'static str;
    async fn ping(&self) -> StorageResult<()>;

    /// The connection pool's state, for stores that keep one (sampled for metrics).
    fn pool(&self) -> Option<PoolStatus> {
        None
    }
}

/// A connection pool's state at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    pub max: usize,
    /// Connections open, idle or in use.
    pub size: usize,
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// A device's push registration as stored, with when it was set (APNs reports when a
/// token became invalid: a registration newer than that is kept, PROTOCOL.md 11.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPush {
    pub registration: PushRegistration,
    pub updated_ms: i64,
}

/// Push registrations (PROTOCOL.md 11.1, 11.2): at most one per device, gone with it.
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Replaces the device's registration, of whatever kind, with `registration`;
    /// `false` (and nothing stored) when the device does not exist.
    async fn set_push(
        &self,
        aci: Aci,
        id: DeviceId,
        registration: &PushRegistration,
        now_ms: i64,
    ) -> StorageResult<bool>;

    /// Removes the device's registration if it is of `kind`; whether one was removed.
    async fn clear_push(&self, aci: Aci, id: DeviceId, kind: PushKind) -> StorageResult<bool>;

    /// Removes the device's registration only if it is still `registration` (a token a
    /// provider refused must not take a newer one with it); whether it was removed.
    async fn clear_push_if(
        &self,
        aci: Aci,
        id: DeviceId,
        registration: &PushRegistration,
    ) -> StorageResult<bool>;

    /// Activates the device's WebPush subscription if `token` is its activation token;
    /// whether it is active now.
    async fn activate_webpush(&self, aci: Aci, id: DeviceId, token: Uuid) -> StorageResult<bool>;

    async fn push(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<StoredPush>>;

    /// The devices that can be woken (any FCM or APNs token, or an active WebPush
    /// subscription) and were last seen on a day in `[seen_from_day_ms, seen_until_day_ms]`,
    /// by ascending (ACI, device id): up to `limit` of those after `after` (keyset paging,
    /// for the daily idle-reminder job, PROTOCOL.md 11.4 step 5).
    async fn idle_devices(
        &self,
        seen_from_day_ms: i64,
        seen_until_day_ms: i64,
        after: Option<(Aci, DeviceId)>,
        limit: usize,
    ) -> StorageResult<Vec<(Aci, DeviceId)>>;
}

/// Which scheduled wake-up (PROTOCOL.md 11.4): a background push (non-urgent messages,
/// at most one per device per interval) or a delayed urgent one (a socket closed with
/// messages queued; an idle reminder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduledKind {
    Background,
    Delayed,
}

/// A scheduled wake-up that is due, taken off the schedule for its caller to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DuePush {
    pub aci: Aci,
    pub device: DeviceId,
    pub kind: ScheduledKind,
}

/// Scheduled wake-ups (PROTOCOL.md 11.4 steps 2-4, 11.6; Redis in production, shared by
/// every pod): at most one of each kind per device, keyed by ACI and device id alone (a
/// stale entry for a removed device is harmless: the sender finds no registration). The
/// clock is always passed in, never read here, so that tests can drive it.
#[async_trait]
pub trait PushScheduleStore: Send + Sync {
    /// 11.4 step 2: schedules a background push at `last + interval_ms` when the device's
    /// last background push went out less than `interval_ms` before `now_ms`, else at
    /// `now_ms`; one already scheduled is not moved (ZADD NX). Returns the due time in effect.
    async fn schedule_background(
        &self,
        aci: Aci,
        device: DeviceId,
        now_ms: i64,
        interval_ms: i64,
    ) -> StorageResult<i64>;

    /// 11.4 step 3: an urgent push at `at_ms`, replacing an earlier scheduled delayed one.
    async fn schedule_delayed(&self, aci: Aci, device: DeviceId, at_ms: i64) -> StorageResult<()>;

    /// 11.4 step 4: cancels both kinds for the device; whether any was scheduled.
    async fn cancel(&self, aci: Aci, device: DeviceId) -> StorageResult<bool>;

    /// Takes up to `limit` pushes due at `now_ms` (score <= now), earliest first, removing
    /// them in the same atomic step: each entry goes to exactly one caller, whichever pod
    /// asks. Taking a background one records `now_ms` as that device's last background push,
    /// kept `interval_ms` (then it expires).
    async fn take_due(
        &self,
        now_ms: i64,
        limit: usize,
        interval_ms: i64,
    ) -> StorageResult<Vec<DuePush>>;

    /// Whether this caller is the one that runs job `name` (e.g. "idle-reminders:2026-12-03"):
    /// true for exactly one caller until `ttl_ms` passes.
    async fn claim_job(&self, name: &str, ttl_ms: i64) -> StorageResult<bool>;
}

/// Every store the application uses, as trait objects; built by the composition root.
#[derive(Clone)]
pub struct Stores {
    pub accounts: Arc<dyn AccountStore>,
    pub keys: Arc<dyn KeyStore>,
    pub rate_limits: Arc<dyn RateLimitStore>,
    pub messages: Arc<dyn MessageStore>,
    pub link_codes: Arc<dyn LinkCodeStore>,
    /// Which device linked with which code, for the primary waiting to hear it.
    pub linked_devices: Arc<dyn linked_devices::LinkedDeviceStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub push: Arc<dyn PushStore>,
    /// Attachment bytes (memory in the embedded mode, else a directory; S3 to come).
    pub objects: Arc<dyn objects::ObjectStore>,
    pub push_schedule: Arc<dyn PushScheduleStore>,
    /// Versioned profiles (Postgres, or memory in the embedded mode).
    pub profiles: Arc<dyn profiles::ProfileStore>,
    /// Resumable uploads in progress (Redis, or memory in the embedded mode).
    pub uploads: Arc<dyn uploads::UploadStore>,
    /// Username hashes and links (Postgres, or memory in the embedded mode).
    pub usernames: Arc<dyn usernames::UsernameStore>,
    /// Which queued messages may be reported as spam (Redis, or memory).
    pub report_hashes: Arc<dyn reports::ReportHashStore>,
    /// The spam reports that counted (Postgres, or memory).
    pub spam_reports: Arc<dyn reports::SpamReportLog>,
    /// Invite tokens for `registration = "token"` (Postgres, or memory).
    pub invites: Arc<dyn invites::InviteStore>,
    /// What readiness checks (empty in the embedded mode: memory always answers).
    pub probes: Vec<Arc<dyn Probe>>,
    /// The cache in front of `accounts` (Postgres only: memory needs none).
    pub account_cache: Option<Arc<cache::AccountCache>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_admits_up_to_its_count_and_bytes_with_the_overhead() {
        let policy = QueuePolicy {
            ttl: Duration::from_secs(1),
            max_messages: 2,
            max_bytes: 100 + 2 * QUEUED_MESSAGE_OVERHEAD,
        };
        assert!(policy.admits(0, 0, 100));
        assert!(!policy.admits(0, 0, 101 + QUEUED_MESSAGE_OVERHEAD));
        assert!(policy.admits(1, 50, 50));
        assert!(!policy.admits(1, 50, 51));
        assert!(!policy.admits(2, 0, 0), "the count cap");
    }
}
