//! The multi-recipient body (`PUT /v1/messages/multi_recipient`): libsignal's
//! `SealedSenderMultiRecipientMessage` as `MultiRecipientMessage::parse` reads it. Must never
//! panic; what parses must be consistent (distinct recipients and devices, valid ids,
//! 49-byte prefixes, a shared part of `e_pub` plus at least one byte).
#![no_main]

use std::collections::BTreeSet;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sealpost::domain::multi_recipient::{MAX_RECIPIENTS, MultiRecipientMessage, RECEIVED_VERSION};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let Ok(message) = MultiRecipientMessage::parse(&body) else {
        return;
    };
    assert!(!message.recipients.is_empty());
    assert!(message.recipients.len() as u64 <= MAX_RECIPIENTS);
    assert!(message.shared.len() > 32);
    assert!(body.ends_with(&message.shared));
    let mut acis = BTreeSet::new();
    for recipient in &message.recipients {
        assert!(acis.insert(recipient.aci));
        let devices: BTreeSet<_> = recipient.devices.iter().map(|(d, _)| *d).collect();
        assert_eq!(devices.len(), recipient.devices.len());
        for (device, registration_id) in &recipient.devices {
            assert!((1..=127).contains(&device.get()));
            assert!(*registration_id <= 0x3fff);
        }
        if recipient.devices.is_empty() {
            assert!(recipient.prefix.is_empty());
        } else {
            assert_eq!(recipient.prefix.len(), 49);
            assert_eq!(recipient.prefix[0], RECEIVED_VERSION);
        }
    }
});
