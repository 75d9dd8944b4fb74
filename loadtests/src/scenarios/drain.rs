//! `drain`: N messages queued for a device that is offline, then it connects and
//! acknowledges each delivery as it comes. The queue is filled fast by many anonymous
//! sockets sending sealed messages (no receipts, no sender lookups) on ordered lanes; the
//! figure is the drain: messages/s from connecting to `queue/empty`, and that time. Every
//! queued message must arrive exactly once, in order within its lane.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pairs::{Sender, take};
use super::{Env, Target};
use crate::conn::{self, Peer};
use crate::options::Scenario;
use crate::report::Outcome;
use crate::sequence::{self, LaneSent, Seen};

/// Ordered lanes per filling socket.
const LANES_PER_SENDER: usize = 4;

pub async fn run(env: &Env, target: &Target) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!target.is_relay(), "the relay stores nothing to drain");
    let o = &env.options;
    let receiver = crate::accounts::register(&env.client, 1, true)
        .await?
        .remove(0);
    let mut senders = Vec::new();
    for _ in 0..o.drain_senders {
        senders.push(Arc::new(
            Sender::sealed_to(target, &receiver.aci.to_string()).await?,
        ));
    }

    // Fill: bounded by the count and by a generous time limit.
    let fill_limit = Duration::from_secs(o.seconds.max(10) * 30);
    let progress = env.progress(Scenario::Drain, target, fill_limit);
    let started = Instant::now();
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(o.drain_messages));
    let mut lanes = Vec::new();
    for (s, sender) in senders.iter().enumerate() {
        for l in 0..LANES_PER_SENDER {
            let lane = (s * LANES_PER_SENDER + l) as u32;
            let (sender, budget) = (sender.clone(), budget.clone());
            let (counters, size) = (progress.counters.clone(), o.message_bytes);
            lanes.push(tokio::spawn(async move {
                let mut record = LaneSent::default();
                while started.elapsed() < fill_limit && take(&budget) {
                    let seq = record.attempted;
                    record.attempted += 1;
                    let content = sequence::encode(lane, seq, 0, size);
                    if matches!(sender.send(&content).await, Ok(true)) {
                        counters.done();
                    } else {
                        record.unconfirmed.insert(seq);
                        counters.error();
                    }
                }
                (lane, record)
            }));
        }
    }
    let mut sent = HashMap::new();
    for lane in lanes {
        let (id, record) = lane.await?;
        sent.insert(id, record);
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    drop(progress);
    let queued: u64 = sent
        .values()
        .map(|l| l.attempted - l.unconfirmed.len() as u64)
        .sum();
    let errors: usize = sent.values().map(|l| l.unconfirmed.len()).sum();
    eprintln!("drain: {queued} queued in {fill_seconds:.1}s; connecting the device");

    // Drain: connect, acknowledge everything, note when queue/empty comes.
    let drain_limit = Duration::from_secs(60.max(o.drain_messages / 1000));
    let progress = env.progress(Scenario::Drain, target, drain_limit);
    let started = Instant::now();
    let (_conn, mut inbox) =
        conn::connect(&target.url, &Peer::Sealpost(Some(receiver)), None, false).await?;
    let mut seen = Seen::default();
    let mut empty_after = None;
    let mut delivered_before_empty = 0u64;
    let cap = queued + 1000;
    let mut received = 0u64;
    while started.elapsed() < drain_limit && received < cap {
        // Once queue/empty came, anything still arriving is a stray: wait a second for it.
        let wait = if empty_after.is_some() { 1 } else { 10 };
        let Some(delivery) = inbox.next(Duration::from_secs(wait)).await else {
            break;
        };
        received += 1;
        let _ = inbox.ack(delivery.id).await;
        if delivery.queue_empty {
            empty_after.get_or_insert(started.elapsed().as_secs_f64());
            continue;
        }
        if let Some((lane, seq, _)) = delivery.content.as_deref().and_then(sequence::decode) {
            seen.record(lane, seq);
            progress.counters.done();
            if empty_after.is_none() {
                delivered_before_empty += 1;
            }
        }
    }
    let mut outcome = Outcome::new(Scenario::Drain, target.name);
    outcome.server = progress.finish();
    let to_empty = empty_after.unwrap_or(f64::NAN);
    if empty_after.is_none() {
        eprintln!("drain: no queue/empty within {drain_limit:?}");
    }
    outcome
        .set("queued", queued as f64)
        .set("fill_per_s", queued as f64 / fill_seconds)
        .set("seconds_to_queue_empty", to_empty)
        .set("msgs_per_s", delivered_before_empty as f64 / to_empty)
        .set("delivered", seen.delivered() as f64)
        .set("missing", seen.missing(&sent) as f64)
        .set("duplicated", seen.duplicated as f64)
        .set("out_of_order", seen.out_of_order as f64)
        .set("errors", errors as f64);
    Ok(outcome)
}
