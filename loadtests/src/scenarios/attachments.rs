//! `attachments` (on demand): sealpost's TUS upload and its download against the store the
//! server is configured with, beside a plain copy of the same bytes to the same store. For
//! each size (`--attachment-sizes`, default 1 MiB and 20 MiB) it uploads
//! `--attachment-count` objects one after another, each in one creation-with-upload `POST`
//! (form first), downloads each whole, and copies the same bytes straight into the bucket
//! with sealpost's own S3 store (5 MiB multipart parts, no HTTP hop through a pod) and reads
//! those back straight from the bucket: the figures are MiB/s of each, and the ratios upload
//! / plain copy and download / plain read. Then one 100 MiB upload
//! while the server's resident memory is sampled every 10 ms: its growth over the idle
//! pod is the memory an upload costs. The plain copy needs the bucket's settings in this
//! process's environment (`SEALPOST_S3_*`, as the server has them); `scripts/bench` starts a
//! local S3 server (`--serve-s3`) and sets both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sealpost::client::DeviceCredentials;
use sealpost::storage::objects::ObjectStore;
use sealpost::storage::objects::s3::{S3Objects, S3Settings};

use super::{Env, Target};
use crate::options::Scenario;
use crate::procstat;
use crate::report::Outcome;

const MIB: usize = 1024 * 1024;
const PART: usize = 5 * MIB;

pub async fn run(env: &Env, target: &Target) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!target.is_relay(), "the relay stores no attachments");
    let o = &env.options;
    let plain = plain_store(o)?;
    let who = crate::accounts::register(&env.client, 1, false)
        .await?
        .remove(0);
    let http = reqwest::Client::new();
    let mut outcome = Outcome::new(Scenario::Attachments, target.name);
    let progress = env.progress(
        Scenario::Attachments,
        target,
        Duration::from_secs(o.seconds),
    );
    let before = target.pid.and_then(procstat::sample);
    let started = Instant::now();
    for &size in &o.attachment_sizes {
        let count = o.attachment_count.max(1);
        let data = Bytes::from(pattern(size));
        let mib = (size * count) as f64 / MIB as f64;
        let label = if size % MIB == 0 {
            format!("{}mib", size / MIB)
        } else {
            format!("{size}b")
        };

        let clock = Instant::now();
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push(upload(env, &http, &who, data.clone()).await?);
            progress.counters.done();
        }
        let upload_s = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        for key in &keys {
            let bytes = http
                .get(env.client.url(&format!("/attachments/{key}")))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            anyhow::ensure!(bytes == data, "a download differs from its upload");
        }
        let download_s = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let mut copies = Vec::with_capacity(count);
        for _ in 0..count {
            copies.push(copy(&plain, data.clone()).await?);
        }
        let copy_s = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        for key in &copies {
            read_plain(&plain, key, data.len()).await?;
        }
        let plain_get_s = clock.elapsed().as_secs_f64();
        for key in &copies {
            plain.delete(key).await?;
        }

        outcome.set(&format!("upload_mib_s_{label}"), mib / upload_s);
        outcome.set(&format!("download_mib_s_{label}"), mib / download_s);
        outcome.set(&format!("plain_copy_mib_s_{label}"), mib / copy_s);
        outcome.set(&format!("upload_vs_plain_copy_{label}"), copy_s / upload_s);
        outcome.set(&format!("plain_get_mib_s_{label}"), mib / plain_get_s);
        outcome.set(
            &format!("download_vs_plain_get_{label}"),
            plain_get_s / download_s,
        );
        eprintln!(
            "attachments {label}: upload {:.1} MiB/s, download {:.1} MiB/s, plain copy {:.1} \
             MiB/s, plain get {:.1} MiB/s",
            mib / upload_s,
            mib / download_s,
            mib / copy_s,
            mib / plain_get_s
        );
    }
    let (swept, seconds) = sweep(o).await?;
    outcome.set("sweeper_objects", swept as f64);
    outcome.set("sweeper_deleted_per_s", swept as f64 / seconds);
    eprintln!(
        "attachments: the sweeper deleted {swept} expired objects in {seconds:.2} s ({:.0}/s)",
        swept as f64 / seconds
    );
    if let Some(pid) = target.pid {
        let growth = rss_during_upload(env, &http, &who, pid, o.attachment_rss_bytes).await?;
        outcome.set("rss_growth_mib_during_100mib_upload", growth);
    }
    if let (Some(before), Some(after)) = (before, target.pid.and_then(procstat::sample)) {
        outcome.server = procstat::usage(
            before,
            after,
            after.rss_bytes,
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(outcome)
}

/// The bucket the server writes to: `--s3-endpoint`/`--s3-bucket` and the keys, or the same
/// `SEALPOST_S3_*` variables the server reads.
fn plain_store(o: &crate::options::Options) -> anyhow::Result<S3Objects> {
    let var =
        |name: &str, given: &Option<String>| {
            given.clone().or_else(|| std::env::var(name).ok()).ok_or_else(|| {
            anyhow::anyhow!(
                "attachments needs {name} (the server's bucket, for the plain-copy baseline); \
                 scripts/bench sets it"
            )
        })
        };
    let env_or = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let settings = S3Settings {
        endpoint: var("SEALPOST_S3_ENDPOINT", &o.s3_endpoint)?,
        region: env_or("SEALPOST_S3_REGION", "us-east-1"),
        bucket: var("SEALPOST_S3_BUCKET", &o.s3_bucket)?,
        access_key_id: env_or("SEALPOST_S3_ACCESS_KEY_ID", &o.s3_access_key),
        secret_access_key: env_or("SEALPOST_S3_SECRET_ACCESS_KEY", &o.s3_secret_key),
        path_style: true,
    };
    Ok(S3Objects::new(&settings)?)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// One attachment through the form and one creation-with-upload `POST`; its key.
async fn upload(
    env: &Env,
    http: &reqwest::Client,
    who: &DeviceCredentials,
    data: Bytes,
) -> anyhow::Result<String> {
    let form: serde_json::Value = http
        .get(env.client.url(&format!(
            "/v4/attachments/form/upload?uploadLength={}",
            data.len()
        )))
        .header("Authorization", who.authorization())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let response = http
        .post(text(&form["signedUploadLocation"]))
        .header("Tus-Resumable", "1.0.0")
        .header("Authorization", text(&form["headers"]["Authorization"]))
        .header("Upload-Metadata", text(&form["headers"]["Upload-Metadata"]))
        .header("Upload-Length", data.len().to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(data)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "an upload answered {}",
        response.status()
    );
    Ok(text(&form["key"]))
}

/// The same bytes straight into the bucket, as the server stores them: 5 MiB parts. The
/// key written.
async fn copy(store: &S3Objects, data: Bytes) -> anyhow::Result<String> {
    let key = format!("bench/{}", uuid::Uuid::new_v4().simple());
    let upload = store.start_upload(&key).await?;
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(PART).enumerate() {
        let part = data.slice_ref(chunk);
        parts.push(store.put_part(&key, &upload, i as u32 + 1, part).await?);
    }
    store.complete_upload(&key, &upload, &parts).await?;
    Ok(key)
}

/// An object straight from the bucket, whole.
async fn read_plain(store: &S3Objects, key: &str, size: usize) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let mut stream = store
        .get(key, None)
        .await?
        .ok_or_else(|| anyhow::anyhow!("a copied object is missing"))?;
    let mut read = 0;
    while let Some(chunk) = stream.next().await {
        read += chunk?.len();
    }
    anyhow::ensure!(read == size, "a copied object reads back short");
    Ok(())
}

/// Writes `n` small attachments into the bucket and times one pass of sealpost's sweeper
/// (its own code, on this bucket) with every object past retention: what it deleted (these
/// and whatever the scenario uploaded) and the seconds it took.
async fn sweep(o: &crate::options::Options) -> anyhow::Result<(usize, f64)> {
    let n = o.attachment_sweep_objects;
    use sealpost::domain::clock::Clock;
    use sealpost::limits::{Limit, RateLimiter, RateLimitsConfig};
    use sealpost::metrics::Metrics;
    use sealpost::service::attachment_sweeper::AttachmentSweeper;
    use sealpost::service::uploads::{UploadParts, UploadService};
    use sealpost::storage::memory::{MemoryRateLimitStore, MemoryUploadStore};

    let objects: Arc<dyn ObjectStore> = Arc::new(plain_store(o)?);
    for i in 0..n {
        objects
            .put(
                &format!("attachments/sweep-{i:06}"),
                Bytes::from_static(b"x"),
            )
            .await?;
    }
    let metrics = Metrics::new();
    let limits = RateLimitsConfig {
        enabled: false,
        specs: Limit::ALL.map(|l| (l, l.default_spec())).into(),
    };
    let limiter = RateLimiter::new(
        &limits,
        Arc::new(MemoryRateLimitStore::new()),
        metrics.clone(),
        [0; 32],
    );
    let clock = Clock::default();
    let uploads = UploadService::new(UploadParts {
        objects: objects.clone(),
        uploads: Arc::new(MemoryUploadStore::new()),
        limiter,
        secret: [0; 32],
        clock: clock.clone(),
        max_bytes: 1,
        base: "http://127.0.0.1".into(),
        metrics: metrics.clone(),
        max_streams: 1,
    })?;
    // Everything is past a retention of zero once a moment has passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sweeper = AttachmentSweeper {
        objects,
        uploads,
        clock,
        retention: Duration::ZERO,
        expire_objects: Arc::new(AtomicBool::new(true)),
        metrics,
    };
    let clock = Instant::now();
    let swept = sweeper.sweep().await?;
    Ok((swept.attachments, clock.elapsed().as_secs_f64()))
}

/// The server's resident-memory growth (MiB) over its idle level while one upload of
/// `size` bytes streams in, sampled every 10 ms.
async fn rss_during_upload(
    env: &Env,
    http: &reqwest::Client,
    who: &DeviceCredentials,
    pid: u32,
    size: usize,
) -> anyhow::Result<f64> {
    let data = Bytes::from(pattern(size));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = procstat::sample(pid).map_or(0, |s| s.rss_bytes);
    let peak = Arc::new(AtomicU64::new(idle));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(sample) = procstat::sample(pid) {
                    peak.fetch_max(sample.rss_bytes, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let result = upload(env, http, who, data).await;
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    result?;
    let growth = peak.load(Ordering::Relaxed).saturating_sub(idle) as f64 / MIB as f64;
    eprintln!(
        "attachments: idle RSS {:.1} MiB, peak during a {} MiB upload +{growth:.1} MiB",
        idle as f64 / MIB as f64,
        size / MIB
    );
    Ok(growth)
}
