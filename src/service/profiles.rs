//! Profiles (what another account may learn to talk to one) and sender certificates.

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
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::metrics::Metrics;
use crate::storage::AccountStore;

/// What `GET /v1/profile/{aci}` answers.
#[derive(Clone, Debug)]
pub struct Profile {
    pub identity_key: IdentityKey,
    /// HMAC-SHA256 keyed with the access key over 32 zero bytes, when there is a key.
    pub unidentified_access: Option<[u8; 32]>,
    pub unrestricted_unidentified_access: bool,
    /// A capability is true only when every device of the account has it.
    pub capabilities: BTreeMap<String, bool>,
}

#[derive(Clone)]
pub struct ProfileService {
    accounts: Arc<dyn AccountStore>,
    signer: Arc<ServerSigner>,
    certificate_ttl: Duration,
    metrics: Metrics,
}

impl ProfileService {
    pub fn new(
        accounts: Arc<dyn AccountStore>,
        signer: ServerSigner,
        certificate_ttl: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            accounts,
            signer: Arc::new(signer),
            certificate_ttl,
            metrics,
        }
    }

    pub async fn profile(&self, requester: Requester, target: Aci) -> Result<Profile, AppError> {
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
        let mut capabilities: BTreeMap<String, bool> = BTreeMap::new();
        for name in devices
            .iter()
            .flat_map(|d| d.attributes.capabilities.keys())
        {
            let everywhere = devices.iter().all(|d| {
                d.attributes
                    .capabilities
                    .get(name)
                    .copied()
                    .unwrap_or(false)
            });
            capabilities.insert(name.clone(), everywhere);
        }
        let unidentified_access = account.access.unidentified_access_key.map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
            mac.update(&[0u8; 32]);
            mac.finalize().into_bytes().into()
        });
        Ok(Profile {
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
