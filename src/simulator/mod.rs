//! Simulated producers and consumers, run inside the server for the
//! console's simulator and for demonstrations.
//!
//! A simulated producer appends generated rows ([`generate`]) to a stream
//! at a chosen rate through the log's ordinary append path; a simulated
//! consumer reads a stream as a member of a consumer group through the
//! log's ordinary consumer rules (joins, heartbeats, rebalances, offsets
//! committed with the member's ownership checked), at a chosen rate or as
//! fast as it can. So their rows, groups, members, offsets and lag are
//! what every other door and page shows; nothing else knows they are
//! simulated but their ids (`sim-producer-N`, `sim-consumer-N`).
//!
//! Bounded: at most [`MAX_CLIENTS`] at once, [`MAX_START`] started by one
//! request, a producer at most [`MAX_PRODUCER_RATE`] rows/s. They live in
//! this process only: a restart ends them, and shutdown stops them (a
//! consumer commits what it consumed and leaves its group).

mod consumer;
pub mod generate;
mod producer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use streamhouse_log::consume::Position;
use streamhouse_log::{ErrorKind, Log, LogError, StreamKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Simulated clients running at once, at most.
pub const MAX_CLIENTS: usize = 64;
/// Clients one request starts, at most.
pub const MAX_START: u32 = 16;
/// Rows per second one simulated producer writes, at most.
pub const MAX_PRODUCER_RATE: u64 = 100_000;
/// Rows per second one simulated consumer is held to, at most (above it,
/// leave the rate out: as fast as it can).
pub const MAX_CONSUMER_RATE: u64 = 1_000_000;
/// How often a client does its next step (a producer's append, a
/// consumer's share of rows and its commit).
const TICK: Duration = Duration::from_millis(100);
/// How long a client waits after an error it may outlive.
const RETRY: Duration = Duration::from_secs(1);
/// How long a stopping client gets to finish before it is cut off.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to start: producers or consumers.
#[derive(Debug, Clone)]
pub enum Start {
    Producers {
        stream: String,
        count: u32,
        /// Rows per second, each.
        rate: u64,
        /// Stop after this many rows, each.
        rows: Option<u64>,
    },
    Consumers {
        stream: String,
        group: String,
        count: u32,
        /// Rows per second, each; as fast as it can when absent.
        rate: Option<u64>,
        /// Where a new group starts.
        from: Position,
    },
}

/// Why a start was refused.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{running} simulated clients are running and at most {MAX_CLIENTS} may be; stop some first"
    )]
    TooMany { running: usize },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// A simulated client as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    pub id: String,
    pub kind: &'static str,
    pub stream: String,
    pub group: Option<String>,
    pub rate: Option<u64>,
    /// The role that started it (none without passwords).
    pub owner: Option<String>,
    pub started_at_us: i64,
    /// Rows produced or consumed.
    pub rows: u64,
    /// `running`, `finished` (a producer's rows are all written) or
    /// `failed`.
    pub state: &'static str,
    pub error: Option<String>,
    /// A consumer's partitions in its group's current generation.
    pub partitions: Vec<u32>,
    pub generation: Option<u64>,
    /// Times a consumer joined its group's new generations.
    pub rebalances: u64,
}

/// What a running client reports.
#[derive(Debug, Default)]
struct Status {
    rows: AtomicU64,
    rebalances: AtomicU64,
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    state: Option<&'static str>,
    error: Option<String>,
    partitions: Vec<u32>,
    generation: Option<u64>,
}

impl Status {
    fn add_rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
    }

    fn set_error(&self, e: Option<String>) {
        self.inner.lock().expect("status").error = e;
    }

    fn end(&self, state: &'static str, error: Option<String>) {
        let mut s = self.inner.lock().expect("status");
        s.state = Some(state);
        if error.is_some() {
            s.error = error;
        }
        s.partitions.clear();
    }

    fn assigned(&self, partitions: Vec<u32>, generation: u64) {
        let mut s = self.inner.lock().expect("status");
        s.partitions = partitions;
        s.generation = Some(generation);
        s.error = None;
    }
}

/// Whether a client outlives `e` (waits and tries again) or ends with it.
fn transient(e: &LogError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Unavailable | ErrorKind::ResourceExhausted | ErrorKind::Conflict
    )
}

struct Client {
    id: String,
    kind: &'static str,
    stream: String,
    group: Option<String>,
    rate: Option<u64>,
    owner: Option<String>,
    started_at_us: i64,
    status: Arc<Status>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Client {
    fn view(&self) -> ClientView {
        let s = self.status.inner.lock().expect("status");
        ClientView {
            id: self.id.clone(),
            kind: self.kind,
            stream: self.stream.clone(),
            group: self.group.clone(),
            rate: self.rate,
            owner: self.owner.clone(),
            started_at_us: self.started_at_us,
            rows: self.status.rows.load(Ordering::Relaxed),
            state: s.state.unwrap_or("running"),
            error: s.error.clone(),
            partitions: s.partitions.clone(),
            generation: s.generation,
            rebalances: self.status.rebalances.load(Ordering::Relaxed),
        }
    }

    /// Asks it to stop and waits (cut off after [`STOP_GRACE`]).
    async fn stop(self) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_GRACE, self.task).await.is_err() {
            abort.abort();
        }
    }
}

/// The simulated clients of this server.
pub struct Simulator {
    log: Arc<Log>,
    clients: Mutex<BTreeMap<u64, Client>>,
    next_id: AtomicU64,
}

impl Simulator {
    pub fn new(log: Arc<Log>) -> Simulator {
        Simulator {
            log,
            clients: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Starts clients for `owner`; answers them. The stream must exist and,
    /// for producers, have columns a generator can fill.
    pub async fn start(
        &self,
        start: Start,
        owner: Option<String>,
    ) -> Result<Vec<ClientView>, StartError> {
        let count = match &start {
            Start::Producers { count, .. } | Start::Consumers { count, .. } => *count,
        };
        if count == 0 || count > MAX_START {
            return Err(StartError::Invalid(format!(
                "count must be between 1 and {MAX_START}, not {count}"
            )));
        }
        let stream = match &start {
            Start::Producers { stream, .. } | Start::Consumers { stream, .. } => stream,
        };
        let info = self.log.stream(stream).await?;
        let plan = match &start {
            Start::Producers { rate, rows, .. } => {
                if *rate == 0 || *rate > MAX_PRODUCER_RATE {
                    return Err(StartError::Invalid(format!(
                        "rate must be between 1 and {MAX_PRODUCER_RATE} rows/s, not {rate}"
                    )));
                }
                if *rows == Some(0) {
                    return Err(StartError::Invalid("rows must be at least 1".into()));
                }
                if StreamKind::of(info.name()) != StreamKind::User {
                    return Err(StartError::Invalid(format!(
                        "stream \"{stream}\" is written by the system; simulated producers \
                         write users' streams"
                    )));
                }
                generate::Generator::new(info.spec.schema.clone(), 0)
                    .map_err(|e| StartError::Invalid(e.to_string()))?;
                Some(info)
            }
            Start::Consumers { rate, group, .. } => {
                if let Some(r) = rate
                    && (*r == 0 || *r > MAX_CONSUMER_RATE)
                {
                    return Err(StartError::Invalid(format!(
                        "rate must be between 1 and {MAX_CONSUMER_RATE} rows/s (or left out: \
                         as fast as it can), not {r}"
                    )));
                }
                if group.is_empty() {
                    return Err(StartError::Invalid("a consumer needs a group".into()));
                }
                None
            }
        };
        let mut clients = self.clients.lock().expect("clients");
        let running = clients.len();
        if running + count as usize > MAX_CLIENTS {
            return Err(StartError::TooMany { running });
        }
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let n = self.next_id.fetch_add(1, Ordering::Relaxed);
            let status = Arc::new(Status::default());
            let (stop, stopped) = watch::channel(false);
            let log = self.log.clone();
            let client = match &start {
                Start::Producers {
                    stream, rate, rows, ..
                } => {
                    let id = format!("sim-producer-{n}");
                    let info = plan.clone().expect("a producer's stream");
                    let task = tokio::spawn(producer::run(
                        log,
                        producer::Plan {
                            info,
                            rate: *rate,
                            rows: *rows,
                            seed: n,
                        },
                        status.clone(),
                        stopped,
                    ));
                    Client {
                        id,
                        kind: "producer",
                        stream: stream.clone(),
                        group: None,
                        rate: Some(*rate),
                        owner: owner.clone(),
                        started_at_us: self.log.now_micros(),
                        status,
                        stop,
                        task,
                    }
                }
                Start::Consumers {
                    stream,
                    group,
                    rate,
                    from,
                    ..
                } => {
                    let id = format!("sim-consumer-{n}");
                    let task = tokio::spawn(consumer::run(
                        log,
                        consumer::Plan {
                            stream: stream.clone(),
                            group: group.clone(),
                            member: id.clone(),
                            rate: *rate,
                            from: *from,
                        },
                        status.clone(),
                        stopped,
                    ));
                    Client {
                        id,
                        kind: "consumer",
                        stream: stream.clone(),
                        group: Some(group.clone()),
                        rate: *rate,
                        owner: owner.clone(),
                        started_at_us: self.log.now_micros(),
                        status,
                        stop,
                        task,
                    }
                }
            };
            out.push(client.view());
            clients.insert(n, client);
        }
        Ok(out)
    }

    /// Every client, in the order they started.
    pub fn list(&self) -> Vec<ClientView> {
        self.clients
            .lock()
            .expect("clients")
            .values()
            .map(Client::view)
            .collect()
    }

    /// One client by id.
    pub fn get(&self, id: &str) -> Option<ClientView> {
        self.clients
            .lock()
            .expect("clients")
            .values()
            .find(|c| c.id == id)
            .map(Client::view)
    }

    /// Stops one client and forgets it; answers what it was.
    pub async fn stop(&self, id: &str) -> Option<ClientView> {
        let client = {
            let mut clients = self.clients.lock().expect("clients");
            let key = clients.iter().find(|(_, c)| c.id == id).map(|(k, _)| *k)?;
            clients.remove(&key)?
        };
        let status = client.status.clone();
        let mut view = client.view();
        client.stop().await;
        view.rows = status.rows.load(Ordering::Relaxed);
        if view.state == "running" {
            view.state = "stopped";
        }
        view.partitions.clear();
        Some(view)
    }

    /// Stops the clients `keep` says yes to (all of them on shutdown);
    /// answers how many.
    pub async fn stop_where(&self, keep: impl Fn(&ClientView) -> bool) -> usize {
        let chosen: Vec<Client> = {
            let mut clients = self.clients.lock().expect("clients");
            let keys: Vec<u64> = clients
                .iter()
                .filter(|(_, c)| keep(&c.view()))
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| clients.remove(k)).collect()
        };
        let n = chosen.len();
        futures::future::join_all(chosen.into_iter().map(Client::stop)).await;
        n
    }
}
