//! `fanout`: multi-recipient sealed sends (`PUT /v1/messages/multi_recipient`) to a group of
//! G devices. First the Redis memory one send of `payload_bytes` costs while every recipient
//! is offline (INFO `used_memory`, and `MEMORY USAGE` summed over the server's key prefix
//! when it is known: other users of a shared Redis do not disturb that one); then, with
//! every recipient connected and acknowledging, recipient deliveries per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealpost::domain::multi_recipient::{VERSION_SERVICE_ID, encode};

use super::{Env, Target};
use crate::conn::{self, Peer};
use crate::options::{Scenario, ensure_loopback};
use crate::report::Outcome;

/// Shared ciphertext of the sends in the throughput phase.
const THROUGHPUT_PAYLOAD: usize = 1024;

pub async fn run(env: &Env, target: &Target) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!target.is_relay(), "the relay has no multi-recipient sends");
    let o = &env.options;
    let client = env.client.clone();
    eprintln!("fanout: registering {} recipients", o.group);
    let members = crate::accounts::register(&client, o.group, true).await?;
    let body = |payload: usize| {
        let recipients: Vec<_> = members
            .iter()
            .map(|m| (m.aci, vec![(1u8, 0u16)], [7u8; 48]))
            .collect();
        encode(
            VERSION_SERVICE_ID,
            &recipients,
            &[9u8; 32],
            &vec![0x5au8; payload],
        )
    };
    let send = |body: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .http()
                .put(client.url("/v1/messages/multi_recipient?ts=1"))
                .header("Content-Type", "application/vnd.signal-messenger.mrm")
                .header(
                    "Unidentified-Access-Key",
                    sealpost::domain::encoding::encode_base64(&[0u8; 16]),
                )
                .body(body)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        }
    };
    let mut outcome = Outcome::new(Scenario::Fanout, target.name);
    let mut measured_sends = 0u64;
    if let Some(redis_url) = &o.redis_url {
        ensure_loopback(redis_url)?;
        let prefix = o.redis_prefix.as_deref();
        let (used_before, keys_before) = redis_memory(redis_url, prefix).await?;
        anyhow::ensure!(
            send(body(o.payload_bytes)).await,
            "the measured send failed"
        );
        let (used_after, keys_after) = redis_memory(redis_url, prefix).await?;
        let used = used_after as f64 - used_before as f64;
        let per_send = match (keys_before, keys_after) {
            (Some(b), Some(a)) => a as f64 - b as f64,
            _ => used,
        };
        // The first send also creates every device's queue; a second one measures what a
        // send costs once the queues exist (the shared ciphertext again once, plus each
        // device's entry).
        anyhow::ensure!(
            send(body(o.payload_bytes)).await,
            "the second measured send failed"
        );
        measured_sends = 2;
        let (used_again, keys_again) = redis_memory(redis_url, prefix).await?;
        let again = match (keys_after, keys_again) {
            (Some(b), Some(a)) => a as f64 - b as f64,
            _ => used_again as f64 - used_after as f64,
        };
        outcome
            .set("redis_used_memory_delta", used)
            .set("redis_bytes_per_send", per_send)
            .set(
                "bytes_per_device_over_payload",
                (per_send - o.payload_bytes as f64) / o.group as f64,
            )
            .set("redis_bytes_per_further_send", again)
            .set(
                "bytes_per_device_over_payload_further",
                (again - o.payload_bytes as f64) / o.group as f64,
            );
    }

    eprintln!("fanout: connecting {} recipients", o.group);
    let mut inboxes = Vec::new();
    for member in &members {
        let (_, inbox) = conn::connect(
            &target.url,
            &Peer::Sealpost(Some(member.clone())),
            None,
            false,
        )
        .await?;
        inboxes.push(inbox);
    }
    // The phase starts once everyone is connected (that can take long on a busy machine);
    // the extra second lets the measured send's deliveries arrive first.
    let delivered = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(o.seconds) + Duration::from_secs(1);
    let mut receivers = Vec::new();
    for mut inbox in inboxes {
        let delivered = delivered.clone();
        receivers.push(tokio::spawn(async move {
            while let Some(delivery) = inbox.next_until(deadline).await {
                let _ = inbox.ack(delivery.id).await;
                if delivery.content.is_some() {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let progress = env.progress(Scenario::Fanout, target, Duration::from_secs(o.seconds));
    let started = Instant::now();
    let small = body(THROUGHPUT_PAYLOAD);
    let (mut sends, mut failures) = (0u64, 0u64);
    while Instant::now() + Duration::from_secs(1) < deadline && sends < o.max_requests {
        if send(small.clone()).await {
            sends += 1;
            for _ in 0..o.group {
                progress.counters.done();
            }
        } else {
            failures += 1;
            progress.counters.error();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for receiver in receivers {
        receiver.await?;
    }
    outcome.server = progress.finish();
    let expected = (sends + measured_sends) * o.group as u64;
    let got = delivered.load(Ordering::Relaxed);
    outcome
        .set(
            "deliveries_per_s",
            (sends * o.group as u64) as f64 / seconds,
        )
        .set("sends", sends as f64)
        .set("group", o.group as f64)
        .set("missing", expected.saturating_sub(got) as f64)
        .set("duplicated", got.saturating_sub(expected) as f64)
        .set("errors", failures as f64);
    Ok(outcome)
}

/// Redis `used_memory`, and the `MEMORY USAGE` of every key under `prefix` when given.
async fn redis_memory(url: &str, prefix: Option<&str>) -> anyhow::Result<(u64, Option<u64>)> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO"))?;
    let Some(prefix) = prefix else {
        return Ok((used, None));
    };
    let mut total = 0u64;
    let mut cursor = 0u64;
    // SCAN is bounded by the keyspace; one pass over our prefix's keys.
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        for key in keys {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await?;
            total += bytes.unwrap_or(0);
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok((used, Some(total)))
}
