//! Limits a statement runs under, crossed on purpose: each fails with its
//! SQLSTATE, and the session and the database go on.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use futures::TryStreamExt;
use streamhouse_log::DataDir;
use streamhouse_sql::{Database, DatabaseOptions, QueryResult, Session, SqlError};

async fn open() -> (Database, tempfile::TempDir, DataDir) {
    open_with(DatabaseOptions::default()).await
}

async fn open_with(options: DatabaseOptions) -> (Database, tempfile::TempDir, DataDir) {
    let dir = tempfile::tempdir().unwrap();
    let dd = DataDir::open(dir.path()).unwrap();
    let log = Arc::new(dd.open_log().await.unwrap());
    (Database::open_with(log, options).await.unwrap(), dir, dd)
}

/// Runs one statement in `session` and reads all its rows.
async fn run(db: &Database, session: &Session, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    let stmt = db.parse(sql)?.remove(0);
    match db.execute_statement(session, stmt).await? {
        QueryResult::Rows(rows) => Ok(rows.try_collect().await?),
        _ => Ok(Vec::new()),
    }
}

async fn one(db: &Database, session: &Session, sql: &str) -> i64 {
    let b = run(db, session, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn sqlstate(db: &Database, session: &Session, sql: &str) -> &'static str {
    match run(db, session, sql).await {
        Ok(_) => panic!("{sql}: succeeded"),
        Err(e) => e.sqlstate(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_cancels_a_long_query() {
    let (db, _dir, _dd) = open().await;
    let (s, other) = (Session::default(), Session::default());
    assert_eq!(
        sqlstate(&db, &s, "SET statement_timeout = 'soon'").await,
        "22P02"
    );
    run(&db, &s, "SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let started = streamhouse_log::Stopwatch::start();
    let long = "SELECT count(*) FROM generate_series(1, 20000000000) AS t(v) WHERE v % 7 = 3";
    assert_eq!(sqlstate(&db, &s, long).await, "57014");
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    // The session goes on; another session has no timeout.
    assert_eq!(one(&db, &s, "SELECT 41 + 1").await, 42);
    assert_eq!(
        one(&db, &other, "SELECT count(*) FROM generate_series(1, 1000)").await,
        1000
    );
    // A write is not cut short: an append once begun may land, so it is
    // never reported failed by a timeout.
    run(&db, &s, "CREATE STREAM w (v BIGINT)").await.unwrap();
    run(&db, &s, "SET statement_timeout = '1ms'").await.unwrap();
    run(
        &db,
        &s,
        "INSERT INTO w SELECT value FROM generate_series(1, 200000) AS t(value)",
    )
    .await
    .unwrap();
    run(&db, &s, "SET statement_timeout = 0").await.unwrap();
    assert_eq!(one(&db, &s, "SELECT count(*) FROM w").await, 200_000);
    assert_eq!(
        one(&db, &s, "SELECT count(*) FROM generate_series(1, 1000)").await,
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_fails_with_53200() {
    let (db, _dir, _dd) = open().await;
    let s = Session::default();
    run(&db, &s, "SET query_memory_limit = '4MB'")
        .await
        .unwrap();
    // A hash join's build side cannot spill: it must fit.
    let join = "SELECT count(*) FROM generate_series(1, 2000000) AS a(v) \
                JOIN generate_series(1, 2000000) AS b(v) ON a.v = b.v";
    let e = run(&db, &s, join).await.unwrap_err();
    assert_eq!(e.sqlstate(), "53200", "{e}");
    assert!(e.to_string().contains("query_memory_limit"), "{e}");
    run(&db, &s, "RESET query_memory_limit").await.unwrap();
    assert_eq!(one(&db, &s, join).await, 2_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_select_holds_its_rows_within_the_memory_limit() {
    let (db, _dir, _dd) = open().await;
    let s = Session::default();
    run(&db, &s, "CREATE STREAM big (v BIGINT)").await.unwrap();
    run(&db, &s, "SET query_memory_limit = '4MB'")
        .await
        .unwrap();
    // 2 M rows of 8 bytes are held until the append: more than 4 MB.
    let insert = "INSERT INTO big SELECT value FROM generate_series(1, 2000000) AS t(value)";
    let e = run(&db, &s, insert).await.unwrap_err();
    assert_eq!(e.sqlstate(), "53200", "{e}");
    assert_eq!(
        one(&db, &s, "SELECT count(*) FROM big").await,
        0,
        "nothing written"
    );
    run(&db, &s, "RESET query_memory_limit").await.unwrap();
    run(&db, &s, insert).await.unwrap();
    assert_eq!(one(&db, &s, "SELECT count(*) FROM big").await, 2_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_together_stay_within_the_server_pool() {
    let (db, _dir, _dd) = open_with(DatabaseOptions {
        server_query_memory: 4 << 20,
        ..DatabaseOptions::default()
    })
    .await;
    let s = Session::default();
    // The session's own limit (half the machine) would allow the join; the
    // server's pool does not.
    let join = "SELECT count(*) FROM generate_series(1, 2000000) AS a(v) \
                JOIN generate_series(1, 2000000) AS b(v) ON a.v = b.v";
    let e = run(&db, &s, join).await.unwrap_err();
    assert_eq!(e.sqlstate(), "53200", "{e}");
    assert!(e.to_string().contains("server's"), "{e}");
    // What fits still runs.
    assert_eq!(
        one(&db, &s, "SELECT count(*) FROM generate_series(1, 1000)").await,
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_builders_refuse_results_over_a_gigabyte() {
    let (db, _dir, _dd) = open().await;
    let s = Session::default();
    for sql in [
        "SELECT repeat('x', 2000000000)",
        "SELECT lpad('x', 2000000000)",
        "SELECT rpad('x', 2000000000, 'ab')",
        "SELECT repeat('abc', 9223372036854775807)",
        "SELECT length(repeat('x', v * 100000000)) FROM generate_series(1, 100) AS t(v)",
    ] {
        assert_eq!(sqlstate(&db, &s, sql).await, "54000", "{sql}");
    }
    assert_eq!(
        one(&db, &s, "SELECT length(repeat('ab', 1000))::bigint").await,
        2000
    );
    assert_eq!(
        one(&db, &s, "SELECT length(lpad('x', 5, 'yz'))::bigint").await,
        5
    );
}
