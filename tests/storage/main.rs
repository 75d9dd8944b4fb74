//! The stores on their own: the conformance suite (every storage trait on memory and on
//! Postgres/Redis, one module per trait, helpers in `support`) and what a real server does
//! when a store loses data under it.
//! `cargo test --test storage [filter]`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod account_identity;
mod accounts;
mod backends;
mod devices;
mod invites;
mod keys;
mod link_codes;
mod linked_devices;
mod notifiers;
mod objects;
mod profiles;
mod push;
mod push_schedule;
mod queues;
mod rate_limits;
mod reports;
mod shared_payloads;
mod store_faults;
mod support;
mod uploads;
mod usernames;
