//! Property tests of the multi-recipient parser: any bytes, and valid messages mutated in
//! every way, parse or fail cleanly; never a panic, and what parses is self-consistent.

use bytes::Bytes;
use proptest::prelude::*;
use sealpost::domain::ids::Aci;
use sealpost::domain::multi_recipient::{
    MultiRecipientMessage, RecipientParts, VERSION_SERVICE_ID, VERSION_UUID, encode,
};

type RecipientSpec = (u128, Vec<(u8, u16)>, [u8; 48]);

fn recipients() -> impl Strategy<Value = Vec<RecipientSpec>> {
    prop::collection::vec(
        (
            any::<u128>(),
            prop::collection::btree_map(1u8..=127, 0u16..=0x3fff, 0..4)
                .prop_map(|m| m.into_iter().collect()),
            any::<[u8; 48]>(),
        ),
        1..6,
    )
}

fn valid_message() -> impl Strategy<Value = (u8, Vec<RecipientSpec>, [u8; 32], Vec<u8>)> {
    (
        prop_oneof![Just(VERSION_SERVICE_ID), Just(VERSION_UUID)],
        recipients(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 1..200),
    )
}

fn build(
    version: u8,
    recipients: &[RecipientSpec],
    e_pub: &[u8; 32],
    ciphertext: &[u8],
) -> Vec<u8> {
    let specs: Vec<RecipientParts> = recipients
        .iter()
        .map(|(id, devices, keys)| {
            (
                Aci::from_uuid(uuid::Uuid::from_u128(*id)),
                devices.clone(),
                *keys,
            )
        })
        .collect();
    encode(version, &specs, e_pub, ciphertext)
}

fn check_consistent(message: &MultiRecipientMessage) {
    assert!(!message.recipients.is_empty());
    assert!(
        message.shared.len() > 32,
        "e_pub and at least one ciphertext byte"
    );
    for recipient in &message.recipients {
        assert!(recipient.prefix.is_empty() == recipient.devices.is_empty());
        if !recipient.prefix.is_empty() {
            assert_eq!(recipient.prefix.len(), 49);
            assert_eq!(recipient.prefix[0], 0x22);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(message) = MultiRecipientMessage::parse(&Bytes::from(bytes)) {
            check_consistent(&message);
        }
    }

    #[test]
    fn valid_messages_round_trip((version, recipients, e_pub, ciphertext) in valid_message()) {
        let body = build(version, &recipients, &e_pub, &ciphertext);
        let distinct: std::collections::BTreeSet<u128> = recipients.iter().map(|r| r.0).collect();
        match MultiRecipientMessage::parse(&Bytes::from(body)) {
            Ok(message) => {
                prop_assert_eq!(distinct.len(), recipients.len());
                check_consistent(&message);
                for (parsed, (id, devices, keys)) in message.recipients.iter().zip(&recipients) {
                    prop_assert_eq!(parsed.aci.uuid().as_u128(), *id);
                    let got: Vec<(u8, u16)> = parsed.devices.iter().map(|(d, r)| (d.get(), *r)).collect();
                    prop_assert_eq!(&got, devices);
                    if !devices.is_empty() {
                        prop_assert_eq!(&parsed.prefix[1..], &keys[..]);
                    }
                }
                let mut shared = e_pub.to_vec();
                shared.extend_from_slice(&ciphertext);
                prop_assert_eq!(message.shared.to_vec(), shared);
            }
            // Only repeated recipients make a generated message invalid.
            Err(_) => prop_assert!(distinct.len() < recipients.len()),
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        (version, recipients, e_pub, ciphertext) in valid_message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut body = build(version, &recipients, &e_pub, &ciphertext);
        for (index, byte, kind) in edits {
            if body.is_empty() {
                break;
            }
            let at = index.index(body.len());
            match kind {
                0 => body[at] ^= byte | 1,
                1 => body.insert(at, byte),
                2 => { body.remove(at); }
                _ => body.truncate(at),
            }
        }
        if let Ok(message) = MultiRecipientMessage::parse(&Bytes::from(body)) {
            check_consistent(&message);
        }
    }
}
