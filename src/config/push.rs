//! Push providers' configuration (PROTOCOL.md "0 (additions)"): each provider optional,
//! secrets given as file paths (read at start, never printed), the WebPush VAPID key made
//! from a server secret when no file is given.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// The `[push]` table of the file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePush {
    pub(super) fcm_credentials_file: Option<PathBuf>,
    pub(super) fcm_url: Option<String>,
    pub(super) apns_key_file: Option<PathBuf>,
    pub(super) apns_key_id: Option<String>,
    pub(super) apns_team_id: Option<String>,
    pub(super) apns_bundle_id: Option<String>,
    pub(super) apns_sandbox: Option<bool>,
    pub(super) apns_url: Option<String>,
    pub(super) vapid_key_file: Option<PathBuf>,
    pub(super) vapid_subject: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
}

/// Where wake-ups go and with which credentials.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// `SEALPOST_FCM_CREDENTIALS_FILE`: the Firebase service-account JSON; unset = FCM off.
    pub fcm_credentials_file: Option<PathBuf>,
    /// `SEALPOST_FCM_URL`: the FCM API base (a proxy, or a test's stand-in).
    pub fcm_url: Option<String>,
    /// APNs token auth; unset = APNs off.
    pub apns: Option<ApnsConfig>,
    /// `SEALPOST_VAPID_KEY_FILE`: the WebPush signing key; unset = made from a server secret
    /// on first start, the same on every pod.
    pub vapid_key_file: Option<PathBuf>,
    /// `SEALPOST_VAPID_SUBJECT`: the contact push services may reach the operator at.
    pub vapid_subject: String,
    /// `SEALPOST_PUSH_CA_FILE`: PEM roots push requests trust besides the public ones (a
    /// LAN push distributor with its own CA).
    pub ca_file: Option<PathBuf>,
}

/// `SEALPOST_APNS_*`: all four values or none.
#[derive(Clone, Debug)]
pub struct ApnsConfig {
    pub key_file: PathBuf,
    pub key_id: String,
    pub team_id: String,
    pub bundle_id: String,
    /// `SEALPOST_APNS_SANDBOX=on`: Apple's development gateway.
    pub sandbox: bool,
    /// `SEALPOST_APNS_URL`: the gateway's base, overriding the two of Apple's.
    pub url: Option<String>,
}

/// The contact used when none is configured.
pub const DEFAULT_VAPID_SUBJECT: &str = "mailto:postmaster@localhost";

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            fcm_credentials_file: None,
            fcm_url: None,
            apns: None,
            vapid_key_file: None,
            vapid_subject: DEFAULT_VAPID_SUBJECT.into(),
            ca_file: None,
        }
    }
}

pub(super) fn overlay_env(
    raw: &mut FilePush,
    var: &impl Fn(&str) -> Option<String>,
    on_off: &impl Fn(&str) -> Result<Option<bool>, ConfigError>,
) -> Result<(), ConfigError> {
    let path = |name: &str| var(name).map(PathBuf::from);
    if let Some(v) = path("SEALPOST_FCM_CREDENTIALS_FILE") {
        raw.fcm_credentials_file = Some(v);
    }
    if let Some(v) = var("SEALPOST_FCM_URL") {
        raw.fcm_url = Some(v);
    }
    if let Some(v) = path("SEALPOST_APNS_KEY_FILE") {
        raw.apns_key_file = Some(v);
    }
    if let Some(v) = var("SEALPOST_APNS_KEY_ID") {
        raw.apns_key_id = Some(v);
    }
    if let Some(v) = var("SEALPOST_APNS_TEAM_ID") {
        raw.apns_team_id = Some(v);
    }
    if let Some(v) = var("SEALPOST_APNS_BUNDLE_ID") {
        raw.apns_bundle_id = Some(v);
    }
    if let Some(v) = on_off("SEALPOST_APNS_SANDBOX")? {
        raw.apns_sandbox = Some(v);
    }
    if let Some(v) = var("SEALPOST_APNS_URL") {
        raw.apns_url = Some(v);
    }
    if let Some(v) = path("SEALPOST_VAPID_KEY_FILE") {
        raw.vapid_key_file = Some(v);
    }
    if let Some(v) = var("SEALPOST_VAPID_SUBJECT") {
        raw.vapid_subject = Some(v);
    }
    if let Some(v) = path("SEALPOST_PUSH_CA_FILE") {
        raw.ca_file = Some(v);
    }
    Ok(())
}

pub(super) fn validate(raw: FilePush) -> Result<PushConfig, ConfigError> {
    let apns = match (
        raw.apns_key_file,
        raw.apns_key_id,
        raw.apns_team_id,
        raw.apns_bundle_id,
    ) {
        (None, None, None, None) => None,
        (Some(key_file), Some(key_id), Some(team_id), Some(bundle_id)) => Some(ApnsConfig {
            key_file,
            key_id,
            team_id,
            bundle_id,
            sandbox: raw.apns_sandbox.unwrap_or(false),
            url: raw.apns_url,
        }),
        _ => {
            return Err(ConfigError::new(
                "APNs needs all of SEALPOST_APNS_KEY_FILE, SEALPOST_APNS_KEY_ID, \
                 SEALPOST_APNS_TEAM_ID and SEALPOST_APNS_BUNDLE_ID, or none of them",
            ));
        }
    };
    let vapid_subject = raw
        .vapid_subject
        .unwrap_or_else(|| DEFAULT_VAPID_SUBJECT.into());
    if !(vapid_subject.starts_with("mailto:") || vapid_subject.starts_with("https://")) {
        return Err(ConfigError::new(
            "SEALPOST_VAPID_SUBJECT must be a mailto: or https: contact",
        ));
    }
    for (name, url) in [
        ("SEALPOST_FCM_URL", raw.fcm_url.as_deref()),
        (
            "SEALPOST_APNS_URL",
            apns.as_ref().and_then(|a| a.url.as_deref()),
        ),
    ] {
        if let Some(url) = url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::new(format!("{name} must be an http(s) URL")));
        }
    }
    Ok(PushConfig {
        fcm_credentials_file: raw.fcm_credentials_file,
        fcm_url: raw.fcm_url,
        apns,
        vapid_key_file: raw.vapid_key_file,
        vapid_subject,
        ca_file: raw.ca_file,
    })
}
