//! The fault-injection suite and the soak (issue 9). `faults run` starts a private Redis (AOF,
//! fsync every second, as deploy/ ships it), a private Postgres and two sealpost processes,
//! keeps senders and receivers busy, and meanwhile kills a server (`kill -9`) and restarts
//! it, kills and restarts Redis, and crashes and restarts Postgres. It then reports sent,
//! acknowledged, delivered, duplicates and lost messages, and fails if an acknowledged
//! message was lost or readiness did not go 503 and back to 200 by itself. `faults soak`
//! runs steady traffic against one server and samples its resident memory.
//! `scripts/faults` is the way to run both; it cleans up whatever is left.

mod procs;
mod readiness;
mod soak;
mod traffic;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sealpost::client::Client;

use procs::{PrivatePostgres, PrivateRedis, Sealpost};
use readiness::{Ready, Watcher, describe};
use traffic::{Traffic, TrafficConfig};

#[derive(Parser)]
#[command(about = "Fault injection and soak against real sealpost processes")]
struct Args {
    /// The sealpost binary to run.
    #[arg(long, default_value = "target/release/sealpost")]
    binary: PathBuf,
    /// A scratch directory this run owns (stores' data, logs, pid files).
    #[arg(long)]
    work: PathBuf,
    /// Where to write the JSON report.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The fault suite.
    Run {
        /// One round of each fault with short pauses (CI); the default is three rounds.
        #[arg(long)]
        short: bool,
        /// Sender/receiver pairs (every other one sealed).
        #[arg(long)]
        pairs: Option<usize>,
    },
    /// Steady traffic for a while, sampling the server's resident memory.
    Soak(soak::SoakArgs),
}

/// How long each step of a run takes.
struct Plan {
    rounds: usize,
    pairs: usize,
    interval: Duration,
    steady: Duration,
    outage: Duration,
}

#[derive(serde::Serialize)]
struct FaultReport {
    fault: String,
    passed: bool,
    /// Per server, what readiness answered in order (`200@1.2s` ...).
    readiness: Vec<(String, String)>,
    acknowledged_during: u64,
    /// By kind (`503`, `other status NNN`, `transport`).
    failed_attempts_during: BTreeMap<String, u64>,
    /// Receiver sockets that had to reconnect.
    reconnects_during: u64,
    note: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    let passed = match &args.command {
        Command::Run { short, pairs } => {
            let mut plan = if *short {
                Plan {
                    rounds: 1,
                    pairs: 6,
                    interval: Duration::from_millis(40),
                    steady: Duration::from_secs(4),
                    outage: Duration::from_secs(3),
                }
            } else {
                Plan {
                    rounds: 3,
                    pairs: 12,
                    interval: Duration::from_millis(20),
                    steady: Duration::from_secs(15),
                    outage: Duration::from_secs(8),
                }
            };
            if let Some(pairs) = pairs {
                plan.pairs = *pairs;
            }
            run(&args, &plan).await?
        }
        Command::Soak(soak) => {
            soak::run(&args.binary, &args.work, args.report.as_deref(), soak).await?
        }
    };
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

fn server_env(pg: &PrivatePostgres, redis: &PrivateRedis) -> Vec<(String, String)> {
    [
        ("SEALPOST_DATABASE_URL", pg.url()),
        ("SEALPOST_REDIS_URL", redis.url()),
        ("SEALPOST_REDIS_KEY_PREFIX", "faults:".into()),
        // Retries after a fault come in bursts; the limits are not what is tested here.
        ("SEALPOST_RATE_LIMITS", "off".into()),
        ("SEALPOST_WORKERS", "1".into()),
        ("SEALPOST_DATABASE_POOL_SIZE", "8".into()),
        // Every simulated client comes from 127.0.0.1: no per-address caps.
        ("SEALPOST_MAX_WEBSOCKETS_PER_CLIENT", "0".into()),
        ("SEALPOST_MAX_CONNECTIONS_PER_CLIENT", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub async fn wait_ready(servers: &[&Sealpost], timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    for server in servers {
        while readiness::probe(&http, &server.admin()).await != Ready::Ok {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} did not become ready",
                server.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn run(args: &Args, plan: &Plan) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    eprintln!("faults: starting private Redis (appendonly yes, appendfsync everysec) and Postgres");
    let mut redis = PrivateRedis::start(&args.work, Some("everysec")).await?;
    let mut pg = PrivatePostgres::start(&args.work).await?;
    let env = server_env(&pg, &redis);
    let mut a = Sealpost::start("sealpost-a", &args.binary, &args.work, env.clone()).await?;
    let mut b = Sealpost::start("sealpost-b", &args.binary, &args.work, env).await?;
    wait_ready(&[&a, &b], Duration::from_secs(60)).await?;
    eprintln!(
        "faults: servers a={} b={}; registering {} pairs",
        a.base(),
        b.base(),
        plan.pairs
    );
    let pairs = traffic::register_pairs(&Client::new(&a.base()), plan.pairs).await?;
    let traffic = Traffic::start(
        pairs,
        TrafficConfig {
            bases: vec![a.base(), b.base()],
            interval: plan.interval,
            churn: None,
        },
    );
    let ledger = traffic.ledger.clone();
    let snapshot = || {
        let c = ledger.counts();
        (c.acknowledged, c.failed_attempts, c.receiver_reconnects)
    };
    tokio::time::sleep(plan.steady).await;

    let mut faults = Vec::new();
    for round in 1..=plan.rounds {
        // A server killed with -9 and started again; the other keeps serving. Rounds
        // alternate between the two, so each kill catches the receivers that moved over
        // after the one before.
        let before = snapshot();
        let (wa, wb) = (Watcher::start(a.admin()), Watcher::start(b.admin()));
        let (victim, survivor) = if round % 2 == 1 {
            (&mut a, &b)
        } else {
            (&mut b, &a)
        };
        let (victim_name, survivor_name) = (victim.name.clone(), survivor.name.clone());
        eprintln!("faults: round {round}: kill -9 {victim_name}");
        victim.kill();
        tokio::time::sleep(plan.outage).await;
        victim.restart().await?;
        let (w_victim, w_survivor) = if round % 2 == 1 {
            (&wa, &wb)
        } else {
            (&wb, &wa)
        };
        let back = w_victim.wait_for(Ready::Ok, Duration::from_secs(60)).await;
        tokio::time::sleep(plan.steady).await;
        let stayed = w_survivor.history().iter().all(|(_, r)| *r == Ready::Ok);
        let (ha, hb) = (wa.stop().await, wb.stop().await);
        let after = snapshot();
        faults.push(FaultReport {
            fault: format!("round {round}: kill -9 {victim_name}, start it again"),
            passed: back && stayed,
            readiness: vec![("a".into(), describe(&ha)), ("b".into(), describe(&hb))],
            acknowledged_during: after.0 - before.0,
            failed_attempts_during: diff(&before.1, &after.1),
            reconnects_during: after.2 - before.2,
            note: format!(
                "{victim_name} ready again: {back}; {survivor_name} stayed ready throughout: {stayed}"
            ),
        });

        // Redis killed with -9 and started again on its AOF.
        let before = snapshot();
        let name = format!("round {round}: kill -9 redis-server, start it again (AOF everysec)");
        let mut report = store_fault(&name, [&a, &b], plan, Store::Redis(&mut redis)).await?;
        set_counts(&mut report, before, snapshot());
        faults.push(report);

        // Postgres crashed (immediate stop) and started again (WAL recovery).
        let before = snapshot();
        let name = format!("round {round}: Postgres immediate stop (crash), start it again");
        let mut report = store_fault(&name, [&a, &b], plan, Store::Postgres(&mut pg)).await?;
        set_counts(&mut report, before, snapshot());
        faults.push(report);
    }

    eprintln!("faults: stopping senders, waiting for every acknowledged message to arrive");
    let counts = traffic.finish(Duration::from_secs(60)).await;
    let faults_passed = faults.iter().all(|f| f.passed);
    let passed = counts.lost == 0 && counts.non_json_errors == 0 && faults_passed;

    println!(
        "\n## Fault run ({} round(s), {} pairs, {:.0} s)\n",
        plan.rounds,
        plan.pairs,
        started.elapsed().as_secs_f64()
    );
    println!(
        "| fault | passed | readiness (a / b) | acknowledged during | failed attempts during | receiver reconnects |"
    );
    println!("|---|---|---|---|---|---|");
    for f in &faults {
        println!(
            "| {} | {} | {} / {} | {} | {} | {} |",
            f.fault,
            if f.passed { "yes" } else { "NO" },
            f.readiness[0].1,
            f.readiness[1].1,
            f.acknowledged_during,
            describe_failures(&f.failed_attempts_during),
            f.reconnects_during
        );
    }
    println!(
        "\nsent {}  acknowledged {}  delivered {}  lost {}  duplicates (same GUID) {}  duplicates (same content, new GUID) {}  delivered without a 200 {}",
        counts.sent,
        counts.acknowledged,
        counts.delivered,
        counts.lost,
        counts.duplicates_by_guid,
        counts.duplicates_by_content,
        counts.delivered_without_200
    );
    println!(
        "attempts {}  failed attempts {:?}  error answers without a JSON body {}  receiver reconnects {}",
        counts.attempts, counts.failed_attempts, counts.non_json_errors, counts.receiver_reconnects
    );
    println!("result: {}", if passed { "PASS" } else { "FAIL" });
    if let Some(path) = &args.report {
        let report = serde_json::json!({"counts": counts, "faults": faults, "passed": passed});
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    drop((a, b, redis, pg));
    Ok(passed)
}

type Snapshot = (u64, HashMap<String, u64>, u64);

fn set_counts(report: &mut FaultReport, before: Snapshot, after: Snapshot) {
    report.acknowledged_during = after.0 - before.0;
    report.failed_attempts_during = diff(&before.1, &after.1);
    report.reconnects_during = after.2 - before.2;
}

fn diff(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn describe_failures(failures: &BTreeMap<String, u64>) -> String {
    if failures.is_empty() {
        return "none".into();
    }
    failures
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store a fault takes away.
enum Store<'a> {
    Redis(&'a mut PrivateRedis),
    Postgres(&'a mut PrivatePostgres),
}

/// A store goes away: both servers' readiness must go 503, and come back to 200 by itself
/// once the store is started again.
async fn store_fault(
    name: &str,
    servers: [&Sealpost; 2],
    plan: &Plan,
    mut store: Store<'_>,
) -> anyhow::Result<FaultReport> {
    eprintln!("faults: {name}");
    let watchers = servers.map(|s| Watcher::start(s.admin()));
    match &mut store {
        Store::Redis(redis) => redis.kill(),
        Store::Postgres(pg) => pg.crash()?,
    }
    let mut went_down = true;
    for w in &watchers {
        went_down &= w
            .wait_for(Ready::Unavailable, Duration::from_secs(15))
            .await;
    }
    tokio::time::sleep(plan.outage).await;
    match &mut store {
        Store::Redis(redis) => redis.restart().await?,
        Store::Postgres(pg) => pg.restart().await?,
    }
    let mut came_back = true;
    for w in &watchers {
        came_back &= w.wait_for(Ready::Ok, Duration::from_secs(60)).await;
    }
    tokio::time::sleep(plan.steady).await;
    let mut readiness = Vec::new();
    for (w, name) in watchers.into_iter().zip(["a", "b"]) {
        readiness.push((name.to_owned(), describe(&w.stop().await)));
    }
    Ok(FaultReport {
        fault: name.to_owned(),
        passed: went_down && came_back,
        readiness,
        acknowledged_during: 0,
        failed_attempts_during: BTreeMap::new(),
        reconnects_during: 0,
        note: format!("readiness went 503: {went_down}; back to 200 by itself: {came_back}"),
    })
}
