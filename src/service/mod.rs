//! Orchestration per area: the functions HTTP handlers and the WebSocket tunnel both call,
//! so that limits, validation and errors cannot drift apart. No HTTP types, no SQL.

pub mod access;
pub mod accounts;
pub mod attachment_sweeper;
pub mod attachments;
pub mod avatars;
pub mod calling;
pub mod devices;
pub mod identity;
pub mod invites;
pub mod keys;
pub mod messages;
pub mod presence;
pub mod profiles;
pub mod push;
pub mod reports;
pub mod uploads;
pub mod usernames;
pub mod wakeups;
