//! Prekeys: uploads checked against the identity key, counts, atomic one-time claims, and
//! the key-consistency check.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::access::{Requester, check_access_key};
use crate::domain::DomainError;
use crate::domain::accounts::Device;
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::keys::{
    IdentityKey, KemSignedPreKey, KeyCounts, KeyUpload, PreKey, SignedEcPreKey, key_digest,
};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::metrics::Metrics;
use crate::storage::{AccountStore, KeyStore};

/// Which of the target's devices a fetch asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSelector {
    All,
    One(DeviceId),
}

impl std::str::FromStr for DeviceSelector {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        if s == "*" {
            Ok(Self::All)
        } else {
            s.parse().map(Self::One)
        }
    }
}

impl std::fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::One(id) => id.fmt(f),
        }
    }
}

/// One device's entry in a fetch.
#[derive(Clone, Debug)]
pub struct DeviceKeys {
    pub device_id: DeviceId,
    pub registration_id: u16,
    pub signed_pre_key: SignedEcPreKey,
    pub pre_key: Option<PreKey>,
    /// A Kyber one-time key, or the last-resort key when none is left.
    pub pq_pre_key: Option<KemSignedPreKey>,
}

#[derive(Clone, Debug)]
pub struct FetchedKeys {
    pub identity_key: IdentityKey,
    pub devices: Vec<DeviceKeys>,
}

#[derive(Clone)]
pub struct KeyService {
    accounts: Arc<dyn AccountStore>,
    keys: Arc<dyn KeyStore>,
    limiter: RateLimiter,
    metrics: Metrics,
}

impl KeyService {
    pub fn new(
        accounts: Arc<dyn AccountStore>,
        keys: Arc<dyn KeyStore>,
        limiter: RateLimiter,
        metrics: Metrics,
    ) -> Self {
        Self {
            accounts,
            keys,
            limiter,
            metrics,
        }
    }

    /// Stores the caller's keys once every signed key verifies against the account's
    /// identity key (422 and nothing stored otherwise).
    pub async fn upload(
        &self,
        caller: AuthenticatedDevice,
        upload: KeyUpload,
    ) -> Result<(), AppError> {
        let account = self
            .accounts
            .account(caller.aci)
            .await?
            .ok_or(AppError::Unauthorized)?;
        signatures_checked(&self.metrics, upload.verify(&account.identity_key))?;
        if !self
            .keys
            .store_keys(caller.aci, caller.device, &upload)
            .await?
        {
            return Err(AppError::Unauthorized);
        }
        let stored = &self.metrics.prekeys_stored;
        let count = |n: usize| n as u64;
        stored
            .with_label_values(&["ec"])
            .inc_by(count(upload.pre_keys.as_ref().map_or(0, Vec::len)));
        stored
            .with_label_values(&["kem"])
            .inc_by(count(upload.pq_pre_keys.as_ref().map_or(0, Vec::len)));
        stored
            .with_label_values(&["ec_signed"])
            .inc_by(count(usize::from(upload.signed_pre_key.is_some())));
        stored
            .with_label_values(&["kem_last_resort"])
            .inc_by(count(usize::from(upload.pq_last_resort_pre_key.is_some())));
        Ok(())
    }

    pub async fn counts(&self, caller: AuthenticatedDevice) -> Result<KeyCounts, AppError> {
        Ok(self.keys.counts(caller.aci, caller.device).await?)
    }

    /// Hands out the target's keys, consuming one EC and one Kyber one-time key per listed
    /// device. Devices without a signed prekey are left out; none left is 404.
    pub async fn fetch(
        &self,
        requester: Requester,
        target: Aci,
        selector: DeviceSelector,
    ) -> Result<FetchedKeys, AppError> {
        let account = self.accounts.account(target).await?;
        let account = match requester {
            Requester::AccessKey(key) => {
                check_access_key(account.as_ref(), &key, &self.metrics)?;
                self.metrics
                    .prekey_fetches
                    .with_label_values(&["access_key"])
                    .inc();
                account.ok_or(AppError::Unauthorized)?
            }
            Requester::Device(caller) => {
                let account =
                    account.ok_or_else(|| AppError::NotFound("no such account".into()))?;
                let key = format!("{}.{}__{}.{}", caller.aci, caller.device, target, selector);
                self.limiter.check(Limit::PreKeys, &key).await?;
                self.metrics
                    .prekey_fetches
                    .with_label_values(&["authenticated"])
                    .inc();
                account
            }
        };

        let devices: Vec<Device> = match selector {
            DeviceSelector::All => self.accounts.devices(target).await?,
            DeviceSelector::One(id) => self
                .accounts
                .device(target, id)
                .await?
                .into_iter()
                .collect(),
        };
        let mut out = Vec::with_capacity(devices.len());
        for device in devices {
            let Some(claimed) = self.keys.claim(target, device.id).await? else {
                continue;
            };
            if claimed.pre_key.is_none() {
                self.metrics
                    .prekeys_exhausted
                    .with_label_values(&["ec"])
                    .inc();
            }
            let pq_pre_key = match claimed.pq_pre_key {
                Some(key) => Some(key),
                None => {
                    self.metrics
                        .prekeys_exhausted
                        .with_label_values(&["kem"])
                        .inc();
                    claimed.pq_last_resort_pre_key
                }
            };
            out.push(DeviceKeys {
                device_id: device.id,
                registration_id: device.attributes.registration_id.get(),
                signed_pre_key: claimed.signed_pre_key,
                pre_key: claimed.pre_key,
                pq_pre_key,
            });
        }
        if out.is_empty() {
            return Err(AppError::NotFound("no such device".into()));
        }
        Ok(FetchedKeys {
            identity_key: account.identity_key,
            devices: out,
        })
    }

    /// Whether the client's digest of its identity, signed and last-resort keys matches what
    /// the server holds for the calling device.
    pub async fn check(
        &self,
        caller: AuthenticatedDevice,
        digest: &[u8; 32],
    ) -> Result<bool, AppError> {
        let account = self
            .accounts
            .account(caller.aci)
            .await?
            .ok_or(AppError::Unauthorized)?;
        let signed = self.keys.signed_pre_key(caller.aci, caller.device).await?;
        let last_resort = self
            .keys
            .pq_last_resort_pre_key(caller.aci, caller.device)
            .await?;
        let (Some(signed), Some(last_resort)) = (signed, last_resort) else {
            return Ok(false);
        };
        let ours = key_digest(&account.identity_key, &signed, &last_resort);
        Ok(bool::from(ours.ct_eq(digest)))
    }
}

/// The outcome of a signed-key check (uploads, registration, linking: every one goes
/// through here), with a refusal counted: 422 and nothing stored.
pub(crate) fn signatures_checked(
    metrics: &Metrics,
    verified: Result<(), DomainError>,
) -> Result<(), AppError> {
    verified.map_err(|e| {
        metrics.prekey_signature_rejections.inc();
        e.into()
    })
}
