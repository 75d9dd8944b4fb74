//! `RateLimitStore` on every backend: a token bucket allows its size, refuses, then refills;
//! a check without consuming takes nothing; many permits are taken at once or not at all;
//! and concurrent takes never hand out more than the bucket holds.

use std::sync::Arc;
use std::time::Duration;

use crate::common::Backend;
use sealpost::limits::BucketSpec;
use sealpost::storage::BucketDecision;

use super::support::stores;

async fn a_token_bucket_allows_its_size_then_refuses_then_refills(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let spec = BucketSpec {
        bucket_size: 3,
        permit_period_ms: 200.0,
    };
    for _ in 0..3 {
        assert_eq!(
            stores.rate_limits.take("t:a", spec, 1, true).await.unwrap(),
            BucketDecision::Allowed
        );
    }
    match stores.rate_limits.take("t:a", spec, 1, true).await.unwrap() {
        BucketDecision::Denied { retry_after } => {
            assert!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200),
                "{retry_after:?}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Another key has its own bucket.
    assert_eq!(
        stores.rate_limits.take("t:b", spec, 1, true).await.unwrap(),
        BucketDecision::Allowed
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        stores.rate_limits.take("t:a", spec, 1, true).await.unwrap(),
        BucketDecision::Allowed
    );
    assert!(matches!(
        stores.rate_limits.take("t:a", spec, 1, true).await.unwrap(),
        BucketDecision::Denied { .. }
    ));
}

async fn checking_a_bucket_without_consuming_takes_nothing(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let spec = BucketSpec {
        bucket_size: 2,
        permit_period_ms: 60_000.0,
    };
    for _ in 0..10 {
        assert_eq!(
            stores
                .rate_limits
                .take("t:peek", spec, 1, false)
                .await
                .unwrap(),
            BucketDecision::Allowed
        );
    }
    assert_eq!(
        stores
            .rate_limits
            .take("t:peek", spec, 2, true)
            .await
            .unwrap(),
        BucketDecision::Allowed
    );
    assert!(matches!(
        stores
            .rate_limits
            .take("t:peek", spec, 1, false)
            .await
            .unwrap(),
        BucketDecision::Denied { .. }
    ));
}

async fn many_permits_are_taken_at_once_or_not_at_all(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let spec = BucketSpec {
        bucket_size: 1000,
        permit_period_ms: 60_000.0,
    };
    assert_eq!(
        stores
            .rate_limits
            .take("t:bytes", spec, 600, true)
            .await
            .unwrap(),
        BucketDecision::Allowed
    );
    match stores
        .rate_limits
        .take("t:bytes", spec, 600, true)
        .await
        .unwrap()
    {
        BucketDecision::Denied { retry_after } => {
            assert!(retry_after >= Duration::from_secs(60 * 199))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        stores
            .rate_limits
            .take("t:bytes", spec, 400, true)
            .await
            .unwrap(),
        BucketDecision::Allowed
    );
}

async fn concurrent_takes_never_hand_out_more_than_the_bucket(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let spec = BucketSpec {
        bucket_size: 25,
        permit_period_ms: 3_600_000.0,
    };
    let limiter = stores.rate_limits.clone();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.take("t:race", spec, 1, true).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if task.await.unwrap() == BucketDecision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 25);
}

on_both_backends!(
    a_token_bucket_allows_its_size_then_refuses_then_refills,
    checking_a_bucket_without_consuming_takes_nothing,
    many_permits_are_taken_at_once_or_not_at_all,
    concurrent_takes_never_hand_out_more_than_the_bucket,
);
