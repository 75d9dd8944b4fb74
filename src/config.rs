//! Typed configuration: an optional TOML file overlaid by `SEALPOST_*` variables, validated
//! once at start and then passed explicitly. Owns parsing and validation; never prints secrets.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::limits::{BucketSpec, Limit};

/// Queues live 30 days after their last insert unless configured otherwise.
pub const DEFAULT_QUEUE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A device queue holds at most 200,000 messages (about 6,600 a day over the 30-day TTL;
/// the `drain` load test's 100,000-message backlog fits twice) unless configured otherwise.
pub const DEFAULT_QUEUE_MAX_MESSAGES: u64 = 200_000;
/// A device queue holds at most 256 MiB unless configured otherwise: 200,000 messages of
/// about 1 KiB of content with their per-message overhead.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// WebSockets silent for 90 s are closed unless configured otherwise.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Sockets one process holds at most (BENCHMARKS.md aims at 100,000 at about 10 KiB each).
pub const DEFAULT_MAX_WEBSOCKETS: usize = 100_000;
pub const DEFAULT_WEBSOCKET_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A request's head must arrive within 5 s of the connection's first byte (actix's default).
pub const DEFAULT_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's whole body must arrive within 30 s of its head (2 MiB at 70 KB/s).
pub const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Sockets one client address holds at most (a phone holds two; a NAT shares the address).
pub const DEFAULT_MAX_WEBSOCKETS_PER_CLIENT: usize = 100;
/// TCP connections to the public listener one client address holds at most.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 200;

/// Sender certificates are valid for 7 days unless configured otherwise.
pub const DEFAULT_SENDER_CERTIFICATE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The validated configuration the composition root consumes.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub stores: StoreConfig,
    pub certificate_dir: Option<PathBuf>,
    pub rate_limits: RateLimitsConfig,
    /// HTTP worker threads per listener; `None` lets actix pick one per core.
    pub workers: Option<usize>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Take the client address from the last `X-Forwarded-For` hop (only behind a proxy
    /// that sets it), else from the TCP peer.
    pub trust_forwarded_for: bool,
    pub log_format: LogFormat,
    /// How long a device's queue lives after its last insert.
    pub queue_ttl: Duration,
    /// Messages one device queue holds at most; a send past it gets 429.
    pub queue_max_messages: u64,
    /// Bytes (content plus a per-message overhead) one device queue holds at most.
    pub queue_max_bytes: u64,
    /// A WebSocket with no frame from its client for this long is closed.
    pub websocket_idle_timeout: Duration,
    /// Open sockets (all kinds) one process accepts; further upgrades get 503.
    pub max_websockets: usize,
    /// A socket whose client reads nothing for this long while the server writes is closed.
    pub websocket_write_timeout: Duration,
    /// How long a sender certificate is valid.
    pub sender_certificate_ttl: Duration,
    /// A request head not complete this long after the connection's first byte gets 408.
    pub request_head_timeout: Duration,
    /// A request body not complete this long after its head gets 408 and its connection closes.
    pub request_body_timeout: Duration,
    /// Sockets one client address may hold (0: no cap); past it an upgrade gets 429.
    pub max_websockets_per_client: usize,
    /// TCP connections one peer address may hold on the public listener (0: no cap); a
    /// request on a connection past it gets 429 and the connection closes. Not applied when
    /// `trust_forwarded_for` is set: the peer is then the proxy.
    pub max_connections_per_client: usize,
}

/// Embedded (everything in memory) or external stores; never half of each.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    Embedded,
    External {
        database_url: SecretUrl,
        database_pool_size: usize,
        redis_url: SecretUrl,
        redis_key_prefix: String,
    },
}

pub use crate::limits::RateLimitsConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A URL that may carry a password: `Debug` and `Display` hide the credentials.
#[derive(Clone)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // scheme://user:password@host/db -> scheme://***@host/db
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                write!(f, "{}://***{}", &self.0[..scheme_end], &self.0[at..])
            }
            _ => f.write_str(&self.0),
        }
    }
}

/// A configuration problem, phrased for the operator who has to fix it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// The file as written; every field optional so that the environment can fill it in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    database_url: Option<String>,
    database_pool_size: Option<usize>,
    redis_url: Option<String>,
    redis_key_prefix: Option<String>,
    certificate_dir: Option<PathBuf>,
    workers: Option<usize>,
    shutdown_timeout_secs: Option<u64>,
    trust_forwarded_for: Option<bool>,
    log_format: Option<LogFormat>,
    queue_ttl_secs: Option<u64>,
    queue_max_messages: Option<u64>,
    queue_max_bytes: Option<u64>,
    websocket_idle_timeout_secs: Option<u64>,
    max_websockets: Option<usize>,
    websocket_write_timeout_secs: Option<u64>,
    sender_certificate_ttl_secs: Option<u64>,
    request_head_timeout_secs: Option<u64>,
    request_body_timeout_secs: Option<u64>,
    max_websockets_per_client: Option<usize>,
    max_connections_per_client: Option<usize>,
    #[serde(default)]
    rate_limits: FileRateLimits,
}

// No `deny_unknown_fields` here: serde does not support it with `flatten`; unknown limit
// names are rejected in `validate` instead.
#[derive(Debug, Default, Deserialize)]
struct FileRateLimits {
    enabled: Option<bool>,
    #[serde(flatten)]
    limits: BTreeMap<String, FileBucket>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBucket {
    bucket_size: Option<u64>,
    permit_period_ms: Option<f64>,
}

impl Config {
    /// Loads `file` (if any), overlays the process environment and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, |name| std::env::var(name).ok())
    }

    /// Like [`Config::load`] with an explicit environment, for tests.
    pub fn load_with(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(format!("cannot read {}: {e}", path.display()))
                })?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        overlay_env(&mut raw, &env)?;
        validate(raw)
    }

    /// The bounds every device queue gets.
    pub fn queue_policy(&self) -> crate::storage::QueuePolicy {
        crate::storage::QueuePolicy {
            ttl: self.queue_ttl,
            max_messages: self.queue_max_messages,
            max_bytes: self.queue_max_bytes,
        }
    }

    /// The embedded configuration on ephemeral ports, for tests and tools.
    pub fn embedded_for_tests() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            admin_listen: "127.0.0.1:0".parse().expect("literal address"),
            stores: StoreConfig::Embedded,
            certificate_dir: None,
            rate_limits: RateLimitsConfig {
                enabled: true,
                specs: Limit::ALL.iter().map(|l| (*l, l.default_spec())).collect(),
            },
            workers: Some(2),
            shutdown_timeout: Duration::from_secs(5),
            trust_forwarded_for: false,
            log_format: LogFormat::Text,
            queue_ttl: DEFAULT_QUEUE_TTL,
            queue_max_messages: DEFAULT_QUEUE_MAX_MESSAGES,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            websocket_idle_timeout: DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
            max_websockets: DEFAULT_MAX_WEBSOCKETS,
            websocket_write_timeout: DEFAULT_WEBSOCKET_WRITE_TIMEOUT,
            sender_certificate_ttl: DEFAULT_SENDER_CERTIFICATE_TTL,
            request_head_timeout: DEFAULT_REQUEST_HEAD_TIMEOUT,
            request_body_timeout: DEFAULT_REQUEST_BODY_TIMEOUT,
            // Every test client shares 127.0.0.1: tests that want these caps set them.
            max_websockets_per_client: 0,
            max_connections_per_client: 0,
        }
    }
}

/// Reads a variable, treating an empty value as unset (compose files often pass `VAR=`).
fn var(env: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
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

fn overlay_env(
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
    if let Some(v) = var(env, "SEALPOST_RATE_LIMITS") {
        raw.rate_limits.enabled = Some(match v.trim() {
            "on" => true,
            "off" => false,
            other => {
                return Err(ConfigError::new(format!(
                    "SEALPOST_RATE_LIMITS={other:?}: expected \"on\" or \"off\""
                )));
            }
        });
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

fn parse_addr(value: Option<String>, default: &str, name: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    value.trim().parse().map_err(|_| {
        ConfigError::new(format!(
            "{name} = {value:?} is not a socket address (expected host:port, e.g. 127.0.0.1:8080)"
        ))
    })
}

fn validate(raw: FileConfig) -> Result<Config, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn no_store_urls_means_embedded_mode_on_default_addresses() {
        let config = Config::load_with(None, env(&[])).unwrap();
        assert!(matches!(config.stores, StoreConfig::Embedded));
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9090");
        assert!(config.rate_limits.enabled);
    }

    #[test]
    fn only_one_store_url_is_refused_with_a_clear_message() {
        let err = Config::load_with(None, env(&[("SEALPOST_DATABASE_URL", "postgres://x/y")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SEALPOST_REDIS_URL is not"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("sealpost-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sealpost.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1000\"\n[rate_limits.registration]\nbucket_size = 99\n",
        )
        .unwrap();
        let config = Config::load_with(
            Some(&file),
            env(&[
                ("SEALPOST_LISTEN", "127.0.0.1:2000"),
                ("SEALPOST_RATE_LIMITS", "off"),
            ]),
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(config.listen.port(), 2000);
        assert!(!config.rate_limits.enabled);
        assert_eq!(
            config.rate_limits.specs[&Limit::Registration].bucket_size,
            99
        );
    }

    #[test]
    fn unknown_limit_names_and_bad_values_are_rejected() {
        let dir = std::env::temp_dir().join(format!("sealpost-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sealpost.toml");
        std::fs::write(&file, "[rate_limits.nonsense]\nbucket_size = 1\n").unwrap();
        let err = Config::load_with(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("no such limit"), "{err}");

        let err = Config::load_with(None, env(&[("SEALPOST_RATE_LIMITS", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected \"on\" or \"off\""), "{err}");
        let err = Config::load_with(None, env(&[("SEALPOST_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a socket address"), "{err}");
    }

    #[test]
    fn urls_never_show_their_password() {
        let url = SecretUrl::new("postgres://sealpost:hunter2@db:5432/sealpost");
        assert_eq!(format!("{url}"), "postgres://***@db:5432/sealpost");
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
