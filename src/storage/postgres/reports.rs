//! The spam reports that counted, in Postgres (`spam_reports`), for operators.

use async_trait::async_trait;
use uuid::Uuid;

use super::{PgStore, pg_error};
use crate::domain::ids::Aci;
use crate::domain::reports::SpamReport;
use crate::storage::StorageResult;
use crate::storage::reports::SpamReportLog;

#[async_trait]
impl SpamReportLog for PgStore {
    async fn record(&self, report: &SpamReport) -> StorageResult<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO spam_reports (reporter, source, guid, token, reported_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(pg_error)?;
        client
            .execute(
                &statement,
                &[
                    &report.reporter.uuid(),
                    &report.source.uuid(),
                    &report.guid,
                    &report.token.as_deref(),
                    &report.reported_at_ms,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn since(&self, since_ms: i64, limit: usize) -> StorageResult<Vec<SpamReport>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT reporter, source, guid, token, reported_ms FROM spam_reports \
                 WHERE reported_ms >= $1 ORDER BY reported_ms, id LIMIT $2",
                &[&since_ms, &(limit.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|row| SpamReport {
                reporter: Aci::from_uuid(row.get::<_, Uuid>(0)),
                source: Aci::from_uuid(row.get::<_, Uuid>(1)),
                guid: row.get(2),
                token: row.get(3),
                reported_at_ms: row.get(4),
            })
            .collect())
    }
}
