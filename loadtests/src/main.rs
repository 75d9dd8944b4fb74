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

#[derive(Parser, Clone)]
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
    /// prekeys: target accounts, each given 100 EC and 100 Kyber one-time keys.
    #[arg(long, default_value_t = 500)]
    targets: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    Auth,
    Prekeys,
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

/// Concurrent `GET /v2/keys/{aci}/1` with one-time key consumption. Every fetch must get
/// a one-time EC and Kyber key (the run stops before the targets run out), and no
/// (target, key id) may be handed out twice.
async fn prekeys(args: &Args) -> anyhow::Result<Vec<Phase>> {
    use std::collections::HashSet;
    use std::sync::Mutex;

    let client = Client::new(&args.url);
    let (caller, _) = client
        .register_new()
        .await
        .map_err(|e| anyhow::anyhow!("registering the caller: {e}"))?;
    eprintln!(
        "prekeys: registering {} targets with 100 + 100 one-time keys each",
        args.targets
    );
    let mut setup = Vec::new();
    for chunk in 0..args.targets.div_ceil(16) {
        let n = 16.min(args.targets - chunk * 16);
        let mut batch = Vec::new();
        for _ in 0..n {
            let client = client.clone();
            batch.push(tokio::spawn(async move {
                let (target, keys) = client.register_new().await?;
                let upload = sealpost::api::entities::SetKeysRequestJson {
                    pre_keys: Some(keys.one_time_pre_keys(1000..1100)),
                    pq_pre_keys: Some(keys.one_time_pq_pre_keys(1000..1100)),
                    ..Default::default()
                };
                client.upload_keys(&target, &upload).await?;
                Ok::<_, sealpost::client::ClientError>(target.aci)
            }));
        }
        for task in batch {
            setup.push(
                task.await?
                    .map_err(|e| anyhow::anyhow!("setting up a target: {e}"))?,
            );
        }
    }
    let targets = Arc::new(setup);
    let caller = Arc::new(caller);
    let next = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let repeats = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicU64::new(0));
    let budget = (targets.len() * 100) as u64;
    let fetch = {
        let (client, targets, caller, next) = (
            client.clone(),
            targets.clone(),
            caller.clone(),
            next.clone(),
        );
        let (seen, repeats, exhausted) = (seen.clone(), repeats.clone(), exhausted.clone());
        move || {
            let (client, targets, caller) = (client.clone(), targets.clone(), caller.clone());
            let (seen, repeats, exhausted) = (seen.clone(), repeats.clone(), exhausted.clone());
            let n = next.fetch_add(1, Ordering::Relaxed);
            async move {
                let target = targets[(n as usize) % targets.len()];
                let access = sealpost::client::KeyAccess::Device(&caller);
                let Ok(response) = client.fetch_keys(access, &target, "1").await else {
                    return false;
                };
                let Some(device) = response.devices.first() else {
                    return false;
                };
                // One-time keys have ids 1000..1100; the last-resort key has id 1.
                match (&device.pre_key, &device.pq_pre_key) {
                    (Some(ec), Some(kem)) if kem.key_id >= 1000 => {
                        let mut seen = seen.lock().expect("not poisoned");
                        if !seen.insert((target, 'e', ec.key_id)) {
                            repeats.fetch_add(1, Ordering::Relaxed);
                        }
                        if !seen.insert((target, 'k', kem.key_id)) {
                            repeats.fetch_add(1, Ordering::Relaxed);
                        }
                        true
                    }
                    _ => {
                        exhausted.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                }
            }
        }
    };
    eprintln!(
        "prekeys: measuring for up to {}s or {budget} fetches",
        args.seconds
    );
    // Never ask for more keys than were uploaded: every fetch must consume real keys.
    let mut bounded = args.clone();
    bounded.max_requests = bounded.max_requests.min(budget);
    let phase = run_phase("prekey fetches", &bounded, args.seconds, fetch).await?;
    let repeats = repeats.load(Ordering::Relaxed);
    eprintln!(
        "prekeys: {} distinct one-time keys handed out, {} repeated, {} fetches without a one-time key",
        seen.lock().expect("not poisoned").len(),
        repeats,
        exhausted.load(Ordering::Relaxed)
    );
    anyhow::ensure!(repeats == 0, "a one-time key was handed out twice");
    Ok(vec![phase])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure_loopback(&args.url)?;
    let phases = match args.scenario {
        Scenario::Auth => auth(&args).await?,
        Scenario::Prekeys => prekeys(&args).await?,
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
