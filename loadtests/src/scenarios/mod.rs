//! The scenarios of BENCHMARKS.md and what they share: where the targets are, a bounded
//! closed-loop phase of HTTP requests, and latency histograms. `run_set` runs the chosen
//! scenarios once, each against sealpost and then (where it has one) the same load
//! against the bare relay.

pub mod attachments;
pub mod auth;
pub mod connections;
pub mod drain;
pub mod fanout;
pub mod latency;
pub mod lookups;
pub mod pairs;
pub mod prekeys;
pub mod push;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sealpost::client::Client;

use crate::options::{Options, Scenario};
use crate::progress::Progress;
use crate::report::{Outcome, RELAY, Run, SEALPOST};

/// A server under load: its URL and, when known, its process (for CPU and memory).
#[derive(Clone, Debug)]
pub struct Target {
    pub name: &'static str,
    pub url: String,
    pub pid: Option<u32>,
}

impl Target {
    pub fn is_relay(&self) -> bool {
        self.name == RELAY
    }
}

/// Everything a scenario needs to know about the run.
pub struct Env {
    pub options: Options,
    pub sealpost: Target,
    pub relay: Option<Target>,
    pub client: Client,
    /// Relay peer ids are never reused within a process (a late socket cannot steal one).
    next_relay_id: AtomicU64,
}

impl Env {
    pub fn new(options: Options, sealpost: Target, relay: Option<Target>) -> Self {
        Self {
            client: Client::new(&sealpost.url),
            options,
            sealpost,
            relay,
            next_relay_id: AtomicU64::new(1),
        }
    }

    /// `n` fresh relay peer ids.
    pub fn relay_ids(&self, n: usize) -> u64 {
        self.next_relay_id.fetch_add(n as u64, Ordering::Relaxed)
    }

    pub fn progress(&self, scenario: Scenario, target: &Target, planned: Duration) -> Progress {
        Progress::start(
            format!("{}/{}", scenario.name(), target.name),
            planned,
            target.pid,
        )
    }
}

/// Runs every chosen scenario once against sealpost, then the relay where it applies.
pub async fn run_set(env: &Env, run: usize) -> anyhow::Result<Run> {
    let mut outcomes: Vec<Outcome> = Vec::new();
    for scenario in env.options.scenarios() {
        let mut targets = vec![env.sealpost.clone()];
        if scenario.has_relay_counterpart()
            && let Some(relay) = &env.relay
        {
            targets.push(relay.clone());
        }
        for target in targets {
            eprintln!("== run {run}: {} against {}", scenario.name(), target.name);
            let outcome = match scenario {
                Scenario::Pairs => pairs::run(env, &target).await?,
                Scenario::LatencyAtRate => {
                    // Half of this run's pairs rate against sealpost, for both targets.
                    let measured = outcomes
                        .iter()
                        .find(|o| o.scenario == Scenario::Pairs && o.target == SEALPOST)
                        .map(|o| o.get("msgs_per_s") / 2.0);
                    let rate = env.options.rate.or(measured).unwrap_or(500.0).max(1.0);
                    latency::run(env, &target, rate).await?
                }
                Scenario::Drain => drain::run(env, &target).await?,
                Scenario::Connections => connections::run(env, &target).await?,
                Scenario::Prekeys => prekeys::run(env, &target).await?,
                Scenario::Fanout => fanout::run(env, &target).await?,
                Scenario::Auth => auth::run(env, &target).await?,
                Scenario::Push => push::run(env, &target).await?,
                Scenario::Attachments => attachments::run(env, &target).await?,
                Scenario::Lookups => lookups::run(env, &target).await?,
            };
            eprintln!(
                "== {} {}: {}",
                scenario.name(),
                target.name,
                serde_json::to_string(&outcome.figures)?
            );
            outcomes.push(outcome);
        }
    }
    Ok(Run { run, outcomes })
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid histogram")
}

/// p50/p99/p99.9 of a microsecond histogram, in ms.
pub fn set_latency(outcome: &mut Outcome, hist: &Histogram<u64>) {
    let ms = |q| hist.value_at_quantile(q) as f64 / 1000.0;
    outcome.set("p50_ms", ms(0.5));
    outcome.set("p99_ms", ms(0.99));
    outcome.set("p999_ms", ms(0.999));
}

/// The result of a closed-loop phase.
pub struct Phase {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub hist: Histogram<u64>,
}

impl Phase {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// Runs `concurrency` loops of `request` for `seconds`, at most `max` requests in all;
/// `request` says whether the answer was the expected one.
pub async fn closed_loop<F, Fut>(
    progress: &Progress,
    concurrency: usize,
    seconds: u64,
    max: u64,
    request: F,
) -> anyhow::Result<Phase>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = bool> + Send,
{
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (request, issued) = (request.clone(), issued.clone());
        let counters = progress.counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut errors = 0u64;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                if request().await {
                    counters.done();
                } else {
                    errors += 1;
                    counters.error();
                }
                let _ = hist.record(t.elapsed().as_micros() as u64);
            }
            (hist, errors)
        }));
    }
    let mut hist = histogram();
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await?;
        hist.add(h)?;
        errors += e;
    }
    Ok(Phase {
        requests: hist.len() - errors,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        hist,
    })
}
