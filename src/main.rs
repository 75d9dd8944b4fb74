//! The `sealpost` binary: parses the command line, loads the configuration and hands over
//! to the library. Everything else lives in the library so tests drive the same code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sealpost::config::{Config, StoreConfig};
use sealpost::startup::Application;
use sealpost::storage::postgres::PgStore;

/// jemalloc instead of glibc's malloc: `pairs` about 10% faster at 0.75 instead of 0.82
/// cores, idle sockets 9.4 instead of 9.1 KiB (loadtests/RESULTS.md, "The allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Two arenas, not jemalloc's four per core: fewer half-empty arenas per process (idle
/// sockets 9.4 KiB instead of 9.9) at no measured cost; `_RJEM_MALLOC_CONF` overrides.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"narenas:2\0";

#[derive(Parser)]
#[command(name = "sealpost", version, about = "A self-hostable messaging server")]
struct Cli {
    /// TOML configuration file; `SEALPOST_*` variables override what it says.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and admin listeners until SIGTERM or SIGINT.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage sealed-sender certificates.
    Certificates {
        #[command(subcommand)]
        command: CertificatesCommand,
    },
    /// Exit 0 when the admin listener answers 2xx at URL within 3 seconds, 1 otherwise: the
    /// container image's HEALTHCHECK (the slim image has no curl).
    Healthcheck {
        #[arg(
            long,
            value_name = "URL",
            default_value = "http://127.0.0.1:9090/health/live"
        )]
        url: String,
    },
    /// Print the OpenAPI document of the public API (JSON) generated from the code.
    Openapi,
    /// Print a `POST /v1/registration` body with fresh keys and valid signatures, for
    /// trying the API with curl (the private keys are thrown away).
    ExampleRegistration,
    /// A command-line client for trying a server: register, upload keys, send, listen,
    /// link a device. Contents are opaque bytes to the server and shown as base64.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Spam reports that counted (kept in Postgres; nothing acts on them automatically).
    Reports {
        #[command(subcommand)]
        command: ReportsCommand,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a new account with fresh keys; print its ACI and write its credentials
    /// (password and private keys: keep the file private) to FILE.
    Register {
        /// The server's base URL.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Where the credentials go (never overwritten).
        #[arg(long, value_name = "FILE", default_value = "sealpost-credentials.json")]
        out: PathBuf,
    },
    /// Upload one-time prekeys (EC and Kyber) for the device in FILE.
    Keys {
        #[arg(long, value_name = "FILE", default_value = "sealpost-credentials.json")]
        credentials: PathBuf,
        /// How many of each (1 to 100).
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// Send a message to every device of an account.
    Send {
        #[arg(long, value_name = "FILE", default_value = "sealpost-credentials.json")]
        credentials: PathBuf,
        /// The recipient's ACI.
        #[arg(long, value_name = "ACI")]
        to: String,
        /// The content as text (sent as its UTF-8 bytes).
        #[arg(long, conflicts_with = "base64", required_unless_present = "base64")]
        text: Option<String>,
        /// The content as base64.
        #[arg(long)]
        base64: Option<String>,
    },
    /// Open the device's WebSocket and print each delivered envelope as a JSON line,
    /// acknowledging it.
    Listen {
        #[arg(long, value_name = "FILE", default_value = "sealpost-credentials.json")]
        credentials: PathBuf,
        /// Stop after this many envelopes.
        #[arg(long)]
        count: Option<usize>,
        /// Stop when nothing arrives for this many seconds (default: run until interrupted).
        #[arg(long, value_name = "SECONDS")]
        idle: Option<u64>,
    },
    /// Link a new device to the primary in FILE; print its device id and write its
    /// credentials to OUT.
    Link {
        #[arg(long, value_name = "FILE", default_value = "sealpost-credentials.json")]
        credentials: PathBuf,
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ReportsCommand {
    /// Print reports oldest first, one per line, tab-separated: time (UTC), reported
    /// sender, reporter, message GUID, and the token's size in bytes (0: none; the token
    /// itself is never printed).
    List {
        /// Only reports made since then: an RFC 3339 time (`2026-12-01T00:00:00Z`) or a
        /// time ago (`24h`, `7days`).
        #[arg(long, value_name = "WHEN", default_value = "7days")]
        since: String,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum CertificatesCommand {
    /// Write a new trust root and a server certificate signed by it into DIR (created if
    /// needed; existing files are never overwritten).
    Generate {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The server certificate's key id.
        #[arg(long, default_value_t = 1)]
        key_id: u32,
    },
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::ExampleRegistration => return example_registration(),
        Command::Client { command } => return client(command).await,
        Command::Healthcheck { url } => return healthcheck(url).await,
        Command::Openapi => {
            println!("{}", sealpost::api::openapi::document_json());
            return ExitCode::SUCCESS;
        }
        Command::Certificates {
            command: CertificatesCommand::Generate { out, key_id },
        } => return generate_certificates(out, *key_id),
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sealpost: {e}");
            return ExitCode::from(2);
        }
    };
    sealpost::telemetry::init(config.log_format);
    let result = match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(config).await,
        Command::Reports {
            command: ReportsCommand::List { since, limit },
        } => list_reports(config, &since, limit).await,
        Command::ExampleRegistration
        | Command::Client { .. }
        | Command::Certificates { .. }
        | Command::Healthcheck { .. }
        | Command::Openapi => {
            unreachable!("handled before loading the configuration")
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "sealpost failed");
            eprintln!("sealpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await
}

/// `sealpost client ...`: needs no configuration, only a server's URL or credentials file.
async fn client(command: &ClientCommand) -> ExitCode {
    use sealpost::client::cli;
    let result = match command {
        ClientCommand::Register { server, out } => cli::register(server, out).await,
        ClientCommand::Keys { credentials, count } => cli::upload_keys(credentials, *count).await,
        ClientCommand::Send {
            credentials,
            to,
            text,
            base64,
        } => match (to.parse(), text, base64) {
            (Err(e), ..) => Err(anyhow::anyhow!("--to: {e}")),
            (Ok(to), Some(text), _) => cli::send(credentials, to, text.as_bytes()).await,
            (Ok(to), None, Some(b64)) => {
                match sealpost::domain::encoding::decode_base64("--base64", b64) {
                    Ok(bytes) => cli::send(credentials, to, &bytes).await,
                    Err(e) => Err(e.into()),
                }
            }
            (Ok(_), None, None) => Err(anyhow::anyhow!("give --text or --base64")),
        },
        ClientCommand::Listen {
            credentials,
            count,
            idle,
        } => {
            cli::listen(
                credentials,
                *count,
                idle.map(std::time::Duration::from_secs),
            )
            .await
        }
        ClientCommand::Link { credentials, out } => cli::link(credentials, out).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealpost client: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `since` as milliseconds since the epoch: an RFC 3339 time or a duration before now.
fn since_ms(since: &str) -> anyhow::Result<i64> {
    let at = match humantime::parse_rfc3339_weak(since) {
        Ok(at) => at,
        Err(_) => {
            let ago = humantime::parse_duration(since).map_err(|_| {
                anyhow::anyhow!(
                    "--since {since:?}: expected an RFC 3339 time or a duration like 24h"
                )
            })?;
            std::time::SystemTime::now()
                .checked_sub(ago)
                .unwrap_or(std::time::UNIX_EPOCH)
        }
    };
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

async fn list_reports(config: Config, since: &str, limit: usize) -> anyhow::Result<()> {
    use sealpost::storage::reports::SpamReportLog;
    let since = since_ms(since)?;
    let StoreConfig::External {
        database_url,
        database_pool_size,
        ..
    } = &config.stores
    else {
        anyhow::bail!(
            "reports are kept in Postgres: set SEALPOST_DATABASE_URL (and SEALPOST_REDIS_URL) \
             as the server has them (the embedded mode keeps them in its own memory)"
        );
    };
    let store = PgStore::connect(database_url.expose(), *database_pool_size)?;
    let reports = store.since(since, limit).await?;
    for report in &reports {
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(report.reported_at_ms.max(0) as u64);
        println!(
            "{}\t{}\t{}\t{}\t{}",
            humantime::format_rfc3339_millis(at),
            report.source,
            report.reporter,
            report.guid,
            report.token.as_ref().map_or(0, Vec::len)
        );
    }
    eprintln!("{} report(s)", reports.len());
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let database = match &config.stores {
        StoreConfig::External {
            database_url,
            database_pool_size,
            ..
        } => Some((database_url, *database_pool_size)),
        StoreConfig::Embedded => None,
    };
    if database.is_none() && config.attachments.s3.is_none() {
        anyhow::bail!(
            "migrate needs SEALPOST_DATABASE_URL (and SEALPOST_REDIS_URL) or an S3 bucket \
             (SEALPOST_S3_ENDPOINT) to be set"
        );
    }
    if let Some((url, pool)) = database {
        let store = PgStore::connect(url.expose(), pool)?;
        let applied = store.migrate().await?;
        tracing::info!(applied, "migrations applied");
    }
    let objects = sealpost::startup::objects(&config)?;
    let _ = sealpost::startup::apply_lifecycle(&*objects, config.attachments.retention_days).await;
    if config.attachments.cdn0_url.is_none() {
        sealpost::startup::allow_avatar_reads(&*objects).await;
    }
    Ok(())
}

async fn healthcheck(url: &str) -> ExitCode {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("sealpost: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("sealpost: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sealpost: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate_certificates(out: &std::path::Path, key_id: u32) -> ExitCode {
    match sealpost::certificates::generate_into(out, key_id) {
        Ok(trust_root) => {
            println!(
                "wrote {} (trust root public key: {})",
                out.display(),
                sealpost::domain::encoding::encode_base64(trust_root.as_bytes())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sealpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn example_registration() -> ExitCode {
    let keys = sealpost::client::AccountKeys::generate();
    let body = keys.registration_request(sealpost::client::default_attributes());
    match serde_json::to_string_pretty(&body) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sealpost: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
