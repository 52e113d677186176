//! Sink scenarios: `CREATE SINK … INTO PARQUET` and `… INTO DELTA` over a
//! stream already holding `--group-rows` events (10 M by default: an int64
//! key, a double, a timestamp; 4 partitions), timed from CREATE SINK until
//! every row is in the destination (rows/s, CPU, bytes written), and the
//! destination checked: Parquet files hold each offset of each partition
//! once; each partition's Delta commits end at the partition's end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use streamhouse_log::DataDir;
use streamhouse_sql::Database;

use crate::{Args, Row, cpu_seconds, resident_mib};

/// `SHOW SINKS`: the lag of the one sink, once known.
async fn sink_lag(db: &Database) -> Option<i64> {
    let b = crate::collect(db, "SHOW SINKS").await;
    let lags = b.first()?.column(6).as_any().downcast_ref::<Int64Array>()?;
    lags.is_valid(0).then(|| lags.value(0))
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        total += if path.is_dir() {
            dir_bytes(&path)
        } else {
            entry.metadata().map(|m| m.len()).unwrap_or(0)
        };
    }
    total
}

pub async fn scenarios(args: &Args) -> Vec<Row> {
    let mut rows = Vec::new();
    for format in ["PARQUET", "DELTA"] {
        rows.push(scenario(args, format).await);
    }
    rows
}

async fn scenario(args: &Args, format: &str) -> Row {
    let n = args.group_rows;
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let dd = DataDir::open(tmp.path()).expect("data dir");
    let log = Arc::new(dd.open_log().await.expect("log"));
    let db = Database::open(log.clone()).await.expect("database");
    db.execute(
        "CREATE STREAM ev (k BIGINT NOT NULL, x DOUBLE PRECISION NOT NULL, \
         ts TIMESTAMP NOT NULL) WITH (partitions = 4)",
    )
    .await
    .expect("create stream");
    crate::views::ingest(&log, "ev", n, 10_000).await;

    crate::reset_peak_memory();
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    db.execute(&format!(
        "CREATE SINK lake FROM ev INTO {format} WITH (path = 'file://{}', flush_interval = '1s')",
        out.path().display()
    ))
    .await
    .expect("create sink");
    while sink_lag(&db).await != Some(0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, peak) = resident_mib();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let bytes = dir_bytes(out.path());

    let path = format!("file://{}", out.path().display());
    let ends = log.partition_ends("ev").await.expect("ends");
    let (checked, files) = if format == "PARQUET" {
        // Every offset of every partition in exactly one file.
        let store = streamhouse_log::Store::open(&path).expect("store");
        let files = streamhouse_connectors::sink::parquet::files(&store)
            .await
            .expect("files");
        let mut checked = true;
        for (p, end) in ends.iter().enumerate() {
            let mut at = 0;
            for (_, first, last) in files.iter().filter(|f| f.0 as usize == p) {
                checked &= *first == at;
                at = *last;
            }
            checked &= at == *end;
        }
        (checked, files.len())
    } else {
        // Each partition's commits end at its end.
        let committed =
            streamhouse_connectors::sink::delta::committed(&path, "lake", ends.len() as u32)
                .await
                .expect("delta table");
        let checked = committed
            .iter()
            .zip(&ends)
            .all(|(c, e)| c.unwrap_or(0) == *e);
        let files = std::fs::read_dir(out.path())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                    .count()
            })
            .unwrap_or(0);
        (checked, files)
    };
    db.execute("DROP SINK lake").await.expect("drop sink");
    log.shutdown().await;
    Row {
        scenario: format!(
            "sink: stream -> {format}, catch-up (cpu {cpu:.1}s, {files} files, {:.0} MiB)",
            bytes as f64 / (1 << 20) as f64
        ),
        rows: n as u64,
        seconds: secs,
        bytes: n as u64 * 24,
        peak_mib: Some(peak),
        note: Some(if checked {
            "every offset copied once".into()
        } else {
            "THE DESTINATION DOES NOT HOLD EVERY OFFSET ONCE".into()
        }),
        ..Default::default()
    }
}
