//! The object store going away under ingest: a server writes to the real
//! S3-compatible test server through a TCP proxy this test cuts. A short
//! outage is ridden out by retries with backoff; one longer than the retry
//! timeout fails appends with a clear error; either way nothing
//! acknowledged is lost, nothing is written twice, every object reads back,
//! and ingest resumes by itself. And the metadata file going away: a
//! backup of it in the object store (taken on a schedule and on demand)
//! is restored with `streamhouse metadata restore` and rolled forward with
//! the rows acknowledged after it, or, with no backup, the index is
//! rebuilt from the objects alone — every acknowledged row at its offset.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

/// A TCP proxy to the S3-compatible server that can be cut: while cut, its
/// port refuses connections and open connections are dropped.
struct Proxy {
    port: u16,
    upstream: String,
    accept: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Arc<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Arc::new(Proxy {
            port,
            upstream,
            accept: Mutex::new(None),
            conns: Arc::new(Mutex::new(Vec::new())),
        });
        p.serve(listener);
        p
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let conns = self.conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                conns.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                }));
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// Closes the port and drops every open connection.
    fn cut(&self) {
        if let Some(t) = self.accept.lock().unwrap().take() {
            t.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    async fn restore(&self) {
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }
}

/// The test S3-compatible server's endpoint, and a store URL under a
/// fresh prefix of its bucket named after `what`.
fn s3_test_store(what: &str) -> (String, String) {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the suite with ./scripts/test");
    let bucket = std::env::var("STREAMHOUSE_TEST_S3_BUCKET")
        .expect("STREAMHOUSE_TEST_S3_BUCKET is not set: run the suite with ./scripts/test");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (endpoint, format!("s3://{bucket}/{what}-{nanos}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_outages_are_retried_then_reported_and_lose_nothing() {
    let (endpoint, store) = s3_test_store("faults");
    let store = format!("{store}?retry_timeout=3s");
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let proxy = Proxy::start(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let via_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let server = Server::start_logged(
        dir.path(),
        &[
            "--data-dir",
            "data",
            "--object-store",
            &store,
            "--checkpoint-interval",
            "1s",
        ],
        &[("AWS_ENDPOINT_URL", &via_proxy)],
        &dir.path().join("server.log"),
    );
    let (c, conn) = tokio_postgres::connect(&server.pg_url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.simple_query("CREATE STREAM events (id BIGINT NOT NULL, v BIGINT) WITH (partitions = 2)")
        .await
        .unwrap();
    c.simple_query(
        "CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(v) AS s FROM events",
    )
    .await
    .unwrap();

    let acked = Arc::new(Mutex::new(Vec::<(Instant, i64)>::new()));
    let errors = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, errors, stop) = (acked.clone(), errors.clone(), stop.clone());
        let url = server.pg_url();
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
            tokio::spawn(conn);
            let mut next = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<i64> = (next..next + 20).collect();
                next += 20;
                let values: Vec<String> = ids.iter().map(|i| format!("({i}, {i})")).collect();
                let sql = format!("INSERT INTO events VALUES {}", values.join(", "));
                match c.simple_query(&sql).await {
                    Ok(_) => {
                        let now = Instant::now();
                        acked.lock().unwrap().extend(ids.iter().map(|&i| (now, i)));
                    }
                    Err(e) => {
                        let msg = match e.as_db_error() {
                            Some(d) => format!("{}: {}", d.code().code(), d.message()),
                            None => e.to_string(),
                        };
                        errors.lock().unwrap().push((Instant::now(), msg));
                    }
                }
            }
        })
    };

    // A short outage, within the retry timeout: ridden out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_short = acked.lock().unwrap().len();

    // A long one: appends fail, clearly, and ingest resumes afterwards.
    proxy.cut();
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.restore().await;
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    let errors = errors.lock().unwrap().clone();
    eprintln!(
        "acknowledged {} rows ({after_short} by the end of the short outage), {} errors; first: {:?}",
        acked.len(),
        errors.len(),
        errors.first().map(|e| &e.1)
    );
    let short_outage_errors: Vec<_> = errors.iter().filter(|(t, _)| *t < cut).collect();
    assert!(
        short_outage_errors.is_empty(),
        "the short outage was not ridden out: {short_outage_errors:?}"
    );
    assert!(
        !errors.is_empty(),
        "no append failed during the long outage"
    );
    for (_, e) in &errors {
        assert!(e.contains("object store"), "unclear error: {e}");
    }
    let resumed = acked.iter().filter(|(t, _)| *t > restored).count();
    assert!(resumed > 0, "ingest did not resume after the outage");

    // Everything acknowledged reads back, once; offsets dense.
    common::assert_acknowledged_exactly_once(&c, "events", acked.iter().map(|(_, i)| *i)).await;

    // The view, stopped by the long outage, started again from its last
    // checkpoint and caught up.
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(
        log.contains("restarting materialized view from its last checkpoint"),
        "the view did not stop during the long outage:\n{log}"
    );
    common::converges(
        &c,
        "totals",
        "SELECT count(*), sum(v) FROM events",
        Duration::from_secs(30),
    )
    .await;
}

/// Counts rows and lists a group's offsets and the roles, through psql's
/// door.
async fn state_of(server: &Server) -> (i64, Vec<(i32, i64)>, Vec<String>) {
    let c = common::connect(server).await;
    let rows: i64 = c
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let groups = c
        .query(
            "SELECT partition, committed FROM streamhouse.consumer_groups \
             WHERE \"group\" = 'billing' ORDER BY partition",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as i32, r.get::<_, i64>(1)))
        .collect();
    let roles = c
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname = 'auditor'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (rows, groups, roles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_metadata_file_is_restored_from_its_backup_in_the_object_store() {
    let (endpoint, store) = s3_test_store("backups");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let args = [
        "--data-dir",
        data,
        "--object-store",
        &store,
        "--metadata-backup-interval",
        "1s",
        "--metadata-backups-kept",
        "3",
    ];
    let envs = [("AWS_ENDPOINT_URL", endpoint.as_str())];
    let mut server = Server::start(dir.path(), &args, &envs);
    let c = common::connect(&server).await;
    c.batch_execute(
        "CREATE STREAM events (id BIGINT NOT NULL) WITH (partitions = 2); \
         INSERT INTO events SELECT n FROM generate_series(0, 99) AS t(n); \
         INSERT INTO events SELECT n FROM generate_series(100, 249) AS t(n); \
         CREATE ROLE auditor",
    )
    .await
    .unwrap();
    let http = server.http();
    let (status, body) = common::post(
        &http,
        "/v1/groups/billing/reset",
        r#"{"stream": "events", "to": "latest"}"#,
    );
    assert_eq!(status, 200, "{body}");

    // Scheduled backups appear and only the newest three are kept.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = common::get(&http, "/v1/metadata/backups");
        assert_eq!(status, 200, "{body}");
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        let n = listed["backups"].as_array().unwrap().len();
        assert!(n <= 3, "more backups kept than asked: {body}");
        if n == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled backups: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One on demand, after the last change.
    let (status, body) = common::post(&http, "/v1/metadata/backups", "");
    assert_eq!(status, 201, "{body}");
    let taken: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        taken["key"]
            .as_str()
            .unwrap()
            .starts_with("metadata/backups/")
    );
    let before = state_of(&server).await;
    assert_eq!(before.0, 250);
    assert_eq!(before.1.iter().map(|(_, o)| o).sum::<i64>(), 250);
    assert_eq!(before.2, ["auditor"]);

    // Rows acknowledged after the backup are in the object store only.
    c.batch_execute("INSERT INTO events VALUES (1000), (1001)")
        .await
        .unwrap();

    // The process dies and its metadata file is lost.
    drop(c);
    server.signal(libc::SIGKILL);
    for f in ["metadata.db", "metadata.db-wal", "metadata.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join("data").join(f));
    }
    let restore = |extra: &[&str]| {
        std::process::Command::new(common::BIN)
            .args([
                "metadata",
                "restore",
                "--data-dir",
                data,
                "--object-store",
                &store,
            ])
            .args(extra)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .output()
            .unwrap()
    };
    // The on-demand backup by name: a scheduled one may have run since.
    let name = taken["key"].as_str().unwrap().rsplit('/').next().unwrap();
    let out = restore(&["--backup", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(taken["key"].as_str().unwrap()), "{said}");
    assert!(
        said.contains("every chunk the restored index lists is in the object store"),
        "{said}"
    );
    // The two rows acknowledged after the backup are rolled forward.
    assert!(said.contains("(2 rows) added"), "{said}");
    // A second restore would replace the file: refused.
    let out = restore(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("move it aside"));

    // Every row, the group's offsets and the role, as they were (the
    // group's offsets as the backup had them).
    let mut server = Server::start(dir.path(), &args, &envs);
    let after = state_of(&server).await;
    assert_eq!(after, (before.0 + 2, before.1.clone(), before.2.clone()));
    let c = common::connect(&server).await;
    let offsets: Vec<i64> = c
        .query(
            "SELECT _offset FROM events WHERE _partition = 0 ORDER BY _offset",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
    c.batch_execute("INSERT INTO events VALUES (250)")
        .await
        .unwrap();
    // While the server runs, a restore is refused (the data directory is
    // locked).
    let out = restore(&["--backup", "nothing"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop the server first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a backup: writers insert while the process is killed; the
    // metadata file is lost; the index is rebuilt from the objects alone.
    let acked = insert_until_killed(&mut server, 10_000).await;
    assert!(acked.len() >= 500, "only {} rows acknowledged", acked.len());
    // The truth, read through the intact metadata (more rows in every
    // partition — appends without a key go round the partitions — so that
    // a flush cut off by the kill is superseded in each, as the next flush
    // would).
    let server = Server::start(dir.path(), &args, &envs);
    let c = common::connect(&server).await;
    for id in 99996..100_000i64 {
        c.execute("INSERT INTO events VALUES ($1)", &[&id])
            .await
            .unwrap();
    }
    let partitions: i64 = c
        .query_one(
            "SELECT count(DISTINCT _partition) FROM events WHERE id >= 99996",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        partitions, 2,
        "the rows after the restart reach every partition"
    );
    let truth = every_row(&c).await;
    drop(c);
    let mut server = server;
    server.signal(libc::SIGKILL);
    for f in ["metadata.db", "metadata.db-wal", "metadata.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join("data").join(f));
    }
    // A server does not start on a lost metadata file.
    let refused = std::process::Command::new(common::BIN)
        .current_dir(dir.path())
        .args([
            "server",
            "--http-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--flight-addr",
            "127.0.0.1:0",
            "--kafka-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains("streamhouse metadata restore"), "{err}");
    assert!(!dir.path().join("data/metadata.db").exists());

    let out = restore(&["--from-objects"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("streams made: ") && said.contains("events"),
        "{said}"
    );
    assert!(
        said.contains("every chunk the restored index lists is in the object store"),
        "{said}"
    );
    assert!(!said.contains("no object holds"), "{said}");
    let server = Server::start(dir.path(), &args, &envs);
    let c = common::connect(&server).await;
    // Every row at the offset it had, every acknowledged one among them.
    assert_eq!(every_row(&c).await, truth);
    common::assert_acknowledged_exactly_once(&c, "events", acked).await;
}

/// Every row of `events` as (partition, offset, id).
async fn every_row(c: &tokio_postgres::Client) -> Vec<(i32, i64, i64)> {
    c.query(
        "SELECT _partition, _offset, id FROM events ORDER BY _partition, _offset",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Three writers insert rows into `events` (ids from `first`) until the
/// server is killed mid-write; the ids acknowledged.
async fn insert_until_killed(server: &mut Server, first: i64) -> Vec<i64> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..3i64 {
        let c = common::connect(server).await;
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            // 50 rows a statement (a flush every 150 ms on S3).
            for i in 0.. {
                let from = first + w * 1_000_000 + i * 50;
                let insert = "INSERT INTO events SELECT $1::BIGINT + n \
                              FROM generate_series(0, 49) AS t(n)";
                if c.execute(insert, &[&from]).await.is_err() {
                    return;
                }
                acked.lock().unwrap().extend(from..from + 50);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    server.signal(libc::SIGKILL);
    for w in writers {
        w.await.unwrap();
    }
    std::mem::take(&mut *acked.lock().unwrap())
}
