//! Where attachments are uploaded and how large they may be (PROTOCOL.md 12.3 and
//! "0 (additions)").

use super::ConfigError;
use crate::domain::attachments::DEFAULT_MAX_ATTACHMENT_BYTES;

/// `SEALPOST_ATTACHMENT_RETENTION_DAYS`' default: longer than the 30-day queue TTL, so a
/// queued pointer never outlives its blob.
pub const DEFAULT_RETENTION_DAYS: u32 = 45;

/// What the upload form hands out.
#[derive(Clone, Debug)]
pub struct AttachmentsConfig {
    /// `SEALPOST_PUBLIC_URL`: the server's externally visible base URL; unset:
    /// `http://<listen address>` with the port actually bound.
    pub public_url: Option<String>,
    /// `SEALPOST_ATTACHMENTS_URL`: the cdn-3 base (TUS uploads and downloads); unset: the
    /// public URL.
    pub attachments_url: Option<String>,
    /// `SEALPOST_MAX_ATTACHMENT_BYTES`.
    pub max_bytes: u64,
    /// `SEALPOST_ATTACHMENT_RETENTION_DAYS`.
    pub retention_days: u32,
    /// How often the sweeper runs (daily; tests shorten it).
    pub sweep_interval: std::time::Duration,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            attachments_url: None,
            max_bytes: DEFAULT_MAX_ATTACHMENT_BYTES,
            retention_days: DEFAULT_RETENTION_DAYS,
            sweep_interval: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

impl AttachmentsConfig {
    pub fn retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.retention_days) * 24 * 3600)
    }

    /// The cdn-3 base for a server whose public listener is bound at `bound`.
    pub fn attachments_base(&self, bound: std::net::SocketAddr) -> String {
        self.attachments_url
            .clone()
            .or_else(|| self.public_url.clone())
            .unwrap_or_else(|| format!("http://{bound}"))
    }
}

/// Checks a base URL: http(s), no query or fragment, kept without a trailing slash.
pub(super) fn base_url(name: &str, value: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(value)
        .map_err(|_| ConfigError::new(format!("{name}={value:?} is not a URL")))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || parsed.host().is_none()
    {
        return Err(ConfigError::new(format!(
            "{name} must be an http(s) base URL without query or fragment"
        )));
    }
    Ok(value.trim_end_matches('/').to_owned())
}
