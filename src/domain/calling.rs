//! TURN credentials in coturn's `use-auth-secret` scheme (PROTOCOL.md 15.2): the user name
//! is the expiry time and a random tag, the password an HMAC of it under the secret coturn
//! shares, so any relay holding the secret checks them without asking the server.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::encoding::encode_base64;

/// A credential for one relay; the password is as secret as a session token.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// `username = "<expiry unix s>:<16 hex chars of tag>"`, `password = std-pad base64 of
/// HMAC-SHA1(secret, username)`. The tag is random per request, so relay logs learn nothing
/// about who asked (Signal used a random number the same way).
pub fn turn_credentials(secret: &[u8], expires_at_s: i64, tag: [u8; 8]) -> TurnCredentials {
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let username = format!("{expires_at_s}:{tag}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    TurnCredentials {
        password: encode_base64(&mac.finalize().into_bytes()),
        username,
    }
}

/// Every template filled with every address, in order (Signal's `urlsWithIps`): `%s` takes
/// the address, an IPv6 one in brackets.
pub fn urls_with_ips(templates: &[String], addresses: &[IpAddr]) -> Vec<String> {
    let mut urls = Vec::with_capacity(templates.len() * addresses.len());
    for address in addresses {
        let host = match address {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        for template in templates {
            urls.push(template.replacen("%s", &host, 1));
        }
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_coturns_rest_api_scheme() {
        // The same values through `openssl dgst -sha1 -hmac testsecret -binary | base64`.
        let c = turn_credentials(
            b"testsecret",
            1796416397,
            [0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89],
        );
        assert_eq!(c.username, "1796416397:abcdef0123456789");
        assert_eq!(c.password, "mgC8tc3nQ5A6KQmUOvPIBImIrLc=");
        assert!(!format!("{c:?}").contains(&c.password));
    }

    #[test]
    fn ip_urls_bracket_ipv6_and_keep_every_template() {
        let templates = vec![
            "turn:%s".to_owned(),
            "turns:%s:443?transport=tcp".to_owned(),
        ];
        let urls = urls_with_ips(
            &templates,
            &["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        );
        assert_eq!(
            urls,
            [
                "turn:192.0.2.1",
                "turns:192.0.2.1:443?transport=tcp",
                "turn:[2001:db8::1]",
                "turns:[2001:db8::1]:443?transport=tcp",
            ]
        );
    }
}
