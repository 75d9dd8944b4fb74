//! The APNs sender (PROTOCOL.md 11.3, 11.5): one HTTP/2 request per wake-up to
//! `/3/device/<token>`, authenticated by a provider token (an ES256 JWT made from the
//! team's `.p8` key and cached), and the answer classified into an [`Outcome`]. It does one
//! attempt and keeps no state about devices; retries and counting are the dispatcher's.
//!
//! Why not the `a2` or `apns-h2` crates: both fix the host to Apple's two (an `Endpoint`
//! enum, no base URL) and build their own TLS client that trusts only the webpki roots, so
//! neither can be pointed at a local stand-in or trust an operator's CA. reqwest (HTTP/2 by
//! ALPN, the client every push sender shares) plus `jsonwebtoken` for ES256 do the same
//! work in a few lines.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};

use super::http::{HttpOptions, client, provider_word, retry_after, transport_reason};
use super::{Notification, Outcome, TokenSender};
use crate::domain::push::payloads::{APNS_EXPIRY_SECONDS, apns_new_message};

const PRODUCTION_URL: &str = "https://api.push.apple.com";
const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// How long one provider token is used. Apple refuses tokens older than an hour
/// (`ExpiredProviderToken`) and ones replaced more often than every 20 minutes
/// (`TooManyProviderTokenUpdates`), so somewhere in between.
const PROVIDER_TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

/// What the operator configured for APNs token auth.
#[derive(Clone)]
pub struct ApnsSettings {
    /// The `.p8` file's contents (a PKCS#8 P-256 private key, PEM).
    pub key_pem: Vec<u8>,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id, sent as `apns-topic`.
    pub bundle_id: String,
    /// Apple's sandbox (development builds) instead of production.
    pub sandbox: bool,
    /// None: Apple's production or sandbox host, by `sandbox`.
    pub base_url: Option<String>,
}

impl std::fmt::Debug for ApnsSettings {
    // The key never reaches a log, even through a `{:?}` of the settings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSettings")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("bundle_id", &self.bundle_id)
            .field("sandbox", &self.sandbox)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Sends APNs wake-ups for one team and app.
pub struct ApnsSender {
    client: reqwest::Client,
    base: url::Url,
    key: EncodingKey,
    key_id: String,
    team_id: String,
    topic: HeaderValue,
    // std, not tokio: held only to read or replace the cached token, never across an await
    // (signing one ES256 JWT takes microseconds).
    provider_token: Mutex<Option<ProviderToken>>,
}

#[derive(Clone)]
struct ProviderToken {
    jwt: String,
    made: Instant,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

/// The body of an APNs refusal.
#[derive(Default, Deserialize)]
struct Refusal {
    #[serde(default)]
    reason: String,
    /// Milliseconds since the epoch at which the token stopped being valid (410 only).
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
}

impl ApnsSender {
    /// Checks the settings (the key must sign) and builds the HTTP/2 client.
    pub fn new(settings: ApnsSettings, http: &HttpOptions) -> anyhow::Result<Self> {
        if settings.key_id.is_empty() || settings.team_id.is_empty() {
            bail!("APNs needs a key id and a team id");
        }
        let topic = HeaderValue::from_str(&settings.bundle_id)
            .ok()
            .filter(|_| !settings.bundle_id.is_empty())
            .context("the APNs bundle id is not a valid topic")?;
        let base = settings.base_url.as_deref().unwrap_or(if settings.sandbox {
            SANDBOX_URL
        } else {
            PRODUCTION_URL
        });
        let base = url::Url::parse(base).context("the APNs base URL does not parse")?;
        if base.scheme() != "https" || base.cannot_be_a_base() {
            bail!("the APNs base URL must be https");
        }
        // A parse error of a key would quote none of it, but say so plainly anyway.
        let key = EncodingKey::from_ec_pem(&settings.key_pem)
            .ok()
            .context("the APNs key is not a PKCS#8 P-256 key (.p8)")?;
        let sender = Self {
            client: client(http)?.build()?,
            base,
            key,
            key_id: settings.key_id,
            team_id: settings.team_id,
            topic,
            provider_token: Mutex::new(None),
        };
        // Sign once now, so a key that parses but cannot sign fails at start, not per push.
        sender
            .sign()
            .ok()
            .context("the APNs key cannot sign ES256")?;
        Ok(sender)
    }

    fn sign(&self) -> jsonwebtoken::errors::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.team_id,
                iat,
            },
            &self.key,
        )
    }

    /// The cached provider token, or a fresh one when it is missing or 50 minutes old.
    fn provider_token(&self) -> Result<String, Outcome> {
        let mut cached = self
            .provider_token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(token) = cached.as_ref()
            && token.made.elapsed() < PROVIDER_TOKEN_LIFETIME
        {
            return Ok(token.jwt.clone());
        }
        let jwt = self
            .sign()
            .map_err(|_| Outcome::Failed("apns: the key cannot sign".into()))?;
        *cached = Some(ProviderToken {
            jwt: jwt.clone(),
            made: Instant::now(),
        });
        Ok(jwt)
    }

    /// Forgets `jwt` (Apple called it expired), unless another send has replaced it already.
    fn drop_provider_token(&self, jwt: &str) {
        let mut cached = self
            .provider_token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cached.as_ref().is_some_and(|token| token.jwt == jwt) {
            *cached = None;
        }
    }

    fn device_url(&self, token: &str) -> Option<url::Url> {
        let mut url = self.base.clone();
        // Pushed as a segment, so it is percent-encoded: whatever a device registered
        // cannot change the path; Apple judges the token (`BadDeviceToken`).
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(["3", "device", token]);
        Some(url)
    }
}

#[async_trait]
impl TokenSender for ApnsSender {
    async fn send(&self, token: &str, notification: Notification) -> Outcome {
        let Notification::NewMessage { urgent } = notification else {
            return Outcome::Failed("apns sends only new-message wake-ups".into());
        };
        let Some(url) = self.device_url(token) else {
            return Outcome::Failed("apns: no device URL".into());
        };
        let jwt = match self.provider_token() {
            Ok(jwt) => jwt,
            Err(outcome) => return outcome,
        };
        let push = apns_new_message(urgent);
        let expiration = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + APNS_EXPIRY_SECONDS;
        let mut request = self
            .client
            .post(url)
            // APNs speaks only HTTP/2; this refuses a connection that fell back to 1.1.
            .version(reqwest::Version::HTTP_2)
            .header(AUTHORIZATION, format!("bearer {jwt}"))
            .header("apns-topic", self.topic.clone())
            .header("apns-push-type", push.push_type)
            .header("apns-priority", push.priority.to_string())
            .header("apns-expiration", expiration.to_string())
            .json(&push.payload);
        if let Some(collapse_id) = push.collapse_id {
            request = request.header("apns-collapse-id", collapse_id);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("apns {}", transport_reason(&error)),
                };
            }
        };
        let status = response.status().as_u16();
        if status == 200 {
            return Outcome::Accepted;
        }
        let after = retry_after(response.headers());
        let refusal: Refusal = response.json().await.unwrap_or_default();
        if refusal.reason == "ExpiredProviderToken" {
            self.drop_provider_token(&jwt);
        }
        classify(status, &refusal, after)
    }
}

/// What an APNs refusal means (PROTOCOL.md 11.5).
fn classify(status: u16, refusal: &Refusal, after: Option<Duration>) -> Outcome {
    let reason = provider_word(&refusal.reason);
    match reason.as_str() {
        "Unregistered" | "BadDeviceToken" | "ExpiredToken" => {
            return Outcome::Unregistered {
                invalidated_ms: refusal.timestamp.as_ref().and_then(milliseconds),
            };
        }
        // The token was made again just now (the cache was dropped); the push may go again.
        "ExpiredProviderToken" => {
            return Outcome::Retry {
                after,
                reason: describe(status, &reason),
            };
        }
        _ => {}
    }
    if status == 429 || status >= 500 {
        Outcome::Retry {
            after,
            reason: describe(status, &reason),
        }
    } else {
        Outcome::Failed(describe(status, &reason))
    }
}

fn describe(status: u16, reason: &str) -> String {
    if reason.is_empty() {
        format!("apns {status}")
    } else {
        format!("apns {status} {reason}")
    }
}

/// APNs' `timestamp`: a number of milliseconds (a numeric string tolerated).
fn milliseconds(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(body: serde_json::Value) -> Refusal {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn dead_tokens_are_unregistered_with_apples_time_when_it_gives_one() {
        let gone = refusal(json!({"reason": "Unregistered", "timestamp": 1700000000123i64}));
        assert_eq!(
            classify(410, &gone, None),
            Outcome::Unregistered {
                invalidated_ms: Some(1700000000123)
            }
        );
        for (status, reason) in [(400, "BadDeviceToken"), (410, "ExpiredToken")] {
            assert_eq!(
                classify(status, &refusal(json!({ "reason": reason })), None),
                Outcome::Unregistered {
                    invalidated_ms: None
                }
            );
        }
    }

    #[test]
    fn throttling_and_outages_are_retried_and_the_rest_fails() {
        let after = Some(Duration::from_secs(3));
        let busy = refusal(json!({"reason": "TooManyRequests"}));
        assert!(
            matches!(classify(429, &busy, after), Outcome::Retry { after: a, .. } if a == after)
        );
        let down = refusal(json!({"reason": "ServiceUnavailable"}));
        assert!(matches!(classify(503, &down, None), Outcome::Retry { .. }));
        let expired = refusal(json!({"reason": "ExpiredProviderToken"}));
        assert!(matches!(
            classify(403, &expired, None),
            Outcome::Retry { .. }
        ));
        let topic = refusal(json!({"reason": "BadTopic"}));
        assert_eq!(
            classify(400, &topic, None),
            Outcome::Failed("apns 400 BadTopic".into())
        );
        assert_eq!(
            classify(400, &Refusal::default(), None),
            Outcome::Failed("apns 400".into())
        );
    }
}
