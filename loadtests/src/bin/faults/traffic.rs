//! Steady message traffic that survives faults, and its ledger. Senders send over plain
//! HTTP to the servers in turn (identified sends with Basic credentials, sealed sends with
//! an access key), each message carrying its sender and sequence number in its content; a
//! send that fails (5xx, reset, timeout) is retried with the same content until it gets a
//! 200. Receivers hold authenticated sockets, reconnect by themselves when one drops, record
//! every delivery by server GUID and by content, and acknowledge it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealpost::client::ws::WsClient;
use sealpost::client::{Client, DeviceCredentials};
use sealpost::domain::encoding::encode_base64;
use sealpost::domain::ids::Aci;
use tokio::task::JoinHandle;

const MAGIC: &[u8; 4] = b"SPFT";
const CONTENT_BYTES: usize = 160;

/// (sender, sequence number): what a message is, independent of the GUID the server gives it.
pub type MessageId = (u32, u64);

/// What every sender and receiver writes down. std Mutexes: held for a map update only.
#[derive(Default)]
pub struct Ledger {
    /// Messages given a sequence number (each counted once, however often retried).
    pub sent: AtomicU64,
    pub attempts: AtomicU64,
    pub acknowledged: Mutex<HashSet<MessageId>>,
    /// Failed attempts by kind: `503`, `other status NNN`, `transport`.
    pub failures: Mutex<HashMap<String, u64>>,
    /// Error answers whose body was not `{"code","message"}` JSON.
    pub non_json_errors: AtomicU64,
    /// Deliveries per message, and the server GUIDs seen.
    pub delivered: Mutex<HashMap<MessageId, u32>>,
    pub guids: Mutex<HashSet<Vec<u8>>>,
    pub duplicate_guids: AtomicU64,
    pub deliveries: AtomicU64,
    pub reconnects: AtomicU64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Counts {
    pub sent: u64,
    pub attempts: u64,
    pub acknowledged: u64,
    pub delivered: u64,
    pub deliveries: u64,
    pub duplicates_by_guid: u64,
    pub duplicates_by_content: u64,
    pub delivered_without_200: u64,
    pub lost: u64,
    pub failed_attempts: HashMap<String, u64>,
    pub non_json_errors: u64,
    pub receiver_reconnects: u64,
}

impl Ledger {
    pub fn counts(&self) -> Counts {
        let acknowledged = self.acknowledged.lock().expect("ledger").clone();
        let delivered = self.delivered.lock().expect("ledger").clone();
        let lost = acknowledged
            .iter()
            .filter(|id| !delivered.contains_key(id))
            .count() as u64;
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
            acknowledged: acknowledged.len() as u64,
            delivered: delivered.len() as u64,
            deliveries: self.deliveries.load(Ordering::Relaxed),
            duplicates_by_guid: self.duplicate_guids.load(Ordering::Relaxed),
            duplicates_by_content: delivered
                .values()
                .map(|n| u64::from(*n - 1))
                .sum::<u64>()
                .saturating_sub(self.duplicate_guids.load(Ordering::Relaxed)),
            delivered_without_200: delivered
                .keys()
                .filter(|id| !acknowledged.contains(id))
                .count() as u64,
            lost,
            failed_attempts: self.failures.lock().expect("ledger").clone(),
            non_json_errors: self.non_json_errors.load(Ordering::Relaxed),
            receiver_reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Acknowledged messages not delivered yet.
    pub fn outstanding(&self) -> usize {
        let acknowledged = self.acknowledged.lock().expect("ledger");
        let delivered = self.delivered.lock().expect("ledger");
        acknowledged
            .iter()
            .filter(|id| !delivered.contains_key(id))
            .count()
    }

    fn failure(&self, kind: String) {
        *self
            .failures
            .lock()
            .expect("ledger")
            .entry(kind)
            .or_default() += 1;
    }
}

pub struct Pair {
    pub sender: DeviceCredentials,
    pub receiver: DeviceCredentials,
    pub sealed: bool,
}

/// Registers `n` sender/receiver pairs (every other one sealed; sealed receivers allow
/// unrestricted unidentified access, so any access key opens them).
pub async fn register_pairs(client: &Client, n: usize) -> anyhow::Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for i in 0..n {
        let sealed = i % 2 == 1;
        let (sender, _) = client
            .register_new()
            .await
            .map_err(|e| anyhow::anyhow!("registering a sender: {e}"))?;
        let receiver = sealpost_loadtests::accounts::register_one(client, sealed).await?;
        pairs.push(Pair {
            sender,
            receiver,
            sealed,
        });
    }
    Ok(pairs)
}

fn content(sender: u32, seq: u64) -> Vec<u8> {
    let mut content = Vec::with_capacity(CONTENT_BYTES);
    content.extend_from_slice(MAGIC);
    content.extend_from_slice(&sender.to_be_bytes());
    content.extend_from_slice(&seq.to_be_bytes());
    content.resize(CONTENT_BYTES, 0x5a);
    content
}

fn parse_content(content: &[u8]) -> Option<MessageId> {
    if content.len() < 16 || &content[..4] != MAGIC {
        return None;
    }
    Some((
        u32::from_be_bytes(content[4..8].try_into().ok()?),
        u64::from_be_bytes(content[8..16].try_into().ok()?),
    ))
}

/// The running senders and receivers.
pub struct Traffic {
    pub ledger: Arc<Ledger>,
    sending: Arc<AtomicBool>,
    receiving: Arc<AtomicBool>,
    senders: Vec<JoinHandle<()>>,
    receivers: Vec<JoinHandle<()>>,
}

/// How the traffic behaves.
#[derive(Clone)]
pub struct TrafficConfig {
    /// The servers' API bases; senders and receivers spread over them.
    pub bases: Vec<String>,
    /// Pause between one sender's messages.
    pub interval: Duration,
    /// Receivers close their socket and reconnect this often (connection churn), if set.
    pub churn: Option<Duration>,
}

impl Traffic {
    pub fn start(pairs: Vec<Pair>, config: TrafficConfig) -> Self {
        let ledger = Arc::new(Ledger::default());
        let sending = Arc::new(AtomicBool::new(true));
        let receiving = Arc::new(AtomicBool::new(true));
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client without TLS builds");
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for (i, pair) in pairs.into_iter().enumerate() {
            senders.push(tokio::spawn(send_loop(
                i as u32,
                pair.sender,
                pair.receiver.aci,
                pair.sealed,
                http.clone(),
                config.clone(),
                ledger.clone(),
                sending.clone(),
            )));
            receivers.push(tokio::spawn(receive_loop(
                i,
                pair.receiver,
                config.clone(),
                ledger.clone(),
                receiving.clone(),
            )));
        }
        Self {
            ledger,
            sending,
            receiving,
            senders,
            receivers,
        }
    }

    /// Stops sending (each sender finishes its current message, retries included, for up
    /// to `retry_for`), then waits up to `drain` for every acknowledged message to arrive.
    pub async fn finish(self, drain: Duration) -> Counts {
        self.sending.store(false, Ordering::SeqCst);
        for sender in self.senders {
            let _ = sender.await;
        }
        let deadline = tokio::time::Instant::now() + drain;
        while self.ledger.outstanding() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A little longer, so late duplicates are counted too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.receiving.store(false, Ordering::SeqCst);
        for receiver in self.receivers {
            let _ = receiver.await;
        }
        self.ledger.counts()
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_loop(
    index: u32,
    sender: DeviceCredentials,
    target: Aci,
    sealed: bool,
    http: reqwest::Client,
    config: TrafficConfig,
    ledger: Arc<Ledger>,
    sending: Arc<AtomicBool>,
) {
    let mut seq = 0u64;
    let mut attempt = index as usize;
    while sending.load(Ordering::SeqCst) {
        seq += 1;
        ledger.sent.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "messages": [{
                "type": if sealed { 6 } else { 1 },
                "destinationDeviceId": 1,
                "content": encode_base64(&content(index, seq)),
            }],
            "timestamp": seq,
        });
        // Retry the same content until it is acknowledged; a stopped run gives up only on
        // messages that never got a 200 (they are "sent", not "acknowledged").
        let mut retries = 0u32;
        loop {
            let base = &config.bases[attempt % config.bases.len()];
            attempt += 1;
            ledger.attempts.fetch_add(1, Ordering::Relaxed);
            let request = http.put(format!("{base}/v1/messages/{target}")).json(&body);
            let request = if sealed {
                request.header("Unidentified-Access-Key", encode_base64(&[7u8; 16]))
            } else {
                request.header("Authorization", sender.authorization())
            };
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    ledger
                        .acknowledged
                        .lock()
                        .expect("ledger")
                        .insert((index, seq));
                    break;
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let json = response
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .filter(|v| v["code"].as_u64() == Some(u64::from(status)));
                    if json.is_none() {
                        ledger.non_json_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    ledger.failure(if status == 503 {
                        "503".into()
                    } else {
                        format!("other status {status}")
                    });
                }
                Err(_) => ledger.failure("transport".into()),
            }
            retries += 1;
            if !sending.load(Ordering::SeqCst) && retries > 50 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(retries.min(5)))).await;
        }
        tokio::time::sleep(config.interval).await;
    }
}

async fn receive_loop(
    index: usize,
    device: DeviceCredentials,
    config: TrafficConfig,
    ledger: Arc<Ledger>,
    receiving: Arc<AtomicBool>,
) {
    let mut attempt = index;
    let mut first = true;
    while receiving.load(Ordering::SeqCst) {
        let base = &config.bases[attempt % config.bases.len()];
        attempt += 1;
        let mut ws = match WsClient::connect(base, Some(&device)).await {
            Ok(ws) => ws,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !first {
            ledger.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let opened = tokio::time::Instant::now();
        loop {
            if !receiving.load(Ordering::SeqCst) {
                ws.close().await;
                return;
            }
            if config.churn.is_some_and(|churn| opened.elapsed() > churn) {
                ws.close().await;
                break;
            }
            let Some(request) = ws.next_request(Duration::from_millis(250)).await else {
                if ws.closed(Duration::ZERO).await.is_some() {
                    break;
                }
                continue;
            };
            if let Some(envelope) = request.envelope() {
                record(&ledger, &envelope);
            }
            if ws.respond(request.id, 200).await.is_err() {
                break;
            }
        }
    }
}

fn record(ledger: &Ledger, envelope: &sealpost::proto::textsecure::Envelope) {
    ledger.deliveries.fetch_add(1, Ordering::Relaxed);
    if let Some(guid) = &envelope.server_guid
        && !ledger.guids.lock().expect("ledger").insert(guid.to_vec())
    {
        ledger.duplicate_guids.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(id) = envelope.content.as_deref().and_then(parse_content) {
        *ledger
            .delivered
            .lock()
            .expect("ledger")
            .entry(id)
            .or_default() += 1;
    }
}
