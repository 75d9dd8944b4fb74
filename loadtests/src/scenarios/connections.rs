//! `connections`: C idle sockets (authenticated ones on sealpost), held with keepalives,
//! spread over source addresses 127.0.0.2.. (bind before connect, so each address has its
//! own ephemeral ports towards the server). Reports the server's resident memory per
//! socket (after minus before, over the sockets still open at the end of the hold), the
//! time to connect them all and the errors.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{Env, Target};
use crate::conn::{self, Peer};
use crate::options::Scenario;
use crate::procstat;
use crate::report::Outcome;

/// Descriptors left for everything else (stores, listeners, files) under the limit.
const FD_MARGIN: u64 = 512;
/// Connection attempts in flight at once (under the server's accept backlog).
const CONNECT_CONCURRENCY: usize = 128;

pub async fn run(env: &Env, target: &Target) -> anyhow::Result<Outcome> {
    let o = &env.options;
    // One descriptor per socket at both ends: hold what both processes' limits allow.
    let limit = procstat::raise_nofile(o.connections as u64 + 4096).min(
        target
            .pid
            .and_then(procstat::open_files_limit)
            .unwrap_or(u64::MAX),
    );
    let count = o.connections.min(limit.saturating_sub(FD_MARGIN) as usize);
    if count < o.connections {
        eprintln!(
            "connections: only {count} of {} sockets fit under the open-file limit ({limit}) \
             of this process or the server; raise `ulimit -n` (hard limit: root with \
             CAP_SYS_RESOURCE) to hold more",
            o.connections
        );
    }
    anyhow::ensure!(
        count > 0,
        "no sockets fit under the open-file limit ({limit})"
    );
    let mut seeded = None;
    let peers: Vec<Peer> = if target.is_relay() {
        let base = env.relay_ids(count);
        (0..count as u64).map(|i| Peer::Relay(base + i)).collect()
    } else if let Some(database_url) = &o.database_url {
        eprintln!("connections: writing {count} devices into the database");
        let devices = crate::accounts::seed(database_url, count).await?;
        let peers = devices
            .devices
            .iter()
            .map(|d| Peer::Sealpost(Some(d.clone())))
            .collect();
        seeded = Some(devices);
        peers
    } else {
        eprintln!("connections: registering {count} accounts (no --database-url to seed them)");
        crate::accounts::register(&env.client, count, false)
            .await?
            .into_iter()
            .map(|d| Peer::Sealpost(Some(d)))
            .collect()
    };

    // Let the previous scenario's memory settle before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = target.pid.and_then(procstat::sample).unwrap_or_default();
    let connect_limit = Duration::from_secs(o.seconds.max(10) * 30);
    let progress = env.progress(Scenario::Connections, target, connect_limit);
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::with_capacity(count);
    for (i, peer) in peers.into_iter().enumerate() {
        let source = Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % o.source_addresses.max(1) as usize) as u8,
        );
        let slot = slots.clone().acquire_owned().await?;
        let (url, counters, first_error) = (
            target.url.clone(),
            progress.counters.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _slot = slot;
            if started.elapsed() > connect_limit {
                return None;
            }
            match conn::connect(&url, &peer, Some(source), true).await {
                Ok(pair) => {
                    counters.done();
                    Some(pair)
                }
                Err(e) => {
                    counters.error();
                    first_error
                        .lock()
                        .expect("not poisoned")
                        .get_or_insert(format!("{e:#}"));
                    None
                }
            }
        }));
    }
    let mut open = Vec::with_capacity(count);
    for task in tasks {
        open.extend(task.await?);
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let errors = count - open.len();
    if let Some(e) = first_error.lock().expect("not poisoned").take() {
        eprintln!("connections: {errors} failed; the first: {e}");
    }
    eprintln!(
        "connections: {} open after {connect_seconds:.1}s; holding {}s",
        open.len(),
        o.hold
    );
    tokio::time::sleep(Duration::from_secs(o.hold)).await;
    let held = open.iter().filter(|(c, _)| c.is_open()).count();
    let after = target.pid.and_then(procstat::sample).unwrap_or_default();
    let mut outcome = Outcome::new(Scenario::Connections, target.name);
    outcome.server = progress.finish();
    let grown = after.rss_bytes.saturating_sub(before.rss_bytes) as f64;
    outcome
        .set("held", held as f64)
        .set("connect_seconds", connect_seconds)
        .set("errors", (errors + open.len() - held) as f64)
        .set("rss_kib_per_socket", grown / 1024.0 / held.max(1) as f64)
        .set("requested", o.connections as f64)
        .set("open_files_limit", limit as f64);
    drop(open);
    if let Some(seeded) = seeded {
        // The sockets close first: deleting accounts with open sockets would close them.
        tokio::time::sleep(Duration::from_secs(1)).await;
        seeded.remove().await?;
    }
    Ok(outcome)
}
