//! `ObjectStore` on every backend (PROTOCOL.md 12): a multipart upload appears whole only
//! when completed, ranged reads are clamped to the object, an aborted upload leaves nothing,
//! deletes and the sweeper's listing, an upload resumed from another store instance (another
//! pod), and uploads side by side; presigned URLs and bucket lifecycles where a backend has
//! them. S3 is a bucket of its own on the in-process s3s server (`common::s3`). Every
//! directory and bucket is removed when its test ends.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use sealpost::storage::now_ms;
use sealpost::storage::objects::directory::DirectoryObjects;
use sealpost::storage::objects::memory::MemoryObjects;
use sealpost::storage::objects::{MIN_PART_BYTES, ObjectStore, PartTag, UploadId};

use crate::common::s3::TestBucket;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Directory,
    S3,
}

/// A store and a way to open it again as another process would; removes its directory or
/// bucket.
struct Fixture {
    store: Arc<dyn ObjectStore>,
    memory: MemoryObjects,
    dir: Option<PathBuf>,
    bucket: Option<TestBucket>,
}

impl Fixture {
    async fn new(kind: Kind) -> Self {
        let memory = MemoryObjects::new();
        let dir = match kind {
            Kind::Directory => Some(std::env::temp_dir().join(format!(
                "sealpost-objects-{}",
                uuid::Uuid::new_v4().simple()
            ))),
            Kind::Memory | Kind::S3 => None,
        };
        let bucket = match kind {
            Kind::S3 => Some(TestBucket::new().await),
            Kind::Memory | Kind::Directory => None,
        };
        let mut fixture = Self {
            store: Arc::new(memory.clone()),
            memory,
            dir,
            bucket,
        };
        fixture.store = fixture.reopen().await;
        fixture
    }

    /// A fresh instance on the same objects: a new `DirectoryObjects` on the same root, a
    /// new S3 client of the same bucket, or a clone of the memory store (the embedded mode
    /// is one process).
    async fn reopen(&self) -> Arc<dyn ObjectStore> {
        match (&self.dir, &self.bucket) {
            (Some(dir), _) => Arc::new(DirectoryObjects::open(dir).await.unwrap()),
            (None, Some(bucket)) => Arc::new(bucket.store()),
            (None, None) => Arc::new(self.memory.clone()),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

macro_rules! on_object_backends {
    ($($name:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Kind::Memory).await
                }
            )+
        }
        mod directory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Kind::Directory).await
                }
            )+
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Kind::S3).await
                }
            )+
        }
    };
}

on_object_backends!(
    a_three_part_upload_appears_byte_for_byte_only_once_completed,
    ranged_reads_are_clamped_to_the_object,
    an_aborted_upload_leaves_nothing,
    a_missing_key_reads_as_none_and_a_deleted_one_too,
    keys_that_could_escape_are_refused,
    a_part_below_the_minimum_but_the_last_is_refused,
    list_older_pages_through_old_keys_under_a_prefix,
    an_upload_resumes_from_another_store_instance,
    ten_uploads_at_once_each_appear_whole,
    a_presigned_get_serves_the_bytes_where_the_backend_makes_one,
    the_lifecycle_is_applied_where_the_backend_has_one,
    every_allowed_key_character_round_trips,
);

fn key() -> String {
    format!(
        "attachments/{}",
        &uuid::Uuid::new_v4().simple().to_string()[..20]
    )
}

/// `len` bytes that differ with `seed` and position, so a misplaced byte shows.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32 * 7) as u8)
        .collect::<Vec<u8>>()
        .into()
}

async fn read(
    store: &dyn ObjectStore,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Option<Vec<u8>> {
    let mut stream = store.get(key, range).await.unwrap()?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    Some(out)
}

/// Uploads `parts` to `key` and completes it; gives the bytes.
async fn upload(store: &dyn ObjectStore, key: &str, parts: &[Bytes]) -> Vec<u8> {
    let id = store.start_upload(key).await.unwrap();
    let mut tags = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        tags.push(
            store
                .put_part(key, &id, i as u32 + 1, part.clone())
                .await
                .unwrap(),
        );
    }
    store.complete_upload(key, &id, &tags).await.unwrap();
    parts.concat()
}

fn three_parts() -> Vec<Bytes> {
    vec![
        pattern(MIN_PART_BYTES, 1),
        pattern(MIN_PART_BYTES, 2),
        pattern(1024, 3),
    ]
}

async fn a_three_part_upload_appears_byte_for_byte_only_once_completed(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let store = &*fixture.store;
    let key = key();
    let parts = three_parts();
    let id = store.start_upload(&key).await.unwrap();
    let mut tags = Vec::new();
    // Put out of order: the completion list orders them.
    for number in [2u32, 1, 3] {
        let tag = store
            .put_part(&key, &id, number, parts[number as usize - 1].clone())
            .await
            .unwrap();
        assert_eq!(tag.number, number);
        tags.push(tag);
        assert_eq!(
            store.head(&key).await.unwrap(),
            None,
            "not before completion"
        );
        assert_eq!(read(store, &key, None).await, None);
    }
    tags.sort_by_key(|tag| tag.number);
    store.complete_upload(&key, &id, &tags).await.unwrap();
    let whole = parts.concat();
    let meta = store.head(&key).await.unwrap().expect("completed");
    assert_eq!(meta.size, whole.len() as u64);
    assert!((meta.modified_ms - now_ms()).abs() < 60_000);
    assert!(
        read(store, &key, None).await.unwrap() == whole,
        "byte for byte"
    );
    // The upload is finished: completing it again fails.
    assert!(store.complete_upload(&key, &id, &tags).await.is_err());
}

async fn ranged_reads_are_clamped_to_the_object(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let store = &*fixture.store;
    let key = key();
    let whole = upload(store, &key, &three_parts()).await;
    let size = whole.len() as u64;
    let cases = [
        (0..10, &whole[..10]),
        (
            MIN_PART_BYTES as u64 - 5..MIN_PART_BYTES as u64 + 5,
            &whole[MIN_PART_BYTES - 5..MIN_PART_BYTES + 5],
        ),
        (size - 100..size, &whole[whole.len() - 100..]),
        (size - 100..size + 1000, &whole[whole.len() - 100..]),
        (size..size + 10, &[][..]),
        (size + 10..size + 20, &[][..]),
    ];
    for (range, expected) in cases {
        let got = read(store, &key, Some(range.clone())).await.unwrap();
        assert!(got == expected, "range {range:?}: {} bytes", got.len());
    }
}

async fn an_aborted_upload_leaves_nothing(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let store = &*fixture.store;
    let key = key();
    let id = store.start_upload(&key).await.unwrap();
    let tag = store
        .put_part(&key, &id, 1, pattern(1024, 9))
        .await
        .unwrap();
    store.abort_upload(&key, &id).await.unwrap();
    assert!(store.complete_upload(&key, &id, &[tag]).await.is_err());
    assert!(store.put_part(&key, &id, 2, pattern(10, 1)).await.is_err());
    assert_eq!(store.head(&key).await.unwrap(), None);
    assert_eq!(
        store.list_older("", i64::MAX, None, 10).await.unwrap(),
        Vec::<String>::new()
    );
    // Aborting again is not an error.
    store.abort_upload(&key, &id).await.unwrap();
    if let Some(dir) = &fixture.dir {
        let staged = std::fs::read_dir(dir.join(".staging")).unwrap().count();
        assert_eq!(staged, 0, "no staged parts left on disk");
    }
}

async fn a_missing_key_reads_as_none_and_a_deleted_one_too(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let store = &*fixture.store;
    let key = key();
    assert_eq!(store.head(&key).await.unwrap(), None);
    assert_eq!(read(store, &key, None).await, None);
    store.delete(&key).await.unwrap();
    let whole = upload(store, &key, &[pattern(100, 4)]).await;
    assert_eq!(read(store, &key, None).await.unwrap(), whole);
    store.delete(&key).await.unwrap();
    assert_eq!(store.head(&key).await.unwrap(), None);
    assert_eq!(read(store, &key, None).await, None);
}

async fn keys_that_could_escape_are_refused(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let store = &*fixture.store;
    for bad in [
        "../escape",
        "/etc/passwd",
        "attachments/../../x",
        "attachments/a.b",
        "a//b",
        "",
    ] {
        assert!(store.start_upload(bad).await.is_err(), "{bad:?}");
        assert!(store.head(bad).await.is_err(), "{bad:?}");
        assert!(store.get(bad, None).await.is_err(), "{bad:?}");
        assert!(store.delete(bad).await.is_err(), "{bad:?}");
    }
    let key = key();
    for bad in ["../../x", "a/b", ""] {
        let id = UploadId(bad.to_owned());
        assert!(
            store.put_part(&key, &id, 1, pattern(1, 1)).await.is_err(),
            "{bad:?}"
        );
    }
    // An upload is bound to the key it started for.
    let id = store.start_upload(&key).await.unwrap();
    assert!(
        store
            .put_part(&self::key(), &id, 1, pattern(1, 1))
            .await
            .is_err()
    );
    assert!(
        store.put_part(&key, &id, 0, pattern(1, 1)).await.is_err(),
        "numbered from 1"
    );
}

async fn a_part_below_the_minimum_but_the_last_is_refused(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let store = &*fixture.store;
    let key = key();
    let id = store.start_upload(&key).await.unwrap();
    let small = store.put_part(&key, &id, 1, pattern(10, 1)).await.unwrap();
    let last = store.put_part(&key, &id, 2, pattern(10, 2)).await.unwrap();
    assert!(
        store
            .complete_upload(&key, &id, &[small.clone(), last.clone()])
            .await
            .is_err()
    );
    let wrong = PartTag {
        number: 2,
        etag: "nope".into(),
    };
    assert!(store.complete_upload(&key, &id, &[wrong]).await.is_err());
    assert!(
        store
            .complete_upload(&key, &id, &[last.clone(), small])
            .await
            .is_err(),
        "order"
    );
    assert_eq!(store.head(&key).await.unwrap(), None);
    // A refused completion keeps the upload: re-put part 1 at full size and finish.
    let full = store
        .put_part(&key, &id, 1, pattern(MIN_PART_BYTES, 1))
        .await
        .unwrap();
    store
        .complete_upload(&key, &id, &[full, last])
        .await
        .unwrap();
    assert_eq!(
        store.head(&key).await.unwrap().unwrap().size,
        MIN_PART_BYTES as u64 + 10
    );
}

async fn list_older_pages_through_old_keys_under_a_prefix(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let store = &*fixture.store;
    let before = now_ms() - 60_000;
    let mut keys: Vec<String> = (0..5).map(|_| key()).collect();
    for key in &keys {
        upload(store, key, &[pattern(10, 1)]).await;
    }
    upload(store, "other/AAAAAAAAAAAAAAAAAAAA", &[pattern(10, 1)]).await;
    keys.sort();
    let later = now_ms() + 60_000;
    assert_eq!(
        store
            .list_older("attachments/", before, None, 10)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_older("attachments/", later, after.as_deref(), 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen.extend(page);
        after = Some(last);
    }
    assert_eq!(seen, keys);
    assert_eq!(
        store.list_older("", later, None, 100).await.unwrap().len(),
        6
    );
}

async fn an_upload_resumes_from_another_store_instance(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let key = key();
    let parts = three_parts();
    let id = fixture.store.start_upload(&key).await.unwrap();
    let first = fixture
        .store
        .put_part(&key, &id, 1, parts[0].clone())
        .await
        .unwrap();
    // Only the strings travel (as through Redis) to another pod's store.
    let kept = (id.0.clone(), first.etag.clone());
    let other = fixture.reopen().await;
    let id = UploadId(kept.0);
    let first = PartTag {
        number: 1,
        etag: kept.1,
    };
    let second = other
        .put_part(&key, &id, 2, parts[1].clone())
        .await
        .unwrap();
    let third = other
        .put_part(&key, &id, 3, parts[2].clone())
        .await
        .unwrap();
    other
        .complete_upload(&key, &id, &[first, second, third])
        .await
        .unwrap();
    assert!(read(&*fixture.store, &key, None).await.unwrap() == parts.concat());
}

async fn ten_uploads_at_once_each_appear_whole(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let uploads = (0..10u8).map(|i| {
        let store = fixture.store.clone();
        tokio::spawn(async move {
            let key = key();
            let parts = [pattern(MIN_PART_BYTES, i), pattern(100 + i as usize, i + 1)];
            let whole = upload(&*store, &key, &parts).await;
            (key, whole)
        })
    });
    let done = futures_util::future::join_all(uploads).await;
    for result in done {
        let (key, whole) = result.unwrap();
        assert!(
            read(&*fixture.store, &key, None).await.unwrap() == whole,
            "{key}"
        );
    }
}

/// Only S3 presigns and keeps a lifecycle; the local backends are served through sealpost
/// and swept.
fn is_bucket(kind: Kind) -> bool {
    kind == Kind::S3
}

async fn a_presigned_get_serves_the_bytes_where_the_backend_makes_one(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let store = &*fixture.store;
    let key = key();
    let whole = upload(store, &key, &[pattern(1000, 5)]).await;
    let url = store
        .presigned_get(&key, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    if !is_bucket(kind) {
        assert_eq!(url, None);
        return;
    }
    let url = url.expect("a bucket presigns");
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap() == whole, "byte for byte");
    // One character of the signature changed: the service refuses it.
    let at = url.find("X-Amz-Signature=").expect("a SigV4 query") + "X-Amz-Signature=".len();
    let flipped = if url.as_bytes()[at] == b'0' { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &url[..at], &url[at + 1..]);
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403);
}

async fn the_lifecycle_is_applied_where_the_backend_has_one(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let applied = fixture.store.apply_lifecycle(45, 7).await.unwrap();
    assert_eq!(applied, is_bucket(kind));
    let Some(bucket) = &fixture.bucket else {
        return;
    };
    let rules = bucket
        .lifecycle()
        .expect("the bucket keeps the configuration")
        .rules;
    assert_eq!(rules.len(), 2, "{rules:?}");
    for rule in &rules {
        let prefix = rule.filter.as_ref().and_then(|f| f.prefix.as_deref());
        assert_eq!(prefix, Some("attachments/"), "{rule:?}");
        assert_eq!(rule.status.as_str(), "Enabled");
    }
    let expires = rules
        .iter()
        .find_map(|rule| rule.expiration.as_ref()?.days)
        .expect("an expiration rule");
    assert_eq!(expires, 45);
    let aborts = rules
        .iter()
        .find_map(|rule| {
            rule.abort_incomplete_multipart_upload
                .as_ref()?
                .days_after_initiation
        })
        .expect("an abort rule");
    assert_eq!(aborts, 7);
}

#[tokio::test]
async fn a_bucket_without_lifecycle_support_leaves_retention_to_the_sweeper() {
    let bucket = TestBucket::without_lifecycle().await;
    assert!(!bucket.store().apply_lifecycle(45, 7).await.unwrap());
    // The store itself works there.
    let store = bucket.store();
    let key = key();
    let whole = upload(&store, &key, &[pattern(10, 1)]).await;
    assert_eq!(read(&store, &key, None).await.unwrap(), whole);
}

#[tokio::test]
async fn a_bucket_that_refuses_the_keys_or_does_not_answer_fails_without_naming_the_secret() {
    use sealpost::config::Secret;
    use sealpost::storage::objects::s3::S3Objects;

    let bucket = TestBucket::new().await;
    let mut wrong = bucket.config.clone();
    wrong.secret_access_key = Secret::new("not-the-secret-0123456789");
    let store = S3Objects::new(&crate::common::s3::settings(&wrong)).unwrap();
    // A refused signature is an error, never "no such object".
    let refused = store.head(&key()).await.unwrap_err().to_string();
    assert!(!refused.contains("not-the-secret"), "{refused}");
    let refused = store.start_upload(&key()).await.unwrap_err().to_string();
    assert!(!refused.contains("not-the-secret"), "{refused}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut down = bucket.config.clone();
    down.endpoint = format!("http://127.0.0.1:{port}");
    let store = S3Objects::new(&crate::common::s3::settings(&down)).unwrap();
    let started = std::time::Instant::now();
    let unreachable = store.head(&key()).await.unwrap_err();
    assert!(
        matches!(unreachable, sealpost::storage::StorageError::Unavailable(_)),
        "{unreachable}"
    );
    let unreachable = unreachable.to_string();
    assert!(
        !unreachable.contains(crate::common::s3::SECRET_KEY),
        "{unreachable}"
    );
    let lifecycle = store.apply_lifecycle(45, 7).await.unwrap_err().to_string();
    assert!(
        !lifecycle.contains(crate::common::s3::SECRET_KEY),
        "{lifecycle}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "gave up only after {:?}",
        started.elapsed()
    );
}

async fn every_allowed_key_character_round_trips(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let store = &*fixture.store;
    let key = "attachments/AZaz09-_=x/nested-Key_=";
    let whole = upload(store, key, &[pattern(64, 8)]).await;
    assert_eq!(read(store, key, Some(1..3)).await.unwrap(), &whole[1..3]);
    assert_eq!(
        store
            .list_older("attachments/AZ", i64::MAX, None, 10)
            .await
            .unwrap(),
        vec![key.to_owned()]
    );
    assert_eq!(store.head(key).await.unwrap().unwrap().size, 64);
    store.delete(key).await.unwrap();
    assert_eq!(store.head(key).await.unwrap(), None);
}
