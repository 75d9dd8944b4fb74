//! Verifying device credentials without paying argon2 on every request.
//!
//! Every request still reads the device from the store, so a deleted device or account, or
//! a changed password (a new PHC string), is seen at once on every pod. What the cache
//! saves is the argon2 verification: it remembers, per device, a digest of the PHC string
//! that was verified and a keyed MAC of the password that matched it. A request whose
//! stored PHC string and presented password match both is accepted without argon2; any
//! other request pays the full verification. Unknown devices verify against a dummy hash,
//! so they cost what a wrong password costs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::basic::Credentials;
use super::password::{self, Passwords};
use crate::domain::accounts::CredentialDigest;
use crate::domain::ids::{Aci, DeviceId};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::metrics::Metrics;
use crate::storage::AccountStore;

/// Past this many cached devices the cache starts over (a bound, not a policy: entries are
/// cheap to rebuild with one argon2 verification each).
const CACHE_CAPACITY: usize = 100_000;

struct Verified {
    phc_digest: [u8; 32],
    password_mac: [u8; 32],
}

#[derive(Clone)]
pub struct Authenticator(Arc<Inner>);

struct Inner {
    accounts: Arc<dyn AccountStore>,
    limiter: RateLimiter,
    metrics: Metrics,
    passwords: Passwords,
    // std Mutex: lookups and inserts are a hash-map operation, never held across an await.
    cache: Mutex<HashMap<(Aci, DeviceId), Verified>>,
    mac_key: [u8; 32],
    dummy_hash: String,
}

impl Authenticator {
    /// Computes the dummy hash once (one argon2 hash): call it at start, not per request.
    pub fn new(
        accounts: Arc<dyn AccountStore>,
        limiter: RateLimiter,
        metrics: Metrics,
        passwords: Passwords,
    ) -> anyhow::Result<Self> {
        let mut mac_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut mac_key);
        let mut dummy = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut dummy);
        let dummy_hash = password::hash(&crate::domain::encoding::encode_base64(&dummy))?;
        Ok(Self(Arc::new(Inner {
            accounts,
            limiter,
            metrics,
            passwords,
            cache: Mutex::new(HashMap::new()),
            mac_key,
            dummy_hash,
        })))
    }

    fn mac(&self, password: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0.mac_key).expect("any key length");
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn outcome(&self, outcome: &str) {
        self.0
            .metrics
            .auth_attempts
            .with_label_values(&[outcome])
            .inc();
    }

    /// Records a request that carried no usable credentials.
    pub fn reject_unusable(&self, missing: bool) -> AppError {
        self.outcome(if missing { "missing" } else { "malformed" });
        AppError::Unauthorized
    }

    /// Checks `credentials`; `client` is charged an `authFailures` permit per failure and
    /// refused (429) before any argon2 work once it has none left.
    pub async fn authenticate(
        &self,
        credentials: &Credentials,
        client: IpAddr,
    ) -> Result<AuthenticatedDevice, AppError> {
        Ok(self.authenticate_socket(credentials, client).await?.0)
    }

    /// As [`Authenticator::authenticate`], with the credential that matched: what a
    /// WebSocket keeps, to check later that its device still has it
    /// ([`Authenticator::still_holds`]).
    pub async fn authenticate_socket(
        &self,
        credentials: &Credentials,
        client: IpAddr,
    ) -> Result<(AuthenticatedDevice, CredentialDigest), AppError> {
        let inner = &self.0;
        let key = (credentials.aci, credentials.device);
        let device = inner
            .accounts
            .device(credentials.aci, credentials.device)
            .await?;
        let password_mac = self.mac(&credentials.password);
        let authenticated = AuthenticatedDevice {
            aci: credentials.aci,
            device: credentials.device,
        };

        if let Some(device) = &device {
            let phc_digest: [u8; 32] = Sha256::digest(device.password_hash.as_bytes()).into();
            let cached = inner
                .cache
                .lock()
                .map_err(|_| AppError::internal(anyhow::anyhow!("credential cache poisoned")))?
                .get(&key)
                .map(|v| {
                    bool::from(
                        v.phc_digest.ct_eq(&phc_digest) & v.password_mac.ct_eq(&password_mac),
                    )
                })
                .unwrap_or(false);
            if cached {
                self.outcome("ok_cached");
                self.touch(device);
                return Ok((authenticated, CredentialDigest(phc_digest)));
            }
        }

        let client_key = inner.limiter.address_key(client);
        inner
            .limiter
            .ensure_available(Limit::AuthFailures, &client_key)
            .await?;

        let (phc, known) = match &device {
            Some(d) => (d.password_hash.clone(), true),
            None => (inner.dummy_hash.clone(), false),
        };
        inner.metrics.password_verifications.inc();
        let matches = inner
            .passwords
            .verify(phc.clone(), credentials.password.clone())
            .await?;
        if matches && known {
            let credential = CredentialDigest::of(&phc);
            let mut cache = inner
                .cache
                .lock()
                .map_err(|_| AppError::internal(anyhow::anyhow!("credential cache poisoned")))?;
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(
                key,
                Verified {
                    phc_digest: credential.0,
                    password_mac,
                },
            );
            self.outcome("ok_verified");
            if let Some(device) = &device {
                self.touch(device);
            }
            return Ok((authenticated, credential));
        }

        self.outcome(if known {
            "bad_password"
        } else {
            "unknown_device"
        });
        inner
            .limiter
            .check(Limit::AuthFailures, &client_key)
            .await?;
        Err(AppError::Unauthorized)
    }

    /// Whether `device` still exists with `credential`, read from the store itself (not the
    /// account cache, which may still hold a device removed a moment ago on another pod).
    pub async fn still_holds(
        &self,
        device: AuthenticatedDevice,
        credential: CredentialDigest,
    ) -> Result<bool, AppError> {
        let key = (device.aci, device.device);
        let hashes = self.0.accounts.password_hashes(&[key]).await?;
        Ok(hashes
            .get(&key)
            .is_some_and(|hash| CredentialDigest::of(hash) == credential))
    }

    /// Moves the device's `lastSeen` to today, once a day at most (kept only to the day).
    fn touch(&self, device: &crate::domain::accounts::Device) {
        let today = crate::domain::accounts::day_of(crate::domain::clock::now_ms());
        if device.last_seen_day_ms >= today {
            return;
        }
        let (accounts, aci, id) = (self.0.accounts.clone(), device.aci, device.id);
        tokio::spawn(async move {
            if let Err(e) = accounts.touch_device(aci, id, today).await {
                tracing::debug!(error = %e, "could not record lastSeen");
            }
        });
    }

    /// Drops cached verifications of an account's devices (it was deleted). Correctness
    /// does not depend on this, since every request re-reads the device; it frees memory.
    pub fn forget_account(&self, aci: Aci) {
        if let Ok(mut cache) = self.0.cache.lock() {
            cache.retain(|(a, _), _| *a != aci);
        }
    }
}
