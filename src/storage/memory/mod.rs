//! In-memory stores for the embedded mode: the same traits, the same rules, nothing
//! persists. Locks are `std::sync::Mutex` because no critical section awaits and each is
//! a few map operations.

mod accounts;
mod invites;
mod link_codes;
mod linked_devices;
mod messages;
mod profiles;
mod push;
mod push_schedule;
mod rate_limits;
mod reports;
mod secrets;
mod uploads;
mod usernames;

pub use accounts::MemoryAccountStore;
pub use invites::MemoryInviteStore;
pub use link_codes::MemoryLinkCodeStore;
pub use linked_devices::MemoryLinkedDeviceStore;
pub use messages::MemoryMessageStore;
pub use profiles::MemoryProfileStore;
pub use push_schedule::MemoryPushScheduleStore;
pub use rate_limits::MemoryRateLimitStore;
pub use reports::MemoryReportStore;
pub use secrets::MemorySecretStore;
pub use uploads::MemoryUploadStore;
pub use usernames::MemoryUsernameStore;
