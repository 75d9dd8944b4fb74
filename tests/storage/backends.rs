//! The stores as a whole and what is particular to one backend: readiness probes, server
//! secrets made once for every caller (both on every backend), then Redis's key layout (a
//! device queue under one hash tag, buckets under the configured prefix) and Postgres
//! migrations that are idempotent and safe to run concurrently.

use crate::common::{Backend, TestStores};
use sealpost::domain::ids::{Aci, DeviceId};
use sealpost::limits::BucketSpec;

use super::support::stores;

async fn readiness_probes_answer_when_the_stores_do(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    for probe in &stores.probes {
        probe
            .ping()
            .await
            .unwrap_or_else(|e| panic!("{} does not answer: {e}", probe.name()));
    }
    assert_eq!(
        stores.probes.len(),
        if backend == Backend::External { 2 } else { 0 }
    );
}

/// A server secret is made once and is the same for every caller, however many ask at
/// once (pods starting together); different names are different secrets.
async fn a_server_secret_is_made_once_and_shared_by_every_caller(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let secrets = stores.secrets.clone();
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let secrets = secrets.clone();
            tokio::spawn(async move { secrets.secret("conformance-a").await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for racer in racers {
        seen.push(racer.await.unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "one secret for all");
    assert_ne!(seen[0], [0u8; 32], "random, not zero");
    assert_eq!(secrets.secret("conformance-a").await.unwrap(), seen[0]);
    assert_ne!(secrets.secret("conformance-b").await.unwrap(), seen[0]);
}

on_both_backends!(
    readiness_probes_answer_when_the_stores_do,
    a_server_secret_is_made_once_and_shared_by_every_caller,
);

/// Every key of a device's queue shares one hash tag, so each script touches one Redis
/// Cluster slot.
#[tokio::test]
async fn a_device_queue_lives_under_one_hash_tag() {
    let (stores, test) = stores(Backend::External).await;
    let aci = Aci::random();
    stores
        .messages
        .insert(aci, DeviceId::PRIMARY, uuid::Uuid::new_v4(), "x".into())
        .await
        .unwrap();
    let prefix = &test.redis.as_ref().unwrap().prefix;
    let mut keys = test.redis.as_ref().unwrap().keys();
    keys.sort();
    let base = format!("{prefix}q:{{{aci}:1}}");
    assert_eq!(keys, vec![format!("{base}:i"), format!("{base}:m")]);
}

#[tokio::test]
async fn the_redis_bucket_lives_under_the_configured_prefix() {
    let (stores, test) = stores(Backend::External).await;
    let spec = BucketSpec {
        bucket_size: 1,
        permit_period_ms: 1000.0,
    };
    stores
        .rate_limits
        .take("registration:127.0.0.1", spec, 1, true)
        .await
        .unwrap();
    let prefix = &test.redis.as_ref().unwrap().prefix;
    assert_eq!(
        test.redis.as_ref().unwrap().keys(),
        vec![format!("{prefix}rl:registration:127.0.0.1")]
    );
}

#[tokio::test]
async fn postgres_migrations_are_idempotent_and_safe_to_run_concurrently() {
    let test = TestStores::new(Backend::External).await;
    let url = &test.db.as_ref().unwrap().url;
    let a = sealpost::storage::postgres::PgStore::connect(url, 2).unwrap();
    let b = sealpost::storage::postgres::PgStore::connect(url, 2).unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    assert_eq!(
        ra.unwrap() + rb.unwrap(),
        migrations,
        "each migration is applied once, by one of the two processes"
    );
    assert_eq!(a.migrate().await.unwrap(), 0);
}
