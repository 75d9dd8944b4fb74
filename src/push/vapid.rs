//! The server's VAPID identity (RFC 8292): one ES256 (P-256) key shared by every pod, so a
//! push service sees one application server whichever pod sent; and the `Authorization:
//! vapid` headers it signs, cached per push service. The key never leaves this module in
//! any printable form but its public point.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePrivateKey;
use web_push_native::jwt_simple::algorithms::{ECDSAP256KeyPairLike, ES256KeyPair};
use web_push_native::jwt_simple::claims::Claims;

/// How long a signed VAPID JWT is valid (FORK: 15 minutes; push services refuse more than
/// 24 hours).
const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// How long one signed header is reused for one push service: shorter than the token's
/// life, so a cached header always has five minutes left.
const HEADER_REUSE: Duration = Duration::from_secs(600);

/// The VAPID signing key (ES256 on P-256).
pub struct VapidKey {
    pair: ES256KeyPair,
    public_key: String,
}

impl VapidKey {
    /// A key whose private scalar is `secret` (big-endian), as derived from the server
    /// secret all pods share. Refused only for the zero scalar or one past the curve order,
    /// which a derived 32-byte value all but never is.
    pub fn from_secret(secret: &[u8; 32]) -> anyhow::Result<Self> {
        let key = p256::SecretKey::from_bytes(secret.into())
            .map_err(|_| anyhow!("the VAPID secret is not a valid P-256 private key"))?;
        Self::from_key(&key)
    }

    /// A key read from a file: PEM PKCS#8 (`PRIVATE KEY`), PEM SEC1 (`EC PRIVATE KEY`), or
    /// the base64url 32-byte private scalar (as `web-push generate-vapid-keys` prints it).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the VAPID key file {}", path.display()))?;
        let text = text.trim();
        let unreadable = || anyhow!("{} holds no P-256 private key", path.display());
        let key = if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(text).map_err(|_| unreadable())?
        } else if text.contains("-----BEGIN PRIVATE KEY-----") {
            p256::SecretKey::from_pkcs8_pem(text).map_err(|_| unreadable())?
        } else {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|_| unreadable())?;
            let scalar: [u8; 32] = bytes.try_into().map_err(|_| unreadable())?;
            p256::SecretKey::from_bytes(&scalar.into()).map_err(|_| unreadable())?
        };
        Self::from_key(&key)
    }

    fn from_key(key: &p256::SecretKey) -> anyhow::Result<Self> {
        let pair = ES256KeyPair::from_bytes(&key.to_bytes())
            .map_err(|_| anyhow!("the VAPID key cannot sign"))?;
        let point = key.public_key().to_encoded_point(false);
        let public_key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(point.as_bytes());
        Ok(Self { pair, public_key })
    }

    /// The public key as push services and clients take it: the 65-byte uncompressed
    /// point, base64url without padding (`k=` of the header, `GET /v1/webpush/vapid`).
    pub fn public_key_base64url(&self) -> String {
        self.public_key.clone()
    }

    /// `vapid t=<JWT>,k=<public key>` for `audience` (`https://host[:port]`).
    fn authorization(&self, audience: &str, subject: &str) -> anyhow::Result<String> {
        let claims = Claims::create(TOKEN_LIFETIME.into())
            .with_audience(audience)
            .with_subject(subject);
        let token = self
            .pair
            .sign(claims)
            .map_err(|_| anyhow!("signing the VAPID token failed"))?;
        Ok(format!("vapid t={token},k={}", self.public_key))
    }
}

/// Never printed: the private key is the server's WebPush identity.
impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VapidKey(..)")
    }
}

/// Signed headers per audience, reused for [`HEADER_REUSE`] (FORK caches them 10 minutes):
/// one ECDSA signature per push service per 10 minutes instead of one per push.
pub(super) struct VapidHeaders {
    key: VapidKey,
    subject: String,
    /// A std lock: held only to look up or insert, never across an await.
    cache: Mutex<HashMap<String, (Instant, String)>>,
}

impl VapidHeaders {
    /// `subject` is the operator's contact, a `mailto:` or `https:` URL (push services
    /// refuse a token without one).
    pub(super) fn new(key: VapidKey, subject: String) -> anyhow::Result<Self> {
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            anyhow::bail!("the VAPID subject must be a mailto: or https: URL");
        }
        Ok(Self {
            key,
            subject,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn get(&self, audience: &str) -> anyhow::Result<String> {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made, header)) = cache.get(audience)
            && now.duration_since(*made) < HEADER_REUSE
        {
            return Ok(header.clone());
        }
        let header = self.key.authorization(audience, &self.subject)?;
        // Push services are few; stale entries go when a new one is made, so the map stays
        // as large as the services used in the last 10 minutes.
        cache.retain(|_, (made, _)| now.duration_since(*made) < HEADER_REUSE);
        cache.insert(audience.to_owned(), (now, header.clone()));
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_gives_one_key_and_debug_hides_it() {
        let a = VapidKey::from_secret(&[7; 32]).unwrap();
        let b = VapidKey::from_secret(&[7; 32]).unwrap();
        assert_eq!(a.public_key_base64url(), b.public_key_base64url());
        assert_eq!(a.public_key_base64url().len(), 87); // 65 bytes, unpadded
        assert_eq!(format!("{a:?}"), "VapidKey(..)");
        assert!(VapidKey::from_secret(&[0; 32]).is_err());
        assert!(VapidKey::from_secret(&[0xff; 32]).is_err());
    }

    #[test]
    fn headers_are_reused_per_audience_and_the_subject_is_a_contact() {
        let key = || VapidKey::from_secret(&[7; 32]).unwrap();
        let headers = VapidHeaders::new(key(), "mailto:ops@example.org".into()).unwrap();
        let first = headers.get("https://push.example").unwrap();
        assert_eq!(headers.get("https://push.example").unwrap(), first);
        assert_ne!(headers.get("https://other.example").unwrap(), first);
        assert!(first.starts_with("vapid t="));
        assert!(VapidHeaders::new(key(), "ops@example.org".into()).is_err());
    }
}
