//! Spam reports (PROTOCOL.md 17): a report counts when it names a message still
//! reportable (an identified message queued for another account in the last week, never
//! reported before); then the reporter joins the sender's set of reporters and the report
//! is logged for operators. Nothing acts on them automatically. The caller is answered the
//! same whether or not the report counted, so it cannot probe which messages exist.

use std::sync::Arc;

use uuid::Uuid;

use crate::config::Clock;
use crate::domain::ids::Aci;
use crate::domain::reports::{REPORTERS_TTL, SpamReport, report_hash};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};
use crate::metrics::Metrics;
use crate::storage::reports::{ReportHashStore, SpamReportLog};

#[derive(Clone)]
pub struct ReportService {
    hashes: Arc<dyn ReportHashStore>,
    log: Arc<dyn SpamReportLog>,
    limiter: RateLimiter,
    metrics: Metrics,
    clock: Clock,
}

impl ReportService {
    pub fn new(
        hashes: Arc<dyn ReportHashStore>,
        log: Arc<dyn SpamReportLog>,
        limiter: RateLimiter,
        metrics: Metrics,
        clock: Clock,
    ) -> Self {
        Self {
            hashes,
            log,
            limiter,
            metrics,
            clock,
        }
    }

    /// `caller` reports message `guid` from `source`; whether it counted.
    pub async fn report(
        &self,
        caller: AuthenticatedDevice,
        source: Aci,
        guid: Uuid,
        token: Option<Vec<u8>>,
    ) -> Result<bool, AppError> {
        self.limiter
            .check(Limit::SpamReport, &caller.aci.to_string())
            .await?;
        if !self.hashes.take(&report_hash(guid, source)).await? {
            return Ok(false);
        }
        self.hashes
            .add_reporter(source, caller.aci, REPORTERS_TTL)
            .await?;
        self.log
            .record(&SpamReport {
                reporter: caller.aci,
                source,
                guid,
                token,
                reported_at_ms: self.clock.now_ms(),
            })
            .await?;
        self.metrics.spam_reports.inc();
        Ok(true)
    }

    /// About how many accounts reported `source` in the last day (the hook a later abuse
    /// policy reads).
    pub async fn recent_reporters(&self, source: Aci) -> Result<u64, AppError> {
        Ok(self.hashes.reporters(source).await?)
    }
}
