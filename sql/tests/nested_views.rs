//! Views whose queries nest a GROUP BY or a top-N in subqueries in FROM
//! and CTEs: each is maintained as a chain of hidden stages and equals its
//! bounded query (contents, and the changelog applied in order), before
//! and after a restart; the stages are listed nowhere, cannot be dropped on
//! their own, and go with their view.

#![allow(clippy::disallowed_methods)] // tests time real processes and servers

mod common;

use std::time::Duration;

use streamhouse_log::StreamKind;
use streamhouse_sql::Database;

use common::*;

/// (name, query, the columns of its changelog for a view whose changelog
/// applied in order must equal the query).
const NESTED: &[(&str, &str, Option<&str>)] = &[
    (
        "order_sizes",
        "WITH per_user AS (SELECT user_id, count(*) AS n FROM orders \
         WHERE user_id IS NOT NULL GROUP BY user_id) \
         SELECT n, count(*) AS users FROM per_user GROUP BY n",
        None,
    ),
    (
        "big_order_users",
        "WITH big AS (SELECT * FROM orders WHERE amount > 20), \
         per AS (SELECT user_id, count(*) AS n FROM big GROUP BY user_id) \
         SELECT max(n) AS most, count(*) AS users FROM per",
        None,
    ),
    (
        "region_most",
        "SELECT region, max(n) AS most, count(*) AS users FROM \
         (SELECT u.region, u.id, count(*) AS n FROM users u JOIN orders o ON o.user_id = u.id \
         GROUP BY u.region, u.id) g GROUP BY region",
        None,
    ),
    (
        "busy_users",
        "SELECT u.id, u.region, s.total FROM users u JOIN \
         (SELECT user_id, sum(amount) AS total FROM orders GROUP BY user_id) s \
         ON s.user_id = u.id WHERE s.total > 150",
        Some("id, region, total"),
    ),
    (
        "top_regions",
        "SELECT region, n, rn FROM (SELECT region, n, \
         ROW_NUMBER() OVER (ORDER BY n DESC, region) AS rn FROM \
         (SELECT u.region, count(*) AS n FROM users u JOIN orders o ON o.user_id = u.id \
         GROUP BY u.region) g) t WHERE rn <= 2",
        Some("region, n, rn"),
    ),
    (
        "top_spenders",
        "SELECT user_id, sum(amount) AS total FROM orders WHERE user_id IS NOT NULL \
         GROUP BY user_id ORDER BY total DESC, user_id LIMIT 3",
        Some("user_id, total"),
    ),
    (
        "sizes",
        "SELECT DISTINCT n FROM (SELECT user_id, count(*) AS n FROM orders GROUP BY user_id)",
        Some("n"),
    ),
    (
        "crowded_regions",
        "SELECT count(*) AS regions, sum(most) AS total FROM \
         (SELECT region, max(n) AS most FROM \
         (SELECT u.region, o.user_id, count(*) AS n FROM orders o JOIN users u \
         ON o.user_id = u.id GROUP BY u.region, o.user_id) x GROUP BY region) y \
         WHERE most > 2",
        None,
    ),
    (
        "recent_avg",
        "SELECT user_id, avg(amount) AS recent, count(*) AS n FROM \
         (SELECT user_id, amount, RANK() OVER (PARTITION BY user_id ORDER BY id DESC) AS r \
         FROM orders WHERE user_id IS NOT NULL) t WHERE r <= 3 GROUP BY user_id",
        None,
    ),
    (
        "region_top_avg",
        "SELECT region, avg(total) AS avg_total, count(*) AS n FROM \
         (SELECT region, total, RANK() OVER (PARTITION BY region ORDER BY total DESC, user_id) \
         AS r FROM (SELECT u.region, o.user_id, sum(o.amount) AS total FROM orders o \
         JOIN users u ON o.user_id = u.id GROUP BY u.region, o.user_id) g) t \
         WHERE r <= 2 GROUP BY region",
        None,
    ),
    (
        // Nexmark q5's shape: per window and user, the users with the
        // most orders of their window.
        "window_peaks",
        "SELECT p.ws, p.user_id, p.n FROM \
         (SELECT window_start AS ws, user_id, count(*) AS n \
         FROM TUMBLE(orders, ts, INTERVAL '10 seconds') \
         GROUP BY window_start, window_end, user_id) p \
         JOIN (SELECT c.ws, max(c.n) AS most FROM \
         (SELECT window_start AS ws, user_id, count(*) AS n \
         FROM TUMBLE(orders, ts, INTERVAL '10 seconds') \
         GROUP BY window_start, window_end, user_id) c GROUP BY c.ws) m \
         ON p.ws = m.ws AND p.n >= m.most",
        Some("ws, user_id, n"),
    ),
];

async fn nested_converge(db: &Database) {
    for (name, sql, changes) in NESTED {
        converges(db, name, sql).await;
        if let Some(columns) = changes {
            changelog_converges(db, name, columns, sql).await;
        }
    }
}

/// The names of the stored views (stages included).
async fn stored(e: &Env) -> Vec<String> {
    let mut names: Vec<String> = e
        .log
        .metadata()
        .views()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_queries_equal_the_bounded_query_and_survive_restart() {
    let e = open_in(tempfile::tempdir().unwrap()).await;
    create_join_streams(&e.db).await;
    insert_join_rows(&e.db, 0, 20).await;
    for (name, sql, _) in NESTED {
        e.db.execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    for k in 1..4 {
        insert_join_rows(&e.db, k * 20, 20).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    nested_converge(&e.db).await;

    // One stage per nested level, named after its view; listings show the
    // views only.
    let names = stored(&e).await;
    for stage in [
        "__stage__order_sizes__1",
        "__stage__big_order_users__1",
        "__stage__region_most__1",
        "__stage__busy_users__1",
        "__stage__top_regions__1",
        "__stage__top_spenders__1",
        "__stage__sizes__1",
        "__stage__crowded_regions__1",
        "__stage__crowded_regions__1_1",
        "__stage__recent_avg__1",
        "__stage__region_top_avg__1",
        "__stage__region_top_avg__1_1",
        "__stage__window_peaks__1",
        "__stage__window_peaks__2",
        "__stage__window_peaks__2_1",
    ] {
        assert!(names.iter().any(|n| n == stage), "{stage} in {names:?}");
    }
    assert_eq!(names.len(), NESTED.len() + 15, "{names:?}");
    let shown = lines(&e.db, "SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown.len(), NESTED.len(), "{shown:#?}");
    assert!(!shown.iter().any(|l| l.contains("__stage__")), "{shown:#?}");
    let listed = lines(&e.db, "SELECT name, inputs FROM streamhouse.views").await;
    assert_eq!(listed.len(), NESTED.len(), "{listed:#?}");
    assert!(
        listed
            .iter()
            .any(|l| l.contains("crowded_regions") && l.contains("orders, users")),
        "a view lists what its stages read: {listed:#?}"
    );

    let e = restart(e).await;
    insert_join_rows(&e.db, 500, 30).await;
    nested_converge(&e.db).await;
    assert_eq!(stored(&e).await.len(), NESTED.len() + 15);

    // A stage is dropped with its view, never alone; a view over a view
    // with stages holds it; internal names are not for users.
    let err =
        e.db.execute("DROP MATERIALIZED VIEW \"__stage__sizes__1\"")
            .await
            .unwrap_err();
    assert_eq!(err.sqlstate(), "2BP01", "{err}");
    assert!(
        err.to_string()
            .contains("stage of materialized view \"sizes\"")
    );
    let err =
        e.db.execute("CREATE MATERIALIZED VIEW __mine AS SELECT id FROM users")
            .await
            .unwrap_err();
    assert_eq!(err.sqlstate(), "42939", "{err}");
    e.db.execute("CREATE MATERIALIZED VIEW over_sizes AS SELECT n FROM sizes WHERE n > 1")
        .await
        .unwrap();
    let err =
        e.db.execute("DROP MATERIALIZED VIEW sizes")
            .await
            .unwrap_err();
    assert_eq!(err.sqlstate(), "2BP01", "{err}");
    assert!(err.to_string().contains("over_sizes"), "{err}");
    e.db.execute("DROP MATERIALIZED VIEW over_sizes")
        .await
        .unwrap();
    for (name, _, _) in NESTED.iter().rev() {
        e.db.execute(&format!("DROP MATERIALIZED VIEW {name}"))
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    assert_eq!(stored(&e).await, Vec::<String>::new());
    let changelogs: Vec<String> = e
        .log
        .all_streams()
        .await
        .unwrap()
        .iter()
        .filter(|s| StreamKind::of(s.name()) == StreamKind::ViewChangelog)
        .map(|s| s.name().to_string())
        .collect();
    assert!(changelogs.is_empty(), "{changelogs:?}");
}

/// `n` bids (auction, price, at) for seconds `[10·batch, 10·batch + 10)`.
async fn insert_bids(db: &Database, batch: i64, n: i64) {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let auction = (i * 7 + batch) % 11;
            let price = (i * 37 + batch * 13) % 50;
            let ms = batch * 10_000 + (i * 9_973) % 10_000;
            format!(
                "({auction}, {price}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{ms}' MILLISECOND)"
            )
        })
        .collect();
    db.execute(&format!("INSERT INTO bids VALUES {}", rows.join(", ")))
        .await
        .unwrap();
}

/// Nexmark q7's shape: the bids at their window's highest price, a join of
/// the bids with a stage that emits each window's row once, on close. The
/// stage's changelog has the window's end as its event time, so the join
/// has a watermark: rows leave its state once no later row can meet them,
/// and a bid behind the watermark is dropped and counted as late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_join_over_a_stage_has_the_stage_watermark() {
    let e = open_in(tempfile::tempdir().unwrap()).await;
    e.db.execute(
        "CREATE STREAM bids (auction BIGINT, price BIGINT, at TIMESTAMP, \
         WATERMARK FOR at AS at - INTERVAL '1' SECOND) WITH (partitions = 2)",
    )
    .await
    .unwrap();
    let query = "SELECT b.auction, b.price, b.at, m.ends FROM bids b JOIN \
                 (SELECT max(price) AS most, window_end AS ends \
                 FROM TUMBLE(bids, at, INTERVAL '10 seconds') GROUP BY window_end) m \
                 ON b.price = m.most WHERE b.at BETWEEN m.ends - INTERVAL '10' SECOND AND m.ends";
    // The windows that have closed: those ending by the last batch's start.
    let closed = |last: i64| {
        format!(
            "SELECT * FROM ({query}) q WHERE ends <= TIMESTAMP '2026-01-01 00:00:00' + \
             INTERVAL '{}' SECOND",
            last * 10
        )
    };
    let late = "SELECT late_rows FROM streamhouse.views WHERE name = 'highest'";
    insert_bids(&e.db, 0, 40).await;
    e.db.execute(&format!("CREATE MATERIALIZED VIEW highest AS {query}"))
        .await
        .unwrap();
    for batch in 1..10 {
        insert_bids(&e.db, batch, 40).await;
    }
    converges(&e.db, "highest", &closed(9)).await;
    changelog_converges(&e.db, "highest", "auction, price, at, ends", &closed(9)).await;
    assert_eq!(int(&e.db, late).await, 0);

    let e = restart(e).await;
    for batch in 10..16 {
        insert_bids(&e.db, batch, 40).await;
    }
    converges(&e.db, "highest", &closed(15)).await;

    // A bid a minute behind the watermark, at a price below every window's
    // highest (so the bounded query is unchanged): the view drops it as late.
    e.db.execute("INSERT INTO bids VALUES (1, -1, TIMESTAMP '2026-01-01 00:01:00')")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while int(&e.db, late).await < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the late bid was not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    insert_bids(&e.db, 16, 40).await;
    converges(&e.db, "highest", &closed(16)).await;
}
