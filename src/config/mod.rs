//! Typed configuration: an optional TOML file overlaid by `SEALPOST_*` variables, validated
//! once at start and then passed explicitly. Owns parsing and validation; never prints secrets.
//!
//! `file` is the TOML file as written, `environment` overlays the `SEALPOST_*` variables on
//! it, `validate` turns the result into a [`Config`] (defaults, ranges, the store pairing),
//! and `secret` holds [`SecretUrl`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::limits::Limit;

mod attachments;
mod calling;
mod environment;
mod file;
mod push;
mod secret;
mod validate;

pub use attachments::{AttachmentsConfig, S3Config};
pub use calling::{DEFAULT_TURN_TTL, DEFAULT_TURN_URLS_WITH_IPS, TurnConfig};
pub use push::{ApnsConfig, DEFAULT_VAPID_SUBJECT, PushConfig};
pub use secret::{Secret, SecretUrl};

pub use crate::domain::clock::Clock;
pub use crate::domain::invites::RegistrationMode;

/// `SEALPOST_DATA_DIR`'s default, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "data";

use file::FileConfig;

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
    /// Accept WebPush endpoints that resolve to loopback, private or link-local addresses
    /// (a push distributor on the LAN); off by default (PROTOCOL.md 11.8).
    pub webpush_allow_private: bool,
    /// Who may register: anyone (`open`), holders of an invite token (`token`), nobody
    /// (`closed`).
    pub registration: RegistrationMode,
    /// Push providers and their credentials.
    pub push: PushConfig,
    /// Calling relays (coturn); `None` = `GET /v2/calling/relays` answers no relays.
    pub turn: Option<TurnConfig>,
    /// The public base URLs and the attachment size limit.
    pub attachments: AttachmentsConfig,
    /// `SEALPOST_DATA_DIR`: where the external mode keeps attachments (`objects/`) until an
    /// S3 bucket is configured; every pod must see the same directory.
    pub data_dir: PathBuf,
    /// The wall clock wake-up schedules read (PROTOCOL.md 11.4); tests move it forward.
    pub clock: Clock,
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

/// A configuration problem, phrased for the operator who has to fix it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
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
        environment::overlay_env(&mut raw, &env)?;
        validate::validate(raw)
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
            webpush_allow_private: false,
            push: PushConfig::default(),
            registration: RegistrationMode::Open,
            turn: None,
            attachments: AttachmentsConfig::default(),
            data_dir: DEFAULT_DATA_DIR.into(),
            clock: Clock::default(),
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
    fn turn_relays_need_a_secret_and_urls_and_never_show_the_secret() {
        let none = Config::load_with(None, env(&[])).unwrap();
        assert!(none.turn.is_none());
        let secret = "a-shared-coturn-secret";
        let config = Config::load_with(
            None,
            env(&[
                ("SEALPOST_TURN_SECRET", secret),
                (
                    "SEALPOST_TURN_URLS",
                    "turn:turn.example.org, turns:turn.example.org:443",
                ),
                ("SEALPOST_TURN_HOSTNAME", "turn.example.org"),
                ("SEALPOST_TURN_TTL", "3600"),
            ]),
        )
        .unwrap();
        let turn = config.turn.as_ref().expect("relays configured");
        assert_eq!(
            turn.urls,
            ["turn:turn.example.org", "turns:turn.example.org:443"]
        );
        assert_eq!(turn.urls_with_ips, DEFAULT_TURN_URLS_WITH_IPS);
        assert_eq!(turn.ttl, Duration::from_secs(3600));
        assert!(!format!("{config:?}").contains(secret));
        // The same as the file's `[turn]` table.
        let dir = std::env::temp_dir().join(format!("sealpost-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sealpost.toml");
        std::fs::write(
            &file,
            format!("[turn]\nsecret = \"{secret}\"\nurls = [\"turn:t.example:3478\"]\nttl_seconds = 60\n"),
        )
        .unwrap();
        let from_file = Config::load_with(Some(&file), env(&[])).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let turn = from_file.turn.expect("relays from the file");
        assert_eq!((turn.urls.len(), turn.ttl.as_secs()), (1, 60));
        for (pairs, expected) in [
            (
                vec![("SEALPOST_TURN_URLS", "turn:x")],
                "SEALPOST_TURN_SECRET",
            ),
            (vec![("SEALPOST_TURN_SECRET", secret)], "SEALPOST_TURN_URLS"),
            (
                vec![
                    ("SEALPOST_TURN_SECRET", "short"),
                    ("SEALPOST_TURN_URLS", "turn:x"),
                ],
                "16",
            ),
            (
                vec![
                    ("SEALPOST_TURN_SECRET", secret),
                    ("SEALPOST_TURN_URLS", "http://x"),
                ],
                "turn:",
            ),
            (
                vec![
                    ("SEALPOST_TURN_SECRET", secret),
                    ("SEALPOST_TURN_URLS", "turn:x"),
                    ("SEALPOST_TURN_URLS_WITH_IPS", "turn:x"),
                ],
                "%s",
            ),
            (
                vec![
                    ("SEALPOST_TURN_SECRET", secret),
                    ("SEALPOST_TURN_URLS", "turn:x"),
                    ("SEALPOST_TURN_TTL", "0"),
                ],
                "SEALPOST_TURN_TTL",
            ),
        ] {
            let err = Config::load_with(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{pairs:?}: {err}");
            assert!(!err.contains(secret), "{err}");
        }
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
        let err = Config::load_with(None, env(&[("SEALPOST_WEBPUSH_ALLOW_PRIVATE", "yes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SEALPOST_WEBPUSH_ALLOW_PRIVATE"), "{err}");
        let allowed =
            Config::load_with(None, env(&[("SEALPOST_WEBPUSH_ALLOW_PRIVATE", "on")])).unwrap();
        assert!(allowed.webpush_allow_private);
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

    #[test]
    fn push_providers_are_optional_and_apns_needs_all_four_values() {
        let none = Config::load_with(None, env(&[])).unwrap();
        assert!(none.push.fcm_credentials_file.is_none() && none.push.apns.is_none());
        assert_eq!(none.push.vapid_subject, DEFAULT_VAPID_SUBJECT);
        let err = Config::load_with(None, env(&[("SEALPOST_APNS_KEY_FILE", "/k.p8")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SEALPOST_APNS_BUNDLE_ID"), "{err}");
        let apns = Config::load_with(
            None,
            env(&[
                ("SEALPOST_APNS_KEY_FILE", "/k.p8"),
                ("SEALPOST_APNS_KEY_ID", "KEY"),
                ("SEALPOST_APNS_TEAM_ID", "TEAM"),
                ("SEALPOST_APNS_BUNDLE_ID", "org.example.app"),
                ("SEALPOST_APNS_SANDBOX", "on"),
                ("SEALPOST_FCM_CREDENTIALS_FILE", "/fcm.json"),
            ]),
        )
        .unwrap();
        let settings = apns.push.apns.expect("APNs configured");
        assert!(settings.sandbox);
        assert_eq!(settings.bundle_id, "org.example.app");
        assert_eq!(
            apns.push.fcm_credentials_file.as_deref(),
            Some(Path::new("/fcm.json"))
        );
    }

    #[test]
    fn a_vapid_subject_must_be_a_contact() {
        let err = Config::load_with(None, env(&[("SEALPOST_VAPID_SUBJECT", "admin")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SEALPOST_VAPID_SUBJECT"), "{err}");
        let ok = Config::load_with(
            None,
            env(&[("SEALPOST_VAPID_SUBJECT", "mailto:ops@example.org")]),
        )
        .unwrap();
        assert_eq!(ok.push.vapid_subject, "mailto:ops@example.org");
    }

    const S3: &[(&str, &str)] = &[
        ("SEALPOST_S3_ENDPOINT", "http://minio:9000/"),
        ("SEALPOST_S3_BUCKET", "sealpost-attachments"),
        ("SEALPOST_S3_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("SEALPOST_S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-hunter2"),
    ];

    #[test]
    fn a_bucket_is_configured_by_its_endpoint_with_defaults_and_a_hidden_secret() {
        let none = Config::load_with(None, env(&[])).unwrap();
        assert!(none.attachments.s3.is_none());
        assert_eq!(none.attachments.retention_days, 45);
        assert!(!none.attachments.redirect);
        let config = Config::load_with(None, env(S3)).unwrap();
        let s3 = config.attachments.s3.clone().expect("a bucket");
        assert_eq!(s3.endpoint, "http://minio:9000");
        assert_eq!(s3.region, "us-east-1");
        assert!(s3.path_style);
        assert_eq!(s3.secret_access_key.expose(), "wJalrXUtnFEMI-hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(format!("{}", s3.secret_access_key), "***");
        let mut more = S3.to_vec();
        more.extend([
            ("SEALPOST_S3_PATH_STYLE", "false"),
            ("SEALPOST_S3_REGION", "eu-west-1"),
            ("SEALPOST_ATTACHMENTS_REDIRECT", "on"),
            ("SEALPOST_ATTACHMENT_RETENTION_DAYS", "90"),
        ]);
        let config = Config::load_with(None, env(&more)).unwrap();
        let s3 = config.attachments.s3.expect("a bucket");
        assert!(!s3.path_style);
        assert_eq!(s3.region, "eu-west-1");
        assert!(config.attachments.redirect);
        assert_eq!(config.attachments.retention_days, 90);
    }

    #[test]
    fn a_bucket_with_a_missing_or_bad_value_is_refused_by_name_without_the_secret() {
        for missing in [
            "SEALPOST_S3_BUCKET",
            "SEALPOST_S3_ACCESS_KEY_ID",
            "SEALPOST_S3_SECRET_ACCESS_KEY",
        ] {
            let partial: Vec<_> = S3.iter().copied().filter(|(k, _)| *k != missing).collect();
            let err = Config::load_with(None, env(&partial))
                .unwrap_err()
                .to_string();
            assert!(err.contains(missing), "{err}");
            assert!(
                !err.contains("hunter2") && !err.contains("AKIDEXAMPLE"),
                "{err}"
            );
        }
        let keys_only = [("SEALPOST_S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-hunter2")];
        let err = Config::load_with(None, env(&keys_only))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SEALPOST_S3_ENDPOINT is not"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        for (name, bad) in [
            ("SEALPOST_S3_ENDPOINT", "minio:9000"),
            ("SEALPOST_S3_ENDPOINT", "ftp://minio"),
            ("SEALPOST_S3_BUCKET", "Has_Upper"),
            ("SEALPOST_S3_BUCKET", "ab"),
            ("SEALPOST_S3_BUCKET", "192.168.1.1"),
            ("SEALPOST_S3_PATH_STYLE", "hunter2"),
            ("SEALPOST_ATTACHMENT_RETENTION_DAYS", "0"),
            ("SEALPOST_ATTACHMENT_RETENTION_DAYS", "3651"),
        ] {
            let mut values: Vec<_> = S3.iter().copied().filter(|(k, _)| *k != name).collect();
            values.push((name, bad));
            let err = Config::load_with(None, env(&values))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={bad}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn redirects_need_a_bucket() {
        let err = Config::load_with(None, env(&[("SEALPOST_ATTACHMENTS_REDIRECT", "on")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SEALPOST_ATTACHMENTS_REDIRECT"), "{err}");
    }
}
