//! Several agents over one S3-compatible bucket and one PostgreSQL
//! metadata store (both real, on loopback, started by the test command).
//!
//! - Three agents take writes through all of them while a view and a
//!   two-member consumer group run and the agent running the view is
//!   SIGKILLed and restarted, repeatedly: afterwards every acknowledged row
//!   is there exactly once with dense offsets, the view equals the bounded
//!   query on every agent, and no committed group offset ever went back.
//! - Views created on one agent spread over the agents.
//! - An agent paused (SIGSTOP) past its lease loses the view to another
//!   agent and, resumed, writes neither changelog nor checkpoint.
//! - PostgreSQL restarted during ingest: appends fail while it is down,
//!   none acknowledged is lost, and ingest resumes by itself.

#![allow(clippy::disallowed_methods)] // tests and benchmarks time real processes and servers

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, assert_acknowledged_exactly_once, connect, converges, lines, try_lines};
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
            "--log-level".to_string(),
            "info,streamhouse_sql=debug".to_string(),
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

/// A failing test shows the end of each agent's log.
impl Drop for Agent {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        eprintln!("--- last lines of {}/server.log ---", self.dir.display());
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
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

const VIEW: &str = "SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k";
const REFERENCE: &str = "SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k";

/// A Flight action on the agent at `flight` (`grpc://host:port`).
async fn action(
    flight: &str,
    kind: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    use futures::TryStreamExt;
    let channel = tonic::transport::Channel::from_shared(flight.to_string())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = arrow_flight::FlightClient::new(channel);
    let mut results = client
        .do_action(arrow_flight::Action::new(kind, body.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let first = results
        .try_next()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no answer")?;
    serde_json::from_slice(&first).map_err(|e| e.to_string())
}

/// One member of group `g` on stream `events`: (re)joins through the agents
/// in turn, and commits, in its generation, the current end of each
/// partition it owns (a reader that has read everything). Returns when
/// `stop` is set.
async fn group_member(
    member: &'static str,
    flights: Arc<Mutex<Vec<String>>>,
    pg_urls: Arc<Mutex<Vec<String>>>,
    first: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let mut which = first;
    let mut commits = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let flight = flights.lock().unwrap()[which % 3].clone();
        let pg = pg_urls.lock().unwrap()[which % 3].clone();
        let join = serde_json::json!({"group": "g", "stream": "events", "member": member,
                                      "session_timeout_ms": 3000});
        let Ok(a) = action(&flight, "join_group", join).await else {
            which += 1;
            continue;
        };
        let Ok((c, conn)) = tokio_postgres::connect(&pg, NoTls).await else {
            which += 1;
            continue;
        };
        tokio::spawn(conn);
        let Ok(ends) = common::try_lines(
            &c,
            "SELECT _partition, max(_offset) + 1 FROM events GROUP BY _partition",
        )
        .await
        else {
            which += 1;
            continue;
        };
        let owned: Vec<u64> = serde_json::from_value(a["partitions"].clone()).unwrap();
        let offsets: serde_json::Map<String, serde_json::Value> = ends
            .iter()
            .filter_map(|l| {
                let (p, end) = l.split_once('|')?;
                let end: u64 = end.parse().ok()?;
                owned
                    .contains(&p.parse().ok()?)
                    .then(|| (p.to_string(), serde_json::json!(end)))
            })
            .collect();
        let commit = serde_json::json!({"group": "g", "stream": "events", "member": member,
                                        "generation": a["generation"], "offsets": offsets});
        match action(&flight, "commit_offsets", commit).await {
            Ok(_) => commits += 1,
            // Rebalanced meanwhile, or the agent went away: try again.
            Err(_) => which += 1,
        }
    }
    commits
}

/// The group's committed offset of each partition, from any agent.
async fn committed(pg: &str) -> Option<Vec<(i64, i64)>> {
    let (c, conn) = tokio_postgres::connect(pg, NoTls).await.ok()?;
    tokio::spawn(conn);
    let rows = common::try_lines(
        &c,
        "SELECT \"partition\", committed FROM streamhouse.consumer_groups \
         WHERE \"group\" = 'g' AND committed IS NOT NULL",
    )
    .await
    .ok()?;
    Some(
        rows.iter()
            .map(|l| {
                let (p, o) = l.split_once('|').unwrap();
                (p.parse().unwrap(), o.parse().unwrap())
            })
            .collect(),
    )
}

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

    // Two group members, each talking to its own agent (and to the next
    // when that one dies); a watcher checks committed offsets only grow.
    let flights = Arc::new(Mutex::new(
        agents
            .iter()
            .map(|a| {
                a.server()
                    .line("Flight")
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>(),
    ));
    let members: Vec<_> = ["m1", "m2"]
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            tokio::spawn(group_member(
                m,
                flights.clone(),
                urls.clone(),
                i,
                stop.clone(),
            ))
        })
        .collect();
    let watcher = {
        let (urls, stop) = (urls.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen: std::collections::BTreeMap<i64, i64> = Default::default();
            let mut which = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let url = urls.lock().unwrap()[which % 3].clone();
                let Some(now) = committed(&url).await else {
                    which += 1;
                    continue;
                };
                for (p, o) in now {
                    let last = seen.entry(p).or_insert(o);
                    assert!(
                        o >= *last,
                        "partition {p}: committed offset went back from {last} to {o}"
                    );
                    *last = o;
                }
            }
            seen
        })
    };

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
        flights.lock().unwrap()[victim] = agents[victim]
            .server()
            .line("Flight")
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    let commits: Vec<usize> = futures::future::join_all(members)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let seen = watcher.await.unwrap();
    eprintln!(
        "view takeovers after SIGKILL: {takeovers:?}; group commits {commits:?}; offsets {seen:?}"
    );
    assert!(
        commits.iter().all(|&n| n > 0),
        "a member never committed: {commits:?}"
    );
    assert_eq!(seen.len(), 4, "not every partition was committed: {seen:?}");

    // Every acknowledged row exactly once; offsets dense per partition.
    let acked: HashSet<i64> = acked.lock().unwrap().iter().copied().collect();
    assert!(acked.len() > 1000, "only {} rows acknowledged", acked.len());
    let c = connect(agents[0].server()).await;
    assert_acknowledged_exactly_once(&c, "events", acked).await;

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
    assert_acknowledged_exactly_once(&c, "events", acked.iter().map(|(_, i)| *i)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_created_on_one_agent_spread_over_the_agents() {
    let root = tempfile::tempdir().unwrap();
    let metadata = metadata_url().await;
    let objects = object_store_url();
    let agents: Vec<Agent> = (0..2)
        .map(|n| Agent::start(root.path(), n, &metadata, &objects))
        .collect();
    let c = connect(agents[0].server()).await;
    lines(
        &c,
        "CREATE STREAM events (id BIGINT NOT NULL, k BIGINT, v BIGINT)",
    )
    .await;
    for i in 0..4 {
        lines(
            &c,
            &format!("CREATE MATERIALIZED VIEW v{i} AS SELECT k, count(*) AS n FROM events WHERE k % 4 = {i} GROUP BY k"),
        )
        .await;
    }
    // A view over a view, handed over first (last by name): it runs on the
    // other agent, reading v0's changelog.
    lines(
        &c,
        "CREATE MATERIALIZED VIEW zgroups AS SELECT count(*) AS n FROM v0",
    )
    .await;
    lines(
        &c,
        "INSERT INTO events SELECT x, x % 8, x + 0 FROM generate_series(1, 100) AS g(x)",
    )
    .await;
    // The creator holds all five at first; each round it hands one back
    // until both hold their share (3 and 2).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut running = Vec::new();
        for a in &agents {
            let c = connect(a.server()).await;
            running.push(
                lines(&c, "SELECT views FROM streamhouse.agents WHERE this").await[0].clone(),
            );
        }
        running.sort();
        if running == ["2", "3"] {
            break;
        }
        if Instant::now() > deadline {
            for a in &agents {
                let log = std::fs::read_to_string(a.dir.join("server.log")).unwrap_or_default();
                for l in log
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("view"))
                {
                    eprintln!("{}: {l}", a.dir.display());
                }
            }
            for a in &agents {
                let c = connect(a.server()).await;
                eprintln!(
                    "{:?}",
                    lines(&c, "SELECT name, status FROM streamhouse.views").await
                );
            }
            panic!("views not spread: {running:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every view reads the same through both agents.
    for a in &agents {
        let c = connect(a.server()).await;
        for i in 0..4 {
            converges(
                &c,
                &format!("v{i}"),
                &format!("SELECT k, count(*) AS n FROM events WHERE k % 4 = {i} GROUP BY k"),
                Duration::from_secs(15),
            )
            .await;
        }
        converges(
            &c,
            "zgroups",
            "SELECT count(*) AS n FROM (SELECT k FROM events WHERE k % 4 = 0 GROUP BY k)",
            Duration::from_secs(15),
        )
        .await;
    }
}

/// ALTER STREAM … ADD COLUMN through one agent: the other learns the new
/// version from the store's announcement, takes rows with the new column
/// and reads the rows written before through it (its default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_through_one_agent_is_seen_by_the_other() {
    let root = tempfile::tempdir().unwrap();
    let metadata = metadata_url().await;
    let objects = object_store_url();
    let agents: Vec<Agent> = (0..2)
        .map(|n| Agent::start(root.path(), n, &metadata, &objects))
        .collect();
    let a = connect(agents[0].server()).await;
    let b = connect(agents[1].server()).await;
    lines(&a, "CREATE STREAM evolving (id BIGINT NOT NULL, k TEXT)").await;
    lines(&a, "INSERT INTO evolving VALUES (1, 'x'), (2, 'y')").await;
    // The other agent knows the stream as created.
    assert_eq!(lines(&b, "SELECT count(*) FROM evolving").await, ["2"]);
    lines(
        &a,
        "ALTER STREAM evolving ADD COLUMN qty BIGINT NOT NULL DEFAULT 5",
    )
    .await;
    // The announcement reaches the other agent shortly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_lines(&b, "INSERT INTO evolving VALUES (3, 'z', 30)").await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the other agent never learned the new column: {e}"),
        }
    }
    let want = ["1|x|5", "2|y|5", "3|z|30"];
    for c in [&a, &b] {
        assert_eq!(
            lines(
                c,
                "SELECT id || '|' || k || '|' || qty FROM evolving ORDER BY id"
            )
            .await,
            want
        );
        assert_eq!(
            lines(
                c,
                "SELECT max(version) FROM streamhouse.schema_versions WHERE stream = 'evolving'"
            )
            .await,
            ["2"]
        );
    }
}
