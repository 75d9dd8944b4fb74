//! How a device queue stores a message: a plain envelope, or a reference to the part the
//! copies of a multi-recipient message share (stored once per send). Every backend stores
//! the same bytes, so a queue written by one reads back through another.

use bytes::Bytes;
use uuid::Uuid;

use crate::domain::ids::Aci;

/// What the copies of a multi-recipient message share: one envelope template (everything but
/// destination, GUID and content), the common ciphertext, and each recipient account's own
/// content prefix. Stored once per send, so a copy for one more device costs a queue entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedMessage {
    /// A serialized `Envelope` without destination, server GUID and content.
    pub template: Bytes,
    /// Appended to each recipient's prefix to make its content.
    pub payload: Bytes,
    /// Per recipient account, the start of its content.
    pub prefixes: Vec<(Aci, Bytes)>,
}

impl SharedMessage {
    /// The envelope `aci`'s devices get: `None` when `aci` is not a recipient or the template
    /// does not parse.
    pub fn envelope_for(&self, aci: Aci, guid: Uuid) -> Option<Bytes> {
        let prefix = &self.prefixes.iter().find(|(a, _)| *a == aci)?.1;
        stored::complete(&self.template, aci, guid, prefix, &self.payload)
    }
}

/// How a queued value is stored: a plain envelope, or `0x00 || shared id || charged length
/// (u32, big-endian)` for a copy of a multi-recipient message (17-byte references without
/// the length, from before queues had caps, still read). (A serialized envelope never
/// starts with 0x00: that would be field number 0.)
pub mod stored {
    use bytes::{BufMut, Bytes, BytesMut};
    use prost::Message as _;
    use uuid::Uuid;

    use crate::domain::ids::Aci;
    use crate::proto::textsecure::Envelope;

    const REFERENCE: u8 = 0x00;

    pub fn reference(shared: Uuid, charged: u32) -> Bytes {
        let mut value = BytesMut::with_capacity(21);
        value.put_u8(REFERENCE);
        value.put_slice(shared.as_bytes());
        value.put_u32(charged);
        value.freeze()
    }

    /// The shared message a queued value stands for, if it is a reference.
    pub fn shared_id(value: &[u8]) -> Option<Uuid> {
        ((value.len() == 17 || value.len() == 21) && value[0] == REFERENCE)
            .then(|| Uuid::from_slice(&value[1..17]).ok())
            .flatten()
    }

    /// What a queued value counts against its queue's byte cap (besides the per-message
    /// overhead): an envelope its length, a reference the length it records (the Redis
    /// scripts compute the same).
    pub fn charged_len(value: &[u8]) -> u64 {
        match (value.first(), value.len()) {
            (Some(&REFERENCE), 21) => u64::from(u32::from_be_bytes([
                value[17], value[18], value[19], value[20],
            ])),
            (Some(&REFERENCE), 17) => 0,
            _ => value.len() as u64,
        }
    }

    /// The template completed with destination, GUID and content `prefix || payload`.
    pub fn complete(
        template: &Bytes,
        aci: Aci,
        guid: Uuid,
        prefix: &[u8],
        payload: &[u8],
    ) -> Option<Bytes> {
        let mut envelope = Envelope::decode(template.clone()).ok()?;
        let mut content = BytesMut::with_capacity(prefix.len() + payload.len());
        content.put_slice(prefix);
        content.put_slice(payload);
        envelope.content = Some(content.freeze());
        envelope.destination_service_id = Some(Bytes::copy_from_slice(aci.as_bytes()));
        envelope.server_guid = Some(Bytes::copy_from_slice(guid.as_bytes()));
        Some(Bytes::from(envelope.encode_to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_records_what_it_stands_for_and_an_envelope_counts_its_length() {
        let id = Uuid::new_v4();
        let reference = stored::reference(id, 70_000);
        assert_eq!(reference.len(), 21);
        assert_eq!(stored::shared_id(&reference), Some(id));
        assert_eq!(stored::charged_len(&reference), 70_000);
        let mut legacy = vec![0u8];
        legacy.extend_from_slice(id.as_bytes());
        assert_eq!(stored::shared_id(&legacy), Some(id));
        assert_eq!(stored::charged_len(&legacy), 0, "never charged when queued");
        assert_eq!(stored::charged_len(b"\x08\x01 an envelope"), 14);
    }
}
