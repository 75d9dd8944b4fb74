//! `ReportHashStore` and `SpamReportLog`: a reportable message counts once, reporter sets
//! count distinct accounts, hashes and sets expire, and the log lists reports by time.

use std::time::Duration;

use sealpost::domain::ids::Aci;
use sealpost::domain::reports::{SpamReport, report_hash};
use uuid::Uuid;

use super::support::stores;
use crate::common::Backend;

async fn a_remembered_hash_is_taken_once(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let hashes = stores.report_hashes.clone();
    let hash = report_hash(Uuid::new_v4(), Aci::random());
    assert!(!hashes.take(&hash).await.unwrap(), "never remembered");
    hashes
        .remember(&hash, Duration::from_secs(60))
        .await
        .unwrap();
    // Reports racing for one message: exactly one counts.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let hashes = hashes.clone();
            tokio::spawn(async move { hashes.take(&hash).await.unwrap() })
        })
        .collect();
    let mut counted = 0;
    for racer in racers {
        counted += usize::from(racer.await.unwrap());
    }
    assert_eq!(counted, 1);
    assert!(!hashes.take(&hash).await.unwrap());
}

async fn a_hash_expires_after_its_ttl(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let hashes = stores.report_hashes.clone();
    let short = report_hash(Uuid::new_v4(), Aci::random());
    let long = report_hash(Uuid::new_v4(), Aci::random());
    hashes
        .remember(&short, Duration::from_millis(100))
        .await
        .unwrap();
    hashes
        .remember(&long, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!hashes.take(&short).await.unwrap(), "expired");
    assert!(hashes.take(&long).await.unwrap(), "still reportable");
}

async fn reporters_are_counted_once_each_and_expire(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let hashes = stores.report_hashes.clone();
    let (source, other) = (Aci::random(), Aci::random());
    let (a, b) = (Aci::random(), Aci::random());
    assert_eq!(hashes.reporters(source).await.unwrap(), 0);
    for reporter in [a, b, a] {
        hashes
            .add_reporter(source, reporter, Duration::from_secs(60))
            .await
            .unwrap();
    }
    assert_eq!(hashes.reporters(source).await.unwrap(), 2);
    assert_eq!(hashes.reporters(other).await.unwrap(), 0);
    hashes
        .add_reporter(other, a, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(hashes.reporters(other).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(hashes.reporters(other).await.unwrap(), 0, "expired");
}

fn report(at: i64, token: Option<Vec<u8>>) -> SpamReport {
    SpamReport {
        reporter: Aci::random(),
        source: Aci::random(),
        guid: Uuid::new_v4(),
        token,
        reported_at_ms: at,
    }
}

async fn the_log_lists_reports_since_a_time_oldest_first(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let log = stores.spam_reports.clone();
    let reports = [
        report(3_000, None),
        report(1_000, Some(vec![7; 1024])),
        report(2_000, Some(vec![1, 2, 3])),
        report(2_000, None),
    ];
    for r in &reports {
        log.record(r).await.unwrap();
    }
    let all = log.since(0, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0], reports[1]);
    assert_eq!(
        &all[1..3],
        &reports[2..4],
        "equal times in the order recorded"
    );
    assert_eq!(all[3], reports[0]);
    assert_eq!(log.since(2_000, 100).await.unwrap().len(), 3);
    assert_eq!(
        log.since(2_001, 100).await.unwrap(),
        vec![reports[0].clone()]
    );
    assert_eq!(log.since(0, 1).await.unwrap(), vec![reports[1].clone()]);
}

on_both_backends!(
    a_remembered_hash_is_taken_once,
    a_hash_expires_after_its_ttl,
    reporters_are_counted_once_each_and_expire,
    the_log_lists_reports_since_a_time_oldest_first,
);
