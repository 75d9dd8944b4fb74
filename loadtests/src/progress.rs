//! Progress while a phase runs: a line on stderr every second with what is done, the rate,
//! errors and the server's CPU and memory, and the server's usage over the phase (CPU
//! seconds, RSS before, after and the peak seen by the once-a-second samples).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::procstat::{self, Sample, Usage};

/// Counters a phase's tasks bump; the ticker reads them.
#[derive(Default)]
pub struct Counters {
    pub done: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Progress {
    pub counters: Arc<Counters>,
    pid: Option<u32>,
    before: Sample,
    peak: Arc<AtomicU64>,
    started: Instant,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts the once-a-second line for `label`, which expects to run about `planned`.
    pub fn start(label: String, planned: Duration, pid: Option<u32>) -> Self {
        let counters = Arc::new(Counters::default());
        let before = pid.and_then(procstat::sample).unwrap_or_default();
        let peak = Arc::new(AtomicU64::new(before.rss_bytes));
        let started = Instant::now();
        let ticker = {
            let (counters, peak) = (counters.clone(), peak.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                let (mut last_done, mut last_cpu) = (0, before.cpu_seconds);
                loop {
                    tick.tick().await;
                    let done = counters.done.load(Ordering::Relaxed);
                    let errors = counters.errors.load(Ordering::Relaxed);
                    let mut line = format!(
                        "[{label}] {:>4.0}s/{:.0}s  {done} done ({}/s)  {errors} errors",
                        started.elapsed().as_secs_f64(),
                        planned.as_secs_f64(),
                        done - last_done,
                    );
                    last_done = done;
                    if let Some(now) = pid.and_then(procstat::sample) {
                        peak.fetch_max(now.rss_bytes, Ordering::Relaxed);
                        line.push_str(&format!(
                            "  server {:.0}% CPU, {:.0} MB",
                            (now.cpu_seconds - last_cpu) * 100.0,
                            now.rss_bytes as f64 / 1048576.0
                        ));
                        last_cpu = now.cpu_seconds;
                    }
                    eprintln!("{line}");
                }
            })
        };
        Self {
            counters,
            pid,
            before,
            peak,
            started,
            ticker,
        }
    }

    /// The server's usage since `start` (zeros when its process is unknown).
    pub fn usage(&self) -> Usage {
        let after = self.pid.and_then(procstat::sample).unwrap_or_default();
        procstat::usage(
            self.before,
            after,
            self.peak.load(Ordering::Relaxed),
            self.started.elapsed().as_secs_f64(),
        )
    }

    /// Stops the line and returns the server's usage over the phase.
    pub fn finish(self) -> Usage {
        self.ticker.abort();
        self.usage()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}
