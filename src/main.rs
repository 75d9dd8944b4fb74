//! The `sealpost` binary: parses the command line, loads the configuration and hands over
//! to the library. Everything else lives in the library so tests drive the same code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sealpost::config::{Config, StoreConfig};
use sealpost::startup::Application;
use sealpost::storage::postgres::PgStore;

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
    /// Print a `POST /v1/registration` body with fresh keys and valid signatures, for
    /// trying the API with curl (the private keys are thrown away).
    ExampleRegistration,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::ExampleRegistration = cli.command {
        return example_registration();
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
        Command::ExampleRegistration => unreachable!("handled before loading the configuration"),
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

async fn migrate(config: Config) -> anyhow::Result<()> {
    let StoreConfig::External {
        database_url,
        database_pool_size,
        ..
    } = &config.stores
    else {
        anyhow::bail!("migrate needs SEALPOST_DATABASE_URL (and SEALPOST_REDIS_URL) to be set");
    };
    let store = PgStore::connect(database_url.expose(), *database_pool_size)?;
    let applied = store.migrate().await?;
    tracing::info!(applied, "migrations applied");
    Ok(())
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
