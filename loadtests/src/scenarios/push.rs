//! `push`: N receivers registered with FCM tokens and never connected, and a few connected
//! senders sending them urgent messages round-robin, each lane its next as soon as the
//! previous one was accepted (pairs' plumbing). No receiver has a socket, so every accepted
//! send owes one urgent wake-up at once (PROTOCOL.md 11.4); the push sink the server sends
//! them to counts what arrives. The figures: pushes/s as the sink counted them over the
//! measured window (after the warm-up, which also fetches the access token and opens the
//! connection), sends/s over the same window, and how many sends still had no push once the
//! server had caught up. Queues stay bounded: at most `--push-queue-depth` messages per
//! receiver are sent, and the receivers' accounts (queues included) are deleted afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::pairs::{send_tunnelled, take};
use super::{Env, Target};
use crate::conn::{self, Peer};
use crate::options::{Scenario, ensure_loopback};
use crate::procstat;
use crate::push_sink::{SinkCount, read_count};
use crate::report::Outcome;
use crate::sequence;

/// How often the coordinator looks at the clock and the budget.
const POLL: Duration = Duration::from_millis(20);
/// After the sends: how long the sink's count may stand still before the server is taken
/// to have sent all it will, and how long to wait at most.
const SETTLED_AFTER: Duration = Duration::from_secs(2);
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

pub async fn run(env: &Env, target: &Target) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!target.is_relay(), "the relay sends no pushes");
    let o = &env.options;
    let sink_url = o.push_sink_url.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "push needs --push-sink-url: start a sink (sealpost-loadtest --serve-push-sink \
             127.0.0.1:0 --push-credentials FILE), start the server with \
             SEALPOST_FCM_URL=<the sink's URL> and SEALPOST_FCM_CREDENTIALS_FILE=FILE, and \
             pass the URL here (scripts/bench does all of it)"
        )
    })?;
    ensure_loopback(sink_url)?;
    let sink = Sink::new(sink_url, o.push_ca.as_deref())?;
    let n = o.push_receivers.max(1);

    // Receivers: seeded with a cheap password hash when the database is at hand (a thousand
    // full argon2 checks for the token requests and deletions would take minutes), else
    // registered through the API.
    let mut seeded = None;
    let receivers = match &o.database_url {
        Some(database_url) => {
            eprintln!("push: writing {n} receivers into the database");
            let s = crate::accounts::seed(database_url, n).await?;
            let devices = s.devices.clone();
            seeded = Some(s);
            devices
        }
        None => {
            eprintln!("push: registering {n} receivers (no --database-url to seed them)");
            crate::accounts::register(&env.client, n, false).await?
        }
    };
    let result = measure(env, target, &sink, &receivers).await;
    eprintln!("push: deleting the {n} receivers and their queues");
    let deleted = crate::accounts::delete(&env.client, &receivers).await;
    if let Some(seeded) = seeded {
        // What the API could not delete (it failed part-way); nothing if it could.
        seeded.remove().await?;
    }
    let outcome = result?;
    deleted?;
    Ok(outcome)
}

async fn measure(
    env: &Env,
    target: &Target,
    sink: &Sink,
    receivers: &[sealpost::client::DeviceCredentials],
) -> anyhow::Result<Outcome> {
    let o = &env.options;
    eprintln!("push: registering {} FCM tokens", receivers.len());
    crate::accounts::register_fcm_tokens(&env.client, receivers).await?;
    let paths: Arc<Vec<String>> = Arc::new(
        receivers
            .iter()
            .map(|r| format!("/v1/messages/{}", r.aci))
            .collect(),
    );
    let mut senders = Vec::new();
    for sender in crate::accounts::register(&env.client, o.push_senders.max(1), false).await? {
        let (conn, _) =
            conn::connect(&target.url, &Peer::Sealpost(Some(sender)), None, true).await?;
        senders.push(Arc::new(conn));
    }

    let initial = sink.count().await?;
    let planned = Duration::from_secs(o.warmup + o.seconds);
    let progress = env.progress(Scenario::Push, target, planned);
    let started = Instant::now();
    let (window_start, stop_at) = (started + Duration::from_secs(o.warmup), started + planned);
    let queue_bound = o.push_queue_depth.saturating_mul(receivers.len() as u64);
    let budget = Arc::new(AtomicU64::new(o.max_requests.min(queue_bound)));
    let (next, accepted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failed = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut lanes = Lanes(Vec::new());
    for (s, conn) in senders.iter().enumerate() {
        for l in 0..o.inflight.max(1) {
            let lane = (s * o.inflight.max(1) + l) as u32;
            let (conn, paths, budget) = (conn.clone(), paths.clone(), budget.clone());
            let (next, accepted, failed) = (next.clone(), accepted.clone(), failed.clone());
            let (counters, first_failure) = (progress.counters.clone(), first_failure.clone());
            let size = o.message_bytes;
            lanes.0.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while Instant::now() < stop_at && take(&budget) {
                    let to = next.fetch_add(1, Ordering::Relaxed) as usize % paths.len();
                    let content = sequence::encode(lane, seq, 0, size);
                    seq += 1;
                    match send_tunnelled(&conn, &paths[to], false, &content).await {
                        Ok(true) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            counters.done();
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            counters.error();
                            let mut first = first_failure.lock().expect("not poisoned");
                            first.get_or_insert_with(|| format!("{other:?}"));
                        }
                    }
                }
            }));
        }
    }

    let spent = || budget.load(Ordering::Relaxed) == 0;
    wait_until(window_start, spent).await;
    anyhow::ensure!(
        !spent(),
        "push: the queue bound ({} messages per receiver) was reached during the warm-up: \
         raise --push-queue-depth or --push-receivers",
        o.push_queue_depth
    );
    let (at_start, sent_at_start) = (sink.count().await?, accepted.load(Ordering::Relaxed));
    let cpu_at_start = target.pid.and_then(procstat::sample);
    let window_opened = Instant::now();
    wait_until(stop_at, spent).await;
    let (at_end, sent_at_end) = (sink.count().await?, accepted.load(Ordering::Relaxed));
    let cpu_at_end = target.pid.and_then(procstat::sample);
    let window = window_opened.elapsed().as_secs_f64();
    for lane in std::mem::take(&mut lanes.0) {
        lane.await?;
    }
    let server = progress.finish();
    let sent = accepted.load(Ordering::Relaxed);
    let errors = failed.load(Ordering::Relaxed);
    if let Some(failure) = first_failure.lock().expect("not poisoned").take() {
        eprintln!("push: first failed send: {failure}");
    }

    // The server sends pushes beside the sends, not in their answers: give it time to
    // catch up, then count what never came.
    let settled = settle(sink, initial.pushes + sent).await?;
    let pushes = at_end.pushes - at_start.pushes;
    let mut outcome = Outcome::new(Scenario::Push, target.name);
    outcome.server = server;
    outcome
        .set("pushes_per_s", pushes as f64 / window)
        .set("sends_per_s", (sent_at_end - sent_at_start) as f64 / window)
        .set("seconds", window)
        .set("sent", sent as f64)
        .set("pushed", (settled.pushes - initial.pushes) as f64)
        .set(
            "unpushed",
            sent.saturating_sub(settled.pushes - initial.pushes) as f64,
        )
        .set(
            "sink_rejected",
            (settled.rejected - initial.rejected) as f64,
        )
        .set("access_tokens", (settled.tokens - initial.tokens) as f64)
        .set("errors", errors as f64)
        .set("receivers", receivers.len() as f64)
        .set("senders", senders.len() as f64);
    if let (Some(before), Some(after)) = (cpu_at_start, cpu_at_end)
        && pushes > 0
    {
        let cpu = after.cpu_seconds - before.cpu_seconds;
        outcome.set("server_cpu_us_per_push", cpu * 1e6 / pushes as f64);
    }
    if pushes == 0 {
        eprintln!(
            "push: the sink counted no pushes in the window: is the server configured for \
             FCM (SEALPOST_FCM_URL, SEALPOST_FCM_CREDENTIALS_FILE) with this sink?"
        );
    }
    Ok(outcome)
}

/// The sending lanes, stopped if the measurement ends early (an error), so none still
/// sends while the receivers are deleted.
struct Lanes(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Lanes {
    fn drop(&mut self) {
        for lane in &self.0 {
            lane.abort();
        }
    }
}

/// The sink's `/count`, over HTTPS trusting the sink's CA when it has one.
struct Sink {
    http: reqwest::Client,
    url: String,
}

impl Sink {
    fn new(url: &str, ca: Option<&str>) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(path) = ca {
            let pem = std::fs::read(path)?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Self {
            http: builder.build()?,
            url: url.to_owned(),
        })
    }

    async fn count(&self) -> anyhow::Result<SinkCount> {
        read_count(&self.http, &self.url)
            .await
            .map_err(|e| anyhow::anyhow!("push: reading the sink's count: {e}"))
    }
}

/// Waits until `deadline`, or less if `done` turns true.
async fn wait_until(deadline: Instant, done: impl Fn() -> bool) {
    while Instant::now() < deadline && !done() {
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// The sink's count once `expected` pushes arrived, or it stood still for `SETTLED_AFTER`.
async fn settle(sink: &Sink, expected: u64) -> anyhow::Result<SinkCount> {
    let started = Instant::now();
    let mut last = sink.count().await?;
    let mut still_since = Instant::now();
    while last.pushes < expected
        && still_since.elapsed() < SETTLED_AFTER
        && started.elapsed() < SETTLE_LIMIT
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = sink.count().await?;
        if now.pushes != last.pushes {
            still_since = Instant::now();
        }
        last = now;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::SEALPOST;

    #[tokio::test]
    async fn push_without_a_sink_url_fails_and_says_how_to_start_one() {
        let mut options = crate::options::Options::defaults();
        options.scenario = vec![Scenario::Push];
        let target = Target {
            name: SEALPOST,
            url: "http://127.0.0.1:9".into(),
            pid: None,
        };
        let env = Env::new(options, target.clone(), None);
        let error = run(&env, &target).await.unwrap_err().to_string();
        assert!(error.contains("--push-sink-url"), "{error}");
        assert!(error.contains("SEALPOST_FCM_URL"), "{error}");
    }
}
