//! Named rate limits, declared once here, and the one check function every caller uses.
//! Owns the token-bucket policy; the bucket state lives behind `storage::RateLimitStore`
//! (Redis shared by all pods, or memory). Knows nothing of HTTP.

pub mod clients;
pub mod sockets;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use crate::metrics::Metrics;
pub use crate::storage::BucketSpec;
use crate::storage::{BucketDecision, RateLimitStore, StorageError};

/// Why the limiter refused: the bucket ran out (a 429 with `Retry-After` to the client), or
/// the bucket store failed.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("rate limited: retry after {retry_after:?}")]
    Limited { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StorageError),
}

/// The rate limits' configuration: on or off, and a bucket spec for every declared limit
/// (defaults overridden by the file).
#[derive(Clone, Debug)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    pub specs: BTreeMap<Limit, BucketSpec>,
}

/// Every rate limit sealpost has (PROTOCOL.md section 9). Adding one means adding it here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    Registration,
    PreKeys,
    Messages,
    InboundMessageBytes,
    AllocateDevice,
    VerifyDevice,
    AuthFailures,
    /// Registering or removing an FCM or APNs token, per device (sealpost's; Signal limits
    /// none of 11.1's endpoints).
    PushRegistration,
    /// Subscribing, activating or removing a WebPush subscription, per device (PROTOCOL.md
    /// "9 (additions)": `webPushSet`, 10 per minute).
    WebPushSet,
    /// Reading the VAPID public key, per client address (sealpost's: the one push endpoint
    /// without authentication).
    WebPushVapid,
    /// Attachment upload forms, per account (PROTOCOL.md "9 (additions)").
    AttachmentCreate,
    /// Bytes of the upload forms that name a length, per account.
    AttachmentCreateBytes,
    /// Attachment downloads, per client address (sealpost's: they need no credentials, and
    /// a pod serves the bytes itself).
    AttachmentDownload,
    /// Calls to one resumable upload (`POST`, `HEAD`, `PATCH`), per attachment key
    /// (sealpost's: a token's holder cannot spin on an upload).
    AttachmentUpload,
    /// Authenticated profile reads, per requesting account (PROTOCOL.md "9 (additions)").
    Profile,
    /// Profile versions stored (`PUT /v1/profile`), per account (sealpost's: Signal limits
    /// none).
    ProfileSet,
    /// Avatar uploads to sealpost's own cdn-0 (`POST /cdn0/`), per client address
    /// (sealpost's: the form is posted without account credentials).
    AvatarUpload,
    /// Username hash reservations, per account.
    UsernameReserve,
    /// Username hash confirmations, per account.
    UsernameSet,
    /// Anonymous username hash lookups, per client address.
    UsernameLookup,
    /// Setting or deleting a username link, per account.
    UsernameLinkOperation,
    /// Anonymous username link lookups, per client address.
    UsernameLinkLookupPerIp,
    /// Anonymous account existence checks, per client address.
    CheckAccountExistence,
    /// Waiting for a linked device, per account.
    WaitForLinkedDevice,
    /// Calling relay credentials, per account.
    GetCallingRelays,
    /// Spam reports, per account (sealpost's: Signal limits none; a report costs a Postgres
    /// row when it counts).
    SpamReport,
    /// Renaming devices, per calling device (sealpost's: Signal limits none; each rename is
    /// a Postgres write).
    SetDeviceName,
}

impl Limit {
    pub const ALL: [Limit; 27] = [
        Limit::Registration,
        Limit::PreKeys,
        Limit::Messages,
        Limit::InboundMessageBytes,
        Limit::AllocateDevice,
        Limit::VerifyDevice,
        Limit::AuthFailures,
        Limit::PushRegistration,
        Limit::WebPushSet,
        Limit::WebPushVapid,
        Limit::AttachmentCreate,
        Limit::AttachmentCreateBytes,
        Limit::AttachmentDownload,
        Limit::AttachmentUpload,
        Limit::Profile,
        Limit::ProfileSet,
        Limit::AvatarUpload,
        Limit::UsernameReserve,
        Limit::UsernameSet,
        Limit::UsernameLookup,
        Limit::UsernameLinkOperation,
        Limit::UsernameLinkLookupPerIp,
        Limit::CheckAccountExistence,
        Limit::WaitForLinkedDevice,
        Limit::GetCallingRelays,
        Limit::SpamReport,
        Limit::SetDeviceName,
    ];

    /// The name used in configuration, Redis keys and the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Registration => "registration",
            Limit::PreKeys => "prekeys",
            Limit::Messages => "messages",
            Limit::InboundMessageBytes => "inboundMessageBytes",
            Limit::AllocateDevice => "allocateDevice",
            Limit::VerifyDevice => "verifyDevice",
            Limit::AuthFailures => "authFailures",
            Limit::PushRegistration => "pushRegistration",
            Limit::WebPushSet => "webPushSet",
            Limit::WebPushVapid => "webPushVapid",
            Limit::AttachmentCreate => "attachmentCreate",
            Limit::AttachmentCreateBytes => "attachmentCreateBytes",
            Limit::AttachmentDownload => "attachmentDownload",
            Limit::AttachmentUpload => "attachmentUpload",
            Limit::Profile => "profile",
            Limit::ProfileSet => "profileSet",
            Limit::AvatarUpload => "avatarUpload",
            Limit::UsernameReserve => "usernameReserve",
            Limit::UsernameSet => "usernameSet",
            Limit::UsernameLookup => "usernameLookup",
            Limit::UsernameLinkOperation => "usernameLinkOperation",
            Limit::UsernameLinkLookupPerIp => "usernameLinkLookupPerIp",
            Limit::CheckAccountExistence => "checkAccountExistence",
            Limit::WaitForLinkedDevice => "waitForLinkedDevice",
            Limit::GetCallingRelays => "getCallingRelays",
            Limit::SpamReport => "spamReport",
            Limit::SetDeviceName => "setDeviceName",
        }
    }

    pub fn from_name(name: &str) -> Option<Limit> {
        Limit::ALL.into_iter().find(|l| l.name() == name)
    }

    pub fn default_spec(self) -> BucketSpec {
        let (bucket_size, permit_period_ms) = match self {
            Limit::Registration => (6, 30_000.0),
            Limit::PreKeys => (6, 600_000.0),
            Limit::Messages => (60, 1_000.0),
            Limit::InboundMessageBytes => (128 * 1024 * 1024, 0.5),
            Limit::AllocateDevice => (6, 120_000.0),
            Limit::VerifyDevice => (6, 120_000.0),
            Limit::AuthFailures => (20, 60_000.0),
            Limit::PushRegistration => (10, 60_000.0),
            Limit::WebPushSet => (10, 60_000.0),
            Limit::WebPushVapid => (100, 1_000.0),
            Limit::AttachmentCreate => (50, 1_200.0),
            // 1 GiB, one byte back every microsecond.
            Limit::AttachmentCreateBytes => (1 << 30, 0.001),
            // A conversation's worth of media at once, then 50 a second.
            Limit::AttachmentDownload => (1000, 20.0),
            // Room for many resumes of one upload on a bad network, then one a second.
            Limit::AttachmentUpload => (100, 1_000.0),
            Limit::Profile => (4320, 20_000.0),
            // A client writes its profile on changes and key rotations: a burst, then one
            // every 30 s.
            Limit::ProfileSet => (100, 30_000.0),
            // Avatars change rarely; room for a household behind one address, then one a
            // minute.
            Limit::AvatarUpload => (20, 60_000.0),
            Limit::UsernameReserve => (100, 900_000.0),
            Limit::UsernameSet => (100, 900_000.0),
            Limit::UsernameLookup => (100, 900_000.0),
            Limit::UsernameLinkOperation => (10, 60_000.0),
            Limit::UsernameLinkLookupPerIp => (100, 15_000.0),
            Limit::CheckAccountExistence => (1000, 4_000.0),
            Limit::WaitForLinkedDevice => (10, 30_000.0),
            Limit::GetCallingRelays => (100, 600_000.0),
            // A day's worth of reporting at once, then one a minute.
            Limit::SpamReport => (100, 60_000.0),
            // A few renames at once, then one a minute.
            Limit::SetDeviceName => (10, 60_000.0),
        };
        BucketSpec {
            bucket_size,
            permit_period_ms,
        }
    }
}

/// The rate limiter every service uses; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    enabled: bool,
    specs: Arc<[BucketSpec; Limit::ALL.len()]>,
    store: Arc<dyn RateLimitStore>,
    metrics: Metrics,
    /// Keys the hash that stands for a client address in bucket names.
    address_secret: Arc<[u8; 32]>,
}

/// The name of the server secret that keys client-address hashes (`storage::SecretStore`).
pub const ADDRESS_SECRET: &str = "rate-limit-address-key";

impl RateLimiter {
    pub fn new(
        config: &RateLimitsConfig,
        store: Arc<dyn RateLimitStore>,
        metrics: Metrics,
        address_secret: [u8; 32],
    ) -> Self {
        let specs = Limit::ALL.map(|l| {
            config
                .specs
                .get(&l)
                .copied()
                .unwrap_or_else(|| l.default_spec())
        });
        // Every limit's hit counter exists from the start (at 0), so a dashboard's rate of
        // it is defined before the first refusal.
        for limit in Limit::ALL {
            metrics.rate_limit_hits.with_label_values(&[limit.name()]);
        }
        Self {
            enabled: config.enabled,
            specs: Arc::new(specs),
            store,
            metrics,
            address_secret: Arc::new(address_secret),
        }
    }

    /// The bucket key that stands for a client address: a keyed hash (HMAC-SHA256 under a
    /// server secret kept in Postgres, 128 bits in hex), so that nothing in Redis names an
    /// address and a copy of Redis alone cannot be searched for one.
    pub fn address_key(&self, address: IpAddr) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.address_secret.as_slice())
            .expect("HMAC takes a key of any length");
        // One form per address: an IPv4-mapped IPv6 address is its IPv4 address.
        let address = address.to_canonical();
        match address {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let digest = mac.finalize().into_bytes();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn spec(&self, limit: Limit) -> BucketSpec {
        self.specs[limit as usize]
    }

    /// Takes one permit from `limit`'s bucket for `key`, or fails with 429.
    pub async fn check(&self, limit: Limit, key: &str) -> Result<(), LimitError> {
        self.take(limit, key, 1, true).await
    }

    /// Takes `permits` permits at once (byte-counting limits).
    pub async fn check_permits(
        &self,
        limit: Limit,
        key: &str,
        permits: u64,
    ) -> Result<(), LimitError> {
        self.take(limit, key, permits, true).await
    }

    /// Takes each `(key, permits)` from `limit`'s buckets, or none of them: every bucket is
    /// checked first (429 with the longest wait if any falls short), then all are taken.
    /// Two requests racing between the check and the take can leave the loser charged for
    /// the buckets it took before the one that ran out; it is still refused.
    pub async fn check_permits_all(
        &self,
        limit: Limit,
        charges: &[(String, u64)],
    ) -> Result<(), LimitError> {
        if !self.enabled || charges.is_empty() {
            return Ok(());
        }
        let checks = charges
            .iter()
            .map(|(key, permits)| self.take(limit, key, *permits, false));
        let mut longest: Option<Duration> = None;
        for result in futures_util::future::join_all(checks).await {
            match result {
                Ok(()) => {}
                Err(LimitError::Limited { retry_after }) => {
                    longest = Some(longest.map_or(retry_after, |l| l.max(retry_after)));
                }
                Err(other) => return Err(other),
            }
        }
        if let Some(retry_after) = longest {
            return Err(LimitError::Limited { retry_after });
        }
        let takes = charges
            .iter()
            .map(|(key, permits)| self.take(limit, key, *permits, true));
        futures_util::future::try_join_all(takes).await?;
        Ok(())
    }

    /// Fails with 429 when `key` has no permit left, without taking one: for limits that
    /// only count failures (a request must not spend a permit merely by being checked).
    pub async fn ensure_available(&self, limit: Limit, key: &str) -> Result<(), LimitError> {
        self.take(limit, key, 1, false).await
    }

    async fn take(
        &self,
        limit: Limit,
        key: &str,
        permits: u64,
        consume: bool,
    ) -> Result<(), LimitError> {
        if !self.enabled {
            return Ok(());
        }
        let bucket_key = format!("{}:{key}", limit.name());
        match self
            .store
            .take(&bucket_key, self.spec(limit), permits, consume)
            .await?
        {
            BucketDecision::Allowed => Ok(()),
            BucketDecision::Denied { retry_after } => {
                self.metrics
                    .rate_limit_hits
                    .with_label_values(&[limit.name()])
                    .inc();
                Err(LimitError::Limited {
                    retry_after: retry_after.max(Duration::from_secs(1)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_round_trips_through_its_name() {
        for limit in Limit::ALL {
            assert_eq!(Limit::from_name(limit.name()), Some(limit));
        }
        assert_eq!(Limit::from_name("nope"), None);
    }

    #[test]
    fn address_keys_name_no_address_and_differ_by_secret() {
        let limiter = |secret| {
            let config = RateLimitsConfig {
                enabled: true,
                specs: Default::default(),
            };
            let store = Arc::new(crate::storage::memory::MemoryRateLimitStore::new());
            RateLimiter::new(&config, store, Metrics::new(), secret)
        };
        let (a, b) = (limiter([1; 32]), limiter([2; 32]));
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        let key = a.address_key(ip);
        assert_eq!(key.len(), 32);
        assert!(!key.contains("192") && !key.contains('.'), "{key}");
        assert_eq!(key, a.address_key(ip), "stable");
        assert_ne!(key, b.address_key(ip), "keyed");
        assert_ne!(key, a.address_key("192.0.2.78".parse().unwrap()));
        let mapped: IpAddr = "::ffff:192.0.2.77".parse().unwrap();
        assert_eq!(key, a.address_key(mapped), "one form per address");
    }

    #[test]
    fn limits_are_indexed_in_declaration_order() {
        for (i, limit) in Limit::ALL.iter().enumerate() {
            assert_eq!(*limit as usize, i);
        }
    }
}
