//! Operator state: one RocksDB database on local disk per dataflow, and
//! its snapshots in the object store.
//!
//! Writes go in atomic batches. A snapshot is a RocksDB checkpoint (a
//! consistent set of files) uploaded to the object store: SST files are
//! immutable and uniquely numbered, so each is uploaded once under
//! `state/<dataflow>/sst/` and shared by later snapshots; the small mutable
//! files (MANIFEST, CURRENT, OPTIONS) go under the snapshot's own prefix
//! with a manifest that lists everything. The snapshot's key is that
//! manifest; a checkpoint records it in the metadata store, and a restore —
//! after a crash, or on another machine with the local disk gone — fetches
//! exactly those files and opens them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch};
use serde::{Deserialize, Serialize};
use streamhouse_log::Store;

use crate::error::{Result, StreamsError};

/// A stored (key, value).
pub type Entry = (Box<[u8]>, Box<[u8]>);

/// A dataflow's state database.
pub struct StateStore {
    db: DB,
    dir: PathBuf,
    /// Object-store prefix of this dataflow's state.
    prefix: String,
    /// SST files already in the object store.
    uploaded: Mutex<HashSet<String>>,
}

/// What a snapshot holds: object keys and the local names they restore to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    files: Vec<(String, String)>,
}

fn options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    o.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
    // The object store holds the durable copy; the local WAL only spares a
    // replay after a clean restart.
    o.set_max_open_files(256);
    o
}

impl StateStore {
    /// Opens (creating) the database in `dir`; snapshots go under
    /// `state/<dataflow>/` in the object store.
    pub fn open(dir: &Path, dataflow: &str) -> Result<StateStore> {
        std::fs::create_dir_all(dir)?;
        let db = DB::open(&options(), dir.join("db"))?;
        Ok(StateStore {
            db,
            dir: dir.to_path_buf(),
            prefix: format!("state/{dataflow}"),
            uploaded: Mutex::new(HashSet::new()),
        })
    }

    /// A value.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?)
    }

    /// Several values at once (one lookup per key, batched).
    pub fn multi_get<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.db
            .multi_get(keys)
            .into_iter()
            .map(|r| r.map_err(StreamsError::from))
            .collect()
    }

    /// Applies puts and deletes atomically.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.disable_wal(true);
        Ok(self.db.write_opt(batch, &opts)?)
    }

    /// Bytes on local disk and in memory: SST files plus memtables.
    pub fn size_bytes(&self) -> u64 {
        [
            "rocksdb.total-sst-files-size",
            "rocksdb.cur-size-all-mem-tables",
        ]
        .iter()
        .filter_map(|&p| self.db.property_int_value(p).ok().flatten())
        .sum()
    }

    /// Every (key, value) whose key starts with `prefix`, in key order.
    pub fn scan(&self, prefix: &[u8]) -> impl Iterator<Item = Result<Entry>> + '_ {
        self.scan_from(prefix, prefix)
    }

    /// [`StateStore::scan`] starting at key `from` (at or after `prefix`).
    pub fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
    ) -> impl Iterator<Item = Result<Entry>> + '_ {
        let prefix = prefix.to_vec();
        self.db
            .iterator(IteratorMode::From(from, Direction::Forward))
            .map(|r| r.map_err(StreamsError::from))
            .take_while(move |r| match r {
                Ok((k, _)) => k.starts_with(&prefix),
                Err(_) => true,
            })
    }

    /// Uploads a consistent snapshot of the state and returns its key (to be
    /// recorded by the checkpoint that owns it). `id` names the snapshot
    /// uniquely within this dataflow (e.g. the checkpoint number).
    pub async fn snapshot(&self, store: &Store, id: u64) -> Result<String> {
        // Memtables are written out so the checkpoint holds everything
        // without a WAL (writes skip the WAL).
        self.db.flush()?;
        let local = self.dir.join(format!("snapshot-{id}"));
        if local.exists() {
            std::fs::remove_dir_all(&local)?;
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(&local)?;
        let mut files = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(&local)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        names.sort();
        // Unique per attempt: an attempt killed before its checkpoint
        // committed leaves objects under the same id, which create-only
        // writes must not meet (nor may a fenced owner's attempt meet the
        // new owner's).
        let attempt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let snap = format!("{}/snap/{id:020}-{attempt:x}", self.prefix);
        for name in names {
            let is_sst = name.ends_with(".sst");
            let key = if is_sst {
                format!("{}/sst/{name}", self.prefix)
            } else {
                format!("{snap}/{name}")
            };
            let already = is_sst
                && self
                    .uploaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&name);
            if !already {
                let bytes = Bytes::from(std::fs::read(local.join(&name))?);
                let path = ObjectPath::from(key.clone());
                // A shared SST may be there already (uploaded before a
                // restart); its content is the same by construction.
                if !(is_sst && store.exists(&path).await?) {
                    store.put_durable(&path, bytes).await?;
                }
                if is_sst {
                    self.uploaded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone());
                }
            }
            files.push((key, name));
        }
        std::fs::remove_dir_all(&local)?;
        let manifest = format!("{snap}/MANIFEST.json");
        let json = serde_json::to_vec(&Manifest { files })
            .map_err(|e| StreamsError::Internal(e.to_string()))?;
        store
            .put_durable(&ObjectPath::from(manifest.clone()), Bytes::from(json))
            .await?;
        Ok(manifest)
    }

    /// Deletes the snapshots older than `keep_from` (an id; a newer
    /// checkpoint has superseded them) and the SST files no kept snapshot
    /// references. Only after the checkpoint of `keep_from` committed.
    pub async fn prune(&self, store: &Store, keep_from: u64) -> Result<u64> {
        use futures::TryStreamExt;
        let list = |prefix: String| {
            let prefix = ObjectPath::from(prefix);
            async move {
                store
                    .object_store()
                    .list(Some(&prefix))
                    .map_ok(|m| m.location)
                    .try_collect::<Vec<ObjectPath>>()
                    .await
                    .map_err(|e| StreamsError::Internal(format!("list {prefix}: {e}")))
            }
        };
        let snap_root = format!("{}/snap/", self.prefix);
        let mut doomed = Vec::new();
        let mut referenced = HashSet::new();
        for path in list(format!("{}/snap", self.prefix)).await? {
            let rest = path.as_ref().strip_prefix(&snap_root).unwrap_or_default();
            let id = rest.split('/').next().and_then(|d| d.split('-').next());
            let Some(id) = id.and_then(|i| i.parse::<u64>().ok()) else {
                continue;
            };
            if id < keep_from {
                doomed.push(path);
            } else if path.as_ref().ends_with("MANIFEST.json") {
                let bytes = store.get(&path).await?;
                let m: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| StreamsError::Internal(format!("manifest {path}: {e}")))?;
                referenced.extend(m.files.into_iter().map(|(key, _)| key));
            }
        }
        if referenced.is_empty() {
            return Ok(0); // nothing kept to check against: keep everything
        }
        let mut gone_ssts = Vec::new();
        for path in list(format!("{}/sst", self.prefix)).await? {
            if !referenced.contains(path.as_ref()) {
                if let Some(name) = path.filename() {
                    gone_ssts.push(name.to_string());
                }
                doomed.push(path);
            }
        }
        {
            let mut uploaded = self.uploaded.lock().unwrap_or_else(|p| p.into_inner());
            for name in &gone_ssts {
                uploaded.remove(name);
            }
        }
        for path in &doomed {
            match store.object_store().delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StreamsError::Internal(format!("delete {path}: {e}"))),
            }
        }
        Ok(doomed.len() as u64)
    }

    /// Deletes every snapshot object of a dataflow (after its view is
    /// dropped); returns how many objects went.
    pub async fn delete_snapshots(store: &Store, dataflow: &str) -> Result<u64> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from(format!("state/{dataflow}"));
        let objects: Vec<ObjectPath> = store
            .object_store()
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| StreamsError::Internal(format!("list {prefix}: {e}")))?;
        for path in &objects {
            match store.object_store().delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StreamsError::Internal(format!("delete {path}: {e}"))),
            }
        }
        Ok(objects.len() as u64)
    }

    /// Replaces whatever is in `dir` with the snapshot `manifest` and opens
    /// it.
    pub async fn restore(
        store: &Store,
        manifest: &str,
        dir: &Path,
        dataflow: &str,
    ) -> Result<StateStore> {
        let bytes = store.get(&ObjectPath::from(manifest)).await?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| StreamsError::Internal(format!("state manifest {manifest}: {e}")))?;
        let db_dir = dir.join("db");
        if db_dir.exists() {
            std::fs::remove_dir_all(&db_dir)?;
        }
        std::fs::create_dir_all(&db_dir)?;
        let mut ssts = HashSet::new();
        for (key, name) in &m.files {
            if name.contains('/') || name.starts_with('.') {
                return Err(StreamsError::Internal(format!(
                    "state manifest {manifest} names a bad file {name:?}"
                )));
            }
            let data = store.get(&ObjectPath::from(key.as_str())).await?;
            std::fs::write(db_dir.join(name), &data)?;
            if name.ends_with(".sst") {
                ssts.insert(name.clone());
            }
        }
        let db = DB::open(&options(), &db_dir)?;
        Ok(StateStore {
            db,
            dir: dir.to_path_buf(),
            prefix: format!("state/{dataflow}"),
            uploaded: Mutex::new(ssts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &StateStore, kvs: &[(&str, &str)]) {
        let mut b = WriteBatch::default();
        for (k, v) in kvs {
            b.put(k.as_bytes(), v.as_bytes());
        }
        s.write(b).unwrap();
    }

    fn all(s: &StateStore, prefix: &str) -> Vec<(String, String)> {
        s.scan(prefix.as_bytes())
            .map(|r| {
                let (k, v) = r.unwrap();
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn snapshots_restore_exactly_and_share_sst_files() {
        let objects = tempfile::tempdir().unwrap();
        let store = Store::open_local(objects.path()).unwrap();
        let local = tempfile::tempdir().unwrap();
        let s = StateStore::open(local.path(), "v1").unwrap();
        put(&s, &[("a/1", "x"), ("a/2", "y"), ("b/1", "z")]);
        let first = s.snapshot(&store, 1).await.unwrap();
        let puts_after_first = store.stats().puts();
        put(&s, &[("a/3", "w")]);
        let mut del = WriteBatch::default();
        del.delete(b"a/1");
        s.write(del).unwrap();
        let second = s.snapshot(&store, 2).await.unwrap();
        // The first snapshot's SST is not uploaded again.
        let ssts_second = store.stats().puts() - puts_after_first;
        assert!(ssts_second < puts_after_first + 2, "{ssts_second}");

        // Restoring on a "new machine" (another directory) gives each
        // snapshot's exact contents.
        let elsewhere = tempfile::tempdir().unwrap();
        let r1 = StateStore::restore(&store, &first, elsewhere.path(), "v1")
            .await
            .unwrap();
        assert_eq!(
            all(&r1, "a/"),
            vec![("a/1".into(), "x".into()), ("a/2".into(), "y".into())]
        );
        drop(r1);
        let r2 = StateStore::restore(&store, &second, elsewhere.path(), "v1")
            .await
            .unwrap();
        assert_eq!(
            all(&r2, "a/"),
            vec![("a/2".into(), "y".into()), ("a/3".into(), "w".into())]
        );
        assert_eq!(r2.get(b"b/1").unwrap().as_deref(), Some(&b"z"[..]));
        // An attempt at the same id again (the first was killed before its
        // checkpoint committed) does not meet the first one's objects.
        let again = s.snapshot(&store, 2).await.unwrap();
        assert_ne!(again, second);
        // And the restored store keeps working and snapshotting.
        put(&r2, &[("c/1", "q")]);
        let third = r2.snapshot(&store, 3).await.unwrap();
        drop(r2);
        let r3 = StateStore::restore(&store, &third, elsewhere.path(), "v1")
            .await
            .unwrap();
        assert_eq!(all(&r3, "c/"), vec![("c/1".into(), "q".into())]);
        assert!(
            StateStore::restore(&store, "state/v1/nope", elsewhere.path(), "v1")
                .await
                .is_err()
        );
    }
}
