//! From the file overlaid by the environment to a [`Config`]: defaults for what is unset,
//! and every value checked, each problem phrased for the operator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::file::FileConfig;
use super::{AttachmentsConfig, Clock, DEFAULT_DATA_DIR};
use super::{
    Config, ConfigError, DEFAULT_MAX_CONNECTIONS_PER_CLIENT, DEFAULT_MAX_WEBSOCKETS,
    DEFAULT_MAX_WEBSOCKETS_PER_CLIENT, DEFAULT_QUEUE_MAX_BYTES, DEFAULT_QUEUE_MAX_MESSAGES,
    DEFAULT_QUEUE_TTL, DEFAULT_REQUEST_BODY_TIMEOUT, DEFAULT_REQUEST_HEAD_TIMEOUT,
    DEFAULT_SENDER_CERTIFICATE_TTL, DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
    DEFAULT_WEBSOCKET_WRITE_TIMEOUT, LogFormat, RateLimitsConfig, RegistrationMode, SecretUrl,
    StoreConfig,
};
use crate::limits::{BucketSpec, Limit};

fn parse_addr(value: Option<String>, default: &str, name: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    value.trim().parse().map_err(|_| {
        ConfigError::new(format!(
            "{name} = {value:?} is not a socket address (expected host:port, e.g. 127.0.0.1:8080)"
        ))
    })
}

pub(super) fn validate(raw: FileConfig) -> Result<Config, ConfigError> {
    let s3 = super::attachments::s3(&raw)?;
    let registration: RegistrationMode = match &raw.registration {
        Some(mode) => mode.parse().map_err(|e: crate::domain::DomainError| {
            ConfigError::new(format!("SEALPOST_REGISTRATION: {e}"))
        })?,
        None => RegistrationMode::Open,
    };
    let listen = parse_addr(raw.listen, "127.0.0.1:8080", "listen (SEALPOST_LISTEN)")?;
    let admin_listen = parse_addr(
        raw.admin_listen,
        "127.0.0.1:9090",
        "admin_listen (SEALPOST_ADMIN_LISTEN)",
    )?;
    if listen == admin_listen && listen.port() != 0 {
        return Err(ConfigError::new(format!(
            "listen and admin_listen are both {listen}: they must differ"
        )));
    }

    let stores = match (raw.database_url, raw.redis_url) {
        (None, None) => StoreConfig::Embedded,
        (Some(db), Some(redis)) => {
            if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
                return Err(ConfigError::new(
                    "database_url (SEALPOST_DATABASE_URL) must start with postgres://",
                ));
            }
            if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    "redis_url (SEALPOST_REDIS_URL) must start with redis://",
                ));
            }
            let pool = raw.database_pool_size.unwrap_or(16);
            if pool == 0 {
                return Err(ConfigError::new("database_pool_size must be at least 1"));
            }
            StoreConfig::External {
                database_url: SecretUrl::new(db),
                database_pool_size: pool,
                redis_url: SecretUrl::new(redis),
                redis_key_prefix: raw.redis_key_prefix.unwrap_or_else(|| "sealpost:".into()),
            }
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                "SEALPOST_DATABASE_URL is set but SEALPOST_REDIS_URL is not: set both for \
                 production, or neither for the embedded in-memory mode",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "SEALPOST_REDIS_URL is set but SEALPOST_DATABASE_URL is not: set both for \
                 production, or neither for the embedded in-memory mode",
            ));
        }
    };
    if registration == RegistrationMode::Token && matches!(stores, StoreConfig::Embedded) {
        return Err(ConfigError::new(
            "SEALPOST_REGISTRATION=token needs the external stores: invite tokens live in \
             Postgres, where `sealpost admin tokens create` writes them",
        ));
    }

    let mut specs: BTreeMap<Limit, BucketSpec> =
        Limit::ALL.iter().map(|l| (*l, l.default_spec())).collect();
    for (name, bucket) in raw.rate_limits.limits {
        let limit = Limit::from_name(&name).ok_or_else(|| {
            let known: Vec<_> = Limit::ALL.iter().map(|l| l.name()).collect();
            ConfigError::new(format!(
                "[rate_limits.{name}]: no such limit (known: {})",
                known.join(", ")
            ))
        })?;
        let spec = specs.get_mut(&limit).expect("every limit has a default");
        if let Some(size) = bucket.bucket_size {
            if size == 0 {
                return Err(ConfigError::new(format!(
                    "[rate_limits.{name}] bucket_size must be at least 1"
                )));
            }
            spec.bucket_size = size;
        }
        if let Some(ms) = bucket.permit_period_ms {
            if !(ms.is_finite() && ms > 0.0) {
                return Err(ConfigError::new(format!(
                    "[rate_limits.{name}] permit_period_ms must be a positive number"
                )));
            }
            spec.permit_period_ms = ms;
        }
    }

    if raw.sender_certificate_ttl_secs == Some(0) {
        return Err(ConfigError::new(
            "sender_certificate_ttl_secs must be at least 1",
        ));
    }
    if raw.websocket_idle_timeout_secs == Some(0) {
        return Err(ConfigError::new(
            "websocket_idle_timeout_secs must be at least 1",
        ));
    }
    if raw.max_websockets == Some(0) {
        return Err(ConfigError::new("max_websockets must be at least 1"));
    }
    if raw.websocket_write_timeout_secs == Some(0) {
        return Err(ConfigError::new(
            "websocket_write_timeout_secs must be at least 1",
        ));
    }
    if raw.request_head_timeout_secs == Some(0) {
        return Err(ConfigError::new(
            "request_head_timeout_secs must be at least 1",
        ));
    }
    if raw.request_body_timeout_secs == Some(0) {
        return Err(ConfigError::new(
            "request_body_timeout_secs must be at least 1",
        ));
    }
    if raw.queue_ttl_secs == Some(0) {
        return Err(ConfigError::new("queue_ttl_secs must be at least 1"));
    }
    if raw.queue_max_messages == Some(0) {
        return Err(ConfigError::new("queue_max_messages must be at least 1"));
    }
    if raw.queue_max_bytes == Some(0) {
        return Err(ConfigError::new("queue_max_bytes must be at least 1"));
    }
    let attachments = AttachmentsConfig {
        public_url: match &raw.public_url {
            Some(url) => Some(super::attachments::base_url("SEALPOST_PUBLIC_URL", url)?),
            None => None,
        },
        attachments_url: match &raw.attachments_url {
            Some(url) => Some(super::attachments::base_url(
                "SEALPOST_ATTACHMENTS_URL",
                url,
            )?),
            None => None,
        },
        cdn0_url: match &raw.cdn0_url {
            Some(url) => Some(super::attachments::base_url("SEALPOST_CDN0_URL", url)?),
            None => None,
        },
        max_bytes: match raw.max_attachment_bytes {
            Some(0) => return Err(ConfigError::new("max_attachment_bytes must be at least 1")),
            Some(n) => n,
            None => crate::domain::attachments::DEFAULT_MAX_ATTACHMENT_BYTES,
        },
        s3,
        retention_days: super::attachments::retention_days(raw.attachment_retention_days)?,
        redirect: raw.attachments_redirect.unwrap_or(false),
        ..AttachmentsConfig::default()
    };
    if attachments.redirect && attachments.s3.is_none() {
        return Err(ConfigError::new(
            "SEALPOST_ATTACHMENTS_REDIRECT=on needs an S3 bucket (SEALPOST_S3_ENDPOINT and the \
             rest): only a bucket can presign the URL a download is redirected to",
        ));
    }
    if raw.workers == Some(0) {
        return Err(ConfigError::new("workers must be at least 1"));
    }

    Ok(Config {
        listen,
        admin_listen,
        stores,
        certificate_dir: raw.certificate_dir,
        rate_limits: RateLimitsConfig {
            enabled: raw.rate_limits.enabled.unwrap_or(true),
            specs,
        },
        workers: raw.workers,
        shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs.unwrap_or(30)),
        trust_forwarded_for: raw.trust_forwarded_for.unwrap_or(false),
        webpush_allow_private: raw.webpush_allow_private.unwrap_or(false),
        registration,
        push: super::push::validate(raw.push)?,
        turn: super::calling::validate(raw.turn)?,
        attachments,
        data_dir: raw
            .data_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        clock: Clock::default(),
        log_format: raw.log_format.unwrap_or(LogFormat::Text),
        queue_ttl: raw
            .queue_ttl_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_QUEUE_TTL),
        queue_max_messages: raw.queue_max_messages.unwrap_or(DEFAULT_QUEUE_MAX_MESSAGES),
        queue_max_bytes: raw.queue_max_bytes.unwrap_or(DEFAULT_QUEUE_MAX_BYTES),
        websocket_idle_timeout: raw
            .websocket_idle_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_WEBSOCKET_IDLE_TIMEOUT),
        max_websockets: raw.max_websockets.unwrap_or(DEFAULT_MAX_WEBSOCKETS),
        websocket_write_timeout: raw
            .websocket_write_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_WEBSOCKET_WRITE_TIMEOUT),
        sender_certificate_ttl: raw
            .sender_certificate_ttl_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_SENDER_CERTIFICATE_TTL),
        request_head_timeout: raw
            .request_head_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_REQUEST_HEAD_TIMEOUT),
        request_body_timeout: raw
            .request_body_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_REQUEST_BODY_TIMEOUT),
        max_websockets_per_client: raw
            .max_websockets_per_client
            .unwrap_or(DEFAULT_MAX_WEBSOCKETS_PER_CLIENT),
        max_connections_per_client: raw
            .max_connections_per_client
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
    })
}
