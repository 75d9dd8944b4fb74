//! Logging setup: human-readable text or JSON lines, filtered by `SEALPOST_LOG` (default
//! `info`), written to stderr. Nothing sealpost logs carries message contents, keys, passwords or tokens.
//!
//! Libraries log at most `info`, whatever `SEALPOST_LOG` says: below that, tokio-postgres
//! prints every statement's parameters (password hashes, access keys, identity keys,
//! prekeys), and the HTTP, WebSocket and Redis stacks print request heads, frames and
//! commands. Only sealpost's own targets go down to `debug` and `trace`.

use tracing::Level;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The most verbose level a target outside sealpost may log at.
pub const LIBRARY_MAX_LEVEL: Level = Level::INFO;

/// The cap under the operator's filter: sealpost's own targets at any level, every other
/// target at `info` and above. A `Targets` filter (not a closure) because it tells tracing
/// its most verbose level and each callsite's interest once: the combined filter's level
/// hint stays the operator's (`info` by default), so the `log` bridge keeps `log`'s max
/// level there and the libraries' `trace!`/`debug!` calls stay a single comparison, as
/// without the cap (a closure filter has no hint, which switched every `log::trace!` of
/// actix-http and tokio-postgres on in the bridge: 8% more CPU per message in `pairs`).
pub fn library_cap() -> Targets {
    Targets::new()
        .with_target("sealpost", LevelFilter::TRACE)
        .with_default(LevelFilter::from_level(LIBRARY_MAX_LEVEL))
}

/// Whether an event of `target` at `level` may be written at all (before the operator's
/// filter).
pub fn allowed(target: &str, level: &Level) -> bool {
    library_cap().would_enable(target, level)
}

pub fn init(format: LogFormat) {
    let operator =
        EnvFilter::try_from_env("SEALPOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = operator.and(library_cap());
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never into files or collectors.
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    // `log` records (tokio-postgres, actix) are bridged into tracing by `try_init` and go
    // through the same filter.
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_never_log_below_info_and_sealpost_may() {
        for target in [
            "tokio_postgres::query",
            "redis",
            "actix_http::h1",
            "h2",
            "log",
        ] {
            assert!(!allowed(target, &Level::DEBUG), "{target}");
            assert!(!allowed(target, &Level::TRACE), "{target}");
            assert!(allowed(target, &Level::INFO), "{target}");
            assert!(allowed(target, &Level::WARN), "{target}");
        }
        assert!(allowed("sealpost::api::middleware", &Level::TRACE));
        assert!(allowed("sealpost", &Level::DEBUG));
        assert!(allowed("sealpost_loadtests", &Level::DEBUG));
        assert!(!allowed("tokio_postgres", &Level::DEBUG));
    }
}
