//! The SQL layer end to end over a real log (local directory + SQLite):
//! DDL, INSERT, queries, system columns, pruning, and error classes.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use streamhouse_sql::{Database, QueryResult};

use common::{Env, open_in, restart, rows};

async fn env() -> Env {
    open_in(tempfile::tempdir().unwrap()).await
}

/// Output column names of a query.
async fn column_names(db: &Database, sql: &str) -> Vec<String> {
    let b = rows(db, sql).await;
    b[0].schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

async fn table(db: &Database, sql: &str) -> String {
    pretty_format_batches(&rows(db, sql).await)
        .unwrap()
        .to_string()
}

async fn tag(db: &Database, sql: &str) -> String {
    match db
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .pop()
    {
        Some(QueryResult::Command(tag)) => tag.to_string(),
        other => panic!("{sql}: expected a command, got {other:?}"),
    }
}

/// The SQLSTATE and message of a failing statement.
async fn err(db: &Database, sql: &str) -> (String, String) {
    let res = async {
        for r in db.execute(sql).await? {
            if let QueryResult::Rows(s) = r {
                s.try_collect::<Vec<_>>().await?;
            }
        }
        Ok::<_, streamhouse_sql::SqlError>(())
    }
    .await;
    match res {
        Ok(()) => panic!("{sql}: expected an error"),
        Err(e) => (e.sqlstate().to_string(), e.to_string()),
    }
}

fn lines(s: &str) -> String {
    s.trim()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

const ORDERS: &str = "CREATE STREAM orders (
    order_id BIGINT NOT NULL, user_id TEXT, amount DOUBLE PRECISION, ts TIMESTAMP,
    WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (partitions = 4, key = 'user_id', retention = '7 days')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_insert_select_round_trip() {
    let e = env().await;
    assert_eq!(tag(&e.db, ORDERS).await, "CREATE STREAM");
    assert_eq!(
        tag(
            &e.db,
            "INSERT INTO orders VALUES (1, 'ann', 10.5, '2026-01-01 10:00:00'), \
             (2, 'bob', 20.0, '2026-01-01 10:00:01'), (3, 'ann', 7.25, '2026-01-01 10:00:02')"
        )
        .await,
        "INSERT 0 3"
    );
    assert_eq!(
        lines(&table(&e.db, "SELECT * FROM orders ORDER BY order_id").await),
        lines(
            "
+----------+---------+--------+---------------------+
| order_id | user_id | amount | ts                  |
+----------+---------+--------+---------------------+
| 1        | ann     | 10.5   | 2026-01-01T10:00:00 |
| 2        | bob     | 20.0   | 2026-01-01T10:00:01 |
| 3        | ann     | 7.25   | 2026-01-01T10:00:02 |
+----------+---------+--------+---------------------+"
        )
    );
    // Named system columns: one partition per user, dense offsets.
    let t = table(
        &e.db,
        "SELECT user_id, count(DISTINCT _partition) AS parts, min(_offset) AS first, \
         max(_offset) AS last, count(*) AS n FROM orders GROUP BY user_id ORDER BY user_id",
    )
    .await;
    assert_eq!(
        lines(&t),
        lines(
            "
+---------+-------+-------+------+---+
| user_id | parts | first | last | n |
+---------+-------+-------+------+---+
| ann     | 1     | 0     | 1    | 2 |
| bob     | 1     | 0     | 0    | 1 |
+---------+-------+-------+------+---+"
        )
    );
    let b = rows(&e.db, "SELECT _timestamp FROM orders").await;
    assert_eq!(
        b[0].schema().field(0).data_type().to_string(),
        "Timestamp(µs, \"UTC\")"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_column_lists_and_casts() {
    let e = env().await;
    e.db.execute(ORDERS).await.unwrap();
    e.db.execute(
        "CREATE STREAM big (order_id BIGINT NOT NULL, amount DOUBLE PRECISION, note TEXT)",
    )
    .await
    .unwrap();
    e.db.execute("INSERT INTO orders (order_id, amount) VALUES (1, 5), (2, 15), (3, 25)")
        .await
        .unwrap();
    assert_eq!(
        tag(
            &e.db,
            "INSERT INTO big SELECT order_id, amount FROM orders WHERE amount > 10"
        )
        .await,
        "INSERT 0 2"
    );
    assert_eq!(
        lines(&table(&e.db, "SELECT * FROM big ORDER BY order_id").await),
        lines(
            "
+----------+--------+------+
| order_id | amount | note |
+----------+--------+------+
| 2        | 15.0   |      |
| 3        | 25.0   |      |
+----------+--------+------+"
        )
    );
    // Strings cast to the column types; NULL where no value was given.
    e.db.execute("INSERT INTO orders VALUES ('4', NULL, '1.5', '2026-02-03 04:05:06')")
        .await
        .unwrap();
    assert_eq!(
        lines(
            &table(
                &e.db,
                "SELECT order_id, user_id, amount, ts FROM orders WHERE order_id = 4"
            )
            .await
        ),
        lines(
            "
+----------+---------+--------+---------------------+
| order_id | user_id | amount | ts                  |
+----------+---------+--------+---------------------+
| 4        |         | 1.5    | 2026-02-03T04:05:06 |
+----------+---------+--------+---------------------+"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_describe_drop() {
    let e = env().await;
    e.db.execute(ORDERS).await.unwrap();
    e.db.execute("CREATE STREAM IF NOT EXISTS orders (x INT)")
        .await
        .unwrap();
    e.db.execute("INSERT INTO orders (order_id, user_id) VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    assert_eq!(
        lines(&table(&e.db, "SHOW STREAMS").await),
        lines(
            "
+--------+------------+---------+------------+-----------------+-----------+------+
| name   | partitions | key     | event_time | watermark_delay | retention | rows |
+--------+------------+---------+------------+-----------------+-----------+------+
| orders | 4          | user_id | ts         | 5s              | 7days     | 2    |
+--------+------------+---------+------------+-----------------+-----------+------+"
        )
    );
    assert_eq!(
        lines(&table(&e.db, "DESCRIBE orders").await),
        lines(
            "
+-------------+------------------+-------------+--------------------------+
| column_name | data_type        | is_nullable | note                     |
+-------------+------------------+-------------+--------------------------+
| order_id    | bigint           | NO          |                          |
| user_id     | text             | YES         | key                      |
| amount      | double precision | YES         |                          |
| ts          | timestamp        | YES         | event time, watermark 5s |
| _partition  | integer          | NO          | system                   |
| _offset     | bigint           | NO          | system                   |
| _timestamp  | timestamptz      | NO          | system                   |
+-------------+------------------+-------------+--------------------------+"
        )
    );
    assert_eq!(tag(&e.db, "DROP STREAM orders").await, "DROP STREAM");
    assert_eq!(err(&e.db, "SELECT * FROM orders").await.0, "42P01");
    assert_eq!(
        tag(&e.db, "DROP STREAM IF EXISTS orders").await,
        "DROP STREAM"
    );
    assert_eq!(err(&e.db, "DROP STREAM orders").await.0, "42P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_of_datafusion_sql_works_over_streams() {
    let e = env().await;
    e.db.execute(ORDERS).await.unwrap();
    e.db.execute("CREATE STREAM users (user_id TEXT, country TEXT)")
        .await
        .unwrap();
    e.db.execute(
        "INSERT INTO orders (order_id, user_id, amount) VALUES (1,'a',10),(2,'b',20),(3,'a',30),(4,'c',40); \
         INSERT INTO users VALUES ('a','FR'),('b','DE'),('c','FR')",
    )
    .await
    .unwrap();
    let t = table(
        &e.db,
        "WITH totals AS (SELECT user_id, sum(amount) AS total FROM orders GROUP BY user_id) \
         SELECT u.country, sum(t.total) AS revenue, \
                rank() OVER (ORDER BY sum(t.total) DESC) AS r \
         FROM totals t JOIN users u ON t.user_id = u.user_id \
         WHERE u.country IN (SELECT country FROM users) \
         GROUP BY u.country ORDER BY revenue DESC",
    )
    .await;
    assert_eq!(
        lines(&t),
        lines(
            "
+---------+---------+---+
| country | revenue | r |
+---------+---------+---+
| FR      | 80.0    | 1 |
| DE      | 20.0    | 2 |
+---------+---------+---+"
        )
    );
    // `*` over a join shows each side's declared columns only.
    let names = column_names(
        &e.db,
        "SELECT * FROM orders o JOIN users u ON o.user_id = u.user_id LIMIT 1",
    )
    .await;
    assert_eq!(
        names,
        ["order_id", "user_id", "amount", "ts", "user_id", "country"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_prune_chunks_before_any_get() {
    let e = env().await;
    e.db.execute(
        "CREATE STREAM p (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (partitions = 3)",
    )
    .await
    .unwrap();
    // Each INSERT is one flush: one chunk per statement, round-robin.
    for k in 0..9 {
        e.db.execute(&format!(
            "INSERT INTO p SELECT v, to_timestamp_seconds(1700000000 + {k} * 3600) \
             FROM generate_series({}, {}) AS t(v)",
            k * 10,
            k * 10 + 9
        ))
        .await
        .unwrap();
    }
    let e = restart(e).await; // cold cache: every chunk read is a GET
    let gets = || e.log.store().stats().gets();

    let before = gets();
    let t = table(&e.db, "SELECT count(*) AS n FROM p WHERE _partition = 1").await;
    assert!(t.contains("| 30 |"), "{t}");
    assert_eq!(
        gets() - before,
        0,
        "count(*) needs no column: answered from the index"
    );

    let before = gets();
    let b = rows(
        &e.db,
        "SELECT id FROM p WHERE _partition = 1 AND _offset >= 10 AND _offset < 20",
    )
    .await;
    assert_eq!(b.iter().map(RecordBatch::num_rows).sum::<usize>(), 10);
    assert_eq!(gets() - before, 1, "one partition, one chunk");

    let before = gets();
    let b = rows(
        &e.db,
        "SELECT id FROM p WHERE ts >= to_timestamp_seconds(1700000000 + 4 * 3600) \
         AND ts < to_timestamp_seconds(1700000000 + 5 * 3600)",
    )
    .await;
    let mut ids: Vec<i64> = b
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (40..50).collect::<Vec<_>>());
    assert_eq!(
        gets() - before,
        1,
        "event-time bounds pick one chunk of nine"
    );

    let plan = table(
        &e.db,
        "EXPLAIN SELECT id FROM p WHERE _partition = 2 AND _offset > 5",
    )
    .await;
    assert!(
        plan.contains("StreamScanExec: stream=p, partitions=[2], offsets=6.., projection=[id"),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstates() {
    let e = env().await;
    e.db.execute(ORDERS).await.unwrap();
    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM nope", "42P01"),
        ("SELECT nope FROM orders", "42703"),
        ("SELECT no_such_fn(1)", "42883"),
        (ORDERS, "42P07"),
        ("INSERT INTO nope VALUES (1)", "42P01"),
        ("INSERT INTO orders (nope) VALUES (1)", "42703"),
        (
            "INSERT INTO orders VALUES ('x', 'a', 1, '2026-01-01')",
            "22P02",
        ),
        ("INSERT INTO orders (user_id) VALUES ('a')", "23502"),
        (
            "INSERT INTO orders VALUES (1, 'a', 1, '2026-01-01', 5)",
            "42601",
        ),
        ("INSERT INTO orders (_offset) VALUES (1)", "22P02"),
        ("CREATE STREAM s (a INT) WITH (partitions = 0)", "42P16"),
        ("CREATE STREAM s (a INT, WATERMARK FOR a AS a)", "42P16"),
        ("CREATE STREAM s (g GEOMETRY)", "0A000"),
        // Checked before narrowing (266 used to become 10).
        ("CREATE STREAM s (n NUMERIC(266, 2))", "42P16"),
        ("CREATE STREAM s (n NUMERIC(10, 300))", "42P16"),
        // A window size past the range (it wrapped to a few nanoseconds).
        (
            "SELECT * FROM tumble(orders, ts, INTERVAL '213504 days')",
            "42000",
        ),
        ("CREATE TABLE t (a INT)", "0A000"),
        ("SELECT 1/0", "22012"),
    ];
    for (sql, code) in cases {
        let (got, msg) = err(&e.db, sql).await;
        assert_eq!(got, code, "{sql}: {msg}");
        if sql.contains("213504 days") {
            assert!(msg.contains("out of range"), "{msg}");
        }
        if sql.contains("NUMERIC(") {
            assert!(msg.contains("must be between"), "{msg}");
        }
    }
    // Nothing was written by any of them.
    let t = table(&e.db, "SELECT count(*) AS n FROM orders").await;
    assert!(t.contains("| 0 |"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters() {
    use datafusion::common::ScalarValue;
    let e = env().await;
    let session = streamhouse_sql::Session::default();
    e.db.execute(ORDERS).await.unwrap();
    let ins =
        e.db.prepare("INSERT INTO orders (order_id, user_id, amount) VALUES ($1, $2, $3)")
            .await
            .unwrap()
            .unwrap();
    // Typed from the target columns, since VALUES alone gives no types.
    assert_eq!(
        ins.param_types,
        [
            Some(arrow::datatypes::DataType::Int64),
            Some(arrow::datatypes::DataType::Utf8),
            Some(arrow::datatypes::DataType::Float64)
        ]
    );
    assert!(ins.schema.is_none());
    for (id, user, amount) in [(1i64, "a", 1.5f64), (2, "b", 2.5), (3, "a", 3.5)] {
        let params = vec![
            ScalarValue::Int64(Some(id)),
            ScalarValue::Utf8(Some(user.into())),
            ScalarValue::Float64(Some(amount)),
        ];
        match e.db.execute_prepared(&session, &ins, params).await.unwrap() {
            QueryResult::Command(tag) => assert_eq!(tag.to_string(), "INSERT 0 1"),
            other => panic!("{other:?}"),
        }
    }
    let q = e
        .db
        .prepare("SELECT order_id, amount FROM orders WHERE user_id = $1 AND amount > $2 ORDER BY order_id")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        q.param_types,
        [
            Some(arrow::datatypes::DataType::Utf8),
            Some(arrow::datatypes::DataType::Float64)
        ]
    );
    let names: Vec<String> = q
        .schema
        .as_ref()
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["order_id", "amount"]);
    // The same prepared statement, run twice with different values.
    for (user, min, want) in [
        ("a", 0.0, "| 1        | 1.5    |"),
        ("a", 2.0, "| 3        | 3.5    |"),
    ] {
        let r =
            e.db.execute_prepared(
                &session,
                &q,
                vec![
                    ScalarValue::Utf8(Some(user.into())),
                    ScalarValue::Float64(Some(min)),
                ],
            )
            .await
            .unwrap();
        let QueryResult::Rows(s) = r else { panic!() };
        let t = pretty_format_batches(&s.try_collect::<Vec<_>>().await.unwrap())
            .unwrap()
            .to_string();
        assert!(t.contains(want), "{t}");
    }
    let e2 =
        e.db.execute_prepared(&session, &q, vec![])
            .await
            .unwrap_err();
    assert_eq!(e2.sqlstate(), "42601");
    let e3 = e.db.prepare("SELECT 1; SELECT 2").await.unwrap_err();
    assert_eq!(e3.sqlstate(), "42601");
    assert!(e.db.prepare(" ; ").await.unwrap().is_none());
}

/// Stream names under `__` belong to the system. A user's
/// `CREATE STREAM "__changelog__x"` used to be accepted and then deleted,
/// rows and all, at the next start-up as an orphaned view changelog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_stream_names_are_refused_and_changelogs_are_not_writable() {
    let e = env().await;
    for name in ["__changelog__x", "__mine"] {
        let (state, msg) = err(&e.db, &format!("CREATE STREAM \"{name}\" (a BIGINT)")).await;
        assert_eq!(state, "42939", "{msg}");
        assert!(msg.contains("reserved"), "{msg}");
    }
    e.db.execute("CREATE STREAM src (k BIGINT, v BIGINT)")
        .await
        .unwrap();
    e.db.execute("INSERT INTO src VALUES (1, 10), (2, 20)")
        .await
        .unwrap();
    e.db.execute("CREATE MATERIALIZED VIEW totals AS SELECT k, sum(v) AS s FROM src GROUP BY k")
        .await
        .unwrap();
    // Listings hide the system's streams.
    assert!(
        e.log
            .streams()
            .await
            .unwrap()
            .iter()
            .all(|s| !s.name().starts_with("__"))
    );
    let changelog = e
        .log
        .all_streams()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name().to_string())
        .find(|n| n.starts_with("__changelog__"))
        .expect("the view's changelog");
    let before = e.log.partition_ends(&changelog).await.unwrap();
    let (state, msg) = err(
        &e.db,
        &format!("INSERT INTO \"{changelog}\" VALUES ('insert', 9, 9)"),
    )
    .await;
    assert_eq!(state, "42501", "{msg}");
    let (state, msg) = err(&e.db, &format!("DROP STREAM \"{changelog}\"")).await;
    assert_eq!(state, "42501", "{msg}");
    assert_eq!(e.log.partition_ends(&changelog).await.unwrap(), before);
    // After a restart every user stream and the view are still there.
    let e = restart(e).await;
    let t = pretty_format_batches(&rows(&e.db, "SELECT k, s FROM totals ORDER BY k").await)
        .unwrap()
        .to_string();
    assert!(t.contains("| 1 | 10 |") && t.contains("| 2 | 20 |"), "{t}");
    assert!(e.log.stream(&changelog).await.is_ok());
}

/// A placeholder number sizes the parameter list: one past the protocol's
/// 16-bit count is refused before anything is allocated for it (it used to
/// size a vector by `$99999999999` and abort the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_numbers_past_the_protocol_limit_are_refused() {
    let e = env().await;
    e.db.execute("CREATE STREAM p (a BIGINT)").await.unwrap();
    for sql in [
        "SELECT $99999999999",
        "SELECT $65536",
        "SELECT $18446744073709551616",
        "INSERT INTO p VALUES ($99999999999)",
        "SELECT a FROM p WHERE a = $4294967296::bigint",
    ] {
        let e = e.db.prepare(sql).await.unwrap_err();
        assert_eq!(e.sqlstate(), "42601", "{sql}: {e}");
        assert!(
            e.to_string().contains("parameter number too large"),
            "{sql}: {e}"
        );
    }
    assert!(e.db.prepare("SELECT $0").await.is_err());
    // The largest allowed number plans, with one slot per number below it.
    let q =
        e.db.prepare("SELECT $65535::bigint")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(q.param_types.len(), 65_535);
    // The database goes on.
    let (_, msg) = err(&e.db, "SELECT $99999999999").await;
    assert!(msg.contains("too large"), "{msg}");
    assert_eq!(rows(&e.db, "SELECT count(*) FROM p").await[0].num_rows(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumble_and_hop_windows() {
    let e = env().await;
    e.db.execute(
        "CREATE STREAM clicks (user_id TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5 seconds') \
         WITH (partitions = 2, key = 'user_id')",
    )
    .await
    .unwrap();
    e.db.execute(
        "INSERT INTO clicks VALUES ('a', '2026-01-01 10:00:05'), ('a', '2026-01-01 10:00:55'), \
         ('b', '2026-01-01 10:01:10'), ('a', '2026-01-01 10:02:30'), ('b', '2026-01-01 10:02:59')",
    )
    .await
    .unwrap();
    assert_eq!(
        lines(
            &table(
                &e.db,
                "SELECT window_start, window_end, user_id, count(*) AS n \
                 FROM TUMBLE(clicks, ts, INTERVAL '1 minute') \
                 GROUP BY window_start, window_end, user_id ORDER BY window_start, user_id"
            )
            .await
        ),
        lines(
            "
+---------------------+---------------------+---------+---+
| window_start        | window_end          | user_id | n |
+---------------------+---------------------+---------+---+
| 2026-01-01T10:00:00 | 2026-01-01T10:01:00 | a       | 2 |
| 2026-01-01T10:01:00 | 2026-01-01T10:02:00 | b       | 1 |
| 2026-01-01T10:02:00 | 2026-01-01T10:03:00 | a       | 1 |
| 2026-01-01T10:02:00 | 2026-01-01T10:03:00 | b       | 1 |
+---------------------+---------------------+---------+---+"
        )
    );
    // Two-minute windows sliding every minute: each row is in two windows.
    assert_eq!(
        lines(
            &table(
                &e.db,
                "SELECT window_start, window_end, count(*) AS n \
                 FROM HOP(clicks, ts, INTERVAL '1 minute', INTERVAL '2 minutes') \
                 GROUP BY window_start, window_end ORDER BY window_start"
            )
            .await
        ),
        lines(
            "
+---------------------+---------------------+---+
| window_start        | window_end          | n |
+---------------------+---------------------+---+
| 2026-01-01T09:59:00 | 2026-01-01T10:01:00 | 2 |
| 2026-01-01T10:00:00 | 2026-01-01T10:02:00 | 3 |
| 2026-01-01T10:01:00 | 2026-01-01T10:03:00 | 3 |
| 2026-01-01T10:02:00 | 2026-01-01T10:04:00 | 2 |
+---------------------+---------------------+---+"
        )
    );
    // `*` shows the declared columns and the window, not system columns.
    let names = column_names(
        &e.db,
        "SELECT * FROM TUMBLE(clicks, ts, INTERVAL '1 hour') LIMIT 1",
    )
    .await;
    assert_eq!(names, ["user_id", "ts", "window_start", "window_end"]);
    // Filters still reach the stream scan through the view.
    let plan = table(
        &e.db,
        "EXPLAIN SELECT count(*) FROM TUMBLE(clicks, ts, INTERVAL '1 minute') \
         WHERE ts >= TIMESTAMP '2026-01-01 10:02:00'",
    )
    .await;
    assert!(
        plan.contains("StreamScanExec: stream=clicks") && plan.contains("event_time="),
        "{plan}"
    );
    for (sql, code) in [
        (
            "SELECT * FROM TUMBLE(nope, ts, INTERVAL '1 minute')",
            "42P01",
        ),
        (
            "SELECT * FROM TUMBLE(clicks, user_id, INTERVAL '1 minute')",
            "42000",
        ),
        ("SELECT * FROM TUMBLE(clicks, ts)", "42000"),
        (
            "SELECT * FROM HOP(clicks, ts, INTERVAL '2 minutes', INTERVAL '3 minutes')",
            "42000",
        ),
        (
            "SELECT * FROM TUMBLE(clicks, ts, INTERVAL '1 month')",
            "42000",
        ),
    ] {
        assert_eq!(err(&e.db, sql).await.0, code, "{sql}");
    }
}

/// The `streamhouse` schema's system tables, from any query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_tables_describe_streams_views_groups_queries_and_agents() {
    let e = env().await;
    e.db.execute(
        "CREATE STREAM orders (id BIGINT NOT NULL, customer TEXT, amount DOUBLE PRECISION) \
         WITH (partitions = 3, key = 'customer')",
    )
    .await
    .unwrap();
    for k in 0..4 {
        let values: Vec<String> = (0..25)
            .map(|i| format!("({}, 'c{}', {i}.5)", k * 25 + i, i % 6))
            .collect();
        e.db.execute(&format!("INSERT INTO orders VALUES {}", values.join(",")))
            .await
            .unwrap();
    }
    e.db.execute(
        "CREATE MATERIALIZED VIEW per_customer AS SELECT customer, count(*) AS n FROM orders GROUP BY customer",
    )
    .await
    .unwrap();

    let streams = table(
        &e.db,
        "SELECT name, partitions, key, rows, high_watermark, bytes > 0 AS has_bytes, chunks >= 3 AS chunked, \
         last_append IS NOT NULL AS appended FROM streamhouse.streams WHERE name = 'orders'",
    )
    .await;
    assert!(
        streams.contains("| orders | 3          | customer | 100  | 100            | true      | true    | true     |"),
        "{streams}"
    );
    // Partitions add up to the stream.
    let sums = table(
        &e.db,
        "SELECT count(*) AS partitions, sum(rows) AS rows, sum(high_watermark) AS hw, min(start_offset) AS first \
         FROM streamhouse.partitions WHERE stream = 'orders'",
    )
    .await;
    assert!(
        sums.contains("| 3          | 100  | 100 | 0     |"),
        "{sums}"
    );

    // Views: status, lag, checkpoint.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let views = table(
            &e.db,
            "SELECT name, status, lag_rows, last_checkpoint >= 1 AS checkpointed, emit, state_bytes > 0 AS stateful \
             FROM streamhouse.views",
        )
        .await;
        if views
            .contains("| per_customer | running | 0        | true         | on_update | true     |")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{views}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Consumer groups with their lag per partition.
    e.log
        .commit_offsets("billing", "orders", None, &[(0, 1)])
        .await
        .unwrap();
    let groups = table(
        &e.db,
        "SELECT g.partition, g.committed, g.lag = p.high_watermark - coalesce(g.committed, 0) AS lag_ok \
         FROM streamhouse.consumer_groups g JOIN streamhouse.partitions p \
         ON g.stream = p.stream AND g.partition = p.partition WHERE g.\"group\" = 'billing' ORDER BY 1",
    )
    .await;
    assert!(
        groups.contains("| 0         | 1         | true   |"),
        "{groups}"
    );
    assert_eq!(groups.matches("| true   |").count(), 3, "{groups}");

    // A query sees itself running; a query whose rows are not read yet
    // is still running.
    let pending = e.db.execute("SELECT * FROM orders").await.unwrap();
    let queries = table(
        &e.db,
        "SELECT door, kind, query FROM streamhouse.queries ORDER BY id",
    )
    .await;
    assert!(
        queries.contains("| embedded | statement | SELECT * FROM orders "),
        "{queries}"
    );
    assert!(queries.contains("FROM streamhouse.queries"), "{queries}");
    drop(pending);
    let queries = table(&e.db, "SELECT query FROM streamhouse.queries").await;
    assert!(!queries.contains("SELECT * FROM orders"), "{queries}");

    let agents = table(
        &e.db,
        "SELECT state, views, started_at <= now() AS started, length(agent) AS id_len \
         FROM streamhouse.agents WHERE this",
    )
    .await;
    assert!(
        agents.contains("| live  | 1     | true    | 26     |"),
        "{agents}"
    );
}
