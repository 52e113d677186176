//! The PostgreSQL door: a server in this process on loopback and a real
//! client, writing with multi-row INSERT statements and `COPY … FROM
//! STDIN` in CSV over several connections.

use std::sync::Arc;
use std::time::Instant;

use streamhouse_log::{DataDir, Log};

use crate::{Args, BENCH_USER, Row, open_database, prepare};

/// A server (log + SQL + PostgreSQL protocol) in this process, on loopback,
/// with the benchmark stream made.
async fn pg_server(dir: &std::path::Path, as_user: bool) -> (DataDir, Arc<Log>, String) {
    let (dd, log, db) = open_database(dir).await;
    prepare(&log, &db, as_user).await;
    let (addr, _) = listen(db, as_user).await;
    let url = if as_user {
        let (user, password) = BENCH_USER;
        format!(
            "host={} port={} user={user} password={password}",
            addr.ip(),
            addr.port()
        )
    } else {
        format!("host={} port={} user=streamhouse", addr.ip(), addr.port())
    };
    (dd, log, url)
}

async fn listen(
    db: Arc<streamhouse_sql::Database>,
    as_user: bool,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = streamhouse_pgwire::PgConfig::default();
    if as_user {
        config.startup.auth = streamhouse_pgwire::Auth::Password;
    }
    let handlers = streamhouse_pgwire::handlers(db, &config).expect("pgwire handlers");
    let task = tokio::spawn(async move {
        let _ = streamhouse_pgwire::serve(listener, handlers, config, std::future::pending()).await;
    });
    (addr, task)
}

/// A pgwire server for `db` on loopback, without passwords; its client
/// connection string.
pub async fn serve(db: Arc<streamhouse_sql::Database>) -> String {
    let (addr, _) = listen(db, false).await;
    format!("host={} port={} user=streamhouse", addr.ip(), addr.port())
}

/// `clients` connections, each sending `per_client` 10-row INSERTs one
/// after another: each statement's time to its acknowledgement, in µs.
pub async fn insert_latencies(
    url: &str,
    clients: usize,
    per_client: usize,
) -> hdrhistogram::Histogram<u64> {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.to_string();
            tokio::spawn(async move {
                let client = pg_client(&url).await;
                let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                for k in 0..per_client {
                    let first = (c * per_client + k) * 10;
                    let values: Vec<String> = (first..first + 10)
                        .map(|i| format!("({i},'2026-01-01 00:00:00','user-{i}','sku-{i}',1.5)"))
                        .collect();
                    let sql = format!("INSERT INTO bench VALUES {}", values.join(","));
                    let started = std::time::Instant::now();
                    client.batch_execute(&sql).await.expect("insert");
                    hist.record(started.elapsed().as_micros() as u64)
                        .expect("record");
                }
                hist
            })
        })
        .collect();
    let mut all = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        all.add(t.await.expect("client")).expect("merge");
    }
    all
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

fn csv_row(out: &mut String, i: usize) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "{i},2026-01-01 00:00:{:02},user-{:06}@example.org,sku-{:08}-{:04}-blue-large,{}",
        i % 60,
        i * 7919 % 50_000,
        i * 104_729 % 1_000_000,
        i % 977,
        (i % 10_000) as f64 * 0.01
    );
}

/// `INSERT` of rows `k*1000 .. k*1000+1000`, as a client would send it.
fn insert_statement(k: usize) -> String {
    let mut sql = String::from("INSERT INTO bench VALUES ");
    for r in 0..1000 {
        let i = k * 1000 + r;
        if r > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "({i},'2026-01-01 00:00:00','user-{:06}@example.org','sku-{:08}-blue-large',{})",
            i * 7919 % 50_000,
            i * 104_729 % 1_000_000,
            (i % 10_000) as f64 * 0.01
        ));
    }
    sql
}

pub async fn scenarios(args: &Args) -> Vec<Row> {
    let mut rows = Vec::new();
    // Multi-row INSERT: statements of 1,000 rows, over 2 and 4 connections.
    for conns in [2usize, 4] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_dd, log, url) = pg_server(tmp.path(), args.as_user).await;
        let statements = (args.rows / 10 / 1000).max(10);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..conns {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let client = pg_client(&url).await;
                let mut k = c;
                while k < statements {
                    client
                        .batch_execute(&insert_statement(k))
                        .await
                        .expect("insert");
                    k += conns;
                }
            }));
        }
        for t in tasks {
            t.await.expect("inserter");
        }
        rows.push(Row {
            scenario: format!("pgwire INSERT 1000-row statements x{conns}"),
            rows: (statements * 1000) as u64,
            seconds: started.elapsed().as_secs_f64(),
            bytes: 0,
            latency: None,
            ..Default::default()
        });
        log.shutdown().await;
    }
    // COPY FROM STDIN (CSV), one connection, data generated up front.
    {
        use futures::SinkExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_dd, log, url) = pg_server(tmp.path(), args.as_user).await;
        let client = pg_client(&url).await;
        let n = args.rows / 2;
        let chunks: Vec<bytes::Bytes> = (0..n)
            .step_by(10_000)
            .map(|start| {
                let mut s = String::with_capacity(10_000 * 100);
                for i in start..(start + 10_000).min(n) {
                    csv_row(&mut s, i);
                }
                bytes::Bytes::from(s)
            })
            .collect();
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        let started = Instant::now();
        let sink = client
            .copy_in::<_, bytes::Bytes>("COPY bench FROM STDIN WITH (FORMAT csv)")
            .await
            .expect("copy in");
        futures::pin_mut!(sink);
        for c in chunks {
            sink.send(c).await.expect("copy data");
        }
        let copied = sink.finish().await.expect("copy done");
        assert_eq!(copied as usize, n);
        rows.push(Row {
            scenario: "pgwire COPY FROM STDIN csv".into(),
            rows: copied,
            seconds: started.elapsed().as_secs_f64(),
            bytes: total as u64,
            latency: None,
            ..Default::default()
        });
        log.shutdown().await;
    }
    rows
}
