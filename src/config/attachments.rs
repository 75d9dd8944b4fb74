//! Where attachments are uploaded, how large they may be, how long they are kept and which
//! bucket holds them (PROTOCOL.md 12.3 and "0 (additions)").

use super::file::FileConfig;
use super::{ConfigError, Secret};
use crate::domain::attachments::DEFAULT_MAX_ATTACHMENT_BYTES;

/// Objects under `attachments/` expire after 45 days unless configured otherwise: longer than
/// the 30-day queue TTL, so a queued pointer never outlives its blob.
pub const DEFAULT_RETENTION_DAYS: u32 = 45;
/// The longest retention accepted (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// An S3-compatible bucket (`SEALPOST_S3_*`). `Debug` shows no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// `SEALPOST_S3_ENDPOINT`: the service's http(s) base URL, without the bucket.
    pub endpoint: String,
    /// `SEALPOST_S3_REGION`, default `us-east-1` (what MinIO and Garage accept by default).
    pub region: String,
    /// `SEALPOST_S3_BUCKET`.
    pub bucket: String,
    /// `SEALPOST_S3_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `SEALPOST_S3_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret,
    /// `SEALPOST_S3_PATH_STYLE`: `<endpoint>/<bucket>/<key>` (on, the default: MinIO, Garage,
    /// Ceph) or `<bucket>.<endpoint host>/<key>` (off: AWS, R2).
    pub path_style: bool,
}

/// 64 uploads at once per pod: at most 320 MiB of parts in memory.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 64;

/// What the upload form hands out.
#[derive(Clone, Debug)]
pub struct AttachmentsConfig {
    /// `SEALPOST_PUBLIC_URL`: the server's externally visible base URL; unset:
    /// `http://<listen address>` with the port actually bound.
    pub public_url: Option<String>,
    /// `SEALPOST_ATTACHMENTS_URL`: the cdn-3 base (TUS uploads and downloads); unset: the
    /// public URL.
    pub attachments_url: Option<String>,
    /// `SEALPOST_CDN0_URL`: the cdn-0 base avatars are posted to and read from; unset: the
    /// bucket's URL with a bucket, else `<public URL>/cdn0` (PROTOCOL.md "0 (additions)").
    pub cdn0_url: Option<String>,
    /// `SEALPOST_MAX_ATTACHMENT_BYTES`.
    pub max_bytes: u64,
    /// `SEALPOST_S3_*`: the bucket attachments live in; None: a directory under the data
    /// directory (memory in the embedded mode).
    pub s3: Option<S3Config>,
    /// `SEALPOST_ATTACHMENT_RETENTION_DAYS`: how long an attachment is kept.
    pub retention_days: u32,
    /// `SEALPOST_ATTACHMENTS_REDIRECT`: downloads answer 302 to a presigned S3 GET.
    pub redirect: bool,
    /// How often the sweeper runs (daily; tests shorten it).
    pub sweep_interval: std::time::Duration,
    /// Upload requests one pod streams at once (each may hold one 5 MiB part); more get
    /// 503 with `Retry-After`.
    pub max_concurrent_uploads: usize,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            attachments_url: None,
            cdn0_url: None,
            max_bytes: DEFAULT_MAX_ATTACHMENT_BYTES,
            s3: None,
            retention_days: DEFAULT_RETENTION_DAYS,
            redirect: false,
            sweep_interval: std::time::Duration::from_secs(24 * 3600),
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
        }
    }
}

impl AttachmentsConfig {
    pub fn retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.retention_days) * 24 * 3600)
    }

    /// The public base URL for a server whose public listener is bound at `bound`.
    pub fn public_base(&self, bound: std::net::SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
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

/// The `SEALPOST_S3_*` values, checked: all or nothing around the endpoint, and each problem
/// named by its variable without printing a key.
pub(super) fn s3(raw: &FileConfig) -> Result<Option<S3Config>, ConfigError> {
    let Some(endpoint) = &raw.s3_endpoint else {
        let stray = [
            ("SEALPOST_S3_BUCKET", raw.s3_bucket.is_some()),
            ("SEALPOST_S3_ACCESS_KEY_ID", raw.s3_access_key_id.is_some()),
            (
                "SEALPOST_S3_SECRET_ACCESS_KEY",
                raw.s3_secret_access_key.is_some(),
            ),
        ];
        if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
            return Err(ConfigError::new(format!(
                "{name} is set but SEALPOST_S3_ENDPOINT is not: set the endpoint to use a bucket"
            )));
        }
        return Ok(None);
    };
    let endpoint = base_url("SEALPOST_S3_ENDPOINT", endpoint)?;
    let bucket = raw.s3_bucket.clone().ok_or_else(|| {
        ConfigError::new("SEALPOST_S3_ENDPOINT is set but SEALPOST_S3_BUCKET is not")
    })?;
    if !valid_bucket_name(&bucket) {
        return Err(ConfigError::new(format!(
            "SEALPOST_S3_BUCKET={bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, \
             digits, dots and hyphens, starting and ending with a letter or digit)"
        )));
    }
    let (access_key_id, secret) = match (&raw.s3_access_key_id, &raw.s3_secret_access_key) {
        (Some(id), Some(secret)) => (id.clone(), secret.clone()),
        (None, _) => {
            return Err(ConfigError::new(
                "SEALPOST_S3_ENDPOINT is set but SEALPOST_S3_ACCESS_KEY_ID is not",
            ));
        }
        (_, None) => {
            return Err(ConfigError::new(
                "SEALPOST_S3_ENDPOINT is set but SEALPOST_S3_SECRET_ACCESS_KEY is not",
            ));
        }
    };
    let region = raw.s3_region.clone().unwrap_or_else(|| "us-east-1".into());
    if region.trim().is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ConfigError::new(format!(
            "SEALPOST_S3_REGION={region:?} is not a region name"
        )));
    }
    Ok(Some(S3Config {
        endpoint,
        region,
        bucket,
        access_key_id,
        secret_access_key: Secret::new(secret),
        path_style: raw.s3_path_style.unwrap_or(true),
    }))
}

/// S3's rules for new bucket names: 3 to 63 of `[a-z0-9.-]`, a letter or digit at each end,
/// no `..`, not an IPv4 address.
pub fn valid_bucket_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(name.chars().next())
        && edge(name.chars().last())
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

/// `SEALPOST_ATTACHMENT_RETENTION_DAYS`, within 1..=3650.
pub(super) fn retention_days(raw: Option<u32>) -> Result<u32, ConfigError> {
    match raw {
        None => Ok(DEFAULT_RETENTION_DAYS),
        Some(days) if (1..=MAX_RETENTION_DAYS).contains(&days) => Ok(days),
        Some(days) => Err(ConfigError::new(format!(
            "attachment_retention_days (SEALPOST_ATTACHMENT_RETENTION_DAYS) = {days}: expected \
             1 to {MAX_RETENTION_DAYS}"
        ))),
    }
}
