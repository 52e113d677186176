//! What the view tests share: a database on a fresh data directory (and
//! its restart), results as sorted lines, waiting until a view or its
//! changelog equals a bounded query, and the users/orders/regions streams.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use streamhouse_log::{DataDir, Log};
use streamhouse_sql::{Database, QueryResult};
use tempfile::TempDir;

pub struct Env {
    pub db: Database,
    pub log: Arc<Log>,
    pub dir: TempDir,
    pub _dd: DataDir,
}

pub async fn open_in(dir: TempDir) -> Env {
    let dd = DataDir::open(dir.path()).unwrap();
    let log = Arc::new(dd.open_log().await.unwrap());
    let db = Database::open(log.clone()).await.unwrap();
    Env {
        db,
        log,
        dir,
        _dd: dd,
    }
}

/// Shuts the database down cleanly and opens it again on the same
/// directory.
pub async fn restart(e: Env) -> Env {
    e.log.shutdown().await;
    let Env { dir, db, log, _dd } = e;
    drop((db, log, _dd));
    open_in(dir).await
}

pub async fn rows(db: &Database, sql: &str) -> Vec<RecordBatch> {
    let mut results = db
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    match results.pop().expect("a statement") {
        QueryResult::Rows(s) => s.try_collect().await.unwrap(),
        other => panic!("{sql}: expected rows, got {other:?}"),
    }
}

/// Sorted text lines of a result, for order-insensitive comparison.
pub async fn lines(db: &Database, sql: &str) -> Vec<String> {
    let b = rows(db, sql).await;
    let text = pretty_format_batches(&b).unwrap().to_string();
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

/// Waits until the view shows what the bounded query computes.
pub async fn converges(db: &Database, view: &str, reference: &str) {
    converges_to(db, &format!("SELECT * FROM {view}"), reference).await
}

/// Waits until query `got` answers what the bounded query computes.
pub async fn converges_to(db: &Database, got: &str, reference: &str) {
    let want = lines(db, reference).await;
    // An empty reference would let an empty (or stuck) view pass.
    assert!(
        !want.is_empty(),
        "the reference query returned no rows, so comparing {got} with it proves nothing: {reference}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let have = lines(db, got).await;
        if have == want {
            return;
        }
        if Instant::now() > deadline {
            panic!("{got} did not converge:\n got {have:#?}\nwant {want:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The users, orders and regions streams the join views read.
pub async fn create_join_streams(db: &Database) {
    for create in [
        "CREATE STREAM users (id BIGINT NOT NULL, region TEXT, ts TIMESTAMP) \
         WITH (partitions = 2, key = 'id')",
        "CREATE STREAM orders (id BIGINT NOT NULL, user_id BIGINT, amount DOUBLE PRECISION, \
         ts TIMESTAMP) WITH (partitions = 3)",
        "CREATE STREAM regions (region TEXT, label TEXT)",
    ] {
        db.execute(create).await.unwrap();
    }
}

pub async fn insert_join_rows(db: &Database, from: i64, n: i64) {
    // Users arrive interleaved with their orders: some orders come before
    // their user, some users never order, some orders have no user.
    let users: Vec<String> = (from..from + n)
        .filter(|i| i % 3 != 2)
        .map(|i| {
            format!(
                "({i}, 'r{}', TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{}' SECOND)",
                i % 4,
                i % 50
            )
        })
        .collect();
    let orders: Vec<String> = (from * 3..(from + n) * 3)
        .map(|i| {
            let user = if i % 11 == 0 {
                "NULL".to_string()
            } else {
                ((i * 7) % (from + n + 5)).to_string()
            };
            format!(
                "({i}, {user}, {}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{}' SECOND)",
                (i * 13) % 100,
                i % 60
            )
        })
        .collect();
    db.execute(&format!("INSERT INTO orders VALUES {}", orders.join(", ")))
        .await
        .unwrap();
    if !users.is_empty() {
        db.execute(&format!("INSERT INTO users VALUES {}", users.join(", ")))
            .await
            .unwrap();
    }
}

/// Waits until the changelog of `view` (its `columns`) applied in order
/// equals the bounded query `reference`.
pub async fn changelog_converges(db: &Database, view: &str, columns: &str, reference: &str) {
    let want = cells(lines(db, reference).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = cells(applied(db, view, columns).await);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{view}'s changelog did not converge:\n got {got:#?}\nwant {want:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Table lines as their trimmed cells (column widths differ between
/// results).
pub fn cells(lines: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| {
            l.split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort();
    out
}

/// `CREATE MATERIALIZED VIEW … AS sql` is refused with 0A000 naming `words`.
pub async fn refused(db: &Database, sql: &str, words: &str) {
    let err = db
        .execute(&format!("CREATE MATERIALIZED VIEW bad AS {sql}"))
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "0A000", "{sql}: {err}");
    assert!(err.to_string().contains(words), "{sql}: {err}");
}

/// A changelog applied in order (each delete removes a row an earlier insert
/// added), as sorted `op`-less lines.
pub async fn applied(db: &Database, view: &str, columns: &str) -> Vec<String> {
    let b = rows(
        db,
        &format!("SELECT op, {columns} FROM changes({view}) ORDER BY _offset"),
    )
    .await;
    let text = pretty_format_batches(&b).unwrap().to_string();
    let mut live: Vec<String> = Vec::new();
    for l in text.lines().filter(|l| l.starts_with('|')).skip(1) {
        let (op, row) = l[1..].split_once('|').unwrap();
        let row = format!("|{row}");
        match op.trim() {
            "insert" => live.push(row),
            "delete" => {
                let i = live
                    .iter()
                    .position(|r| *r == row)
                    .unwrap_or_else(|| panic!("{view}: delete of a row not present: {row}"));
                live.swap_remove(i);
            }
            other => panic!("bad op {other}"),
        }
    }
    live.sort();
    live
}

/// The one integer a query answers.
pub async fn int(db: &Database, sql: &str) -> i64 {
    let b = rows(db, sql).await;
    let c = arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Int64).unwrap();
    c.as_primitive::<arrow::datatypes::Int64Type>().value(0)
}
