//! Push registrations as clients send them (PROTOCOL.md 11.1, 11.2): an FCM or APNs token,
//! or a WebPush (UnifiedPush) subscription, and which addresses a WebPush endpoint may
//! resolve to. Parsing only: a refused registration is a 422, as in Signal. What each
//! provider's wake-up carries is `payloads`.

pub mod payloads;

use std::net::IpAddr;

use base64::Engine;

use super::DomainError;

/// The longest token accepted (FCM registration tokens are about 160 characters, APNs
/// device tokens 64 hex digits; the bound leaves room for both to grow).
pub const MAX_TOKEN_LENGTH: usize = 4096;
/// The longest WebPush endpoint URL accepted.
pub const MAX_ENDPOINT_LENGTH: usize = 2048;
/// An uncompressed P-256 point (`0x04 || x || y`), as a subscription's `publicKey`.
pub const PUBLIC_KEY_LENGTH: usize = 65;
/// A subscription's `auth` secret.
pub const AUTH_SECRET_LENGTH: usize = 16;

/// Which provider a registration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PushKind {
    Fcm,
    Apns,
    WebPush,
}

impl PushKind {
    /// The bounded metric label (and the stored kind).
    pub fn label(self) -> &'static str {
        match self {
            PushKind::Fcm => "fcm",
            PushKind::Apns => "apns",
            PushKind::WebPush => "webpush",
        }
    }
}

/// An FCM registration id or an APNs device token: non-empty, at most
/// `MAX_TOKEN_LENGTH` bytes of visible ASCII that cannot change the meaning of a URL path
/// (APNs puts the token in `/3/device/<token>`).
#[derive(Clone, PartialEq, Eq)]
pub struct PushToken(String);

impl PushToken {
    pub fn parse(field: &str, value: &str) -> Result<Self, DomainError> {
        if value.is_empty() {
            return Err(DomainError::unprocessable(format!("{field} is empty")));
        }
        if value.len() > MAX_TOKEN_LENGTH {
            return Err(DomainError::unprocessable(format!(
                "{field} is longer than {MAX_TOKEN_LENGTH} bytes"
            )));
        }
        let allowed = |b: u8| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'%');
        if !value.bytes().all(allowed) {
            return Err(DomainError::unprocessable(format!(
                "{field} has characters no push token has"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Never printed: a push token addresses one phone.
impl std::fmt::Debug for PushToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushToken(..)")
    }
}

/// A WebPush subscription: where to POST, and the keys its pushes are encrypted to
/// (RFC 8291).
#[derive(Clone, PartialEq, Eq)]
pub struct WebPushSubscription {
    endpoint: String,
    host: String,
    public_key: [u8; PUBLIC_KEY_LENGTH],
    auth: [u8; AUTH_SECRET_LENGTH],
}

impl WebPushSubscription {
    /// `endpoint` must be an absolute `https` URL with a host and no credentials;
    /// `public_key` and `auth` are unpadded base64url of 65 bytes (an uncompressed point:
    /// first byte 4) and of exactly 16 bytes.
    pub fn parse(endpoint: &str, public_key: &str, auth: &str) -> Result<Self, DomainError> {
        if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT_LENGTH {
            return Err(DomainError::unprocessable(format!(
                "endpoint must be 1 to {MAX_ENDPOINT_LENGTH} bytes"
            )));
        }
        let url = url::Url::parse(endpoint)
            .map_err(|_| DomainError::unprocessable("endpoint is not a URL"))?;
        if url.scheme() != "https" {
            return Err(DomainError::unprocessable("endpoint must be https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DomainError::unprocessable(
                "endpoint must not carry credentials",
            ));
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(DomainError::unprocessable("endpoint has no host"));
        };
        let public_key: [u8; PUBLIC_KEY_LENGTH] = decode_exact("publicKey", public_key)?;
        if public_key[0] != 4 {
            return Err(DomainError::unprocessable(
                "publicKey must be an uncompressed P-256 point",
            ));
        }
        let auth: [u8; AUTH_SECRET_LENGTH] = decode_exact("auth", auth)?;
        Ok(Self {
            endpoint: url.as_str().to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            public_key,
            auth,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The endpoint's host (a name, or an address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LENGTH] {
        &self.public_key
    }

    pub fn auth(&self) -> &[u8; AUTH_SECRET_LENGTH] {
        &self.auth
    }
}

impl WebPushSubscription {
    /// A subscription read back from a store (checked as when it was made).
    pub fn from_parts(endpoint: &str, public_key: &[u8], auth: &[u8]) -> Result<Self, DomainError> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Self::parse(endpoint, &b64(public_key), &b64(auth))
    }
}

/// A device's WebPush registration: the subscription, the token that activates it, and
/// whether it was activated (an inactive subscription gets nothing but its activation push).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebPushRegistration {
    pub subscription: WebPushSubscription,
    pub activation: uuid::Uuid,
    pub active: bool,
}

/// Where a device's wake-ups go: at most one registration per device, of one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushRegistration {
    Fcm(PushToken),
    Apns(PushToken),
    WebPush(WebPushRegistration),
}

impl PushRegistration {
    pub fn kind(&self) -> PushKind {
        match self {
            PushRegistration::Fcm(_) => PushKind::Fcm,
            PushRegistration::Apns(_) => PushKind::Apns,
            PushRegistration::WebPush(_) => PushKind::WebPush,
        }
    }
}

/// Never printed: the endpoint addresses one device, the keys are its secrets.
impl std::fmt::Debug for WebPushSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebPushSubscription(..)")
    }
}

fn decode_exact<const N: usize>(field: &str, value: &str) -> Result<[u8; N], DomainError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| DomainError::unprocessable(format!("{field} is not base64url")))?;
    bytes
        .try_into()
        .map_err(|_| DomainError::unprocessable(format!("{field} must be {N} bytes")))
}

/// Whether a WebPush endpoint may resolve to `address` without the operator's leave: not
/// loopback, private, link-local, unique-local, carrier-grade NAT, unspecified, broadcast,
/// multicast or documentation space (an IPv4-mapped IPv6 address counts as its IPv4 one).
pub fn is_public_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn point() -> String {
        let mut key = [7u8; 65];
        key[0] = 4;
        b64(&key)
    }

    #[test]
    fn tokens_are_non_empty_bounded_and_cannot_escape_a_path() {
        assert!(PushToken::parse("t", "fcm-token:APA91b_x-y.z").is_ok());
        assert!(PushToken::parse("t", &"ab".repeat(32)).is_ok());
        for bad in ["", "a b", "a/b", "a?b", "a#b", "a%2Fb", "tab\there", "é"] {
            assert!(
                matches!(
                    PushToken::parse("t", bad),
                    Err(DomainError::Unprocessable(_))
                ),
                "{bad:?}"
            );
        }
        assert!(PushToken::parse("t", &"a".repeat(MAX_TOKEN_LENGTH)).is_ok());
        assert!(PushToken::parse("t", &"a".repeat(MAX_TOKEN_LENGTH + 1)).is_err());
        assert_eq!(
            format!("{:?}", PushToken::parse("t", "secret").unwrap()),
            "PushToken(..)"
        );
    }

    #[test]
    fn a_subscription_is_https_with_a_point_and_a_16_byte_secret() {
        let sub =
            WebPushSubscription::parse("https://push.example/up/abc?x=1", &point(), &b64(&[1; 16]))
                .unwrap();
        assert_eq!(sub.host(), "push.example");
        assert_eq!(sub.auth(), &[1; 16]);
        let v6 = WebPushSubscription::parse("https://[2001:4860::1]/p", &point(), &b64(&[1; 16]))
            .unwrap();
        assert_eq!(v6.host(), "2001:4860::1");
        let refused = [
            ("http://push.example/x", point(), b64(&[1; 16])),
            ("https://user:pw@push.example/x", point(), b64(&[1; 16])),
            ("not a url", point(), b64(&[1; 16])),
            ("", point(), b64(&[1; 16])),
            ("https://push.example/x", b64(&[4; 64]), b64(&[1; 16])),
            ("https://push.example/x", b64(&[2; 65]), b64(&[1; 16])),
            ("https://push.example/x", point(), b64(&[1; 15])),
            ("https://push.example/x", point(), "!!!".to_owned()),
        ];
        for (endpoint, key, auth) in refused {
            assert!(
                matches!(
                    WebPushSubscription::parse(endpoint, &key, &auth),
                    Err(DomainError::Unprocessable(_))
                ),
                "{endpoint} {key} {auth}"
            );
        }
        let long = format!("https://push.example/{}", "a".repeat(MAX_ENDPOINT_LENGTH));
        assert!(WebPushSubscription::parse(&long, &point(), &b64(&[1; 16])).is_err());
    }

    #[test]
    fn only_public_addresses_pass() {
        for public in [
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.4.4",
            "100.128.0.1",
        ] {
            assert!(is_public_address(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public_address(private.parse().unwrap()), "{private}");
        }
    }
}
