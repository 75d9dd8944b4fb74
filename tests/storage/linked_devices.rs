//! `LinkedDeviceStore` on every backend: a recorded device is found at once or wakes the
//! waiter that was there first, on another connection (another pod) too; another token's
//! record wakes nobody; a wait with nothing recorded ends at its timeout; records expire.

use std::time::Duration;

use sealpost::domain::ids::{Aci, DeviceId};
use sealpost::startup::connect_stores;
use sealpost::storage::linked_devices::LinkedDevice;

use super::support::{policy, stores};
use crate::common::Backend;

const HOUR: Duration = Duration::from_secs(3600);

fn device(id: u32) -> LinkedDevice {
    LinkedDevice {
        aci: Aci::random(),
        id: DeviceId::new(id).unwrap(),
    }
}

fn token(n: u8) -> String {
    format!("{}{n}", "t".repeat(42))
}

async fn a_recorded_device_is_found_at_once(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let linked = device(2);
    stores
        .linked_devices
        .record_linked(&token(1), linked, HOUR)
        .await
        .unwrap();
    let found = tokio::time::timeout(
        Duration::from_secs(5),
        stores
            .linked_devices
            .wait_for_linked(&token(1), Duration::from_secs(60)),
    )
    .await
    .expect("no wait when it is recorded already")
    .unwrap();
    assert_eq!(found, Some(linked));
}

async fn a_waiter_wakes_when_its_token_is_recorded_and_not_for_another(backend: Backend) {
    let (stores, test) = stores(backend).await;
    // The recording side: another connection to the same stores, as another pod has (the
    // memory store is one process's, so there it is the same store).
    let recorder = match backend {
        Backend::Embedded => stores.linked_devices.clone(),
        Backend::External => {
            connect_stores(&test.store_config(), policy(HOUR))
                .await
                .unwrap()
                .linked_devices
        }
    };
    let waiter = stores.linked_devices.clone();
    let wait = tokio::spawn(async move {
        waiter
            .wait_for_linked(&token(2), Duration::from_secs(30))
            .await
    });
    // Whatever the waiter's progress, the record reaches it: before it subscribed it is
    // read, after it is heard. Another token's record first must not end the wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
    recorder
        .record_linked(&token(3), device(4), HOUR)
        .await
        .unwrap();
    let linked = device(3);
    recorder
        .record_linked(&token(2), linked, HOUR)
        .await
        .unwrap();
    let found = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the waiter wakes")
        .unwrap()
        .unwrap();
    assert_eq!(found, Some(linked));
}

async fn a_wait_with_nothing_recorded_ends_at_its_timeout(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let started = std::time::Instant::now();
    let found = stores
        .linked_devices
        .wait_for_linked(&token(5), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(found, None);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn a_record_expires_after_its_ttl(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    stores
        .linked_devices
        .record_linked(&token(6), device(2), Duration::from_millis(200))
        .await
        .unwrap();
    // A timing test: the TTL is what is checked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = stores
        .linked_devices
        .wait_for_linked(&token(6), Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(found, None);
}

on_both_backends!(
    a_recorded_device_is_found_at_once,
    a_waiter_wakes_when_its_token_is_recorded_and_not_for_another,
    a_wait_with_nothing_recorded_ends_at_its_timeout,
    a_record_expires_after_its_ttl,
);

/// A Redis that does not answer makes a wait fail as "unavailable" (a 503), at once.
#[tokio::test]
async fn a_wait_against_an_unreachable_redis_is_unavailable_at_once() {
    use sealpost::storage::StorageError;
    use sealpost::storage::linked_devices::LinkedDeviceStore;
    // Port 1 on loopback: nothing listens there.
    let store = sealpost::storage::redis::RedisStore::connect(
        "redis://127.0.0.1:1/",
        "unreachable:",
        policy(HOUR),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let result = store.wait_for_linked(&token(7), HOUR).await;
    assert!(
        matches!(result, Err(StorageError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
