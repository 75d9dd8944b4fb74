//! The attachment sweeper (PROTOCOL.md 12.3): deletes attachments older than the retention
//! (where the object store has no lifecycle rule doing it) and forgets uploads older than
//! their 7-day lifetime, aborting the unfinished ones' multipart uploads and tails. Runs on
//! every pod, on the server's clock; every step is idempotent, so pods sweeping at once
//! only repeat each other's deletes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::clock::Clock;
use crate::domain::uploads::UPLOAD_LIFETIME_MS;
use crate::metrics::Metrics;
use crate::service::uploads::UploadService;
use crate::storage::StorageResult;
use crate::storage::objects::ObjectStore;

/// The prefix retention applies to.
pub const ATTACHMENTS_PREFIX: &str = "attachments/";
/// Keys listed per page.
const PAGE: usize = 1000;

/// What one sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub attachments: usize,
    pub uploads: usize,
}

#[derive(Clone)]
pub struct AttachmentSweeper {
    pub objects: Arc<dyn ObjectStore>,
    pub uploads: UploadService,
    pub clock: Clock,
    pub retention: Duration,
    /// False once the bucket's lifecycle rule expires attachments itself.
    pub expire_objects: Arc<AtomicBool>,
    pub metrics: Metrics,
}

impl AttachmentSweeper {
    /// One pass over both.
    pub async fn sweep(&self) -> StorageResult<Swept> {
        let now = self.clock.now_ms();
        let mut swept = Swept::default();
        if self.expire_objects.load(Ordering::Relaxed) {
            let before = now - self.retention.as_millis() as i64;
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .objects
                    .list_older(ATTACHMENTS_PREFIX, before, after.as_deref(), PAGE)
                    .await
                    .inspect_err(|_| self.failed("list"))?;
                let Some(last) = page.last().cloned() else {
                    break;
                };
                for key in &page {
                    self.objects
                        .delete(key)
                        .await
                        .inspect_err(|_| self.failed("delete"))?;
                    self.metrics.attachments_expired.inc();
                    swept.attachments += 1;
                }
                after = Some(last);
            }
        }
        swept.uploads = self.uploads.expire_before(now - UPLOAD_LIFETIME_MS).await?;
        Ok(swept)
    }

    fn failed(&self, operation: &str) {
        self.metrics
            .object_store_errors
            .with_label_values(&[operation])
            .inc();
    }

    /// Sweeps every `interval` until `shutdown`; a failed sweep is logged and retried at
    /// the next one.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.sweep().await {
                Ok(swept) if swept != Swept::default() => tracing::info!(
                    attachments = swept.attachments,
                    uploads = swept.uploads,
                    "attachment sweep"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the attachment sweep failed; retrying later"),
            }
        }
    }
}
