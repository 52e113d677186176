//! Opening the object store from a URL, making local writes durable, and
//! counting what the log asks of the store.
//!
//! URLs: a plain path or `file://` (a local directory), `memory://` (tests),
//! `s3://bucket/prefix` (AWS or any S3-compatible endpoint, configured by the
//! usual `AWS_*` variables: `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
//!
//! Durability: S3 acknowledges a PUT once the object is durable. The local
//! filesystem store writes through a temporary file and a rename but does not
//! fsync, so [`Store::put_durable`] syncs the file and its directory before
//! returning; only then may the caller commit offsets that point at it.

use std::fmt;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

use tracing::warn;

use crate::error::{LogError, Result};

mod hedged;

/// A slow create of a data object is raced by a second after at least
/// this long (S3; the URL's `?hedge_after=` sets it, `0s` turns it off).
pub const HEDGE_AFTER: Duration = Duration::from_millis(100);

/// Which kind of store a URL named; flush defaults depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    Memory,
    S3,
}

/// The object store the log writes to, with what it needs to know about it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    kind: StoreKind,
    /// Root directory of a local store, for fsync.
    local_root: Option<PathBuf>,
    stats: Arc<StoreStats>,
    /// How long a create cut off mid-request is sent again (S3 only).
    create_retry: Duration,
    /// When a slow create is raced by a second one (S3 only).
    hedge: Option<Arc<hedged::Hedge>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("kind", &self.kind)
            .field("inner", &self.inner.to_string())
            .finish()
    }
}

/// How S3 requests are retried: transient failures (connection errors,
/// throttling, server errors) again with exponential backoff from 100 ms up
/// to 5 s between tries, giving up after `retry_timeout` (default 30 s; the
/// URL's `?retry_timeout=10s` sets it) with the last error.
fn s3_retry(url: &url::Url) -> std::result::Result<object_store::RetryConfig, String> {
    let mut retry_timeout = Duration::from_secs(30);
    for (k, v) in url.query_pairs() {
        match &*k {
            "retry_timeout" => {
                retry_timeout =
                    humantime::parse_duration(&v).map_err(|e| format!("retry_timeout={v}: {e}"))?;
            }
            "hedge_after" => {}
            other => {
                return Err(format!(
                    "unknown option {other:?} (known: retry_timeout, hedge_after)"
                ));
            }
        }
    }
    Ok(object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 20,
        retry_timeout,
    })
}

impl Store {
    /// Opens the store a URL names. `base_dir` resolves relative paths.
    pub fn open(url: &str) -> Result<Store> {
        let bad = |detail: String| LogError::InvalidStoreUrl {
            url: url.to_string(),
            detail,
        };
        if let Some(rest) = url.strip_prefix("memory://") {
            if !rest.is_empty() {
                return Err(bad("memory:// takes no path".into()));
            }
            return Ok(Store::from_parts(
                Arc::new(InMemory::new()),
                StoreKind::Memory,
                None,
            ));
        }
        if url.starts_with("s3://") {
            let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
            let bucket = parsed
                .host_str()
                .ok_or_else(|| bad("missing bucket".into()))?;
            let retry = s3_retry(&parsed).map_err(bad)?;
            let retry_timeout = retry.retry_timeout;
            let hedge = match parsed.query_pairs().find(|(k, _)| k == "hedge_after") {
                Some((_, v)) => humantime::parse_duration(&v)
                    .map_err(|e| bad(format!("hedge_after={v}: {e}")))?,
                None => HEDGE_AFTER,
            };
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            let prefix = parsed.path().trim_matches('/');
            let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            };
            return Ok(Store::from_parts(inner, StoreKind::S3, None)
                .with_create_retry(retry_timeout)
                .with_hedging((!hedge.is_zero()).then_some(hedge)));
        }
        let dir = match url.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if url.contains("://") => {
                return Err(bad(
                    "expected a path, file://, memory:// or s3:// URL".into()
                ));
            }
            None => PathBuf::from(url),
        };
        Store::open_local(&dir)
    }

    /// A local-directory store rooted at `dir` (created if missing).
    pub fn open_local(dir: &FsPath) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let fs = LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true);
        Ok(Store::from_parts(Arc::new(fs), StoreKind::Local, Some(dir)))
    }

    /// Wraps any object store (tests wrap a store to inject faults).
    pub fn from_parts(
        inner: Arc<dyn ObjectStore>,
        kind: StoreKind,
        local_root: Option<PathBuf>,
    ) -> Store {
        let stats = Arc::new(StoreStats::default());
        let counted: Arc<dyn ObjectStore> = Arc::new(CountingStore {
            inner,
            stats: stats.clone(),
        });
        Store {
            inner: counted,
            kind,
            local_root,
            stats,
            create_retry: Duration::ZERO,
            hedge: None,
        }
    }

    /// Sends a create cut off mid-request again for up to `timeout` (an S3
    /// store opened from a URL uses its retry timeout; other stores do not
    /// resend).
    pub fn with_create_retry(mut self, timeout: Duration) -> Store {
        self.create_retry = timeout;
        self
    }

    /// The kind of store.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// The underlying store (counted).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Operation counters since open.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Writes a new object, create-only, and returns once it is durable.
    ///
    /// A create is not idempotent to the store client, so a request cut off
    /// mid-flight (connection reset, timeout) comes back as an error without
    /// being sent again. Here it is: the key is ours alone, so a resend is
    /// safe for the store's retry timeout. A create whose earlier attempt
    /// landed is then answered "already exists", and the write is done if
    /// the object there holds exactly `bytes`; any other object under the key
    /// is still an `AlreadyExists` error.
    pub async fn put_durable(&self, path: &Path, bytes: Bytes) -> Result<()> {
        let started = crate::clock::Stopwatch::start();
        let mut backoff = Duration::from_millis(100);
        loop {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .inner
                .put_opts(path, PutPayload::from(bytes.clone()), opts)
                .await
            {
                Ok(_) => break,
                Err(e @ object_store::Error::AlreadyExists { .. }) => {
                    if self.get(path).await? != bytes {
                        return Err(e.into());
                    }
                    break;
                }
                Err(e) if cut_off(&e) && started.elapsed() + backoff < self.create_retry => {
                    warn!(error = %e, path = %path, "create cut off; sending it again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            tokio::task::spawn_blocking(move || sync_file_and_dir(&file))
                .await
                .map_err(|e| LogError::Internal(format!("fsync task: {e}")))??;
        }
        Ok(())
    }

    /// Writes the file at `file` to a new object at `path` in parts of a
    /// few MiB (memory stays bounded however large the file), and returns
    /// its size once it is durable. Overwrites: callers pick fresh keys.
    pub async fn put_file(&self, path: &Path, file: &FsPath) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let mut from = tokio::fs::File::open(file).await?;
        let mut to = object_store::buffered::BufWriter::new(self.inner.clone(), path.clone());
        let size = tokio::io::copy(&mut from, &mut to).await?;
        to.shutdown().await?;
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            tokio::task::spawn_blocking(move || sync_file_and_dir(&file))
                .await
                .map_err(|e| LogError::Internal(format!("fsync task: {e}")))??;
        }
        Ok(size)
    }

    /// Copies an object into a new local file at `file`, in parts (memory
    /// stays bounded), synced before it returns.
    pub async fn get_file(&self, path: &Path, file: &FsPath) -> Result<u64> {
        use futures::TryStreamExt;
        use tokio::io::AsyncWriteExt;
        let mut body = self.inner.get(path).await?.into_stream();
        let mut to = tokio::fs::File::create_new(file).await?;
        let mut size = 0u64;
        while let Some(part) = body.try_next().await? {
            size += part.len() as u64;
            to.write_all(&part).await?;
        }
        to.sync_all().await?;
        Ok(size)
    }

    /// Reads `range` of an object.
    pub async fn get_range(&self, path: &Path, range: Range<u64>) -> Result<Bytes> {
        Ok(self.inner.get_range(path, range).await?)
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &Path) -> Result<Bytes> {
        Ok(self.inner.get(path).await?.bytes().await?)
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &Path) -> Result<bool> {
        match self.inner.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a request failed in transport after it may have been sent (the
/// kinds the store client does not resend for a non-idempotent request);
/// failures before sending were already retried by the client, and an HTTP
/// status is an answer, not a cut.
fn cut_off(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<HttpError>() {
            return !matches!(h.kind(), HttpErrorKind::Connect | HttpErrorKind::Request);
        }
        source = s.source();
    }
    false
}

fn sync_file_and_dir(file: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Counts of object-store operations.
#[derive(Debug, Default)]
pub struct StoreStats {
    puts: AtomicU64,
    put_bytes: AtomicU64,
    gets: AtomicU64,
    get_bytes: AtomicU64,
}

impl StoreStats {
    /// PUT requests issued (single-part and multipart uploads).
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }
    /// Bytes sent by single-part PUTs.
    pub fn put_bytes(&self) -> u64 {
        self.put_bytes.load(Ordering::Relaxed)
    }
    /// GET requests issued (whole or ranged).
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }
    /// Bytes requested by GETs.
    pub fn get_bytes(&self) -> u64 {
        self.get_bytes.load(Ordering::Relaxed)
    }
}

/// Delegates to an inner store and counts PUTs and GETs.
#[derive(Debug)]
struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    stats: Arc<StoreStats>,
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        let bytes = payload.content_length() as u64;
        self.stats.put_bytes.fetch_add(bytes, Ordering::Relaxed);
        let started = crate::clock::Stopwatch::start();
        let r = self.inner.put_opts(location, payload, opts).await;
        crate::metrics::store_request("put", bytes, started.elapsed());
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        let started = crate::clock::Stopwatch::start();
        let r = self.inner.get_opts(location, options).await?;
        let bytes = r.range.end - r.range.start;
        self.stats.get_bytes.fetch_add(bytes, Ordering::Relaxed);
        crate::metrics::store_request("get", bytes, started.elapsed());
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.stats
            .gets
            .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        let n: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        self.stats.get_bytes.fetch_add(n, Ordering::Relaxed);
        let started = crate::clock::Stopwatch::start();
        let r = self.inner.get_ranges(location, ranges).await;
        // One latency for the batch, counted per range.
        metrics::counter!(crate::metrics::STORE_REQUESTS, "op" => "get")
            .increment(ranges.len() as u64);
        metrics::counter!(crate::metrics::STORE_BYTES, "op" => "get").increment(n);
        metrics::histogram!(crate::metrics::STORE_SECONDS, "op" => "get")
            .record(started.elapsed().as_secs_f64());
        r
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_right_store() {
        assert_eq!(Store::open("memory://").unwrap().kind(), StoreKind::Memory);
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("objects").to_str().unwrap()).unwrap();
        assert_eq!(s.kind(), StoreKind::Local);
        let url = format!("file://{}", dir.path().display());
        assert_eq!(Store::open(&url).unwrap().kind(), StoreKind::Local);
        assert!(matches!(
            Store::open("ftp://x/y").unwrap_err(),
            LogError::InvalidStoreUrl { .. }
        ));
    }

    #[tokio::test]
    async fn create_only_put_refuses_overwrite_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_local(dir.path()).unwrap();
        let p = Path::from("log/data/a.arrows");
        s.put_durable(&p, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert!(
            s.put_durable(&p, Bytes::from_static(b"again"))
                .await
                .is_err()
        );
        // The same bytes again: the create landed before, it is done.
        s.put_durable(&p, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(
            s.get_range(&p, 1..3).await.unwrap(),
            Bytes::from_static(b"el")
        );
        assert_eq!(s.stats().puts(), 3);
        // Each refused create read the object back to compare.
        assert_eq!(s.stats().gets(), 3);
    }
}
