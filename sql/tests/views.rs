//! Materialized views maintained incrementally: for generated events
//! (several keys, several partitions, inserted in many statements while the
//! views run), each supported view shape equals the same query run as a
//! bounded query over the same rows; unsupported shapes are refused with
//! 0A000; views survive a restart; a view over a dropped stream fails
//! without taking the server down.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use streamhouse_log::DataDir;
use streamhouse_sql::Database;

use common::*;

const SHAPES: &[(&str, &str)] = &[
    (
        "by_user",
        "SELECT user_id, count(*), sum(amount), min(amount), max(amount), avg(amount) \
         FROM events GROUP BY user_id",
    ),
    (
        "filtered",
        "SELECT user_id, count(*) AS n FROM events WHERE amount > 50 AND kind <> 'refund' \
         GROUP BY user_id HAVING count(*) > 2",
    ),
    (
        "total",
        "SELECT count(*) AS n, sum(amount) AS total, max(ts) AS latest FROM events",
    ),
    (
        "per_minute",
        "SELECT window_start, window_end, user_id, count(*) AS n, sum(amount) AS total \
         FROM TUMBLE(events, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, user_id",
    ),
    (
        "sliding",
        "SELECT window_start, kind, count(*) AS n FROM HOP(events, ts, INTERVAL '30 seconds', \
         INTERVAL '2 minutes') GROUP BY window_start, kind",
    ),
    (
        "expressions",
        "SELECT upper(kind) AS k, user_id % 3 AS bucket, sum(amount * 2) AS doubled, \
         count(amount) AS counted FROM events GROUP BY upper(kind), user_id % 3",
    ),
    (
        "filtered_aggregates",
        "SELECT user_id % 5 AS bucket, count(*) FILTER (WHERE amount < 30) AS small, \
         sum(amount) FILTER (WHERE kind = 'refund') AS refunded, \
         min(amount) FILTER (WHERE amount > 40) AS low, max(amount) FILTER (WHERE kind <> 'refund') AS high, \
         avg(amount) FILTER (WHERE amount >= 10) AS mean FROM events GROUP BY user_id % 5",
    ),
    (
        "groups_only",
        "SELECT kind, user_id % 2 AS parity FROM events GROUP BY kind, user_id % 2",
    ),
    (
        "distinct_rows",
        "SELECT DISTINCT kind, user_id % 3 AS bucket FROM events WHERE amount > 20",
    ),
    (
        "distinct_kinds",
        "SELECT user_id % 4 AS bucket, count(DISTINCT kind) AS kinds, count(DISTINCT amount) AS amounts, \
         count(*) AS n FROM events GROUP BY user_id % 4",
    ),
    (
        "distinct_filtered",
        "SELECT user_id % 4 AS bucket, count(DISTINCT kind) FILTER (WHERE amount > 20) AS kinds, \
         count(DISTINCT amount) FILTER (WHERE kind <> 'refund') AS amounts FROM events GROUP BY user_id % 4",
    ),
    (
        "distinct_per_minute",
        "SELECT window_start, window_end, count(DISTINCT user_id) AS users \
         FROM TUMBLE(events, ts, INTERVAL '1 minute') GROUP BY window_start, window_end",
    ),
    (
        "statistics",
        "SELECT user_id % 5 AS bucket, median(amount) AS med, approx_distinct(kind) AS kinds, \
         bool_and(amount > 5) AS all_big, bit_xor(id) AS x, round(stddev(amount), 6) AS sd, \
         round(corr(amount, id), 6) AS r, round(var_pop(amount), 6) AS v FROM events GROUP BY user_id % 5",
    ),
    (
        "statistics_per_minute",
        "SELECT window_end, median(amount) AS med, max(amount) - min(amount) AS spread, \
         approx_distinct(user_id) AS users FROM TUMBLE(events, ts, INTERVAL '1 minute') GROUP BY window_end",
    ),
    (
        "sessions",
        "SELECT user_id, window_start, window_end, count(*) AS n, sum(amount) AS total, \
         max(amount) AS biggest FROM SESSION(events, ts, INTERVAL '27 seconds', user_id) \
         GROUP BY user_id, window_start, window_end",
    ),
    (
        "busy_periods",
        "SELECT window_start, window_end, count(*) AS n, median(amount) AS med \
         FROM SESSION(events, ts, INTERVAL '3 seconds') GROUP BY window_start, window_end \
         HAVING count(*) > 1",
    ),
    (
        "big_spenders",
        "SELECT user_id, amount, kind FROM events WHERE amount > 90",
    ),
];

/// Inserts `n` events starting at `first`: 13 users, 3 kinds, amounts with
/// NULLs, timestamps out of order within a few seconds.
async fn insert(db: &Database, first: i64, n: i64) {
    let mut values = Vec::new();
    for i in first..first + n {
        let amount = if i % 17 == 0 {
            "NULL".to_string()
        } else {
            format!("{}.5", (i * 37) % 100)
        };
        let kind = ["buy", "sell", "refund"][(i % 3) as usize];
        let secs = i * 2 - (i % 5);
        values.push(format!(
            "({i}, {}, '{kind}', {amount}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{secs} seconds')",
            i % 13
        ));
    }
    db.execute(&format!("INSERT INTO events VALUES {}", values.join(", ")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_the_bounded_query_and_survive_restart() {
    let e = open_in(tempfile::tempdir().unwrap()).await;
    e.db.execute(
        "CREATE STREAM events (id BIGINT NOT NULL, user_id BIGINT, kind TEXT, amount DOUBLE PRECISION, \
         ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5 seconds') \
         WITH (partitions = 3, key = 'user_id')",
    )
    .await
    .unwrap();
    // Some rows before the views exist, more while they run.
    insert(&e.db, 0, 200).await;
    for (name, sql) in SHAPES {
        e.db.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    for k in 0..10 {
        insert(&e.db, 200 + k * 100, 100).await;
    }
    for (name, sql) in SHAPES {
        converges(&e.db, name, sql).await;
    }
    // Column names are PostgreSQL's.
    let b = rows(&e.db, "SELECT * FROM by_user LIMIT 1").await;
    let names: Vec<String> = b[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["user_id", "count", "sum", "min", "max", "avg"]);
    // A view is a table for queries: filters, joins with streams.
    let joined = lines(
        &e.db,
        "SELECT b.user_id, b.count FROM by_user b JOIN (SELECT DISTINCT user_id FROM events WHERE kind = 'refund') r \
         ON b.user_id = r.user_id WHERE b.count > 0",
    )
    .await;
    assert_eq!(joined.len(), 13);

    let shown = lines(&e.db, "SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown.len(), SHAPES.len());
    assert!(shown.iter().all(|l| l.contains("running")), "{shown:#?}");

    // Restart: the views come back and catch up with rows written since.
    let e = restart(e).await;
    insert(&e.db, 5000, 150).await;
    for (name, sql) in SHAPES {
        converges(&e.db, name, sql).await;
    }

    e.db.execute("DROP MATERIALIZED VIEW by_user, filtered")
        .await
        .unwrap();
    assert!(e.db.execute("SELECT * FROM by_user").await.is_err());
    e.db.execute("DROP MATERIALIZED VIEW IF EXISTS by_user")
        .await
        .unwrap();
    let err =
        e.db.execute("DROP MATERIALIZED VIEW by_user")
            .await
            .unwrap_err();
    assert_eq!(err.sqlstate(), "42P01");
}

/// Join views: (name, query, what reading the view's changelog must
/// equal — for a view without aggregate, whose reads run the query).
const JOINS: &[(&str, &str, Option<&str>)] = &[
    (
        "big_orders",
        "SELECT o.id, u.region, o.amount FROM orders o JOIN users u ON o.user_id = u.id \
         WHERE o.amount > 10",
        Some("SELECT id, region, amount FROM changes(big_orders) WHERE op = 'insert'"),
    ),
    (
        "per_region",
        "SELECT u.region, count(*) AS n, sum(o.amount) AS total, max(o.amount) AS top \
         FROM orders o JOIN users u ON o.user_id = u.id AND o.ts >= u.ts GROUP BY u.region",
        None,
    ),
    (
        "by_expression",
        "SELECT u.region, o.amount > 50 AS big, count(*) AS n \
         FROM orders o JOIN users u ON o.user_id + 1 = u.id + 1 GROUP BY u.region, o.amount > 50",
        None,
    ),
    (
        "distinct_join",
        "SELECT u.region, count(*) AS n, count(DISTINCT o.amount) AS amounts \
         FROM orders o JOIN users u ON o.user_id = u.id GROUP BY u.region",
        None,
    ),
    (
        "filtered_outer",
        "SELECT u.region, count(*) FILTER (WHERE o.amount > 20) AS big, \
         count(DISTINCT o.amount) FILTER (WHERE o.amount > 20) AS amounts, \
         sum(o.amount) FILTER (WHERE o.amount < 50) AS small, \
         min(o.amount) FILTER (WHERE o.amount > 10) AS low \
         FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.region",
        None,
    ),
    (
        "distinct_outer",
        "SELECT DISTINCT u.region, o.amount > 50 AS big FROM users u LEFT JOIN orders o ON o.user_id = u.id",
        None,
    ),
    (
        "with_cte",
        "WITH big AS (SELECT user_id, amount FROM orders WHERE amount > 50) \
         SELECT u.region, count(*) AS n, sum(big.amount) AS total \
         FROM big JOIN users u ON big.user_id = u.id GROUP BY u.region",
        None,
    ),
    (
        "three_way",
        "SELECT u.region, r.label, count(*) AS n FROM orders o \
         JOIN users u ON o.user_id = u.id JOIN regions r ON r.region = u.region \
         GROUP BY u.region, r.label",
        None,
    ),
];

/// Waits until every join view (and the changelog of those without
/// aggregate) equals its bounded query.
async fn joins_converge(db: &Database) {
    for (name, sql, changes) in JOINS {
        converges(db, name, sql).await;
        if let Some(c) = changes {
            converges_to(db, c, sql).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_equal_the_bounded_query_and_survive_restart() {
    let e = open_in(tempfile::tempdir().unwrap()).await;
    create_join_streams(&e.db).await;
    e.db.execute("INSERT INTO regions VALUES ('r0', 'north'), ('r1', 'south'), ('r1', 'coast')")
        .await
        .unwrap();
    insert_join_rows(&e.db, 0, 30).await;
    for (name, sql, _) in JOINS {
        e.db.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    for k in 1..6 {
        insert_join_rows(&e.db, k * 30, 30).await;
    }
    e.db.execute("INSERT INTO regions VALUES ('r2', 'east'), ('r3', 'west')")
        .await
        .unwrap();
    joins_converge(&e.db).await;

    // Restart: the joins refill from the log and go on where they were.
    let e = restart(e).await;
    insert_join_rows(&e.db, 1000, 40).await;
    e.db.execute("INSERT INTO regions VALUES ('r0', 'polar')")
        .await
        .unwrap();
    joins_converge(&e.db).await;

    // Joins over a view with updates: a pair made with a row the view has
    // since replaced is taken back (the changelog deletes it; an aggregate
    // subtracts it).
    e.db.execute(
        "CREATE MATERIALIZED VIEW region_sizes AS \
         SELECT region, count(*) AS users FROM users GROUP BY region",
    )
    .await
    .unwrap();
    let sized = "SELECT o.id, s.users FROM orders o JOIN users u ON o.user_id = u.id \
                 JOIN region_sizes s ON s.region = u.region";
    let per_size = "SELECT s.users, count(*) AS n FROM orders o JOIN users u ON o.user_id = u.id \
                    JOIN region_sizes s ON s.region = u.region GROUP BY s.users";
    e.db.execute(&format!("CREATE MATERIALIZED VIEW sized_orders AS {sized}"))
        .await
        .unwrap();
    e.db.execute(&format!("CREATE MATERIALIZED VIEW per_size AS {per_size}"))
        .await
        .unwrap();
    for k in 0..3 {
        insert_join_rows(&e.db, 2000 + k * 20, 20).await;
    }
    // The references read the streams only.
    let inline = |q: &str| {
        q.replace(
            "region_sizes s",
            "(SELECT region, count(*) AS users FROM users GROUP BY region) s",
        )
    };
    converges(&e.db, "per_size", &inline(per_size)).await;
    let want = cells(lines(&e.db, &inline(sized)).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = cells(applied(&e.db, "sized_orders", "id, users").await);
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sized_orders' changelog did not converge:\n got {got:#?}\nwant {want:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = rows(
        &e.db,
        "SELECT count(*) FROM changes(sized_orders) WHERE op = 'delete'",
    )
    .await;
    let deletes = b[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert!(deletes > 0, "updates reach the join's output");
}

/// Outer, semi and anti join views: (name, query, the columns of its
/// changelog — for a view without aggregate, whose changelog applied in
/// order must equal the query).
const OUTER_JOINS: &[(&str, &str, Option<&str>)] = &[
    (
        "left_orders",
        "SELECT o.id, u.region FROM orders o LEFT JOIN users u ON o.user_id = u.id",
        Some("id, region"),
    ),
    (
        "right_per_region",
        "SELECT u.region, count(o.id) AS orders, count(*) AS n, sum(o.amount) AS total, \
         max(o.amount) AS top, min(o.id) AS first, count(DISTINCT o.amount) AS amounts \
         FROM orders o RIGHT JOIN users u ON o.user_id = u.id GROUP BY u.region",
        None,
    ),
    (
        "full_big",
        "SELECT o.id, u.id AS uid, u.region FROM orders o \
         FULL JOIN users u ON o.user_id = u.id AND o.amount > 40",
        Some("id, uid, region"),
    ),
    (
        "semi_users",
        "SELECT u.id, u.region FROM users u LEFT SEMI JOIN orders o ON o.user_id = u.id",
        Some("id, region"),
    ),
    (
        "anti_per_region",
        "SELECT u.region, count(*) AS idle FROM users u \
         LEFT ANTI JOIN orders o ON o.user_id = u.id AND o.amount > 50 GROUP BY u.region",
        None,
    ),
    (
        "exists_users",
        "SELECT u.id, u.region FROM users u \
         WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.amount > 30)",
        Some("id, region"),
    ),
    (
        "in_per_region",
        "SELECT u.region, count(*) AS n FROM users u \
         WHERE u.id IN (SELECT user_id FROM orders WHERE amount < 60) GROUP BY u.region",
        None,
    ),
    (
        "not_exists_per_region",
        "SELECT u.region, count(*) AS n FROM users u \
         WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id) GROUP BY u.region",
        None,
    ),
    (
        "left_of_region",
        "SELECT regions.label, count(users.id) AS users FROM regions \
         LEFT JOIN users ON users.region = regions.region GROUP BY regions.label",
        None,
    ),
];

/// Waits until every outer join view equals its bounded query: its
/// contents, and for a view without aggregate its changelog applied in
/// order.
async fn outer_joins_converge(db: &Database) {
    for (name, sql, changes) in OUTER_JOINS {
        converges(db, name, sql).await;
        let Some(columns) = changes else { continue };
        changelog_converges(db, name, columns, sql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outer_semi_and_anti_joins_equal_the_bounded_query_and_survive_restart() {
    let e = open_in(tempfile::tempdir().unwrap()).await;
    create_join_streams(&e.db).await;
    e.db.execute("INSERT INTO regions VALUES ('r0', 'north'), ('r1', 'south'), ('r9', 'void')")
        .await
        .unwrap();
    insert_join_rows(&e.db, 0, 20).await;
    for (name, sql, _) in OUTER_JOINS {
        e.db.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    // Orders arrive before their users (their NULL-padded rows are taken
    // back), users before their orders (an anti join's row goes away).
    for k in 1..4 {
        insert_join_rows(&e.db, k * 20, 20).await;
    }
    e.db.execute("INSERT INTO regions VALUES ('r2', 'east')")
        .await
        .unwrap();
    outer_joins_converge(&e.db).await;
    let deletes = rows(
        &e.db,
        "SELECT count(*) FROM changes(left_orders) WHERE op = 'delete'",
    )
    .await;
    assert!(
        deletes[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
            > 0,
        "a padded row is taken back when its match arrives"
    );

    let e = restart(e).await;
    insert_join_rows(&e.db, 500, 30).await;
    e.db.execute("INSERT INTO regions VALUES ('r3', 'west')")
        .await
        .unwrap();
    outer_joins_converge(&e.db).await;
}

/// Top-N views: (name, query, the columns of its changelog).
const TOP_N: &[(&str, &str, &str)] = &[
    (
        "top_orders",
        "SELECT id, user_id, amount, rn FROM (SELECT id, user_id, amount, \
         ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY amount DESC, id) AS rn FROM orders) t \
         WHERE rn <= 2",
        "id, user_id, amount, rn",
    ),
    (
        "biggest",
        "SELECT id, amount FROM orders ORDER BY amount DESC, id LIMIT 5",
        "id, amount",
    ),
    (
        "ranked_users",
        "SELECT region, id, r FROM (SELECT region, id, \
         RANK() OVER (PARTITION BY region ORDER BY id % 5) AS r FROM users) x WHERE r <= 2",
        "region, id, r",
    ),
    (
        "first_band",
        "SELECT id, region FROM (SELECT id, region, \
         DENSE_RANK() OVER (PARTITION BY region ORDER BY id / 7 DESC) AS d FROM users) x \
         WHERE d = 1",
        "id, region",
    ),
    (
        "busiest",
        "SELECT user_id, n, rn FROM (SELECT user_id, n, \
         ROW_NUMBER() OVER (ORDER BY n DESC, user_id) AS rn FROM order_counts) t WHERE rn <= 3",
        "user_id, n, rn",
    ),
];

const ORDER_COUNTS: &str =
    "SELECT user_id, count(*) AS n FROM orders WHERE user_id IS NOT NULL GROUP BY user_id";

/// Waits until every top-N view's changelog applied in order equals its
/// bounded query (over the streams: views spelled out).
async fn top_n_converge(db: &Database) {
    for (name, sql, columns) in TOP_N {
        let reference = sql.replace(
            "FROM order_counts",
            &format!("FROM ({ORDER_COUNTS}) order_counts"),
        );
        changelog_converges(db, name, columns, &reference).await;
        converges(db, name, &reference).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_n_views_equal_the_bounded_query_and_survive_restart() {
    let e = open_in(tempfile::tempdir().unwrap()).await;
    create_join_streams(&e.db).await;
    e.db.execute(&format!(
        "CREATE MATERIALIZED VIEW order_counts AS {ORDER_COUNTS}"
    ))
    .await
    .unwrap();
    insert_join_rows(&e.db, 0, 20).await;
    for (name, sql, _) in TOP_N {
        e.db.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    for k in 1..5 {
        insert_join_rows(&e.db, k * 20, 20).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    top_n_converge(&e.db).await;
    let e = restart(e).await;
    insert_join_rows(&e.db, 700, 40).await;
    top_n_converge(&e.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_shapes_are_refused_and_a_dropped_input_fails_the_view() {
    let e = open_in(tempfile::tempdir().unwrap()).await;
    e.db.execute("CREATE STREAM a (k BIGINT, v DOUBLE PRECISION, ts TIMESTAMP)")
        .await
        .unwrap();
    e.db.execute("CREATE STREAM b (k BIGINT, w TEXT)")
        .await
        .unwrap();
    for (sql, words) in [
        (
            "SELECT a.k, median(a.v) FROM a LEFT JOIN b ON a.k = b.k GROUP BY a.k",
            "median() over a view with updates or an outer, semi or anti join",
        ),
        (
            "SELECT a.k, b.w FROM a JOIN b ON a.k < b.k",
            "without an equality",
        ),
        (
            "SELECT k FROM a WHERE k NOT IN (SELECT k FROM b)",
            "NOT IN over a subquery (write NOT EXISTS)",
        ),
        ("SELECT a.k, b.w FROM a, b", "without an equality"),
        (
            "SELECT k, sum(DISTINCT v) FROM a GROUP BY k",
            "sum(DISTINCT",
        ),
        (
            "SELECT k, array_agg(v ORDER BY ts) FROM a GROUP BY k",
            "ORDER BY",
        ),
        (
            "SELECT k, row_number() OVER (ORDER BY v) FROM a",
            "row_number() without a bound (write WHERE rn <= N",
        ),
        (
            "SELECT * FROM (SELECT k, sum(v) OVER (PARTITION BY k) AS s FROM a) t WHERE s <= 3",
            "a window function",
        ),
        ("SELECT k, v FROM a ORDER BY v LIMIT 3 OFFSET 2", "OFFSET"),
        (
            "SELECT * FROM (SELECT k, count(*) AS n, rank() OVER (ORDER BY count(*)) AS r \
             FROM a GROUP BY k) x WHERE r <= 3",
            "a top-N over the GROUP BY of its own SELECT (write the GROUP BY in a subquery",
        ),
        (
            "SELECT k FROM a WHERE k IN (SELECT k FROM b GROUP BY k HAVING count(*) > 1) \
             GROUP BY k",
            "more than one GROUP BY level outside subqueries in FROM and CTEs",
        ),
        (
            "SELECT k, count(*) AS n FROM a GROUP BY k ORDER BY sum(v) LIMIT 3",
            "a top-N over the GROUP BY of its own SELECT",
        ),
        // Over the groups: each step would see only the groups it changed,
        // or miss another input's rows.
        (
            "SELECT k, n, rank() OVER (ORDER BY n) FROM \
             (SELECT k, count(*) AS n FROM a GROUP BY k) g",
            "rank() without a bound",
        ),
        (
            "SELECT k, count(*) FROM SESSION(a, ts, INTERVAL '1 minute', k) GROUP BY k",
            "group by exactly its key columns k, window_start and window_end",
        ),
        (
            "SELECT k, v, window_end FROM SESSION(a, ts, INTERVAL '1 minute', k)",
            "a SESSION window without a GROUP BY",
        ),
    ] {
        refused(&e.db, sql, words).await;
    }
    let err =
        e.db.execute("CREATE MATERIALIZED VIEW a AS SELECT k FROM b")
            .await
            .unwrap_err();
    assert_eq!(err.sqlstate(), "42P07");
    e.db.execute("CREATE MATERIALIZED VIEW counts AS SELECT k, count(*) AS n FROM a GROUP BY k")
        .await
        .unwrap();
    let err =
        e.db.execute("CREATE MATERIALIZED VIEW counts AS SELECT k FROM a")
            .await
            .unwrap_err();
    assert_eq!(err.sqlstate(), "42P07");
    e.db.execute("INSERT INTO a VALUES (1, 1.0, NULL), (1, 2.0, NULL), (2, 3.0, NULL)")
        .await
        .unwrap();
    converges(&e.db, "counts", "SELECT k, count(*) AS n FROM a GROUP BY k").await;
    // A stream a view reads cannot be dropped (2BP01, naming the view) …
    let err = e.db.execute("DROP STREAM a").await.unwrap_err();
    assert_eq!(err.sqlstate(), "2BP01", "{err}");
    assert!(err.to_string().contains("counts reads it"), "{err}");
    // … but one dropped all the same (by an agent that did not know the
    // view yet) fails it.
    e.log.drop_stream("a").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = lines(&e.db, "SHOW MATERIALIZED VIEWS").await;
        if shown.iter().any(|l| l.contains("failed")) {
            break;
        }
        assert!(Instant::now() < deadline, "{shown:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last contents stay readable, and everything else still works.
    assert_eq!(lines(&e.db, "SELECT * FROM counts").await.len(), 2);
    e.db.execute("INSERT INTO b VALUES (1, 'x')").await.unwrap();

    // After a restart the view cannot be compiled: it is listed as failed,
    // and can be dropped.
    let e = restart(e).await;
    let shown = lines(&e.db, "SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown.len(), 1);
    assert!(
        shown[0].contains("failed") && shown[0].contains("counts"),
        "{shown:?}"
    );
    e.db.execute("DROP MATERIALIZED VIEW counts").await.unwrap();
    assert!(lines(&e.db, "SHOW MATERIALIZED VIEWS").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_close_with_the_watermark_and_changelogs_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let dd = DataDir::open(dir.path()).unwrap();
    let log = Arc::new(dd.open_log().await.unwrap());
    let options = streamhouse_sql::DatabaseOptions {
        state_dir: Some(dir.path().join("state")),
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let db = Database::open_with(log.clone(), options).await.unwrap();
    db.execute(
        "CREATE STREAM events (id BIGINT NOT NULL, user_id BIGINT, kind TEXT, amount DOUBLE PRECISION, \
         ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '10 seconds') \
         WITH (partitions = 3, key = 'user_id')",
    )
    .await
    .unwrap();
    let windowed = "SELECT user_id, window_start, window_end, count(*) AS n, sum(amount) AS total \
                    FROM TUMBLE(events, ts, INTERVAL '1 minute') \
                    GROUP BY user_id, window_start, window_end";
    db.execute(&format!("CREATE MATERIALIZED VIEW on_close AS {windowed}"))
        .await
        .unwrap();
    db.execute(&format!(
        "CREATE MATERIALIZED VIEW on_update WITH (emit = 'on_update') AS {windowed}"
    ))
    .await
    .unwrap();
    // Session windows (per user, a gap of 27 s: users' events are 22–30 s
    // apart, so sessions form, and merge as rows arrive).
    let sessioned = "SELECT user_id, window_start, window_end, count(*) AS n, sum(amount) AS total \
                     FROM SESSION(events, ts, INTERVAL '27 seconds', user_id) \
                     GROUP BY user_id, window_start, window_end";
    db.execute(&format!(
        "CREATE MATERIALIZED VIEW sessions_on_close AS {sessioned}"
    ))
    .await
    .unwrap();
    db.execute(&format!(
        "CREATE MATERIALIZED VIEW sessions_on_update WITH (emit = 'on_update') AS {sessioned}"
    ))
    .await
    .unwrap();
    db.execute(
        "CREATE MATERIALIZED VIEW totals AS SELECT kind, count(*) AS n, max(amount) AS top \
         FROM events GROUP BY kind HAVING count(*) > 10",
    )
    .await
    .unwrap();
    let err = db
        .execute("CREATE MATERIALIZED VIEW bad WITH (emit = 'on_close') AS SELECT kind, count(*) FROM events GROUP BY kind")
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "0A000", "{err}");
    // Events out of order by up to 4 s (within the 10 s delay), in many
    // statements while the views run.
    for k in 0..12 {
        insert(&db, k * 50, 50).await;
    }
    for v in ["on_close", "on_update"] {
        converges(&db, v, windowed).await;
        converges(&db, &format!("sessions_{v}"), sessioned).await;
    }
    let totals = "SELECT kind, count(*) AS n, max(amount) AS top FROM events GROUP BY kind \
                  HAVING count(*) > 10";
    converges(&db, "totals", totals).await;

    // A row far ahead moves the watermark once the other partitions idle:
    // every earlier window closes and is emitted once, with final values.
    db.execute("INSERT INTO events VALUES (100000, 0, 'buy', 1, TIMESTAMP '2026-01-02 00:00:00')")
        .await
        .unwrap();
    let closed = lines(
        &db,
        &format!("SELECT * FROM ({windowed}) WHERE window_start < TIMESTAMP '2026-01-02 00:00:00'"),
    )
    .await;
    let closed_sessions = lines(
        &db,
        &format!(
            "SELECT * FROM ({sessioned}) WHERE window_start < TIMESTAMP '2026-01-02 00:00:00'"
        ),
    )
    .await;
    let cols = "user_id, window_start, window_end, n, total";
    for (view, want) in [
        ("on_close", &closed),
        ("sessions_on_close", &closed_sessions),
    ] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let emitted = applied(&db, view, cols).await;
            if emitted == *want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{view} emitted {} of {} windows",
                emitted.len(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deletes = lines(
            &db,
            &format!("SELECT count(*) AS c FROM changes({view}) WHERE op = 'delete'"),
        )
        .await;
        assert_eq!(deletes, vec!["| 0 |"]);
    }
    // on_update: every change as retraction + insert, adding up to the view.
    for (view, query) in [("on_update", windowed), ("sessions_on_update", sessioned)] {
        converges(&db, view, query).await;
        let contents = lines(&db, &format!("SELECT {cols} FROM {view}")).await;
        assert_eq!(applied(&db, view, cols).await, contents);
        let retractions = lines(
            &db,
            &format!("SELECT count(*) > 0 AS c FROM changes({view}) WHERE op = 'delete'"),
        )
        .await;
        assert_eq!(retractions, vec!["| true |"]);
    }
    converges(&db, "totals", totals).await;
    let contents = lines(&db, "SELECT kind, n, top FROM totals").await;
    assert_eq!(applied(&db, "totals", "kind, n, top").await, contents);

    // A view over a view: its closed windows (insert-only) roll up; a
    // view over one whose changelog has updates follows them.
    db.execute(
        "CREATE MATERIALIZED VIEW per_user_total AS SELECT user_id, count(*) AS windows, \
         sum(n) AS n FROM on_close GROUP BY user_id",
    )
    .await
    .unwrap();
    converges(
        &db,
        "per_user_total",
        &format!(
            "SELECT user_id, count(*) AS windows, sum(n) AS n FROM ({windowed}) \
             WHERE window_start < TIMESTAMP '2026-01-02 00:00:00' GROUP BY user_id"
        ),
    )
    .await;
    db.execute(
        "CREATE MATERIALIZED VIEW over_updates AS SELECT count(*) AS c, sum(n) AS n FROM on_update",
    )
    .await
    .unwrap();
    converges(
        &db,
        "over_updates",
        "SELECT count(*) AS c, sum(n) AS n FROM on_update",
    )
    .await;
    let err = db
        .execute("DROP MATERIALIZED VIEW on_close")
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "2BP01", "{err}");
    assert!(err.to_string().contains("per_user_total"), "{err}");
    let shown = lines(&db, "SHOW MATERIALIZED VIEWS").await;
    assert!(
        shown
            .iter()
            .any(|l| l.contains("per_user_total") && l.contains("changes(on_close)")),
        "{shown:#?}"
    );

    // A row for a closed window is late: dropped and counted.
    let before = lines(&db, "SELECT * FROM on_close").await;
    db.execute("INSERT INTO events VALUES (100001, 1, 'buy', 5, TIMESTAMP '2026-01-01 00:00:30')")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = rows(&db, "SHOW MATERIALIZED VIEWS").await;
        let names = b[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let late = b[0]
            .column(8)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        let i = (0..b[0].num_rows())
            .find(|&i| names.value(i) == "on_close")
            .unwrap();
        if late.value(i) == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "late row not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines(&db, "SELECT * FROM on_close").await, before);

    // DROP frees the state: the snapshots in the object store, the
    // changelog, the local directory.
    let state_objects = || {
        fn count(p: &std::path::Path) -> usize {
            std::fs::read_dir(p).map_or(0, |d| {
                d.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        count(&dd.objects().join("state"))
    };
    assert!(state_objects() > 0);
    db.execute(
        "DROP MATERIALIZED VIEW per_user_total, over_updates, on_close, on_update, totals, \
         sessions_on_close, sessions_on_update",
    )
    .await
    .unwrap();
    assert_eq!(state_objects(), 0);
    assert!(db.execute("SELECT * FROM changes(on_close)").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_resume_from_checkpoints_even_without_local_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let options = || streamhouse_sql::DatabaseOptions {
        state_dir: Some(state.path().join("views")),
        checkpoint_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let open = |dir: &std::path::Path| {
        let dd = DataDir::open(dir).unwrap();
        let opts = options();
        async move {
            let log = Arc::new(dd.open_log().await.unwrap());
            let db = Database::open_with(log.clone(), opts).await.unwrap();
            (dd, log, db)
        }
    };
    let (dd, log, db) = open(dir.path()).await;
    db.execute(
        "CREATE STREAM events (id BIGINT NOT NULL, user_id BIGINT, kind TEXT, amount DOUBLE PRECISION, \
         ts TIMESTAMP) WITH (partitions = 3, key = 'user_id')",
    )
    .await
    .unwrap();
    insert(&db, 0, 300).await;
    let (name, sql) = SHAPES[0];
    db.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
        .await
        .unwrap();
    insert(&db, 300, 300).await;
    converges(&db, name, sql).await;
    // Wait for a checkpoint that covers everything.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = rows(&db, "SHOW MATERIALIZED VIEWS").await;
        let lag = b[0]
            .column(2)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        let cp = b[0]
            .column(3)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        if lag == 0 && cp >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint");
        // More rows, so the state keeps changing and checkpoints keep coming.
        if cp < 5 {
            insert(&db, 10_000 + cp * 1000 + (lag % 1000), 5).await;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Superseded snapshots are pruned: the last two remain.
    let snaps: usize = std::fs::read_dir(dir.path().join("objects/state"))
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_dir(d.path().join("snap")).map_or(0, |s| s.count()))
        .sum();
    assert!((1..=3).contains(&snaps), "{snaps} snapshots kept");
    log.shutdown().await;
    drop((db, log, dd));
    // A fresh machine: the local state is gone; the object store and the
    // metadata store hold everything.
    std::fs::remove_dir_all(state.path().join("views")).unwrap();
    let (_dd, _log, db) = open(dir.path()).await;
    let b = rows(&db, "SHOW MATERIALIZED VIEWS").await;
    let origin = b[0]
        .column(4)
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    assert!(origin.starts_with("checkpoint "), "{origin}");
    converges(&db, name, sql).await;
    insert(&db, 600, 100).await;
    converges(&db, name, sql).await;
}

/// Join views keep their sides' rows in the checkpointed state: restored
/// on a machine without the local state, they continue from their
/// checkpoints and still equal the bounded queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_views_restore_their_sides_from_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let open = |dir: &std::path::Path| {
        let dd = DataDir::open(dir).unwrap();
        let opts = streamhouse_sql::DatabaseOptions {
            state_dir: Some(state.path().join("views")),
            checkpoint_interval: Duration::from_millis(50),
            ..Default::default()
        };
        async move {
            let log = Arc::new(dd.open_log().await.unwrap());
            let db = Database::open_with(log.clone(), opts).await.unwrap();
            (dd, log, db)
        }
    };
    let (dd, log, db) = open(dir.path()).await;
    create_join_streams(&db).await;
    db.execute("INSERT INTO regions VALUES ('r0', 'north'), ('r1', 'south'), ('r1', 'coast')")
        .await
        .unwrap();
    insert_join_rows(&db, 0, 30).await;
    for (name, sql, _) in JOINS {
        db.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    insert_join_rows(&db, 30, 60).await;
    joins_converge(&db).await;
    // Every view checkpoints what it has read.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = rows(&db, "SHOW MATERIALIZED VIEWS").await;
        let lags = b[0].column(2).as_primitive::<arrow::datatypes::Int64Type>();
        let cps = b[0].column(3).as_primitive::<arrow::datatypes::Int64Type>();
        let settled = (0..b[0].num_rows()).all(|r| lags.value(r) == 0 && cps.value(r) >= 2);
        if settled {
            // One more interval: the last checkpoint covers everything.
            tokio::time::sleep(Duration::from_millis(200)).await;
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoints: {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The aggregate views' rows, read from their state.
    let mut before = Vec::new();
    for (name, _, changes) in JOINS {
        if changes.is_none() {
            before.push(lines(&db, &format!("SELECT * FROM {name} ORDER BY 1, 2")).await);
        }
    }
    log.shutdown().await;
    drop((db, log, dd));
    std::fs::remove_dir_all(state.path().join("views")).unwrap();

    // Without the log's data objects the views still restore: their join
    // sides come from the checkpoints, not from the inputs' history.
    let data = dir.path().join("objects/log/data");
    let away = dir.path().join("objects/log/data.away");
    std::fs::rename(&data, &away).unwrap();
    let (dd, log, db) = open(dir.path()).await;
    let b = rows(&db, "SHOW MATERIALIZED VIEWS").await;
    let statuses = b[0].column(1).as_string::<i32>();
    let origins = b[0].column(4).as_string::<i32>();
    for r in 0..b[0].num_rows() {
        assert_eq!(statuses.value(r), "running", "{b:?}");
        assert!(origins.value(r).starts_with("checkpoint "), "{b:?}");
    }
    let mut after = Vec::new();
    for (name, _, changes) in JOINS {
        if changes.is_none() {
            after.push(lines(&db, &format!("SELECT * FROM {name} ORDER BY 1, 2")).await);
        }
    }
    assert_eq!(before, after);
    log.shutdown().await;
    drop((db, log, dd));
    std::fs::rename(&away, &data).unwrap();

    let (_dd, _log, db) = open(dir.path()).await;
    joins_converge(&db).await;
    insert_join_rows(&db, 500, 40).await;
    db.execute("INSERT INTO regions VALUES ('r2', 'east'), ('r0', 'polar')")
        .await
        .unwrap();
    joins_converge(&db).await;
}

/// Views over a view whose changelog has updates: each delete takes back
/// what its insert added, groups left without rows disappear, and every
/// view equals the bounded query with the inner view spelled out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_a_view_with_updates_take_back_deleted_rows() {
    let e = open_in(tempfile::tempdir().unwrap()).await;
    e.db.execute(
        "CREATE STREAM events (id BIGINT NOT NULL, user_id BIGINT, kind TEXT, amount DOUBLE PRECISION, \
         ts TIMESTAMP) WITH (partitions = 3, key = 'user_id')",
    )
    .await
    .unwrap();
    let per_user =
        "SELECT user_id, count(*) AS n, sum(amount) AS total FROM events GROUP BY user_id";
    e.db.execute(&format!("CREATE MATERIALIZED VIEW per_user AS {per_user}"))
        .await
        .unwrap();
    let inner = format!("({per_user}) per_user");
    // How many users have n events: users move from bucket to bucket, and
    // buckets empty out.
    let shapes = [
        (
            "histogram",
            "SELECT n, count(*) AS users, sum(total) AS money, avg(total) AS mean, \
             count(total) AS with_total FROM {} GROUP BY n",
        ),
        (
            "overall",
            "SELECT count(*) AS users, sum(n) AS events, sum(total) AS money FROM {}",
        ),
        ("busy", "SELECT user_id, n * 10 AS n10 FROM {} WHERE n > 15"),
        // Per bucket, the values its users hold: a user leaving a bucket
        // takes its total out, and the next one is the minimum.
        (
            "extremes",
            "SELECT n, min(total) AS low, max(total) AS high, \
             count(DISTINCT total) AS totals, min(user_id) AS first_user FROM {} GROUP BY n",
        ),
        (
            "overall_extremes",
            "SELECT max(n) AS most, min(n) AS least, count(DISTINCT n) AS sizes FROM {}",
        ),
    ];
    for (name, sql) in shapes {
        e.db.execute(&format!(
            "CREATE MATERIALIZED VIEW {name} AS {}",
            sql.replace("{}", "per_user")
        ))
        .await
        .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    insert(&e.db, 0, 40).await;
    for k in 0..8 {
        insert(&e.db, 40 + k * 37, 37).await;
        // Let the views step in between, so that changes arrive in many steps.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for (name, sql) in shapes {
        converges(&e.db, name, &sql.replace("{}", &inner)).await;
    }
    // Each changelog applied in order is the view's contents.
    assert_eq!(
        applied(&e.db, "histogram", "n, users, money, mean, with_total").await,
        lines(&e.db, "SELECT * FROM histogram").await
    );
    assert_eq!(
        applied(&e.db, "busy", "user_id, n10").await,
        lines(&e.db, "SELECT * FROM busy").await
    );
    // Aggregates that cannot take rows back are refused.
    for (sql, words) in [
        (
            "SELECT n, median(total) FROM per_user GROUP BY n",
            "median()",
        ),
        (
            "SELECT n, sum(DISTINCT total) FROM per_user GROUP BY n",
            "sum(DISTINCT …)",
        ),
    ] {
        refused(&e.db, sql, words).await;
    }

    // After a restart the views continue from their checkpoints.
    let e = restart(e).await;
    insert(&e.db, 1000, 90).await;
    for (name, sql) in shapes {
        converges(&e.db, name, &sql.replace("{}", &inner)).await;
    }
    assert_eq!(
        applied(&e.db, "histogram", "n, users, money, mean, with_total").await,
        lines(&e.db, "SELECT * FROM histogram").await
    );
    assert_eq!(
        applied(&e.db, "extremes", "n, low, high, totals, first_user").await,
        lines(&e.db, "SELECT * FROM extremes").await
    );
}

/// `n` rows of `stream` (ad, at) for seconds `[10·batch, 10·batch + 10)`.
async fn insert_ads(db: &Database, stream: &str, batch: i64, n: i64) {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let ad = (i * 7 + batch) % 13;
            let ms = batch * 10_000 + (i * 9_973) % 10_000;
            format!("({ad}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{ms}' MILLISECOND)")
        })
        .collect();
    db.execute(&format!("INSERT INTO {stream} VALUES {}", rows.join(", ")))
        .await
        .unwrap();
}

/// An interval join over two streams with watermarks: rows leave its state
/// as the watermark passes their bound (tested in the join's own tests);
/// here the view equals the bounded query across steps and a restart, and
/// a row behind the watermark is dropped as late and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_joins_equal_the_bounded_query_and_drop_late_rows() {
    let e = open_in(tempfile::tempdir().unwrap()).await;
    for s in ["shown", "clicked"] {
        e.db.execute(&format!(
            "CREATE STREAM {s} (ad BIGINT, at TIMESTAMP, \
             WATERMARK FOR at AS at - INTERVAL '1' SECOND) WITH (partitions = 2)"
        ))
        .await
        .unwrap();
    }
    let query = "SELECT s.ad, s.at AS shown_at, c.at AS clicked_at FROM shown s JOIN clicked c \
                 ON s.ad = c.ad AND c.at BETWEEN s.at AND s.at + INTERVAL '25' SECOND";
    let late = "SELECT late_rows FROM streamhouse.views WHERE name = 'clicks'";
    insert_ads(&e.db, "shown", 0, 40).await;
    insert_ads(&e.db, "clicked", 0, 40).await;
    e.db.execute(&format!("CREATE MATERIALIZED VIEW clicks AS {query}"))
        .await
        .unwrap();
    for batch in 1..12 {
        insert_ads(&e.db, "shown", batch, 40).await;
        insert_ads(&e.db, "clicked", batch, 30).await;
    }
    converges(&e.db, "clicks", query).await;
    assert_eq!(int(&e.db, late).await, 0);

    let e = restart(e).await;
    for batch in 12..20 {
        insert_ads(&e.db, "clicked", batch, 30).await;
        insert_ads(&e.db, "shown", batch, 40).await;
    }
    converges(&e.db, "clicks", query).await;

    // A row behind the watermark (here: by two minutes) is dropped and
    // counted; it would have matched a click the view already holds.
    e.db.execute(
        "INSERT INTO shown VALUES (1, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '1' SECOND)",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while int(&e.db, late).await != 1 {
        assert!(
            Instant::now() < deadline,
            "late rows: {}",
            int(&e.db, late).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shown_at = "TIMESTAMP '2026-01-01 00:00:01'";
    let matched = int(
        &e.db,
        &format!("SELECT count(*) FROM ({query}) q WHERE shown_at = {shown_at}"),
    )
    .await;
    assert!(matched > 0, "the late row has matches in the bounded query");
    converges(
        &e.db,
        "clicks",
        &format!("SELECT * FROM ({query}) q WHERE NOT (ad = 1 AND shown_at = {shown_at})"),
    )
    .await;
}
