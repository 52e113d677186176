//! CDC scenario: a PostgreSQL source following a table while it changes.
//! A fresh upstream database (the test command's PostgreSQL, wal_level =
//! logical) with one table `(id bigint primary key, v text, n int)` in a
//! publication; `CREATE SOURCE` over it (an empty snapshot), then
//! `--group-rows / 10` rows (1 M by default) inserted upstream in
//! transactions of 50,000 and then all of them updated the same way — 2 M
//! changes — timed from the first upstream statement until the source has
//! appended every change (changes/s end to end: the upstream writes run at
//! the same time), and checked: the stream holds each change once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use streamhouse_log::DataDir;
use streamhouse_sql::Database;

use crate::{Args, Row, cpu_seconds, resident_mib};

/// One row of a query's first column as i64 (`None`: NULL or no row).
async fn scalar(db: &Database, sql: &str, column: usize) -> Option<i64> {
    let b = crate::collect(db, sql).await;
    let values = b
        .first()?
        .column(column)
        .as_any()
        .downcast_ref::<Int64Array>()?;
    (!values.is_empty() && values.is_valid(0)).then(|| values.value(0))
}

pub async fn scenarios(args: &Args) -> Vec<Row> {
    let Ok(pg) = std::env::var("STREAMHOUSE_TEST_POSTGRES") else {
        eprintln!(
            "the CDC scenario needs STREAMHOUSE_TEST_POSTGRES (a PostgreSQL with wal_level = \
             logical, as ./scripts/test starts it); not run"
        );
        return Vec::new();
    };
    let n = (args.group_rows / 10).max(50_000) as i64;
    let name = format!("cdc_bench_{}", std::process::id());
    let (admin, conn) = tokio_postgres::connect(&format!("{pg}/postgres"), tokio_postgres::NoTls)
        .await
        .expect("upstream");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let url = format!("{pg}/{name}");
    let (up, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("upstream database");
    tokio::spawn(conn);
    up.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text, n int); \
         CREATE PUBLICATION bench FOR TABLE t",
    )
    .await
    .expect("upstream table");

    let tmp = tempfile::tempdir().expect("tempdir");
    let dd = DataDir::open(tmp.path()).expect("data dir");
    let log = Arc::new(dd.open_log().await.expect("log"));
    let db = Database::open(log.clone()).await.expect("database");
    db.execute(&format!(
        "CREATE SOURCE bench FROM POSTGRES WITH (url = '{url}', publication = 'bench', \
         poll_interval = '10ms')"
    ))
    .await
    .expect("create source");

    crate::reset_peak_memory();
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let step = 50_000i64;
    for sql in [
        "INSERT INTO t SELECT g, md5(g::text), (g % 1000)::int FROM generate_series({a}, {b}) g",
        "UPDATE t SET n = n + 1 WHERE id BETWEEN {a} AND {b}",
    ] {
        let mut a = 1;
        while a <= n {
            let b = (a + step - 1).min(n);
            let statement = sql
                .replace("{a}", &a.to_string())
                .replace("{b}", &b.to_string());
            up.batch_execute(&statement).await.expect("upstream change");
            a = b + 1;
        }
    }
    let upstream_secs = start.elapsed().as_secs_f64();
    let want = 2 * n;
    let deadline = Instant::now() + Duration::from_secs(600);
    while scalar(&db, "SELECT rows_written FROM streamhouse.sources", 0).await != Some(want) {
        assert!(Instant::now() < deadline, "the source did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, peak) = resident_mib();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    // Each change once in the table's log (an insert and an update of each
    // row differ in `n`), and the table reads as upstream has it.
    let distinct = scalar(
        &db,
        "SELECT count(*) FROM (SELECT DISTINCT id, n FROM \"__table__t\")",
        0,
    )
    .await;
    let current = scalar(&db, "SELECT count(*) FROM t WHERE n = id % 1000 + 1", 0).await;
    db.execute("DROP SOURCE bench").await.expect("drop source");
    log.shutdown().await;
    drop(up);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await;
    vec![Row {
        scenario: format!(
            "cdc: PostgreSQL inserts + updates -> table, end to end (upstream writes took \
             {upstream_secs:.1}s; cpu {cpu:.1}s)"
        ),
        rows: want as u64,
        seconds: secs,
        bytes: 0,
        peak_mib: Some(peak),
        note: Some(if distinct == Some(want) && current == Some(n) {
            "each change once; the table as upstream".into()
        } else {
            format!(
                "CHANGES MISSING OR REPEATED: {distinct:?} distinct of {want}, {current:?} \
                 current rows of {n}"
            )
        }),
        ..Default::default()
    }]
}
