//! Accounts and devices: validated attributes, access keys, passwords, and what a
//! registration consists of.

use std::collections::BTreeMap;

use super::DomainError;
use super::ids::{Aci, DeviceId, RegistrationId};
use super::keys::{IdentityKey, KemSignedPreKey, SignedEcPreKey};

/// The most devices an account may have (primary included).
pub const MAX_DEVICES: usize = 6;
/// Device names are encrypted by the client; we only bound their size.
pub const MAX_DEVICE_NAME_BYTES: usize = 225;
/// Bounds on the capability map a device may store.
pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_CAPABILITY_NAME_CHARS: usize = 64;
pub const MIN_PASSWORD_CHARS: usize = 16;
pub const MAX_PASSWORD_CHARS: usize = 512;

/// A 16-byte sealed-sender access key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessKey([u8; 16]);

impl AccessKey {
    pub fn parse(field: &str, bytes: &[u8]) -> Result<Self, DomainError> {
        let key: [u8; 16] = bytes.try_into().map_err(|_| {
            DomainError::invalid(format!("{field} must be 16 bytes, got {}", bytes.len()))
        })?;
        Ok(Self(key))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// A device password as chosen by the client; checked for length, never stored in clear.
pub struct Password(String);

impl Password {
    pub fn parse(password: String) -> Result<Self, DomainError> {
        let chars = password.chars().count();
        if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
            return Err(DomainError::invalid(format!(
                "the password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
            )));
        }
        Ok(Self(password))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Capability flags a device advertises; unknown names are kept as sent.
pub type Capabilities = BTreeMap<String, bool>;

/// What a device says about itself (the per-device part of the account attributes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceAttributes {
    pub fetches_messages: bool,
    pub registration_id: RegistrationId,
    pub name: Option<Vec<u8>>,
    pub capabilities: Capabilities,
}

/// The account-wide part of the attributes: only the primary device may change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessSettings {
    pub unidentified_access_key: Option<AccessKey>,
    pub unrestricted_unidentified_access: bool,
}

/// Validated account attributes as a client sends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountAttributes {
    pub device: DeviceAttributes,
    pub access: AccessSettings,
}

impl DeviceAttributes {
    pub fn check_name(name: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, DomainError> {
        match name {
            Some(n) if n.len() > MAX_DEVICE_NAME_BYTES => Err(DomainError::invalid(format!(
                "name must be at most {MAX_DEVICE_NAME_BYTES} bytes"
            ))),
            other => Ok(other),
        }
    }

    pub fn check_capabilities(capabilities: Capabilities) -> Result<Capabilities, DomainError> {
        if capabilities.len() > MAX_CAPABILITIES {
            return Err(DomainError::invalid(format!(
                "capabilities may name at most {MAX_CAPABILITIES} entries"
            )));
        }
        if let Some(name) = capabilities
            .keys()
            .find(|n| n.is_empty() || n.chars().count() > MAX_CAPABILITY_NAME_CHARS)
        {
            return Err(DomainError::invalid(format!(
                "capability name {name:?} must be 1 to {MAX_CAPABILITY_NAME_CHARS} characters"
            )));
        }
        // A control character (NUL above all, which Postgres's jsonb cannot hold) names no
        // capability: refused here, so every backend answers the same.
        if let Some(name) = capabilities
            .keys()
            .find(|n| n.chars().any(char::is_control))
        {
            return Err(DomainError::invalid(format!(
                "capability name {name:?} may not hold control characters"
            )));
        }
        Ok(capabilities)
    }
}

/// A stored account (without its devices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub aci: Aci,
    pub identity_key: IdentityKey,
    pub access: AccessSettings,
    /// 16 random bytes made at registration and kept: Signal's salt for the zk auth
    /// credentials of accounts without a phone number (PROTOCOL.md 16.1).
    pub auth_credential_salt: AuthCredentialSalt,
}

/// An account's `authCredentialSalt`.
pub type AuthCredentialSalt = [u8; 16];

/// A fresh `authCredentialSalt`.
pub fn new_auth_credential_salt() -> AuthCredentialSalt {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    salt
}

/// A stored device, with its password hash for authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub aci: Aci,
    pub id: DeviceId,
    /// argon2id PHC string.
    pub password_hash: String,
    pub attributes: DeviceAttributes,
    /// Creation time, milliseconds since the epoch.
    pub created_ms: i64,
    /// Last-seen day, as the milliseconds of that day's midnight UTC (kept only to the day).
    pub last_seen_day_ms: i64,
    /// The creation time sealed to the account's identity key when the device was made
    /// (`super::created_at`); `None` only for devices stored before sealpost kept it.
    pub created_at_ciphertext: Option<Vec<u8>>,
}

/// Which credential a device had when something authenticated as it: a SHA-256 of its
/// PHC string. A device removed and linked again at the same id has a new PHC string (a
/// fresh salt), so a socket opened with the old one cannot pass for the new device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialDigest(pub [u8; 32]);

impl CredentialDigest {
    pub fn of(password_hash: &str) -> Self {
        Self(<sha2::Sha256 as sha2::Digest>::digest(password_hash.as_bytes()).into())
    }
}

/// Everything registration writes in one atomic step.
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub account: Account,
    pub primary: Device,
    pub signed_pre_key: SignedEcPreKey,
    pub pq_last_resort_pre_key: KemSignedPreKey,
    /// The primary's push registration, when it registered with a token.
    pub push: Option<super::push::PushRegistration>,
}

/// A device being linked: everything but its id, which the store picks.
#[derive(Clone, Debug)]
pub struct NewDevice {
    pub password_hash: String,
    pub attributes: DeviceAttributes,
    pub created_ms: i64,
    pub last_seen_day_ms: i64,
    pub signed_pre_key: SignedEcPreKey,
    pub pq_last_resort_pre_key: KemSignedPreKey,
    /// Its push registration, when it linked with a token.
    pub push: Option<super::push::PushRegistration>,
    /// The account's identity key, to which the creation time is sealed once the store has
    /// picked the id (the id is part of the sealed bytes' associated data).
    pub seal_to: IdentityKey,
}

impl NewDevice {
    /// The device as stored under `id`, its creation time sealed now, once.
    pub fn into_device(&self, aci: Aci, id: DeviceId) -> Device {
        Device {
            aci,
            id,
            password_hash: self.password_hash.clone(),
            attributes: self.attributes.clone(),
            created_ms: self.created_ms,
            last_seen_day_ms: self.last_seen_day_ms,
            created_at_ciphertext: Some(super::created_at::seal(
                &self.seal_to,
                id,
                self.attributes.registration_id,
                self.created_ms,
            )),
        }
    }
}

/// The lowest device id not in `taken`, from 2 (the primary is 1).
pub fn lowest_free_device_id(taken: impl IntoIterator<Item = DeviceId>) -> Option<DeviceId> {
    let taken: std::collections::BTreeSet<u8> = taken.into_iter().map(|d| d.get()).collect();
    (2..=DeviceId::MAX)
        .find(|id| !taken.contains(id))
        .and_then(|id| DeviceId::new(u32::from(id)).ok())
}

/// Milliseconds of today's midnight UTC: what `lastSeen` stores (no finer than a day).
pub fn day_of(ms: i64) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    ms - ms.rem_euclid(DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_must_be_16_to_512_characters() {
        assert!(Password::parse("x".repeat(15)).is_err());
        assert!(Password::parse("x".repeat(16)).is_ok());
        assert!(Password::parse("é".repeat(512)).is_ok());
        assert!(Password::parse("x".repeat(513)).is_err());
    }

    #[test]
    fn passwords_do_not_show_in_debug_output() {
        let p = Password::parse("correct horse battery staple".into()).unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn access_keys_are_16_bytes() {
        assert!(AccessKey::parse("k", &[0; 15]).is_err());
        assert!(AccessKey::parse("k", &[0; 16]).is_ok());
    }

    #[test]
    fn new_devices_take_the_lowest_free_id_from_two() {
        let ids = |v: &[u32]| {
            v.iter()
                .map(|i| DeviceId::new(*i).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(lowest_free_device_id(ids(&[1])).unwrap().get(), 2);
        assert_eq!(lowest_free_device_id(ids(&[1, 2, 4])).unwrap().get(), 3);
        assert_eq!(lowest_free_device_id(ids(&[1, 3])).unwrap().get(), 2);
    }

    #[test]
    fn last_seen_is_truncated_to_the_day() {
        assert_eq!(day_of(86_400_000 * 3 + 5_000), 86_400_000 * 3);
        assert_eq!(day_of(86_400_000 * 3), 86_400_000 * 3);
    }

    #[test]
    fn capability_maps_are_bounded() {
        let many: Capabilities = (0..65).map(|i| (format!("c{i}"), true)).collect();
        assert!(DeviceAttributes::check_capabilities(many).is_err());
        let long: Capabilities = [("x".repeat(65), true)].into_iter().collect();
        assert!(DeviceAttributes::check_capabilities(long).is_err());
        let fine: Capabilities = [("storage".to_owned(), true)].into_iter().collect();
        assert!(DeviceAttributes::check_capabilities(fine).is_ok());
        for bad in ["nul\u{0}", "\u{7}bell", "line\nbreak", "\u{9f}"] {
            let caps = [(bad.to_owned(), true)].into_iter().collect();
            assert!(
                DeviceAttributes::check_capabilities(caps).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn device_names_are_bounded() {
        assert!(DeviceAttributes::check_name(Some(vec![0; 225])).is_ok());
        assert!(DeviceAttributes::check_name(Some(vec![0; 226])).is_err());
    }
}
