//! [`FileSnapshotArchive`]: archived snapshots as files in a directory, e.g. on cheaper or
//! slower storage than the database.
//!
//! Layout: `DIR/<type>/<id>/<version>.snap`, the type and id hex-encoded (any id is a safe
//! file name) and the version zero-padded (names sort by version). A file is the magic bytes
//! `ESASNAP1` and the record in MessagePack; it is written to a temporary name and renamed, so
//! a crash never leaves half a file under a real name. The record keeps its checksum, so a
//! damaged file is caught where the snapshot is opened, as for any snapshot; a file whose
//! contents claim another version than its name is refused as corrupt when read.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::archive::{ArchivedSnapshot, SnapshotArchive};
use crate::{SnapshotBase, SnapshotRecord, StoreError, StoreResult, StreamId};

const MAGIC: &[u8; 8] = b"ESASNAP1";
const SUFFIX: &str = "snap";

/// An archive in a directory (created on the first write).
#[derive(Debug, Clone)]
pub struct FileSnapshotArchive {
    dir: PathBuf,
}

/// The record as a file holds it.
#[derive(Serialize, Deserialize)]
struct FileRecord {
    version: u64,
    last_event_id: Uuid,
    state_schema_version: u32,
    codec: String,
    compression: String,
    checksum: u64,
    uncompressed_size: u64,
    stored_size: u64,
    taken_at: DateTime<Utc>,
    base: Option<(u64, u64)>,
    archived_at: DateTime<Utc>,
    bytes: Bytes,
}

impl FileSnapshotArchive {
    /// An archive in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn stream_dir(&self, stream: &StreamId) -> PathBuf {
        self.dir
            .join(hex(stream.aggregate_type()))
            .join(hex(stream.aggregate_id()))
    }

    /// The versions archived for `stream`, ascending.
    async fn versions(&self, stream: &StreamId) -> StoreResult<Vec<u64>> {
        let mut entries = match tokio::fs::read_dir(self.stream_dir(stream)).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io("listing", &self.stream_dir(stream), error)),
        };
        let mut versions = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io("listing", &self.stream_dir(stream), e))?
        {
            let name = entry.file_name();
            let version = name
                .to_str()
                .and_then(|n| n.strip_suffix(".snap"))
                .and_then(|n| n.parse::<u64>().ok());
            versions.extend(version);
        }
        versions.sort_unstable();
        Ok(versions)
    }

    fn file(&self, stream: &StreamId, version: u64) -> PathBuf {
        self.stream_dir(stream)
            .join(format!("{version:020}.{SUFFIX}"))
    }

    async fn read(&self, stream: &StreamId, version: u64) -> StoreResult<ArchivedSnapshot> {
        let path = self.file(stream, version);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| io("reading", &path, e))?;
        let body = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| {
            StoreError::Corrupt(format!("{} is not an archived snapshot", path.display()))
        })?;
        let file: FileRecord = rmp_serde::from_slice(body).map_err(|e| {
            StoreError::Corrupt(format!("{} cannot be decoded: {e}", path.display()))
        })?;
        // Looked up by the version in its name: contents claiming another are damaged (and
        // would break "at or before", e.g. with version 0).
        if file.version != version {
            return Err(StoreError::Corrupt(format!(
                "{} holds a snapshot at version {}, not {version}",
                path.display(),
                file.version
            )));
        }
        Ok(ArchivedSnapshot {
            archived_at: file.archived_at,
            record: SnapshotRecord {
                stream: stream.clone(),
                version: file.version,
                last_event_id: file.last_event_id,
                state_schema_version: file.state_schema_version,
                codec: file.codec,
                compression: file.compression,
                checksum: file.checksum,
                uncompressed_size: file.uncompressed_size,
                stored_size: file.stored_size,
                taken_at: file.taken_at,
                bytes: file.bytes,
                base: file
                    .base
                    .map(|(version, checksum)| SnapshotBase { version, checksum }),
            },
        })
    }
}

#[async_trait]
impl SnapshotArchive for FileSnapshotArchive {
    async fn archive(&self, record: SnapshotRecord) -> StoreResult<()> {
        let dir = self.stream_dir(&record.stream);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io("creating", &dir, e))?;
        let path = self.file(&record.stream, record.version);
        let file = FileRecord {
            version: record.version,
            last_event_id: record.last_event_id,
            state_schema_version: record.state_schema_version,
            codec: record.codec,
            compression: record.compression,
            checksum: record.checksum,
            uncompressed_size: record.uncompressed_size,
            stored_size: record.stored_size,
            taken_at: record.taken_at,
            base: record.base.map(|b| (b.version, b.checksum)),
            archived_at: crate::memory::now_micros(),
            bytes: record.bytes,
        };
        let mut contents = MAGIC.to_vec();
        rmp_serde::encode::write_named(&mut contents, &file)
            .map_err(|e| StoreError::Corrupt(format!("encoding an archived snapshot: {e}")))?;
        let partial = path.with_extension("partial");
        tokio::fs::write(&partial, contents)
            .await
            .map_err(|e| io("writing", &partial, e))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| io("renaming", &partial, e))
    }

    async fn list_archived(
        &self,
        stream: &StreamId,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<ArchivedSnapshot>> {
        let mut listed = Vec::new();
        for version in self.versions(stream).await?.into_iter().rev() {
            if (from..=to).contains(&version) {
                listed.push(self.read(stream, version).await?);
            }
        }
        Ok(listed)
    }

    async fn load_archived(
        &self,
        stream: &StreamId,
        at_or_before: u64,
    ) -> StoreResult<Option<SnapshotRecord>> {
        let newest = self
            .versions(stream)
            .await?
            .into_iter()
            .rev()
            .find(|v| *v <= at_or_before);
        match newest {
            Some(version) => Ok(Some(self.read(stream, version).await?.record)),
            None => Ok(None),
        }
    }

    async fn delete_archived(&self, stream: &StreamId, version: u64) -> StoreResult<bool> {
        let path = self.file(stream, version);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(io("deleting", &path, error)),
        }
    }
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn io(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Backend {
        message: format!("{what} {}: {error}", path.display()),
        source: Some(Box::new(error)),
    }
}
