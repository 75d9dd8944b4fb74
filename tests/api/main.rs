//! Everything that goes through a real server: the application in-process on port 0
//! (`common::TestApp`, usually on both backends with `on_both_backends!`) or the `sealpost`
//! binary as a child process (`common::process::Server`). One test binary, so the crate is
//! linked once for all of them: `cargo test --test api [filter]`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod account_identity;
mod accounts;
mod attachments;
mod authorization;
mod avatars;
mod calling;
mod cli_client;
mod dashboards;
mod device_removal;
mod devices;
mod finding_each_other;
mod key_uploads;
mod keys;
mod limits;
mod message_helpers;
mod messages;
mod operations;
mod processes;
mod profiles;
mod push;
mod push_apns;
mod push_fcm;
mod push_native;
mod push_wakeups;
mod push_webpush;
mod queues;
mod rate_limits;
mod receipts;
mod registration_modes;
mod reports;
mod sealed_sender;
mod timeouts;
mod uploads;
mod usernames;
mod websocket;
