//! sealpost's load generator. Each scenario drives a running sealpost over loopback, is
//! bounded in time and count, and prints a JSON result and a Markdown row.
//!
//! Scenarios so far: `auth` (authenticated `GET /v1/accounts/whoami` with a cached
//! credential, the same request without credentials, and with a wrong password, which pays
//! a full argon2 verification each time). The messaging scenarios of BENCHMARKS.md come with the
//! messaging issues.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use sealpost::client::{Client, DeviceCredentials};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Load scenarios against a running sealpost (loopback only)")]
struct Args {
    /// Base URL of the sealpost API; only loopback addresses are accepted.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, value_enum, default_value = "auth")]
    scenario: Scenario,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Hard cap on requests per phase (the loop stops at whichever comes first).
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Warm-up seconds before each measured phase (not counted).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    Auth,
}

#[derive(Serialize)]
struct Phase {
    name: &'static str,
    requests: u64,
    errors: u64,
    seconds: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or("");
    let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    anyhow::ensure!(
        loopback,
        "refusing to load {host:?}: only loopback targets are allowed"
    );
    Ok(())
}

/// Runs `concurrency` loops of `request` for `seconds` (bounded by `max_requests`);
/// `request` returns whether the answer was the expected one.
async fn run_phase<F, Fut>(
    name: &'static str,
    args: &Args,
    seconds: u64,
    request: F,
) -> anyhow::Result<Phase>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let request = request.clone();
        let issued = issued.clone();
        let max = args.max_requests;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("valid histogram");
            let mut errors = 0u64;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                if !request().await {
                    errors += 1;
                }
                let _ = hist.record(t.elapsed().as_micros() as u64);
            }
            (hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await?;
        hist.add(h)?;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = hist.len();
    Ok(Phase {
        name,
        requests,
        errors,
        seconds: elapsed,
        requests_per_second: requests as f64 / elapsed,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: hist.value_at_quantile(0.999) as f64 / 1000.0,
    })
}

async fn auth(args: &Args) -> anyhow::Result<Vec<Phase>> {
    let client = Client::new(&args.url);
    let (credentials, _) = client
        .register_new()
        .await
        .map_err(|e| anyhow::anyhow!("registering the load account: {e}"))?;
    let credentials: Arc<DeviceCredentials> = Arc::new(credentials);

    let authed = {
        let client = client.clone();
        let credentials = credentials.clone();
        move || {
            let client = client.clone();
            let credentials = credentials.clone();
            async move { client.whoami(&credentials).await.is_ok() }
        }
    };
    let anonymous = {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move {
                matches!(
                    client.http().get(client.url("/v1/accounts/whoami")).send().await,
                    Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED
                )
            }
        }
    };
    let wrong_password = {
        let client = client.clone();
        let mut wrong = (*credentials).clone();
        wrong.password = sealpost::client::random_password();
        let wrong = Arc::new(wrong);
        move || {
            let client = client.clone();
            let wrong = wrong.clone();
            async move {
                client.whoami(&wrong).await.err().and_then(|e| e.status())
                    == Some(reqwest::StatusCode::UNAUTHORIZED)
            }
        }
    };
    let mut phases = Vec::new();
    eprintln!("auth: warming up for {}s", args.warmup);
    run_phase("authenticated", args, args.warmup, authed.clone()).await?;
    eprintln!(
        "auth: measuring authenticated (cached credential) for {}s",
        args.seconds
    );
    phases.push(run_phase("authenticated", args, args.seconds, authed).await?);
    run_phase("unauthenticated", args, args.warmup, anonymous.clone()).await?;
    eprintln!(
        "auth: measuring unauthenticated (401, no header) for {}s",
        args.seconds
    );
    phases.push(run_phase("unauthenticated", args, args.seconds, anonymous).await?);
    eprintln!(
        "auth: measuring wrong password (full argon2 each) for {}s",
        args.seconds
    );
    phases.push(
        run_phase(
            "wrong password (argon2)",
            args,
            args.seconds,
            wrong_password,
        )
        .await?,
    );
    Ok(phases)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure_loopback(&args.url)?;
    let phases = match args.scenario {
        Scenario::Auth => auth(&args).await?,
    };
    println!("{}", serde_json::to_string_pretty(&phases)?);
    println!();
    println!("| phase | requests | errors | req/s | p50 ms | p99 ms | p99.9 ms |");
    println!("|---|---|---|---|---|---|---|");
    for p in &phases {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            p.name, p.requests, p.errors, p.requests_per_second, p.p50_ms, p.p99_ms, p.p999_ms
        );
    }
    if let [authed, anon, argon2] = &phases[..] {
        println!(
            "\nauthenticated / unauthenticated = {:.2}; authenticated / argon2-verified = {:.0}",
            authed.requests_per_second / anon.requests_per_second,
            authed.requests_per_second / argon2.requests_per_second
        );
    }
    Ok(())
}
