//! `pairs`: P sender/receiver pairs, each on its own socket. Every sender keeps `inflight`
//! ordered lanes, each sending its next message as soon as the previous one was accepted
//! (sealpost: the tunnelled `PUT /v1/messages/{aci}` answered 200; relay: forwarded);
//! every receiver acknowledges each delivery. With `--push-tokens` every receiver first
//! registers an FCM token, so the same run measures what being push-registered costs a
//! connected device. Also the pair plumbing `latency` and `push` reuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sealpost::domain::encoding::encode_base64;

use super::{Env, Target, histogram, set_latency};
use crate::conn::{self, Conn, Inbox, Peer};
use crate::options::Scenario;
use crate::progress::Counters;
use crate::report::Outcome;
use crate::sequence::{self, LaneSent, Seen};

/// How a sender addresses its receiver.
enum Dest {
    Sealpost { path: String, sealed: bool },
    Relay(u64),
}

/// The sending end of a pair.
pub struct Sender {
    conn: Conn,
    dest: Dest,
}

impl Sender {
    /// An anonymous sealpost socket that sends sealed messages to account `to`.
    pub async fn sealed_to(target: &Target, to: &str) -> anyhow::Result<Self> {
        let (conn, _) = conn::connect(&target.url, &Peer::Sealpost(None), None, true).await?;
        Ok(Self {
            conn,
            dest: Dest::Sealpost {
                path: format!("/v1/messages/{to}"),
                sealed: true,
            },
        })
    }

    /// Sends one content; `Ok(true)` when the server accepted it.
    pub async fn send(&self, content: &[u8]) -> anyhow::Result<bool> {
        match &self.dest {
            Dest::Relay(to) => Ok(self.conn.relay_send(*to, content).await? == 200),
            Dest::Sealpost { path, sealed } => {
                send_tunnelled(&self.conn, path, *sealed, content).await
            }
        }
    }
}

/// One content through a sealpost socket's tunnelled `PUT /v1/messages/{aci}` (`path`) to
/// the account's device 1, urgent (the default); `Ok(true)` when the server accepted it.
pub async fn send_tunnelled(
    conn: &Conn,
    path: &str,
    sealed: bool,
    content: &[u8],
) -> anyhow::Result<bool> {
    let body = serde_json::json!({
        "messages": [{
            "type": if sealed { 6 } else { 1 },
            "destinationDeviceId": 1,
            "content": encode_base64(content),
        }],
        "timestamp": 1,
    });
    let mut headers = vec!["content-type:application/json".to_owned()];
    if sealed {
        // Receivers are registered with unrestricted access: any key opens them.
        headers.push(format!(
            "Unidentified-Access-Key:{}",
            encode_base64(&[0u8; 16])
        ));
    }
    let status = conn
        .request("PUT", path, serde_json::to_vec(&body)?, headers)
        .await?;
    Ok(status == 200)
}

/// Senders and receivers of `n` pairs, connected and with empty backlogs; with
/// `--push-tokens`, every sealpost receiver registered an FCM token before connecting.
pub async fn connect_pairs(
    env: &Env,
    target: &Target,
    n: usize,
    sealed: bool,
) -> anyhow::Result<(Vec<Sender>, Vec<Inbox>)> {
    let mut senders = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    if target.is_relay() {
        let base = env.relay_ids(2 * n);
        for i in 0..n as u64 {
            let (receiver_id, sender_id) = (base + 2 * i, base + 2 * i + 1);
            let (_, inbox) =
                conn::connect(&target.url, &Peer::Relay(receiver_id), None, false).await?;
            let (conn, _) = conn::connect(&target.url, &Peer::Relay(sender_id), None, true).await?;
            receivers.push(inbox);
            senders.push(Sender {
                conn,
                dest: Dest::Relay(receiver_id),
            });
        }
        return Ok((senders, receivers));
    }
    eprintln!("registering {} accounts", 2 * n);
    let sending = crate::accounts::register(&env.client, n, false).await?;
    let receiving = crate::accounts::register(&env.client, n, sealed).await?;
    if env.options.push_tokens {
        eprintln!("registering {n} FCM tokens");
        crate::accounts::register_fcm_tokens(&env.client, &receiving).await?;
    }
    for (sender, receiver) in sending.into_iter().zip(receiving) {
        let (_, mut inbox) = conn::connect(
            &target.url,
            &Peer::Sealpost(Some(receiver.clone())),
            None,
            false,
        )
        .await?;
        let first = inbox
            .next(Duration::from_secs(10))
            .await
            .ok_or_else(|| anyhow::anyhow!("no queue/empty for a new receiver"))?;
        anyhow::ensure!(first.queue_empty, "a new receiver had a backlog");
        inbox.ack(first.id).await?;
        // Sealed senders send anonymously, as clients do; identified ones acknowledge the
        // delivery receipts the server sends them (auto_ack), as clients do.
        let as_whom = Peer::Sealpost((!sealed).then_some(sender));
        let (conn, _) = conn::connect(&target.url, &as_whom, None, true).await?;
        receivers.push(inbox);
        senders.push(Sender {
            conn,
            dest: Dest::Sealpost {
                path: format!("/v1/messages/{}", receiver.aci),
                sealed,
            },
        });
    }
    Ok((senders, receivers))
}

/// Microseconds since `epoch`: the clock messages carry.
pub fn micros_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// Receivers acknowledge and check every delivery until a quiet second after `deadline`
/// (hard stop 30 s after it); latency is arrival minus the time the content carries.
pub fn spawn_receivers(
    receivers: Vec<Inbox>,
    epoch: Instant,
    deadline: Instant,
    counters: Arc<Counters>,
) -> Vec<tokio::task::JoinHandle<(Histogram<u64>, Seen)>> {
    receivers
        .into_iter()
        .map(|mut inbox| {
            let counters = counters.clone();
            tokio::spawn(async move {
                let (mut hist, mut seen) = (histogram(), Seen::default());
                while let Some(delivery) = inbox.next_until(deadline).await {
                    let _ = inbox.ack(delivery.id).await;
                    let Some((lane, seq, sent_at)) =
                        delivery.content.as_deref().and_then(sequence::decode)
                    else {
                        continue;
                    };
                    let _ = hist.record(micros_since(epoch).saturating_sub(sent_at));
                    seen.record(lane, seq);
                    counters.done();
                }
                (hist, seen)
            })
        })
        .collect()
}

/// Joins the receivers and fills in latency and the delivery checks.
pub async fn collect(
    outcome: &mut Outcome,
    receivers: Vec<tokio::task::JoinHandle<(Histogram<u64>, Seen)>>,
    sent: &HashMap<u32, LaneSent>,
) -> anyhow::Result<u64> {
    let (mut hist, mut seen) = (histogram(), Seen::default());
    for task in receivers {
        let (h, s) = task.await?;
        hist.add(h)?;
        seen.merge(s);
    }
    set_latency(outcome, &hist);
    let delivered = seen.delivered();
    outcome.set("delivered", delivered as f64);
    outcome.set("missing", seen.missing(sent) as f64);
    outcome.set("duplicated", seen.duplicated as f64);
    outcome.set("out_of_order", seen.out_of_order as f64);
    Ok(delivered)
}

pub async fn run(env: &Env, target: &Target) -> anyhow::Result<Outcome> {
    let o = &env.options;
    let (senders, receivers) = connect_pairs(env, target, o.pairs, o.sealed).await?;
    let progress = env.progress(Scenario::Pairs, target, Duration::from_secs(o.seconds));
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs(o.seconds);
    let receiving = spawn_receivers(receivers, epoch, deadline, progress.counters.clone());
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(o.max_requests));
    let first_failure = Arc::new(Mutex::new(None::<String>));
    let mut lanes = Vec::new();
    for (s, sender) in senders.into_iter().enumerate() {
        let sender = Arc::new(sender);
        for l in 0..o.inflight {
            let lane = (s * o.inflight + l) as u32;
            let (sender, budget, first_failure) =
                (sender.clone(), budget.clone(), first_failure.clone());
            let (counters, size) = (progress.counters.clone(), o.message_bytes);
            lanes.push(tokio::spawn(async move {
                let mut record = LaneSent::default();
                while Instant::now() < deadline && take(&budget) {
                    let seq = record.attempted;
                    record.attempted += 1;
                    let content = sequence::encode(lane, seq, micros_since(epoch), size);
                    let ok = sender.send(&content).await;
                    if !matches!(ok, Ok(true)) {
                        record.unconfirmed.insert(seq);
                        counters.error();
                        let mut first = first_failure.lock().expect("not poisoned");
                        if first.is_none() {
                            *first = Some(format!("{ok:?}"));
                        }
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
    let sending = epoch.elapsed().as_secs_f64();
    let mut outcome = Outcome::new(Scenario::Pairs, target.name);
    let delivered = collect(&mut outcome, receiving, &sent).await?;
    outcome.server = progress.finish();
    let errors: usize = sent.values().map(|l| l.unconfirmed.len()).sum();
    if let Some(failure) = first_failure.lock().expect("not poisoned").take() {
        eprintln!("pairs: first failed send: {failure}");
    }
    outcome
        .set("msgs_per_s", delivered as f64 / sending)
        .set("seconds", sending)
        .set("errors", errors as f64)
        .set("pairs", o.pairs as f64)
        .set("inflight", o.inflight as f64);
    if !target.is_relay() {
        outcome.set("push_tokens", if o.push_tokens { 1.0 } else { 0.0 });
    }
    Ok(outcome)
}

/// Takes one unit of a shared count bound; false once it is spent.
pub fn take(budget: &std::sync::atomic::AtomicU64) -> bool {
    use std::sync::atomic::Ordering;
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
        .is_ok()
}
