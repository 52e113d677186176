//! Object-storage latency like S3's: the log over the S3-compatible test
//! server behind a layer that holds every request as long as S3 Standard
//! (or S3 Express One Zone) would — each PUT and each GET's first byte a
//! draw from a log-normal distribution with the published medians and
//! tails — then produce → acknowledgement through pgwire, Flight and the
//! Kafka door (confluent-kafka), and produce → consume through a Flight
//! follower and a Kafka consumer; requests per GB ingested and what they
//! cost a month at list prices.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use hdrhistogram::Histogram;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use streamhouse_log::{
    Log, LogConfig, MetadataStore, SqliteMetadata, Store, StoreKind, SystemClock,
};

use crate::{Args, Row};

/// A storage class's latencies: medians and 99th percentiles, ms.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub name: &'static str,
    pub put: (f64, f64),
    pub get_first_byte: (f64, f64),
    /// List prices, USD per 1,000 requests.
    pub put_price: f64,
    pub get_price: f64,
}

/// S3 Standard: PUT p50 ~25 ms, p99 ~400 ms (4 MiB); GET first byte
/// p50 ~30 ms, p99 ~200 ms. PUT $0.005, GET $0.0004 per 1,000.
pub const STANDARD: Profile = Profile {
    name: "S3 Standard",
    put: (25.0, 400.0),
    get_first_byte: (30.0, 200.0),
    put_price: 0.005,
    get_price: 0.0004,
};

/// S3 Express One Zone: single-digit ms medians. PUT $0.00113, GET
/// $0.00003 per 1,000.
pub const EXPRESS: Profile = Profile {
    name: "S3 Express",
    put: (5.0, 25.0),
    get_first_byte: (4.0, 15.0),
    put_price: 0.00113,
    get_price: 0.00003,
};

/// A draw from the log-normal distribution with median `p50` and 99th
/// percentile `p99`.
fn draw((p50, p99): (f64, f64)) -> Duration {
    let sigma = (p99 / p50).ln() / 2.326;
    // Box–Muller.
    let (u1, u2) = (fastrand::f64().max(1e-12), fastrand::f64());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    Duration::from_secs_f64(p50 * (sigma * z).exp() / 1000.0)
}

/// The store, its requests held as `profile` says; counts them.
#[derive(Debug)]
pub struct Latent {
    inner: Arc<dyn ObjectStore>,
    profile: Profile,
    pub puts: AtomicU64,
    pub gets: AtomicU64,
}

impl fmt::Display for Latent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Latent({}, {})", self.profile.name, self.inner)
    }
}

#[async_trait]
impl ObjectStore for Latent {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        let hold = draw(self.profile.put);
        let started = Instant::now();
        let result = self.inner.put_opts(location, payload, opts).await;
        tokio::time::sleep(hold.saturating_sub(started.elapsed())).await;
        result
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(draw(self.profile.get_first_byte)).await;
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.gets.fetch_add(ranges.len() as u64, Ordering::Relaxed);
        tokio::time::sleep(draw(self.profile.get_first_byte)).await;
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

fn quantiles(h: &Histogram<u64>) -> (f64, f64) {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    (ms(0.5), ms(0.99))
}

/// How a run is set up: the storage class, hedged creates, the flush
/// interval (`None`: the S3 default).
struct Setup {
    profile: Profile,
    hedge: Option<Duration>,
    flush_interval: Option<Duration>,
}

impl Setup {
    fn label(&self) -> String {
        let hedge = match self.hedge {
            Some(_) => "hedged PUTs",
            None => "no hedging",
        };
        match self.flush_interval {
            Some(f) => format!("{}, {hedge}, flush {} ms", self.profile.name, f.as_millis()),
            None => format!("{}, {hedge}", self.profile.name),
        }
    }
}

/// One setup's scenarios.
async fn profile_scenarios(args: &Args, setup: Setup, rows_out: &mut Vec<Row>) {
    let profile = setup.profile;
    let label = setup.label();
    let Ok(bucket) = std::env::var("STREAMHOUSE_TEST_S3_BUCKET") else {
        rows_out.push(Row {
            scenario: format!("{label}: produce latency"),
            note: Some("not run: needs the S3-compatible server ./scripts/test starts".into()),
            ..Default::default()
        });
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("s3://{bucket}/bench-{}", fastrand::u64(..));
    let s3 = Store::open(&url).expect("s3 store");
    let latent = Arc::new(Latent {
        inner: s3.object_store().clone(),
        profile,
        puts: AtomicU64::new(0),
        gets: AtomicU64::new(0),
    });
    let store = Store::from_parts(latent.clone(), StoreKind::S3, None).with_hedging(setup.hedge);
    let meta: Arc<dyn MetadataStore> = Arc::new(
        SqliteMetadata::open(&dir.path().join("metadata.db"))
            .await
            .expect("metadata"),
    );
    let mut config = LogConfig::for_store(&store);
    if let Some(f) = setup.flush_interval {
        config.flush.flush_interval = f;
    }
    let flush_interval = config.flush.flush_interval;
    let log = Arc::new(Log::open(
        store.clone(),
        meta.clone(),
        config,
        Arc::new(SystemClock),
    ));
    let db = Arc::new(
        streamhouse_sql::Database::open(log.clone())
            .await
            .expect("database"),
    );
    crate::prepare(&log, &db, false).await;
    let pg = crate::pgwire::serve(db.clone()).await;
    let flight = crate::flight::serve(db.clone()).await;

    // Produce → acknowledgement: 8 clients of each door, one 10-row
    // statement (or 100-row batch) after another.
    let per_client = (args.rows / 100).clamp(50, 400);
    let (before_puts, started) = (latent.puts.load(Ordering::Relaxed), Instant::now());
    let pg_hist = crate::pgwire::insert_latencies(&pg, 8, per_client).await;
    let flight_hist = crate::flight::put_latencies(&flight, 8, per_client).await;
    let secs = started.elapsed().as_secs_f64();
    let puts = latent.puts.load(Ordering::Relaxed) - before_puts;
    let rows = 8 * per_client as u64 * (10 + 100);
    let bytes = rows * 100;
    for (door, hist, n) in [
        ("pgwire INSERT", &pg_hist, 10),
        ("Flight DoPut", &flight_hist, 100),
    ] {
        let (p50, p99) = quantiles(hist);
        eprintln!(
            "{label}: {door} produce->ack p50 {p50:.1} ms, p99 {p99:.1} ms (max {:.1})",
            hist.max() as f64 / 1000.0
        );
        rows_out.push(Row {
            scenario: format!("{label}: {door} produce->ack, 8 clients x {n} rows"),
            rows: 8 * per_client as u64 * n,
            seconds: secs,
            latency: Some((p50, p99)),
            note: Some(format!("flush interval {} ms", flush_interval.as_millis())),
            ..Default::default()
        });
    }

    // The Kafka door: one record a millisecond (acks=all, linger 0),
    // acknowledged and consumed by a tailing consumer.
    let kafka = crate::kafka::serve(db.clone(), &label, None, None).await;
    match crate::kafka::latencies(&crate::bench_python(), &kafka, 3_000).await {
        Ok((ack, consume)) => {
            for (what, (p50, p99)) in [("produce->ack", ack), ("produce->consume", consume)] {
                eprintln!("{label}: Kafka {what} p50 {p50:.1} ms, p99 {p99:.1} ms");
                rows_out.push(Row {
                    scenario: format!("{label}: Kafka {what}, 1 record/ms, acks=all"),
                    rows: 3_000,
                    latency: Some((p50, p99)),
                    ..Default::default()
                });
            }
        }
        Err(why) => rows_out.push(Row {
            scenario: format!("{label}: Kafka produce->ack"),
            note: Some(format!("not measured: {why}")),
            ..Default::default()
        }),
    }
    drop(kafka);

    // Produce → consume through a follower, and a cold read back.
    let follow = crate::flight::follow_latencies(&flight, 400).await;
    let (p50, p99) = quantiles(&follow);
    eprintln!("{label}: Flight produce->follow p50 {p50:.1} ms, p99 {p99:.1} ms");
    rows_out.push(Row {
        scenario: format!("{label}: Flight produce->follow (100 rows/5 ms)"),
        rows: 40_000,
        latency: Some((p50, p99)),
        ..Default::default()
    });

    // Requests per GB and their cost a month at 10 MiB/s of ingest: a
    // flush is one PUT, so PUTs follow the flush interval, not the bytes,
    // until a flush fills (16 MiB).
    let gb = bytes as f64 / 1e9;
    let puts_per_s = 1.0 / flush_interval.as_secs_f64();
    let month = 30.0 * 86_400.0;
    let put_cost = puts_per_s * month / 1000.0 * profile.put_price;
    let before_gets = latent.gets.load(Ordering::Relaxed);
    let (read_rows, read_secs) = read_back(store, meta).await;
    let gets = latent.gets.load(Ordering::Relaxed) - before_gets;
    let read_gb = read_rows as f64 * 100.0 / 1e9;
    let gets_per_gb = gets as f64 / read_gb.max(1e-9);
    // Each consumer reading everything once: GETs per GB read.
    let get_cost = 10.0 * 1.048_576e-3 * month * gets_per_gb / 1000.0 * profile.get_price;
    let note = format!(
        "{:.0} PUTs/GB at this load ({puts} PUTs), {gets_per_gb:.0} GETs/GB read cold; \
         at 10 MiB/s: PUTs ${put_cost:.0}/month (one flush per {} ms), one cold reader's \
         GETs ${get_cost:.0}/month",
        puts as f64 / gb,
        flush_interval.as_millis()
    );
    eprintln!("{label}: {note}");
    rows_out.push(Row {
        scenario: format!("{label}: requests and their cost"),
        rows: read_rows,
        seconds: read_secs,
        note: Some(note),
        ..Default::default()
    });
    log.shutdown().await;
}

/// Every row of `bench` read by a log with no cache (another agent, or
/// a consumer after a restart): every chunk a GET. Rows and seconds.
async fn read_back(store: Store, meta: Arc<dyn MetadataStore>) -> (u64, f64) {
    let mut config = LogConfig::for_store(&store);
    config.cache_bytes = 0;
    let cold = Log::open(store, meta, config, Arc::new(SystemClock));
    let started = Instant::now();
    let mut rows = 0u64;
    for p in 0..4 {
        let batches: Vec<_> = cold
            .read("bench", p, 0..u64::MAX, None)
            .await
            .expect("read")
            .try_collect()
            .await
            .expect("rows");
        rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
    }
    let secs = started.elapsed().as_secs_f64();
    cold.shutdown().await;
    (rows, secs)
}

/// S3 Standard with and without hedged creates; S3 Express with a short
/// flush interval (its PUTs cost a fifth, and it is chosen for latency).
pub async fn scenarios(args: &Args) -> Vec<Row> {
    let hedge = Some(streamhouse_log::store::HEDGE_AFTER);
    let mut rows = Vec::new();
    for setup in [
        Setup {
            profile: STANDARD,
            hedge: None,
            flush_interval: None,
        },
        Setup {
            profile: STANDARD,
            hedge,
            flush_interval: None,
        },
        Setup {
            profile: EXPRESS,
            hedge,
            flush_interval: Some(Duration::from_millis(25)),
        },
    ] {
        profile_scenarios(args, setup, &mut rows).await;
    }
    rows
}
