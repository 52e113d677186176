//! The consumer API: `DoGet` with a JSON ticket.
//!
//! ```json
//! {"stream": "orders", "partition": 0, "from": "earliest", "follow": false}
//! ```
//!
//! - `partition`: a number, a list, or absent for all partitions.
//! - `from`: `"earliest"` (default), `"latest"`, an offset number, or an
//!   RFC 3339 timestamp string (the first row appended at or after it).
//! - `follow`: keep the call open and send rows as they are committed.
//! - `group`: a consumer group; each partition starts at the group's
//!   committed offset (`from` applies where nothing is committed).
//! - `member` (with `group`): join the group as this member and read only
//!   the partitions assigned to it. An open read keeps the member alive;
//!   when the group rebalances the read fails with ABORTED, and the client
//!   reads again (from the committed offsets, with its new partitions).
//!   `strategy` (`"range"` or `"round_robin"`) and `session_timeout_ms`
//!   apply when the read creates the group or joins it.
//!
//! Batches carry the stream's columns and `_partition`, `_offset`,
//! `_timestamp`. Without `follow`, the read ends at the partitions' ends as
//! they were when it started.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use streamhouse_log::groups::{JoinRequest, Strategy};
use streamhouse_log::{Log, LogError, StreamInfo};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::log_status;

/// How often an open group read heartbeats and checks its assignment.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// A consumer ticket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeTicket {
    pub stream: String,
    #[serde(default)]
    pub partition: Option<Partitions>,
    #[serde(default)]
    pub from: Option<Start>,
    #[serde(default)]
    pub follow: bool,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub member: Option<String>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub session_timeout_ms: Option<u64>,
}

/// One partition or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Partitions {
    One(u32),
    Many(Vec<u32>),
}

/// Where a read starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Start {
    Offset(u64),
    Named(String),
}

/// A position named by a client: `earliest`, `latest`, an offset, or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Earliest,
    Latest,
    Offset(u64),
    /// µs since the epoch.
    Time(i64),
}

impl Position {
    /// Parses `earliest`, `latest`, an offset number, or an RFC 3339 time.
    pub fn parse(s: &str) -> Result<Position, Status> {
        match s {
            "earliest" => Ok(Position::Earliest),
            "latest" => Ok(Position::Latest),
            s => {
                if let Ok(n) = s.parse::<u64>() {
                    return Ok(Position::Offset(n));
                }
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| Position::Time(t.timestamp_micros()))
                    .map_err(|_| {
                        Status::invalid_argument(format!(
                            "\"{s}\" is not a position: use \"earliest\", \"latest\", an offset, \
                             or an RFC 3339 time such as \"2026-01-31T12:00:00Z\""
                        ))
                    })
            }
        }
    }

    /// The offset this position names in one partition.
    pub async fn resolve(
        self,
        log: &Log,
        stream: &str,
        partition: u32,
        end: u64,
    ) -> Result<u64, Status> {
        match self {
            Position::Earliest => Ok(0),
            Position::Latest => Ok(end),
            Position::Offset(n) => Ok(n),
            Position::Time(t) => log
                .offset_for_time(stream, partition, t)
                .await
                .map_err(log_status),
        }
    }
}

impl Start {
    /// The position this start names.
    pub fn position(&self) -> Result<Position, Status> {
        match self {
            Start::Offset(n) => Ok(Position::Offset(*n)),
            Start::Named(s) => Position::parse(s),
        }
    }
}

/// Whether a ticket is a consumer ticket (JSON) rather than a Flight SQL one
/// (protobuf).
pub fn is_consumer_ticket(ticket: &[u8]) -> bool {
    ticket
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

pub type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send>>;

/// Answers a consumer ticket.
/// `changelog_of` names the changelog stream of a materialized view, so a
/// ticket may name a view to consume its changes.
pub async fn do_get(
    log: Arc<Log>,
    ticket: &[u8],
    closing: watch::Receiver<bool>,
    changelog_of: impl Fn(&str) -> Option<String>,
) -> Result<DoGetStream, Status> {
    let mut t: ConsumeTicket = serde_json::from_slice(ticket).map_err(|e| {
        Status::invalid_argument(format!(
            "bad consumer ticket ({e}); expected JSON like \
             {{\"stream\": \"orders\", \"partition\": 0, \"from\": \"earliest\"}}"
        ))
    })?;
    if let Some(changelog) = changelog_of(&t.stream) {
        t.stream = changelog;
    }
    let info = log.stream(&t.stream).await.map_err(log_status)?;
    let n = info.spec.partitions;
    let start = t.from.as_ref().map(Start::position).transpose()?;
    let mut partitions: Vec<u32> = match &t.partition {
        None => (0..n).collect(),
        Some(Partitions::One(p)) => vec![*p],
        Some(Partitions::Many(ps)) => ps.clone(),
    };
    if let Some(p) = partitions.iter().find(|p| **p >= n) {
        return Err(Status::out_of_range(format!(
            "partition {p} is out of range for stream \"{}\" ({n} partitions)",
            t.stream
        )));
    }
    let membership = match (&t.group, &t.member) {
        (Some(group), Some(member)) => {
            if t.partition.is_some() {
                return Err(Status::invalid_argument(
                    "a group member reads the partitions assigned to it; leave out \"partition\"",
                ));
            }
            let a = log
                .groups()
                .join(JoinRequest {
                    group: group.clone(),
                    stream: t.stream.clone(),
                    member: Some(member.clone()),
                    strategy: t.strategy.unwrap_or_default(),
                    session_timeout: t.session_timeout_ms.map(Duration::from_millis),
                })
                .await
                .map_err(log_status)?;
            partitions = a.partitions.clone();
            Some(a)
        }
        (None, Some(_)) => {
            return Err(Status::invalid_argument("\"member\" needs a \"group\""));
        }
        _ => None,
    };
    let ends = log.partition_ends(&t.stream).await.map_err(log_status)?;
    let committed = match &t.group {
        Some(g) => log
            .committed_offsets(g, &t.stream)
            .await
            .map_err(log_status)?,
        None => vec![None; n as usize],
    };
    let mut reads = Vec::with_capacity(partitions.len());
    // `ends` and `committed` are separate reads: a stream dropped and
    // created again with fewer partitions in between leaves them shorter.
    let changed = || {
        Status::aborted(format!(
            "stream \"{}\" changed while the read started; retry",
            t.stream
        ))
    };
    for p in partitions {
        let end = *ends.get(p as usize).ok_or_else(changed)?;
        let from = match *committed.get(p as usize).ok_or_else(changed)? {
            Some(o) => o,
            None => {
                start
                    .unwrap_or(Position::Earliest)
                    .resolve(&log, &t.stream, p, end)
                    .await?
            }
        };
        reads.push(partition_rows(
            log.clone(),
            info.clone(),
            p,
            from,
            end,
            t.follow,
        ));
    }
    let rows = futures::stream::select_all(reads);

    // The rows go through a task, so that an open group read can heartbeat
    // and end itself on a rebalance while waiting for new rows.
    let (tx, rx) = mpsc::channel::<Result<RecordBatch, FlightError>>(4);
    tokio::spawn(pump(log.clone(), rows, membership, tx, closing));
    let batches = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let schema = info.read_schema();
    Ok(Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from),
    ))
}

type Rows = Pin<Box<dyn Stream<Item = Result<RecordBatch, LogError>> + Send>>;

/// The rows of one partition from `from`: up to `end`, then (following)
/// whatever is committed after, as it is committed.
fn partition_rows(
    log: Arc<Log>,
    info: Arc<StreamInfo>,
    partition: u32,
    from: u64,
    end: u64,
    follow: bool,
) -> Rows {
    let name = info.name().to_string();
    futures::stream::unfold(Some((from, end, true)), move |state| {
        let log = log.clone();
        let name = name.clone();
        async move {
            let (offset, mut end, first) = state?;
            if !first || offset >= end {
                if !follow {
                    return None;
                }
                end = match log.wait_for(&name, partition, offset).await {
                    Ok(e) => e,
                    Err(e) => return Some((error_rows(e), None)),
                };
            }
            match log.read(&name, partition, offset..end, None).await {
                Ok(rows) => Some((Box::pin(rows) as Rows, Some((end, end, false)))),
                Err(e) => Some((error_rows(e), None)),
            }
        }
    })
    .flatten()
    .boxed()
}

fn error_rows(e: LogError) -> Rows {
    Box::pin(futures::stream::once(async move { Err(e) }))
}

/// Forwards rows to the response; with a membership, heartbeats and stops
/// when the member's assignment changes or it is no longer in the group.
async fn pump(
    log: Arc<Log>,
    mut rows: futures::stream::SelectAll<Rows>,
    membership: Option<streamhouse_log::groups::Assignment>,
    tx: mpsc::Sender<Result<RecordBatch, FlightError>>,
    mut closing: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tokio::select! {
            item = rows.next() => {
                let Some(item) = item else { return };
                let item = item.map_err(|e| FlightError::Tonic(Box::new(log_status(e))));
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            _ = tick.tick(), if membership.is_some() => {
                let m = membership.as_ref().expect("guarded");
                match log.groups().heartbeat(&m.group, &m.member).await {
                    Ok(now) if now.generation == m.generation => {}
                    // Rebalanced: this read is over; the client reads again
                    // (from the committed offsets) and gets its new partitions.
                    Ok(now) => {
                        let status = Status::aborted(format!(
                            "consumer group \"{}\" rebalanced (generation {}); read again",
                            m.group, now.generation
                        ));
                        let _ = tx.send(Err(FlightError::Tonic(Box::new(status)))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(FlightError::Tonic(Box::new(log_status(e))))).await;
                        return;
                    }
                }
            }
            _ = tx.closed() => return,
            _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                let status = Status::unavailable("the server is shutting down");
                let _ = tx.send(Err(FlightError::Tonic(Box::new(status)))).await;
                return;
            }
        }
    }
}
