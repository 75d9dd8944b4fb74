//! `UploadStore` on every backend (PROTOCOL.md 12.3): an upload's state stored once per
//! key, a lease that one holder at a time has (renewable by it, free again when released
//! or run out), saves that only the lease's holder makes, and uploads listed by age for the
//! sweeper. Redis keeps it all under the configured prefix.

use std::time::Duration;

use sealpost::domain::attachments::AttachmentKey;
use sealpost::domain::uploads::Upload;

use super::support::stores;
use crate::common::Backend;

fn upload(created_ms: i64) -> Upload {
    Upload::new(
        &AttachmentKey::generate(),
        10 * 1024 * 1024,
        format!("upload-{created_ms}"),
        Some([9; 32]),
        created_ms,
    )
}

async fn an_upload_is_stored_once_and_read_back(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let uploads = &stores.uploads;
    let first = upload(1_000);
    assert!(uploads.create(&first).await.unwrap());
    let mut again = first.clone();
    again.upload_id = "another".into();
    assert!(!uploads.create(&again).await.unwrap(), "one state per key");
    assert_eq!(uploads.get(&first.key).await.unwrap(), Some(first.clone()));
    assert_eq!(uploads.get("AAAAAAAAAAAAAAAAAAAA").await.unwrap(), None);
    uploads.remove(&first.key).await.unwrap();
    assert_eq!(uploads.get(&first.key).await.unwrap(), None);
    assert!(
        uploads
            .created_before(i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn one_holder_at_a_time_leases_and_saves(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let uploads = &stores.uploads;
    let mut state = upload(1_000);
    assert!(uploads.create(&state).await.unwrap());
    assert!(uploads.lease(&state.key, "a", 10_000).await.unwrap());
    assert!(
        uploads.lease(&state.key, "a", 10_000).await.unwrap(),
        "renewed"
    );
    assert!(!uploads.lease(&state.key, "b", 10_000).await.unwrap());

    state.offset = 5 * 1024 * 1024;
    state.parts.push((1, "etag-1".into()));
    assert!(!uploads.save(&state, "b").await.unwrap(), "not b's lease");
    assert_eq!(uploads.get(&state.key).await.unwrap().unwrap().offset, 0);
    assert!(uploads.save(&state, "a").await.unwrap());
    assert_eq!(uploads.get(&state.key).await.unwrap(), Some(state.clone()));

    // Released by its holder only; then anyone may take it.
    uploads.release(&state.key, "b").await.unwrap();
    assert!(!uploads.lease(&state.key, "b", 10_000).await.unwrap());
    uploads.release(&state.key, "a").await.unwrap();
    assert!(uploads.lease(&state.key, "b", 200).await.unwrap());
    // A lease runs out on its own.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !uploads.save(&state, "b").await.unwrap(),
        "b's lease ran out"
    );
    assert!(uploads.lease(&state.key, "c", 10_000).await.unwrap());
    // No save brings a removed upload back.
    uploads.remove(&state.key).await.unwrap();
    assert!(uploads.lease(&state.key, "c", 10_000).await.unwrap());
    assert!(!uploads.save(&state, "c").await.unwrap());
    assert_eq!(uploads.get(&state.key).await.unwrap(), None);
}

async fn uploads_are_listed_oldest_first_by_creation(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let uploads = &stores.uploads;
    let states: Vec<Upload> = [5_000, 1_000, 3_000, 9_000].map(upload).into();
    for state in &states {
        assert!(uploads.create(state).await.unwrap());
    }
    assert_eq!(
        uploads.created_before(5_001, 10).await.unwrap(),
        vec![
            states[1].key.clone(),
            states[2].key.clone(),
            states[0].key.clone()
        ]
    );
    assert_eq!(
        uploads.created_before(5_000, 1).await.unwrap(),
        vec![states[1].key.clone()]
    );
    assert!(uploads.created_before(1_000, 10).await.unwrap().is_empty());
    uploads.remove(&states[1].key).await.unwrap();
    assert_eq!(uploads.created_before(2_000, 10).await.unwrap().len(), 0);
    assert_eq!(uploads.created_before(i64::MAX, 10).await.unwrap().len(), 3);
}

on_both_backends!(
    an_upload_is_stored_once_and_read_back,
    one_holder_at_a_time_leases_and_saves,
    uploads_are_listed_oldest_first_by_creation,
);
