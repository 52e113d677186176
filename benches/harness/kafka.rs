//! Kafka scenarios: produce and consume throughput and produce-to-consume
//! latency through librdkafka clients (`benches/kafka_clients.py`: kcat
//! processes, and confluent-kafka processes, for throughput;
//! confluent-kafka for latency), against the
//! Kafka door served in this process on loopback, over the local-directory
//! store and, when `./scripts/test`'s S3-compatible server is there
//! (`AWS_ENDPOINT_URL`, `STREAMHOUSE_TEST_S3_BUCKET`), over S3 with the
//! default S3 flush. With `--tansu BIN`, the same clients and records run
//! against Tansu (a Kafka-compatible broker, `cargo install tansu`) in
//! the same run, for a side-by-side table. The clients run in their own
//! processes; each server's CPU seconds are its process's.

use std::sync::Arc;

use streamhouse_log::{DataDir, Log, LogConfig, SqliteMetadata, Store, SystemClock};

use crate::{Args, Row};

/// A Kafka-compatible server under test, up and listening.
pub struct Target {
    name: String,
    addr: String,
    pid: u32,
    /// What keeps it running (dropped: stopped).
    _running: Running,
}

enum Running {
    /// The door stops when the sender drops; the directory is removed.
    InProcess {
        _stop: tokio::sync::oneshot::Sender<()>,
        _data: Option<DataDir>,
        _dir: Option<tempfile::TempDir>,
    },
    Child(std::process::Child),
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Running::Child(child) = &mut self._running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The S3-compatible server `./scripts/test` starts, if it is there.
fn s3_bucket() -> Option<String> {
    std::env::var("AWS_ENDPOINT_URL").ok()?;
    std::env::var("STREAMHOUSE_TEST_S3_BUCKET").ok()
}

/// The Kafka door in this process, over a fresh data directory (local
/// store) or a fresh prefix of the S3 bucket (SQLite metadata either way).
async fn streamhouse(s3: Option<&str>) -> Target {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, data, name) = match s3 {
        None => {
            let (dd, _log, db) = crate::open_database(dir.path()).await;
            (db, Some(dd), "StreamHouse, local directory")
        }
        Some(bucket) => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_micros();
            let store = Store::open(&format!("s3://{bucket}/kafka-bench-{stamp}")).expect("S3");
            let meta = SqliteMetadata::open(&dir.path().join("metadata.db"))
                .await
                .expect("metadata");
            let config = LogConfig::for_store(&store);
            let log = Arc::new(Log::open(
                store,
                Arc::new(meta),
                config,
                Arc::new(SystemClock),
            ));
            let db = Arc::new(
                streamhouse_sql::Database::open(log)
                    .await
                    .expect("database"),
            );
            (db, None, "StreamHouse, S3 (150 ms flush)")
        }
    };
    serve(db, name, data, Some(dir)).await
}

/// The Kafka door of `db` in this process, until the target is dropped.
pub async fn serve(
    db: Arc<streamhouse_sql::Database>,
    name: &str,
    data: Option<DataDir>,
    dir: Option<tempfile::TempDir>,
) -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(streamhouse_kafka::serve(
        listener,
        db,
        streamhouse_kafka::KafkaConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    Target {
        name: name.to_string(),
        addr,
        pid: std::process::id(),
        _running: Running::InProcess {
            _stop: stop,
            _data: data,
            _dir: dir,
        },
    }
}

/// Produce-to-acknowledgement and produce-to-consume p50/p99 (ms) of
/// `records` records, one a millisecond, through confluent-kafka.
pub async fn latencies(
    python: &str,
    target: &Target,
    records: usize,
) -> Result<((f64, f64), (f64, f64)), String> {
    let r = client(python, "latency", target, records).await?;
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    Ok((
        (f("ack_p50_ms"), f("ack_p99_ms")),
        (f("p50_ms"), f("p99_ms")),
    ))
}

/// Tansu on a free port, storing in memory or in the S3 bucket.
async fn tansu(bin: &std::path::Path, s3: Option<&str>) -> Option<Target> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        l.local_addr().ok()?.port()
    };
    let (engine, name) = match s3 {
        None => ("memory://tansu/".to_string(), "Tansu 0.6, memory"),
        Some(bucket) => (format!("s3://{bucket}/"), "Tansu 0.6, S3"),
    };
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = std::process::Command::new(bin);
    command
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            &engine,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        command.env("AWS_ENDPOINT", endpoint);
    }
    let child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Tansu not started: {}: {e}", bin.display());
            return None;
        }
    };
    let target = Target {
        name: name.to_string(),
        addr: format!("127.0.0.1:{port}"),
        pid: child.id(),
        _running: Running::Child(child),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&target.addr).await.is_ok() {
            return Some(target);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("Tansu did not listen on {}", target.addr);
    None
}

/// Runs the client script; its `result` line, or why it could not run.
async fn client(
    python: &str,
    what: &str,
    target: &Target,
    records: usize,
) -> Result<serde_json::Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/kafka_clients.py");
    let mut command = std::process::Command::new(python);
    command.args([
        script,
        what,
        &target.addr,
        &records.to_string(),
        &target.pid.to_string(),
    ]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().filter(|l| !l.starts_with("result ")) {
        eprintln!("  {line}");
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(|| {
            format!(
                "{what} did not finish: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )
        })
}

async fn measure(python: &str, target: &Target, records: usize, rows: &mut Vec<Row>) {
    eprintln!("kafka: {}", target.name);
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    for (mode, producers, consumers) in [
        ("throughput", "1 kcat", "4 kcat"),
        (
            "throughput-python",
            "2 confluent-kafka",
            "4 confluent-kafka",
        ),
    ] {
        match client(python, mode, target, records).await {
            Ok(r) => {
                let n = r["records"].as_u64().unwrap_or(0);
                let held = r["held"].as_u64().unwrap_or(n);
                let consumed_note = if held == n {
                    "one client a partition, from the start".to_string()
                } else {
                    format!("{n} acknowledged, but the high watermarks add up to {held}")
                };
                rows.push(Row {
                    scenario: format!("kafka produce acks=all, {producers} — {}", target.name),
                    rows: n,
                    seconds: f(&r, "produce_seconds"),
                    bytes: n * 100,
                    cpu: Some(f(&r, "produce_cpu")),
                    note: Some("server CPU; 100-byte records".into()),
                    ..Default::default()
                });
                rows.push(Row {
                    scenario: format!("kafka consume, {consumers} — {}", target.name),
                    rows: held,
                    seconds: f(&r, "consume_seconds"),
                    bytes: held * 100,
                    cpu: Some(f(&r, "consume_cpu")),
                    note: Some(consumed_note),
                    ..Default::default()
                });
            }
            Err(why) => eprintln!("Kafka {mode} on {} skipped: {why}", target.name),
        }
    }
    match client(python, "latency", target, 5_000).await {
        Ok(r) => {
            let (read, sent) = (
                r["records"].as_u64().unwrap_or(0),
                r["sent"].as_u64().unwrap_or(0),
            );
            rows.push(Row {
                scenario: format!("kafka produce-to-consume, 1 rec/ms — {}", target.name),
                rows: read,
                seconds: 5.0,
                latency: Some((f(&r, "p50_ms"), f(&r, "p99_ms"))),
                cpu: Some(f(&r, "cpu")),
                note: (read < sent).then(|| format!("only {read} of {sent} records read")),
                ..Default::default()
            })
        }
        Err(why) => eprintln!("Kafka latency on {} skipped: {why}", target.name),
    }
}

pub async fn scenarios(args: &Args) -> Vec<Row> {
    let python = crate::bench_python();
    let records = args.rows.min(4_000_000);
    let bucket = s3_bucket();
    let mut stores = vec![None];
    if let Some(b) = &bucket {
        stores.push(Some(b.as_str()));
    }
    let mut rows = Vec::new();
    for s3 in stores {
        // Over S3 a run is bounded by round trips to the store, not by
        // CPU: fewer records tell as much.
        let records = if s3.is_some() {
            records.min(500_000)
        } else {
            records
        };
        let target = streamhouse(s3).await;
        measure(&python, &target, records, &mut rows).await;
        drop(target);
        if let Some(bin) = &args.tansu
            && let Some(target) = tansu(bin, s3).await
        {
            measure(&python, &target, records, &mut rows).await;
        }
    }
    rows
}
