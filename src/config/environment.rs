//! The `SEALPOST_*` environment variables, overlaid on the file: a variable that is set
//! (and not empty) wins over the file's value.

use std::path::PathBuf;

use super::file::FileConfig;
use super::{ConfigError, LogFormat};

/// Reads a variable, treating an empty value as unset (compose files often pass `VAR=`).
fn var(env: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

/// A switch: `on` or `off`.
fn on_off_var(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<bool>, ConfigError> {
    match var(env, name) {
        None => Ok(None),
        Some(v) => match v.trim() {
            "on" => Ok(Some(true)),
            "off" => Ok(Some(false)),
            other => Err(ConfigError::new(format!(
                "{name}={other:?}: expected \"on\" or \"off\""
            ))),
        },
    }
}

fn parse_var<T: std::str::FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, ConfigError> {
    match var(env, name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::new(format!("{name}={v:?} is not {what}"))),
    }
}

pub(super) fn overlay_env(
    raw: &mut FileConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = var(env, "SEALPOST_LISTEN") {
        raw.listen = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_ADMIN_LISTEN") {
        raw.admin_listen = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_DATABASE_URL") {
        raw.database_url = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_REDIS_URL") {
        raw.redis_url = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_REDIS_KEY_PREFIX") {
        raw.redis_key_prefix = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_CERTIFICATE_DIR") {
        raw.certificate_dir = Some(PathBuf::from(v));
    }
    if let Some(v) = on_off_var(env, "SEALPOST_RATE_LIMITS")? {
        raw.rate_limits.enabled = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_REGISTRATION") {
        raw.registration = Some(v);
    }
    if let Some(v) = on_off_var(env, "SEALPOST_WEBPUSH_ALLOW_PRIVATE")? {
        raw.webpush_allow_private = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_DATABASE_POOL_SIZE", "a whole number")? {
        raw.database_pool_size = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_WORKERS", "a whole number")? {
        raw.workers = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_SHUTDOWN_TIMEOUT_SECS", "a whole number")? {
        raw.shutdown_timeout_secs = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_QUEUE_TTL_SECS", "a whole number")? {
        raw.queue_ttl_secs = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_QUEUE_MAX_MESSAGES", "a whole number")? {
        raw.queue_max_messages = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_QUEUE_MAX_BYTES", "a whole number")? {
        raw.queue_max_bytes = Some(v);
    }
    if let Some(v) = parse_var(
        env,
        "SEALPOST_WEBSOCKET_IDLE_TIMEOUT_SECS",
        "a whole number",
    )? {
        raw.websocket_idle_timeout_secs = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_MAX_WEBSOCKETS", "a whole number")? {
        raw.max_websockets = Some(v);
    }
    if let Some(v) = parse_var(
        env,
        "SEALPOST_WEBSOCKET_WRITE_TIMEOUT_SECS",
        "a whole number",
    )? {
        raw.websocket_write_timeout_secs = Some(v);
    }
    if let Some(v) = parse_var(
        env,
        "SEALPOST_SENDER_CERTIFICATE_TTL_SECS",
        "a whole number",
    )? {
        raw.sender_certificate_ttl_secs = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_REQUEST_HEAD_TIMEOUT_SECS", "a whole number")? {
        raw.request_head_timeout_secs = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_REQUEST_BODY_TIMEOUT_SECS", "a whole number")? {
        raw.request_body_timeout_secs = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_MAX_WEBSOCKETS_PER_CLIENT", "a whole number")? {
        raw.max_websockets_per_client = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_MAX_CONNECTIONS_PER_CLIENT", "a whole number")? {
        raw.max_connections_per_client = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_TRUST_FORWARDED_FOR", "true or false")? {
        raw.trust_forwarded_for = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_DATA_DIR") {
        raw.data_dir = Some(PathBuf::from(v));
    }
    if let Some(v) = var(env, "SEALPOST_PUBLIC_URL") {
        raw.public_url = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_ATTACHMENTS_URL") {
        raw.attachments_url = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_CDN0_URL") {
        raw.cdn0_url = Some(v);
    }
    if let Some(v) = parse_var(env, "SEALPOST_MAX_ATTACHMENT_BYTES", "a whole number")? {
        raw.max_attachment_bytes = Some(v);
    }
    if let Some(v) = parse_var(
        env,
        "SEALPOST_ATTACHMENT_RETENTION_DAYS",
        "a whole number of days",
    )? {
        raw.attachment_retention_days = Some(v);
    }
    if let Some(v) = on_off_var(env, "SEALPOST_ATTACHMENTS_REDIRECT")? {
        raw.attachments_redirect = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_S3_ENDPOINT") {
        raw.s3_endpoint = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_S3_REGION") {
        raw.s3_region = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_S3_BUCKET") {
        raw.s3_bucket = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_S3_ACCESS_KEY_ID") {
        raw.s3_access_key_id = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_S3_SECRET_ACCESS_KEY") {
        raw.s3_secret_access_key = Some(v);
    }
    if let Some(v) = var(env, "SEALPOST_S3_PATH_STYLE") {
        // Never echo a value here: someone may have pasted a key into the wrong variable.
        raw.s3_path_style = Some(match v.trim() {
            "on" | "true" => true,
            "off" | "false" => false,
            _ => {
                return Err(ConfigError::new(
                    "SEALPOST_S3_PATH_STYLE: expected on, off, true or false",
                ));
            }
        });
    }
    super::push::overlay_env(&mut raw.push, &|name| var(env, name), &|name| {
        on_off_var(env, name)
    })?;
    super::calling::overlay_env(&mut raw.turn, &|name| var(env, name))?;
    if let Some(v) = var(env, "SEALPOST_LOG_FORMAT") {
        raw.log_format = Some(match v.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(format!(
                    "SEALPOST_LOG_FORMAT={other:?}: expected \"text\" or \"json\""
                )));
            }
        });
    }
    Ok(())
}
