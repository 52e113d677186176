//! Several agents over one S3-compatible bucket and one PostgreSQL
//! metadata store (both real, on loopback, started by the test command).
//!
//! - Three agents take writes through all of them while the agent running
//!   the view is SIGKILLed and restarted, repeatedly: afterwards every
//!   acknowledged row is there exactly once with dense offsets, and the view
//!   equals the bounded query on every agent.
//! - An agent paused (SIGSTOP) past its lease loses the view to another
//!   agent and, resumed, writes neither changelog nor checkpoint.
//! - PostgreSQL restarted during ingest: appends fail while it is down,
//!   none acknowledged is lost, and ingest resumes by itself.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use tokio_postgres::{Client, NoTls};

/// A fresh database on the test PostgreSQL server.
async fn metadata_url() -> String {
    let server = std::env::var("STREAMHOUSE_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "STREAMHOUSE_TEST_POSTGRES is not set: run the suite with ./scripts/test, \
             which starts a local PostgreSQL server and sets it"
        )
    });
    let (admin, conn) = tokio_postgres::connect(&format!("{server}/postgres"), NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(conn);
    let name = format!("c_{}", std::process::id()) + &format!("_{}", rand_suffix());
    admin
        .simple_query(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    format!("{server}/{name}")
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A fresh prefix in the test bucket.
fn object_store_url() -> String {
    let bucket = std::env::var("STREAMHOUSE_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!("STREAMHOUSE_TEST_S3_BUCKET is not set: run the suite with ./scripts/test")
    });
    format!("s3://{bucket}/cluster-{}", rand_suffix())
}

/// One agent: its data directory (scratch) and the process.
struct Agent {
    dir: std::path::PathBuf,
    args: Vec<String>,
    server: Option<Server>,
}

impl Agent {
    fn start(root: &Path, n: usize, metadata: &str, objects: &str) -> Agent {
        let dir = root.join(format!("agent{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let args = vec![
            "--data-dir".to_string(),
            dir.join("data").display().to_string(),
            "--metadata".to_string(),
            metadata.to_string(),
            "--object-store".to_string(),
            objects.to_string(),
            "--checkpoint-interval".to_string(),
            "500ms".to_string(),
        ];
        let mut a = Agent {
            dir,
            args,
            server: None,
        };
        a.restart();
        a
    }

    fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.server = Some(Server::start_logged(
            &self.dir,
            &args,
            &[],
            &self.dir.join("server.log"),
        ));
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("agent running")
    }

    fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.signal(libc::SIGKILL);
        }
    }

    fn pid(&self) -> i32 {
        self.server().child.id() as i32
    }

    /// This agent's id, from its own row of `streamhouse.agents`.
    async fn id(&self) -> String {
        let c = connect(self.server()).await;
        lines(&c, "SELECT agent FROM streamhouse.agents WHERE this").await[0].clone()
    }
}

async fn connect(server: &Server) -> Client {
    let (client, conn) = tokio_postgres::connect(&server.pg_url(), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn try_lines(c: &Client, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut out: Vec<String> = c
        .simple_query(sql)
        .await?
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
    Ok(out)
}

async fn lines(c: &Client, sql: &str) -> Vec<String> {
    try_lines(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error()))
}

/// The view's status as an agent reports it.
async fn view_status(c: &Client, view: &str) -> String {
    lines(
        c,
        &format!("SELECT status FROM streamhouse.views WHERE name = '{view}'"),
    )
    .await
    .pop()
    .unwrap_or_default()
}

/// Waits until some agent other than `not` runs the view; that agent's id
/// and how long it took.
async fn wait_for_owner(c: &Client, view: &str, not: &str, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let status = view_status(c, view).await;
        let owner = status.strip_prefix("running on agent ").map(str::to_string);
        let here = status == "running";
        match (owner, here) {
            (Some(o), _) if o != not => return o,
            (None, true) => {
                return lines(c, "SELECT agent FROM streamhouse.agents WHERE this").await[0]
                    .clone();
            }
            _ => {}
        }
        assert!(
            started.elapsed() < within,
            "view {view} not taken over within {within:?} (status {status:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn converges(c: &Client, view: &str, reference: &str, within: Duration) {
    let want = lines(c, reference).await;
    let deadline = Instant::now() + within;
    loop {
        let got = lines(c, &format!("SELECT * FROM {view}")).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{view} did not converge:\n got {got:?}\nwant {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const VIEW: &str = "SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k";
const REFERENCE: &str = "SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k";

/// Inserts batches of 50 rows with ids from `ids` through whichever agent
/// answers, recording the ids of acknowledged batches, until `stop`.
async fn produce(
    urls: Arc<Mutex<Vec<String>>>,
    first: usize,
    base: i64,
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut next = base;
    let mut which = first;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let url = urls.lock().unwrap()[which % 3].clone();
        let Ok((c, conn)) = tokio_postgres::connect(&url, NoTls).await else {
            which += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let ids: Vec<i64> = (next..next + 50).collect();
            next += 50;
            let values: Vec<String> = ids
                .iter()
                .map(|i| format!("({i}, {}, {})", i % 7, i % 100))
                .collect();
            let sql = format!("INSERT INTO events VALUES {}", values.join(", "));
            match c.simple_query(&sql).await {
                Ok(_) => acked.lock().unwrap().extend(ids),
                Err(_) => {
                    which += 1;
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_keep_every_acknowledged_row_and_the_view_exact_under_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let metadata = metadata_url().await;
    let objects = object_store_url();
    let mut agents: Vec<Agent> = (0..3)
        .map(|n| Agent::start(root.path(), n, &metadata, &objects))
        .collect();
    let c0 = connect(agents[0].server()).await;
    lines(
        &c0,
        "CREATE STREAM events (id BIGINT NOT NULL, k BIGINT, v BIGINT) \
         WITH (partitions = 4, key = 'k')",
    )
    .await;
    lines(&c0, &format!("CREATE MATERIALIZED VIEW totals AS {VIEW}")).await;
    drop(c0);

    let urls = Arc::new(Mutex::new(
        agents
            .iter()
            .map(|a| a.server().pg_url())
            .collect::<Vec<_>>(),
    ));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers: Vec<_> = (0..3)
        .map(|p| {
            tokio::spawn(produce(
                urls.clone(),
                p,
                p as i64 * 1_000_000_000,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Kill the agent running the view, three times; each time another
    // agent takes it over within 15 s.
    let mut takeovers = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let observer = (round + 1) % 3;
        let c = connect(agents[observer].server()).await;
        let owner = wait_for_owner(&c, "totals", "", Duration::from_secs(30)).await;
        let mut victim = None;
        for (i, a) in agents.iter().enumerate() {
            if a.id().await == owner {
                victim = Some(i);
            }
        }
        let victim = victim.expect("the owner is one of the agents");
        agents[victim].kill();
        let killed = Instant::now();
        let survivor = (victim + 1) % 3;
        let c = connect(agents[survivor].server()).await;
        let new_owner = wait_for_owner(&c, "totals", &owner, Duration::from_secs(15)).await;
        takeovers.push(killed.elapsed());
        assert_ne!(new_owner, owner);
        agents[victim].restart();
        urls.lock().unwrap()[victim] = agents[victim].server().pg_url();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    eprintln!("view takeovers after SIGKILL: {takeovers:?}");

    // Every acknowledged row exactly once; offsets dense per partition.
    let acked: HashSet<i64> = acked.lock().unwrap().iter().copied().collect();
    assert!(acked.len() > 1000, "only {} rows acknowledged", acked.len());
    let c = connect(agents[0].server()).await;
    let ids = c
        .query("SELECT id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect::<Vec<_>>();
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a row is present twice");
    let missing: Vec<_> = acked.difference(&unique).take(5).collect();
    assert!(missing.is_empty(), "acknowledged rows missing: {missing:?}");
    for row in lines(
        &c,
        "SELECT _partition, count(*), min(_offset), max(_offset) FROM events GROUP BY _partition",
    )
    .await
    {
        let f: Vec<i64> = row.split('|').map(|x| x.parse().unwrap()).collect();
        assert_eq!(
            (f[2], f[3] + 1),
            (0, f[1]),
            "partition {}: offsets not dense",
            f[0]
        );
    }

    // The view is exact, read through every agent (its owner's state and
    // the others' fold of its changelog).
    for a in &agents {
        let c = connect(a.server()).await;
        converges(&c, "totals", REFERENCE, Duration::from_secs(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_paused_past_its_lease_cannot_write_the_view() {
    let root = tempfile::tempdir().unwrap();
    let metadata = metadata_url().await;
    let objects = object_store_url();
    let a = Agent::start(root.path(), 0, &metadata, &objects);
    let b = Agent::start(root.path(), 1, &metadata, &objects);
    let ca = connect(a.server()).await;
    let cb = connect(b.server()).await;
    lines(
        &ca,
        "CREATE STREAM events (id BIGINT NOT NULL, k BIGINT, v BIGINT) WITH (partitions = 2)",
    )
    .await;
    lines(&ca, &format!("CREATE MATERIALIZED VIEW totals AS {VIEW}")).await;
    lines(&ca, "INSERT INTO events VALUES (1, 1, 10), (2, 2, 20)").await;
    converges(&cb, "totals", REFERENCE, Duration::from_secs(10)).await;
    assert_eq!(view_status(&ca, "totals").await, "running");
    let a_id = a.id().await;

    // Paused past its lease: b takes the view and keeps it up to date.
    // SAFETY: signals to our own child.
    assert_eq!(unsafe { libc::kill(a.pid(), libc::SIGSTOP) }, 0);
    let b_id = wait_for_owner(&cb, "totals", &a_id, Duration::from_secs(20)).await;
    assert_eq!(b_id, b.id().await);
    lines(&cb, "INSERT INTO events VALUES (3, 1, 5), (4, 3, 7)").await;
    converges(&cb, "totals", REFERENCE, Duration::from_secs(10)).await;
    // The changelog settles (the state is read before its append is durable).
    let mut changelog_before = lines(&cb, "SELECT count(*) FROM changes(totals)").await;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = lines(&cb, "SELECT count(*) FROM changes(totals)").await;
        if now == changelog_before {
            break;
        }
        changelog_before = now;
    }

    // Resumed, a still runs its copy with input it has not seen: its
    // changelog appends and checkpoints are refused, and it gives the view
    // up.
    assert_eq!(unsafe { libc::kill(a.pid(), libc::SIGCONT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = view_status(&ca, "totals").await;
        if status == format!("running on agent {b_id}") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "resumed agent still reports {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        lines(&cb, "SELECT count(*) FROM changes(totals)").await,
        changelog_before,
        "the paused agent wrote to the changelog after losing the view"
    );
    let log = std::fs::read_to_string(a.dir.join("server.log")).unwrap();
    for l in log
        .lines()
        .filter(|l| l.contains("superseded") || l.contains("lease"))
    {
        eprintln!("paused agent: {l}");
    }
    assert!(
        log.contains("superseded") || log.contains("lease on materialized view lost"),
        "no fencing in the resumed agent's log:\n{log}"
    );
    converges(&ca, "totals", REFERENCE, Duration::from_secs(10)).await;
    converges(&cb, "totals", REFERENCE, Duration::from_secs(10)).await;
}

/// A private PostgreSQL server this test may stop and start (the shared
/// one serves the other tests). As root, it runs as the postgres user.
struct PrivatePg {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
    as_root: bool,
}

impl PrivatePg {
    fn new() -> PrivatePg {
        let bin =
            std::path::PathBuf::from(std::env::var("STREAMHOUSE_TEST_PG_BIN").unwrap_or_else(
                |_| panic!("STREAMHOUSE_TEST_PG_BIN is not set: run the suite with ./scripts/test"),
            ));
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: getuid(2) has no preconditions.
        let as_root = unsafe { libc::getuid() } == 0;
        let data = dir.path().join("data");
        if as_root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePg {
            _dir: dir,
            data,
            bin,
            port,
            as_root,
        };
        let out = pg
            .command("initdb")
            .args([
                "-D",
                pg.data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "streamhouse",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start();
        pg
    }

    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        }
    }

    fn url(&self) -> String {
        format!("postgres://streamhouse@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let opts = format!("-h 127.0.0.1 -p {} -k {}", self.port, self.data.display());
        let out = self
            .command("pg_ctl")
            .args(["-D", self.data.to_str().unwrap(), "-o", &opts, "-w", "-l"])
            .arg(self.data.join("log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server the hard way (no shutdown checkpoint): what a crash
    /// of the database machine looks like to its clients.
    fn crash(&self) {
        let out = self
            .command("pg_ctl")
            .args([
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_survives_a_postgres_restart() {
    let pg = PrivatePg::new();
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(root.path(), 0, &pg.url(), &object_store_url());
    let c = connect(agent.server()).await;
    lines(
        &c,
        "CREATE STREAM events (id BIGINT NOT NULL, k BIGINT, v BIGINT) WITH (partitions = 2)",
    )
    .await;

    // One writer inserting batches of 20 rows, reconnecting after errors.
    let url = agent.server().pg_url();
    let acked = Arc::new(Mutex::new(Vec::<(Instant, i64)>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, errors, stop) = (acked.clone(), errors.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((c, conn)) = tokio_postgres::connect(&url, NoTls).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(conn);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let ids: Vec<i64> = (next..next + 20).collect();
                    next += 20;
                    let values: Vec<String> = ids
                        .iter()
                        .map(|i| format!("({i}, {}, {i})", i % 5))
                        .collect();
                    let sql = format!("INSERT INTO events VALUES {}", values.join(", "));
                    match c.simple_query(&sql).await {
                        Ok(_) => {
                            let now = Instant::now();
                            acked.lock().unwrap().extend(ids.iter().map(|&i| (now, i)));
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(match e.as_db_error() {
                                Some(d) => format!("{}: {}", d.code().code(), d.message()),
                                None => e.to_string(),
                            });
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            if c.is_closed() {
                                break;
                            }
                        }
                    }
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.crash();
    let down = Instant::now();
    // Longer than an append waits for the metadata store (10 s): appends
    // in flight fail rather than wait.
    tokio::time::sleep(Duration::from_secs(12)).await;
    pg.start();
    let up = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    let errors = errors.lock().unwrap().clone();
    let log = std::fs::read_to_string(agent.dir.join("server.log")).unwrap_or_default();
    for l in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        eprintln!("agent: {l}");
    }
    eprintln!(
        "acknowledged {} rows, {} errors while PostgreSQL was down; first: {:?}",
        acked.len(),
        errors.len(),
        errors.first()
    );
    // Appends failed while the metadata store was down, with a clear error.
    assert!(
        !errors.is_empty(),
        "no append failed while PostgreSQL was down"
    );
    assert!(
        errors.iter().all(|e| e.contains("metadata")),
        "unclear errors: {errors:?}"
    );
    // Nothing acknowledged while it was down; ingest resumed by itself.
    assert!(
        !acked
            .iter()
            .any(|(t, _)| *t > down + Duration::from_millis(500) && *t < up),
        "an append was acknowledged while PostgreSQL was down"
    );
    let after: Vec<_> = acked.iter().filter(|(t, _)| *t > up).collect();
    assert!(
        after.len() > 100,
        "ingest did not resume: {} rows after the restart",
        after.len()
    );

    // Every acknowledged row is there exactly once, offsets dense.
    let c = connect(agent.server()).await;
    let ids: Vec<i64> = c
        .query("SELECT id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let present: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(present.len(), ids.len(), "a row is present twice");
    let lost: Vec<i64> = acked
        .iter()
        .map(|(_, i)| *i)
        .filter(|i| !present.contains(i))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    for row in lines(
        &c,
        "SELECT _partition, count(*), min(_offset), max(_offset) FROM events GROUP BY _partition",
    )
    .await
    {
        let f: Vec<i64> = row.split('|').map(|x| x.parse().unwrap()).collect();
        assert_eq!(
            (f[2], f[3] + 1),
            (0, f[1]),
            "partition {}: offsets not dense",
            f[0]
        );
    }
}
