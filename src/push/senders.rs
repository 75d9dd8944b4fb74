//! [`Senders`]: the one door to every provider. It picks the device's provider, retries what
//! may be retried (with backoff, or the provider's `Retry-After` when that is short), and
//! counts every outcome and attempt's latency; it knows nothing of schedules or stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Notification, Outcome, Provider, SubscriptionSender, TokenSender};
use crate::domain::push::PushRegistration;
use crate::metrics::Metrics;

/// How often one push is tried at most.
pub const MAX_ATTEMPTS: u32 = 3;
/// The wait before the first retry; it doubles for each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// A `Retry-After` longer than this is not waited for: the push fails now (a later message
/// brings another).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// What a push came to, after its retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    Accepted,
    /// The provider no longer knows the token (PROTOCOL.md 11.5).
    Unregistered {
        invalidated_ms: Option<i64>,
    },
    Failed,
    /// The device's provider is not configured on this server (tokens are still stored).
    NotConfigured,
}

/// The configured providers; any of them may be absent.
#[derive(Clone)]
pub struct Senders {
    fcm: Option<Arc<dyn TokenSender>>,
    apns: Option<Arc<dyn TokenSender>>,
    webpush: Option<Arc<dyn SubscriptionSender>>,
    metrics: Metrics,
}

impl Senders {
    pub fn new(
        fcm: Option<Arc<dyn TokenSender>>,
        apns: Option<Arc<dyn TokenSender>>,
        webpush: Option<Arc<dyn SubscriptionSender>>,
        metrics: Metrics,
    ) -> Self {
        Self {
            fcm,
            apns,
            webpush,
            metrics,
        }
    }

    /// Sends `notification` to `registration`'s provider.
    pub async fn send(&self, registration: &PushRegistration, notification: Notification) -> Sent {
        let provider = match registration {
            PushRegistration::Fcm(_) => Provider::Fcm,
            PushRegistration::Apns(_) => Provider::Apns,
            PushRegistration::WebPush(_) => Provider::WebPush,
        };
        let configured = match registration {
            PushRegistration::Fcm(_) => self.fcm.is_some(),
            PushRegistration::Apns(_) => self.apns.is_some(),
            PushRegistration::WebPush(_) => self.webpush.is_some(),
        };
        if !configured {
            self.metrics
                .push_skipped
                .with_label_values(&["not_configured"])
                .inc();
            return Sent::NotConfigured;
        }
        let labels = [provider.label(), notification.label()];
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let started = Instant::now();
            let outcome = match registration {
                PushRegistration::Fcm(token) => match &self.fcm {
                    Some(fcm) => fcm.send(token.as_str(), notification).await,
                    None => unreachable_outcome(),
                },
                PushRegistration::Apns(token) => match &self.apns {
                    Some(apns) => apns.send(token.as_str(), notification).await,
                    None => unreachable_outcome(),
                },
                PushRegistration::WebPush(registration) => match &self.webpush {
                    Some(webpush) => webpush.send(registration, notification).await,
                    None => unreachable_outcome(),
                },
            };
            self.metrics
                .push_duration
                .with_label_values(&[provider.label()])
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Outcome::Accepted => {
                    self.metrics.push_sent.with_label_values(&labels).inc();
                    return Sent::Accepted;
                }
                Outcome::Unregistered { invalidated_ms } => {
                    self.metrics
                        .push_unregistered
                        .with_label_values(&[provider.label()])
                        .inc();
                    return Sent::Unregistered { invalidated_ms };
                }
                Outcome::Failed(reason) => {
                    tracing::info!(provider = provider.label(), %reason, "push refused");
                    break;
                }
                Outcome::Retry { after, reason } => {
                    let wait = after.unwrap_or(backoff);
                    if attempt == MAX_ATTEMPTS || wait > MAX_RETRY_AFTER {
                        tracing::info!(provider = provider.label(), %reason, "push failed");
                        break;
                    }
                    self.metrics
                        .push_retries
                        .with_label_values(&[provider.label()])
                        .inc();
                    tokio::time::sleep(wait).await;
                    backoff *= 2;
                }
            }
        }
        self.metrics.push_failed.with_label_values(&labels).inc();
        Sent::Failed
    }
}

/// `configured` was checked above; kept total rather than panicking.
fn unreachable_outcome() -> Outcome {
    Outcome::Failed("provider not configured".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use crate::domain::push::PushToken;

    /// Answers from a script, one outcome per attempt.
    struct Scripted(Mutex<Vec<Outcome>>);

    #[async_trait]
    impl TokenSender for Scripted {
        async fn send(&self, _token: &str, _notification: Notification) -> Outcome {
            self.0.lock().unwrap().remove(0)
        }
    }

    fn fcm(script: Vec<Outcome>) -> (Senders, Metrics) {
        let metrics = Metrics::new();
        let senders = Senders::new(
            Some(Arc::new(Scripted(Mutex::new(script)))),
            None,
            None,
            metrics.clone(),
        );
        (senders, metrics)
    }

    fn registration() -> PushRegistration {
        PushRegistration::Fcm(PushToken::parse("gcmRegistrationId", "token").unwrap())
    }

    const URGENT: Notification = Notification::NewMessage { urgent: true };

    fn retry() -> Outcome {
        Outcome::Retry {
            after: Some(Duration::from_millis(1)),
            reason: "503".into(),
        }
    }

    #[tokio::test]
    async fn a_retried_push_that_then_succeeds_counts_once_as_sent() {
        let (senders, metrics) = fcm(vec![retry(), Outcome::Accepted]);
        assert_eq!(senders.send(&registration(), URGENT).await, Sent::Accepted);
        assert_eq!(
            metrics
                .push_sent
                .with_label_values(&["fcm", "urgent"])
                .get(),
            1
        );
        assert_eq!(metrics.push_retries.with_label_values(&["fcm"]).get(), 1);
    }

    #[tokio::test]
    async fn a_push_gives_up_after_its_attempts_and_on_a_long_retry_after() {
        let (senders, metrics) = fcm(vec![retry(), retry(), retry()]);
        assert_eq!(senders.send(&registration(), URGENT).await, Sent::Failed);
        assert_eq!(
            metrics
                .push_failed
                .with_label_values(&["fcm", "urgent"])
                .get(),
            1
        );
        let (senders, _) = fcm(vec![Outcome::Retry {
            after: Some(Duration::from_secs(3600)),
            reason: "429".into(),
        }]);
        assert_eq!(senders.send(&registration(), URGENT).await, Sent::Failed);
    }

    #[tokio::test]
    async fn an_unconfigured_provider_sends_nothing() {
        let (senders, metrics) = fcm(vec![]);
        let apns = PushRegistration::Apns(PushToken::parse("apnRegistrationId", "t").unwrap());
        assert_eq!(senders.send(&apns, URGENT).await, Sent::NotConfigured);
        assert_eq!(
            metrics
                .push_skipped
                .with_label_values(&["not_configured"])
                .get(),
            1
        );
    }
}
