//! Push registrations (PROTOCOL.md 11.1, 11.2, 11.8) with Signal's rules: an FCM token equal
//! to the stored one changes nothing, an APNs token is always rewritten (APNs needs a fresh
//! "token updated" time), any registration replaces the other kinds and clears the device's
//! `fetchesMessages`; a WebPush subscription is stored inactive with a fresh activation
//! token, and its endpoint must not resolve to a loopback, private or link-local address
//! unless the operator allows it; its activation push goes out right after it is stored.
//! When wake-ups are sent is `wakeups`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::domain::clock::now_ms;
use crate::domain::push::{
    PushKind, PushRegistration, PushToken, WebPushRegistration, WebPushSubscription,
    is_public_address,
};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::storage::{AccountStore, PushStore};

use super::wakeups::WakeupService;

/// How long resolving a WebPush endpoint's host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PushService {
    accounts: Arc<dyn AccountStore>,
    push: Arc<dyn PushStore>,
    limiter: RateLimiter,
    /// `SEALPOST_WEBPUSH_ALLOW_PRIVATE`: endpoints on the LAN are accepted.
    allow_private: bool,
    wakeups: WakeupService,
    /// The VAPID public key, url-nopad.
    vapid_public_key: Arc<str>,
}

/// What [`PushService`] is made of.
pub struct PushParts {
    pub accounts: Arc<dyn AccountStore>,
    pub push: Arc<dyn PushStore>,
    pub limiter: RateLimiter,
    pub allow_private: bool,
    pub wakeups: WakeupService,
    pub vapid_public_key: String,
}

impl PushService {
    pub fn new(parts: PushParts) -> Self {
        Self {
            accounts: parts.accounts,
            push: parts.push,
            limiter: parts.limiter,
            allow_private: parts.allow_private,
            wakeups: parts.wakeups,
            vapid_public_key: parts.vapid_public_key.into(),
        }
    }

    /// `PUT /v1/accounts/gcm/`: nothing when the token is the stored one.
    pub async fn set_fcm(
        &self,
        caller: AuthenticatedDevice,
        token: PushToken,
    ) -> Result<(), AppError> {
        self.limit(caller, Limit::PushRegistration).await?;
        let registration = PushRegistration::Fcm(token);
        if self.current(caller).await? == Some(registration.clone()) {
            return Ok(());
        }
        self.register(caller, &registration).await
    }

    /// `PUT /v1/accounts/apn/`: always rewritten.
    pub async fn set_apns(
        &self,
        caller: AuthenticatedDevice,
        token: PushToken,
    ) -> Result<(), AppError> {
        self.limit(caller, Limit::PushRegistration).await?;
        self.register(caller, &PushRegistration::Apns(token)).await
    }

    /// `PUT /v1/accounts/webpush/`: stored inactive with a fresh activation token; the same
    /// subscription again, once active, changes nothing.
    pub async fn subscribe_webpush(
        &self,
        caller: AuthenticatedDevice,
        subscription: WebPushSubscription,
    ) -> Result<(), AppError> {
        self.limit(caller, Limit::WebPushSet).await?;
        if !self.allow_private {
            check_public(&subscription).await?;
        }
        if let Some(PushRegistration::WebPush(current)) = self.current(caller).await?
            && current.active
            && current.subscription == subscription
        {
            return Ok(());
        }
        let registration = PushRegistration::WebPush(WebPushRegistration {
            subscription,
            activation: Uuid::new_v4(),
            active: false,
        });
        self.register(caller, &registration).await?;
        self.wakeups.webpush_subscribed(caller.aci, caller.device);
        Ok(())
    }

    /// `PUT /v1/accounts/webpush/activate/`: 204 whether or not the token matched.
    pub async fn activate_webpush(
        &self,
        caller: AuthenticatedDevice,
        token: Option<Uuid>,
    ) -> Result<(), AppError> {
        self.limit(caller, Limit::WebPushSet).await?;
        if let Some(token) = token {
            self.push
                .activate_webpush(caller.aci, caller.device, token)
                .await?;
        }
        Ok(())
    }

    /// `DELETE /v1/accounts/{gcm,apn,webpush}/`: only that kind goes; the device no longer
    /// fetches its messages either (as Signal's DELETE does).
    pub async fn clear(&self, caller: AuthenticatedDevice, kind: PushKind) -> Result<(), AppError> {
        let limit = match kind {
            PushKind::WebPush => Limit::WebPushSet,
            PushKind::Fcm | PushKind::Apns => Limit::PushRegistration,
        };
        self.limit(caller, limit).await?;
        self.push
            .clear_push(caller.aci, caller.device, kind)
            .await?;
        self.accounts
            .set_fetches_messages(caller.aci, caller.device, false)
            .await?;
        Ok(())
    }

    async fn limit(&self, caller: AuthenticatedDevice, limit: Limit) -> Result<(), AppError> {
        let key = format!("{}.{}", caller.aci, caller.device.get());
        Ok(self.limiter.check(limit, &key).await?)
    }

    /// `GET /v1/webpush/vapid`: the key WebPush subscriptions must be made for (url-nopad,
    /// 65 bytes), limited per client address.
    pub async fn vapid_public_key(&self, client: IpAddr) -> Result<Arc<str>, AppError> {
        self.limiter
            .check(Limit::WebPushVapid, &self.limiter.address_key(client))
            .await?;
        Ok(self.vapid_public_key.clone())
    }

    async fn current(
        &self,
        caller: AuthenticatedDevice,
    ) -> Result<Option<PushRegistration>, AppError> {
        Ok(self
            .push
            .push(caller.aci, caller.device)
            .await?
            .map(|stored| stored.registration))
    }

    async fn register(
        &self,
        caller: AuthenticatedDevice,
        registration: &PushRegistration,
    ) -> Result<(), AppError> {
        if !self
            .push
            .set_push(caller.aci, caller.device, registration, now_ms())
            .await?
        {
            // Removed since it authenticated.
            return Err(AppError::Unauthorized);
        }
        self.accounts
            .set_fetches_messages(caller.aci, caller.device, false)
            .await?;
        Ok(())
    }
}

/// Refuses an endpoint whose host is, or resolves to, an address that is not public (422):
/// the server must not be made to POST into its own network.
async fn check_public(subscription: &WebPushSubscription) -> Result<(), AppError> {
    let refused = || {
        AppError::Unprocessable(
            "endpoint resolves to a loopback, private or link-local address".into(),
        )
    };
    let host = subscription.host();
    if let Ok(address) = host.parse::<IpAddr>() {
        return if is_public_address(address) {
            Ok(())
        } else {
            Err(refused())
        };
    }
    let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 443)))
        .await
        .map_err(|_| AppError::Unprocessable("endpoint's host did not resolve in time".into()))?
        .map_err(|_| AppError::Unprocessable("endpoint's host does not resolve".into()))?;
    let mut any = false;
    for address in resolved {
        any = true;
        if !is_public_address(address.ip()) {
            return Err(refused());
        }
    }
    if any {
        Ok(())
    } else {
        Err(AppError::Unprocessable(
            "endpoint's host does not resolve".into(),
        ))
    }
}
