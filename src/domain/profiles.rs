//! Versioned encrypted profiles (PROTOCOL.md 13): what `PUT /v1/profile` may store, with
//! Signal's exact sizes, and the avatar object names. The server never decrypts a field;
//! it checks lengths and keeps bytes. No IO.

use base64::Engine;

use super::DomainError;
use super::encoding::decode_base64;

/// zkgroup's `PROFILE_KEY_COMMITMENT_LEN`.
pub const COMMITMENT_BYTES: usize = 97;
/// Hex of the client's 32-byte profile-key version.
pub const VERSION_CHARS: usize = 64;
/// At most this many badge ids in one request (sealpost's bound; the ids are ignored).
pub const MAX_BADGE_IDS: usize = 100;
/// The longest badge id accepted.
pub const MAX_BADGE_ID_CHARS: usize = 255;
/// The largest avatar the upload form allows (Signal's `MAX_PROFILE_AVATAR_SIZE_BYTES`).
pub const MAX_AVATAR_BYTES: u64 = 10 * 1024 * 1024;
/// Where avatars live in the object store.
pub const AVATAR_PREFIX: &str = "profiles/";

const NAME_SIZES: &[usize] = &[81, 285];
const ABOUT_EMOJI_SIZES: &[usize] = &[0, 60];
const ABOUT_SIZES: &[usize] = &[0, 156, 282, 540];
const PAYMENT_ADDRESS_SIZES: &[usize] = &[0, 582];
const PHONE_NUMBER_SHARING_SIZES: &[usize] = &[0, 29];

/// A profile version: exactly 64 hex characters, kept as the client wrote them (a reader
/// names the version the same way).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileVersion(String);

impl ProfileVersion {
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        if value.len() != VERSION_CHARS || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DomainError::unprocessable(format!(
                "version must be {VERSION_CHARS} hex characters"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One stored version of an account's profile: opaque encrypted fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedProfile {
    pub version: ProfileVersion,
    pub commitment: Vec<u8>,
    pub name: Vec<u8>,
    pub about_emoji: Option<Vec<u8>>,
    pub about: Option<Vec<u8>>,
    pub payment_address: Option<Vec<u8>>,
    pub phone_number_sharing: Option<Vec<u8>>,
    /// The avatar's object name (`profiles/<id>`), when the profile has one.
    pub avatar: Option<String>,
}

/// What a `PUT /v1/profile` does to the avatar (PC: `getAvatarChange`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvatarChange {
    /// `avatar=true, sameAvatar=true`: keep the one stored under this same version.
    Unchanged,
    /// `avatar=false`.
    Clear,
    /// `avatar=true, sameAvatar=false`: a new object, uploaded by the client.
    Update,
}

impl AvatarChange {
    pub fn of(has_avatar: bool, same_avatar: bool) -> Self {
        match (has_avatar, same_avatar) {
            (false, _) => AvatarChange::Clear,
            (true, false) => AvatarChange::Update,
            (true, true) => AvatarChange::Unchanged,
        }
    }
}

/// A checked `PUT /v1/profile`: every field of the right size, nothing stored yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileUpdate {
    pub version: ProfileVersion,
    pub commitment: Vec<u8>,
    pub name: Vec<u8>,
    pub about_emoji: Option<Vec<u8>>,
    pub about: Option<Vec<u8>>,
    pub payment_address: Option<Vec<u8>>,
    pub phone_number_sharing: Option<Vec<u8>>,
    pub avatar: AvatarChange,
}

/// The request's fields as they arrived (base64 strings), before any check.
#[derive(Clone, Debug, Default)]
pub struct RawProfileUpdate<'a> {
    pub version: Option<&'a str>,
    pub commitment: Option<&'a str>,
    pub name: Option<&'a str>,
    pub about_emoji: Option<&'a str>,
    pub about: Option<&'a str>,
    pub payment_address: Option<&'a str>,
    pub phone_number_sharing: Option<&'a str>,
    pub has_avatar: bool,
    pub same_avatar: bool,
    pub badge_ids: Option<&'a [String]>,
}

/// Standard base64 (padding optional, Java's decoder); anything else is a 422 as Signal's
/// mapper answers.
fn bytes(field: &str, value: &str) -> Result<Vec<u8>, DomainError> {
    decode_base64(field, value).map_err(|e| DomainError::unprocessable(e.to_string()))
}

/// `@ExactlySize`: `None` counts as 0 bytes, so a list with 0 admits an absent field.
fn sized(
    field: &str,
    value: Option<&str>,
    sizes: &[usize],
) -> Result<Option<Vec<u8>>, DomainError> {
    let decoded = value.map(|v| bytes(field, v)).transpose()?;
    let len = decoded.as_ref().map_or(0, Vec::len);
    if !sizes.contains(&len) {
        let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
        return Err(DomainError::unprocessable(format!(
            "{field} must be {} bytes, not {len}",
            sizes.join(" or ")
        )));
    }
    Ok(decoded)
}

impl RawProfileUpdate<'_> {
    /// Every rule of PROTOCOL.md 13.1 and 13.4, all checked before anything is stored.
    pub fn check(&self) -> Result<ProfileUpdate, DomainError> {
        let version = ProfileVersion::parse(
            self.version
                .ok_or_else(|| DomainError::unprocessable("version is required"))?,
        )?;
        let commitment = bytes(
            "commitment",
            self.commitment
                .ok_or_else(|| DomainError::unprocessable("commitment is required"))?,
        )?;
        if commitment.len() != COMMITMENT_BYTES {
            return Err(DomainError::unprocessable(format!(
                "commitment must be {COMMITMENT_BYTES} bytes, not {}",
                commitment.len()
            )));
        }
        let name = sized("name", self.name, NAME_SIZES)?.unwrap_or_default();
        let about_emoji = sized("aboutEmoji", self.about_emoji, ABOUT_EMOJI_SIZES)?;
        let about = sized("about", self.about, ABOUT_SIZES)?;
        let payment_address = sized(
            "paymentAddress",
            self.payment_address,
            PAYMENT_ADDRESS_SIZES,
        )?;
        let phone_number_sharing = sized(
            "phoneNumberSharing",
            self.phone_number_sharing,
            PHONE_NUMBER_SHARING_SIZES,
        )?;
        if let Some(ids) = self.badge_ids {
            if ids.len() > MAX_BADGE_IDS {
                return Err(DomainError::unprocessable(format!(
                    "at most {MAX_BADGE_IDS} badgeIds"
                )));
            }
            if ids.iter().any(|id| id.len() > MAX_BADGE_ID_CHARS) {
                return Err(DomainError::unprocessable(format!(
                    "a badge id is at most {MAX_BADGE_ID_CHARS} characters"
                )));
            }
        }
        Ok(ProfileUpdate {
            version,
            commitment,
            name,
            about_emoji,
            about,
            payment_address,
            phone_number_sharing,
            avatar: AvatarChange::of(self.has_avatar, self.same_avatar),
        })
    }
}

/// A fresh avatar object name: `profiles/` and base64url, with padding, of 16 random bytes
/// (PH `generateAvatarObjectName`).
pub fn new_avatar_name() -> String {
    let bytes: [u8; 16] = rand::random();
    format!(
        "{AVATAR_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    )
}

/// Whether `id` (the part after `profiles/`) is one [`new_avatar_name`] makes: 22 base64url
/// characters and `==`.
pub fn is_avatar_id(id: &str) -> bool {
    id.len() == 24
        && id.ends_with("==")
        && id[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::encoding::encode_base64;

    fn b64(len: usize) -> String {
        encode_base64(&vec![7u8; len])
    }

    fn valid<'a>(strings: &'a [String; 3]) -> RawProfileUpdate<'a> {
        RawProfileUpdate {
            version: Some(&strings[0]),
            commitment: Some(&strings[1]),
            name: Some(&strings[2]),
            ..RawProfileUpdate::default()
        }
    }

    fn strings() -> [String; 3] {
        ["ab".repeat(32), b64(COMMITMENT_BYTES), b64(81)]
    }

    #[test]
    fn a_minimal_profile_passes_and_absent_fields_stay_absent() {
        let s = strings();
        let update = valid(&s).check().unwrap();
        assert_eq!(update.name.len(), 81);
        assert_eq!(update.about, None);
        assert_eq!(update.avatar, AvatarChange::Clear);
    }

    #[test]
    fn every_size_rule_is_a_422() {
        let s = strings();
        let wrong = [b64(80), b64(0), b64(61), b64(157), b64(581), b64(30)];
        let cases: Vec<(&str, RawProfileUpdate)> = vec![
            (
                "name",
                RawProfileUpdate {
                    name: Some(&wrong[0]),
                    ..valid(&s)
                },
            ),
            (
                "name",
                RawProfileUpdate {
                    name: None,
                    ..valid(&s)
                },
            ),
            (
                "name",
                RawProfileUpdate {
                    name: Some(&wrong[1]),
                    ..valid(&s)
                },
            ),
            (
                "aboutEmoji",
                RawProfileUpdate {
                    about_emoji: Some(&wrong[2]),
                    ..valid(&s)
                },
            ),
            (
                "about",
                RawProfileUpdate {
                    about: Some(&wrong[3]),
                    ..valid(&s)
                },
            ),
            (
                "paymentAddress",
                RawProfileUpdate {
                    payment_address: Some(&wrong[4]),
                    ..valid(&s)
                },
            ),
            (
                "phoneNumberSharing",
                RawProfileUpdate {
                    phone_number_sharing: Some(&wrong[5]),
                    ..valid(&s)
                },
            ),
        ];
        for (field, raw) in cases {
            match raw.check() {
                Err(DomainError::Unprocessable(msg)) => assert!(msg.contains(field), "{msg}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn url_safe_base64_and_bad_versions_are_refused() {
        let s = strings();
        let url_safe = "-_".repeat(54);
        let raw = RawProfileUpdate {
            name: Some(&url_safe),
            ..valid(&s)
        };
        assert!(matches!(raw.check(), Err(DomainError::Unprocessable(_))));
        for version in ["ab".repeat(31), "zz".repeat(32), String::new()] {
            let raw = RawProfileUpdate {
                version: Some(&version),
                ..valid(&s)
            };
            assert!(
                matches!(raw.check(), Err(DomainError::Unprocessable(_))),
                "{version}"
            );
        }
    }

    #[test]
    fn avatar_names_are_16_random_bytes_in_padded_base64url() {
        let name = new_avatar_name();
        let id = name.strip_prefix(AVATAR_PREFIX).unwrap();
        assert!(is_avatar_id(id), "{id}");
        assert_ne!(name, new_avatar_name());
        assert!(!is_avatar_id("../../etc/passwd"));
    }
}
