//! Materialized-view scenarios: a tumbling-window `count(*), sum(x) GROUP
//! BY key, window` view over 10 M events with 10,000 keys — catching up
//! with events already in the log, and keeping up with them while they are
//! ingested (events/s, CPU time included); freshness — from an acknowledged
//! INSERT to the row being counted by a `count(*)` view; and a view with
//! 10 M distinct groups (peak resident memory while it is built).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use hdrhistogram::Histogram;
use streamhouse_log::{AppendOptions, DataDir};
use streamhouse_sql::Database;

use crate::{Args, Row, cpu_seconds, resident_mib};

async fn count(db: &Database, sql: &str) -> i64 {
    let b = crate::collect(db, sql).await;
    b.first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0)
}

const STREAM: &str = "(k BIGINT NOT NULL, x DOUBLE PRECISION NOT NULL, ts TIMESTAMP NOT NULL, \
     WATERMARK FOR ts AS ts - INTERVAL '4 seconds') WITH (partitions = 4)";

/// Appends `n` events to `stream`: 1,000 per second of event time, keys
/// `i * 7919 % keys`, in 100,000-row appends, 8 in flight.
pub async fn ingest(log: &Arc<streamhouse_log::Log>, stream: &str, n: usize, keys: i64) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("x", DataType::Float64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]));
    // 10 M events, 1,000 per second of event time (so ~167 one-minute
    // windows), keys spread over 10,000.
    let chunk = 100_000usize;
    let mut tasks = Vec::new();
    for start in (0..n).step_by(chunk) {
        let ids = start as i64..(start + chunk).min(n) as i64;
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    ids.clone().map(|i| i * 7919 % keys),
                )),
                Arc::new(Float64Array::from_iter_values(
                    ids.clone().map(|i| (i % 100) as f64),
                )),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    ids.map(|i| 1_767_225_600_000_000 + i * 1_000),
                )),
            ],
        )
        .expect("batch");
        let log = log.clone();
        let stream = stream.to_string();
        tasks.push(tokio::spawn(async move {
            log.append(&stream, b, AppendOptions::default())
                .await
                .expect("append")
        }));
        if tasks.len() == 8 {
            for t in tasks.drain(..) {
                t.await.expect("append task");
            }
        }
    }
    for t in tasks {
        t.await.expect("append task");
    }
}

/// Input rows a view has not consumed yet (SHOW MATERIALIZED VIEWS).
pub async fn lag(db: &Database, view: &str) -> i64 {
    let b = crate::collect(db, "SHOW MATERIALIZED VIEWS").await;
    for b in &b {
        let names = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("names");
        let lags = b
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("lags");
        if let Some(i) = (0..b.num_rows()).find(|&i| names.value(i) == view) {
            return lags.value(i);
        }
    }
    panic!("no view {view}")
}

pub async fn scenarios(args: &Args) -> Vec<Row> {
    let wanted = |name: &str| args.filter.as_deref().is_none_or(|f| name.contains(f));
    let mut rows = Vec::new();
    let n = args.group_rows;
    let keys = 10_000i64;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dd = DataDir::open(tmp.path()).expect("data dir");
    let log = Arc::new(dd.open_log().await.expect("log"));
    let db = Database::open(log.clone()).await.expect("database");
    if wanted("view live") {
        rows.push(live(&db, &log, n, keys).await);
    }
    if wanted("view distinct") {
        rows.push(distinct_keys(&db, &log, n).await);
    }
    if !wanted("view catch-up") && !wanted("view freshness") {
        log.shutdown().await;
        return rows;
    }
    db.execute(&format!("CREATE STREAM ev {STREAM}"))
        .await
        .expect("create stream");
    ingest(&log, "ev", n, keys).await;

    let (cpu0, start) = (cpu_seconds(), Instant::now());
    db.execute(
        "CREATE MATERIALIZED VIEW per_minute AS SELECT window_start, k, count(*) AS n, sum(x) AS s \
         FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start, k",
    )
    .await
    .expect("create view");
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let total = count(&db, "SELECT sum(n) FROM per_minute").await;
    assert_eq!(total as usize, n);
    eprintln!(
        "view over {n} events: {:.0} events/s, {:.0} events/s per CPU-second",
        n as f64 / secs,
        n as f64 / cpu
    );
    rows.push(Row {
        scenario: format!("view catch-up: tumble count+sum, {keys} keys (cpu {cpu:.1}s)"),
        rows: n as u64,
        seconds: secs,
        bytes: n as u64 * 24,
        latency: None,
        ..Default::default()
    });

    // Freshness: INSERT one row (acknowledged = durable), then poll a
    // count(*) view until it counts it.
    db.execute("CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n FROM ev")
        .await
        .expect("create count view");
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut expected = count(&db, "SELECT n FROM total").await;
    let probes = 200;
    let start = Instant::now();
    for i in 0..probes {
        let t0 = Instant::now();
        db.execute(&format!(
            "INSERT INTO ev VALUES ({i}, 1.0, TIMESTAMP '2026-06-01 00:00:00')"
        ))
        .await
        .expect("insert");
        expected += 1;
        loop {
            if count(&db, "SELECT n FROM total").await >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        hist.record(t0.elapsed().as_micros() as u64)
            .expect("record");
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    eprintln!(
        "view freshness (INSERT acknowledged -> counted): p50 {:.2} ms, p99 {:.2} ms",
        ms(0.5),
        ms(0.99)
    );
    rows.push(Row {
        scenario: "view freshness: INSERT -> count(*) view".into(),
        rows: probes,
        seconds: start.elapsed().as_secs_f64(),
        bytes: 0,
        latency: Some((ms(0.5), ms(0.99))),
        ..Default::default()
    });
    log.shutdown().await;
    rows
}

/// The view exists first; 10 M events are ingested while it runs. Events/s
/// from the first append until the view has counted every event.
async fn live(db: &Database, log: &Arc<streamhouse_log::Log>, n: usize, keys: i64) -> Row {
    db.execute(&format!("CREATE STREAM live {STREAM}"))
        .await
        .expect("create stream");
    db.execute(
        "CREATE MATERIALIZED VIEW live_minute AS SELECT window_start, window_end, k, count(*) AS n, \
         sum(x) AS s FROM TUMBLE(live, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, k",
    )
    .await
    .expect("create view");
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    ingest(log, "live", n, keys).await;
    let ingested = start.elapsed().as_secs_f64();
    // Poll the lag (reading the whole view every few ms would cost more
    // than maintaining it).
    while lag(db, "live_minute").await > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!(
        count(db, "SELECT sum(n) FROM live_minute").await as usize,
        n
    );
    eprintln!(
        "view live: {n} events ingested in {ingested:.2}s, counted by the view after {secs:.2}s: \
         {:.0} events/s ({cpu:.1} CPU-s for ingest and view)",
        n as f64 / secs
    );
    Row {
        scenario: format!("view live: ingest + tumble view, {keys} keys (cpu {cpu:.1}s)"),
        rows: n as u64,
        seconds: secs,
        bytes: n as u64 * 24,
        latency: None,
        ..Default::default()
    }
}

/// A view with `n` distinct groups over events already in the log; the
/// peak resident memory while it is built (the peak is reset after the
/// ingest).
async fn distinct_keys(db: &Database, log: &Arc<streamhouse_log::Log>, n: usize) -> Row {
    db.execute(&format!("CREATE STREAM wide {STREAM}"))
        .await
        .expect("create stream");
    ingest(log, "wide", n, i64::MAX).await;
    // Writing 5 to clear_refs resets the peak resident size (VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (base, _) = resident_mib();
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    db.execute(
        "CREATE MATERIALIZED VIEW per_key AS SELECT k, count(*) AS n, sum(x) AS s FROM wide GROUP BY k",
    )
    .await
    .expect("create view");
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let groups = count(db, "SELECT count(*) FROM per_key").await;
    assert_eq!(groups as usize, n);
    let (rss, peak) = resident_mib();
    eprintln!(
        "view distinct: {n} groups in {secs:.1}s ({cpu:.1} CPU-s); resident before {base:.0} MiB \
         (the log's chunk cache holds up to 256 MiB), after {rss:.0} MiB, peak {peak:.0} MiB"
    );
    Row {
        scenario: format!("view distinct: {n} groups, peak RSS {peak:.0} MiB"),
        rows: n as u64,
        seconds: secs,
        bytes: n as u64 * 24,
        latency: None,
        ..Default::default()
    }
}
