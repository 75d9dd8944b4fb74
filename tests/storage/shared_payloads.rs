//! `MessageStore`'s shared multi-recipient payloads on every backend: one payload completes
//! every message that references it and is deleted with the last of them, and removing many
//! messages at once reports each one and releases the payloads they referenced.

use crate::common::{Backend, TestStores};
use sealpost::domain::ids::{Aci, DeviceId};
use sealpost::storage::Inserted;

use super::support::stores;

async fn a_shared_payload_completes_every_referencing_message_and_goes_with_the_last(
    backend: Backend,
) {
    use prost::Message as _;
    use sealpost::proto::textsecure::Envelope;
    use sealpost::storage::SharedMessage;
    let (stores, test) = stores(backend).await;
    let shared_id = uuid::Uuid::new_v4();
    let payload = bytes::Bytes::from(vec![0xabu8; 1000]);
    let (a, b) = (Aci::random(), Aci::random());
    let template = Envelope {
        r#type: Some(6),
        client_timestamp: Some(42),
        server_timestamp: Some(43),
        urgent: Some(true),
        ..Default::default()
    };
    let shared = SharedMessage {
        template: bytes::Bytes::from(template.encode_to_vec()),
        payload: payload.clone(),
        prefixes: vec![
            (a, bytes::Bytes::from_static(b"for a")),
            (b, bytes::Bytes::from_static(b"for b")),
        ],
    };
    stores
        .messages
        .insert_shared(shared_id, &shared, 3)
        .await
        .unwrap();
    let (ga, gb, gb2) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let b2 = DeviceId::new(2).unwrap();
    for (aci, device, guid) in [
        (a, DeviceId::PRIMARY, ga),
        (b, DeviceId::PRIMARY, gb),
        (b, b2, gb2),
    ] {
        assert_eq!(
            stores
                .messages
                .insert_referencing(aci, device, guid, shared_id, 1005)
                .await
                .unwrap(),
            Inserted::Queued
        );
    }
    for (aci, device, guid, prefix) in [
        (a, DeviceId::PRIMARY, ga, &b"for a"[..]),
        (b, DeviceId::PRIMARY, gb, &b"for b"[..]),
        (b, b2, gb2, &b"for b"[..]),
    ] {
        let read = stores.messages.read(aci, device, 0, 10).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].guid, guid);
        let mut expected = template.clone();
        let mut content = prefix.to_vec();
        content.extend_from_slice(&payload);
        expected.content = Some(content.into());
        expected.destination_service_id = Some(bytes::Bytes::copy_from_slice(aci.as_bytes()));
        expected.server_guid = Some(bytes::Bytes::copy_from_slice(guid.as_bytes()));
        assert_eq!(
            Envelope::decode(read[0].envelope.clone()).unwrap(),
            expected
        );
    }
    let shared_keys = |test: &TestStores| {
        test.redis
            .as_ref()
            .map(|r| r.keys().into_iter().filter(|k| k.contains("mrm:")).count())
    };
    assert!(
        stores
            .messages
            .remove(a, DeviceId::PRIMARY, ga)
            .await
            .unwrap()
    );
    assert!(
        stores
            .messages
            .remove(b, DeviceId::PRIMARY, gb)
            .await
            .unwrap()
    );
    if backend == Backend::External {
        assert_eq!(
            shared_keys(&test),
            Some(1),
            "still referenced by b's second device"
        );
    }
    assert!(stores.messages.remove(b, b2, gb2).await.unwrap());
    if backend == Backend::External {
        assert_eq!(shared_keys(&test), Some(0), "the last removal deletes it");
    }
}

async fn removing_many_reports_each_message_and_releases_shared_payloads(backend: Backend) {
    let (stores, test) = stores(backend).await;
    let (aci, device) = (Aci::random(), DeviceId::PRIMARY);
    let shared_id = uuid::Uuid::new_v4();
    stores
        .messages
        .insert_shared(
            shared_id,
            &sealpost::storage::SharedMessage {
                template: bytes::Bytes::new(),
                payload: bytes::Bytes::from(vec![1u8; 100]),
                prefixes: vec![(aci, bytes::Bytes::from_static(b"p"))],
            },
            2,
        )
        .await
        .unwrap();
    let plain: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    for guid in &plain {
        stores
            .messages
            .insert(aci, device, *guid, bytes::Bytes::from_static(b"\x08\x01"))
            .await
            .unwrap();
    }
    let referencing: Vec<uuid::Uuid> = (0..2).map(|_| uuid::Uuid::new_v4()).collect();
    for guid in &referencing {
        stores
            .messages
            .insert_referencing(aci, device, *guid, shared_id, 101)
            .await
            .unwrap();
    }
    let unknown = uuid::Uuid::new_v4();
    let removed = stores
        .messages
        .remove_many(
            aci,
            device,
            &[plain[0], unknown, referencing[0], plain[2], plain[0]],
        )
        .await
        .unwrap();
    assert_eq!(removed, vec![true, false, true, true, false]);
    let left: Vec<uuid::Uuid> = stores
        .messages
        .read(aci, device, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.guid)
        .collect();
    assert_eq!(left, vec![plain[1], referencing[1]]);
    let shared_keys = |test: &TestStores| {
        test.redis
            .as_ref()
            .map(|r| r.keys().into_iter().filter(|k| k.contains("mrm:")).count())
    };
    if backend == Backend::External {
        assert_eq!(shared_keys(&test), Some(1), "still referenced once");
    }
    assert_eq!(
        stores
            .messages
            .remove_many(aci, device, &[referencing[1], plain[1]])
            .await
            .unwrap(),
        vec![true, true]
    );
    if backend == Backend::External {
        assert_eq!(shared_keys(&test), Some(0), "the last reference deletes it");
    }
    assert!(
        stores
            .messages
            .read(aci, device, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        stores
            .messages
            .remove_many(aci, device, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

on_both_backends!(
    removing_many_reports_each_message_and_releases_shared_payloads,
    a_shared_payload_completes_every_referencing_message_and_goes_with_the_last,
);
