//! libsignal's `SealedSenderMultiRecipientMessage` (sealed sender v2), parsed strictly: a
//! truncated or inconsistent body is an error, never a panic.
//!
//! Layout: version byte (`0x23`: 17-byte fixed-width service ids; legacy `0x22`: 16-byte
//! ACIs); varint recipient count; per recipient its service id, then either device entries
//! (device id u8, then a big-endian u16 whose bit 15 says another entry follows and whose
//! bits 0-13 are the registration id) followed by `c`[32] and `at`[16], or a single `0x00`
//! (the recipient is excluded); then `e_pub`[32] and the shared ciphertext (the rest).
//! Each recipient device receives `0x22 || c || at || e_pub || shared ciphertext`.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::DomainError;
use super::ids::{Aci, DeviceId};

pub const VERSION_SERVICE_ID: u8 = 0x23;
pub const VERSION_UUID: u8 = 0x22;
/// The version byte of what each recipient receives.
pub const RECEIVED_VERSION: u8 = 0x22;
const C_AND_AT_LEN: usize = 32 + 16;
const E_PUB_LEN: usize = 32;
/// More recipients than this in one message is refused (Signal's groups are far smaller).
pub const MAX_RECIPIENTS: u64 = 5_000;

/// One recipient's part of a multi-recipient message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub aci: Aci,
    /// (device, registration id); empty when the recipient is excluded.
    pub devices: Vec<(DeviceId, u16)>,
    /// `0x22 || c || at`: what only this recipient's devices get (empty when excluded).
    pub prefix: Bytes,
}

/// A parsed multi-recipient message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiRecipientMessage {
    pub recipients: Vec<Recipient>,
    /// `e_pub || shared ciphertext`: the part every recipient device gets, stored once.
    pub shared: Bytes,
}

fn malformed(what: &str) -> DomainError {
    DomainError::invalid(format!("malformed multi-recipient message: {what}"))
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DomainError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| malformed(&format!("truncated {what}")))?;
        let slice = &self.data[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self, what: &str) -> Result<u8, DomainError> {
        Ok(self.take(1, what)?[0])
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    fn varint(&mut self, what: &str) -> Result<u64, DomainError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.byte(what)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed(&format!("{what} is too long")))
    }
}

impl MultiRecipientMessage {
    pub fn parse(body: &Bytes) -> Result<Self, DomainError> {
        let mut reader = Reader { data: body, at: 0 };
        let version = reader.byte("version")?;
        let id_len = match version {
            VERSION_SERVICE_ID => 17,
            VERSION_UUID => 16,
            other => return Err(malformed(&format!("unknown version 0x{other:02x}"))),
        };
        let count = reader.varint("recipient count")?;
        if count == 0 || count > MAX_RECIPIENTS {
            return Err(malformed(&format!(
                "recipient count {count} is not in 1..={MAX_RECIPIENTS}"
            )));
        }
        let mut recipients = Vec::with_capacity(count as usize);
        let mut seen = BTreeSet::new();
        for _ in 0..count {
            let id = reader.take(id_len, "recipient service id")?;
            let uuid = if id_len == 17 {
                match id[0] {
                    0x00 => &id[1..],
                    0x01 => {
                        return Err(DomainError::invalid("PNI recipients are not supported"));
                    }
                    other => {
                        return Err(malformed(&format!("unknown service id kind 0x{other:02x}")));
                    }
                }
            } else {
                id
            };
            let aci =
                Aci::from_uuid(uuid::Uuid::from_slice(uuid).map_err(|_| malformed("service id"))?);
            if !seen.insert(aci) {
                return Err(DomainError::invalid(format!(
                    "recipient {aci} is listed twice"
                )));
            }
            let mut devices = Vec::new();
            let mut device_ids = BTreeSet::new();
            loop {
                let device = reader.byte("device id")?;
                if device == 0 {
                    if !devices.is_empty() {
                        return Err(malformed("device id 0 after other devices"));
                    }
                    break;
                }
                let device =
                    DeviceId::new(u32::from(device)).map_err(|_| malformed("device id"))?;
                let packed = u16::from_be_bytes(
                    reader
                        .take(2, "registration id")?
                        .try_into()
                        .expect("two bytes"),
                );
                if !device_ids.insert(device) {
                    return Err(DomainError::invalid(format!(
                        "device {device} of {aci} is listed twice"
                    )));
                }
                devices.push((device, packed & 0x3fff));
                if packed & 0x8000 == 0 {
                    break;
                }
            }
            let prefix = if devices.is_empty() {
                Bytes::new()
            } else {
                let c_and_at = reader.take(C_AND_AT_LEN, "c and at")?;
                let mut prefix = Vec::with_capacity(1 + C_AND_AT_LEN);
                prefix.push(RECEIVED_VERSION);
                prefix.extend_from_slice(c_and_at);
                Bytes::from(prefix)
            };
            recipients.push(Recipient {
                aci,
                devices,
                prefix,
            });
        }
        let shared_start = reader.at;
        reader.take(E_PUB_LEN, "e_pub")?;
        if reader.at >= body.len() {
            return Err(malformed("no shared ciphertext"));
        }
        Ok(Self {
            recipients,
            shared: body.slice(shared_start..),
        })
    }
}

/// One recipient as `encode` takes it: ACI, (device, registration id) pairs (empty:
/// excluded), and `c || at`.
pub type RecipientParts = (Aci, Vec<(u8, u16)>, [u8; 48]);

/// Builds a message in the same format (clients and tests).
pub fn encode(
    version: u8,
    recipients: &[RecipientParts],
    e_pub: &[u8; 32],
    ciphertext: &[u8],
) -> Vec<u8> {
    let mut out = vec![version];
    let mut count = recipients.len() as u64;
    loop {
        let byte = (count & 0x7f) as u8;
        count >>= 7;
        if count == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    for (aci, devices, c_and_at) in recipients {
        if version == VERSION_SERVICE_ID {
            out.push(0x00);
        }
        out.extend_from_slice(aci.as_bytes());
        if devices.is_empty() {
            out.push(0);
            continue;
        }
        for (i, (device, registration_id)) in devices.iter().enumerate() {
            out.push(*device);
            let more = if i + 1 < devices.len() { 0x8000 } else { 0 };
            out.extend_from_slice(&(registration_id & 0x3fff | more).to_be_bytes());
        }
        out.extend_from_slice(c_and_at);
    }
    out.extend_from_slice(e_pub);
    out.extend_from_slice(ciphertext);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: u8) -> (Vec<u8>, Aci, Aci) {
        let (a, b) = (Aci::random(), Aci::random());
        let body = encode(
            version,
            &[
                (a, vec![(1, 100), (3, 300)], [7u8; 48]),
                (b, vec![(2, 16383)], [8u8; 48]),
            ],
            &[9u8; 32],
            b"shared ciphertext",
        );
        (body, a, b)
    }

    #[test]
    fn both_versions_parse_into_recipients_devices_and_the_shared_part() {
        for version in [VERSION_SERVICE_ID, VERSION_UUID] {
            let (body, a, b) = sample(version);
            let message = MultiRecipientMessage::parse(&Bytes::from(body)).unwrap();
            assert_eq!(message.recipients.len(), 2);
            assert_eq!(message.recipients[0].aci, a);
            let devices: Vec<_> = message.recipients[0]
                .devices
                .iter()
                .map(|(d, r)| (d.get(), *r))
                .collect();
            assert_eq!(devices, vec![(1, 100), (3, 300)]);
            assert_eq!(message.recipients[1].aci, b);
            assert_eq!(message.recipients[1].devices[0].1, 16383);
            let mut expected_prefix = vec![0x22];
            expected_prefix.extend_from_slice(&[7u8; 48]);
            assert_eq!(message.recipients[0].prefix, expected_prefix);
            let mut shared = vec![9u8; 32];
            shared.extend_from_slice(b"shared ciphertext");
            assert_eq!(message.shared, shared);
        }
    }

    #[test]
    fn an_excluded_recipient_has_no_devices_and_no_keys() {
        let a = Aci::random();
        let body = encode(
            VERSION_SERVICE_ID,
            &[(a, vec![], [0u8; 48])],
            &[1u8; 32],
            b"x",
        );
        let message = MultiRecipientMessage::parse(&Bytes::from(body)).unwrap();
        assert!(message.recipients[0].devices.is_empty());
        assert!(message.recipients[0].prefix.is_empty());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (body, _, _) = sample(VERSION_SERVICE_ID);
        // The last byte is ciphertext: every shorter prefix that cuts into the structure
        // must fail (cutting only ciphertext still leaves a valid, shorter message).
        let structure = body.len() - b"shared ciphertext".len();
        for len in 0..=structure {
            assert!(
                MultiRecipientMessage::parse(&Bytes::copy_from_slice(&body[..len])).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn inconsistent_bodies_are_errors() {
        let a = Aci::random();
        let twice = encode(
            VERSION_UUID,
            &[(a, vec![(1, 1)], [0; 48]), (a, vec![(1, 1)], [0; 48])],
            &[0; 32],
            b"x",
        );
        assert!(MultiRecipientMessage::parse(&Bytes::from(twice)).is_err());
        let same_device = encode(
            VERSION_UUID,
            &[(a, vec![(1, 1), (1, 2)], [0; 48])],
            &[0; 32],
            b"x",
        );
        assert!(MultiRecipientMessage::parse(&Bytes::from(same_device)).is_err());
        let mut pni = encode(
            VERSION_SERVICE_ID,
            &[(a, vec![(1, 1)], [0; 48])],
            &[0; 32],
            b"x",
        );
        pni[2] = 0x01;
        assert!(MultiRecipientMessage::parse(&Bytes::from(pni)).is_err());
        let mut version = encode(
            VERSION_SERVICE_ID,
            &[(a, vec![(1, 1)], [0; 48])],
            &[0; 32],
            b"x",
        );
        version[0] = 0x21;
        assert!(MultiRecipientMessage::parse(&Bytes::from(version)).is_err());
        let zero = Bytes::from(vec![VERSION_SERVICE_ID, 0]);
        assert!(MultiRecipientMessage::parse(&zero).is_err());
        let huge_count = Bytes::from(vec![
            VERSION_SERVICE_ID,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x01,
        ]);
        assert!(MultiRecipientMessage::parse(&huge_count).is_err());
    }
}
