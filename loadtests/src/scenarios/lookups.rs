//! `lookups`: anonymous `GET /v1/accounts/username_hash/{hash}` from many connections
//! (PROTOCOL.md 14.1; the server's rate limits off, as `scripts/bench` runs it). Every
//! lookup must name the account that confirmed the hash: one that does not counts as
//! `missing`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sealpost::client::random_username_hash;

use super::{Env, Target, closed_loop, set_latency};
use crate::options::Scenario;
use crate::report::Outcome;

pub async fn run(env: &Env, target: &Target) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!target.is_relay(), "the relay has no usernames");
    let o = &env.options;
    let client = env.client.clone();
    eprintln!(
        "lookups: registering {} accounts with usernames",
        o.usernames
    );
    let mut named = Vec::with_capacity(o.usernames);
    let mut left = o.usernames;
    while left > 0 {
        let batch = left.min(16);
        left -= batch;
        let setups: Vec<_> = (0..batch)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    let (account, _) = client.register_new().await?;
                    let hash = random_username_hash();
                    client.set_username_hash(&account, &hash, None).await?;
                    Ok::<_, sealpost::client::ClientError>((hash, account.aci))
                })
            })
            .collect();
        for setup in setups {
            named.push(
                setup
                    .await?
                    .map_err(|e| anyhow::anyhow!("setting up a username: {e}"))?,
            );
        }
    }
    let named = Arc::new(named);
    let next = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let lookup = {
        let (client, named, next, wrong) =
            (client.clone(), named.clone(), next.clone(), wrong.clone());
        move || {
            let (client, named, wrong) = (client.clone(), named.clone(), wrong.clone());
            let n = next.fetch_add(1, Ordering::Relaxed);
            async move {
                let (hash, aci) = named[(n as usize) % named.len()];
                match client.lookup_username_hash(&hash).await {
                    Ok(found) if found == aci => true,
                    Ok(_) | Err(sealpost::client::ClientError::Status { .. }) => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    Err(_) => false,
                }
            }
        }
    };
    let progress = env.progress(Scenario::Lookups, target, Duration::from_secs(o.seconds));
    let phase = closed_loop(&progress, o.concurrency, o.seconds, o.max_requests, lookup).await?;
    let mut outcome = Outcome::new(Scenario::Lookups, target.name);
    outcome.server = progress.finish();
    set_latency(&mut outcome, &phase.hist);
    outcome
        .set("lookups_per_s", phase.per_second())
        .set("lookups", phase.requests as f64)
        .set("usernames", named.len() as f64)
        .set("errors", phase.errors as f64)
        .set("missing", wrong.load(Ordering::Relaxed) as f64);
    Ok(outcome)
}
