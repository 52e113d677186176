//! Operator state: one RocksDB database on local disk per dataflow, and
//! its snapshots in the object store.
//!
//! Writes go in atomic batches. A snapshot is a RocksDB checkpoint (a
//! consistent set of files) uploaded to the object store. Every object key
//! is built by [`StateKeys`], and every file is named by its content: an SST
//! file (immutable) goes under `state/<dataflow>/sst/<hash>-<len>.sst` and is
//! shared by every snapshot that holds it; the small mutable files
//! (MANIFEST, CURRENT, OPTIONS) go under the snapshot's own prefix,
//! `state/<dataflow>/snap/<id>-<hash of everything it holds>/`, with a
//! manifest that lists every file. Because a key names its bytes, two runs
//! of a dataflow — a restored one whose RocksDB hands out file numbers
//! another run already used, or a fenced owner still running beside its
//! successor — can never point at each other's different files under the
//! same name. The snapshot's key is its manifest; a checkpoint records it in
//! the metadata store, and a restore — after a crash, or on another machine
//! with the local disk gone — fetches exactly those files and opens them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch};
use serde::{Deserialize, Serialize};
use streamhouse_log::Store;
use xxhash_rust::xxh3::xxh3_128;

use crate::error::{Result, StreamsError};

/// A stored (key, value).
pub type Entry = (Box<[u8]>, Box<[u8]>);

/// A dataflow's state database.
pub struct StateStore {
    db: DB,
    dir: PathBuf,
    /// Where this dataflow's state objects live.
    keys: StateKeys,
    /// Local SST name → its object key, for the SST files this database
    /// has in the object store. Within one open database a file number
    /// never names two contents, so the name is enough to skip a re-upload.
    uploaded: Mutex<HashMap<String, String>>,
}

/// The object keys of one dataflow's state, built and parsed here only.
#[derive(Debug, Clone)]
pub struct StateKeys {
    root: String,
}

impl StateKeys {
    /// The keys of `dataflow`'s state.
    pub fn new(dataflow: &str) -> Self {
        StateKeys {
            root: format!("state/{dataflow}"),
        }
    }

    /// Everything of the dataflow's state lives under this prefix.
    pub fn root(&self) -> &str {
        &self.root
    }

    fn sst_prefix(&self) -> String {
        format!("{}/sst", self.root)
    }

    fn snap_prefix(&self) -> String {
        format!("{}/snap", self.root)
    }

    /// An SST file, named by its content (128-bit hash and length).
    fn sst(&self, content: &[u8]) -> String {
        format!(
            "{}/{:032x}-{}.sst",
            self.sst_prefix(),
            xxh3_128(content),
            content.len()
        )
    }

    /// The prefix of snapshot `id` holding files whose combined hash is
    /// `tag`: another attempt at the same id with other contents gets
    /// other keys, one with the same contents the same ones.
    fn snapshot(&self, id: u64, tag: u128) -> String {
        format!("{}/{id:020}-{tag:032x}", self.snap_prefix())
    }

    /// The manifest of a snapshot prefix.
    fn manifest(snapshot: &str) -> String {
        format!("{snapshot}/MANIFEST.json")
    }

    /// The snapshot id of an object under the snapshots' prefix.
    fn snapshot_id(&self, key: &str) -> Option<u64> {
        let rest = key.strip_prefix(&self.snap_prefix())?.strip_prefix('/')?;
        let dir = rest.split('/').next()?;
        dir.split('-').next()?.parse().ok()
    }
}

/// Writes `bytes` under `key` unless it is there: keys name their content,
/// so an object already there holds the same bytes.
async fn put_once(store: &Store, key: &str, bytes: Bytes) -> Result<()> {
    let path = ObjectPath::from(key);
    if store.exists(&path).await? {
        return Ok(());
    }
    // Written meanwhile by another attempt: `put_durable` accepts an object
    // that holds the same bytes.
    Ok(store.put_durable(&path, bytes).await?)
}

/// What a snapshot holds: object keys and the local names they restore to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    files: Vec<(String, String)>,
}

fn options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    // State is mostly appended (join rows, new groups): universal
    // compaction rewrites each byte fewer times than leveled compaction,
    // and only the largest runs are compressed with zstd.
    o.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    o.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
    o.set_write_buffer_size(128 << 20);
    // The object store holds the durable copy; the local WAL only spares a
    // replay after a clean restart.
    o.set_max_open_files(256);
    o
}

/// A count stored as a value's first eight bytes (little-endian `i64`; 0
/// for a shorter value).
pub fn count_of(value: &[u8]) -> i64 {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .unwrap_or_default()
}

/// The first key after every key that starts with `prefix` (`None`: no
/// such key, the prefix being all 0xFF bytes).
pub fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
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
            keys: StateKeys::new(dataflow),
            uploaded: Mutex::new(HashMap::new()),
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

    /// Calls `f(i, key, value)` for every entry whose key starts with
    /// `prefixes[i]`, prefix by prefix, with one iterator (sorted prefixes
    /// read the database front to back).
    pub fn scan_prefixes(
        &self,
        prefixes: &[Vec<u8>],
        mut f: impl FnMut(usize, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut it = self.db.raw_iterator();
        for (i, prefix) in prefixes.iter().enumerate() {
            it.seek(prefix);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !k.starts_with(prefix) {
                    break;
                }
                f(i, k, v)?;
                it.next();
            }
            it.status()?;
        }
        Ok(())
    }

    /// Calls `f(key, value)` for the entries whose key starts with
    /// `prefix`, in key order, while it returns `true`.
    pub fn scan_while(
        &self,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.scan_while_from(prefix, prefix, f)
    }

    /// [`StateStore::scan_while`] starting at key `from` (at or after
    /// `prefix`).
    pub fn scan_while_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut it = self.db.raw_iterator();
        it.seek(from);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) || !f(k, v)? {
                break;
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// The first key starting with `prefix` that `accept`s (the last one,
    /// `reverse`).
    pub fn first_entry(
        &self,
        prefix: &[u8],
        reverse: bool,
        mut accept: impl FnMut(&[u8]) -> bool,
    ) -> Result<Option<Box<[u8]>>> {
        let mut it = self.db.raw_iterator();
        match (reverse, successor(prefix)) {
            (false, _) => it.seek(prefix),
            (true, Some(end)) => {
                it.seek_for_prev(&end);
                if it.key() == Some(&end[..]) {
                    it.prev();
                }
            }
            (true, None) => it.seek_to_last(),
        }
        while let Some(k) = it.key() {
            if !k.starts_with(prefix) {
                break;
            }
            if accept(k) {
                return Ok(Some(k.into()));
            }
            if reverse {
                it.prev();
            } else {
                it.next();
            }
        }
        it.status()?;
        Ok(None)
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
        let mut names: Vec<String> = std::fs::read_dir(&local)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        names.sort();
        // SST files first: their keys name their content, and the mutable
        // files' prefix names the whole set.
        let mut ssts = Vec::new();
        let mut mutable = Vec::new();
        for name in names {
            if name.ends_with(".sst") {
                let known = self
                    .uploaded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&name)
                    .cloned();
                let key = match known {
                    Some(key) => key,
                    None => {
                        let bytes = Bytes::from(std::fs::read(local.join(&name))?);
                        let key = self.keys.sst(&bytes);
                        put_once(store, &key, bytes).await?;
                        self.uploaded
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name.clone(), key.clone());
                        key
                    }
                };
                ssts.push((key, name));
            } else {
                let bytes = Bytes::from(std::fs::read(local.join(&name))?);
                mutable.push((name, bytes));
            }
        }
        let mut tag = Vec::new();
        for (key, name) in &ssts {
            tag.extend_from_slice(key.as_bytes());
            tag.extend_from_slice(name.as_bytes());
        }
        for (name, bytes) in &mutable {
            tag.extend_from_slice(name.as_bytes());
            tag.extend_from_slice(&xxh3_128(bytes).to_be_bytes());
        }
        let snap = self.keys.snapshot(id, xxh3_128(&tag));
        let mut files = ssts;
        for (name, bytes) in mutable {
            let key = format!("{snap}/{name}");
            put_once(store, &key, bytes).await?;
            files.push((key, name));
        }
        std::fs::remove_dir_all(&local)?;
        let manifest = StateKeys::manifest(&snap);
        let json = serde_json::to_vec(&Manifest { files })
            .map_err(|e| StreamsError::Internal(e.to_string()))?;
        put_once(store, &manifest, Bytes::from(json)).await?;
        Ok(manifest)
    }

    /// Deletes the snapshots older than `keep_from` (an id; a newer
    /// checkpoint has superseded them) and the SST files no kept snapshot
    /// references. Only after the checkpoint of `keep_from` committed.
    ///
    /// An SST file is deleted only if it is also older than every kept
    /// manifest: a successor's snapshot in progress (it restored from the
    /// checkpoint just committed, so everything it uploads is newer) keeps
    /// its files while its manifest is not written yet.
    pub async fn prune(&self, store: &Store, keep_from: u64) -> Result<u64> {
        use futures::TryStreamExt;
        let list = |prefix: String| {
            let prefix = ObjectPath::from(prefix);
            async move {
                store
                    .object_store()
                    .list(Some(&prefix))
                    .try_collect::<Vec<object_store::ObjectMeta>>()
                    .await
                    .map_err(|e| StreamsError::Internal(format!("list {prefix}: {e}")))
            }
        };
        let mut doomed = Vec::new();
        let mut referenced = HashSet::new();
        let mut oldest_kept = None;
        for meta in list(self.keys.snap_prefix()).await? {
            let path = meta.location;
            let Some(id) = self.keys.snapshot_id(path.as_ref()) else {
                continue;
            };
            if id < keep_from {
                doomed.push(path);
            } else if path.as_ref().ends_with("/MANIFEST.json") {
                let bytes = store.get(&path).await?;
                let m: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| StreamsError::Internal(format!("manifest {path}: {e}")))?;
                referenced.extend(m.files.into_iter().map(|(key, _)| key));
                oldest_kept = Some(match oldest_kept {
                    Some(t) if t < meta.last_modified => t,
                    _ => meta.last_modified,
                });
            }
        }
        let Some(oldest_kept) = oldest_kept else {
            return Ok(0); // nothing kept to check against: keep everything
        };
        let mut gone = HashSet::new();
        for meta in list(self.keys.sst_prefix()).await? {
            if !referenced.contains(meta.location.as_ref()) && meta.last_modified < oldest_kept {
                gone.insert(meta.location.to_string());
                doomed.push(meta.location);
            }
        }
        self.uploaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, key| !gone.contains(key));
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
        let prefix = ObjectPath::from(StateKeys::new(dataflow).root());
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
        let mut ssts = HashMap::new();
        for (key, name) in &m.files {
            if name.contains('/') || name.starts_with('.') {
                return Err(StreamsError::Internal(format!(
                    "state manifest {manifest} names a bad file {name:?}"
                )));
            }
            let data = store.get(&ObjectPath::from(key.as_str())).await?;
            std::fs::write(db_dir.join(name), &data)?;
            if name.ends_with(".sst") {
                ssts.insert(name.clone(), key.clone());
            }
        }
        let db = DB::open(&options(), &db_dir)?;
        Ok(StateStore {
            db,
            dir: dir.to_path_buf(),
            keys: StateKeys::new(dataflow),
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

    #[test]
    fn first_and_last_entries_of_a_prefix_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), "t").unwrap();
        put(
            &s,
            &[("a1", ""), ("b1", ""), ("b2", ""), ("b3", ""), ("c", "")],
        );
        let first = |prefix: &str, reverse: bool, skip: &str| {
            s.first_entry(prefix.as_bytes(), reverse, |k| k != skip.as_bytes())
                .unwrap()
                .map(|k| String::from_utf8(k.into()).unwrap())
        };
        assert_eq!(first("b", false, ""), Some("b1".into()));
        assert_eq!(first("b", true, ""), Some("b3".into()));
        assert_eq!(first("b", false, "b1"), Some("b2".into()));
        assert_eq!(first("b", true, "b3"), Some("b2".into()));
        assert_eq!(first("d", true, ""), None);
        assert_eq!(first("a1", true, "a1"), None);
        assert_eq!(successor(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff"), None);
        assert_eq!(count_of(&(-3i64).to_le_bytes()), -3);
        assert_eq!(count_of(b"short"), 0);
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
        let other = tempfile::tempdir().unwrap();
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
        // checkpoint committed) writes over none of the first one's objects
        // and restores the same state.
        let again = s.snapshot(&store, 2).await.unwrap();
        let r2b = StateStore::restore(&store, &again, other.path(), "v1")
            .await
            .unwrap();
        assert_eq!(all(&r2b, "a/"), all(&r2, "a/"));
        drop(r2b);
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

    /// Two runs of one dataflow whose RocksDB databases hand out the same
    /// file numbers (a restored run and the run it replaced, or a fenced
    /// owner beside its successor) with different contents: each snapshot
    /// restores its own state. Named by file number, the second run's
    /// manifest pointed at the first run's SST file.
    #[tokio::test]
    async fn runs_with_colliding_file_numbers_keep_their_own_snapshots() {
        let objects = tempfile::tempdir().unwrap();
        let store = Store::open_local(objects.path()).unwrap();
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = StateStore::open(a_dir.path(), "v").unwrap();
        let b = StateStore::open(b_dir.path(), "v").unwrap();
        put(&a, &[("k/1", "from a"), ("k/2", "a only")]);
        put(&b, &[("k/1", "from b")]);
        let snap_a = a.snapshot(&store, 7).await.unwrap();
        let snap_b = b.snapshot(&store, 7).await.unwrap();
        let ssts = |m: &str| {
            let store = &store;
            let m = m.to_string();
            async move {
                let bytes = store.get(&ObjectPath::from(m.as_str())).await.unwrap();
                let m: Manifest = serde_json::from_slice(&bytes).unwrap();
                m.files
                    .into_iter()
                    .filter(|(_, n)| n.ends_with(".sst"))
                    .collect::<Vec<_>>()
            }
        };
        let (fa, fb) = (ssts(&snap_a).await, ssts(&snap_b).await);
        // The same local file names, different objects.
        assert_eq!(
            fa.iter().map(|f| &f.1).collect::<Vec<_>>(),
            fb.iter().map(|f| &f.1).collect::<Vec<_>>()
        );
        assert_ne!(fa, fb);
        assert_ne!(snap_a, snap_b);
        let restored = tempfile::tempdir().unwrap();
        let ra = StateStore::restore(&store, &snap_a, restored.path(), "v")
            .await
            .unwrap();
        assert_eq!(
            all(&ra, "k/"),
            vec![
                ("k/1".into(), "from a".into()),
                ("k/2".into(), "a only".into())
            ]
        );
        drop(ra);
        let rb = StateStore::restore(&store, &snap_b, restored.path(), "v")
            .await
            .unwrap();
        assert_eq!(all(&rb, "k/"), vec![("k/1".into(), "from b".into())]);
        // A later snapshot of the restored run, then pruning up to it: the
        // kept snapshot still restores.
        put(&rb, &[("k/3", "later")]);
        let snap_8 = rb.snapshot(&store, 8).await.unwrap();
        assert!(rb.prune(&store, 8).await.unwrap() > 0);
        drop(rb);
        let again = tempfile::tempdir().unwrap();
        let r8 = StateStore::restore(&store, &snap_8, again.path(), "v")
            .await
            .unwrap();
        assert_eq!(
            all(&r8, "k/"),
            vec![
                ("k/1".into(), "from b".into()),
                ("k/3".into(), "later".into())
            ]
        );
    }

    #[test]
    fn keys_parse_back() {
        let k = StateKeys::new("v-1f");
        let snap = k.snapshot(42, 7);
        assert_eq!(k.snapshot_id(&StateKeys::manifest(&snap)), Some(42));
        assert_eq!(k.snapshot_id(&k.sst(b"x")), None);
        assert_eq!(k.snapshot_id("state/v-1f/snapshots/1"), None);
        assert!(k.sst(b"x").starts_with("state/v-1f/sst/"));
        assert_ne!(k.sst(b"x"), k.sst(b"y"));
    }
}
