//! The manifest every data object carries: what each of its chunks is —
//! stream, partition, schema version, byte range, rows, offsets — so the
//! chunk index can be rebuilt from the objects alone when the metadata
//! store is lost (see [`crate::recover`]).
//!
//! An IPC object (`.arrows`) ends with the manifest as JSON, its length
//! (u32, little-endian) and [`MAGIC`]; readers fetch chunks by byte range
//! and never see it. An archive chunk (`.parquet`) holds it in the Parquet
//! footer's key-value metadata under [`PARQUET_KEY`], so the file stays a
//! plain Parquet file for any reader. Objects written before manifests
//! existed have neither ([`read`] answers `None`).
//!
//! Offsets: a chunk the upkeep rewrote knows its offsets (`exact`). A
//! flushed chunk's offsets are assigned by the metadata commit after its
//! object is written, so its manifest holds the base offset its writer
//! expected — the partition's end after the writer's previous commit, or
//! as read from the metadata store. For a sole writer that is the offset
//! the commit gave, unless that commit failed: then a later object claims
//! the same base, and recovery keeps the later one.

use std::ops::Range;

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::chunk::TimeBounds;
use crate::error::{LogError, Result};
use crate::path::DataObjectPath;
use crate::store::Store;
use crate::stream::StreamId;

/// The last bytes of an IPC object with a manifest.
pub const MAGIC: &[u8; 4] = b"SHM1";
/// The Parquet key-value metadata key of an archive chunk's manifest.
pub const PARQUET_KEY: &str = "streamhouse.manifest";
/// How much of an object's end one read fetches first.
const FIRST_READ: u64 = 64 * 1024;
/// A manifest longer than this is refused as corrupt (a flush holds at
/// most a few thousand chunks, each about 300 bytes of JSON).
const MAX_LEN: u64 = 64 << 20;

/// What one data object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub chunks: Vec<ManifestChunk>,
}

/// One chunk of a data object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestChunk {
    pub stream: StreamId,
    pub partition: u32,
    pub schema_version: u32,
    /// Its bytes in the object.
    pub bytes: [u64; 2],
    /// The offsets it holds (end exclusive): assigned ones when `exact`,
    /// else the ones its writer expected.
    pub offsets: [u64; 2],
    pub exact: bool,
    /// Rows, when fewer than offsets (a table's log compacted by key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_rows: Option<u64>,
    pub event_time: [Option<i64>; 2],
    pub append_time: [Option<i64>; 2],
}

impl ManifestChunk {
    /// Its byte range.
    pub fn byte_range(&self) -> Range<u64> {
        self.bytes[0]..self.bytes[1]
    }

    /// Bounds as the index keeps them.
    pub fn event_time(&self) -> TimeBounds {
        TimeBounds {
            min: self.event_time[0],
            max: self.event_time[1],
        }
    }

    /// Bounds as the index keeps them.
    pub fn append_time(&self) -> TimeBounds {
        TimeBounds {
            min: self.append_time[0],
            max: self.append_time[1],
        }
    }

    /// Offsets it spans.
    pub fn span(&self) -> u64 {
        self.offsets[1].saturating_sub(self.offsets[0])
    }
}

/// Bounds as a manifest keeps them.
pub fn bounds(t: TimeBounds) -> [Option<i64>; 2] {
    [t.min, t.max]
}

/// Appends `manifest` to an IPC object's bytes.
pub fn append(object: &mut Vec<u8>, manifest: &Manifest) -> Result<()> {
    let json =
        serde_json::to_vec(manifest).map_err(|e| LogError::Internal(format!("manifest: {e}")))?;
    let len =
        u32::try_from(json.len()).map_err(|_| LogError::Internal("manifest over 4 GiB".into()))?;
    object.extend_from_slice(&json);
    object.extend_from_slice(&len.to_le_bytes());
    object.extend_from_slice(MAGIC);
    Ok(())
}

/// The manifest as Parquet key-value metadata.
pub fn to_parquet_value(manifest: &Manifest) -> Result<String> {
    serde_json::to_string(manifest).map_err(|e| LogError::Internal(format!("manifest: {e}")))
}

/// What the end of an IPC object says.
enum Tail {
    Found(Manifest),
    /// The manifest is longer than the bytes read: read this many.
    Need(u64),
    Absent,
}

fn parse_tail(key: &str, tail: &[u8]) -> Result<Tail> {
    let corrupt = |detail: String| LogError::CorruptChunk {
        object: key.to_string(),
        detail,
    };
    let n = tail.len();
    if n < 8 || &tail[n - 4..] != MAGIC {
        return Ok(Tail::Absent);
    }
    let len = u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as u64;
    if len > MAX_LEN {
        return Err(corrupt(format!("manifest of {len} bytes")));
    }
    let want = len + 8;
    if want > n as u64 {
        return Ok(Tail::Need(want));
    }
    let json = &tail[n - want as usize..n - 8];
    serde_json::from_slice(json)
        .map(Tail::Found)
        .map_err(|e| corrupt(format!("unreadable manifest: {e}")))
}

/// The manifest of data object `key` of `size` bytes; `None` for an
/// object written before manifests existed.
pub async fn read(store: &Store, key: &str, size: u64) -> Result<Option<Manifest>> {
    let path = Path::from(key);
    if DataObjectPath::is_archive(key) {
        let bytes = store.get(&path).await?;
        return parquet_manifest(key, bytes);
    }
    let mut want = FIRST_READ.min(size);
    loop {
        let tail = store.get_range(&path, size - want..size).await?;
        match parse_tail(key, &tail)? {
            Tail::Found(m) => return Ok(Some(m)),
            Tail::Absent => return Ok(None),
            Tail::Need(n) if n <= size && n > want => want = n,
            Tail::Need(n) => {
                return Err(LogError::CorruptChunk {
                    object: key.to_string(),
                    detail: format!("manifest of {n} bytes in an object of {size}"),
                });
            }
        }
    }
}

fn parquet_manifest(key: &str, bytes: Bytes) -> Result<Option<Manifest>> {
    let corrupt = |detail: String| LogError::CorruptChunk {
        object: key.to_string(),
        detail,
    };
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&bytes)
        .map_err(|e| corrupt(e.to_string()))?;
    let Some(kv) = meta.file_metadata().key_value_metadata() else {
        return Ok(None);
    };
    match kv.iter().find(|e| e.key == PARQUET_KEY) {
        Some(e) => {
            let value = e.value.as_deref().unwrap_or_default();
            serde_json::from_str(value)
                .map(Some)
                .map_err(|e| corrupt(format!("unreadable manifest: {e}")))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(chunks: usize) -> Manifest {
        Manifest {
            chunks: (0..chunks as u64)
                .map(|i| ManifestChunk {
                    stream: 7,
                    partition: i as u32,
                    schema_version: 1,
                    bytes: [i * 10, i * 10 + 10],
                    offsets: [100, 105],
                    exact: false,
                    sparse_rows: None,
                    event_time: [None, None],
                    append_time: [Some(1), Some(2)],
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_manifest_is_read_back_from_the_end_of_its_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_local(dir.path()).unwrap();
        // Small, and longer than the first read.
        for chunks in [1, 1000] {
            let m = manifest(chunks);
            let mut object = vec![0xFF; 5000];
            append(&mut object, &m).unwrap();
            let key = DataObjectPath::new_unique();
            let size = object.len() as u64;
            store
                .put_durable(key.as_path(), Bytes::from(object))
                .await
                .unwrap();
            assert_eq!(read(&store, key.as_str(), size).await.unwrap(), Some(m));
        }
        // An object without one.
        let key = DataObjectPath::new_unique();
        store
            .put_durable(key.as_path(), Bytes::from_static(b"plain bytes"))
            .await
            .unwrap();
        assert_eq!(read(&store, key.as_str(), 11).await.unwrap(), None);
        // A length past the object is corrupt, not a panic.
        let mut bad = b"xx".to_vec();
        bad.extend_from_slice(&1000u32.to_le_bytes());
        bad.extend_from_slice(MAGIC);
        let key = DataObjectPath::new_unique();
        store
            .put_durable(key.as_path(), Bytes::from(bad))
            .await
            .unwrap();
        assert!(read(&store, key.as_str(), 10).await.is_err());
    }
}
