//! Watches a server's `/health/ready` while a fault runs and remembers what it answered, in
//! order: `200`, `503`, or `down` (nothing answered).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Ready {
    Ok,
    Unavailable,
    Down,
}

pub async fn probe(http: &reqwest::Client, admin: &str) -> Ready {
    match http.get(format!("{admin}/health/ready")).send().await {
        Ok(r) if r.status() == 200 => Ready::Ok,
        Ok(r) if r.status() == 503 => Ready::Unavailable,
        _ => Ready::Down,
    }
}

/// Polls every 100 ms until stopped; keeps each change with the time it was seen.
pub struct Watcher {
    seen: Arc<Mutex<Vec<(Duration, Ready)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub fn start(admin: String) -> Self {
        let seen: Arc<Mutex<Vec<(Duration, Ready)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("a client without TLS builds");
            let started = Instant::now();
            while !st.load(Ordering::SeqCst) {
                let now = probe(&http, &admin).await;
                {
                    let mut seen = s.lock().expect("watcher");
                    if seen.last().map(|(_, r)| *r) != Some(now) {
                        seen.push((started.elapsed(), now));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { seen, stop, task }
    }

    pub fn history(&self) -> Vec<(Duration, Ready)> {
        self.seen.lock().expect("watcher").clone()
    }

    pub fn last(&self) -> Option<Ready> {
        self.history().last().map(|(_, r)| *r)
    }

    /// Waits until `want` is seen after the current history, up to `timeout`.
    pub async fn wait_for(&self, want: Ready, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.last() == Some(want) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub async fn stop(self) -> Vec<(Duration, Ready)> {
        self.stop.store(true, Ordering::SeqCst);
        let history = self.seen.clone();
        let _ = self.task.await;
        history.lock().expect("watcher").clone()
    }
}

/// `ok@0.0s unavailable@1.2s ok@5.3s`
pub fn describe(history: &[(Duration, Ready)]) -> String {
    history
        .iter()
        .map(|(t, r)| {
            let r = match r {
                Ready::Ok => "200",
                Ready::Unavailable => "503",
                Ready::Down => "down",
            };
            format!("{r}@{:.1}s", t.as_secs_f64())
        })
        .collect::<Vec<_>>()
        .join(" ")
}
