//! Both `Notifier`s against one contract: the in-memory one (`LocalNotifier`, one process:
//! events go straight to the registry) and the Redis one (`RedisNotifier`, here two "pods"
//! with their own registries on one Redis prefix, as two processes would be). An event
//! reaches the `ConnectionHandle` of the device's socket on whichever pod holds it, and
//! `publish` says whether one did; subscriptions are counted per socket, so one socket of a
//! device going away does not unsubscribe the device's newer socket on the same pod; a
//! provisioning message reaches the socket holding its address.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sealpost::delivery::memory::LocalNotifier;
use sealpost::delivery::redis::RedisNotifier;
use sealpost::delivery::{
    ConnectionHandle, DeviceEvent, HandleEvent, Notifier, ProvisioningSockets, Registry,
};
use sealpost::domain::ids::{Aci, DeviceId};
use sealpost::metrics::Metrics;
use sealpost::startup::connect_stores;
use sealpost::storage::redis::RedisStore;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::support::policy;
use crate::common::{Backend, TestStores, redis_url};

const WAIT: Duration = Duration::from_secs(5);

/// One process's side: its notifier and the registries the notifier delivers to.
struct Pod {
    notifier: Arc<dyn Notifier>,
    registry: Arc<Registry>,
    provisioning: Arc<ProvisioningSockets>,
}

/// Two pods on the same stores (with memory, both are the one process).
struct Pods {
    a: Pod,
    b: Pod,
    _listeners: Option<DropGuard>,
    _test: TestStores,
}

async fn pods(backend: Backend) -> Pods {
    let test = TestStores::new(backend).await;
    let queue = policy(Duration::from_secs(3600));
    match backend {
        Backend::Embedded => {
            let registry = Registry::new();
            let provisioning = ProvisioningSockets::new();
            let notifier: Arc<dyn Notifier> =
                Arc::new(LocalNotifier::new(registry.clone(), provisioning.clone()));
            let pod = || Pod {
                notifier: notifier.clone(),
                registry: registry.clone(),
                provisioning: provisioning.clone(),
            };
            Pods {
                a: pod(),
                b: pod(),
                _listeners: None,
                _test: test,
            }
        }
        Backend::External => {
            let stores = connect_stores(&test.store_config(), queue)
                .await
                .expect("stores connect");
            let prefix = test.redis.as_ref().unwrap().prefix.clone();
            let shutdown = CancellationToken::new();
            let mut metrics = Vec::new();
            let mut pod = || {
                let registry = Registry::new();
                let provisioning = ProvisioningSockets::new();
                let pod_metrics = Metrics::new();
                let notifier = RedisNotifier::new(
                    &redis_url(),
                    RedisStore::connect(&redis_url(), &prefix, queue).unwrap(),
                    registry.clone(),
                    provisioning.clone(),
                    None,
                    stores.accounts.clone(),
                    pod_metrics.clone(),
                )
                .unwrap();
                tokio::spawn(notifier.clone().listen(shutdown.clone()));
                metrics.push(pod_metrics);
                Pod {
                    notifier,
                    registry,
                    provisioning,
                }
            };
            let (a, b) = (pod(), pod());
            // Until a pod's listener is connected, subscriptions are only counted (it
            // subscribes them when it connects): wait for both.
            let deadline = tokio::time::Instant::now() + WAIT;
            while metrics.iter().any(|m| m.pubsub_up.get() != 1) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "pub/sub did not connect"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Pods {
                a,
                b,
                _listeners: Some(shutdown.drop_guard()),
                _test: test,
            }
        }
    }
}

/// What a socket does when it opens on `pod`: registers, then subscribes.
async fn open(pod: &Pod, aci: Aci, id: DeviceId, conn: u64) -> Arc<ConnectionHandle> {
    let handle = ConnectionHandle::new(conn);
    pod.registry.register(aci, id, handle.clone());
    pod.notifier.subscribe(aci, id).await.unwrap();
    handle
}

/// What a socket does when it closes: unregisters (its own entry only), unsubscribes.
async fn close(pod: &Pod, aci: Aci, id: DeviceId, conn: u64) {
    pod.registry.unregister(aci, id, conn);
    pod.notifier.unsubscribe(aci, id).await.unwrap();
}

async fn woken(handle: &ConnectionHandle) {
    let event = tokio::time::timeout(WAIT, handle.next_event())
        .await
        .expect("the socket is woken");
    assert_eq!(event, HandleEvent::MessagesAvailable);
}

async fn closed_with(handle: &ConnectionHandle) -> u16 {
    tokio::time::timeout(WAIT, handle.wait_for_close())
        .await
        .expect("the socket is told to close")
        .code()
}

async fn events_reach_the_device_socket_on_whichever_pod_holds_it(backend: Backend) {
    let pods = pods(backend).await;
    let (aci, id) = (Aci::random(), DeviceId::PRIMARY);
    let socket = open(&pods.a, aci, id, 1).await;

    // From the other pod and from its own.
    assert!(
        pods.b
            .notifier
            .publish(aci, id, DeviceEvent::MessageAvailable)
            .await
            .unwrap()
    );
    woken(&socket).await;
    assert!(
        pods.a
            .notifier
            .publish(aci, id, DeviceEvent::MessageAvailable)
            .await
            .unwrap()
    );
    woken(&socket).await;
    // Its own connection announced: nothing happens to it.
    assert!(
        pods.b
            .notifier
            .publish(aci, id, DeviceEvent::Connected(1))
            .await
            .unwrap()
    );
    // The device connected elsewhere: 4409.
    assert!(
        pods.b
            .notifier
            .publish(aci, id, DeviceEvent::Connected(2))
            .await
            .unwrap()
    );
    assert_eq!(closed_with(&socket).await, 4409);
    close(&pods.a, aci, id, 1).await;

    // The device was removed: 4401.
    let socket = open(&pods.a, aci, id, 3).await;
    assert!(
        pods.b
            .notifier
            .publish(aci, id, DeviceEvent::Removed)
            .await
            .unwrap()
    );
    assert_eq!(closed_with(&socket).await, 4401);
    close(&pods.a, aci, id, 3).await;

    // Another device of the same account has no socket: offline, whatever the event.
    let other = DeviceId::new(2).unwrap();
    for event in [
        DeviceEvent::MessageAvailable,
        DeviceEvent::Connected(9),
        DeviceEvent::Removed,
    ] {
        for pod in [&pods.a, &pods.b] {
            assert!(!pod.notifier.publish(aci, other, event).await.unwrap());
        }
    }
}

async fn a_device_whose_socket_closed_is_offline_again(backend: Backend) {
    let pods = pods(backend).await;
    let (aci, id) = (Aci::random(), DeviceId::PRIMARY);
    let socket = open(&pods.a, aci, id, 1).await;
    assert!(
        pods.b
            .notifier
            .publish(aci, id, DeviceEvent::MessageAvailable)
            .await
            .unwrap()
    );
    woken(&socket).await;
    close(&pods.a, aci, id, 1).await;
    for pod in [&pods.a, &pods.b] {
        assert!(
            !pod.notifier
                .publish(aci, id, DeviceEvent::MessageAvailable)
                .await
                .unwrap()
        );
    }
}

async fn subscriptions_are_counted_per_socket(backend: Backend) {
    let pods = pods(backend).await;
    let (aci, id) = (Aci::random(), DeviceId::PRIMARY);
    // The device reconnects on the same pod: the new socket displaces the old one, which
    // then closes; its unsubscribe must not take the new socket's subscription with it.
    let old = open(&pods.a, aci, id, 1).await;
    let new = open(&pods.a, aci, id, 2).await;
    assert_eq!(closed_with(&old).await, 4409);
    close(&pods.a, aci, id, 1).await;
    assert!(
        pods.b
            .notifier
            .publish(aci, id, DeviceEvent::MessageAvailable)
            .await
            .unwrap(),
        "the new socket still hears the device's events"
    );
    woken(&new).await;
    assert!(
        pods.b
            .notifier
            .publish(aci, id, DeviceEvent::Removed)
            .await
            .unwrap()
    );
    assert_eq!(closed_with(&new).await, 4401);
    close(&pods.a, aci, id, 2).await;
    assert!(
        !pods
            .b
            .notifier
            .publish(aci, id, DeviceEvent::MessageAvailable)
            .await
            .unwrap(),
        "the last socket's unsubscribe ends the subscription"
    );
    // Unsubscribing more often than subscribing changes nothing.
    pods.a.notifier.unsubscribe(aci, id).await.unwrap();
    let again = open(&pods.a, aci, id, 3).await;
    assert!(
        pods.b
            .notifier
            .publish(aci, id, DeviceEvent::MessageAvailable)
            .await
            .unwrap()
    );
    woken(&again).await;
}

async fn a_provisioning_message_reaches_the_socket_holding_its_address(backend: Backend) {
    let pods = pods(backend).await;
    let address = format!("addr{}", uuid::Uuid::new_v4().simple());
    let (sender, mut waiting) = tokio::sync::mpsc::channel(1);
    pods.a.provisioning.register(&address, sender);
    pods.a
        .notifier
        .subscribe_provisioning(&address)
        .await
        .unwrap();

    let body = Bytes::from_static(b"the provisioning message");
    assert!(
        pods.b
            .notifier
            .publish_provisioning(&address, body.clone())
            .await
            .unwrap()
    );
    let received = tokio::time::timeout(WAIT, waiting.recv())
        .await
        .expect("the message arrives")
        .expect("the channel is open");
    assert_eq!(received, body);
    for pod in [&pods.a, &pods.b] {
        assert!(
            !pod.notifier
                .publish_provisioning("nobody-waits-here", body.clone())
                .await
                .unwrap()
        );
    }

    // The socket goes: its address is nobody's.
    pods.a.provisioning.unregister(&address);
    pods.a
        .notifier
        .unsubscribe_provisioning(&address)
        .await
        .unwrap();
    for pod in [&pods.a, &pods.b] {
        assert!(
            !pod.notifier
                .publish_provisioning(&address, body.clone())
                .await
                .unwrap()
        );
    }
}

on_both_backends!(
    events_reach_the_device_socket_on_whichever_pod_holds_it,
    a_device_whose_socket_closed_is_offline_again,
    subscriptions_are_counted_per_socket,
    a_provisioning_message_reaches_the_socket_holding_its_address,
);
