//! Materialized views through the real server: created and read over the
//! PostgreSQL protocol, and SIGKILLed several times during ingest — after
//! each restart every view equals the bounded query over the acknowledged
//! rows, and its changelog, applied in order, is exactly its contents (no
//! change lost, none written twice).

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use std::time::{Duration, Instant};

use common::{Server, connect, lines};
use tokio_postgres::Client;

/// A view's changelog applied in order: each delete must remove a row an
/// earlier insert added. Returns the rows left, sorted, or the first
/// inconsistency.
async fn applied_changelog(c: &Client, view: &str) -> Result<Vec<String>, String> {
    let rows = c
        .simple_query(&format!("SELECT * FROM changes({view}) ORDER BY _offset"))
        .await
        .map_err(|e| e.to_string())?;
    let mut live: Vec<String> = Vec::new();
    for m in rows {
        let tokio_postgres::SimpleQueryMessage::Row(r) = m else {
            continue;
        };
        // op, the view's columns, then _partition, _offset, _timestamp.
        let cols: Vec<String> = (1..r.len() - 3)
            .map(|i| r.get(i).unwrap_or("NULL").to_string())
            .collect();
        let row = cols.join("|");
        match r.get(0) {
            Some("insert") => live.push(row),
            Some("delete") => match live.iter().position(|l| *l == row) {
                Some(i) => {
                    live.swap_remove(i);
                }
                None => return Err(format!("delete of a row not present: {row}")),
            },
            other => return Err(format!("bad op {other:?}")),
        }
    }
    live.sort();
    Ok(live)
}

/// Waits until the changelog of `view` adds up to `want`.
async fn changelog_converges(c: &Client, view: &str, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = applied_changelog(c, view).await;
        if let Err(e) = &got {
            panic!("changelog of {view}: {e}");
        }
        if got.as_deref() == Ok(want) {
            return;
        }
        if Instant::now() >= deadline {
            let got = got.unwrap_or_default();
            let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
            let shown = lines(c, "SHOW MATERIALIZED VIEWS").await;
            panic!(
                "changelog of {view} did not converge ({} rows, want {}): missing {missing:?}, \
                 extra {extra:?}; views: {shown:#?}",
                got.len(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`common::converges`] within 30 s.
async fn converges(c: &Client, view: &str, reference: &str) {
    common::converges(c, view, reference, Duration::from_secs(30)).await
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
    (
        "distinct_amounts",
        "SELECT user_id % 3 AS g, count(DISTINCT amount) AS amounts FROM pay GROUP BY user_id % 3",
    ),
    (
        "closed_windows",
        "SELECT user_id, window_start, window_end, count(*) AS n, sum(amount) AS total \
         FROM TUMBLE(pay, ts, INTERVAL '30 seconds') GROUP BY user_id, window_start, window_end",
    ),
];

/// Views whose changelog holds every change (the others emit windows once
/// they close).
const ON_UPDATE: &[&str] = &[
    "per_user",
    "per_minute",
    "everything",
    "distinct_amounts",
    "a_histogram",
];

/// How many users have made n payments, over the `per_user` view.
const HISTOGRAM: &str = "SELECT n, count(*) AS users, sum(total) AS money FROM per_user GROUP BY n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_the_bounded_query_after_repeated_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--data-dir", "data", "--idle-timeout", "1s"];
    let mut server = Server::start(dir.path(), &args, &[]);
    let c = connect(&server).await;
    c.batch_execute(
        "CREATE STREAM pay (id BIGINT NOT NULL, user_id BIGINT, amount DOUBLE PRECISION, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (partitions = 4, key = 'user_id')",
    )
    .await
    .unwrap();
    for (name, sql) in VIEWS {
        c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await
            .unwrap();
    }
    // A view over a view (named to load before it: restarts must order
    // them by dependency).
    c.batch_execute(
        "CREATE MATERIALIZED VIEW a_rollup AS SELECT user_id, count(*) AS windows, sum(n) AS n \
         FROM closed_windows GROUP BY user_id",
    )
    .await
    .unwrap();
    // A view over a view with updates: per_user's deletes take back.
    c.batch_execute(&format!(
        "CREATE MATERIALIZED VIEW a_histogram AS {HISTOGRAM}"
    ))
    .await
    .unwrap();
    let histogram_reference =
        HISTOGRAM.replace("FROM per_user", &format!("FROM ({}) per_user", VIEWS[0].1));
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
        server = Server::start(dir.path(), &args, &[]);
        let c = connect(&server).await;
        assert_eq!(
            lines(&c, "SELECT count(*) FROM pay").await,
            vec![next.to_string()],
            "round {round}: acknowledged rows lost"
        );
        for (name, sql) in VIEWS {
            converges(&c, name, sql).await;
        }
        converges(&c, "a_histogram", &histogram_reference).await;
        for name in ON_UPDATE {
            let contents = lines(&c, &format!("SELECT * FROM {name}")).await;
            changelog_converges(&c, name, &contents).await;
        }
    }
    // Rows arrive in event-time order: no window had late rows. A row a
    // day later moves the watermark past every earlier window once the other
    // partitions go idle: each is emitted, once, with its final values.
    let c = connect(&server).await;
    c.batch_execute(&format!(
        "INSERT INTO pay VALUES ({next}, 0, 1, TIMESTAMP '2026-01-02 00:00:00')"
    ))
    .await
    .unwrap();
    let contents = lines(
        &c,
        "SELECT * FROM closed_windows WHERE window_start < TIMESTAMP '2026-01-02 00:00:00'",
    )
    .await;
    changelog_converges(&c, "closed_windows", &contents).await;
    let inserts = lines(
        &c,
        "SELECT count(*), count(DISTINCT (user_id, window_start)) FROM changes(closed_windows)",
    )
    .await;
    let n = contents.len();
    assert_eq!(inserts, vec![format!("{n}|{n}")]);
    converges(
        &c,
        "a_rollup",
        "SELECT user_id, count(*) AS windows, sum(n) AS n FROM closed_windows \
         WHERE window_start < TIMESTAMP '2026-01-02 00:00:00' GROUP BY user_id",
    )
    .await;
    let c = connect(&server).await;
    let shown = lines(&c, "SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown.len(), VIEWS.len() + 2);
    assert!(shown.iter().all(|l| l.contains("|running|")), "{shown:?}");
    // psql's \d lists views as views.
    let kinds = lines(
        &c,
        "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c WHERE c.relname IN ('pay', 'per_user')",
    )
    .await;
    assert_eq!(kinds.len(), 2, "{kinds:?}");
}

/// `GET path` on `addr`: the status, or `None` while nothing listens.
fn try_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// `/ready` answers 503 while views recover at start-up (`/live` already
/// answers 200), and 200 once they have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_views_recover() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = format!("127.0.0.1:{port}");
    // No checkpoint after the view's first: a restart replays every step.
    let args = ["--data-dir", "data", "--checkpoint-interval", "1h"];
    let mut server = Server::start(dir.path(), &args, &[]);
    let c = connect(&server).await;
    c.batch_execute(
        "CREATE STREAM r (k BIGINT, v DOUBLE PRECISION) WITH (partitions = 2); \
         CREATE MATERIALIZED VIEW r_totals AS SELECT k % 1000 AS g, count(*) AS n, sum(v) AS s FROM r GROUP BY k % 1000",
    )
    .await
    .unwrap();
    for round in 0..20 {
        c.batch_execute(&format!(
            "INSERT INTO r SELECT value + {}, value * 0.5 FROM generate_series(1, 20000)",
            round * 20000
        ))
        .await
        .unwrap();
    }
    converges(
        &c,
        "r_totals",
        "SELECT k % 1000 AS g, count(*) AS n, sum(v) AS s FROM r GROUP BY k % 1000",
    )
    .await;
    drop(c);
    server.signal(libc::SIGKILL);

    // Start again and watch the admin endpoints from the first moment.
    let mut child = std::process::Command::new(common::BIN)
        .current_dir(dir.path())
        .arg("server")
        .args(args)
        .args(["--http-addr", http.as_str()])
        .args(["--pg-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"])
        .args(["--kafka-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut not_ready_while_live = 0;
    loop {
        let live = try_status(&http, "/live");
        let ready = try_status(&http, "/ready");
        if ready == Some(200) {
            break;
        }
        if live == Some(200) && ready == Some(503) {
            not_ready_while_live += 1;
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("/ready said 503 {not_ready_while_live} times while /live said 200");
    assert!(
        not_ready_while_live > 0,
        "/ready never said 503 during recovery"
    );
}
