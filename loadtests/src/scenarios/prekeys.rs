//! `prekeys`: concurrent `GET /v2/keys/{aci}/1` with one-time key consumption. Every
//! fetch must get a one-time EC and Kyber key (the phase stops before the targets run
//! out), and no (target, kind, key id) may be handed out twice.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Env, Target, closed_loop, set_latency};
use crate::options::Scenario;
use crate::report::Outcome;

/// One-time keys per kind uploaded to each target, ids FIRST_ID..FIRST_ID + KEYS.
const KEYS: i64 = 100;
const FIRST_ID: i64 = 1000;

pub async fn run(env: &Env, target: &Target) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!target.is_relay(), "the relay has no keys");
    let o = &env.options;
    let client = env.client.clone();
    let caller = Arc::new(
        crate::accounts::register(&client, 1, false)
            .await?
            .remove(0),
    );
    eprintln!(
        "prekeys: registering {} targets with {KEYS} + {KEYS} one-time keys each",
        o.targets
    );
    let mut targets = Vec::new();
    let mut left = o.targets;
    while left > 0 {
        let batch = left.min(16);
        left -= batch;
        let setups: Vec<_> = (0..batch)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    // The Kyber one-time keys are signed by the account's identity key.
                    let (target, keys) = client.register_new().await?;
                    let upload = sealpost::api::entities::SetKeysRequestJson {
                        pre_keys: Some(keys.one_time_pre_keys(FIRST_ID..FIRST_ID + KEYS)),
                        pq_pre_keys: Some(keys.one_time_pq_pre_keys(FIRST_ID..FIRST_ID + KEYS)),
                        ..Default::default()
                    };
                    client.upload_keys(&target, &upload).await?;
                    Ok::<_, sealpost::client::ClientError>(target.aci)
                })
            })
            .collect();
        for setup in setups {
            targets.push(
                setup
                    .await?
                    .map_err(|e| anyhow::anyhow!("setting up a target: {e}"))?,
            );
        }
    }
    let targets = Arc::new(targets);
    let next = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let repeated = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicU64::new(0));
    let fetch = {
        let (client, targets, caller, next) = (
            client.clone(),
            targets.clone(),
            caller.clone(),
            next.clone(),
        );
        let (seen, repeated, exhausted) = (seen.clone(), repeated.clone(), exhausted.clone());
        move || {
            let (client, targets, caller) = (client.clone(), targets.clone(), caller.clone());
            let (seen, repeated, exhausted) = (seen.clone(), repeated.clone(), exhausted.clone());
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
                // One-time keys have ids from FIRST_ID; the last-resort key has id 1.
                match (&device.pre_key, &device.pq_pre_key) {
                    (Some(ec), Some(kem)) if kem.key_id >= FIRST_ID => {
                        let mut seen = seen.lock().expect("not poisoned");
                        for key in [(target, 'e', ec.key_id), (target, 'k', kem.key_id)] {
                            if !seen.insert(key) {
                                repeated.fetch_add(1, Ordering::Relaxed);
                            }
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
    // Never ask for more keys than were uploaded: every fetch must consume real keys.
    let budget = (targets.len() as u64 * KEYS as u64).min(o.max_requests);
    let progress = env.progress(Scenario::Prekeys, target, Duration::from_secs(o.seconds));
    let phase = closed_loop(&progress, o.concurrency, o.seconds, budget, fetch).await?;
    let mut outcome = Outcome::new(Scenario::Prekeys, target.name);
    outcome.server = progress.finish();
    set_latency(&mut outcome, &phase.hist);
    let distinct = seen.lock().expect("not poisoned").len();
    outcome
        .set("fetches_per_s", phase.per_second())
        .set("fetches", phase.requests as f64)
        .set("errors", phase.errors as f64)
        .set("repeated", repeated.load(Ordering::Relaxed) as f64)
        .set("exhausted", exhausted.load(Ordering::Relaxed) as f64)
        .set("distinct_keys", distinct as f64);
    Ok(outcome)
}
