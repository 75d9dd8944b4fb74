//! sealpost: a self-hostable messaging server in the style of Signal's. Clients keep the
//! cryptography; the server registers accounts and devices, hands out prekeys, and stores
//! and forwards opaque envelopes.
//!
//! Layers (see ARCHITECTURE.md): `api` -> `service` -> `storage` traits + `domain`.
//! `startup` is the composition root and the only module naming concrete backends.

pub mod api;
pub mod auth;
pub mod certificates;
pub mod client;
pub mod config;
pub mod delivery;
pub mod descriptors;
pub mod domain;
pub mod error;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod proto;
pub mod push;
pub mod service;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod ws;
