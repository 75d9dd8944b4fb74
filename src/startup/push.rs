//! The push providers this server is configured with: credentials read from their files
//! (never printed), the WebPush VAPID key from its file or made from a server secret every
//! pod shares.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::push::apns::{ApnsSender, ApnsSettings};
use crate::push::fcm::{FcmSender, FcmSettings};
use crate::push::http::HttpOptions;
use crate::push::senders::Senders;
use crate::push::webpush::{VapidKey, WebPushSender};
use crate::push::{SubscriptionSender, TokenSender};
use crate::storage::Stores;

/// The server secret the VAPID key is made from when no key file is given.
pub const VAPID_SECRET: &str = "webpush-vapid-key";

/// The senders, and the VAPID public key clients subscribe with.
pub struct Providers {
    pub senders: Senders,
    pub vapid_public_key: String,
}

pub async fn providers(
    config: &Config,
    stores: &Stores,
    metrics: &Metrics,
) -> anyhow::Result<Providers> {
    let push = &config.push;
    let http = HttpOptions {
        extra_roots_pem: match &push.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading SEALPOST_PUSH_CA_FILE {}", path.display()))?,
            ),
            None => None,
        },
        ..HttpOptions::default()
    };
    let vapid = match &push.vapid_key_file {
        Some(path) => VapidKey::from_file(path)
            .with_context(|| format!("reading SEALPOST_VAPID_KEY_FILE {}", path.display()))?,
        None => {
            let secret = stores
                .secrets
                .secret(VAPID_SECRET)
                .await
                .map_err(|e| anyhow::anyhow!("reading the VAPID secret: {e}"))?;
            VapidKey::from_secret(&secret).context("making the VAPID key")?
        }
    };
    let vapid_public_key = vapid.public_key_base64url();
    let webpush = WebPushSender::new(
        vapid,
        push.vapid_subject.clone(),
        &http,
        config.webpush_allow_private,
    )?;
    let fcm = match &push.fcm_credentials_file {
        Some(path) => {
            let settings = FcmSettings {
                credentials_json: read_secret(path, "SEALPOST_FCM_CREDENTIALS_FILE")?,
                base_url: push.fcm_url.clone(),
            };
            let sender = FcmSender::new(settings, &http).context("configuring FCM")?;
            tracing::info!("FCM push configured");
            Some(Arc::new(sender) as Arc<dyn TokenSender>)
        }
        None => None,
    };
    let apns = match &push.apns {
        Some(apns) => {
            let settings = ApnsSettings {
                key_pem: read_secret(&apns.key_file, "SEALPOST_APNS_KEY_FILE")?,
                key_id: apns.key_id.clone(),
                team_id: apns.team_id.clone(),
                bundle_id: apns.bundle_id.clone(),
                sandbox: apns.sandbox,
                base_url: apns.url.clone(),
            };
            let sender = ApnsSender::new(settings, &http).context("configuring APNs")?;
            tracing::info!(sandbox = apns.sandbox, "APNs push configured");
            Some(Arc::new(sender) as Arc<dyn TokenSender>)
        }
        None => None,
    };
    let webpush: Arc<dyn SubscriptionSender> = Arc::new(webpush);
    Ok(Providers {
        senders: Senders::new(fcm, apns, Some(webpush), metrics.clone()),
        vapid_public_key,
    })
}

/// A credential file's bytes; the error names the variable and the path, never the content.
fn read_secret(path: &std::path::Path, variable: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {variable} {}", path.display()))
}
