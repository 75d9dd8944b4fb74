//! What an account's devices are, as its devices see them (`DeviceInfo`, PROTOCOL.md 16.2):
//! the list, renaming, and the primary's wait for the device it is linking. No HTTP types.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::accounts::{Device, MAX_DEVICE_NAME_BYTES};
use crate::domain::created_at;
use crate::domain::ids::{DeviceId, RegistrationId};
use crate::domain::keys::IdentityKey;
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::storage::AccountStore;
use crate::storage::linked_devices::{LinkedDevice, LinkedDeviceStore};

/// Bounds of `?timeout=` of a wait for a linked device, in seconds, and its default.
pub const MIN_WAIT_SECS: u64 = 1;
pub const MAX_WAIT_SECS: u64 = 3600;
pub const DEFAULT_WAIT_SECS: u64 = 30;
/// Bounds of a token identifier's length (PROTOCOL.md 16.2; ours are 43 characters).
pub const MIN_TOKEN_CHARS: usize = 32;
pub const MAX_TOKEN_CHARS: usize = 64;
/// Waits one process holds open at once; one more is a 503 (each may hold a Redis
/// connection for up to an hour).
pub const MAX_WAITS_PER_POD: usize = 1024;

/// One device as the account's devices see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub id: DeviceId,
    pub name: Option<Vec<u8>>,
    pub last_seen_day_ms: i64,
    pub registration_id: RegistrationId,
    /// The creation time sealed to the account's identity key.
    pub created_at_ciphertext: Vec<u8>,
}

impl DeviceInfo {
    fn of(device: &Device, created_at_ciphertext: Vec<u8>) -> Self {
        Self {
            id: device.id,
            name: device.attributes.name.clone(),
            last_seen_day_ms: device.last_seen_day_ms,
            registration_id: device.attributes.registration_id,
            created_at_ciphertext,
        }
    }
}

/// The token identifier of a link code: url-nopad SHA-256 of the code's text (PROTOCOL.md
/// 16.2), what `GET /v1/devices/provisioning/code` hands out beside the code.
pub fn token_identifier(verification_code: &str) -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        <sha2::Sha256 as sha2::Digest>::digest(verification_code.as_bytes()),
    )
}

/// A parsed `wait_for_linked_device` request.
#[derive(Clone, Debug)]
pub struct LinkedDeviceWait {
    pub token: String,
    pub timeout: Duration,
}

impl LinkedDeviceWait {
    /// 400 for an identifier outside 32..64 base64url characters or a timeout outside
    /// 1..3600 seconds.
    pub fn parse(token: String, timeout_secs: Option<i64>) -> Result<Self, AppError> {
        let chars = token.chars().count();
        if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&chars)
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AppError::bad_request(format!(
                "the token identifier must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} base64url characters"
            )));
        }
        let secs = timeout_secs.unwrap_or(DEFAULT_WAIT_SECS as i64);
        if !(MIN_WAIT_SECS as i64..=MAX_WAIT_SECS as i64).contains(&secs) {
            return Err(AppError::bad_request(format!(
                "timeout must be {MIN_WAIT_SECS} to {MAX_WAIT_SECS} seconds"
            )));
        }
        Ok(Self {
            token,
            timeout: Duration::from_secs(secs as u64),
        })
    }
}

#[derive(Clone)]
pub struct DeviceService {
    accounts: Arc<dyn AccountStore>,
    linked: Arc<dyn LinkedDeviceStore>,
    limiter: RateLimiter,
    waits: Arc<tokio::sync::Semaphore>,
    /// Cancelled when shutdown begins: waits end then (204), so none holds up the drain.
    shutdown: CancellationToken,
}

impl DeviceService {
    pub fn new(
        accounts: Arc<dyn AccountStore>,
        linked: Arc<dyn LinkedDeviceStore>,
        limiter: RateLimiter,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            accounts,
            linked,
            limiter,
            waits: Arc::new(tokio::sync::Semaphore::new(MAX_WAITS_PER_POD)),
            shutdown,
        }
    }

    /// The caller's account's devices, by ascending id.
    pub async fn list(&self, caller: AuthenticatedDevice) -> Result<Vec<DeviceInfo>, AppError> {
        let account = self
            .accounts
            .account(caller.aci)
            .await?
            .ok_or(AppError::Unauthorized)?;
        let devices = self.accounts.devices(caller.aci).await?;
        let mut infos = Vec::with_capacity(devices.len());
        for device in &devices {
            infos.push(self.info(device, &account.identity_key).await?);
        }
        Ok(infos)
    }

    /// `device` as listed. A device stored before sealpost kept its sealed creation time
    /// gets it sealed now and stored, once (another request sealing it meanwhile wins), so
    /// every listing shows the same bytes.
    async fn info(&self, device: &Device, identity: &IdentityKey) -> Result<DeviceInfo, AppError> {
        if let Some(sealed) = &device.created_at_ciphertext {
            return Ok(DeviceInfo::of(device, sealed.clone()));
        }
        let registration_id = device.attributes.registration_id;
        let sealed = created_at::seal(identity, device.id, registration_id, device.created_ms);
        if self
            .accounts
            .seal_created_at_once(device.aci, device.id, &sealed)
            .await?
        {
            return Ok(DeviceInfo::of(device, sealed));
        }
        // Sealed by another request since it was read (or removed meanwhile: then ours).
        let stored = self
            .accounts
            .device(device.aci, device.id)
            .await?
            .and_then(|d| d.created_at_ciphertext);
        Ok(DeviceInfo::of(device, stored.unwrap_or(sealed)))
    }

    /// Sets a device's encrypted name (`PUT /v1/accounts/name/`): the caller's own, or
    /// with `target` any device of the account when the caller is the primary (403
    /// otherwise); 404 for a device the account lacks; 422 for a name outside 1..225 bytes.
    pub async fn rename(
        &self,
        caller: AuthenticatedDevice,
        target: Option<DeviceId>,
        name: Vec<u8>,
    ) -> Result<(), AppError> {
        if name.is_empty() || name.len() > MAX_DEVICE_NAME_BYTES {
            return Err(AppError::Unprocessable(format!(
                "deviceName must be 1 to {MAX_DEVICE_NAME_BYTES} bytes"
            )));
        }
        let target = target.unwrap_or(caller.device);
        if target != caller.device && !caller.device.is_primary() {
            return Err(AppError::Forbidden(
                "a linked device may only rename itself".into(),
            ));
        }
        self.limiter
            .check(
                Limit::SetDeviceName,
                &format!("{}.{}", caller.aci, caller.device.get()),
            )
            .await?;
        if self
            .accounts
            .set_device_name(caller.aci, target, &name)
            .await?
        {
            Ok(())
        } else {
            Err(AppError::NotFound("no such device".into()))
        }
    }

    /// Waits for the device that links with the code of `wait.token` (on any pod) and
    /// answers its info; `None` when the wait ends first, or when that code was another
    /// account's (which the caller must not learn about), or when shutdown begins.
    pub async fn wait_for_linked(
        &self,
        caller: AuthenticatedDevice,
        wait: LinkedDeviceWait,
    ) -> Result<Option<DeviceInfo>, AppError> {
        self.limiter
            .check(Limit::WaitForLinkedDevice, &caller.aci.to_string())
            .await?;
        let _permit = self.waits.clone().try_acquire_owned().map_err(|_| {
            AppError::Busy("this server holds as many waits as it may; try again".into())
        })?;
        let waited = tokio::select! {
            waited = self.linked.wait_for_linked(&wait.token, wait.timeout) => waited?,
            _ = self.shutdown.cancelled() => None,
        };
        let Some(linked) = waited else {
            return Ok(None);
        };
        if linked.aci != caller.aci {
            return Ok(None);
        }
        let Some(account) = self.accounts.account(caller.aci).await? else {
            return Err(AppError::Unauthorized);
        };
        // Removed again since it linked: nothing to show.
        match self.accounts.device(linked.aci, linked.id).await? {
            Some(device) => Ok(Some(self.info(&device, &account.identity_key).await?)),
            None => Ok(None),
        }
    }

    /// Tells the waiters of `verification_code`'s token identifier, on every pod, which
    /// device linked with it.
    pub async fn linked(
        linked: &dyn LinkedDeviceStore,
        verification_code: &str,
        device: LinkedDevice,
    ) -> crate::storage::StorageResult<()> {
        linked
            .record_linked(
                &token_identifier(verification_code),
                device,
                crate::storage::linked_devices::LINKED_DEVICE_TTL,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_identifier_is_the_url_safe_unpadded_sha256_of_the_code() {
        // SHA-256("abc") = ba7816bf...
        assert_eq!(
            token_identifier("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }

    #[test]
    fn waits_refuse_bad_identifiers_and_timeouts() {
        let good = "a".repeat(43);
        assert!(LinkedDeviceWait::parse(good.clone(), None).is_ok());
        assert_eq!(
            LinkedDeviceWait::parse(good.clone(), None).unwrap().timeout,
            Duration::from_secs(30)
        );
        assert!(LinkedDeviceWait::parse("a".repeat(31), None).is_err());
        assert!(LinkedDeviceWait::parse("a".repeat(65), None).is_err());
        assert!(LinkedDeviceWait::parse(format!("{}+", "a".repeat(42)), None).is_err());
        assert!(LinkedDeviceWait::parse(good.clone(), Some(0)).is_err());
        assert!(LinkedDeviceWait::parse(good.clone(), Some(3601)).is_err());
        assert!(LinkedDeviceWait::parse(good, Some(3600)).is_ok());
    }
}
