//! `latency-at-rate`: the pairs of `pairs` at a fixed offered rate, open loop. Each sender
//! has a schedule (its share of the rate) and each message carries the time it was
//! *scheduled*, not the time it finally went out, so queueing anywhere (client, server,
//! stores) shows in the latency (no coordinated omission). Sends overlap freely on a
//! socket, so arrival order may differ from the schedule: out-of-order is reported, not an
//! error here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::pairs::{collect, connect_pairs, spawn_receivers};
use super::{Env, Target};
use crate::options::Scenario;
use crate::report::Outcome;
use crate::sequence::{self, LaneSent};

/// Sends one sender may have outstanding; past it the schedule slips (and latency shows it).
const MAX_OUTSTANDING_PER_SENDER: usize = 1024;

pub async fn run(env: &Env, target: &Target, rate: f64) -> anyhow::Result<Outcome> {
    let o = &env.options;
    let (senders, receivers) = connect_pairs(env, target, o.pairs, o.sealed).await?;
    eprintln!(
        "latency-at-rate: offering {rate:.0} msgs/s over {} senders for {}s",
        senders.len(),
        o.seconds
    );
    let progress = env.progress(
        Scenario::LatencyAtRate,
        target,
        Duration::from_secs(o.seconds),
    );
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs(o.seconds);
    let receiving = spawn_receivers(receivers, epoch, deadline, progress.counters.clone());
    let interval = Duration::from_secs_f64(senders.len() as f64 / rate);
    // Every sender's count is bounded too: its share of the rate over the phase, and the cap.
    let per_sender =
        ((rate * o.seconds as f64 / senders.len() as f64).ceil() as u64).min(o.max_requests);
    let mut schedules = Vec::new();
    for (s, sender) in senders.into_iter().enumerate() {
        let lane = s as u32;
        let sender = Arc::new(sender);
        let record = Arc::new(Mutex::new(LaneSent::default()));
        let (counters, size) = (progress.counters.clone(), o.message_bytes);
        // Spread the senders' first sends over one interval.
        let offset = interval.mul_f64(s as f64 / o.pairs.max(1) as f64);
        schedules.push(tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(MAX_OUTSTANDING_PER_SENDER));
            let mut sends = Vec::new();
            for seq in 0..per_sender {
                let at = epoch + offset + interval.mul_f64(seq as f64);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                record.lock().expect("not poisoned").attempted = seq + 1;
                let scheduled_us = (at - epoch).as_micros() as u64;
                let content = sequence::encode(lane, seq, scheduled_us, size);
                let (sender, record, counters) = (sender.clone(), record.clone(), counters.clone());
                sends.push(tokio::spawn(async move {
                    if !matches!(sender.send(&content).await, Ok(true)) {
                        record.lock().expect("not poisoned").unconfirmed.insert(seq);
                        counters.error();
                    }
                    drop(slot);
                }));
            }
            for send in sends {
                let _ = send.await;
            }
            let record = record.lock().expect("not poisoned").clone();
            (lane, record)
        }));
    }
    let mut sent = HashMap::new();
    for schedule in schedules {
        let (lane, record) = schedule.await?;
        sent.insert(lane, record);
    }
    let sending = epoch.elapsed().as_secs_f64();
    let mut outcome = Outcome::new(Scenario::LatencyAtRate, target.name);
    let delivered = collect(&mut outcome, receiving, &sent).await?;
    outcome.server = progress.finish();
    let errors: usize = sent.values().map(|l| l.unconfirmed.len()).sum();
    outcome
        .set("offered_per_s", rate)
        .set("msgs_per_s", delivered as f64 / sending)
        .set("errors", errors as f64);
    Ok(outcome)
}
