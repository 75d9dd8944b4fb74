//! Local stand-ins for the push providers, speaking their real wire protocols and checking
//! credentials the way the providers do (issue 16): FCM v1 with its OAuth token endpoint,
//! APNs over HTTP/2, a WebPush push service.

#![allow(dead_code)]

pub mod apns;
pub mod fcm;
pub mod tls;
pub mod webpush;
