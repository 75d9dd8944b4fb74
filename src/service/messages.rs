//! Sending (validation, the device check, envelopes, queueing, wake-ups) and what happens
//! when a device acknowledges a message (removal, latency, delivery receipts).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::try_join_all;
use prost::Message as _;
use uuid::Uuid;

use subtle::ConstantTimeEq;

use super::access::{Requester, check_access_key, combined_access_key};
use crate::delivery::{DeviceEvent, Notifier};
use crate::domain::accounts::AccessKey;
use crate::domain::clock::now_ms;
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::messages::{
    ContentError, DeliveredMeta, Delivery, DeliveryAck, DeviceMismatch, NewEnvelope,
    OutgoingMessages, QUEUED_MESSAGE_OVERHEAD, Source, check_devices, delivery_receipt,
    multi_recipient_template,
};
use crate::domain::messages::{mismatched_devices, stale_devices};
use crate::domain::multi_recipient::{MultiRecipientMessage, Recipient};
use crate::domain::queued::SharedMessage;
use crate::domain::reports::{REPORT_HASH_TTL, report_hash};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::metrics::Metrics;
use crate::storage::reports::ReportHashStore;
use crate::storage::{AccountStore, Inserted, MessageStore};

use super::wakeups::WakeupService;

/// One queue insert of a send: where it went and what the store did.
type QueueInsert = (Aci, DeviceId, Uuid, Inserted);

/// The query options of a multi-recipient send.
#[derive(Clone, Copy, Debug)]
pub struct MultiRecipientOptions {
    pub timestamp: u64,
    pub online: bool,
    pub urgent: bool,
}

#[derive(Clone)]
pub struct MessageService {
    accounts: Arc<dyn AccountStore>,
    messages: Arc<dyn MessageStore>,
    notifier: Arc<dyn Notifier>,
    limiter: RateLimiter,
    metrics: Metrics,
    /// Pushes for devices no pod holds a socket for.
    wakeups: WakeupService,
    /// Where identified messages are made reportable (PROTOCOL.md 17).
    report_hashes: Arc<dyn ReportHashStore>,
}

/// How a queued envelope wakes its device.
#[derive(Clone, Copy)]
struct Wake<'a> {
    /// Dropped again when no socket heard of it; never pushed.
    ephemeral: bool,
    /// An urgent push at once, else a coalesced background one.
    urgent: bool,
    /// The `messages_sent` label.
    kind: &'a str,
}

impl MessageService {
    pub fn new(
        accounts: Arc<dyn AccountStore>,
        messages: Arc<dyn MessageStore>,
        notifier: Arc<dyn Notifier>,
        limiter: RateLimiter,
        metrics: Metrics,
        wakeups: WakeupService,
        report_hashes: Arc<dyn ReportHashStore>,
    ) -> Self {
        Self {
            accounts,
            messages,
            notifier,
            limiter,
            metrics,
            wakeups,
            report_hashes,
        }
    }

    /// Queues one envelope per listed device of `target`, and wakes its sockets. Nothing is
    /// queued unless the whole request is valid, within the target's `inboundMessageBytes`
    /// budget (content plus a per-message overhead) and fits every listed device's queue.
    /// Returns `needsSync`.
    pub async fn send(
        &self,
        sender: Requester,
        target: Aci,
        outgoing: OutgoingMessages,
    ) -> Result<bool, AppError> {
        outgoing.check().map_err(|e| match e {
            ContentError::Invalid(e) => AppError::from(e),
            ContentError::TooLarge => AppError::PayloadTooLarge,
        })?;
        let source = match sender {
            Requester::AccessKey(key) => {
                let account = self.accounts.account(target).await?;
                check_access_key(account.as_ref(), &key, &self.metrics)?;
                None
            }
            Requester::Device(device) => {
                let key = format!("{}__{}", device.aci, target);
                self.limiter.check(Limit::Messages, &key).await?;
                Some(Source {
                    aci: device.aci,
                    device: device.device,
                })
            }
        };
        self.limiter
            .check_permits(
                Limit::InboundMessageBytes,
                &target.to_string(),
                outgoing.charged_bytes(),
            )
            .await?;

        let devices: BTreeMap<DeviceId, u16> = self
            .accounts
            .devices(target)
            .await?
            .into_iter()
            .map(|d| (d.id, d.attributes.registration_id.get()))
            .collect();
        // Every account has its primary device: no devices means no account. (A sealed
        // sender already got 401 for an unknown target, before this.)
        if devices.is_empty() {
            return Err(AppError::NotFound("no such account".into()));
        }
        let is_sync = source.is_some_and(|s| s.aci == target);
        let listed: Vec<(DeviceId, u16)> = outgoing
            .messages
            .iter()
            .map(|m| (m.device, m.registration_id))
            .collect();
        check_devices(
            &devices,
            &listed,
            source.filter(|_| is_sync).map(|s| s.device),
        )
        .map_err(|mismatch| match mismatch {
            DeviceMismatch::Stale(stale) => AppError::StaleDevices(stale),
            DeviceMismatch::Mismatched { missing, extra } => {
                AppError::MismatchedDevices { missing, extra }
            }
        })?;

        let needs_sync = match source {
            Some(s) if !is_sync => self.accounts.devices(s.aci).await?.len() > 1,
            _ => false,
        };

        let server_timestamp = now_ms() as u64;
        let client_timestamp = if outgoing.timestamp == 0 {
            server_timestamp
        } else {
            outgoing.timestamp
        };
        let kind = if outgoing.online {
            "ephemeral"
        } else if source.is_none() {
            "sealed"
        } else {
            "identified"
        };
        let inserts = outgoing.messages.iter().map(|message| {
            let (guid, envelope) = NewEnvelope {
                kind: message.kind,
                source,
                destination: target,
                client_timestamp,
                server_timestamp,
                content: message.content.clone(),
                urgent: outgoing.urgent,
                ephemeral: outgoing.online,
            }
            .build();
            let device = message.device;
            // An identified message for another account may be reported as spam for a
            // week (Signal's rule); the hash goes to the store beside the insert, in the same
            // round trip's time. Sealed and ephemeral messages leave none.
            let reportable = source
                .filter(|s| s.aci != target && !outgoing.online)
                .map(|s| report_hash(guid, s.aci));
            async move {
                let insert = self.messages.insert(
                    target,
                    device,
                    guid,
                    Bytes::from(envelope.encode_to_vec()),
                );
                let remember = async {
                    if let Some(hash) = &reportable
                        && let Err(e) = self.report_hashes.remember(hash, REPORT_HASH_TTL).await
                    {
                        // The message is still sent; only a report of it will not count.
                        tracing::warn!(error = %e, "could not make a message reportable");
                    }
                };
                let (inserted, ()) = tokio::join!(insert, remember);
                Ok::<QueueInsert, AppError>((target, device, guid, inserted?))
            }
        });
        let queued = try_join_all(inserts).await?;
        self.all_or_nothing(&queued).await?;
        let wake = Wake {
            ephemeral: outgoing.online,
            urgent: outgoing.urgent,
            kind,
        };
        self.wake_all(&queued, wake).await?;
        Ok(needs_sync)
    }

    /// A send reaches every queue it names or none: when one was full, what the send queued
    /// in the others is taken back out (only its own messages: nothing queued before is
    /// touched) and the send is refused. A socket reading in between may already have got
    /// one of those; it is then delivered although the sender saw 429, as after a lost
    /// response.
    async fn all_or_nothing(&self, queued: &[QueueInsert]) -> Result<(), AppError> {
        if !queued
            .iter()
            .any(|(.., inserted)| *inserted == Inserted::Full)
        {
            return Ok(());
        }
        let removals = queued
            .iter()
            .filter(|(.., inserted)| *inserted == Inserted::Queued)
            .map(|(aci, device, guid, _)| self.messages.remove(*aci, *device, *guid));
        try_join_all(removals).await?;
        Err(AppError::QueueFull)
    }

    /// Wakes the sockets of every device a send queued for.
    async fn wake_all(&self, queued: &[QueueInsert], wake: Wake<'_>) -> Result<(), AppError> {
        let wakes = queued
            .iter()
            .map(|(aci, device, guid, _)| self.wake(*aci, *device, *guid, wake));
        try_join_all(wakes).await?;
        Ok(())
    }

    /// A multi-recipient sealed send: every listed device of every recipient gets an
    /// UNIDENTIFIED_SENDER envelope whose content is its recipient's `0x22 || c || at`
    /// completed by the shared `e_pub || ciphertext`, which is stored once. Excluded
    /// recipients (no devices) are left out entirely. Order of refusals: no access key 401,
    /// unknown recipient 404, wrong combined access key 401, then 409 before 410, then 429
    /// when a recipient is over its `inboundMessageBytes` budget (each is charged, per
    /// listed device, its prefix, the shared payload and the per-message overhead: what a
    /// single send of that content would cost) or a device's queue is full. Before the key
    /// check only one account read per recipient is done; devices are read after it.
    pub async fn send_multi(
        &self,
        access_key: Option<AccessKey>,
        message: MultiRecipientMessage,
        options: MultiRecipientOptions,
    ) -> Result<(), AppError> {
        // As in Signal: without any key the request is refused before a recipient is looked
        // up, so a caller with no credentials cannot probe which accounts exist.
        let Some(access_key) = access_key else {
            self.metrics.access_key_failures.inc();
            return Err(AppError::Unauthorized);
        };
        let recipients: Vec<&Recipient> = message
            .recipients
            .iter()
            .filter(|r| !r.devices.is_empty())
            .collect();
        let mut accounts = Vec::with_capacity(recipients.len());
        for recipient in &recipients {
            let account =
                self.accounts.account(recipient.aci).await?.ok_or_else(|| {
                    AppError::NotFound(format!("no such account: {}", recipient.aci))
                })?;
            accounts.push(account);
        }
        let required = combined_access_key(&accounts)?;
        if let Some(required) = required
            && !bool::from(access_key.as_bytes().ct_eq(&required))
        {
            self.metrics.access_key_failures.inc();
            return Err(AppError::Unauthorized);
        }

        let mut mismatched = Vec::new();
        let mut stale = Vec::new();
        for recipient in &recipients {
            let devices: BTreeMap<DeviceId, u16> = self
                .accounts
                .devices(recipient.aci)
                .await?
                .into_iter()
                .map(|d| (d.id, d.attributes.registration_id.get()))
                .collect();
            let (missing, extra) = mismatched_devices(&devices, &recipient.devices, None);
            if !missing.is_empty() || !extra.is_empty() {
                mismatched.push((recipient.aci, missing, extra));
            }
            let stale_here = stale_devices(&devices, &recipient.devices, None);
            if !stale_here.is_empty() {
                stale.push((recipient.aci, stale_here));
            }
        }
        if !mismatched.is_empty() {
            return Err(AppError::MultiMismatchedDevices(mismatched));
        }
        if !stale.is_empty() {
            return Err(AppError::MultiStaleDevices(stale));
        }

        let total: usize = recipients.iter().map(|r| r.devices.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let charges: Vec<(String, u64)> = recipients
            .iter()
            .map(|r| {
                let each = (r.prefix.len() + message.shared.len()) as u64 + QUEUED_MESSAGE_OVERHEAD;
                (r.aci.to_string(), each * r.devices.len() as u64)
            })
            .collect();
        self.limiter
            .check_permits_all(Limit::InboundMessageBytes, &charges)
            .await?;
        let server_timestamp = now_ms() as u64;
        let client_timestamp = if options.timestamp == 0 {
            server_timestamp
        } else {
            options.timestamp
        };
        let template = multi_recipient_template(
            client_timestamp,
            server_timestamp,
            options.urgent,
            options.online,
        );
        let shared = SharedMessage {
            template: Bytes::from(template.encode_to_vec()),
            payload: message.shared.clone(),
            prefixes: recipients
                .iter()
                .map(|r| (r.aci, r.prefix.clone()))
                .collect(),
        };
        let shared_id = Uuid::new_v4();
        self.messages
            .insert_shared(shared_id, &shared, total as u32)
            .await?;
        let kind = if options.online {
            "ephemeral"
        } else {
            "sealed"
        };
        let payload = message.shared.len();
        let inserts = recipients.iter().flat_map(|recipient| {
            // The body is at most 2 MiB, so this never saturates.
            let charged = u32::try_from(recipient.prefix.len() + payload).unwrap_or(u32::MAX);
            recipient.devices.iter().map(move |(device, _)| async move {
                let guid = Uuid::new_v4();
                let inserted = self
                    .messages
                    .insert_referencing(recipient.aci, *device, guid, shared_id, charged)
                    .await?;
                Ok::<QueueInsert, AppError>((recipient.aci, *device, guid, inserted))
            })
        });
        let queued = try_join_all(inserts).await?;
        if let Err(refused) = self.all_or_nothing(&queued).await {
            // The copies never queued would never release the shared part: drop it now.
            self.messages.delete_shared(shared_id).await?;
            return Err(refused);
        }
        let wake = Wake {
            ephemeral: options.online,
            urgent: options.urgent,
            kind,
        };
        self.wake_all(&queued, wake).await?;
        self.metrics.multi_recipient_sends.inc();
        self.metrics.multi_recipient_devices.observe(total as f64);
        Ok(())
    }

    /// Wakes the device's socket after a queue insert; when no pod holds one, takes an
    /// ephemeral envelope back out, and pushes for any other (PROTOCOL.md 11.4 step 1; the
    /// push goes on a task of its own, never delaying the send).
    async fn wake(
        &self,
        aci: Aci,
        device: DeviceId,
        guid: Uuid,
        wake: Wake<'_>,
    ) -> Result<(), AppError> {
        let Wake {
            ephemeral,
            urgent,
            kind,
        } = wake;
        let online = match self
            .notifier
            .publish(aci, device, DeviceEvent::MessageAvailable)
            .await
        {
            Ok(online) => online,
            // The message is safely queued; the socket will find it on its next read.
            Err(e) => {
                tracing::warn!(error = %e, "could not publish a message wake-up");
                false
            }
        };
        if !online {
            if ephemeral {
                self.messages.remove(aci, device, guid).await?;
            } else {
                self.wakeups.message_queued(aci, device, urgent);
            }
        }
        self.metrics
            .messages_sent
            .with_label_values(&[kind, if online { "online" } else { "offline" }])
            .inc();
        Ok(())
    }

    /// Queues one envelope (a delivery receipt) and wakes the device's socket. A full queue
    /// goes without it: a receipt is not worth refusing the acknowledgement that made it.
    async fn enqueue(
        &self,
        aci: Aci,
        device: DeviceId,
        guid: Uuid,
        envelope: Bytes,
        wake: Wake<'_>,
    ) -> Result<(), AppError> {
        match self.messages.insert(aci, device, guid, envelope).await? {
            Inserted::Full => Ok(()),
            Inserted::Queued | Inserted::Duplicate => self.wake(aci, device, guid, wake).await,
        }
    }

    /// A device acknowledged delivered envelopes: remove them (one store step for the
    /// batch), record their latency, and send a delivery receipt to the sender's devices for
    /// each identified message from another account that was still queued.
    pub async fn acknowledge(
        &self,
        recipient: AuthenticatedDevice,
        acks: &[DeliveryAck],
    ) -> Result<(), AppError> {
        let guids: Vec<Uuid> = acks.iter().map(|ack| ack.guid).collect();
        let removed = self
            .messages
            .remove_many(recipient.aci, recipient.device, &guids)
            .await?;
        let now = now_ms() as u64;
        let from = Source {
            aci: recipient.aci,
            device: recipient.device,
        };
        let mut receipts = Vec::new();
        for (ack, removed) in acks.iter().zip(removed) {
            if !removed {
                continue;
            }
            self.metrics.queue_acks.inc();
            let Some(meta) = ack.meta else { continue };
            self.metrics
                .delivery_latency
                .observe(now.saturating_sub(meta.server_timestamp) as f64 / 1000.0);
            match meta.source {
                Some(sender) if !meta.is_receipt && sender.aci != recipient.aci => {
                    receipts.push((sender.aci, meta.client_timestamp));
                }
                _ => {}
            }
        }
        // Receipts to one sender go out together; its device list comes from the cache.
        receipts.sort_by_key(|(aci, _)| *aci);
        for chunk in receipts.chunk_by(|a, b| a.0 == b.0) {
            let sender = chunk[0].0;
            let devices = self.accounts.devices(sender).await?;
            let deliveries = chunk.iter().flat_map(|(_, timestamp)| {
                devices.iter().map(move |device| {
                    let (guid, receipt) = delivery_receipt(from, sender, *timestamp, now);
                    self.enqueue(
                        sender,
                        device.id,
                        guid,
                        Bytes::from(receipt.encode_to_vec()),
                        // A receipt is never urgent: at most a background push.
                        Wake {
                            ephemeral: false,
                            urgent: false,
                            kind: "receipt",
                        },
                    )
                })
            });
            let sent = try_join_all(deliveries).await?.len();
            self.metrics.receipts_sent.inc_by(sent as u64);
        }
        Ok(())
    }

    /// Reads a device's queue after position `after`.
    pub async fn read_queue(
        &self,
        device: AuthenticatedDevice,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, AppError> {
        self.metrics.queue_reads.inc();
        let queued = self
            .messages
            .read(device.aci, device.device, after, limit)
            .await?;
        Ok(queued
            .into_iter()
            .map(|message| Delivery {
                seq: message.seq,
                ack: DeliveryAck {
                    guid: message.guid,
                    meta: DeliveredMeta::of(&message.envelope),
                },
                envelope: message.envelope,
            })
            .collect())
    }

    /// Drops the queues of `devices` and closes their sockets on every pod (4401). A
    /// removal event that cannot be published is an error (503: the caller retries), not
    /// a warning: a socket that never hears it would go on acting as a removed device.
    /// Safe to repeat: a second call drops nothing and publishes again.
    pub async fn remove_devices(&self, aci: Aci, devices: &[DeviceId]) -> Result<(), AppError> {
        for device in devices {
            self.messages.delete_queue(aci, *device).await?;
            self.notifier
                .publish(aci, *device, DeviceEvent::Removed)
                .await?;
        }
        Ok(())
    }
}
