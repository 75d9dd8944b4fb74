//! `MessageStore` queues on every backend: first in, first out, deduplicated by GUID and read
//! after a cursor; expiry a TTL after the last insert; one order for every reader under
//! concurrent inserts; and the count and byte caps. Shared multi-recipient payloads are in
//! `shared_payloads.rs`.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Backend, TestStores};
use sealpost::domain::ids::{Aci, DeviceId};
use sealpost::startup::connect_stores;
use sealpost::storage::{Inserted, QueuePolicy};

use super::support::{held, policy, stores, stores_with};

async fn queues_are_fifo_deduplicated_and_read_after_a_cursor(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    let other = DeviceId::new(2).unwrap();
    let guids: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::new_v4()).collect();
    for (i, guid) in guids.iter().enumerate() {
        let envelope = bytes::Bytes::from(format!("envelope {i}"));
        assert!(
            stores
                .messages
                .insert(aci, device, *guid, envelope)
                .await
                .unwrap()
                == Inserted::Queued
        );
    }
    // The same GUID again is not queued twice.
    assert_eq!(
        stores
            .messages
            .insert(aci, device, guids[1], "dup".into())
            .await
            .unwrap(),
        Inserted::Duplicate
    );
    assert_eq!(
        stores
            .messages
            .insert(aci, other, guids[0], "other device".into())
            .await
            .unwrap(),
        Inserted::Queued
    );

    let all = stores.messages.read(aci, device, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|m| m.guid).collect::<Vec<_>>(), guids);
    assert_eq!(all[3].envelope, bytes::Bytes::from("envelope 3"));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let page = stores
        .messages
        .read(aci, device, all[1].seq, 2)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|m| m.guid).collect::<Vec<_>>(),
        guids[2..4].to_vec()
    );

    assert!(stores.messages.remove(aci, device, guids[2]).await.unwrap());
    assert!(!stores.messages.remove(aci, device, guids[2]).await.unwrap());
    let left = stores.messages.read(aci, device, 0, 100).await.unwrap();
    assert_eq!(left.len(), 4);
    assert!(!left.iter().any(|m| m.guid == guids[2]));
    // A new message goes after everything, even after removals.
    let late = uuid::Uuid::new_v4();
    stores
        .messages
        .insert(aci, device, late, "late".into())
        .await
        .unwrap();
    assert_eq!(
        stores
            .messages
            .read(aci, device, 0, 100)
            .await
            .unwrap()
            .last()
            .unwrap()
            .guid,
        late
    );

    stores.messages.delete_queue(aci, device).await.unwrap();
    assert!(
        stores
            .messages
            .read(aci, device, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        stores
            .messages
            .read(aci, other, 0, 100)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn queues_expire_their_ttl_after_the_last_insert(backend: Backend) {
    let test = TestStores::new(backend).await;
    let stores = connect_stores(&test.store_config(), policy(Duration::from_millis(300)))
        .await
        .unwrap();
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    stores
        .messages
        .insert(aci, device, uuid::Uuid::new_v4(), "a".into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stores
        .messages
        .insert(aci, device, uuid::Uuid::new_v4(), "b".into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stores
            .messages
            .read(aci, device, 0, 10)
            .await
            .unwrap()
            .len(),
        2,
        "refreshed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        stores
            .messages
            .read(aci, device, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "expired"
    );
}

async fn concurrent_inserts_keep_one_order_for_every_reader(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = Arc::clone(&stores.messages);
            tokio::spawn(async move {
                store
                    .insert(
                        aci,
                        device,
                        uuid::Uuid::new_v4(),
                        bytes::Bytes::from(format!("{i}")),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Inserted::Queued);
    }
    let first = stores.messages.read(aci, device, 0, 1000).await.unwrap();
    let second = stores.messages.read(aci, device, 0, 1000).await.unwrap();
    assert_eq!(first.len(), 100);
    assert_eq!(first, second);
}

async fn a_full_queue_refuses_more_keeps_what_it_has_and_takes_again_after_removals(
    backend: Backend,
) {
    // Room for three 100-byte envelopes by count, and by bytes for two of 1000 beside them.
    let queue = QueuePolicy {
        ttl: Duration::from_secs(3600),
        max_messages: 3,
        max_bytes: held(3, 1200),
    };
    let (stores, _test) = stores_with(backend, queue).await;
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    let small = || bytes::Bytes::from(vec![0x0a; 100]);
    let guids: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
    for guid in &guids[..3] {
        assert_eq!(
            stores
                .messages
                .insert(aci, device, *guid, small())
                .await
                .unwrap(),
            Inserted::Queued
        );
    }
    // The count cap: a fourth is refused, a duplicate is still a duplicate, and the queue
    // keeps exactly what it had.
    assert_eq!(
        stores
            .messages
            .insert(aci, device, guids[3], small())
            .await
            .unwrap(),
        Inserted::Full
    );
    assert_eq!(
        stores
            .messages
            .insert(aci, device, guids[0], small())
            .await
            .unwrap(),
        Inserted::Duplicate
    );
    let read = stores.messages.read(aci, device, 0, 10).await.unwrap();
    assert_eq!(read.iter().map(|m| m.guid).collect::<Vec<_>>(), guids[..3]);
    // Another device's queue is its own.
    let other = DeviceId::new(2).unwrap();
    assert_eq!(
        stores
            .messages
            .insert(aci, other, guids[3], small())
            .await
            .unwrap(),
        Inserted::Queued
    );

    // A removal makes room again, by count and by bytes.
    assert!(stores.messages.remove(aci, device, guids[0]).await.unwrap());
    let big = bytes::Bytes::from(vec![0x0a; 1000]);
    assert_eq!(
        stores
            .messages
            .insert(aci, device, guids[3], big.clone())
            .await
            .unwrap(),
        Inserted::Queued
    );
    assert!(stores.messages.remove(aci, device, guids[1]).await.unwrap());
    // The byte cap: 1100 of 1200 held, so another 1000 does not fit though the count would.
    let refused = uuid::Uuid::new_v4();
    assert_eq!(
        stores
            .messages
            .insert(aci, device, refused, big.clone())
            .await
            .unwrap(),
        Inserted::Full
    );
    // Removing many lowers the byte total too, and a shared copy counts what it stands
    // for (the recorded length), not its short reference.
    assert_eq!(
        stores
            .messages
            .remove_many(aci, device, &[guids[2], guids[3]])
            .await
            .unwrap(),
        vec![true, true]
    );
    assert_eq!(
        stores
            .messages
            .insert(aci, device, refused, big)
            .await
            .unwrap(),
        Inserted::Queued
    );
    let shared_id = uuid::Uuid::new_v4();
    stores
        .messages
        .insert_shared(
            shared_id,
            &sealpost::storage::SharedMessage {
                template: bytes::Bytes::new(),
                payload: bytes::Bytes::from(vec![1u8; 500]),
                prefixes: vec![(aci, bytes::Bytes::from_static(b"p"))],
            },
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        stores
            .messages
            .insert_referencing(aci, device, uuid::Uuid::new_v4(), shared_id, 501)
            .await
            .unwrap(),
        Inserted::Full,
        "1000 + 501 with two overheads is over the cap, though the reference is 21 bytes"
    );
    assert_eq!(
        stores
            .messages
            .insert_referencing(aci, device, uuid::Uuid::new_v4(), shared_id, 200)
            .await
            .unwrap(),
        Inserted::Queued
    );
    assert_eq!(
        stores
            .messages
            .read(aci, device, 0, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

on_both_backends!(
    a_full_queue_refuses_more_keeps_what_it_has_and_takes_again_after_removals,
    queues_are_fifo_deduplicated_and_read_after_a_cursor,
    queues_expire_their_ttl_after_the_last_insert,
    concurrent_inserts_keep_one_order_for_every_reader,
);
