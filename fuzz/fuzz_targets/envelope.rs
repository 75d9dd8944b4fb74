//! `Envelope` protobuf bytes: prost's decode and our reading of an envelope back
//! (`DeliveredMeta::of`, used when a client acks a delivery). Must never panic, and what
//! decodes must re-encode to something that decodes to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sealpost::domain::messages::DeliveredMeta;
use sealpost::proto::textsecure::Envelope;

fuzz_target!(|data: &[u8]| {
    let meta = DeliveredMeta::of(data);
    if let Ok(envelope) = Envelope::decode(data) {
        let again = Envelope::decode(envelope.encode_to_vec().as_slice()).expect("re-decodes");
        assert_eq!(envelope, again);
        assert!(meta.is_some() || envelope.source_service_id.is_some());
    } else {
        assert!(meta.is_none());
    }
});
