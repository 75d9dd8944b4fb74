//! The load generator's options: what to run, against what, and how big. One struct for
//! every scenario, so a run's JSON records exactly the parameters it used.

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// The scenarios of BENCHMARKS.md, in the order a full run takes them (`pairs` first: its
/// rate sets `latency-at-rate`'s default). `push` runs only when named (see `DEFAULT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Pairs,
    LatencyAtRate,
    Drain,
    Connections,
    Prekeys,
    Fanout,
    Auth,
    Push,
    Attachments,
    Lookups,
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Scenario::Pairs,
        Scenario::LatencyAtRate,
        Scenario::Drain,
        Scenario::Connections,
        Scenario::Prekeys,
        Scenario::Fanout,
        Scenario::Auth,
        Scenario::Push,
        Scenario::Attachments,
        Scenario::Lookups,
    ];

    /// What runs when no `--scenario` is given: all but `push`, which needs a push sink and
    /// a server sending to it (`scripts/bench` has both; a server started by hand often
    /// has neither) and a thousand more accounts, and `attachments`, which needs a server on
    /// an S3 bucket this process can reach too.
    pub const DEFAULT: [Scenario; 8] = [
        Scenario::Pairs,
        Scenario::LatencyAtRate,
        Scenario::Drain,
        Scenario::Connections,
        Scenario::Prekeys,
        Scenario::Fanout,
        Scenario::Auth,
        Scenario::Lookups,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pairs => "pairs",
            Scenario::LatencyAtRate => "latency-at-rate",
            Scenario::Drain => "drain",
            Scenario::Connections => "connections",
            Scenario::Prekeys => "prekeys",
            Scenario::Fanout => "fanout",
            Scenario::Auth => "auth",
            Scenario::Push => "push",
            Scenario::Attachments => "attachments",
            Scenario::Lookups => "lookups",
        }
    }

    /// Whether the bare relay runs the same load (it has no storage, keys or accounts).
    pub fn has_relay_counterpart(self) -> bool {
        matches!(
            self,
            Scenario::Pairs | Scenario::LatencyAtRate | Scenario::Connections
        )
    }
}

#[derive(Parser, Clone, Debug, Serialize)]
#[command(
    about = "Every BENCHMARKS.md scenario against a running sealpost and the bare relay this \
             binary contains, back to back (loopback only)"
)]
pub struct Options {
    /// Base URL of the sealpost API; only loopback addresses are accepted.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Scenarios to run (comma separated); all but `push` by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// How many times to run the whole set; the report quotes the median of each figure.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Small counts and short phases: a smoke test of the harness, not a measurement.
    #[arg(long)]
    pub quick: bool,
    /// The server's process id, for its CPU and memory (found by the URL's port otherwise).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Use a relay already running here instead of starting one (`--serve-relay`).
    #[arg(long)]
    pub relay_url: Option<String>,
    /// Do not run anything: read the run JSON files (`run-*.json`) in this folder, written
    /// by earlier invocations (one per fresh server, as `scripts/bench` does), and write and
    /// print their summary as if they had been one invocation's runs.
    #[arg(long, value_name = "DIR")]
    pub summarize: Option<String>,
    /// Do not run anything: serve the bare relay on this address and print where it listens.
    #[arg(long)]
    pub serve_relay: Option<String>,
    /// Do not run anything: serve the push sink (a local FCM stand-in that counts what it
    /// is sent) on this address, write its service-account JSON to `--push-credentials` and
    /// print where it listens. Point sealpost at it with `SEALPOST_FCM_URL=<that URL>` and
    /// `SEALPOST_FCM_CREDENTIALS_FILE=<the JSON>`.
    #[arg(long, value_name = "ADDR", requires = "push_credentials")]
    pub serve_push_sink: Option<String>,
    /// With `--serve-push-sink`: where to write the service-account JSON (its `token_uri`
    /// is the sink's `/token`).
    #[arg(long, value_name = "FILE")]
    pub push_credentials: Option<String>,
    /// With `--serve-push-sink`: serve HTTPS under a CA made for the run and write the CA's
    /// PEM here (for `SEALPOST_PUSH_CA_FILE`); plain HTTP without it.
    #[arg(long, value_name = "FILE")]
    pub push_ca: Option<String>,
    /// Do not run anything: serve a local S3-compatible server (s3s over s3s-fs, SigV4
    /// checked with `--s3-access-key`/`--s3-secret-key`) on this address, objects under
    /// `--s3-root`, and print where it listens.
    #[arg(long, value_name = "ADDR")]
    pub serve_s3: Option<String>,
    #[arg(long, value_name = "DIR", default_value = "target/loadtests/s3")]
    pub s3_root: String,
    /// attachments: the server's bucket for the plain-copy baseline (else
    /// `SEALPOST_S3_ENDPOINT` / `SEALPOST_S3_BUCKET`); with `--serve-s3`, the keys it checks.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    #[arg(long)]
    pub s3_bucket: Option<String>,
    #[arg(long, default_value = "bench-access-key")]
    pub s3_access_key: String,
    #[arg(long, default_value = "bench-secret-key")]
    pub s3_secret_key: String,
    /// attachments: object sizes in bytes (each uploaded, downloaded and copied).
    #[arg(long, value_delimiter = ',', default_value = "1048576,20971520")]
    pub attachment_sizes: Vec<usize>,
    /// attachments: objects of each size.
    #[arg(long, default_value_t = 10)]
    pub attachment_count: usize,
    /// attachments: small expired objects the timed sweeper pass deletes.
    #[arg(long, default_value_t = 1000)]
    pub attachment_sweep_objects: usize,
    /// attachments: the upload during which the server's memory is sampled.
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    pub attachment_rss_bytes: usize,
    /// push: the push sink whose `/count` tells the pushes the server sent.
    #[arg(long, value_name = "URL")]
    pub push_sink_url: Option<String>,
    /// Skip the relay (throughput figures then have no ratio).
    #[arg(long)]
    pub no_relay: bool,
    /// Folder for the JSON of each run and the summary (created if missing).
    #[arg(long, default_value = "target/loadtests")]
    pub out_dir: String,
    /// Redis URL (loopback) the server uses: fanout reads memory from it.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// The server's Redis key prefix: fanout sums `MEMORY USAGE` over its keys.
    #[arg(long)]
    pub redis_prefix: Option<String>,
    /// The server's Postgres URL (loopback): connections writes its devices there directly.
    #[arg(long)]
    pub database_url: Option<String>,

    /// Seconds each measured phase runs (every loop also has a count bound).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Warm-up seconds before a measured phase (not counted).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Hard cap on requests or messages per phase.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_requests: u64,
    /// Concurrent clients of the HTTP scenarios (auth, prekeys, lookups).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// pairs, latency-at-rate: sender/receiver pairs, each on its own socket.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// pairs: sends outstanding per sender (each an ordered lane).
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    /// pairs, latency-at-rate, drain: content bytes per message.
    #[arg(long, default_value_t = 256)]
    pub message_bytes: usize,
    /// pairs: sealed sends (type 6 from anonymous sockets) instead of identified ones.
    #[arg(long)]
    pub sealed: bool,
    /// pairs (and latency-at-rate, which shares its sockets): every receiver registers an
    /// FCM token (`PUT /v1/accounts/gcm/`) before it connects; nothing else changes, so a
    /// run with and one without compare what being push-registered costs a connected
    /// receiver (BENCHMARKS.md: at least 0.95 of the run without).
    #[arg(long)]
    pub push_tokens: bool,
    /// latency-at-rate: offered messages/s over all senders (default: half of this run's
    /// `pairs` rate against sealpost).
    #[arg(long)]
    pub rate: Option<f64>,
    /// drain: messages queued for the offline device.
    #[arg(long, default_value_t = 100_000)]
    pub drain_messages: u64,
    /// drain: concurrent sealed senders filling the queue.
    #[arg(long, default_value_t = 16)]
    pub drain_senders: usize,
    /// connections: idle authenticated sockets to hold.
    #[arg(long, default_value_t = 20_000)]
    pub connections: usize,
    /// connections: seconds to hold them all before measuring memory and closing.
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// connections: source addresses 127.0.0.2 .. 127.0.0.(1 + N) (bind before connect).
    #[arg(long, default_value_t = 50)]
    pub source_addresses: u8,
    /// prekeys: target accounts, each given 100 EC and 100 Kyber one-time keys.
    #[arg(long, default_value_t = 500)]
    pub targets: usize,
    /// lookups: accounts, each with a confirmed username whose hash is looked up.
    #[arg(long, default_value_t = 500)]
    pub usernames: usize,
    /// fanout: recipient devices (one account each).
    #[arg(long, default_value_t = 100)]
    pub group: usize,
    /// fanout: shared ciphertext bytes of the send whose Redis memory is measured.
    #[arg(long, default_value_t = 65536)]
    pub payload_bytes: usize,
    /// push: offline receivers, each registered with an FCM token and never connected.
    #[arg(long, default_value_t = 1000)]
    pub push_receivers: usize,
    /// push: connected senders sending urgent messages to the receivers round-robin (each
    /// with `--inflight` lanes).
    #[arg(long, default_value_t = 4)]
    pub push_senders: usize,
    /// push: messages queued per receiver at most (the sends stop there, and the window
    /// with them), so the queues stay bounded whatever the rate: 250 x 1000 receivers is
    /// more than 12 s at 20,000 sends/s. They are deleted with the receivers afterwards.
    #[arg(long, default_value_t = 250)]
    pub push_queue_depth: u64,
}

impl Options {
    /// Defaults for every field, as if no flag were given.
    pub fn defaults() -> Self {
        Options::parse_from(["sealpost-loadtest"])
    }

    /// The scenarios to run, in the canonical order.
    pub fn scenarios(&self) -> Vec<Scenario> {
        if self.scenario.is_empty() {
            return Scenario::DEFAULT.to_vec();
        }
        Scenario::ALL
            .into_iter()
            .filter(|s| self.scenario.contains(s))
            .collect()
    }

    /// Shrinks every count and phase for `--quick` (a smoke test in seconds).
    pub fn apply_quick(&mut self) {
        if !self.quick {
            return;
        }
        self.seconds = self.seconds.min(2);
        self.warmup = self.warmup.min(1);
        self.concurrency = self.concurrency.min(4);
        self.pairs = self.pairs.min(3);
        self.drain_messages = self.drain_messages.min(500);
        self.drain_senders = self.drain_senders.min(4);
        self.connections = self.connections.min(40);
        self.hold = self.hold.min(1);
        self.source_addresses = self.source_addresses.min(4);
        self.targets = self.targets.min(6);
        self.usernames = self.usernames.min(8);
        self.group = self.group.min(5);
        self.payload_bytes = self.payload_bytes.min(4096);
        // Fewer receivers, each allowed more: the sends of a short phase still fit.
        self.push_receivers = self.push_receivers.min(50);
        self.push_queue_depth = self.push_queue_depth.max(1000);
        self.push_senders = self.push_senders.min(2);
        self.attachment_sizes = vec![1024 * 1024, 6 * 1024 * 1024];
        self.attachment_count = self.attachment_count.min(2);
        self.attachment_rss_bytes = self.attachment_rss_bytes.min(12 * 1024 * 1024);
        self.attachment_sweep_objects = self.attachment_sweep_objects.min(50);
    }
}

/// Refuses anything but loopback: the load generator must never load someone else's host.
pub fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    // scheme://[user[:password]@]host[:port]/...; an IPv6 host "[::1]" splits to "[".
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = host_port.split(':').next().unwrap_or("");
    let loopback =
        host == "localhost" || host.starts_with("127.") || host_port.starts_with("[::1]");
    anyhow::ensure!(
        loopback,
        "refusing to load {host:?}: only loopback targets are allowed"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(ensure_loopback("http://127.0.0.1:8080").is_ok());
        assert!(ensure_loopback("redis://localhost:6379").is_ok());
        assert!(ensure_loopback("http://10.0.0.1:8080").is_err());
        assert!(ensure_loopback("postgres://postgres@example.com/db").is_err());
        assert!(ensure_loopback("postgres://postgres:pw@127.0.0.1:5432/db").is_ok());
    }

    #[test]
    fn no_scenario_flag_means_every_scenario_but_push_in_order() {
        assert_eq!(Options::defaults().scenarios(), Scenario::DEFAULT.to_vec());
        assert!(!Scenario::DEFAULT.contains(&Scenario::Push));
        let mut options = Options::defaults();
        options.scenario = vec![Scenario::Push, Scenario::Pairs];
        assert_eq!(options.scenarios(), [Scenario::Pairs, Scenario::Push]);
    }
}
