//! File source scenarios: `CREATE SOURCE … FROM FILES` loading a directory
//! of CSV, JSON-lines or Parquet files (`--group-rows / 5` rows, 2 M by
//! default, in 20 files: an int64, a double, a timestamp and a short
//! string) into a 4-partition stream, timed from CREATE SOURCE until the
//! source is done (rows/s, input MB/s, CPU), and checked: the stream holds
//! every row once.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use streamhouse_log::DataDir;
use streamhouse_sql::Database;

use crate::{Args, Row, cpu_seconds, resident_mib};

const FILES: usize = 20;

/// The first column of a query's first row, as text.
async fn text(db: &Database, sql: &str) -> Option<String> {
    let b = crate::collect(db, sql).await;
    let c = b
        .first()?
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()?;
    (!c.is_empty() && c.is_valid(0)).then(|| c.value(0).to_string())
}

async fn count(db: &Database, sql: &str) -> i64 {
    let b = crate::collect(db, sql).await;
    b[0].column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("count")
        .value(0)
}

/// File `f`'s rows `from..to` in `format`.
fn file(format: &str, from: usize, to: usize) -> Vec<u8> {
    // 2026-01-01 plus i ms (within the hour), as micros and as text.
    let ts = |i: usize| 1_767_225_600_000_000i64 + (i % 3_600_000) as i64 * 1_000;
    let iso = |i: usize| {
        let ms = i % 3_600_000;
        format!(
            "2026-01-01T00:{:02}:{:02}.{:03}",
            ms / 60_000,
            ms / 1000 % 60,
            ms % 1000
        )
    };
    match format {
        "csv" => {
            let mut s = String::from("k,x,ts,s\n");
            for i in from..to {
                let _ = writeln!(s, "{i},{},{},user-{}", i as f64 * 0.25, iso(i), i % 1000);
            }
            s.into_bytes()
        }
        "json" => {
            let mut s = String::new();
            for i in from..to {
                let _ = writeln!(
                    s,
                    "{{\"k\":{i},\"x\":{},\"ts\":\"{}\",\"s\":\"user-{}\"}}",
                    i as f64 * 0.25,
                    iso(i),
                    i % 1000
                );
            }
            s.into_bytes()
        }
        _ => {
            let schema = Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("x", DataType::Float64, false),
                Field::new(
                    "ts",
                    DataType::Timestamp(TimeUnit::Microsecond, None),
                    false,
                ),
                Field::new("s", DataType::Utf8, false),
            ]));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values((from..to).map(|i| i as i64))),
                    Arc::new(Float64Array::from_iter_values(
                        (from..to).map(|i| i as f64 * 0.25),
                    )),
                    Arc::new(TimestampMicrosecondArray::from_iter_values(
                        (from..to).map(ts),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        (from..to).map(|i| format!("user-{}", i % 1000)),
                    )),
                ],
            )
            .expect("batch");
            let mut out = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)
                .expect("parquet writer");
            w.write(&batch).expect("write");
            w.close().expect("close");
            out
        }
    }
}

pub async fn scenarios(args: &Args) -> Vec<Row> {
    let mut rows = Vec::new();
    for format in ["csv", "json", "parquet"] {
        rows.push(scenario(args, format).await);
    }
    rows
}

async fn scenario(args: &Args, format: &str) -> Row {
    let n = (args.group_rows / 5).max(FILES);
    let input = tempfile::tempdir().expect("tempdir");
    let mut bytes = 0u64;
    for f in 0..FILES {
        let data = file(format, f * n / FILES, (f + 1) * n / FILES);
        bytes += data.len() as u64;
        std::fs::write(input.path().join(format!("part-{f:03}.{format}")), data).expect("file");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dd = DataDir::open(tmp.path()).expect("data dir");
    let log = Arc::new(dd.open_log().await.expect("log"));
    let db = Database::open(log.clone()).await.expect("database");
    db.execute(
        "CREATE STREAM ev (k BIGINT NOT NULL, x DOUBLE PRECISION NOT NULL, \
         ts TIMESTAMP NOT NULL, s TEXT NOT NULL) WITH (partitions = 4)",
    )
    .await
    .expect("create stream");

    crate::reset_peak_memory();
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    db.execute(&format!(
        "CREATE SOURCE load FROM FILES WITH (path = 'file://{}', format = '{format}') INTO ev",
        input.path().display()
    ))
    .await
    .expect("create source");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match text(&db, "SELECT status FROM streamhouse.sources").await {
            Some(s) if s == "done" => break,
            Some(s) if s == "failed" || s == "retrying" => panic!(
                "the file source stopped: {:?}",
                text(&db, "SELECT cause FROM streamhouse.sources").await
            ),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the file source did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, peak) = resident_mib();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let distinct = count(&db, "SELECT count(DISTINCT k) FROM ev").await;
    let all = count(&db, "SELECT count(*) FROM ev").await;
    log.shutdown().await;
    Row {
        scenario: format!(
            "file source: {FILES} {format} files -> stream ({:.0} MB/s of files; cpu {cpu:.1}s)",
            bytes as f64 / 1e6 / secs
        ),
        rows: n as u64,
        seconds: secs,
        // The table's MB/s column is of Arrow data; the files' rate is in
        // the scenario's name.
        bytes: 0,
        peak_mib: Some(peak),
        note: Some(if distinct == n as i64 && all == n as i64 {
            "each row once".into()
        } else {
            format!("ROWS MISSING OR REPEATED: {all} rows, {distinct} distinct of {n}")
        }),
        ..Default::default()
    }
}
