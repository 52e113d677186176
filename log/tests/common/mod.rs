//! Shared fixtures of the log's integration tests: the three object-store
//! backends, a fault-injecting store wrapper, and row generators.
#![allow(dead_code)]

use std::fmt;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use streamhouse_log::{Log, LogConfig, ManualClock, SqliteMetadata, Store, StoreKind, SystemClock};
use tempfile::TempDir;

/// Which object store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Local,
    S3,
}

/// `s3://bucket/prefix` for this test run, from the environment the test
/// command sets up (a real S3-compatible server on loopback).
pub fn s3_url() -> String {
    let bucket = std::env::var("STREAMHOUSE_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!(
            "STREAMHOUSE_TEST_S3_BUCKET is not set: run the suite with ./scripts/test, \
             which starts a local S3-compatible server and sets AWS_ENDPOINT_URL"
        )
    });
    format!("s3://{bucket}/{}", ulid::Ulid::new())
}

/// A fresh, empty database on the test PostgreSQL server (from the
/// environment the test command sets up), as a `postgres://` URL.
pub async fn postgres_url() -> String {
    use sqlx::Connection;
    let server = std::env::var("STREAMHOUSE_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "STREAMHOUSE_TEST_POSTGRES is not set: run the suite with ./scripts/test, \
             which starts a local PostgreSQL server and sets it"
        )
    });
    let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("connect to the test PostgreSQL server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("{server}/{name}")
}

/// A log under test with what the test needs to reach around it.
pub struct Fixture {
    pub log: Log,
    pub store: Store,
    pub faults: Arc<Faults>,
    pub dir: TempDir,
    /// Inner object store, to build a second log over the same objects.
    pub objects: Arc<dyn ObjectStore>,
    pub kind: StoreKind,
    pub clock: Arc<ManualClock>,
}

/// Builds the raw object store for a backend.
pub fn raw_store(
    backend: Backend,
    dir: &FsPath,
) -> (Arc<dyn ObjectStore>, StoreKind, Option<std::path::PathBuf>) {
    match backend {
        Backend::Memory => (
            Arc::new(object_store::memory::InMemory::new()),
            StoreKind::Memory,
            None,
        ),
        Backend::Local => {
            let root = dir.join("objects");
            std::fs::create_dir_all(&root).unwrap();
            let root = root.canonicalize().unwrap();
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&root).unwrap();
            (Arc::new(fs), StoreKind::Local, Some(root))
        }
        Backend::S3 => {
            let s = Store::open(&s3_url()).unwrap();
            (s.object_store().clone(), StoreKind::S3, None)
        }
    }
}

impl Fixture {
    pub async fn new(backend: Backend) -> Fixture {
        Self::with_config(backend, |_| {}).await
    }

    pub async fn with_config(backend: Backend, tweak: impl FnOnce(&mut LogConfig)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (objects, kind, root) = raw_store(backend, dir.path());
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
        let faults = Arc::new(Faults::default());
        let (log, store) = open_log(
            &objects,
            kind,
            root,
            dir.path(),
            &faults,
            clock.clone(),
            tweak,
        )
        .await;
        Fixture {
            log,
            store,
            faults,
            dir,
            objects,
            kind,
            clock,
        }
    }

    /// Shuts the log down and opens a new one over the same objects and
    /// metadata, with a cold cache.
    pub async fn reopen(&mut self) {
        self.log.shutdown().await;
        let root = (self.kind == StoreKind::Local)
            .then(|| self.dir.path().join("objects").canonicalize().unwrap());
        let (log, store) = open_log(
            &self.objects,
            self.kind,
            root,
            self.dir.path(),
            &self.faults,
            self.clock.clone(),
            |_| {},
        )
        .await;
        self.log = log;
        self.store = store;
    }
}

async fn open_log(
    objects: &Arc<dyn ObjectStore>,
    kind: StoreKind,
    root: Option<std::path::PathBuf>,
    dir: &FsPath,
    faults: &Arc<Faults>,
    clock: Arc<ManualClock>,
    tweak: impl FnOnce(&mut LogConfig),
) -> (Log, Store) {
    let faulty: Arc<dyn ObjectStore> = Arc::new(FaultyStore {
        inner: objects.clone(),
        faults: faults.clone(),
    });
    let store = Store::from_parts(faulty, kind, root).with_create_retry(Duration::from_secs(10));
    let meta = Arc::new(
        SqliteMetadata::open(&dir.join("metadata.db"))
            .await
            .unwrap(),
    );
    let mut config = LogConfig::for_store(&store);
    tweak(&mut config);
    let _ = SystemClock; // the fixture's clock is manual: append times are exact
    (Log::open(store.clone(), meta, config, clock), store)
}

/// Faults to inject into the next object-store calls.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail this many upcoming PUTs.
    pub fail_puts: AtomicU32,
    /// Let this many upcoming PUTs land, then answer "already exists", as a
    /// retried create whose first answer was lost is answered.
    pub lose_put_answers: AtomicU32,
    /// Cut this many upcoming PUTs off mid-request: the first half of them
    /// before they land, the rest after (as a connection reset would).
    pub cut_puts: AtomicU32,
}

impl Faults {
    pub fn fail_next_puts(&self, n: u32) {
        self.fail_puts.store(n, Ordering::SeqCst);
    }

    pub fn lose_next_put_answers(&self, n: u32) {
        self.lose_put_answers.store(n, Ordering::SeqCst);
    }

    pub fn cut_next_puts(&self, n: u32) {
        self.cut_puts.store(n, Ordering::SeqCst);
    }
}

/// Wraps a store; fails PUTs on demand, as a store outage would.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

/// A transport failure of a request that may have been sent.
fn cut() -> object_store::Error {
    use object_store::client::{HttpError, HttpErrorKind};
    let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset");
    object_store::Error::Generic {
        store: "faulty",
        source: Box::new(HttpError::new(HttpErrorKind::Interrupted, reset)),
    }
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: "injected PUT failure".into(),
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let take = self
            .faults
            .fail_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            return Err(injected());
        }
        let cuts = self
            .faults
            .cut_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if let Ok(n) = cuts {
            if n % 2 == 0 {
                return Err(cut());
            }
            self.inner.put_opts(location, payload, opts).await?;
            return Err(cut());
        }
        let lose =
            self.faults
                .lose_put_answers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        let result = self.inner.put_opts(location, payload, opts).await?;
        if lose.is_ok() {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "injected: the create landed, its answer was lost".into(),
            });
        }
        Ok(result)
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
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
}

/// The test stream's columns: ~100-byte rows.
pub fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("item", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]))
}

/// Rows with ids `ids`, users `u{id % users}`, event times `ts0 + id` ms.
pub fn orders(ids: Range<i64>, users: i64, ts0: i64) -> RecordBatch {
    let n = ids.clone();
    RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(n.clone())),
            Arc::new(StringArray::from_iter_values(
                n.clone().map(|i| format!("u{}", i % users)),
            )),
            Arc::new(StringArray::from_iter_values(
                n.clone().map(|i| format!("item-{:08}", i * 7919 % 100_000)),
            )),
            Arc::new(Float64Array::from_iter_values(
                n.clone().map(|i| i as f64 * 0.5),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                n.map(|i| ts0 + i * 1000),
            )),
        ],
    )
    .unwrap()
}

/// Every batch of a read, concatenated.
pub async fn collect(stream: streamhouse_log::BatchStream) -> Vec<RecordBatch> {
    stream.try_collect().await.unwrap()
}

/// A column of i64 values over batches (`_offset`, `id`).
pub fn i64s(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    use arrow::array::AsArray;
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"))
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// Generates one `#[tokio::test]` per backend for each named test fn.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod memory { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::common::Backend::Memory).await }
        )* }
        mod local { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::common::Backend::Local).await }
        )* }
        mod s3 { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::common::Backend::S3).await }
        )* }
    };
}
