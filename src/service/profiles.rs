//! Profiles (what another account may learn to talk to one, and the versioned encrypted
//! profiles of PROTOCOL.md 13) and sender certificates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use prost::Message as _;
use sha2::Sha256;

use super::access::{Requester, check_access_key};
use crate::domain::certificates::ServerSigner;
use crate::domain::clock::now_ms;
use crate::domain::ids::Aci;
use crate::domain::keys::IdentityKey;
use crate::domain::post_policy::UploadForm;
use crate::domain::profiles::{
    AvatarChange, ProfileUpdate, ProfileVersion, VersionedProfile, new_avatar_name,
};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::metrics::Metrics;
use crate::service::avatars::AvatarService;
use crate::storage::AccountStore;
use crate::storage::profiles::ProfileStore;

/// The capabilities a profile shows (Signal's `DeviceCapability` values that are not
/// server-only, PROTOCOL.md 13.2).
pub const PROFILE_CAPABILITIES: [&str; 4] = [
    "attachmentBackfill",
    "spqr",
    "profiles_v2",
    "usernameChangeSyncMessage",
];

/// What `GET /v1/profile/{aci}` answers.
#[derive(Clone, Debug)]
pub struct Profile {
    pub aci: Aci,
    pub identity_key: IdentityKey,
    /// HMAC-SHA256 keyed with the access key over 32 zero bytes, when there is a key.
    pub unidentified_access: Option<[u8; 32]>,
    pub unrestricted_unidentified_access: bool,
    /// A capability is true only when every device of the account has it.
    pub capabilities: BTreeMap<String, bool>,
}

/// What `GET /v1/profile/{aci}/{version}` adds to a [`Profile`]: the stored version's
/// fields, all None when that version is not stored.
#[derive(Clone, Debug, Default)]
pub struct VersionFields {
    pub name: Option<Vec<u8>>,
    pub about: Option<Vec<u8>>,
    pub about_emoji: Option<Vec<u8>>,
    /// Only when the version is the current one, or no version is current (PC).
    pub payment_address: Option<Vec<u8>>,
    pub phone_number_sharing: Option<Vec<u8>>,
    pub avatar: Option<String>,
}

/// What [`ProfileService`] is built from.
pub struct ProfileParts {
    pub accounts: Arc<dyn AccountStore>,
    pub profiles: Arc<dyn ProfileStore>,
    pub avatars: AvatarService,
    pub limiter: RateLimiter,
    pub signer: ServerSigner,
    pub certificate_ttl: Duration,
    pub metrics: Metrics,
}

#[derive(Clone)]
pub struct ProfileService {
    accounts: Arc<dyn AccountStore>,
    profiles: Arc<dyn ProfileStore>,
    avatars: AvatarService,
    limiter: RateLimiter,
    signer: Arc<ServerSigner>,
    certificate_ttl: Duration,
    metrics: Metrics,
}

impl ProfileService {
    pub fn new(parts: ProfileParts) -> Self {
        Self {
            accounts: parts.accounts,
            profiles: parts.profiles,
            avatars: parts.avatars,
            limiter: parts.limiter,
            signer: Arc::new(parts.signer),
            certificate_ttl: parts.certificate_ttl,
            metrics: parts.metrics,
        }
    }

    pub fn avatars(&self) -> &AvatarService {
        &self.avatars
    }

    /// `PUT /v1/profile` (within the account's `profileSet` permits): stores the checked
    /// version and makes it current; the avatar form
    /// when a new avatar is expected. The avatar the version had is deleted when it is
    /// replaced or cleared (PC), never another version's.
    pub async fn set_profile(
        &self,
        caller: AuthenticatedDevice,
        update: ProfileUpdate,
    ) -> Result<Option<UploadForm>, AppError> {
        self.limiter
            .check(Limit::ProfileSet, &caller.aci.to_string())
            .await?;
        let current = self.profiles.get(caller.aci, &update.version).await?;
        let avatar = match update.avatar {
            AvatarChange::Unchanged => current.and_then(|p| p.avatar),
            AvatarChange::Clear => None,
            AvatarChange::Update => Some(new_avatar_name()),
        };
        let form = match (update.avatar, &avatar) {
            (AvatarChange::Update, Some(name)) => Some(self.avatars.form(name)?),
            _ => None,
        };
        let profile = VersionedProfile {
            version: update.version,
            commitment: update.commitment,
            name: update.name,
            about_emoji: update.about_emoji,
            about: update.about,
            payment_address: update.payment_address,
            phone_number_sharing: update.phone_number_sharing,
            avatar: avatar.clone(),
        };
        let replaced = self.profiles.set(caller.aci, &profile).await?;
        if let Some(old) = replaced.filter(|old| Some(old) != avatar.as_ref()) {
            self.avatars.delete(&[old]).await;
        }
        Ok(form)
    }

    /// Every profile version of the account and their avatars (account deletion).
    pub async fn delete_all(&self, aci: Aci) -> Result<(), AppError> {
        let avatars = self.profiles.delete_all(aci).await?;
        self.avatars.delete(&avatars).await;
        Ok(())
    }

    /// `GET /v1/profile/{aci}/{version}`: the base profile and that version's fields.
    pub async fn versioned_profile(
        &self,
        requester: Requester,
        target: Aci,
        version: &ProfileVersion,
    ) -> Result<(Profile, VersionFields), AppError> {
        let profile = self.profile(requester, target).await?;
        let Some(stored) = self.profiles.get(target, version).await? else {
            return Ok((profile, VersionFields::default()));
        };
        let current = self.profiles.current_version(target).await?;
        let payment_address = match current {
            Some(current) if current != *version => None,
            _ => stored.payment_address,
        };
        Ok((
            profile,
            VersionFields {
                name: Some(stored.name),
                about: stored.about,
                about_emoji: stored.about_emoji,
                payment_address,
                phone_number_sharing: stored.phone_number_sharing,
                avatar: stored.avatar,
            },
        ))
    }

    /// The base profile (PROTOCOL.md 7, 13.2): an authenticated caller takes a `profile`
    /// permit and learns 404 of an unknown account; an anonymous one gets 401 for a wrong
    /// key and an unknown account alike.
    pub async fn profile(&self, requester: Requester, target: Aci) -> Result<Profile, AppError> {
        if let Requester::Device(caller) = &requester {
            self.limiter
                .check(Limit::Profile, &caller.aci.to_string())
                .await?;
        }
        let account = self.accounts.account(target).await?;
        let account = match requester {
            Requester::AccessKey(key) => {
                check_access_key(account.as_ref(), &key, &self.metrics)?;
                account.ok_or(AppError::Unauthorized)?
            }
            Requester::Device(_) => {
                account.ok_or_else(|| AppError::NotFound("no such account".into()))?
            }
        };
        let devices = self.accounts.devices(target).await?;
        // Signal's profile names every capability that is not server-only, each true only
        // when every device of the account has it (PROTOCOL.md 13.2), and no other.
        let capabilities: BTreeMap<String, bool> = PROFILE_CAPABILITIES
            .iter()
            .map(|name| {
                let everywhere = !devices.is_empty()
                    && devices.iter().all(|d| {
                        d.attributes
                            .capabilities
                            .get(*name)
                            .copied()
                            .unwrap_or(false)
                    });
                ((*name).to_owned(), everywhere)
            })
            .collect();
        let unidentified_access = account.access.unidentified_access_key.map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
            mac.update(&[0u8; 32]);
            mac.finalize().into_bytes().into()
        });
        Ok(Profile {
            aci: target,
            identity_key: account.identity_key,
            unidentified_access,
            unrestricted_unidentified_access: account.access.unrestricted_unidentified_access,
            capabilities,
        })
    }

    /// A serialized `SenderCertificate` for the caller, signed by this server's key.
    pub async fn delivery_certificate(
        &self,
        caller: AuthenticatedDevice,
    ) -> Result<Vec<u8>, AppError> {
        let account = self
            .accounts
            .account(caller.aci)
            .await?
            .ok_or(AppError::Unauthorized)?;
        let expires = now_ms() as u64 + self.certificate_ttl.as_millis() as u64;
        Ok(self
            .signer
            .sender_certificate(caller.aci, caller.device, &account.identity_key, expires)
            .encode_to_vec())
    }
}
