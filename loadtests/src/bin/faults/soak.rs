//! The soak: steady traffic against one release server for a fixed time (pairs at a fixed
//! rate, receivers reconnecting now and then, bursts of short-lived anonymous sockets),
//! sampling the server's resident memory every 10 s. Reports start, max, end and the slope
//! of the second half, and whether any acknowledged message was lost.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealpost::client::Client;
use sealpost::client::ws::WsClient;

use crate::procs::{PrivatePostgres, PrivateRedis, Sealpost};
use crate::traffic::{Traffic, TrafficConfig};

#[derive(clap::Args)]
pub struct SoakArgs {
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    #[arg(long, default_value_t = 20)]
    pairs: usize,
    /// Pause between one sender's messages, in milliseconds.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Receivers reconnect this often, in seconds.
    #[arg(long, default_value_t = 30)]
    churn_secs: u64,
    /// Short-lived anonymous sockets opened (and closed) every 10 s.
    #[arg(long, default_value_t = 50)]
    burst: usize,
}

pub async fn run(
    binary: &Path,
    work: &Path,
    report: Option<&Path>,
    args: &SoakArgs,
) -> anyhow::Result<bool> {
    let redis = PrivateRedis::start(work, Some("everysec")).await?;
    let pg = PrivatePostgres::start(work).await?;
    let server = Sealpost::start(
        "sealpost-soak",
        binary,
        work,
        crate::server_env(&pg, &redis),
    )
    .await?;
    crate::wait_ready(&[&server], Duration::from_secs(60)).await?;
    let pairs = crate::traffic::register_pairs(&Client::new(&server.base()), args.pairs).await?;
    let traffic = Traffic::start(
        pairs,
        TrafficConfig {
            bases: vec![server.base()],
            interval: Duration::from_millis(args.interval_ms),
            churn: Some(Duration::from_secs(args.churn_secs)),
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let bursts = Arc::new(AtomicU64::new(0));
    let burster = tokio::spawn(burst_loop(
        server.base(),
        args.burst,
        stop.clone(),
        bursts.clone(),
    ));

    let mut csv = std::fs::File::create(work.join("soak-rss.csv"))?;
    writeln!(csv, "seconds,rss_bytes,acknowledged,delivered")?;
    let started = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let t = started.elapsed().as_secs_f64();
        let rss = server.rss_bytes().unwrap_or(0);
        let counts = traffic.ledger.counts();
        writeln!(
            csv,
            "{t:.0},{rss},{},{}",
            counts.acknowledged, counts.delivered
        )?;
        eprintln!(
            "soak: {t:>5.0}s rss {:>7.1} MiB acknowledged {} delivered {}",
            rss as f64 / 1048576.0,
            counts.acknowledged,
            counts.delivered
        );
        samples.push((t, rss));
    }
    stop.store(true, Ordering::SeqCst);
    let _ = burster.await;
    let counts = traffic.finish(Duration::from_secs(60)).await;

    let mib = |b: u64| b as f64 / 1048576.0;
    let start = samples.first().map(|s| s.1).unwrap_or(0);
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let end = samples.last().map(|s| s.1).unwrap_or(0);
    let half = &samples[samples.len() / 2..];
    let slope = slope_mib_per_min(half);
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "soak: {:.0} s, {} pairs every {} ms, receivers reconnecting every {} s, {} anonymous sockets every 10 s ({} bursts)",
        elapsed,
        args.pairs,
        args.interval_ms,
        args.churn_secs,
        args.burst,
        bursts.load(Ordering::Relaxed)
    );
    println!(
        "soak: RSS start {:.1} MiB, max {:.1} MiB, end {:.1} MiB, slope over the second half {:+.3} MiB/min ({} samples)",
        mib(start),
        mib(max),
        mib(end),
        slope,
        samples.len()
    );
    println!(
        "soak: sent {} acknowledged {} delivered {} lost {} duplicates (GUID) {} reconnects {} ({:.0} acknowledged msgs/s)",
        counts.sent,
        counts.acknowledged,
        counts.delivered,
        counts.lost,
        counts.duplicates_by_guid,
        counts.receiver_reconnects,
        counts.acknowledged as f64 / elapsed
    );
    if let Some(path) = report {
        let report = serde_json::json!({
            "seconds": elapsed,
            "rss_mib": {"start": mib(start), "max": mib(max), "end": mib(end), "slope_second_half_per_min": slope},
            "samples": samples,
            "counts": counts,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    drop((server, redis, pg));
    Ok(counts.lost == 0)
}

/// Least-squares slope of (seconds, bytes), in MiB per minute.
fn slope_mib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let cov: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let var: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    cov / var * 60.0 / 1048576.0
}

async fn burst_loop(base: String, burst: usize, stop: Arc<AtomicBool>, bursts: Arc<AtomicU64>) {
    while !stop.load(Ordering::SeqCst) {
        let sockets =
            futures_util::future::join_all((0..burst).map(|_| WsClient::connect(&base, None)))
                .await;
        for ws in sockets.into_iter().flatten() {
            let _ = ws.request("GET", "/v1/accounts/whoami", None, vec![]).await;
            ws.close().await;
        }
        bursts.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
