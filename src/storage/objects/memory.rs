//! `ObjectStore` in process maps, for the embedded mode and tests: objects and pending parts
//! live as long as the store (and its clones, which share them). Nothing reaches disk.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use uuid::Uuid;

use super::{
    ByteStream, CHUNK_BYTES, ObjectMeta, ObjectStore, PartTag, UploadId, check_completion,
    check_key, check_part_number, check_prefix, clamp, part_etag, refused,
};
use crate::domain::clock::Clock;
use crate::storage::StorageResult;

struct Object {
    bytes: Bytes,
    modified_ms: i64,
}

struct Upload {
    key: String,
    parts: BTreeMap<u32, (String, Bytes)>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Object>,
    uploads: HashMap<String, Upload>,
}

/// Clones share their objects, as pods share a bucket.
#[derive(Clone, Default)]
pub struct MemoryObjects {
    // std, not tokio: no lock is held across an await, and each is a few map operations
    // (a completion concatenates outside it).
    state: Arc<Mutex<State>>,
    /// What stamps an object's last-modified time (the server's clock in the embedded
    /// mode, so a test that moves it forward ages what is stored).
    clock: Clock,
}

impl MemoryObjects {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_clock(clock: Clock) -> Self {
        Self {
            state: Arc::default(),
            clock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves maps that are still whole.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn unknown_upload(upload: &UploadId) -> crate::storage::StorageError {
    refused(format_args!("no upload {:?}", upload.0))
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    async fn start_upload(&self, key: &str) -> StorageResult<UploadId> {
        check_key(key)?;
        let id = Uuid::new_v4().simple().to_string();
        self.state().uploads.insert(
            id.clone(),
            Upload {
                key: key.to_owned(),
                parts: BTreeMap::new(),
            },
        );
        Ok(UploadId(id))
    }

    async fn put_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        bytes: Bytes,
    ) -> StorageResult<PartTag> {
        check_key(key)?;
        check_part_number(number)?;
        let etag = part_etag(&bytes);
        let mut state = self.state();
        let pending = state
            .uploads
            .get_mut(&upload.0)
            .filter(|pending| pending.key == key)
            .ok_or_else(|| unknown_upload(upload))?;
        pending.parts.insert(number, (etag.clone(), bytes));
        Ok(PartTag { number, etag })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartTag],
    ) -> StorageResult<()> {
        check_key(key)?;
        let chosen: Vec<Bytes> = {
            let state = self.state();
            let pending = state
                .uploads
                .get(&upload.0)
                .filter(|pending| pending.key == key)
                .ok_or_else(|| unknown_upload(upload))?;
            check_completion(parts, |number| {
                pending
                    .parts
                    .get(&number)
                    .map(|(etag, bytes)| (etag.clone(), bytes.len() as u64))
            })?;
            parts
                .iter()
                .map(|part| pending.parts[&part.number].1.clone())
                .collect()
        };
        let mut whole = BytesMut::with_capacity(chosen.iter().map(Bytes::len).sum());
        for part in &chosen {
            whole.extend_from_slice(part);
        }
        let mut state = self.state();
        // Another caller may have completed or aborted it meanwhile: only one completion wins.
        if state.uploads.remove(&upload.0).is_none() {
            return Err(unknown_upload(upload));
        }
        state.objects.insert(
            key.to_owned(),
            Object {
                bytes: whole.freeze(),
                modified_ms: self.clock.now_ms(),
            },
        );
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> StorageResult<()> {
        check_key(key)?;
        let mut state = self.state();
        if state
            .uploads
            .get(&upload.0)
            .is_some_and(|pending| pending.key == key)
        {
            state.uploads.remove(&upload.0);
        }
        Ok(())
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        check_key(key)?;
        Ok(self.state().objects.get(key).map(|object| ObjectMeta {
            size: object.bytes.len() as u64,
            modified_ms: object.modified_ms,
        }))
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Option<ByteStream>> {
        check_key(key)?;
        let Some(bytes) = self.state().objects.get(key).map(|o| o.bytes.clone()) else {
            return Ok(None);
        };
        let Range { start, end } = clamp(range, bytes.len() as u64);
        // Slices of the stored `Bytes` share it: no copy of the object.
        let slice = bytes.slice(start as usize..end as usize);
        let chunks: Vec<StorageResult<Bytes>> = (0..slice.len())
            .step_by(CHUNK_BYTES)
            .map(|at| Ok(slice.slice(at..(at + CHUNK_BYTES).min(slice.len()))))
            .collect();
        Ok(Some(futures_util::stream::iter(chunks).boxed()))
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        check_key(key)?;
        self.state().objects.remove(key);
        Ok(())
    }

    async fn list_older(
        &self,
        prefix: &str,
        before_ms: i64,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>> {
        check_prefix(prefix)?;
        let state = self.state();
        let from = match after {
            Some(after) => std::ops::Bound::Excluded(after.to_owned()),
            None => std::ops::Bound::Included(prefix.to_owned()),
        };
        Ok(state
            .objects
            .range((from, std::ops::Bound::Unbounded))
            .skip_while(|(key, _)| key.as_str() < prefix)
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, object)| object.modified_ms < before_ms)
            .take(limit)
            .map(|(key, _)| key.clone())
            .collect())
    }
}
