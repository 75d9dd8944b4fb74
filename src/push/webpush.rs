//! The WebPush sender (PROTOCOL.md 11.2, 11.8): one POST per push to the subscription's
//! endpoint, the payload encrypted to the subscription (RFC 8291 `aes128gcm`), signed with
//! VAPID (RFC 8292), only to public addresses unless the operator allows private ones, and
//! a push service that answered 429 left alone until its `Retry-After`. One attempt per
//! call, classified; retries belong to the caller.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};
use web_push_native::p256;

use super::http::{HttpOptions, client};
use super::vapid::VapidHeaders;
pub use super::vapid::VapidKey;
use super::{Notification, Outcome};
use crate::domain::push::payloads::{
    NEW_MESSAGE_KEY, WEBPUSH_ACTIVATION_TTL_SECONDS, WEBPUSH_TTL_SECONDS, webpush_activation,
    webpush_new_message,
};
use crate::domain::push::{WebPushRegistration, is_public_address};

/// How long a 429 without `Retry-After` keeps us away from a push service (FORK).
const DEFAULT_BACK_OFF: Duration = Duration::from_secs(300);
/// The longest back-off a push service can ask for: a day, so a wild `Retry-After` can
/// neither overflow a clock nor silence a service for good.
const MAX_BACK_OFF: Duration = Duration::from_secs(24 * 3600);

/// Sends WebPush wake-ups; one per server, shared by every task that sends.
pub struct WebPushSender {
    client: reqwest::Client,
    vapid: VapidHeaders,
    allow_private: bool,
    /// Push service (`https://host[:port]`) → when it may be contacted again. A std lock:
    /// held only to read or write an entry, never across an await.
    back_off: Mutex<HashMap<String, Instant>>,
}

impl WebPushSender {
    /// `subject` is the operator's contact for push services (`mailto:` or `https:`);
    /// `allow_private` lets endpoints resolve to loopback, private and link-local addresses
    /// (`SEALPOST_WEBPUSH_ALLOW_PRIVATE`, a LAN push distributor).
    pub fn new(
        key: VapidKey,
        subject: String,
        http: &HttpOptions,
        allow_private: bool,
    ) -> anyhow::Result<Self> {
        let mut builder = client(http)?;
        if !allow_private {
            // The address is checked where the connection is made, not when the
            // subscription was stored: a name may resolve elsewhere since (DNS rebinding).
            // A proxy would make the connection in our place, unchecked.
            builder = builder
                .dns_resolver(Arc::new(PublicOnlyResolver))
                .no_proxy();
        }
        Ok(Self {
            client: builder.build()?,
            vapid: VapidHeaders::new(key, subject)?,
            allow_private,
            back_off: Mutex::new(HashMap::new()),
        })
    }

    /// One attempt at `notification` to `registration`'s endpoint. An inactive
    /// subscription gets only its activation push.
    pub async fn send(
        &self,
        registration: &WebPushRegistration,
        notification: Notification,
    ) -> Outcome {
        let (plaintext, ttl, urgency, topic) = match notification {
            Notification::NewMessage { .. } if !registration.active => {
                return Outcome::Failed("subscription not activated".into());
            }
            Notification::NewMessage { urgent } => {
                let (plaintext, urgency) = webpush_new_message(urgent);
                (
                    plaintext,
                    WEBPUSH_TTL_SECONDS,
                    urgency,
                    Some(NEW_MESSAGE_KEY),
                )
            }
            Notification::WebPushActivation(token) => (
                webpush_activation(&token),
                WEBPUSH_ACTIVATION_TTL_SECONDS,
                "high",
                None,
            ),
        };
        let subscription = &registration.subscription;
        let Ok(url) = Url::parse(subscription.endpoint()) else {
            return Outcome::Failed("endpoint is not a URL".into());
        };
        // The VAPID audience and the back-off key: the push service, not the subscription.
        let audience = url.origin().ascii_serialization();
        if let Some(after) = self.backing_off(&audience) {
            return Outcome::Retry {
                after: Some(after),
                reason: "push service asked to back off (429)".into(),
            };
        }
        // A name goes through the resolver; an address literal never does, so it is
        // checked here.
        let literal = match url.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if !self.allow_private && literal.is_some_and(|ip| !is_public_address(ip)) {
            return Outcome::Failed("endpoint address is not public".into());
        }
        let body = match encrypt(registration, &plaintext) {
            Ok(body) => body,
            Err(reason) => return Outcome::Failed(reason.into()),
        };
        let authorization = match self.vapid.get(&audience) {
            Ok(header) => header,
            Err(_) => return Outcome::Failed("signing the VAPID token failed".into()),
        };
        let mut request = self
            .client
            .post(url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Encoding", "aes128gcm")
            .header("TTL", ttl)
            .header("Urgency", urgency)
            .header("Authorization", authorization)
            .body(body);
        if let Some(topic) = topic {
            request = request.header("Topic", topic);
        }
        match request.send().await {
            // The body says nothing we act on; dropping it closes or frees the stream.
            Ok(response) => self.classify(&audience, response.status(), response.headers()),
            Err(error) => classify_error(&error),
        }
    }

    fn classify(
        &self,
        audience: &str,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
    ) -> Outcome {
        match status.as_u16() {
            200..=299 => Outcome::Accepted,
            401 | 403 | 404 | 410 => Outcome::Unregistered {
                invalidated_ms: None,
            },
            429 => {
                let after = retry_after(headers).unwrap_or(DEFAULT_BACK_OFF);
                self.back_off_until(audience, after);
                Outcome::Retry {
                    after: Some(after),
                    reason: "push service rate-limited (429)".into(),
                }
            }
            500..=599 => Outcome::Retry {
                after: retry_after(headers),
                reason: format!("push service answered {}", status.as_u16()),
            },
            300..=399 => Outcome::Failed(format!(
                "push service redirected ({}); redirects are not followed",
                status.as_u16()
            )),
            other => Outcome::Failed(format!("push service answered {other}")),
        }
    }

    fn backing_off(&self, audience: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut back_off = self.back_off.lock().unwrap_or_else(|e| e.into_inner());
        match back_off.get(audience) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                back_off.remove(audience);
                None
            }
            None => None,
        }
    }

    fn back_off_until(&self, audience: &str, after: Duration) {
        let now = Instant::now();
        let mut back_off = self.back_off.lock().unwrap_or_else(|e| e.into_inner());
        back_off.retain(|_, until| *until > now);
        back_off.insert(audience.to_owned(), now + after);
    }
}

impl std::fmt::Debug for WebPushSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushSender")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

/// `plaintext` encrypted to the subscription's key and secret (RFC 8291, one record).
fn encrypt(
    registration: &WebPushRegistration,
    plaintext: &serde_json::Value,
) -> Result<Vec<u8>, &'static str> {
    let subscription = &registration.subscription;
    let public_key = p256::PublicKey::from_sec1_bytes(subscription.public_key())
        .map_err(|_| "subscription key is not a P-256 point")?;
    let auth = web_push_native::Auth::clone_from_slice(subscription.auth());
    web_push_native::encrypt(plaintext.to_string().into_bytes(), &public_key, &auth)
        .map_err(|_| "encrypting the push failed")
}

/// `Retry-After` in seconds (the form push services use), at most [`MAX_BACK_OFF`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    super::http::retry_after(headers).map(|after| after.min(MAX_BACK_OFF))
}

/// A failed request, without its URL (reqwest's messages name it; an endpoint identifies a
/// device).
fn classify_error(error: &reqwest::Error) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<NoPublicAddress>() {
            return Outcome::Failed(NoPublicAddress.to_string());
        }
        source = cause.source();
    }
    let reason = if error.is_timeout() {
        "push request timed out"
    } else if error.is_connect() {
        "could not connect to the push service"
    } else {
        "push request failed"
    };
    Outcome::Retry {
        after: None,
        reason: reason.into(),
    }
}

/// Resolves names as the system does, then keeps only public addresses.
struct PublicOnlyResolver;

#[derive(Debug, thiserror::Error)]
#[error("endpoint resolves to no public address")]
struct NoPublicAddress;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| is_public_address(address.ip()))
                .collect();
            if public.is_empty() {
                return Err(Box::new(NoPublicAddress) as _);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[async_trait::async_trait]
impl super::SubscriptionSender for WebPushSender {
    async fn send(
        &self,
        registration: &WebPushRegistration,
        notification: Notification,
    ) -> Outcome {
        WebPushSender::send(self, registration, notification).await
    }
}
