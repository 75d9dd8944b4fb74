//! The stores on their own: the conformance suite (every storage trait on memory and on
//! Postgres/Redis) and what a real server does when a store loses data under it.
//! `cargo test --test storage [filter]`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod conformance;
mod devices;
mod link_codes;
mod notifiers;
mod store_faults;
