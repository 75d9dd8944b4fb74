//! Calling relays' configuration (PROTOCOL.md 15.2 and "0 (additions)"): a coturn
//! `use-auth-secret` shared secret, the URLs clients are given, and an optional host name
//! whose addresses fill the `urlsWithIps` templates. Unset secret = no relays.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret};

/// Credentials are valid for 12 hours unless configured otherwise (Signal's client TTL).
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(43_200);
/// Signal's `urlsWithIps` templates (`service/config/sample.yml`), used when a host name is
/// set and no templates are given.
pub const DEFAULT_TURN_URLS_WITH_IPS: [&str; 3] = [
    "turn:%s",
    "turn:%s:80?transport=tcp",
    "turns:%s:443?transport=tcp",
];
/// At most this many URLs or templates, each at most this long: a relay entry stays small.
const MAX_URLS: usize = 16;
const MAX_URL_CHARS: usize = 256;

/// The `[turn]` table of the file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTurn {
    pub(super) secret: Option<String>,
    pub(super) urls: Option<Vec<String>>,
    pub(super) urls_with_ips: Option<Vec<String>>,
    pub(super) hostname: Option<String>,
    pub(super) ttl_seconds: Option<u64>,
}

/// Where clients find a TURN relay and the secret its credentials are made with.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// `SEALPOST_TURN_SECRET`: coturn's `static-auth-secret`.
    pub secret: Secret,
    /// `SEALPOST_TURN_URLS`: `turn:`/`turns:` URLs, comma-separated in the environment.
    pub urls: Vec<String>,
    /// `SEALPOST_TURN_URLS_WITH_IPS`: templates in which `%s` stands for each address of
    /// `hostname`.
    pub urls_with_ips: Vec<String>,
    /// `SEALPOST_TURN_HOSTNAME`: resolved for `urlsWithIps`, and given to clients so they can
    /// check TLS on the IP URLs.
    pub hostname: Option<String>,
    /// `SEALPOST_TURN_TTL` (seconds): what clients are told; a credential is valid twice as long.
    pub ttl: Duration,
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub(super) fn overlay_env(
    raw: &mut FileTurn,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = var("SEALPOST_TURN_SECRET") {
        raw.secret = Some(v);
    }
    if let Some(v) = var("SEALPOST_TURN_URLS") {
        raw.urls = Some(list(&v));
    }
    if let Some(v) = var("SEALPOST_TURN_URLS_WITH_IPS") {
        raw.urls_with_ips = Some(list(&v));
    }
    if let Some(v) = var("SEALPOST_TURN_HOSTNAME") {
        raw.hostname = Some(v.trim().to_owned()).filter(|h| !h.is_empty());
    }
    if let Some(v) = var("SEALPOST_TURN_TTL") {
        raw.ttl_seconds = Some(v.trim().parse().map_err(|_| {
            ConfigError::new("SEALPOST_TURN_TTL must be a whole number of seconds")
        })?);
    }
    Ok(())
}

fn check_url(name: &str, url: &str, template: bool) -> Result<(), ConfigError> {
    let scheme_ok = ["turn:", "turns:", "stun:"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok || url.chars().count() > MAX_URL_CHARS || url.chars().any(char::is_whitespace) {
        return Err(ConfigError::new(format!(
            "{name}: {url:?} must be a turn:, turns: or stun: URL of at most {MAX_URL_CHARS} characters"
        )));
    }
    if template && url.matches("%s").count() != 1 {
        return Err(ConfigError::new(format!(
            "{name}: {url:?} must hold %s exactly once (where an address goes)"
        )));
    }
    Ok(())
}

pub(super) fn validate(raw: FileTurn) -> Result<Option<TurnConfig>, ConfigError> {
    let Some(secret) = raw.secret else {
        if raw.urls.is_some() || raw.hostname.is_some() || raw.urls_with_ips.is_some() {
            return Err(ConfigError::new(
                "TURN relays need SEALPOST_TURN_SECRET (coturn's static-auth-secret) with \
                 SEALPOST_TURN_URLS",
            ));
        }
        return Ok(None);
    };
    if secret.len() < 16 {
        return Err(ConfigError::new(
            "SEALPOST_TURN_SECRET must be at least 16 characters",
        ));
    }
    let urls = raw.urls.unwrap_or_default();
    if urls.is_empty() || urls.len() > MAX_URLS {
        return Err(ConfigError::new(format!(
            "SEALPOST_TURN_URLS must name 1 to {MAX_URLS} relay URLs"
        )));
    }
    for url in &urls {
        check_url("SEALPOST_TURN_URLS", url, false)?;
    }
    let urls_with_ips = match raw.urls_with_ips {
        Some(templates) => templates,
        None => DEFAULT_TURN_URLS_WITH_IPS.map(String::from).to_vec(),
    };
    if urls_with_ips.len() > MAX_URLS {
        return Err(ConfigError::new(format!(
            "SEALPOST_TURN_URLS_WITH_IPS may name at most {MAX_URLS} templates"
        )));
    }
    for template in &urls_with_ips {
        check_url("SEALPOST_TURN_URLS_WITH_IPS", template, true)?;
    }
    if let Some(host) = &raw.hostname
        && (host.len() > 253
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        return Err(ConfigError::new(format!(
            "SEALPOST_TURN_HOSTNAME: {host:?} is not a host name"
        )));
    }
    let ttl = match raw.ttl_seconds {
        None => DEFAULT_TURN_TTL,
        Some(s) if (1..=7 * 24 * 3600).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(ConfigError::new(
                "SEALPOST_TURN_TTL must be 1 to 604800 seconds",
            ));
        }
    };
    Ok(Some(TurnConfig {
        secret: Secret::new(secret),
        urls,
        urls_with_ips,
        hostname: raw.hostname,
        ttl,
    }))
}
