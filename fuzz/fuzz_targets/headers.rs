//! Headers and path segments taken from clients: `Authorization: Basic` (device credentials
//! and the new-password form), `Unidentified-Access-Key`, `X-Forwarded-For`, the
//! multi-recipient query string, and the ACI / device id / `*` path segments. Must never
//! panic. The first byte picks the parser; the rest is the (lossy UTF-8) input.
#![no_main]

use actix_web::web::Query;
use libfuzzer_sys::fuzz_target;
use sealpost::api::messages::MultiRecipientQuery;
use sealpost::auth::basic::{Credentials, parse_basic};
use sealpost::auth::extract::{access_key_header, last_forwarded_hop};
use sealpost::domain::ids::{Aci, DeviceId};
use sealpost::service::keys::DeviceSelector;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let input = String::from_utf8_lossy(rest);
    match selector % 6 {
        0 => {
            if let Some(credentials) = Credentials::from_header(&input) {
                assert!((1..=127).contains(&credentials.device.get()));
                assert!(parse_basic(&input).is_some());
            }
        }
        1 => {
            if let Ok(key) = access_key_header(&input) {
                assert_eq!(key.as_bytes().len(), 16);
            }
        }
        2 => {
            let _ = last_forwarded_hop(input.split('\n'));
        }
        3 => {
            let _ = Query::<MultiRecipientQuery>::from_query(&input);
        }
        4 => {
            if let Ok(aci) = input.parse::<Aci>() {
                // What parses prints back to something that parses to the same ACI.
                assert_eq!(aci.to_string().parse::<Aci>().ok(), Some(aci));
            }
        }
        _ => {
            if let Ok(device) = input.parse::<DeviceId>() {
                assert!((1..=127).contains(&device.get()));
            }
            let _ = input.parse::<DeviceSelector>();
        }
    }
});
