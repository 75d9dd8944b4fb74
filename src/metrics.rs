//! The one metrics registry and every metric sealpost exports, declared here and nowhere else.
//! Names follow `sealpost_<subsystem>_<what>_<unit>`; label values are bounded (route
//! templates, outcomes, limit names) and never identities.

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Handles to every metric; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

pub struct Inner {
    registry: Registry,
    /// `route` is the matched route template (or `unmatched`), never the raw path.
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    /// `outcome`: ok_cached, ok_verified, bad_password, unknown_device, malformed, missing.
    pub auth_attempts: IntCounterVec,
    pub password_verifications: IntCounter,
    pub registrations: IntCounter,
    pub accounts_deleted: IntCounter,
    /// `limit` is a declared limit name.
    pub rate_limit_hits: IntCounterVec,
    /// `store`: postgres or redis; 1 when the last readiness probe found it answering.
    pub store_up: IntGaugeVec,
    /// `kind`: ec, kem, ec_signed, kem_last_resort.
    pub prekeys_stored: IntCounterVec,
    /// `access`: authenticated or access_key.
    pub prekey_fetches: IntCounterVec,
    /// `kind`: ec (handed out null) or kem (handed out the last-resort key).
    pub prekeys_exhausted: IntCounterVec,
    pub prekey_signature_rejections: IntCounter,
    /// Per device message: `kind` identified, sealed, ephemeral or receipt; `recipient` online or
    /// offline (whether a socket for the device got the wake-up).
    pub messages_sent: IntCounterVec,
    /// Server timestamp to acknowledgement.
    pub delivery_latency: prometheus::Histogram,
    pub queue_reads: IntCounter,
    pub queue_acks: IntCounter,
    pub receipts_sent: IntCounter,
    /// `kind`: authenticated or unauthenticated.
    pub websockets_open: IntGaugeVec,
    /// `code`: the close code the server sent or received (bounded set).
    pub websocket_closes: IntCounterVec,
    pub websocket_displacements: IntCounter,
    /// Upgrades refused because the process holds `max_websockets` sockets.
    pub websocket_refusals: IntCounter,
    /// Sockets closed because their client read nothing for the write timeout.
    pub websocket_write_timeouts: IntCounter,
    pub multi_recipient_sends: IntCounter,
    /// Recipient devices per multi-recipient send.
    pub multi_recipient_devices: prometheus::Histogram,
    /// Requests refused because an `Unidentified-Access-Key` did not open the target.
    pub access_key_failures: IntCounter,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "sealpost_http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sealpost_http_request_duration_seconds",
                "HTTP request latency by route template and method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let auth_attempts = IntCounterVec::new(
            Opts::new(
                "sealpost_auth_attempts_total",
                "Basic authentication attempts by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let password_verifications = IntCounter::new(
            "sealpost_auth_password_verifications_total",
            "argon2 verifications run (cache misses, failures and unknown devices)",
        )
        .expect("valid metric");
        let registrations = IntCounter::new(
            "sealpost_accounts_registrations_total",
            "Accounts registered",
        )
        .expect("valid metric");
        let accounts_deleted =
            IntCounter::new("sealpost_accounts_deleted_total", "Accounts deleted")
                .expect("valid metric");
        let rate_limit_hits = IntCounterVec::new(
            Opts::new(
                "sealpost_ratelimit_hits_total",
                "Requests refused by a rate limit, by limit name",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let store_up = IntGaugeVec::new(
            Opts::new(
                "sealpost_store_up",
                "1 when the store answered the last readiness probe",
            ),
            &["store"],
        )
        .expect("valid metric");
        let prekeys_stored = IntCounterVec::new(
            Opts::new("sealpost_prekeys_stored_total", "Prekeys stored, by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let prekey_fetches = IntCounterVec::new(
            Opts::new(
                "sealpost_prekeys_fetches_total",
                "Prekey fetches of another account, by how the caller got access",
            ),
            &["access"],
        )
        .expect("valid metric");
        let prekeys_exhausted = IntCounterVec::new(
            Opts::new(
                "sealpost_prekeys_exhausted_total",
                "Device fetches that found no one-time key of a kind (EC: null handed out; \
                 Kyber: the last-resort key handed out)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let prekey_signature_rejections = IntCounter::new(
            "sealpost_prekeys_signature_rejections_total",
            "Key uploads refused because a signature did not verify",
        )
        .expect("valid metric");
        let messages_sent = IntCounterVec::new(
            Opts::new(
                "sealpost_messages_sent_total",
                "Messages accepted per recipient device, by kind and recipient presence",
            ),
            &["kind", "recipient"],
        )
        .expect("valid metric");
        let delivery_latency = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "sealpost_messages_delivery_latency_seconds",
                "From a message's server timestamp to its acknowledgement by the device",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
                3600.0, 86400.0,
            ]),
        )
        .expect("valid metric");
        let queue_reads = IntCounter::new(
            "sealpost_queue_reads_total",
            "Reads of a device queue by its socket",
        )
        .expect("valid metric");
        let queue_acks = IntCounter::new(
            "sealpost_queue_acks_total",
            "Messages acknowledged and removed from a queue",
        )
        .expect("valid metric");
        let receipts_sent = IntCounter::new(
            "sealpost_messages_receipts_total",
            "Server delivery receipts queued for senders",
        )
        .expect("valid metric");
        let websockets_open = IntGaugeVec::new(
            Opts::new("sealpost_websocket_open", "Open WebSockets by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let websocket_closes = IntCounterVec::new(
            Opts::new(
                "sealpost_websocket_closes_total",
                "WebSockets closed, by close code",
            ),
            &["code"],
        )
        .expect("valid metric");
        let websocket_displacements = IntCounter::new(
            "sealpost_websocket_displacements_total",
            "Sockets closed because the same device connected again",
        )
        .expect("valid metric");
        let websocket_refusals = IntCounter::new(
            "sealpost_websocket_refusals_total",
            "WebSocket upgrades refused (503) because the process holds its maximum of sockets",
        )
        .expect("valid metric");
        let websocket_write_timeouts = IntCounter::new(
            "sealpost_websocket_write_timeouts_total",
            "WebSockets closed because the client read nothing for the write timeout",
        )
        .expect("valid metric");
        let multi_recipient_sends = IntCounter::new(
            "sealpost_messages_multi_recipient_sends_total",
            "Multi-recipient sealed sends accepted",
        )
        .expect("valid metric");
        let multi_recipient_devices = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "sealpost_messages_multi_recipient_devices",
                "Recipient devices per accepted multi-recipient send",
            )
            .buckets(vec![
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
            ]),
        )
        .expect("valid metric");
        let access_key_failures = IntCounter::new(
            "sealpost_sealed_sender_access_failures_total",
            "Requests refused because the access key did not open the target",
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new("sealpost_build_info", "Build information"),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_request_duration.clone()),
            Box::new(auth_attempts.clone()),
            Box::new(password_verifications.clone()),
            Box::new(registrations.clone()),
            Box::new(accounts_deleted.clone()),
            Box::new(rate_limit_hits.clone()),
            Box::new(store_up.clone()),
            Box::new(prekeys_stored.clone()),
            Box::new(prekey_fetches.clone()),
            Box::new(prekeys_exhausted.clone()),
            Box::new(prekey_signature_rejections.clone()),
            Box::new(messages_sent.clone()),
            Box::new(delivery_latency.clone()),
            Box::new(queue_reads.clone()),
            Box::new(queue_acks.clone()),
            Box::new(receipts_sent.clone()),
            Box::new(websockets_open.clone()),
            Box::new(websocket_closes.clone()),
            Box::new(websocket_displacements.clone()),
            Box::new(websocket_refusals.clone()),
            Box::new(websocket_write_timeouts.clone()),
            Box::new(multi_recipient_sends.clone()),
            Box::new(multi_recipient_devices.clone()),
            Box::new(access_key_failures.clone()),
            Box::new(build_info),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::new(
                    std::process::id() as i32,
                    "sealpost",
                ),
            ))
            .expect("process collector registers once");

        Self(Arc::new(Inner {
            registry,
            http_requests,
            http_request_duration,
            auth_attempts,
            password_verifications,
            registrations,
            accounts_deleted,
            rate_limit_hits,
            store_up,
            prekeys_stored,
            prekey_fetches,
            prekeys_exhausted,
            prekey_signature_rejections,
            messages_sent,
            delivery_latency,
            queue_reads,
            queue_acks,
            receipts_sent,
            websockets_open,
            websocket_closes,
            websocket_displacements,
            websocket_refusals,
            websocket_write_timeouts,
            multi_recipient_sends,
            multi_recipient_devices,
            access_key_failures,
        }))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
