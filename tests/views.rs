//! Materialized views through the real server: created and read over the
//! PostgreSQL protocol, read over Flight SQL too, and SIGKILLed several
//! times during ingest — after each restart every view equals the bounded
//! query over the acknowledged rows.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use tokio_postgres::{Client, NoTls};

async fn connect(server: &Server) -> Client {
    let (client, conn) = tokio_postgres::connect(&server.pg_url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Rows as sorted text lines (simple protocol: every value as text).
async fn lines(c: &Client, sql: &str) -> Vec<String> {
    let mut out: Vec<String> = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

async fn converges(c: &Client, view: &str, reference: &str) {
    let want = lines(c, reference).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = lines(c, &format!("SELECT * FROM {view}")).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{view} did not converge:\n got {got:?}\nwant {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const VIEWS: &[(&str, &str)] = &[
    (
        "per_user",
        "SELECT user_id, count(*) AS n, sum(amount) AS total, max(amount) AS biggest FROM pay GROUP BY user_id",
    ),
    (
        "per_minute",
        "SELECT window_start, count(*) AS n, avg(amount) AS mean FROM TUMBLE(pay, ts, INTERVAL '1 minute') \
         GROUP BY window_start",
    ),
    (
        "everything",
        "SELECT count(*) AS n, sum(amount) AS total FROM pay",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_the_bounded_query_after_repeated_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
    let c = connect(&server).await;
    c.batch_execute(
        "CREATE STREAM pay (id BIGINT NOT NULL, user_id BIGINT, amount DOUBLE PRECISION, ts TIMESTAMP) \
         WITH (partitions = 4, key = 'user_id')",
    )
    .await
    .unwrap();
    for (name, sql) in VIEWS {
        c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .unwrap();
    }
    let mut next = 0i64;
    for round in 0..3 {
        let c = connect(&server).await;
        // Acknowledged inserts; the server dies right after the last one.
        for _ in 0..20 {
            let values: Vec<String> = (next..next + 50)
                .map(|i| {
                    format!(
                        "({i}, {}, {}.25, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{} seconds')",
                        i % 11,
                        i % 97,
                        i * 3
                    )
                })
                .collect();
            c.batch_execute(&format!("INSERT INTO pay VALUES {}", values.join(",")))
                .await
                .unwrap();
            next += 50;
        }
        server.signal(libc::SIGKILL);
        server = Server::start(dir.path(), &["--data-dir", "data"], &[]);
        let c = connect(&server).await;
        assert_eq!(
            lines(&c, "SELECT count(*) FROM pay").await,
            vec![next.to_string()],
            "round {round}: acknowledged rows lost"
        );
        for (name, sql) in VIEWS {
            converges(&c, name, sql).await;
        }
    }
    let c = connect(&server).await;
    let shown = lines(&c, "SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown.len(), VIEWS.len());
    // psql's \d lists views as views.
    let kinds = lines(
        &c,
        "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c WHERE c.relname IN ('pay', 'per_user')",
    )
    .await;
    assert_eq!(kinds.len(), 2, "{kinds:?}");
}
