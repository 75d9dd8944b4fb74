//! Parsing `Authorization: Basic base64("<ACI>[.<deviceId>]:<password>")`.

use base64::Engine;

use crate::domain::ids::{Aci, DeviceId};

/// Credentials as presented; the password is only ever compared, never logged.
pub struct Credentials {
    pub aci: Aci,
    pub device: DeviceId,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("aci", &self.aci)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Splits a Basic header value into username and password, or `None` if it is not one.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl Credentials {
    /// Parses a device's credentials; `None` when the header is malformed.
    pub fn from_header(header: &str) -> Option<Self> {
        let (user, password) = parse_basic(header)?;
        let (aci, device) = match user.split_once('.') {
            Some((aci, device)) => (aci.parse().ok()?, device.parse().ok()?),
            None => (user.parse().ok()?, DeviceId::PRIMARY),
        };
        Some(Self {
            aci,
            device,
            password,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn a_username_without_a_device_means_the_primary() {
        let aci = Aci::random();
        let creds =
            Credentials::from_header(&header(&format!("{aci}:secret:with:colons"))).unwrap();
        assert_eq!(creds.aci, aci);
        assert_eq!(creds.device, DeviceId::PRIMARY);
        assert_eq!(creds.password, "secret:with:colons");
    }

    #[test]
    fn a_device_suffix_is_parsed() {
        let aci = Aci::random();
        let creds = Credentials::from_header(&header(&format!("{aci}.3:pw"))).unwrap();
        assert_eq!(creds.device.get(), 3);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let aci = Aci::random();
        assert!(Credentials::from_header("Bearer abc").is_none());
        assert!(Credentials::from_header("Basic !!!").is_none());
        assert!(Credentials::from_header(&header("no-colon")).is_none());
        assert!(Credentials::from_header(&header("not-a-uuid:pw")).is_none());
        assert!(Credentials::from_header(&header(&format!("{aci}.0:pw"))).is_none());
        assert!(Credentials::from_header(&header(&format!("{aci}.128:pw"))).is_none());
        assert!(Credentials::from_header(&header(&format!("PNI:{aci}:pw"))).is_none());
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let aci = Aci::random();
        let creds = Credentials::from_header(&header(&format!("{aci}:hunter2hunter2"))).unwrap();
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
