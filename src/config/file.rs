//! The configuration file as written: every field optional, so that the environment can
//! fill it in; `validate` gives the defaults and checks the values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::LogFormat;

/// The file as written; every field optional so that the environment can fill it in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) database_url: Option<String>,
    pub(super) database_pool_size: Option<usize>,
    pub(super) redis_url: Option<String>,
    pub(super) redis_key_prefix: Option<String>,
    pub(super) certificate_dir: Option<PathBuf>,
    pub(super) workers: Option<usize>,
    pub(super) shutdown_timeout_secs: Option<u64>,
    pub(super) trust_forwarded_for: Option<bool>,
    pub(super) webpush_allow_private: Option<bool>,
    pub(super) registration: Option<String>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) queue_ttl_secs: Option<u64>,
    pub(super) queue_max_messages: Option<u64>,
    pub(super) queue_max_bytes: Option<u64>,
    pub(super) websocket_idle_timeout_secs: Option<u64>,
    pub(super) max_websockets: Option<usize>,
    pub(super) websocket_write_timeout_secs: Option<u64>,
    pub(super) sender_certificate_ttl_secs: Option<u64>,
    pub(super) request_head_timeout_secs: Option<u64>,
    pub(super) request_body_timeout_secs: Option<u64>,
    pub(super) max_websockets_per_client: Option<usize>,
    pub(super) max_connections_per_client: Option<usize>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) public_url: Option<String>,
    pub(super) attachments_url: Option<String>,
    pub(super) cdn0_url: Option<String>,
    pub(super) max_attachment_bytes: Option<u64>,
    pub(super) attachment_retention_days: Option<u32>,
    pub(super) attachments_redirect: Option<bool>,
    pub(super) s3_endpoint: Option<String>,
    pub(super) s3_region: Option<String>,
    pub(super) s3_bucket: Option<String>,
    pub(super) s3_access_key_id: Option<String>,
    pub(super) s3_secret_access_key: Option<String>,
    pub(super) s3_path_style: Option<bool>,
    #[serde(default)]
    pub(super) rate_limits: FileRateLimits,
    #[serde(default)]
    pub(super) push: super::push::FilePush,
    #[serde(default)]
    pub(super) turn: super::calling::FileTurn,
}

// No `deny_unknown_fields` here: serde does not support it with `flatten`; unknown limit
// names are rejected in `validate` instead.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FileRateLimits {
    pub(super) enabled: Option<bool>,
    #[serde(flatten)]
    pub(super) limits: BTreeMap<String, FileBucket>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileBucket {
    pub(super) bucket_size: Option<u64>,
    pub(super) permit_period_ms: Option<f64>,
}
