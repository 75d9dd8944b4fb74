//! The one metrics registry and every metric sealpost exports, declared here and nowhere else.
//! Names follow `sealpost_<subsystem>_<what>_<unit>`; label values are bounded (route
//! templates, outcomes, limit names) and never identities. `docs/metrics.md` lists them all
//! (`tests/api/operations.rs` checks that list against a real scrape).

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Registrations refused by the registration mode, by `reason`.
    pub registrations_refused: IntCounterVec,
    pub accounts_deleted: IntCounter,
    /// `limit` is a declared limit name.
    pub rate_limit_hits: IntCounterVec,
    /// 1 when the last readiness evaluation (probe or scrape) found the pod ready.
    pub ready: IntGauge,
    /// `store`: postgres or redis; 1 when the last probe (readiness or scrape) got an answer.
    pub store_up: IntGaugeVec,
    /// `kind`: unavailable (the store did not answer) or backend (it answered with an error).
    pub store_errors: IntCounterVec,
    /// `state`: idle or in_use; sampled when `/metrics` is scraped.
    pub postgres_pool_connections: IntGaugeVec,
    pub postgres_pool_max: IntGauge,
    /// Requests waiting for a pooled connection, sampled when `/metrics` is scraped.
    pub postgres_pool_waiting: IntGauge,
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
    pub delivery_latency: Histogram,
    pub queue_reads: IntCounter,
    pub queue_acks: IntCounter,
    /// Messages a socket found waiting when it connected (delivered before `queue/empty`).
    pub queue_backlog: Histogram,
    /// From a socket's connection to its `queue/empty`.
    pub queue_drain: Histogram,
    pub receipts_sent: IntCounter,
    /// `kind`: authenticated, unauthenticated or provisioning.
    pub websockets_open: IntGaugeVec,
    /// `kind` as `websockets_open`.
    pub websocket_connects: IntCounterVec,
    /// `code`: the close code the server sent or received (bounded set).
    pub websocket_closes: IntCounterVec,
    pub websocket_displacements: IntCounter,
    /// `event`: message_available, connected, removed, provisioning, account_changed or
    /// malformed.
    pub pubsub_events: IntCounterVec,
    /// 1 while this pod's pub/sub connection to Redis is up.
    pub pubsub_up: IntGauge,
    pub pubsub_connection_failures: IntCounter,
    /// Upgrades refused because the process holds `max_websockets` sockets.
    pub websocket_refusals: IntCounter,
    /// Sockets closed because their client read nothing for the write timeout.
    pub websocket_write_timeouts: IntCounter,
    /// `limit`: `connections` or `websockets`; refusals (429) of a client address at its cap.
    pub client_limit_refusals: IntCounterVec,
    /// Requests answered 408 because their body did not arrive within the body timeout.
    pub request_body_timeouts: IntCounter,
    pub multi_recipient_sends: IntCounter,
    /// Recipient devices per multi-recipient send.
    pub multi_recipient_devices: Histogram,
    /// Requests refused because an `Unidentified-Access-Key` did not open the target.
    pub access_key_failures: IntCounter,
    /// Account and device-list reads: `result` hit, miss (read and cached) or bypass (read
    /// without caching: the cache is off, or the account is unknown).
    pub account_cache_lookups: IntCounterVec,
    /// Pushes a provider accepted, by `provider` and `kind` (urgent, background, activation).
    pub push_sent: IntCounterVec,
    /// Pushes that failed for good (after retries), by `provider` and `kind`.
    pub push_failed: IntCounterVec,
    /// Pushes whose token or subscription the provider no longer knows, by `provider`.
    pub push_unregistered: IntCounterVec,
    /// Attempts retried after a 5xx, a 429 or a connection failure, by `provider`.
    pub push_retries: IntCounterVec,
    /// Wake-ups not sent, by `reason` (no_registration, not_configured, not_activated).
    pub push_skipped: IntCounterVec,
    /// Wake-ups scheduled for later, by `kind` (background, delayed, idle).
    pub push_scheduled: IntCounterVec,
    /// Devices whose scheduled wake-ups were cancelled because their socket started draining.
    pub push_cancelled: IntCounter,
    /// Time from a push request's start to the provider's answer, by `provider`.
    pub push_duration: HistogramVec,
    /// Resumable attachment uploads created (TUS `POST`).
    pub attachment_uploads_started: IntCounter,
    /// Uploads whose object became visible.
    pub attachment_uploads_completed: IntCounter,
    /// Uploads given up, by `reason` (checksum, replaced, expired).
    pub attachment_uploads_aborted: IntCounterVec,
    /// Attachment bytes received (`in`, uploads) and sent (`out`, downloads).
    pub attachment_bytes: IntCounterVec,
    /// Object-store operations that failed, by `operation`.
    pub object_store_errors: IntCounterVec,
    /// Objects the retention sweeper deleted.
    pub attachments_expired: IntCounter,
    /// Spam reports that counted (named a reportable message).
    pub spam_reports: IntCounter,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Label values known in advance, exported as 0 from the start so that dashboards and
/// alerts see every series (a `rate()` over a series that appears late misses its start).
const AUTH_OUTCOMES: [&str; 6] = [
    "ok_cached",
    "ok_verified",
    "bad_password",
    "unknown_device",
    "malformed",
    "missing",
];
const SOCKET_KINDS: [&str; 3] = ["authenticated", "unauthenticated", "provisioning"];
const MESSAGE_KINDS: [&str; 4] = ["identified", "sealed", "ephemeral", "receipt"];
const PUBSUB_EVENTS: [&str; 6] = [
    "message_available",
    "connected",
    "removed",
    "provisioning",
    "account_changed",
    "malformed",
];
const CACHE_RESULTS: [&str; 3] = ["hit", "miss", "bypass"];
const PUSH_PROVIDERS: [&str; 3] = ["fcm", "apns", "webpush"];
/// Why an attachment upload was given up.
pub const UPLOAD_ABORTS: [&str; 3] = ["checksum", "replaced", "expired"];
/// The object-store operations `object_store_errors` counts.
pub const OBJECT_OPERATIONS: [&str; 4] = ["upload", "download", "delete", "list"];
const PUSH_KINDS: [&str; 3] = ["urgent", "background", "activation"];
const PUSH_SKIPS: [&str; 3] = ["no_registration", "not_configured", "not_activated"];
const PUSH_SCHEDULES: [&str; 3] = ["background", "delayed", "idle"];
pub const CLOSE_CODES: [&str; 11] = [
    "1000", "1001", "1002", "1005", "1007", "1008", "1009", "1011", "4401", "4409", "other",
];

/// Registers metrics as it builds them, so a metric cannot be declared and left out.
struct Builder(Registry);

impl Builder {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }
}

/// Seconds, from half a millisecond to a day: latencies that may include time offline.
const LONG_SECONDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 86400.0,
];
const COUNTS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

impl Metrics {
    pub fn new() -> Self {
        let b = Builder(Registry::new());
        let http_request_duration = b.add(
            HistogramVec::new(
                HistogramOpts::new(
                    "sealpost_http_request_duration_seconds",
                    "HTTP request latency by route template and method",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["route", "method"],
            )
            .expect("valid metric"),
        );
        let push_duration = b.add(
            HistogramVec::new(
                HistogramOpts::new(
                    "sealpost_push_request_duration_seconds",
                    "Push request latency (one attempt) by provider",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["provider"],
            )
            .expect("valid metric"),
        );
        let inner = Inner {
            http_requests: b.counters(
                "sealpost_http_requests_total",
                "HTTP requests (plain and tunnelled) by route template, method and status",
                &["route", "method", "status"],
            ),
            http_request_duration,
            auth_attempts: b.counters(
                "sealpost_auth_attempts_total",
                "Basic authentication attempts by outcome",
                &["outcome"],
            ),
            password_verifications: b.counter(
                "sealpost_auth_password_verifications_total",
                "argon2 verifications run (cache misses, failures and unknown devices)",
            ),
            registrations: b.counter(
                "sealpost_accounts_registrations_total",
                "Accounts registered",
            ),
            registrations_refused: b.counters(
                "sealpost_accounts_registrations_refused_total",
                "Registrations refused by the registration mode, by reason",
                &["reason"],
            ),
            accounts_deleted: b.counter("sealpost_accounts_deleted_total", "Accounts deleted"),
            rate_limit_hits: b.counters(
                "sealpost_ratelimit_hits_total",
                "Requests refused by a rate limit, by limit name",
                &["limit"],
            ),
            ready: b.gauge(
                "sealpost_health_ready",
                "1 when the pod was ready at the last readiness probe or scrape",
            ),
            store_up: b.gauges(
                "sealpost_store_up",
                "1 when the store answered the last probe (readiness or scrape)",
                &["store"],
            ),
            store_errors: b.counters(
                "sealpost_store_errors_total",
                "Requests failed by a store: unavailable (no answer) or backend (an error)",
                &["kind"],
            ),
            postgres_pool_connections: b.gauges(
                "sealpost_postgres_pool_connections",
                "Pooled Postgres connections by state (idle, in_use), sampled at scrape",
                &["state"],
            ),
            postgres_pool_max: b.gauge(
                "sealpost_postgres_pool_max_connections",
                "The Postgres pool's size limit",
            ),
            postgres_pool_waiting: b.gauge(
                "sealpost_postgres_pool_waiting_requests",
                "Requests waiting for a pooled Postgres connection, sampled at scrape",
            ),
            prekeys_stored: b.counters(
                "sealpost_prekeys_stored_total",
                "Prekeys stored, by kind",
                &["kind"],
            ),
            prekey_fetches: b.counters(
                "sealpost_prekeys_fetches_total",
                "Prekey fetches of another account, by how the caller got access",
                &["access"],
            ),
            prekeys_exhausted: b.counters(
                "sealpost_prekeys_exhausted_total",
                "Device fetches that found no one-time key of a kind (EC: null handed out; \
                 Kyber: the last-resort key handed out)",
                &["kind"],
            ),
            prekey_signature_rejections: b.counter(
                "sealpost_prekeys_signature_rejections_total",
                "Key uploads refused because a signature did not verify",
            ),
            messages_sent: b.counters(
                "sealpost_messages_sent_total",
                "Messages accepted per recipient device, by kind and recipient presence",
                &["kind", "recipient"],
            ),
            delivery_latency: b.histogram(
                "sealpost_messages_delivery_latency_seconds",
                "From a message's server timestamp to its acknowledgement by the device",
                &LONG_SECONDS,
            ),
            queue_reads: b.counter(
                "sealpost_queue_reads_total",
                "Reads of a device queue by its socket",
            ),
            queue_acks: b.counter(
                "sealpost_queue_acks_total",
                "Messages acknowledged and removed from a queue",
            ),
            queue_backlog: b.histogram(
                "sealpost_queue_backlog_messages",
                "Messages waiting for a device when its socket connected",
                &[0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0],
            ),
            queue_drain: b.histogram(
                "sealpost_queue_drain_duration_seconds",
                "From a socket's connection to its queue/empty (the backlog delivered)",
                &LONG_SECONDS,
            ),
            receipts_sent: b.counter(
                "sealpost_messages_receipts_total",
                "Server delivery receipts queued for senders",
            ),
            websockets_open: b.gauges(
                "sealpost_websocket_open_connections",
                "Open WebSockets by kind",
                &["kind"],
            ),
            websocket_connects: b.counters(
                "sealpost_websocket_connects_total",
                "WebSockets opened, by kind",
                &["kind"],
            ),
            websocket_closes: b.counters(
                "sealpost_websocket_closes_total",
                "WebSockets closed, by close code",
                &["code"],
            ),
            websocket_displacements: b.counter(
                "sealpost_websocket_displacements_total",
                "Sockets closed because the same device connected again",
            ),
            websocket_refusals: b.counter(
                "sealpost_websocket_refusals_total",
                "WebSocket upgrades refused (503) because the process holds its maximum of sockets",
            ),
            client_limit_refusals: b.counters(
                "sealpost_client_limit_refusals_total",
                "Requests and upgrades refused (429) because their client address holds its cap",
                &["limit"],
            ),
            request_body_timeouts: b.counter(
                "sealpost_http_request_body_timeouts_total",
                "Requests answered 408 because their body did not arrive within the body timeout",
            ),
            websocket_write_timeouts: b.counter(
                "sealpost_websocket_write_timeouts_total",
                "WebSockets closed because the client read nothing for the write timeout",
            ),
            pubsub_events: b.counters(
                "sealpost_pubsub_events_total",
                "Events received from Redis pub/sub, by event",
                &["event"],
            ),
            pubsub_up: b.gauge(
                "sealpost_pubsub_connection_up",
                "1 while this pod's Redis pub/sub connection is up",
            ),
            pubsub_connection_failures: b.counter(
                "sealpost_pubsub_connection_failures_total",
                "Redis pub/sub connections that failed to open or were lost",
            ),
            multi_recipient_sends: b.counter(
                "sealpost_messages_multi_recipient_sends_total",
                "Multi-recipient sealed sends accepted",
            ),
            multi_recipient_devices: b.histogram(
                "sealpost_messages_multi_recipient_devices",
                "Recipient devices per accepted multi-recipient send",
                &COUNTS,
            ),
            access_key_failures: b.counter(
                "sealpost_sealed_sender_access_failures_total",
                "Requests refused because the access key did not open the target",
            ),
            account_cache_lookups: b.counters(
                "sealpost_accounts_cache_lookups_total",
                "Account and device-list reads by account-cache result",
                &["result"],
            ),
            push_sent: b.counters(
                "sealpost_push_sent_total",
                "Pushes a provider accepted, by provider and kind",
                &["provider", "kind"],
            ),
            push_failed: b.counters(
                "sealpost_push_failed_total",
                "Pushes that failed after their retries, by provider and kind",
                &["provider", "kind"],
            ),
            push_unregistered: b.counters(
                "sealpost_push_unregistered_total",
                "Pushes refused because the provider no longer knows the token, by provider",
                &["provider"],
            ),
            push_retries: b.counters(
                "sealpost_push_retries_total",
                "Push attempts retried (5xx, 429, connection failures), by provider",
                &["provider"],
            ),
            push_skipped: b.counters(
                "sealpost_push_skipped_total",
                "Wake-ups not sent, by reason",
                &["reason"],
            ),
            push_scheduled: b.counters(
                "sealpost_push_scheduled_total",
                "Wake-ups scheduled for later, by kind",
                &["kind"],
            ),
            push_cancelled: b.counter(
                "sealpost_push_cancelled_total",
                "Devices whose scheduled wake-ups were cancelled as their socket began draining",
            ),
            push_duration,
            attachment_uploads_started: b.counter(
                "sealpost_attachment_uploads_started_total",
                "Resumable attachment uploads created",
            ),
            attachment_uploads_completed: b.counter(
                "sealpost_attachment_uploads_completed_total",
                "Attachment uploads completed (the object became visible)",
            ),
            attachment_uploads_aborted: b.counters(
                "sealpost_attachment_uploads_aborted_total",
                "Attachment uploads given up, by reason",
                &["reason"],
            ),
            attachment_bytes: b.counters(
                "sealpost_attachment_bytes_total",
                "Attachment bytes received (in) and sent (out)",
                &["direction"],
            ),
            object_store_errors: b.counters(
                "sealpost_object_store_errors_total",
                "Object-store operations that failed, by operation",
                &["operation"],
            ),
            attachments_expired: b.counter(
                "sealpost_attachments_expired_total",
                "Attachments deleted by the retention sweeper",
            ),
            spam_reports: b.counter(
                "sealpost_spam_reports_total",
                "Spam reports that named a reportable message (identified, for another account, under 7 days old)",
            ),
            registry: b.0.clone(),
        };
        let build_info = b.gauges(
            "sealpost_build_info",
            "Build information (always 1)",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Process metrics (CPU seconds, resident memory, open fds) as `sealpost_process_*`.
        #[cfg(target_os = "linux")]
        b.0.register(Box::new(
            prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "sealpost",
            ),
        ))
        .expect("process collector registers once");
        inner.initialize_known_series();
        Self(Arc::new(inner))
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

impl Inner {
    fn initialize_known_series(&self) {
        for outcome in AUTH_OUTCOMES {
            self.auth_attempts.with_label_values(&[outcome]);
        }
        for kind in ["unavailable", "backend"] {
            self.store_errors.with_label_values(&[kind]);
        }
        for kind in ["ec", "kem", "ec_signed", "kem_last_resort"] {
            self.prekeys_stored.with_label_values(&[kind]);
        }
        for access in ["authenticated", "access_key"] {
            self.prekey_fetches.with_label_values(&[access]);
        }
        for kind in ["ec", "kem"] {
            self.prekeys_exhausted.with_label_values(&[kind]);
        }
        for kind in MESSAGE_KINDS {
            for recipient in ["online", "offline"] {
                self.messages_sent.with_label_values(&[kind, recipient]);
            }
        }
        for kind in SOCKET_KINDS {
            self.websockets_open.with_label_values(&[kind]);
            self.websocket_connects.with_label_values(&[kind]);
        }
        for limit in ["connections", "websockets"] {
            self.client_limit_refusals.with_label_values(&[limit]);
        }
        for code in CLOSE_CODES {
            self.websocket_closes.with_label_values(&[code]);
        }
        for state in ["idle", "in_use"] {
            self.postgres_pool_connections.with_label_values(&[state]);
        }
        for event in PUBSUB_EVENTS {
            self.pubsub_events.with_label_values(&[event]);
        }
        for result in CACHE_RESULTS {
            self.account_cache_lookups.with_label_values(&[result]);
        }
        for provider in PUSH_PROVIDERS {
            for kind in PUSH_KINDS {
                self.push_sent.with_label_values(&[provider, kind]);
                self.push_failed.with_label_values(&[provider, kind]);
            }
            self.push_unregistered.with_label_values(&[provider]);
            self.push_retries.with_label_values(&[provider]);
            self.push_duration.with_label_values(&[provider]);
        }
        for reason in PUSH_SKIPS {
            self.push_skipped.with_label_values(&[reason]);
        }
        for kind in PUSH_SCHEDULES {
            self.push_scheduled.with_label_values(&[kind]);
        }
        for reason in UPLOAD_ABORTS {
            self.attachment_uploads_aborted.with_label_values(&[reason]);
        }
        for direction in ["in", "out"] {
            self.attachment_bytes.with_label_values(&[direction]);
        }
        for operation in OBJECT_OPERATIONS {
            self.object_store_errors.with_label_values(&[operation]);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_name_follows_the_convention() {
        let metrics = Metrics::new();
        for family in metrics.registry.gather() {
            let name = family.name();
            assert!(name.starts_with("sealpost_"), "{name}");
            assert!(
                name.split('_').count() >= 3,
                "{name} should be sealpost_<subsystem>_<what>[_<unit>]"
            );
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
                "{name}"
            );
        }
    }
}
