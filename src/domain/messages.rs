//! Messages as the send endpoint receives them: types, content bounds, the device check
//! (missing / extra / stale devices), and the envelope the server builds for each device.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use prost::Message as _;
use uuid::Uuid;

use super::DomainError;
use super::ids::{Aci, DeviceId};
use crate::proto::textsecure::{Envelope, envelope};

/// Content is 1 byte to 96 KiB, decoded.
pub const MAX_CONTENT_BYTES: usize = 96 * 1024;

/// The envelope types a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Ciphertext,
    PrekeyBundle,
    UnidentifiedSender,
    PlaintextContent,
}

impl MessageType {
    pub fn parse(value: i64) -> Result<Self, DomainError> {
        match value {
            1 => Ok(Self::Ciphertext),
            3 => Ok(Self::PrekeyBundle),
            6 => Ok(Self::UnidentifiedSender),
            8 => Ok(Self::PlaintextContent),
            other => Err(DomainError::invalid(format!(
                "message type {other} is not one of 1, 3, 6, 8"
            ))),
        }
    }

    fn envelope_type(self) -> envelope::Type {
        match self {
            Self::Ciphertext => envelope::Type::Ciphertext,
            Self::PrekeyBundle => envelope::Type::PrekeyBundle,
            Self::UnidentifiedSender => envelope::Type::UnidentifiedSender,
            Self::PlaintextContent => envelope::Type::PlaintextContent,
        }
    }
}

/// One device's message in a send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub kind: MessageType,
    pub device: DeviceId,
    /// 0 means "not given" (not checked), as in Signal.
    pub registration_id: u16,
    pub content: Bytes,
}

/// A validated `PUT /v1/messages/{aci}` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessages {
    pub messages: Vec<OutgoingMessage>,
    pub online: bool,
    pub urgent: bool,
    /// Client timestamp in ms; 0 means "use the server's time".
    pub timestamp: u64,
}

impl OutgoingMessages {
    /// Checks the parts that do not depend on the recipient: no repeated device, content
    /// within bounds (an empty content is a 400, an oversized one a 413).
    pub fn check(&self) -> Result<(), ContentError> {
        let mut seen = BTreeSet::new();
        for message in &self.messages {
            if !seen.insert(message.device) {
                return Err(ContentError::Invalid(DomainError::invalid(format!(
                    "device {} is listed twice",
                    message.device
                ))));
            }
            if message.content.is_empty() {
                return Err(ContentError::Invalid(DomainError::invalid(
                    "message content must not be empty",
                )));
            }
            if message.content.len() > MAX_CONTENT_BYTES {
                return Err(ContentError::TooLarge);
            }
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.messages.iter().map(|m| m.content.len() as u64).sum()
    }

    /// What queueing this request costs the recipient's `inboundMessageBytes` budget: each
    /// message's content plus [`QUEUED_MESSAGE_OVERHEAD`], so a flood of tiny messages is
    /// charged for what it stores.
    pub fn charged_bytes(&self) -> u64 {
        self.total_bytes() + QUEUED_MESSAGE_OVERHEAD * self.messages.len() as u64
    }
}

/// What one queued message costs beyond its content: Redis spends about 213 bytes per queue
/// entry on the index and hash structures (MEMORY USAGE over 10,000 entries of a queue), and
/// the envelope's own fields add some 50 more. Charged to `inboundMessageBytes` per message
/// and counted per entry against a device queue's byte cap.
pub const QUEUED_MESSAGE_OVERHEAD: u64 = 256;

#[derive(Debug)]
pub enum ContentError {
    Invalid(DomainError),
    TooLarge,
}

/// Why the listed devices do not match the recipient's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceMismatch {
    /// 410: listed devices whose registration id differs.
    Stale(Vec<u8>),
    /// 409: devices the account has that are not listed, and listed ids that do not exist.
    Mismatched { missing: Vec<u8>, extra: Vec<u8> },
}

/// Listed devices whose registration id differs (0 is not checked); `excluded` is skipped.
pub fn stale_devices(
    account_devices: &BTreeMap<DeviceId, u16>,
    listed: &[(DeviceId, u16)],
    excluded: Option<DeviceId>,
) -> Vec<u8> {
    listed
        .iter()
        .filter(|(d, registration_id)| {
            Some(*d) != excluded
                && *registration_id != 0
                && account_devices
                    .get(d)
                    .is_some_and(|actual| actual != registration_id)
        })
        .map(|(d, _)| d.get())
        .collect()
}

/// (missing, extra): the account's devices not listed, and listed ids that do not exist (or
/// are `excluded`, which counts as neither missing nor valid).
pub fn mismatched_devices(
    account_devices: &BTreeMap<DeviceId, u16>,
    listed: &[(DeviceId, u16)],
    excluded: Option<DeviceId>,
) -> (Vec<u8>, Vec<u8>) {
    let listed_ids: BTreeSet<DeviceId> = listed.iter().map(|(d, _)| *d).collect();
    let missing = account_devices
        .keys()
        .filter(|d| Some(**d) != excluded && !listed_ids.contains(d))
        .map(|d| d.get())
        .collect();
    let extra = listed_ids
        .iter()
        .filter(|d| Some(**d) == excluded || !account_devices.contains_key(d))
        .map(|d| d.get())
        .collect();
    (missing, extra)
}

/// The device check of a single-recipient send. `account_devices` maps the recipient's
/// device ids to registration ids; `excluded` is the sender's own device on a sync message
/// (it counts as neither missing nor valid, so listing it makes it extra). Stale wins over
/// missing/extra here (the multi-recipient send has the opposite precedence).
pub fn check_devices(
    account_devices: &BTreeMap<DeviceId, u16>,
    listed: &[(DeviceId, u16)],
    excluded: Option<DeviceId>,
) -> Result<(), DeviceMismatch> {
    let stale = stale_devices(account_devices, listed, excluded);
    if !stale.is_empty() {
        return Err(DeviceMismatch::Stale(stale));
    }
    let (missing, extra) = mismatched_devices(account_devices, listed, excluded);
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(DeviceMismatch::Mismatched { missing, extra })
    }
}

/// Who sent a message, when the server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub aci: Aci,
    pub device: DeviceId,
}

/// The envelope queued for one device, field by field.
#[derive(Clone, Debug)]
pub struct NewEnvelope {
    pub kind: MessageType,
    /// `None` for a sealed-sender message: the server does not know its sender.
    pub source: Option<Source>,
    pub destination: Aci,
    pub client_timestamp: u64,
    pub server_timestamp: u64,
    pub content: Bytes,
    pub urgent: bool,
    pub ephemeral: bool,
}

impl NewEnvelope {
    /// The envelope with a fresh server GUID.
    pub fn build(self) -> (Uuid, Envelope) {
        let guid = Uuid::new_v4();
        let source = self.source;
        let envelope = Envelope {
            r#type: Some(self.kind.envelope_type() as i32),
            client_timestamp: Some(self.client_timestamp),
            source_device: source.map(|s| u32::from(s.device.get())),
            content: Some(self.content),
            server_timestamp: Some(self.server_timestamp),
            ephemeral: Some(self.ephemeral),
            urgent: Some(self.urgent),
            story: None,
            source_service_id: source.map(|s| Bytes::copy_from_slice(s.aci.as_bytes())),
            destination_service_id: Some(Bytes::copy_from_slice(self.destination.as_bytes())),
            server_guid: Some(Bytes::copy_from_slice(guid.as_bytes())),
            updated_pni: None,
        };
        (guid, envelope)
    }
}

/// What every copy of one multi-recipient send shares: the envelope `NewEnvelope::build` would
/// make for an UNIDENTIFIED_SENDER message, without destination, server GUID and content
/// (the store completes those per device).
pub fn multi_recipient_template(
    client_timestamp: u64,
    server_timestamp: u64,
    urgent: bool,
    ephemeral: bool,
) -> Envelope {
    let (_, mut envelope) = NewEnvelope {
        kind: MessageType::UnidentifiedSender,
        source: None,
        destination: Aci::from_uuid(Uuid::nil()),
        client_timestamp,
        server_timestamp,
        content: Bytes::new(),
        urgent,
        ephemeral,
    }
    .build();
    envelope.destination_service_id = None;
    envelope.server_guid = None;
    envelope.content = None;
    envelope
}

/// The delivery receipt a sender's devices get when `recipient` acks their message.
pub fn delivery_receipt(
    recipient: Source,
    sender: Aci,
    client_timestamp: u64,
    server_timestamp: u64,
) -> (Uuid, Envelope) {
    let guid = Uuid::new_v4();
    let envelope = Envelope {
        r#type: Some(envelope::Type::ServerDeliveryReceipt as i32),
        client_timestamp: Some(client_timestamp),
        source_device: Some(u32::from(recipient.device.get())),
        content: None,
        server_timestamp: Some(server_timestamp),
        ephemeral: Some(false),
        urgent: Some(false),
        story: None,
        source_service_id: Some(Bytes::copy_from_slice(recipient.aci.as_bytes())),
        destination_service_id: Some(Bytes::copy_from_slice(sender.as_bytes())),
        server_guid: Some(Bytes::copy_from_slice(guid.as_bytes())),
        updated_pni: None,
    };
    (guid, envelope)
}

/// What the server needs to know about a delivered envelope when it is acked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveredMeta {
    pub source: Option<Source>,
    pub client_timestamp: u64,
    pub server_timestamp: u64,
    pub is_receipt: bool,
}

/// What acknowledging one delivered message needs: which message, and what its ack
/// records (latency, the sender's delivery receipt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryAck {
    pub guid: Uuid,
    pub meta: Option<DeliveredMeta>,
}

/// A queued message read for delivery: its place in the queue, the envelope to send, and
/// what its acknowledgement will need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub seq: u64,
    pub envelope: Bytes,
    pub ack: DeliveryAck,
}

impl DeliveredMeta {
    /// Reads back the fields of a stored envelope (the server wrote it, so it parses).
    pub fn of(bytes: &[u8]) -> Option<Self> {
        let envelope = Envelope::decode(bytes).ok()?;
        let source = match (&envelope.source_service_id, envelope.source_device) {
            (Some(id), Some(device)) => {
                let uuid = Uuid::from_slice(id).ok()?;
                Some(Source {
                    aci: Aci::from_uuid(uuid),
                    device: DeviceId::new(device).ok()?,
                })
            }
            _ => None,
        };
        Some(Self {
            source,
            client_timestamp: envelope.client_timestamp.unwrap_or(0),
            server_timestamp: envelope.server_timestamp.unwrap_or(0),
            is_receipt: envelope.r#type == Some(envelope::Type::ServerDeliveryReceipt as i32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_multi_recipient_template_is_the_envelope_a_single_send_would_make() {
        let (guid, single) = NewEnvelope {
            kind: MessageType::UnidentifiedSender,
            source: None,
            destination: Aci::random(),
            client_timestamp: 5,
            server_timestamp: 6,
            content: Bytes::from_static(b"prefix+payload"),
            urgent: true,
            ephemeral: false,
        }
        .build();
        let template = Bytes::from(multi_recipient_template(5, 6, true, false).encode_to_vec());
        let aci = Aci::from_uuid(
            Uuid::from_slice(&single.destination_service_id.clone().unwrap()).unwrap(),
        );
        let completed = crate::domain::queued::SharedMessage {
            template,
            payload: Bytes::from_static(b"+payload"),
            prefixes: vec![
                (Aci::random(), Bytes::new()),
                (aci, Bytes::from_static(b"prefix")),
            ],
        }
        .envelope_for(aci, guid)
        .unwrap();
        assert_eq!(completed, Bytes::from(single.encode_to_vec()));
    }

    fn devices(pairs: &[(u32, u16)]) -> BTreeMap<DeviceId, u16> {
        pairs
            .iter()
            .map(|(d, r)| (DeviceId::new(*d).unwrap(), *r))
            .collect()
    }

    fn listed(pairs: &[(u32, u16)]) -> Vec<(DeviceId, u16)> {
        pairs
            .iter()
            .map(|(d, r)| (DeviceId::new(*d).unwrap(), *r))
            .collect()
    }

    #[test]
    fn a_complete_list_passes() {
        let account = devices(&[(1, 100), (2, 200)]);
        assert_eq!(
            check_devices(&account, &listed(&[(1, 100), (2, 200)]), None),
            Ok(())
        );
        // Registration id 0 is not checked.
        assert_eq!(
            check_devices(&account, &listed(&[(1, 0), (2, 200)]), None),
            Ok(())
        );
    }

    #[test]
    fn missing_and_extra_devices_are_named() {
        let account = devices(&[(1, 100), (2, 200), (3, 300)]);
        assert_eq!(
            check_devices(&account, &listed(&[(1, 100), (5, 1)]), None),
            Err(DeviceMismatch::Mismatched {
                missing: vec![2, 3],
                extra: vec![5]
            })
        );
    }

    #[test]
    fn stale_wins_over_missing() {
        let account = devices(&[(1, 100), (2, 200)]);
        assert_eq!(
            check_devices(&account, &listed(&[(1, 999)]), None),
            Err(DeviceMismatch::Stale(vec![1]))
        );
    }

    #[test]
    fn a_sync_message_leaves_out_the_sending_device() {
        let account = devices(&[(1, 100), (2, 200)]);
        let me = Some(DeviceId::new(1).unwrap());
        assert_eq!(check_devices(&account, &listed(&[(2, 200)]), me), Ok(()));
        assert_eq!(
            check_devices(&account, &listed(&[(1, 100), (2, 200)]), me),
            Err(DeviceMismatch::Mismatched {
                missing: vec![],
                extra: vec![1]
            })
        );
        assert_eq!(
            check_devices(&account, &listed(&[]), me),
            Err(DeviceMismatch::Mismatched {
                missing: vec![2],
                extra: vec![]
            })
        );
    }

    #[test]
    fn repeated_devices_empty_and_oversized_content_are_refused() {
        let message = |device: u32, len: usize| OutgoingMessage {
            kind: MessageType::Ciphertext,
            device: DeviceId::new(device).unwrap(),
            registration_id: 1,
            content: Bytes::from(vec![1u8; len]),
        };
        let list = |messages| OutgoingMessages {
            messages,
            online: false,
            urgent: true,
            timestamp: 1,
        };
        assert!(
            list(vec![message(1, 1), message(2, MAX_CONTENT_BYTES)])
                .check()
                .is_ok()
        );
        assert!(matches!(
            list(vec![message(1, 1), message(1, 1)]).check(),
            Err(ContentError::Invalid(_))
        ));
        assert!(matches!(
            list(vec![message(1, 0)]).check(),
            Err(ContentError::Invalid(_))
        ));
        assert!(matches!(
            list(vec![message(1, MAX_CONTENT_BYTES + 1)]).check(),
            Err(ContentError::TooLarge)
        ));
        assert!(MessageType::parse(2).is_err());
        assert_eq!(
            MessageType::parse(6).unwrap(),
            MessageType::UnidentifiedSender
        );
    }

    #[test]
    fn envelopes_carry_every_field_and_read_back() {
        let source = Source {
            aci: Aci::random(),
            device: DeviceId::new(2).unwrap(),
        };
        let destination = Aci::random();
        let (guid, envelope) = NewEnvelope {
            kind: MessageType::Ciphertext,
            source: Some(source),
            destination,
            client_timestamp: 111,
            server_timestamp: 222,
            content: Bytes::from_static(b"sealed"),
            urgent: true,
            ephemeral: false,
        }
        .build();
        assert_eq!(envelope.server_guid.as_deref(), Some(&guid.as_bytes()[..]));
        assert_eq!(
            envelope.destination_service_id.as_deref(),
            Some(&destination.as_bytes()[..])
        );
        let meta = DeliveredMeta::of(&envelope.encode_to_vec()).unwrap();
        assert_eq!(meta.source, Some(source));
        assert_eq!((meta.client_timestamp, meta.server_timestamp), (111, 222));
        assert!(!meta.is_receipt);

        let (_, sealed) = NewEnvelope {
            kind: MessageType::UnidentifiedSender,
            source: None,
            destination,
            client_timestamp: 1,
            server_timestamp: 2,
            content: Bytes::from_static(b"x"),
            urgent: true,
            ephemeral: true,
        }
        .build();
        assert_eq!(sealed.source_service_id, None);
        assert_eq!(sealed.source_device, None);
        assert_eq!(
            DeliveredMeta::of(&sealed.encode_to_vec()).unwrap().source,
            None
        );
    }
}
