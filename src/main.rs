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
    /// Operators' commands against the configured stores (each action is logged).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
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
        /// An invite token, for a server with `registration = "token"`.
        #[arg(long, value_name = "TOKEN")]
        invite: Option<String>,
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
enum AdminCommand {
    /// Invite tokens for `registration = "token"`.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Make an invite token and print it (shown this once: only its hash is stored).
    Create {
        /// Registrations it admits.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid (`7days`, `12h`), or `never`.
        #[arg(long, value_name = "DURATION", default_value = "7days")]
        expires: String,
    },
    /// Every invite: id, uses taken of uses, expiry, creation time, state (never the token).
    List,
    /// Revoke an invite by id: it admits no further registration.
    Revoke { id: i64 },
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
        Command::Admin {
            command: AdminCommand::Tokens { command },
        } => tokens(config, command).await,
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
        ClientCommand::Register {
            server,
            out,
            invite,
        } => cli::register(server, out, invite.as_deref()).await,
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

/// Postgres as the configuration names it, for the commands that read or write it.
fn database(config: &Config, what: &str) -> anyhow::Result<PgStore> {
    let StoreConfig::External {
        database_url,
        database_pool_size,
        ..
    } = &config.stores
    else {
        anyhow::bail!(
            "{what} live in Postgres: set SEALPOST_DATABASE_URL (and SEALPOST_REDIS_URL) as \
             the server has them (the embedded mode keeps everything in its own memory)"
        );
    };
    PgStore::connect(database_url.expose(), *database_pool_size)
}

/// Who runs an admin command, for its log line.
fn operator() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

async fn tokens(config: Config, command: TokensCommand) -> anyhow::Result<()> {
    use sealpost::service::invites::InviteService;
    let store = std::sync::Arc::new(database(&config, "invite tokens")?);
    store.migrate().await?;
    let invites = InviteService::new(
        store,
        config.registration,
        config.clock.clone(),
        sealpost::metrics::Metrics::new(),
    );
    let operator = operator();
    match command {
        TokensCommand::Create { uses, expires } => {
            let expires_ms = match expires.trim() {
                "never" => None,
                ttl => {
                    let ttl = humantime::parse_duration(ttl).map_err(|_| {
                        anyhow::anyhow!(
                            "--expires {ttl:?}: expected a duration like 7days, or never"
                        )
                    })?;
                    Some(config.clock.now_ms() + ttl.as_millis() as i64)
                }
            };
            let (token, id) = invites.create(uses, expires_ms).await?;
            tracing::info!(%operator, action = "tokens create", invite = id, uses, "admin action");
            println!("{token}");
            eprintln!(
                "invite {id}: {uses} registration(s), {}",
                expires_ms.map_or("never expires".into(), |ms| format!(
                    "until {}",
                    rfc3339(ms)
                ))
            );
            if config.registration != sealpost::config::RegistrationMode::Token {
                eprintln!(
                    "note: registration is {:?} here; tokens are asked for only with SEALPOST_REGISTRATION=token",
                    config.registration.as_str()
                );
            }
        }
        TokensCommand::List => {
            tracing::info!(%operator, action = "tokens list", "admin action");
            let now = config.clock.now_ms();
            for invite in invites.list().await? {
                let state = if invite.revoked {
                    "revoked"
                } else if invite.expires_ms.is_some_and(|e| e <= now) {
                    "expired"
                } else if invite.used >= invite.uses {
                    "used up"
                } else {
                    "valid"
                };
                println!(
                    "{}\t{}/{}\t{}\t{}\t{state}",
                    invite.id,
                    invite.used,
                    invite.uses,
                    invite.expires_ms.map_or("never".into(), rfc3339),
                    rfc3339(invite.created_ms),
                );
            }
        }
        TokensCommand::Revoke { id } => {
            let revoked = invites.revoke(id).await?;
            tracing::info!(%operator, action = "tokens revoke", invite = id, revoked, "admin action");
            if !revoked {
                anyhow::bail!("no invite {id}");
            }
            eprintln!("invite {id} revoked");
        }
    }
    Ok(())
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
    let store = database(&config, "spam reports")?;
    let reports = store.since(since, limit).await?;
    for report in &reports {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            rfc3339(report.reported_at_ms),
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
