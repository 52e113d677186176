//! The object store going away under ingest: a server writes to the real
//! S3-compatible test server through a TCP proxy this test cuts. A short
//! outage is ridden out by retries with backoff; one longer than the retry
//! timeout fails appends with a clear error; either way nothing
//! acknowledged is lost, nothing is written twice, every object reads back,
//! and ingest resumes by itself.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_outages_are_retried_then_reported_and_lose_nothing() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the suite with ./scripts/test");
    let bucket = std::env::var("STREAMHOUSE_TEST_S3_BUCKET")
        .expect("STREAMHOUSE_TEST_S3_BUCKET is not set: run the suite with ./scripts/test");
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let proxy = Proxy::start(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!(
        "faults-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let store = format!("s3://{bucket}/{prefix}?retry_timeout=3s");
    let via_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let server = Server::start_logged(
        dir.path(),
        &["--data-dir", "data", "--object-store", &store],
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
}
