//! The push providers this server is configured with: credentials read from their files
//! (never printed), the WebPush VAPID key from its file or made from a server secret every
//! pod shares.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::push::http::HttpOptions;
use crate::push::senders::Senders;
use crate::push::webpush::{VapidKey, WebPushSender};
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
    Ok(Providers {
        senders: Senders::new(None, None, Some(Arc::new(webpush)), metrics.clone()),
        vapid_public_key,
    })
}
