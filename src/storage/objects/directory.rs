//! `ObjectStore` over a local directory (one pod with a disk, or a shared volume): an object
//! is the file `<root>/<key>`, an upload in progress the directory `<root>/.staging/<id>/`
//! holding its key and one file per part, so any process opening the same root resumes it.
//! Keys are checked (`check_key`) before any path is made from them, and contain no `.`,
//! so no key escapes the root or names the staging area.

use std::io::ErrorKind;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use super::{
    ByteStream, CHUNK_BYTES, ObjectMeta, ObjectStore, PartTag, UploadId, check_completion,
    check_key, check_part_number, check_prefix, clamp, part_etag, refused,
};
use crate::storage::{StorageError, StorageResult};

const STAGING: &str = ".staging";
/// The file in an upload's staging directory that names its key.
const KEY_FILE: &str = "key";

pub struct DirectoryObjects {
    root: PathBuf,
}

fn io(error: std::io::Error) -> StorageError {
    StorageError::Backend(error.into())
}

fn modified_ms(metadata: &std::fs::Metadata) -> StorageResult<i64> {
    let modified = metadata.modified().map_err(io)?;
    Ok(modified
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as i64)
        .unwrap_or(0))
}

/// A part's file name, `<number>.<etag>`, parsed.
fn parse_part(name: &str) -> Option<(u32, String)> {
    let (number, etag) = name.split_once('.')?;
    let valid = etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit());
    Some((number.parse().ok()?, etag.to_owned())).filter(|_| valid)
}

impl DirectoryObjects {
    /// Creates the root (and its staging area) if missing.
    /// A store on `root` that touches the disk only when first written to (a server whose
    /// data directory is not writable starts, and fails only the uploads).
    pub fn lazy(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub async fn open(root: impl Into<PathBuf>) -> StorageResult<Self> {
        let root = root.into();
        fs::create_dir_all(root.join(STAGING)).await.map_err(io)?;
        Ok(Self { root })
    }

    fn object_path(&self, key: &str) -> StorageResult<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// The staging directory of `upload`, checked to belong to `key`.
    async fn staging(&self, key: &str, upload: &UploadId) -> StorageResult<PathBuf> {
        check_key(key)?;
        let well_formed = upload.0.len() == 32 && upload.0.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return Err(refused(format_args!("invalid upload id {:?}", upload.0)));
        }
        let dir = self.root.join(STAGING).join(&upload.0);
        match fs::read_to_string(dir.join(KEY_FILE)).await {
            Ok(owner) if owner == key => Ok(dir),
            Ok(_) => Err(refused(format_args!(
                "upload {:?} is another key's",
                upload.0
            ))),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(refused(format_args!("no upload {:?}", upload.0)))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The parts in a staging directory: number -> (ETag, size, path).
    async fn parts(dir: &Path) -> StorageResult<Vec<(u32, String, u64, PathBuf)>> {
        let mut found = Vec::new();
        let mut entries = fs::read_dir(dir).await.map_err(io)?;
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            let name = entry.file_name();
            if let Some((number, etag)) = name.to_str().and_then(parse_part) {
                let size = entry.metadata().await.map_err(io)?.len();
                found.push((number, etag, size, entry.path()));
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl ObjectStore for DirectoryObjects {
    async fn start_upload(&self, key: &str) -> StorageResult<UploadId> {
        check_key(key)?;
        let id = Uuid::new_v4().simple().to_string();
        let dir = self.root.join(STAGING).join(&id);
        fs::create_dir_all(&dir).await.map_err(io)?;
        fs::write(dir.join(KEY_FILE), key).await.map_err(io)?;
        Ok(UploadId(id))
    }

    async fn put_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        bytes: Bytes,
    ) -> StorageResult<PartTag> {
        check_part_number(number)?;
        let dir = self.staging(key, upload).await?;
        let etag = part_etag(&bytes);
        // Written aside then renamed, so a part file is whole or absent however a pod dies.
        let temp = dir.join(format!("tmp-{}", Uuid::new_v4().simple()));
        let mut file = fs::File::create(&temp).await.map_err(io)?;
        file.write_all(&bytes).await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        drop(file);
        fs::rename(&temp, dir.join(format!("{number}.{etag}")))
            .await
            .map_err(io)?;
        // Putting a number again replaces it: drop its earlier bytes.
        for (other, other_etag, _, path) in Self::parts(&dir).await? {
            if other == number && other_etag != etag {
                match fs::remove_file(path).await {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(io(e)),
                    _ => {}
                }
            }
        }
        Ok(PartTag { number, etag })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartTag],
    ) -> StorageResult<()> {
        let dir = self.staging(key, upload).await?;
        let stored = Self::parts(&dir).await?;
        let find = |number: u32, etag: Option<&str>| {
            stored
                .iter()
                .find(|(n, e, _, _)| *n == number && etag.is_none_or(|etag| etag == e))
        };
        check_completion(parts, |number| {
            // With a replaced part briefly on disk twice, the caller's ETag picks its bytes.
            let etag = parts
                .iter()
                .find(|p| p.number == number)
                .map(|p| p.etag.as_str());
            find(number, etag).map(|(_, e, size, _)| (e.clone(), *size))
        })?;
        let target = self.object_path(key)?;
        let assembled = dir.join(format!("tmp-{}", Uuid::new_v4().simple()));
        let mut out = fs::File::create(&assembled).await.map_err(io)?;
        for part in parts {
            let (_, _, _, path) = find(part.number, Some(&part.etag))
                .ok_or_else(|| refused(format_args!("no part {}", part.number)))?;
            let mut input = fs::File::open(path).await.map_err(io)?;
            tokio::io::copy(&mut input, &mut out).await.map_err(io)?;
        }
        out.sync_all().await.map_err(io)?;
        drop(out);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).await.map_err(io)?;
        }
        // The rename is the object's appearance: readers see the old file or the whole new one.
        fs::rename(&assembled, &target).await.map_err(io)?;
        match fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> StorageResult<()> {
        let dir = match self.staging(key, upload).await {
            Ok(dir) => dir,
            // Unknown (or already finished): nothing to drop. A malformed id or key is refused.
            Err(_) if check_key(key).is_ok() && upload.0.len() == 32 => return Ok(()),
            Err(e) => return Err(e),
        };
        match fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let path = self.object_path(key)?;
        match fs::metadata(&path).await {
            Ok(metadata) if metadata.is_file() => Ok(Some(ObjectMeta {
                size: metadata.len(),
                modified_ms: modified_ms(&metadata)?,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Option<ByteStream>> {
        let path = self.object_path(key)?;
        let mut file = match fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let metadata = file.metadata().await.map_err(io)?;
        if !metadata.is_file() {
            return Ok(None);
        }
        // The open file keeps its bytes even if the object is replaced or deleted meanwhile.
        let Range { start, end } = clamp(range, metadata.len());
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(io)?;
        let stream =
            futures_util::stream::try_unfold((file, end - start), |(mut file, left)| async move {
                if left == 0 {
                    return Ok(None);
                }
                let want = left.min(CHUNK_BYTES as u64) as usize;
                let mut chunk = BytesMut::zeroed(want);
                let mut filled = 0;
                while filled < want {
                    let read = file.read(&mut chunk[filled..]).await.map_err(io)?;
                    if read == 0 {
                        return Err(refused("object shorter than its size"));
                    }
                    filled += read;
                }
                Ok(Some((chunk.freeze(), (file, left - want as u64))))
            });
        Ok(Some(stream.boxed()))
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.object_path(key)?;
        match fs::remove_file(&path).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    async fn list_older(
        &self,
        prefix: &str,
        before_ms: i64,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>> {
        check_prefix(prefix)?;
        // Walks the prefix's directory on every page: fine for a sweeper's pace, not for a
        // hot path.
        let base = match prefix.rfind('/') {
            Some(slash) => self.root.join(&prefix[..slash]),
            None => self.root.clone(),
        };
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let after = after.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            let mut pending = vec![base];
            while let Some(dir) = pending.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io)?;
                    let path = entry.path();
                    // Staging and temporary files have a `.` in their name; keys never do.
                    let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    if name.contains('.') {
                        continue;
                    }
                    let metadata = entry.metadata().map_err(io)?;
                    if metadata.is_dir() {
                        pending.push(path);
                        continue;
                    }
                    let Some(key) = path
                        .strip_prefix(&root)
                        .ok()
                        .and_then(Path::to_str)
                        .map(|key| key.replace(std::path::MAIN_SEPARATOR, "/"))
                    else {
                        continue;
                    };
                    let later = after.as_deref().is_none_or(|after| key.as_str() > after);
                    if key.starts_with(&prefix) && later && modified_ms(&metadata)? < before_ms {
                        keys.push(key);
                    }
                }
            }
            keys.sort();
            keys.truncate(limit);
            Ok(keys)
        })
        .await
        .map_err(|e| StorageError::Backend(e.into()))?
    }
}
