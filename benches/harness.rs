//! The benchmark harness: every scenario, one table.
//!
//! `cargo bench --bench harness` runs each scenario on a fresh data
//! directory with the embedded defaults (local-directory object store,
//! SQLite metadata, default flush settings) and prints one table. Rows are
//! ~100 bytes: an int64, a timestamp, two short strings and a double.
//!
//! Scenarios: append throughput and acknowledgement latency (batches of
//! 1,000 and 10,000 rows, several concurrent producers), then sequential
//! reads of everything appended, from a cold cache (ranged GETs + decode)
//! and from the writer's warm cache; then the PostgreSQL door with a real
//! client over loopback (`harness/pgwire.rs`): multi-row INSERT statements (1,000 rows each) and
//! `COPY … FROM STDIN` in CSV; then the Flight producer/consumer API (see
//! `harness/flight.rs`), the materialized-view scenarios
//! (`harness/views.rs`), the Kafka door through librdkafka clients
//! (`harness/kafka.rs`; `--tansu BIN` runs the same clients against Tansu
//! too), a stream copied into Parquet files by a sink (`harness/sinks.rs`), a
//! PostgreSQL source following a changing table (`harness/sources.rs`;
//! needs the test command's PostgreSQL), directories of CSV, JSON and
//! Parquet files loaded by a file source (`harness/files.rs`), a stream's
//! chunks rewritten as its Parquet archive and scanned in both forms
//! (`harness/archive.rs`), decoding Confluent-framed Avro into Arrow
//! (`harness/avro.rs`), the web console's pages timed in headless
//! Chromium with 100 streams and 10 views (`harness/console.rs`),
//! produce latency and request costs over the S3-compatible test server
//! held to S3 Standard's and S3 Express's latencies
//! (`harness/s3_latency.rs`; `--filter "s3 latency"`), and Nexmark as views (`harness/nexmark.rs`, the queries in
//! `benches/nexmark/`); `--filter "nexmark live"` runs the Nexmark views
//! together while events arrive at a fixed rate instead
//! (`harness/nexmark/live.rs`). `--filter cluster` runs the cluster
//! scenarios instead (`harness/cluster.rs`: S3 and PostgreSQL servers
//! needed). The table also goes to a JSON file (`--json`, default
//! `target/bench-results.json`) for tracking over time.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

#[path = "harness/archive.rs"]
mod archive;
#[path = "harness/avro.rs"]
mod avro;
#[path = "harness/cluster.rs"]
mod cluster;
#[path = "harness/console.rs"]
mod console;
#[path = "harness/files.rs"]
mod files;
#[path = "harness/flight.rs"]
mod flight;
#[path = "harness/kafka.rs"]
mod kafka;
#[path = "harness/nexmark.rs"]
mod nexmark;
#[path = "harness/pgwire.rs"]
mod pgwire;
#[path = "harness/s3_latency.rs"]
mod s3_latency;
#[path = "harness/sinks.rs"]
mod sinks;
#[path = "harness/sources.rs"]
mod sources;
#[path = "harness/views.rs"]
mod views;

use std::sync::Arc;
use std::time::Instant;

/// The server's allocator, so the numbers are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use clap::Parser;
use futures::TryStreamExt;
use hdrhistogram::Histogram;
use streamhouse_log::{AppendOptions, DataDir, Log, StreamSpec};

#[derive(Debug, Parser)]
struct Args {
    /// Rows appended per append scenario.
    #[arg(long, default_value_t = 4_000_000)]
    rows: usize,
    /// Partitions of the benchmark stream.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Rows of the GROUP BY scenario.
    #[arg(long, default_value_t = 10_000_000)]
    group_rows: usize,
    /// Nexmark events generated and ingested for the Nexmark queries.
    #[arg(long, default_value_t = 10_000_000)]
    nexmark_events: u64,
    /// Events per second the Nexmark live scenario produces.
    #[arg(long, default_value_t = 200_000)]
    nexmark_live_rate: u64,
    /// How long the Nexmark live scenario produces, in seconds.
    #[arg(long, default_value_t = 60)]
    nexmark_live_seconds: u64,
    /// Nexmark events per second of event time.
    #[arg(long, default_value_t = 10_000)]
    nexmark_rate: u64,
    /// Where the results go as JSON, for tracking them over time.
    #[arg(long, default_value = "target/bench-results.json")]
    json: std::path::PathBuf,
    /// Only run scenarios whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Runs the PostgreSQL and Flight scenarios with passwords required,
    /// as a user granted INSERT and SELECT on the stream (not a
    /// superuser), so that every call passes the privilege check.
    #[arg(long)]
    as_user: bool,
    /// A Tansu binary (`cargo install tansu --features dynostore`): the
    /// Kafka scenarios run against it too, with the same clients.
    #[arg(long, env = "STREAMHOUSE_BENCH_TANSU")]
    tansu: Option<std::path::PathBuf>,
    /// Arguments cargo passes to every bench target.
    #[arg(long, hide = true)]
    bench: bool,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("user", DataType::Utf8, false),
        Field::new("item", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]))
}

/// A batch of `n` rows starting at id `first`, ~100 bytes per row.
fn batch(first: i64, n: usize) -> RecordBatch {
    let ids = first..first + n as i64;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.clone().map(|i| 1_700_000_000_000_000 + i * 1_000),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.clone()
                    .map(|i| format!("user-{:06}@example.org", i * 7919 % 50_000)),
            )),
            Arc::new(StringArray::from_iter_values(ids.clone().map(|i| {
                format!(
                    "sku-{:08}-{:04}-blue-large",
                    i * 104_729 % 1_000_000,
                    i % 977
                )
            }))),
            Arc::new(Float64Array::from_iter_values(
                ids.map(|i| (i % 10_000) as f64 * 0.01),
            )),
        ],
    )
    .expect("valid batch")
}

/// One line of the result table.
#[derive(Default)]
struct Row {
    scenario: String,
    rows: u64,
    seconds: f64,
    bytes: u64,
    latency: Option<(f64, f64)>,
    /// CPU seconds the process used (user + system), when measured.
    cpu: Option<f64>,
    /// Peak resident memory of the process during the scenario, MiB.
    peak_mib: Option<f64>,
    /// Rows of the view the scenario built.
    view_rows: Option<u64>,
    /// How the result was checked, or why the scenario did not run.
    note: Option<String>,
}

impl Row {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "scenario": self.scenario,
            "rows": self.rows,
            "seconds": self.seconds,
            "rows_per_second": self.per_second(),
            "rows_per_cpu_second": self.cpu.map(|c| self.rows as f64 / c),
            "mb_per_second": self.bytes as f64 / self.seconds / 1e6,
            "p50_ms": self.latency.map(|l| l.0),
            "p99_ms": self.latency.map(|l| l.1),
            "cpu_seconds": self.cpu,
            "peak_mib": self.peak_mib,
            "view_rows": self.view_rows,
            "note": self.note,
        })
    }

    fn per_second(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.rows as f64 / self.seconds)
    }
}

/// CPU seconds this process has used (user + system).
/// Every batch a query answers (it must answer rows).
async fn collect(db: &streamhouse_sql::Database, sql: &str) -> Vec<RecordBatch> {
    let mut r = db
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let Some(streamhouse_sql::QueryResult::Rows(s)) = r.pop() else {
        panic!("no rows from {sql}")
    };
    s.try_collect().await.expect("rows")
}

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    // SAFETY: initialised by getrusage (or zeroed).
    let u = unsafe { usage.assume_init() };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Current and peak resident memory of this process, in MiB.
fn resident_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts a new peak-memory measurement (the kernel's high-water mark
/// falls back to the current resident size).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<46} {:>11} {:>8} {:>12} {:>12} {:>8} {:>8} {:>8} {:>9} {:>10}  note",
        "scenario",
        "rows",
        "seconds",
        "rows/s",
        "rows/CPU-s",
        "MB/s*",
        "p50 ms",
        "p99 ms",
        "peak MiB",
        "view rows"
    );
    println!("{}", "-".repeat(150));
    let opt = |v: Option<f64>, digits: usize| match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "-".into(),
    };
    for r in rows {
        println!(
            "{:<46} {:>11} {:>8.2} {:>12} {:>12} {:>8} {:>8} {:>8} {:>9} {:>10}  {}",
            r.scenario,
            r.rows,
            r.seconds,
            opt(r.per_second(), 0),
            opt(r.cpu.map(|c| r.rows as f64 / c), 0),
            opt((r.bytes > 0).then(|| r.bytes as f64 / r.seconds / 1e6), 1),
            opt(r.latency.map(|l| l.0), 2),
            opt(r.latency.map(|l| l.1), 2),
            opt(r.peak_mib, 0),
            r.view_rows.map_or("-".into(), |v| v.to_string()),
            r.note.as_deref().unwrap_or("")
        );
    }
}

/// Writes the table as JSON (one object per row, plus the machine).
fn write_json(path: &std::path::Path, rows: &[Row]) {
    let doc = serde_json::json!({
        "when": chrono::Utc::now().to_rfc3339(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(path, serde_json::to_string_pretty(&doc).expect("json")) {
        Ok(()) => println!("results written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

/// Appends `total` rows in batches of `batch_rows` from `producers` tasks.
async fn append(
    log: Arc<Log>,
    total: usize,
    batch_rows: usize,
    producers: usize,
) -> (Row, Histogram<u64>) {
    // Pre-built batches: generation is not part of the measurement.
    let pool: Arc<Vec<RecordBatch>> = Arc::new(
        (0..32)
            .map(|k| batch(k * batch_rows as i64, batch_rows))
            .collect(),
    );
    let bytes_per_batch = pool[0].get_array_memory_size() as u64;
    let batches = total / batch_rows;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (log, pool) = (log.clone(), pool.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut i = p;
            while i < batches {
                let t = Instant::now();
                log.append(
                    "bench",
                    pool[i % pool.len()].clone(),
                    AppendOptions::default(),
                )
                .await
                .expect("append");
                hist.record(t.elapsed().as_micros() as u64).expect("record");
                i += producers;
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        hist.add(t.await.expect("producer")).expect("merge");
    }
    let seconds = started.elapsed().as_secs_f64();
    let row = Row {
        scenario: format!("append {batch_rows}-row batches x{producers}"),
        rows: (batches * batch_rows) as u64,
        seconds,
        bytes: batches as u64 * bytes_per_batch,
        latency: Some((
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
        )),
        ..Default::default()
    };
    (row, hist)
}

/// Reads every partition to the end, partitions in parallel.
async fn read_all(log: Arc<Log>, partitions: u32, label: &str) -> Row {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..partitions {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = log.read("bench", p, 0..u64::MAX, None).await.expect("read");
            let (mut rows, mut bytes) = (0u64, 0u64);
            while let Some(b) = s.try_next().await.expect("batch") {
                rows += b.num_rows() as u64;
                bytes += b.get_array_memory_size() as u64;
            }
            (rows, bytes)
        }));
    }
    let (mut rows, mut bytes) = (0, 0);
    for t in tasks {
        let (r, b) = t.await.expect("reader");
        rows += r;
        bytes += b;
    }
    Row {
        scenario: label.to_string(),
        rows,
        seconds: started.elapsed().as_secs_f64(),
        bytes,
        latency: None,
        ..Default::default()
    }
}

async fn fresh(dir: &std::path::Path, partitions: u32) -> (DataDir, Arc<Log>) {
    let dd = DataDir::open(dir).expect("data dir");
    let log = Arc::new(dd.open_log().await.expect("log"));
    if log.stream("bench").await.is_err() {
        log.create_stream(StreamSpec::new("bench", schema()).with_partitions(partitions))
            .await
            .expect("create stream");
    }
    (dd, log)
}

async fn run(args: Args) {
    let wanted = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    let mut table = Vec::new();
    for (batch_rows, producers) in [(1_000usize, 16usize), (10_000, 4)] {
        let name = format!("append {batch_rows}-row batches x{producers}");
        if !wanted(&name) && !wanted("read") {
            continue;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let (dd, log) = fresh(tmp.path(), args.partitions).await;
        let (row, _) = append(log.clone(), args.rows, batch_rows, producers).await;
        eprintln!(
            "{}: {:.0} rows/s",
            row.scenario,
            row.rows as f64 / row.seconds
        );
        table.push(row);
        if batch_rows == 10_000 && wanted("read") {
            table.push(read_all(log.clone(), args.partitions, "read sequential, warm cache").await);
            log.shutdown().await;
            drop(log);
            drop(dd);
            // A new log over the same directory: empty cache, every chunk a GET.
            let (_dd, cold) = fresh(tmp.path(), args.partitions).await;
            table.push(
                read_all(
                    cold.clone(),
                    args.partitions,
                    "read sequential, cold (GET+decode)",
                )
                .await,
            );
            cold.shutdown().await;
        } else {
            log.shutdown().await;
        }
    }
    if wanted("pgwire") {
        table.extend(pgwire::scenarios(&args).await);
    }
    if wanted("flight") {
        table.extend(flight::scenarios(&args).await);
    }
    if wanted("view")
        || args
            .filter
            .as_deref()
            .is_some_and(|f| f.starts_with("view"))
    {
        table.extend(views::scenarios(&args).await);
    }
    if wanted("kafka") {
        table.extend(kafka::scenarios(&args).await);
    }
    if wanted("sink") {
        table.extend(sinks::scenarios(&args).await);
    }
    if wanted("cdc") {
        table.extend(sources::scenarios(&args).await);
    }
    if wanted("file source") {
        table.extend(files::scenarios(&args).await);
    }
    if wanted("archive") {
        table.extend(archive::scenarios(&args).await);
    }
    if wanted("avro") {
        table.extend(avro::scenarios());
    }
    if wanted("s3 latency") {
        table.extend(s3_latency::scenarios(&args).await);
    }
    if wanted("console") {
        table.extend(console::scenarios(&args).await);
    }
    if wanted("group by") {
        table.extend(group_by_scenario(&args).await);
    }
    if args
        .filter
        .as_deref()
        .is_some_and(|f| f.contains("cluster"))
    {
        table.extend(cluster::scenarios(&args).await);
    }
    if args
        .filter
        .as_deref()
        .is_some_and(|f| f.starts_with("nexmark live"))
    {
        table.extend(nexmark::live(&args).await);
    } else if wanted("nexmark")
        || args
            .filter
            .as_deref()
            .is_some_and(|f| f.starts_with("nexmark"))
    {
        table.extend(nexmark::scenarios(&args).await);
    }
    print_table(&table);
    write_json(&args.json, &table);
    println!("* MB/s of Arrow in-memory data (buffer sizes), not of compressed bytes.");
    println!(
        "machine: {} cores; local-directory store, SQLite metadata, default flush settings",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
}

/// The user `--as-user` runs the door scenarios as, and its password.
const BENCH_USER: (&str, &str) = ("writer", "bench-password");

/// Creates the benchmark stream; with `as_user`, also the first superuser
/// and [`BENCH_USER`], granted INSERT and SELECT on the stream.
async fn prepare(log: &Arc<Log>, db: &streamhouse_sql::Database, as_user: bool) {
    db.execute(PG_STREAM).await.expect("create stream");
    if as_user {
        streamhouse_sql::roles::ensure_first_superuser(log, Some("admin"))
            .await
            .expect("first superuser");
        let (user, password) = BENCH_USER;
        db.execute(&format!(
            "CREATE USER {user} WITH PASSWORD '{password}'; \
             GRANT INSERT, SELECT ON bench TO {user}"
        ))
        .await
        .expect("bench user");
    }
}

/// The log and the database of a fresh data directory, in this process.
async fn open_database(
    dir: &std::path::Path,
) -> (DataDir, Arc<Log>, Arc<streamhouse_sql::Database>) {
    let dd = DataDir::open(dir).expect("data dir");
    let log = Arc::new(dd.open_log().await.expect("log"));
    let db = Arc::new(
        streamhouse_sql::Database::open(log.clone())
            .await
            .expect("database"),
    );
    (dd, log, db)
}

const PG_STREAM: &str = "CREATE STREAM bench (id BIGINT, ts TIMESTAMP, \"user\" TEXT, item TEXT, \
                         amount DOUBLE PRECISION) WITH (partitions = 4)";

/// `SELECT k, count(*), sum(x) … GROUP BY k` over rows in the log, and the
/// same query by DuckDB over the same rows in a Parquet file (when the
/// Python in STREAMHOUSE_BENCH_PYTHON, default the test venv's, has duckdb:
/// `pip install -r scripts/requirements-bench.txt`). Best of three runs each.
async fn group_by_scenario(args: &Args) -> Vec<Row> {
    use arrow::array::Float64Array;
    let n = args.group_rows;
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("x", DataType::Float64, false),
    ]));
    let batches: Vec<RecordBatch> = (0..n)
        .step_by(100_000)
        .map(|start| {
            let ids = start as i64..(start + 100_000).min(n) as i64;
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| i % 1000))),
                    Arc::new(Float64Array::from_iter_values(ids.map(|i| i as f64 * 0.5))),
                ],
            )
            .expect("batch")
        })
        .collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut dd = Some(DataDir::open(&tmp.path().join("data")).expect("data dir"));
    let log = Arc::new(dd.as_ref().expect("open").open_log().await.expect("log"));
    log.create_stream(StreamSpec::new("agg", schema.clone()).with_partitions(4))
        .await
        .expect("create");
    for chunk in batches.chunks(4) {
        let mut tasks = Vec::new();
        for b in chunk {
            let (log, b) = (log.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                log.append("agg", b, AppendOptions::default())
                    .await
                    .expect("append")
            }));
        }
        for t in tasks {
            t.await.expect("appender");
        }
    }
    let sql = "SELECT k, count(*), sum(x) FROM agg GROUP BY k";
    let mut rows = Vec::new();
    for cold in [false, true] {
        let (log, _dd) = if cold {
            // A new log over the same directory: no cached chunks; the query's
            // projection is not cached either, so every run fetches and decodes.
            log.shutdown().await;
            drop(dd.take());
            let dd = DataDir::open(&tmp.path().join("data")).expect("data dir");
            (Arc::new(dd.open_log().await.expect("log")), Some(dd))
        } else {
            (log.clone(), None)
        };
        let db = streamhouse_sql::Database::open(log.clone())
            .await
            .expect("database");
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let mut res = db.execute(sql).await.expect("query");
            let Some(streamhouse_sql::QueryResult::Rows(s)) = res.pop() else {
                panic!("rows expected")
            };
            let out: Vec<RecordBatch> = s.try_collect().await.expect("rows");
            best = best.min(started.elapsed().as_secs_f64());
            let groups: usize = out.iter().map(RecordBatch::num_rows).sum();
            let counted: i64 = out
                .iter()
                .map(|b| {
                    b.column(1)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("count column")
                        .values()
                        .iter()
                        .sum::<i64>()
                })
                .sum();
            assert_eq!(
                (groups, counted as usize),
                (1000, n),
                "wrong GROUP BY result"
            );
        }
        rows.push(Row {
            scenario: format!(
                "SQL GROUP BY k over the log, {}",
                if cold { "cold" } else { "warm cache" }
            ),
            rows: n as u64,
            seconds: best,
            bytes: 0,
            latency: None,
            ..Default::default()
        });
        log.shutdown().await;
        if cold {
            break;
        }
    }

    // DuckDB over the same rows in Parquet.
    let parquet = tmp.path().join("agg.parquet");
    {
        let file = std::fs::File::create(&parquet).expect("parquet file");
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).expect("writer");
        for b in &batches {
            w.write(b).expect("write");
        }
        w.close().expect("close");
    }
    let python = bench_python();
    let script = format!(
        "import duckdb, time\n\
         c = duckdb.connect()\n\
         q = \"SELECT k, count(*), sum(x) FROM read_parquet('{}') GROUP BY k\"\n\
         best = 1e9\n\
         for _ in range(3):\n\
         \x20   t = time.perf_counter(); r = c.execute(q).fetchall(); best = min(best, time.perf_counter() - t)\n\
         \x20   assert len(r) == 1000\n\
         print(best)\n",
        parquet.display()
    );
    match std::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
    {
        Ok(out) if out.status.success() => {
            let secs: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(f64::NAN);
            rows.push(Row {
                scenario: "DuckDB GROUP BY k over Parquet".into(),
                rows: n as u64,
                seconds: secs,
                bytes: 0,
                latency: None,
                ..Default::default()
            });
        }
        _ => eprintln!(
            "DuckDB comparison skipped: {python} cannot import duckdb \
             (pip install -r scripts/requirements-bench.txt)"
        ),
    }
    rows
}

/// The Python that drives the comparison and client scenarios: the test
/// venv's, or `STREAMHOUSE_BENCH_PYTHON`.
fn bench_python() -> String {
    std::env::var("STREAMHOUSE_BENCH_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/streamhouse/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

fn main() {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(args));
}
