//! Tiered history: `--group-rows / 5` rows (2 M by default: an int64, a
//! double, a timestamp, a short and a longer string) appended in 20 K-row
//! batches to a 4-partition stream with `archive_after`, then one upkeep
//! round rewriting its chunks as Parquet archive chunks — timed (rows/s,
//! CPU), with the bytes of the log's chunks against the archive's — and a
//! full scan through SQL over each form with a cold cache (the log
//! reopened): rows/s, checked to answer the same.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use streamhouse_log::path::DataObjectPath;
use streamhouse_log::{AppendOptions, DataDir, Log};
use streamhouse_sql::Database;

use crate::{Args, Row, cpu_seconds};

const BATCH: usize = 20_000;
const SCAN: &str = "SELECT count(*), sum(k), sum(x), max(ts), count(DISTINCT s), max(item) FROM a";

fn batch(from: usize, to: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("s", DataType::Utf8, true),
        Field::new("item", DataType::Utf8, true),
    ]));
    let ids = from as i64..to as i64;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(Float64Array::from_iter_values(
                ids.clone().map(|i| (i % 10_000) as f64 * 0.25),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.clone().map(|i| 1_767_225_600_000_000 + i * 1_000),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| format!("user-{}", i % 1000)),
            )),
            Arc::new(StringArray::from_iter_values(ids.map(|i| {
                format!("item-{:08} colour-{}", i * 7919 % 100_000, i % 17)
            }))),
        ],
    )
    .expect("batch")
}

/// Bytes of the stream's chunks: (log chunks, archive chunks).
async fn chunk_bytes(log: &Log, name: &str) -> (u64, u64) {
    let info = log.stream(name).await.expect("stream");
    let (mut ipc, mut archive) = (0, 0);
    for p in 0..info.spec.partitions {
        let chunks = log
            .metadata()
            .chunks_by_offset(info.id, p, 0..u64::MAX)
            .await
            .expect("chunks");
        for c in chunks {
            let len = c.byte_range.end - c.byte_range.start;
            match DataObjectPath::is_archive(&c.object) {
                true => archive += len,
                false => ipc += len,
            }
        }
    }
    (ipc, archive)
}

/// A cold full scan: the answer's text, and seconds.
async fn scan(dd: &DataDir) -> (String, f64) {
    let log = Arc::new(dd.open_log().await.expect("log"));
    let db = Database::open(log.clone()).await.expect("database");
    let start = Instant::now();
    let answer = crate::collect(&db, SCAN).await;
    let secs = start.elapsed().as_secs_f64();
    let text = arrow::util::pretty::pretty_format_batches(&answer)
        .expect("answer")
        .to_string();
    drop(db);
    log.shutdown().await;
    (text, secs)
}

pub async fn scenarios(args: &Args) -> Vec<Row> {
    let n = args.group_rows / 5;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dd = DataDir::open(tmp.path()).expect("data dir");
    {
        let log = Arc::new(dd.open_log().await.expect("log"));
        let db = Database::open(log.clone()).await.expect("database");
        db.execute(
            "CREATE STREAM a (k BIGINT NOT NULL, x DOUBLE PRECISION, ts TIMESTAMP, s TEXT, \
             item TEXT) WITH (partitions = 4, archive_after = '1us')",
        )
        .await
        .expect("create stream");
        let mut from = 0;
        while from < n {
            let to = (from + BATCH).min(n);
            log.append("a", batch(from, to), AppendOptions::default())
                .await
                .expect("append");
            from = to;
        }
        drop(db);
        log.shutdown().await;
    }
    let (before, log_secs) = scan(&dd).await;

    let log = Arc::new(dd.open_log().await.expect("log"));
    let (ipc, _) = chunk_bytes(&log, "a").await;
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let report = log.maintain().await.expect("upkeep");
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (left, archive) = chunk_bytes(&log, "a").await;
    log.shutdown().await;
    let (after, archive_secs) = scan(&dd).await;
    let same = if before == after && left == 0 {
        "the same answer as before".to_string()
    } else {
        format!("DIFFERENT: {left} log bytes left; before\n{before}\nafter\n{after}")
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    vec![
        Row {
            scenario: format!(
                "archive: log chunks -> Parquet, one upkeep round ({} chunks in {} files; cpu \
                 {cpu:.1}s)",
                report.archived_chunks, report.archives
            ),
            rows: n as u64,
            seconds: secs,
            note: Some(format!(
                "log chunks {:.1} MiB -> archive {:.1} MiB ({:.0}%)",
                mib(ipc),
                mib(archive),
                100.0 * archive as f64 / ipc.max(1) as f64
            )),
            ..Default::default()
        },
        Row {
            scenario: "archive: cold full scan through SQL, log chunks".into(),
            rows: n as u64,
            seconds: log_secs,
            ..Default::default()
        },
        Row {
            scenario: "archive: cold full scan through SQL, archive chunks".into(),
            rows: n as u64,
            seconds: archive_secs,
            note: Some(same),
            ..Default::default()
        },
    ]
}
