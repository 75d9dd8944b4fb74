//! The FCM sender (PROTOCOL.md 11.3, 11.5): one HTTP v1 `messages:send` per wake-up,
//! authorised by an OAuth2 access token got with the service account's JWT-bearer grant
//! and cached until shortly before it expires, and the answer classified into an
//! [`Outcome`]. One attempt, no device state; retries and counting are the dispatcher's.
//!
//! Why not `gcp_auth` or `yup-oauth2`: `gcp_auth` posts to the JSON's `token_uri` but
//! through a private client trusting only the webpki or system roots, so it cannot reach a
//! token endpoint with an operator's (or a test's) CA. `yup-oauth2` can, but only through a
//! second HTTP stack of its own (a hyper client with its own rustls roots, timeouts and
//! redirect rules) beside the one `push::http` gives every sender; the grant itself is one
//! RS256 JWT (`jsonwebtoken`, needed for APNs anyway) and one form POST.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};

use super::http::{HttpOptions, client, provider_word, retry_after, transport_reason};
use super::{Notification, Outcome, TokenSender};
use crate::domain::push::payloads::fcm_new_message;

const DEFAULT_URL: &str = "https://fcm.googleapis.com";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The assertion's lifetime: Google accepts at most an hour.
const ASSERTION_SECONDS: u64 = 3600;
/// An access token is replaced this long before Google says it expires, so a push never
/// carries one that dies in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// What the operator configured for FCM.
#[derive(Clone)]
pub struct FcmSettings {
    /// The service-account JSON file's contents.
    pub credentials_json: Vec<u8>,
    /// None: `https://fcm.googleapis.com`.
    pub base_url: Option<String>,
}

impl std::fmt::Debug for FcmSettings {
    // The JSON holds the private key: never in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmSettings")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The fields of a service-account JSON the grant needs.
#[derive(Deserialize)]
struct ServiceAccount {
    #[serde(rename = "type")]
    kind: String,
    project_id: String,
    #[serde(default)]
    private_key_id: Option<String>,
    private_key: String,
    client_email: String,
    token_uri: String,
}

/// Sends FCM wake-ups for one Firebase project.
pub struct FcmSender {
    client: reqwest::Client,
    send_url: url::Url,
    token_uri: url::Url,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    // tokio, not std: held across the token request, so that concurrent sends wait for
    // the one refresh in flight instead of each asking Google for a token.
    access_token: tokio::sync::Mutex<Option<AccessToken>>,
}

struct AccessToken {
    value: String,
    refresh_at: Instant,
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

/// Google's OAuth error body (`{"error":"invalid_grant","error_description":...}`).
#[derive(Default, Deserialize)]
struct TokenRefusal {
    #[serde(default)]
    error: String,
}

/// Google's API error body (`{"error":{"code","message","status","details":[...]}}`).
#[derive(Default, Deserialize)]
struct Refusal {
    #[serde(default)]
    error: RefusalError,
}

#[derive(Default, Deserialize)]
struct RefusalError {
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<RefusalDetail>,
}

#[derive(Default, Deserialize)]
struct RefusalDetail {
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
}

impl FcmSender {
    /// Reads the service account (its key must sign) and builds the client.
    pub fn new(settings: FcmSettings, http: &HttpOptions) -> anyhow::Result<Self> {
        // serde's message could quote the JSON it choked on, key included: not passed on.
        let account: ServiceAccount = serde_json::from_slice(&settings.credentials_json)
            .ok()
            .context("the FCM credentials are not a service-account JSON")?;
        if account.kind != "service_account" {
            bail!("the FCM credentials are not of type service_account");
        }
        if account.project_id.is_empty() || account.client_email.is_empty() {
            bail!("the FCM credentials lack a project id or client email");
        }
        let token_uri = https_url(&account.token_uri).context("the FCM token_uri")?;
        let base = https_url(settings.base_url.as_deref().unwrap_or(DEFAULT_URL))
            .context("the FCM base URL")?;
        let mut send_url = base.clone();
        send_url
            .path_segments_mut()
            .map_err(|_| anyhow::anyhow!("the FCM base URL cannot hold a path"))?
            .pop_if_empty()
            .extend(["v1", "projects", &account.project_id, "messages:send"]);
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .ok()
            .context("the FCM private_key is not an RSA key (PEM)")?;
        let sender = Self {
            client: client(http)?.build()?,
            send_url,
            token_uri,
            client_email: account.client_email,
            key_id: account.private_key_id.filter(|id| !id.is_empty()),
            key,
            access_token: tokio::sync::Mutex::new(None),
        };
        sender
            .assertion()
            .ok()
            .context("the FCM private_key cannot sign RS256")?;
        Ok(sender)
    }

    /// The JWT of the grant (RFC 7523): this service account, FCM's scope, for `token_uri`.
    fn assertion(&self) -> jsonwebtoken::errors::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Assertion {
            iss: &self.client_email,
            scope: SCOPE,
            aud: self.token_uri.as_str(),
            iat,
            exp: iat + ASSERTION_SECONDS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }

    /// The cached access token, or a new one (one request at a time, see the field).
    async fn access_token(&self) -> Result<String, Outcome> {
        let mut cached = self.access_token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        let answer = self.fetch_access_token().await?;
        let lifetime = Duration::from_secs(answer.expires_in);
        // Short-lived tokens (never seen from Google) are kept for half their life instead.
        let keep = lifetime.saturating_sub(REFRESH_MARGIN).max(lifetime / 2);
        *cached = Some(AccessToken {
            value: answer.access_token.clone(),
            refresh_at: Instant::now() + keep,
        });
        Ok(answer.access_token)
    }

    async fn fetch_access_token(&self) -> Result<TokenAnswer, Outcome> {
        let assertion = self
            .assertion()
            .map_err(|_| Outcome::Failed("fcm: the key cannot sign".into()))?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", GRANT_TYPE)
            .append_pair("assertion", &assertion)
            .finish();
        let response = self
            .client
            .post(self.token_uri.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|error| Outcome::Retry {
                after: None,
                reason: format!("fcm token {}", transport_reason(&error)),
            })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return response.json().await.map_err(|_| Outcome::Retry {
                after: None,
                reason: "fcm token: an answer without a token".into(),
            });
        }
        let after = retry_after(response.headers());
        let refusal: TokenRefusal = response.json().await.unwrap_or_default();
        let reason = describe("fcm token", status, &provider_word(&refusal.error));
        if status == 429 || status >= 500 {
            Err(Outcome::Retry { after, reason })
        } else {
            // invalid_grant and friends: the credentials are wrong, and stay wrong.
            Err(Outcome::Failed(reason))
        }
    }

    /// Forgets `token` (FCM refused it), unless another send has replaced it already.
    async fn drop_access_token(&self, token: &str) {
        let mut cached = self.access_token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == token) {
            *cached = None;
        }
    }
}

#[async_trait]
impl TokenSender for FcmSender {
    async fn send(&self, token: &str, notification: Notification) -> Outcome {
        let Notification::NewMessage { urgent } = notification else {
            return Outcome::Failed("fcm sends only new-message wake-ups".into());
        };
        let access_token = match self.access_token().await {
            Ok(access_token) => access_token,
            Err(outcome) => return outcome,
        };
        let response = self
            .client
            .post(self.send_url.clone())
            .header(AUTHORIZATION, format!("Bearer {access_token}"))
            .json(&fcm_new_message(token, urgent))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("fcm {}", transport_reason(&error)),
                };
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Outcome::Accepted;
        }
        let after = retry_after(response.headers());
        let refusal: Refusal = response.json().await.unwrap_or_default();
        if status == 401 {
            self.drop_access_token(&access_token).await;
        }
        classify(status, &refusal, after)
    }
}

/// What an FCM refusal means (PROTOCOL.md 11.5).
fn classify(status: u16, refusal: &Refusal, after: Option<Duration>) -> Outcome {
    let code = refusal
        .error
        .details
        .iter()
        .find_map(|detail| detail.error_code.as_deref());
    if code == Some("UNREGISTERED") {
        return Outcome::Unregistered {
            invalidated_ms: None,
        };
    }
    let word = provider_word(code.unwrap_or(&refusal.error.status));
    let reason = describe("fcm", status, &word);
    // 401: the access token was refused; it has been dropped and the next try gets another.
    if status == 401 || status == 429 || status >= 500 {
        Outcome::Retry { after, reason }
    } else {
        Outcome::Failed(reason)
    }
}

fn describe(what: &str, status: u16, word: &str) -> String {
    if word.is_empty() {
        format!("{what} {status}")
    } else {
        format!("{what} {status} {word}")
    }
}

fn https_url(text: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(text).ok().context("does not parse")?;
    if url.scheme() != "https" || url.cannot_be_a_base() {
        bail!("must be an https URL");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(body: serde_json::Value) -> Refusal {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn unregistered_is_read_from_the_error_details() {
        let gone = refusal(
            json!({"error": {"code": 404, "message": "Requested entity was not found.",
            "status": "NOT_FOUND", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "UNREGISTERED"}]}}),
        );
        assert_eq!(
            classify(404, &gone, None),
            Outcome::Unregistered {
                invalidated_ms: None
            }
        );
        let missing = refusal(json!({"error": {"code": 404, "status": "NOT_FOUND"}}));
        assert_eq!(
            classify(404, &missing, None),
            Outcome::Failed("fcm 404 NOT_FOUND".into())
        );
    }

    #[test]
    fn quota_outages_and_refused_access_tokens_are_retried_and_the_rest_fails() {
        let after = Some(Duration::from_secs(9));
        for status in [401, 429, 500, 503] {
            assert!(
                matches!(classify(status, &Refusal::default(), after), Outcome::Retry { after: a, .. } if a == after),
                "{status}"
            );
        }
        let invalid = refusal(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "details": [{"errorCode": "INVALID_ARGUMENT"}]}}));
        assert_eq!(
            classify(400, &invalid, None),
            Outcome::Failed("fcm 400 INVALID_ARGUMENT".into())
        );
        assert_eq!(
            classify(403, &Refusal::default(), None),
            Outcome::Failed("fcm 403".into())
        );
    }
}
