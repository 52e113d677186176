//! Transaction blocks through the SQL layer over a real log (local
//! directory + SQLite), two sessions side by side: what a block writes is
//! visible to others at COMMIT, all at once, or never.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use futures::TryStreamExt;
use streamhouse_log::{DataDir, Log};
use streamhouse_sql::{Database, QueryResult, Session, SqlError};
use tempfile::TempDir;

struct Env {
    db: Database,
    log: Arc<Log>,
    _dir: TempDir,
    _dd: DataDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let dd = DataDir::open(dir.path()).unwrap();
    let log = Arc::new(dd.open_log().await.unwrap());
    let db = Database::open(log.clone()).await.unwrap();
    let e = Env {
        db,
        log,
        _dir: dir,
        _dd: dd,
    };
    let s = Session::default();
    run(
        &e,
        &s,
        "CREATE STREAM a (id BIGINT, note TEXT) WITH (partitions = 3)",
    )
    .await;
    run(&e, &s, "CREATE STREAM b (id BIGINT)").await;
    e
}

/// Runs one statement in `session`.
async fn exec(e: &Env, session: &Session, sql: &str) -> Result<QueryResult, SqlError> {
    let mut stmts = e.db.parse(sql)?;
    assert_eq!(stmts.len(), 1, "{sql}");
    e.db.execute_statement(session, stmts.remove(0)).await
}

/// Runs a statement that must succeed; its command tag, or "rows".
async fn run(e: &Env, session: &Session, sql: &str) -> String {
    match exec(e, session, sql)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
    {
        QueryResult::Command(tag) => tag.to_string(),
        QueryResult::Rows(_) => "rows".into(),
        _ => "other".into(),
    }
}

/// The SQLSTATE a statement fails with.
async fn fails(e: &Env, session: &Session, sql: &str) -> &'static str {
    match exec(e, session, sql).await {
        Ok(_) => panic!("{sql}: succeeded"),
        Err(err) => err.sqlstate(),
    }
}

/// `SELECT count(*) FROM stream` as `session` sees it.
async fn count(e: &Env, session: &Session, stream: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {stream}");
    let QueryResult::Rows(rows) = exec(e, session, &sql).await.unwrap() else {
        panic!("rows");
    };
    let b: Vec<RecordBatch> = rows.try_collect().await.unwrap();
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Rows of a stream in the log (what every reader sees).
async fn committed(e: &Env, stream: &str) -> u64 {
    e.log.partition_ends(stream).await.unwrap().iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_makes_a_blocks_writes_to_several_streams_visible_together() {
    let e = env().await;
    let (me, other) = (Session::default(), Session::default());
    assert_eq!(run(&e, &me, "BEGIN").await, "BEGIN");
    run(&e, &me, "INSERT INTO a VALUES (1, 'x'), (2, 'y'), (3, 'z')").await;
    run(&e, &me, "INSERT INTO b SELECT id * 10 FROM a").await;
    // Reads in the block see its writes (INSERT … SELECT did too); others
    // and the log see nothing yet.
    assert_eq!(count(&e, &me, "a").await, 3);
    assert_eq!(count(&e, &me, "b").await, 3);
    let QueryResult::Rows(rows) =
        exec(&e, &me, "SELECT sum(b.id) AS s, min(b._offset) AS o FROM b")
            .await
            .unwrap()
    else {
        panic!("rows")
    };
    let b: Vec<RecordBatch> = rows.try_collect().await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 60);
    assert_eq!(
        b[0].column(1).as_primitive::<Int64Type>().value(0),
        -1,
        "uncommitted rows have no offset yet"
    );
    assert_eq!(count(&e, &other, "a").await, 0);
    assert_eq!((committed(&e, "a").await, committed(&e, "b").await), (0, 0));
    assert_eq!(run(&e, &me, "COMMIT").await, "COMMIT");
    assert_eq!((committed(&e, "a").await, committed(&e, "b").await), (3, 3));
    assert_eq!(count(&e, &other, "b").await, 3);
    // After COMMIT the session is back to one statement at a time.
    run(&e, &me, "INSERT INTO a VALUES (4, 'w')").await;
    assert_eq!(committed(&e, "a").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_a_failed_block_and_a_dropped_session_write_nothing() {
    let e = env().await;
    let s = Session::default();
    run(&e, &s, "BEGIN").await;
    run(&e, &s, "INSERT INTO a VALUES (1, 'x')").await;
    assert_eq!(run(&e, &s, "ROLLBACK").await, "ROLLBACK");
    assert_eq!(count(&e, &s, "a").await, 0);

    // A failed statement fails the block: everything but its end is
    // refused, and COMMIT rolls back.
    run(&e, &s, "START TRANSACTION").await;
    run(&e, &s, "INSERT INTO a VALUES (1, 'x')").await;
    assert_eq!(
        fails(&e, &s, "INSERT INTO a VALUES ('not a number', 'x')").await,
        "22P02"
    );
    assert_eq!(fails(&e, &s, "INSERT INTO b VALUES (1)").await, "25P02");
    assert_eq!(fails(&e, &s, "SELECT * FROM nowhere").await, "25P02");
    assert_eq!(run(&e, &s, "COMMIT").await, "ROLLBACK");
    assert_eq!((committed(&e, "a").await, committed(&e, "b").await), (0, 0));

    // A session that ends mid-block (its connection dropped) leaves nothing.
    let gone = Session::default();
    run(&e, &gone, "BEGIN").await;
    run(&e, &gone, "INSERT INTO a VALUES (9, 'lost')").await;
    drop(gone);
    assert_eq!(committed(&e, "a").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_keep_or_discard_the_writes_after_them() {
    let e = env().await;
    let s = Session::default();
    assert_eq!(fails(&e, &s, "SAVEPOINT p").await, "25P01");
    run(&e, &s, "BEGIN").await;
    run(&e, &s, "INSERT INTO a VALUES (1, 'kept')").await;
    assert_eq!(run(&e, &s, "SAVEPOINT p").await, "SAVEPOINT");
    run(&e, &s, "INSERT INTO a VALUES (2, 'discarded')").await;
    run(&e, &s, "INSERT INTO b VALUES (2)").await;
    // PostgreSQL's tag for ROLLBACK TO SAVEPOINT is ROLLBACK.
    assert_eq!(run(&e, &s, "ROLLBACK TO SAVEPOINT p").await, "ROLLBACK");
    assert_eq!(count(&e, &s, "a").await, 1);
    assert_eq!(count(&e, &s, "b").await, 0);
    // An error after a savepoint: rolling back to it revives the block.
    run(&e, &s, "INSERT INTO a VALUES (3, 'kept')").await;
    run(&e, &s, "SAVEPOINT q").await;
    assert_eq!(
        fails(&e, &s, "INSERT INTO a VALUES (1, 'x', 'extra')").await,
        "42601"
    );
    assert_eq!(
        fails(&e, &s, "INSERT INTO a VALUES (4, 'x')").await,
        "25P02"
    );
    run(&e, &s, "ROLLBACK TO q").await;
    run(&e, &s, "INSERT INTO a VALUES (5, 'kept')").await;
    assert_eq!(run(&e, &s, "RELEASE SAVEPOINT p").await, "RELEASE");
    assert_eq!(run(&e, &s, "COMMIT").await, "COMMIT");
    let QueryResult::Rows(rows) = exec(&e, &s, "SELECT id FROM a ORDER BY id").await.unwrap()
    else {
        panic!("rows")
    };
    let b: Vec<RecordBatch> = rows.try_collect().await.unwrap();
    let ids: Vec<i64> = b
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, [1, 3, 5]);
    assert_eq!(committed(&e, "b").await, 0);

    // A savepoint released (here with the one before it) or never made
    // fails the block, as in PostgreSQL.
    run(&e, &s, "BEGIN").await;
    run(&e, &s, "SAVEPOINT p").await;
    run(&e, &s, "SAVEPOINT q").await;
    run(&e, &s, "RELEASE p").await;
    assert_eq!(fails(&e, &s, "ROLLBACK TO q").await, "3B001");
    assert_eq!(
        fails(&e, &s, "INSERT INTO a VALUES (6, 'x')").await,
        "25P02"
    );
    assert_eq!(run(&e, &s, "ROLLBACK").await, "ROLLBACK");
    assert_eq!(committed(&e, "a").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_in_a_block_is_refused_and_the_block_goes_on() {
    let e = env().await;
    let s = Session::default();
    run(&e, &s, "BEGIN").await;
    run(&e, &s, "INSERT INTO a VALUES (1, 'x')").await;
    for ddl in [
        "CREATE STREAM c (id BIGINT)",
        "DROP STREAM b",
        "CREATE MATERIALIZED VIEW v AS SELECT count(*) AS n FROM a",
        "DROP MATERIALIZED VIEW IF EXISTS v",
    ] {
        let err = exec(&e, &s, ddl).await.map(|_| ()).unwrap_err();
        assert_eq!(err.sqlstate(), "25001", "{ddl}: {err}");
        assert!(
            err.to_string().contains("inside a transaction block"),
            "{err}"
        );
    }
    // Reads and settings still run, and the writes commit.
    assert_eq!(run(&e, &s, "SET application_name = 'tx'").await, "SET");
    assert_eq!(run(&e, &s, "SHOW STREAMS").await, "rows");
    assert_eq!(run(&e, &s, "COMMIT").await, "COMMIT");
    assert_eq!(committed(&e, "a").await, 1);
    assert_eq!(e.log.streams().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_over_its_buffer_size_fails_and_writes_nothing() {
    let e = env().await;
    let s = Session::default();
    assert_eq!(
        fails(&e, &s, "SET transaction_buffer_size = 'lots'").await,
        "22P02"
    );
    run(&e, &s, "SET transaction_buffer_size = '64kB'").await;
    run(&e, &s, "BEGIN").await;
    run(&e, &s, "INSERT INTO a VALUES (1, 'small')").await;
    let big = format!(
        "INSERT INTO a SELECT value, repeat('x', 100) FROM generate_series(1, {}) AS t(value)",
        10_000
    );
    let err = exec(&e, &s, &big).await.map(|_| ()).unwrap_err();
    assert_eq!(err.sqlstate(), "54000", "{err}");
    assert!(err.to_string().contains("transaction_buffer_size"), "{err}");
    assert_eq!(
        fails(&e, &s, "INSERT INTO a VALUES (2, 'x')").await,
        "25P02"
    );
    assert_eq!(run(&e, &s, "COMMIT").await, "ROLLBACK");
    assert_eq!(committed(&e, "a").await, 0);
    // Outside a block the limit does not apply.
    run(&e, &s, &big).await;
    assert_eq!(committed(&e, "a").await, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_before_commit_fails_the_whole_block() {
    let e = env().await;
    let (s, other) = (Session::default(), Session::default());
    run(&e, &s, "BEGIN").await;
    run(&e, &s, "INSERT INTO a VALUES (1, 'x')").await;
    run(&e, &s, "INSERT INTO b VALUES (1)").await;
    run(&e, &other, "DROP STREAM b").await;
    let err = exec(&e, &s, "COMMIT").await.map(|_| ()).unwrap_err();
    assert_eq!(err.sqlstate(), "42P01", "{err}");
    assert_eq!(committed(&e, "a").await, 0, "nothing of the block");
    // The block is over.
    run(&e, &s, "INSERT INTO a VALUES (2, 'y')").await;
    assert_eq!(committed(&e, "a").await, 1);
}
