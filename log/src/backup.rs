//! Backups of the metadata store in the object store, and restoring one.
//!
//! A backup is a consistent copy of the store's committed state taken
//! while the server runs ([`MetadataStore::snapshot_into`]: `VACUUM INTO`
//! for the embedded SQLite store), compressed with zstd and written under
//! [`PREFIX`]`/<ULID>.sqlite.zst`; the ULID orders backups by the time
//! they were taken. [`prune`] keeps the newest few. [`restore`] writes a
//! backup back as the metadata file of a data directory that lost its own
//! (the server stopped); it refuses to replace a file that is still there.
//! Files pass through the local disk in parts, so memory stays bounded
//! however large the store.
//!
//! What a backup holds is what was committed when it was taken: appends
//! acknowledged later are in the object store but not in the backup, and
//! [`crate::recover`] rolls a restored index forward with them.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};

use object_store::ObjectStoreExt;
use object_store::path::Path;
use ulid::Ulid;

use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::metadata::MetadataStore;
use crate::store::Store;

/// Where backups are kept in the object store.
pub const PREFIX: &str = "metadata/backups";
const SUFFIX: &str = ".sqlite.zst";
/// zstd level: metadata pages compress well at low levels.
const LEVEL: i32 = 3;

/// One backup in the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Its object key.
    pub key: String,
    /// Compressed bytes.
    pub bytes: u64,
    /// When it was taken (µs since the epoch, from its ULID).
    pub taken_at: Micros,
}

impl Backup {
    fn parse(key: &str, bytes: u64) -> Option<Backup> {
        let name = key.strip_prefix(PREFIX)?.strip_prefix('/')?;
        let id: Ulid = name.strip_suffix(SUFFIX)?.parse().ok()?;
        Some(Backup {
            key: key.to_string(),
            bytes,
            taken_at: (id.timestamp_ms() as i64).saturating_mul(1000),
        })
    }
}

/// Removes a scratch file when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Takes a backup of `meta` into `store`, using `scratch` (a directory on
/// a disk with room for the copy, used by one process and one backup at a
/// time) for its files; files left there by a backup cut short by a crash
/// are deleted first.
pub async fn take(meta: &dyn MetadataStore, store: &Store, scratch: &FsPath) -> Result<Backup> {
    let mut left = tokio::fs::read_dir(scratch).await?;
    while let Some(e) = left.next_entry().await? {
        if e.file_name().to_string_lossy().starts_with(".backup-") {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
    let id = Ulid::new();
    let copy = Scratch(scratch.join(format!(".backup-{id}.db")));
    let packed = Scratch(scratch.join(format!(".backup-{id}.db.zst")));
    meta.snapshot_into(&copy.0).await?;
    let (from, to) = (copy.0.clone(), packed.0.clone());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let input = std::io::BufReader::new(std::fs::File::open(from)?);
        let output = std::fs::File::create_new(to)?;
        zstd::stream::copy_encode(input, output, LEVEL)
    })
    .await
    .map_err(|e| LogError::Internal(format!("backup compression task: {e}")))??;
    let key = format!("{PREFIX}/{id}{SUFFIX}");
    let bytes = store.put_file(&Path::from(key.as_str()), &packed.0).await?;
    Backup::parse(&key, bytes)
        .ok_or_else(|| LogError::Internal(format!("backup key {key} does not parse")))
}

/// Every backup in `store`, oldest first.
pub async fn list(store: &Store) -> Result<Vec<Backup>> {
    use futures::TryStreamExt;
    let objects: Vec<_> = store
        .object_store()
        .list(Some(&Path::from(PREFIX)))
        .try_collect()
        .await?;
    let mut out: Vec<Backup> = objects
        .iter()
        .filter_map(|o| Backup::parse(o.location.as_ref(), o.size))
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Deletes all but the newest `keep` backups; returns how many went.
pub async fn prune(store: &Store, keep: usize) -> Result<usize> {
    let all = list(store).await?;
    let old = all.len().saturating_sub(keep);
    for b in &all[..old] {
        store
            .object_store()
            .delete(&Path::from(b.key.as_str()))
            .await?;
    }
    Ok(old)
}

/// Writes backup `key` (the newest without one) as the metadata file
/// `target`, which must not exist, nor its `-wal` or `-shm` companions (a
/// stale write-ahead log would be applied to the restored file).
pub async fn restore(store: &Store, key: Option<&str>, target: &FsPath) -> Result<Backup> {
    ensure_absent(target).await?;
    let all = list(store).await?;
    let backup = match key {
        Some(k) => all
            .into_iter()
            .find(|b| b.key == k || b.key.rsplit('/').next() == Some(k))
            .ok_or_else(|| LogError::InvalidArgument(format!("no backup {k} under {PREFIX}/")))?,
        None => all
            .into_iter()
            .next_back()
            .ok_or_else(|| LogError::InvalidArgument(format!("no backup under {PREFIX}/")))?,
    };
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => FsPath::new("."),
    };
    let packed = Scratch(companion(target, ".restoring.zst"));
    let unpacked = Scratch(companion(target, ".restoring"));
    store
        .get_file(&Path::from(backup.key.as_str()), &packed.0)
        .await?;
    let (from, to, dir, target) = (
        packed.0.clone(),
        unpacked.0.clone(),
        dir.to_path_buf(),
        target.to_path_buf(),
    );
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let input = std::io::BufReader::new(std::fs::File::open(from)?);
        let mut output = std::fs::File::create_new(&to)?;
        zstd::stream::copy_decode(input, &mut output)?;
        output.sync_all()?;
        std::fs::rename(&to, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })
    .await
    .map_err(|e| LogError::Internal(format!("restore task: {e}")))??;
    Ok(backup)
}

/// Refuses when metadata file `target`, or its `-wal` or `-shm`
/// companion, exists: a restore never replaces one.
pub async fn ensure_absent(target: &FsPath) -> Result<()> {
    for path in [
        target.to_path_buf(),
        companion(target, "-wal"),
        companion(target, "-shm"),
    ] {
        if tokio::fs::try_exists(&path).await? {
            return Err(LogError::InvalidArgument(format!(
                "{} exists: a restore does not replace a metadata file; move it aside first",
                path.display()
            )));
        }
    }
    Ok(())
}

/// What a restored index and the object store say of each other.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Chunks the index lists whose object is gone (compacted, archived or
    /// expired after the backup was taken, and collected): `(stream,
    /// partition, offsets)`, whose rows read as errors.
    pub missing: Vec<(String, u32, Range<u64>)>,
    /// Data objects in the store the index does not know: written after
    /// the backup (or by failed flushes). The upkeep deletes them once
    /// they are older than its grace period.
    pub unknown_objects: usize,
}

/// Compares the index of `meta` (every stream's chunks) with the data
/// objects in `store`.
pub async fn check(meta: &dyn MetadataStore, store: &Store) -> Result<Checked> {
    use futures::TryStreamExt;
    let prefix = Path::from(crate::path::DataObjectPath::PREFIX);
    let present: HashSet<String> = store
        .object_store()
        .list(Some(&prefix))
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await?;
    let mut known = HashSet::new();
    let mut out = Checked::default();
    for info in meta.streams().await? {
        for partition in 0..info.spec.partitions {
            let chunks = meta
                .chunks_by_offset(info.id, partition, 0..u64::MAX)
                .await?;
            for c in chunks {
                if !present.contains(&c.object) {
                    match out.missing.last_mut() {
                        Some((s, p, r))
                            if *s == info.spec.name
                                && *p == partition
                                && r.end == c.base_offset =>
                        {
                            r.end = c.end_offset
                        }
                        _ => out.missing.push((
                            info.spec.name.clone(),
                            partition,
                            c.base_offset..c.end_offset,
                        )),
                    }
                }
                known.insert(c.object);
            }
        }
    }
    out.unknown_objects = present.difference(&known).count();
    Ok(out)
}

/// `path` with `suffix` added to its file name.
fn companion(path: &FsPath, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteMetadata;
    use crate::metadata::StreamStore;
    use crate::stream::StreamSpec;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn spec(name: &str) -> StreamSpec {
        StreamSpec::new(
            name,
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        )
        .with_partitions(2)
    }

    #[tokio::test]
    async fn a_backup_restores_what_was_committed_when_it_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_local(&dir.path().join("objects")).unwrap();
        let meta = SqliteMetadata::open(&dir.path().join("metadata.db"))
            .await
            .unwrap();
        meta.create_stream(&spec("before"), 1).await.unwrap();
        let first = take(&meta, &store, dir.path()).await.unwrap();
        assert!(first.key.starts_with("metadata/backups/") && first.bytes > 0);
        meta.create_stream(&spec("after"), 2).await.unwrap();
        let second = take(&meta, &store, dir.path()).await.unwrap();
        assert_eq!(list(&store).await.unwrap(), [first.clone(), second.clone()]);
        // No scratch file is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".backup"))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // The newest by default, or the one named.
        let target = dir.path().join("restored/metadata.db");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        assert_eq!(restore(&store, None, &target).await.unwrap(), second);
        let names = |m: SqliteMetadata| async move {
            let s = m.streams().await.unwrap();
            s.iter().map(|s| s.name().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(
            names(SqliteMetadata::open(&target).await.unwrap()).await,
            ["after", "before"]
        );
        let older = dir.path().join("older.db");
        let name = first.key.rsplit('/').next().unwrap();
        assert_eq!(restore(&store, Some(name), &older).await.unwrap(), first);
        assert_eq!(
            names(SqliteMetadata::open(&older).await.unwrap()).await,
            ["before"]
        );

        // A file in place, or a stale write-ahead log, is never replaced.
        let err = restore(&store, None, &older).await.unwrap_err();
        assert!(err.to_string().contains("move it aside"), "{err}");
        let lone = dir.path().join("lone.db");
        std::fs::write(companion(&lone, "-wal"), b"stale").unwrap();
        assert!(restore(&store, None, &lone).await.is_err());
        assert!(!lone.exists());
        let err = restore(&store, Some("nothing"), &dir.path().join("x.db"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no backup nothing"), "{err}");

        // The index and the objects agree (no chunks were written here).
        assert_eq!(check(&meta, &store).await.unwrap(), Checked::default());

        // Keep the newest.
        assert_eq!(prune(&store, 1).await.unwrap(), 1);
        assert_eq!(list(&store).await.unwrap(), [second]);
    }
}
