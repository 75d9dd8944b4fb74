//! Every JSON request body of the API: serde_json into the request DTO the handler takes
//! (`api::entities`), then the `TryFrom` into domain types and their checks, as the handlers
//! do. The first byte picks the body; the rest is the JSON. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::api::devices::ProvisioningMessageJson;
use sealpost::api::entities::{
    AccountAttributesJson, CheckKeysRequestJson, IncomingMessageListJson, LinkDeviceRequestJson,
    RegistrationRequestJson, SetKeysRequestJson,
};
use sealpost::domain::accounts::AccountAttributes;
use sealpost::domain::encoding::decode_base64;
use sealpost::domain::keys::KeyUpload;
use sealpost::domain::messages::OutgoingMessages;
use sealpost::service::accounts::{LinkRequest, Registration};

fn parse<T: serde::de::DeserializeOwned>(json: &[u8]) -> Option<T> {
    serde_json::from_slice(json).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    match selector % 7 {
        // POST /v1/registration
        0 => {
            if let Some(body) = parse::<RegistrationRequestJson>(json) {
                let _ = Registration::try_from(body);
            }
        }
        // PUT /v1/accounts/attributes
        1 => {
            if let Some(body) = parse::<AccountAttributesJson>(json) {
                let _ = AccountAttributes::try_from(body);
            }
        }
        // PUT /v2/keys
        2 => {
            if let Some(body) = parse::<SetKeysRequestJson>(json)
                && let Ok(upload) = KeyUpload::try_from(body)
            {
                let _ = upload.is_empty();
            }
        }
        // POST /v2/keys/check
        3 => {
            if let Some(body) = parse::<CheckKeysRequestJson>(json) {
                let _ = decode_base64("digest", &body.digest);
            }
        }
        // PUT /v1/messages/{aci}
        4 => {
            if let Some(body) = parse::<IncomingMessageListJson>(json)
                && let Ok(messages) = OutgoingMessages::try_from(body)
            {
                if messages.check().is_ok() {
                    assert!(messages.messages.iter().all(|m| !m.content.is_empty()));
                }
                let _ = messages.total_bytes();
            }
        }
        // PUT /v1/devices/link
        5 => {
            if let Some(body) = parse::<LinkDeviceRequestJson>(json) {
                let _ = LinkRequest::try_from(body);
            }
        }
        // PUT /v1/provisioning/{address}
        _ => {
            if let Some(body) = parse::<ProvisioningMessageJson>(json) {
                let _ = decode_base64("body", &body.body);
            }
        }
    }
});
