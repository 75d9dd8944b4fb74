//! Registering, updating and deleting accounts.

use super::invites::InviteService;
use std::net::IpAddr;
use std::sync::Arc;

use super::keys::signatures_checked;
use super::messages::MessageService;
use super::profiles::ProfileService;
use super::usernames::UsernameService;
use crate::auth::Authenticator;
use crate::auth::password::Passwords;
use crate::domain::accounts::new_auth_credential_salt;
use crate::domain::accounts::{Account, AccountAttributes, Device, NewAccount, Password, day_of};
use crate::domain::accounts::{MAX_DEVICES, NewDevice};
use crate::domain::clock::now_ms;
use crate::domain::created_at;
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::keys::verify_device_keys;
use crate::domain::keys::{IdentityKey, KemSignedPreKey, SignedEcPreKey};
use crate::domain::push::PushRegistration;
use crate::error::AppError;
use crate::identity::{AuthenticatedDevice, PrimaryDevice};
use crate::limits::{Limit, RateLimiter};
use crate::metrics::Metrics;
use crate::storage::linked_devices::{LinkedDevice, LinkedDeviceStore};
use crate::storage::{AccountStore, DeviceAdded, LinkCodeStore};

use super::devices::{DeviceService, token_identifier};
use super::identity::AccountIdentity;

/// The capability a new device must have to join an account without a phone number
/// (PROTOCOL.md 16.2): clients without it assume a PNI, and no sealpost account has one.
pub const OPTIONAL_PHONE_NUMBER_CAPABILITY: &str = "optionalPhoneNumber";

/// A registration request, parsed; signatures not yet checked.
#[derive(Clone, Debug)]
pub struct Registration {
    pub attributes: AccountAttributes,
    pub identity_key: IdentityKey,
    pub signed_pre_key: SignedEcPreKey,
    pub pq_last_resort_pre_key: KemSignedPreKey,
    /// The primary's push token, stored with the account (PROTOCOL.md 11.1).
    pub push: Option<PushRegistration>,
}

#[derive(Clone)]
pub struct AccountService {
    accounts: Arc<dyn AccountStore>,
    limiter: RateLimiter,
    authenticator: Authenticator,
    passwords: Passwords,
    messages: MessageService,
    link_codes: Arc<dyn LinkCodeStore>,
    linked_devices: Arc<dyn LinkedDeviceStore>,
    metrics: Metrics,
    /// Profile versions and avatars, deleted with the account.
    profiles: ProfileService,
    /// Usernames and links, released with the account.
    usernames: UsernameService,
    /// Who may register.
    invites: InviteService,
}

/// The stores of device linking: the codes, and which device linked with which.
#[derive(Clone)]
pub struct LinkStores {
    pub codes: Arc<dyn LinkCodeStore>,
    pub linked: Arc<dyn LinkedDeviceStore>,
}

/// How long a device-linking code stays usable.
pub const LINK_CODE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// What `GET /v1/devices/provisioning/code` hands the primary device.
#[derive(Clone, Debug)]
pub struct LinkCode {
    pub verification_code: String,
    pub token_identifier: String,
}

/// What a new device sends to `PUT /v1/devices/link`, parsed.
#[derive(Clone, Debug)]
pub struct LinkRequest {
    pub verification_code: String,
    pub attributes: AccountAttributes,
    pub signed_pre_key: SignedEcPreKey,
    pub pq_last_resort_pre_key: KemSignedPreKey,
    /// The new device's push token, stored with the device.
    pub push: Option<PushRegistration>,
}

/// What [`AccountService`] is made of.
pub struct AccountParts {
    pub accounts: Arc<dyn AccountStore>,
    pub limiter: RateLimiter,
    pub authenticator: Authenticator,
    pub passwords: Passwords,
    pub messages: MessageService,
    pub links: LinkStores,
    pub metrics: Metrics,
    /// Deleted with the account.
    pub profiles: ProfileService,
    /// Released with a deleted account.
    pub usernames: UsernameService,
    /// Who may register.
    pub invites: InviteService,
}

impl AccountService {
    pub fn new(parts: AccountParts) -> Self {
        Self {
            accounts: parts.accounts,
            limiter: parts.limiter,
            authenticator: parts.authenticator,
            passwords: parts.passwords,
            messages: parts.messages,
            link_codes: parts.links.codes,
            linked_devices: parts.links.linked,
            metrics: parts.metrics,
            profiles: parts.profiles,
            usernames: parts.usernames,
            invites: parts.invites,
        }
    }

    /// A single-use code (10 minutes) with which a new device joins the caller's account.
    /// Primary device only; limited by `allocateDevice`.
    pub async fn link_code(&self, caller: PrimaryDevice) -> Result<LinkCode, AppError> {
        let caller = caller.device();
        self.limiter
            .check(Limit::AllocateDevice, &caller.aci.to_string())
            .await?;
        let current = self.accounts.devices(caller.aci).await?.len();
        if current >= MAX_DEVICES {
            return Err(AppError::DeviceLimit {
                current,
                max: MAX_DEVICES,
            });
        }
        let mut random = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let verification_code = base64::Engine::encode(&url, random);
        let token_identifier = token_identifier(&verification_code);
        self.link_codes
            .put_code(&verification_code, caller.aci, LINK_CODE_TTL)
            .await?;
        Ok(LinkCode {
            verification_code,
            token_identifier,
        })
    }

    /// Adds a device to the account that issued the code: 403 for a bad or used code, 422
    /// when a signature does not verify against the account's identity key (the code stays
    /// usable), 409 without the `optionalPhoneNumber` capability (the code stays usable),
    /// 411 beyond six devices. The device gets the lowest free id; the access-key fields of
    /// its attributes are ignored (they are the account's). Its creation time is sealed to
    /// the account's identity key, and the primary's waits for the code hear of it.
    pub async fn link_device(
        &self,
        request: LinkRequest,
        password: Password,
    ) -> Result<(Aci, DeviceId), AppError> {
        let bad_code = || AppError::Forbidden("invalid or used verification code".into());
        let aci = self
            .link_codes
            .peek_code(&request.verification_code)
            .await?
            .ok_or_else(bad_code)?;
        self.limiter
            .check(Limit::VerifyDevice, &aci.to_string())
            .await?;
        let account = self.accounts.account(aci).await?.ok_or_else(bad_code)?;
        signatures_checked(
            &self.metrics,
            verify_device_keys(
                &account.identity_key,
                &request.signed_pre_key,
                &request.pq_last_resort_pre_key,
            ),
        )?;
        let capabilities = &request.attributes.device.capabilities;
        if capabilities.get(OPTIONAL_PHONE_NUMBER_CAPABILITY) != Some(&true) {
            return Err(AppError::Conflict(format!(
                "the new device lacks the {OPTIONAL_PHONE_NUMBER_CAPABILITY} capability, \
                 which an account without a phone number requires"
            )));
        }
        if self
            .link_codes
            .take_code(&request.verification_code)
            .await?
            != Some(aci)
        {
            return Err(bad_code());
        }
        let password_hash = self.passwords.hash(password.expose().to_owned()).await?;
        let now = now_ms();
        let new = NewDevice {
            password_hash,
            attributes: request.attributes.device,
            created_ms: now,
            last_seen_day_ms: day_of(now),
            signed_pre_key: request.signed_pre_key,
            pq_last_resort_pre_key: request.pq_last_resort_pre_key,
            push: request.push,
            seal_to: account.identity_key,
        };
        match self.accounts.add_device(aci, &new, MAX_DEVICES).await? {
            DeviceAdded::Added(id) => {
                let device = LinkedDevice { aci, id };
                // The device is linked and the code used up whatever happens next: a failed
                // record must not turn that into an error the new device cannot retry. The
                // primary's wait then ends at its timeout, and its device list shows the link.
                if let Err(e) = DeviceService::linked(
                    self.linked_devices.as_ref(),
                    &request.verification_code,
                    device,
                )
                .await
                {
                    tracing::warn!(error = %e, "could not tell waiters about a linked device");
                }
                Ok((aci, id))
            }
            DeviceAdded::NoAccount => Err(bad_code()),
            DeviceAdded::Full(current) => Err(AppError::DeviceLimit {
                current,
                max: MAX_DEVICES,
            }),
        }
    }

    /// Creates an account with its primary device; nothing is stored unless every
    /// signature verifies against the identity key. The account gets its
    /// `authCredentialSalt` and the primary its sealed creation time here, once.
    pub async fn register(
        &self,
        registration: Registration,
        password: Password,
        client: IpAddr,
        invite_token: Option<&str>,
    ) -> Result<AccountIdentity, AppError> {
        self.limiter
            .check(Limit::Registration, &self.limiter.address_key(client))
            .await?;
        signatures_checked(
            &self.metrics,
            verify_device_keys(
                &registration.identity_key,
                &registration.signed_pre_key,
                &registration.pq_last_resort_pre_key,
            ),
        )?;
        let admission = self.invites.admit(invite_token).await?;
        let created = self.create(registration, password).await;
        if created.is_err() {
            self.invites.give_back(admission).await;
        }
        created
    }

    async fn create(
        &self,
        registration: Registration,
        password: Password,
    ) -> Result<AccountIdentity, AppError> {
        let password_hash = self.passwords.hash(password.expose().to_owned()).await?;
        let aci = Aci::random();
        let now = now_ms();
        let created_at_ciphertext = created_at::seal(
            &registration.identity_key,
            DeviceId::PRIMARY,
            registration.attributes.device.registration_id,
            now,
        );
        let new = NewAccount {
            account: Account {
                aci,
                identity_key: registration.identity_key,
                access: registration.attributes.access,
                auth_credential_salt: new_auth_credential_salt(),
            },
            primary: Device {
                aci,
                id: DeviceId::PRIMARY,
                password_hash,
                attributes: registration.attributes.device,
                created_ms: now,
                last_seen_day_ms: day_of(now),
                created_at_ciphertext: Some(created_at_ciphertext),
            },
            signed_pre_key: registration.signed_pre_key,
            pq_last_resort_pre_key: registration.pq_last_resort_pre_key,
            push: registration.push,
        };
        self.accounts.create(&new).await?;
        self.metrics.registrations.inc();
        Ok(AccountIdentity::of(&new.account))
    }

    /// Replaces the caller's device attributes; the account's access settings change only
    /// when the caller is the primary device.
    pub async fn set_attributes(
        &self,
        caller: AuthenticatedDevice,
        attributes: AccountAttributes,
    ) -> Result<(), AppError> {
        let access = caller.device.is_primary().then_some(&attributes.access);
        let updated = self
            .accounts
            .update_attributes(caller.aci, caller.device, &attributes.device, access)
            .await?;
        if updated {
            Ok(())
        } else {
            // Deleted between authentication and now: the credentials no longer hold.
            Err(AppError::Unauthorized)
        }
    }

    /// Removes a device: the primary may remove any linked device, a linked device only
    /// itself, and nobody the primary. Its keys go with it (the store cascades), its queue is
    /// dropped and its sockets close with 4401 on every pod; its credentials stop working
    /// at once, since every request reads the device.
    ///
    /// When the removal event cannot be published the answer is 503 although the row is
    /// gone, so the client retries: the retry finds no device and answers 404, but only
    /// after dropping the queue and publishing the event again (and 503 again while that
    /// still fails). So a 204 or a 404 both mean: gone, and every socket told.
    pub async fn remove_device(
        &self,
        caller: AuthenticatedDevice,
        id: DeviceId,
    ) -> Result<(), AppError> {
        if id.is_primary() {
            return Err(AppError::Forbidden(
                "the primary device cannot be removed".into(),
            ));
        }
        if !caller.device.is_primary() && caller.device != id {
            return Err(AppError::Forbidden(
                "a linked device may only remove itself".into(),
            ));
        }
        let removed = self.accounts.remove_device(caller.aci, id).await?;
        self.authenticator.forget_account(caller.aci);
        // Also when it was already gone: this may be the retry of a removal whose event
        // could not be published.
        self.messages.remove_devices(caller.aci, &[id]).await?;
        if removed {
            Ok(())
        } else {
            Err(AppError::NotFound("no such device".into()))
        }
    }

    /// Deletes the caller's account with all its devices, keys and queues, and closes its
    /// sockets on every pod (4401).
    pub async fn delete(&self, caller: AuthenticatedDevice) -> Result<(), AppError> {
        let devices: Vec<_> = self
            .accounts
            .devices(caller.aci)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect();
        // The username and the profiles first, while the rows still name the avatars: when
        // this fails the account is still there for a retry.
        self.usernames.forget(caller.aci).await?;
        self.profiles.delete_all(caller.aci).await?;
        let deleted = self.accounts.delete(caller.aci).await?;
        self.authenticator.forget_account(caller.aci);
        if deleted {
            self.metrics.accounts_deleted.inc();
        }
        // An error when a removal event cannot be published; the account is gone, so a
        // retry gets 401. This pod's sockets are closed anyway, and a pod that lost its
        // pub/sub connection re-validates its sockets when it is back.
        self.messages.remove_devices(caller.aci, &devices).await
    }
}
