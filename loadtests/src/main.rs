//! sealpost's load generator. Each scenario drives a running sealpost over loopback, is
//! bounded in time and count, and prints a JSON result and a Markdown row.
//!
//! Scenarios so far: `pairs` (BENCHMARKS.md: pairs of sockets exchanging messages, delivered
//! messages/s and end-to-end latency, every message checked for loss, repeats and order); `auth` (authenticated `GET /v1/accounts/whoami` with a cached
//! credential, the same request without credentials, and with a wrong password, which pays
//! a full argon2 verification each time). The messaging scenarios of BENCHMARKS.md come with the
//! messaging issues.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use sealpost::client::{Client, DeviceCredentials};
use serde::Serialize;

#[derive(Parser, Clone)]
#[command(about = "Load scenarios against a running sealpost (loopback only)")]
struct Args {
    /// Base URL of the sealpost API; only loopback addresses are accepted.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, value_enum, default_value = "auth")]
    scenario: Scenario,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Hard cap on requests per phase (the loop stops at whichever comes first).
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Warm-up seconds before each measured phase (not counted).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// prekeys: target accounts, each given 100 EC and 100 Kyber one-time keys.
    #[arg(long, default_value_t = 500)]
    targets: usize,
    /// pairs: sender/receiver pairs, each on its own authenticated sockets.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// pairs: sends in flight per sender (each an independent ordered lane).
    #[arg(long, default_value_t = 4)]
    inflight: usize,
    /// pairs: content bytes per message.
    #[arg(long, default_value_t = 256)]
    message_bytes: usize,
    /// pairs: send sealed (type 6, access key, anonymous sender sockets) instead of identified.
    #[arg(long)]
    sealed: bool,
    /// fanout: recipient devices (one account each).
    #[arg(long, default_value_t = 100)]
    group: usize,
    /// fanout: shared ciphertext bytes of the send whose Redis memory is measured.
    #[arg(long, default_value_t = 65536)]
    payload_bytes: usize,
    /// fanout: Redis URL (loopback) to read memory from.
    #[arg(long)]
    redis_url: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    Auth,
    Prekeys,
    Pairs,
    Fanout,
}

#[derive(Serialize)]
struct Phase {
    name: &'static str,
    requests: u64,
    errors: u64,
    seconds: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or("");
    let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    anyhow::ensure!(
        loopback,
        "refusing to load {host:?}: only loopback targets are allowed"
    );
    Ok(())
}

/// Runs `concurrency` loops of `request` for `seconds` (bounded by `max_requests`);
/// `request` returns whether the answer was the expected one.
async fn run_phase<F, Fut>(
    name: &'static str,
    args: &Args,
    seconds: u64,
    request: F,
) -> anyhow::Result<Phase>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let request = request.clone();
        let issued = issued.clone();
        let max = args.max_requests;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("valid histogram");
            let mut errors = 0u64;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                if !request().await {
                    errors += 1;
                }
                let _ = hist.record(t.elapsed().as_micros() as u64);
            }
            (hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await?;
        hist.add(h)?;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = hist.len();
    Ok(Phase {
        name,
        requests,
        errors,
        seconds: elapsed,
        requests_per_second: requests as f64 / elapsed,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: hist.value_at_quantile(0.999) as f64 / 1000.0,
    })
}

async fn auth(args: &Args) -> anyhow::Result<Vec<Phase>> {
    let client = Client::new(&args.url);
    let (credentials, _) = client
        .register_new()
        .await
        .map_err(|e| anyhow::anyhow!("registering the load account: {e}"))?;
    let credentials: Arc<DeviceCredentials> = Arc::new(credentials);

    let authed = {
        let client = client.clone();
        let credentials = credentials.clone();
        move || {
            let client = client.clone();
            let credentials = credentials.clone();
            async move { client.whoami(&credentials).await.is_ok() }
        }
    };
    let anonymous = {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move {
                matches!(
                    client.http().get(client.url("/v1/accounts/whoami")).send().await,
                    Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED
                )
            }
        }
    };
    let wrong_password = {
        let client = client.clone();
        let mut wrong = (*credentials).clone();
        wrong.password = sealpost::client::random_password();
        let wrong = Arc::new(wrong);
        move || {
            let client = client.clone();
            let wrong = wrong.clone();
            async move {
                client.whoami(&wrong).await.err().and_then(|e| e.status())
                    == Some(reqwest::StatusCode::UNAUTHORIZED)
            }
        }
    };
    let mut phases = Vec::new();
    eprintln!("auth: warming up for {}s", args.warmup);
    run_phase("authenticated", args, args.warmup, authed.clone()).await?;
    eprintln!(
        "auth: measuring authenticated (cached credential) for {}s",
        args.seconds
    );
    phases.push(run_phase("authenticated", args, args.seconds, authed).await?);
    run_phase("unauthenticated", args, args.warmup, anonymous.clone()).await?;
    eprintln!(
        "auth: measuring unauthenticated (401, no header) for {}s",
        args.seconds
    );
    phases.push(run_phase("unauthenticated", args, args.seconds, anonymous).await?);
    eprintln!(
        "auth: measuring wrong password (full argon2 each) for {}s",
        args.seconds
    );
    phases.push(
        run_phase(
            "wrong password (argon2)",
            args,
            args.seconds,
            wrong_password,
        )
        .await?,
    );
    Ok(phases)
}

/// Concurrent `GET /v2/keys/{aci}/1` with one-time key consumption. Every fetch must get
/// a one-time EC and Kyber key (the run stops before the targets run out), and no
/// (target, key id) may be handed out twice.
async fn prekeys(args: &Args) -> anyhow::Result<Vec<Phase>> {
    use std::collections::HashSet;
    use std::sync::Mutex;

    let client = Client::new(&args.url);
    let (caller, _) = client
        .register_new()
        .await
        .map_err(|e| anyhow::anyhow!("registering the caller: {e}"))?;
    eprintln!(
        "prekeys: registering {} targets with 100 + 100 one-time keys each",
        args.targets
    );
    let mut setup = Vec::new();
    for chunk in 0..args.targets.div_ceil(16) {
        let n = 16.min(args.targets - chunk * 16);
        let mut batch = Vec::new();
        for _ in 0..n {
            let client = client.clone();
            batch.push(tokio::spawn(async move {
                let (target, keys) = client.register_new().await?;
                let upload = sealpost::api::entities::SetKeysRequestJson {
                    pre_keys: Some(keys.one_time_pre_keys(1000..1100)),
                    pq_pre_keys: Some(keys.one_time_pq_pre_keys(1000..1100)),
                    ..Default::default()
                };
                client.upload_keys(&target, &upload).await?;
                Ok::<_, sealpost::client::ClientError>(target.aci)
            }));
        }
        for task in batch {
            setup.push(
                task.await?
                    .map_err(|e| anyhow::anyhow!("setting up a target: {e}"))?,
            );
        }
    }
    let targets = Arc::new(setup);
    let caller = Arc::new(caller);
    let next = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let repeats = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicU64::new(0));
    let budget = (targets.len() * 100) as u64;
    let fetch = {
        let (client, targets, caller, next) = (
            client.clone(),
            targets.clone(),
            caller.clone(),
            next.clone(),
        );
        let (seen, repeats, exhausted) = (seen.clone(), repeats.clone(), exhausted.clone());
        move || {
            let (client, targets, caller) = (client.clone(), targets.clone(), caller.clone());
            let (seen, repeats, exhausted) = (seen.clone(), repeats.clone(), exhausted.clone());
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
                // One-time keys have ids 1000..1100; the last-resort key has id 1.
                match (&device.pre_key, &device.pq_pre_key) {
                    (Some(ec), Some(kem)) if kem.key_id >= 1000 => {
                        let mut seen = seen.lock().expect("not poisoned");
                        if !seen.insert((target, 'e', ec.key_id)) {
                            repeats.fetch_add(1, Ordering::Relaxed);
                        }
                        if !seen.insert((target, 'k', kem.key_id)) {
                            repeats.fetch_add(1, Ordering::Relaxed);
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
    eprintln!(
        "prekeys: measuring for up to {}s or {budget} fetches",
        args.seconds
    );
    // Never ask for more keys than were uploaded: every fetch must consume real keys.
    let mut bounded = args.clone();
    bounded.max_requests = bounded.max_requests.min(budget);
    let phase = run_phase("prekey fetches", &bounded, args.seconds, fetch).await?;
    let repeats = repeats.load(Ordering::Relaxed);
    eprintln!(
        "prekeys: {} distinct one-time keys handed out, {} repeated, {} fetches without a one-time key",
        seen.lock().expect("not poisoned").len(),
        repeats,
        exhausted.load(Ordering::Relaxed)
    );
    anyhow::ensure!(repeats == 0, "a one-time key was handed out twice");
    Ok(vec![phase])
}

/// What a receiver saw of one sender's lanes: repeats, late arrivals, and (at the end)
/// gaps below the highest sequence number seen.
#[derive(Default)]
struct LaneCheck {
    lanes: std::collections::HashMap<u32, (u64, std::collections::HashSet<u64>)>,
    duplicated: u64,
    reordered: u64,
}

impl LaneCheck {
    fn record(&mut self, lane: u32, seq: u64) {
        let (high, seen) = self.lanes.entry(lane).or_default();
        if !seen.insert(seq) {
            self.duplicated += 1;
            return;
        }
        if seq + 1 < *high {
            self.reordered += 1;
        }
        *high = (*high).max(seq + 1);
    }

    fn missing(&self) -> u64 {
        self.lanes
            .values()
            .map(|(high, seen)| high - seen.len() as u64)
            .sum()
    }
}

/// P pairs of authenticated sockets: each sender sends `message_bytes` envelopes through its
/// socket (tunnelled `PUT /v1/messages`) with `inflight` sends outstanding, each lane in
/// order; each receiver acknowledges every delivery. Every message carries its lane,
/// sequence number and send time, so the receivers measure end-to-end latency and report
/// missing, repeated and out-of-order messages.
async fn pairs(args: &Args) -> anyhow::Result<Vec<Phase>> {
    use sealpost::client::ws::WsClient;
    use sealpost::domain::encoding::encode_base64;
    use std::sync::Mutex;

    let client = Client::new(&args.url);
    eprintln!(
        "pairs: registering {} pairs and connecting their sockets",
        args.pairs
    );
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..args.pairs {
        let (sender, _) = client
            .register_new()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let receiver = if args.sealed {
            register_unrestricted(&client).await?
        } else {
            client
                .register_new()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .0
        };
        // Sealed senders send anonymously, as clients do: over an unauthenticated socket.
        let sender_ws = if args.sealed {
            WsClient::connect(&args.url, None).await?
        } else {
            WsClient::connect(&args.url, Some(&sender)).await?
        };
        let mut receiver_ws = WsClient::connect(&args.url, Some(&receiver)).await?;
        // Drain the (empty) backlog of both.
        let first = receiver_ws
            .next_request(Duration::from_secs(10))
            .await
            .ok_or_else(|| anyhow::anyhow!("no queue/empty"))?;
        receiver_ws.respond(first.id, 200).await?;
        senders.push((Arc::new(sender_ws), receiver.aci));
        receivers.push(receiver_ws);
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let budget = args.max_requests;
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let checks: Arc<Mutex<Vec<LaneCheck>>> = Arc::default();

    // Receivers: record latency and order, acknowledge every delivery, stop after a quiet
    // second past the deadline.
    let mut receiver_tasks = Vec::new();
    for mut ws in receivers {
        let (latency, checks) = (latency.clone(), checks.clone());
        receiver_tasks.push(tokio::spawn(async move {
            let mut check = LaneCheck::default();
            let mut hist = Histogram::<u64>::new(3).expect("valid histogram");
            let mut delivered = 0u64;
            loop {
                let wait = if Instant::now() < deadline {
                    Duration::from_secs(5)
                } else {
                    Duration::from_secs(1)
                };
                let Some(request) = ws.next_request(wait).await else {
                    break;
                };
                let _ = ws.respond(request.id, 200).await;
                let Some(content) = request.envelope().and_then(|e| e.content) else {
                    continue;
                };
                if content.len() < 20 {
                    continue;
                }
                let lane = u32::from_be_bytes(content[0..4].try_into().expect("4 bytes"));
                let seq = u64::from_be_bytes(content[4..12].try_into().expect("8 bytes"));
                let sent_at = u64::from_be_bytes(content[12..20].try_into().expect("8 bytes"));
                let now = started.elapsed().as_micros() as u64;
                let _ = hist.record(now.saturating_sub(sent_at));
                check.record(lane, seq);
                delivered += 1;
            }
            latency
                .lock()
                .expect("not poisoned")
                .add(hist)
                .expect("same bounds");
            checks.lock().expect("not poisoned").push(check);
            delivered
        }));
    }

    // Senders: `inflight` lanes per sender, each sending in order until the deadline.
    eprintln!(
        "pairs: sending for {}s ({} in flight per sender)",
        args.seconds, args.inflight
    );
    let mut sender_tasks = Vec::new();
    for (ws, target) in senders {
        for lane in 0..args.inflight as u32 {
            let (ws, sent, failed) = (ws.clone(), sent.clone(), failed.clone());
            let padding = args.message_bytes.max(20) - 20;
            let sealed = args.sealed;
            sender_tasks.push(tokio::spawn(async move {
                let path = format!("/v1/messages/{target}");
                let mut seq = 0u64;
                while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < budget {
                    let mut content = Vec::with_capacity(20 + padding);
                    content.extend_from_slice(&lane.to_be_bytes());
                    content.extend_from_slice(&seq.to_be_bytes());
                    content.extend_from_slice(&(started.elapsed().as_micros() as u64).to_be_bytes());
                    content.resize(20 + padding, 0x5a);
                    let body = serde_json::json!({
                        "messages": [{"type": if sealed { 6 } else { 1 }, "destinationDeviceId": 1, "content": encode_base64(&content)}],
                        "timestamp": 1,
                    });
                    let headers = if sealed {
                        vec![format!("Unidentified-Access-Key:{}", encode_base64(&[0u8; 16]))]
                    } else {
                        vec![]
                    };
                    match ws.request_json("PUT", &path, &body, headers).await {
                        Ok(r) if r.status == 200 => seq += 1,
                        other => {
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                match other {
                                    Ok(r) => eprintln!(
                                        "pairs: first failed send: HTTP {} {}",
                                        r.status,
                                        String::from_utf8_lossy(&r.body)
                                    ),
                                    Err(e) => eprintln!("pairs: first failed send: {e}"),
                                }
                            }
                        }
                    }
                }
            }));
        }
    }
    for task in sender_tasks {
        task.await?;
    }
    let sending = started.elapsed().as_secs_f64();
    let mut delivered = 0;
    for task in receiver_tasks {
        delivered += task.await?;
    }
    let hist = latency.lock().expect("not poisoned").clone();
    let checks = checks.lock().expect("not poisoned");
    let (missing, duplicated, reordered) = checks.iter().fold((0, 0, 0), |acc, c| {
        (
            acc.0 + c.missing(),
            acc.1 + c.duplicated,
            acc.2 + c.reordered,
        )
    });
    eprintln!(
        "pairs: delivered {delivered}, send failures {}, missing {missing}, repeated {duplicated}, out of order {reordered}",
        failed.load(Ordering::Relaxed)
    );
    anyhow::ensure!(
        missing == 0 && duplicated == 0,
        "messages were lost or repeated"
    );
    Ok(vec![Phase {
        name: "pairs delivered",
        requests: delivered,
        errors: failed.load(Ordering::Relaxed),
        seconds: sending,
        requests_per_second: delivered as f64 / sending,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: hist.value_at_quantile(0.999) as f64 / 1000.0,
    }])
}

/// An account whose access is unrestricted (any 16-byte key opens it).
async fn register_unrestricted(client: &Client) -> anyhow::Result<DeviceCredentials> {
    let keys = sealpost::client::AccountKeys::generate();
    let mut attributes = sealpost::client::default_attributes();
    attributes.unrestricted_unidentified_access = true;
    let password = sealpost::client::random_password();
    let response = client
        .register(&keys.registration_request(attributes), &password)
        .await
        .map_err(|e| anyhow::anyhow!("registering: {e}"))?;
    Ok(DeviceCredentials {
        aci: response.uuid,
        device: sealpost::domain::ids::DeviceId::PRIMARY,
        password,
    })
}

async fn redis_used_memory(url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO"))
}

/// Multi-recipient sealed sends to a group of `group` devices: first the Redis memory one
/// send of `payload_bytes` costs while nobody is connected (and after everyone acknowledged
/// it), then recipient deliveries per second with every recipient connected and acking.
async fn fanout(args: &Args) -> anyhow::Result<Vec<Phase>> {
    use sealpost::client::ws::WsClient;
    use sealpost::domain::multi_recipient::{VERSION_SERVICE_ID, encode};

    let client = Client::new(&args.url);
    eprintln!("fanout: registering {} recipients", args.group);
    let mut members = Vec::new();
    for _ in 0..args.group {
        members.push(register_unrestricted(&client).await?);
    }
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

    if let Some(redis_url) = &args.redis_url {
        ensure_loopback(redis_url)?;
        let before = redis_used_memory(redis_url).await?;
        anyhow::ensure!(
            send(body(args.payload_bytes)).await,
            "the measured send failed"
        );
        let after = redis_used_memory(redis_url).await?;
        let delta = after.saturating_sub(before);
        let per_device = delta.saturating_sub(args.payload_bytes as u64) as f64 / args.group as f64;
        eprintln!(
            "fanout: one send of {} payload bytes to {} devices: Redis used_memory +{delta} bytes \
             (payload + {per_device:.0} bytes per device)",
            args.payload_bytes, args.group
        );
    }

    eprintln!("fanout: connecting {} recipients", args.group);
    let delivered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut receivers = Vec::new();
    for member in &members {
        let mut ws = WsClient::connect(&args.url, Some(member)).await?;
        let delivered = delivered.clone();
        receivers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("valid histogram");
            while let Some(request) = ws
                .next_request(if Instant::now() < deadline {
                    Duration::from_secs(5)
                } else {
                    Duration::from_secs(1)
                })
                .await
            {
                let _ = ws.respond(request.id, 200).await;
                if request.envelope().is_some() {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    let _ = hist.record(1);
                }
            }
        }));
    }
    // The measured send (if any) is drained by now or soon; start counting from here.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = delivered.load(Ordering::Relaxed);
    let phase_start = Instant::now();
    let small = body(1024);
    let mut sends = 0u64;
    let mut failures = 0u64;
    while Instant::now() < deadline && sends < args.max_requests {
        if send(small.clone()).await {
            sends += 1;
        } else {
            failures += 1;
        }
    }
    let seconds = phase_start.elapsed().as_secs_f64();
    for task in receivers {
        task.await?;
    }
    let deliveries = delivered.load(Ordering::Relaxed) - baseline;
    eprintln!(
        "fanout: {sends} sends of 1 KiB to {} devices, {deliveries} deliveries",
        args.group
    );
    anyhow::ensure!(
        deliveries == sends * args.group as u64,
        "deliveries do not match sends x group"
    );
    Ok(vec![Phase {
        name: "fanout recipient deliveries",
        requests: deliveries,
        errors: failures,
        seconds,
        requests_per_second: deliveries as f64 / seconds,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
    }])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure_loopback(&args.url)?;
    let phases = match args.scenario {
        Scenario::Auth => auth(&args).await?,
        Scenario::Prekeys => prekeys(&args).await?,
        Scenario::Pairs => pairs(&args).await?,
        Scenario::Fanout => fanout(&args).await?,
    };
    println!("{}", serde_json::to_string_pretty(&phases)?);
    println!();
    println!("| phase | requests | errors | req/s | p50 ms | p99 ms | p99.9 ms |");
    println!("|---|---|---|---|---|---|---|");
    for p in &phases {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            p.name, p.requests, p.errors, p.requests_per_second, p.p50_ms, p.p99_ms, p.p999_ms
        );
    }
    if let [authed, anon, argon2] = &phases[..] {
        println!(
            "\nauthenticated / unauthenticated = {:.2}; authenticated / argon2-verified = {:.0}",
            authed.requests_per_second / anon.requests_per_second,
            authed.requests_per_second / argon2.requests_per_second
        );
    }
    Ok(())
}
