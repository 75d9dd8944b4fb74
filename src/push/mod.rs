//! The senders of wake-ups (PROTOCOL.md 11.2, 11.3, 11.5): one per provider (FCM HTTP v1,
//! APNs over HTTP/2, WebPush with VAPID and aes128gcm), behind one [`Senders`] that picks
//! the device's provider, retries what may be retried and counts every outcome. What a
//! wake-up carries is `domain::push::payloads`; when one is sent is `service::wakeups`.

pub mod apns;
pub mod fcm;
pub mod http;
pub mod senders;
mod vapid;
pub mod webpush;

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

/// A push provider, as metrics label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Fcm,
    Apns,
    WebPush,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Fcm, Provider::Apns, Provider::WebPush];

    pub fn label(self) -> &'static str {
        match self {
            Provider::Fcm => "fcm",
            Provider::Apns => "apns",
            Provider::WebPush => "webpush",
        }
    }
}

/// What a push says (PROTOCOL.md 11.3, 11.8): never more than this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    /// The device has mail; `urgent` as the message that queued it.
    NewMessage { urgent: bool },
    /// The first push to a fresh WebPush subscription, carrying its activation token.
    WebPushActivation(Uuid),
}

impl Notification {
    /// The `kind` label of push metrics.
    pub fn label(self) -> &'static str {
        match self {
            Notification::NewMessage { urgent: true } => "urgent",
            Notification::NewMessage { urgent: false } => "background",
            Notification::WebPushActivation(_) => "activation",
        }
    }
}

/// What one attempt at a push came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider took it.
    Accepted,
    /// The token or subscription is no longer valid (FCM `UNREGISTERED`; APNs
    /// `Unregistered`, `BadDeviceToken`, `ExpiredToken`; WebPush 401/403/404/410).
    /// `invalidated_ms`: APNs' token-invalidation time, when it gave one.
    Unregistered { invalidated_ms: Option<i64> },
    /// Worth another try later (5xx, 429, a connection or timeout failure); `after` is the
    /// provider's `Retry-After` when it gave one.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Refused for good (another 4xx, a refused address, a provider not configured): counted,
    /// nothing else. `reason` never holds a token, key or endpoint.
    Failed(String),
}

/// One provider's sender. `token` is the device's token (FCM, APNs); WebPush's sender is
/// given the whole registration instead, see [`webpush`].
#[async_trait]
pub trait TokenSender: Send + Sync {
    async fn send(&self, token: &str, notification: Notification) -> Outcome;
}

/// WebPush's sender: it needs the whole subscription (endpoint, keys, whether activated).
#[async_trait]
pub trait SubscriptionSender: Send + Sync {
    async fn send(
        &self,
        registration: &crate::domain::push::WebPushRegistration,
        notification: Notification,
    ) -> Outcome;
}
