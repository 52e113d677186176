//! The consumer API: `DoGet` with a JSON ticket, parsed here and read by
//! the log's consumer rules (`streamhouse_log::consume`).
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
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use streamhouse_log::consume::{ConsumeRequest, MemberJoin, Position};
use streamhouse_log::groups::Strategy;
use streamhouse_sql::Database;
use streamhouse_sql::privileges::{Need, Object, Privilege};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::status::{log_status, sql_status};

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

impl Start {
    /// The position this start names.
    pub fn position(&self) -> Result<Position, Status> {
        match self {
            Start::Offset(n) => Ok(Position::Offset(*n)),
            Start::Named(s) => Position::parse(s).map_err(log_status),
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

/// Answers a consumer ticket: the ticket as a [`ConsumeRequest`], the
/// read the log opens for it, encoded, and ended with UNAVAILABLE when the
/// server shuts down. A ticket may name a materialized view, to consume its
/// changelog. `role` needs SELECT on what it reads and, in a group,
/// CONSUME on the group.
pub async fn do_get(
    db: &Database,
    role: Option<String>,
    ticket: &[u8],
    closing: watch::Receiver<bool>,
) -> Result<DoGetStream, Status> {
    let t: ConsumeTicket = serde_json::from_slice(ticket).map_err(|e| {
        Status::invalid_argument(format!(
            "bad consumer ticket ({e}); expected JSON like \
             {{\"stream\": \"orders\", \"partition\": 0, \"from\": \"earliest\"}}"
        ))
    })?;
    let mut needs = vec![Need::Privilege(
        Privilege::Select,
        Object::table(t.stream.clone()),
    )];
    if let Some(group) = &t.group {
        needs.push(Need::Privilege(
            Privilege::Consume,
            Object::group(group.clone()),
        ));
    }
    db.authorize("flight", role.as_deref(), &needs)
        .await
        .map_err(sql_status)?;
    let request = ConsumeRequest {
        stream: db.views().changelog_of(&t.stream).unwrap_or(t.stream),
        partitions: t.partition.map(|p| match p {
            Partitions::One(p) => vec![p],
            Partitions::Many(ps) => ps,
        }),
        from: t.from.as_ref().map(Start::position).transpose()?,
        follow: t.follow,
        group: t.group,
        member: t.member.map(|member| MemberJoin {
            member,
            strategy: t.strategy.unwrap_or_default(),
            session_timeout: t.session_timeout_ms.map(Duration::from_millis),
        }),
    };
    let read = db.log().consume(request).await.map_err(log_status)?;
    let schema = read.info.read_schema();
    // The rows go through a task, so that the read (and a member's
    // heartbeats) goes on while the client is between batches.
    let (tx, rx) = mpsc::channel::<Result<RecordBatch, FlightError>>(4);
    tokio::spawn(pump(read.rows, tx, closing));
    let batches = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from),
    ))
}

/// Forwards rows to the response until they end, the client goes, or the
/// server shuts down.
async fn pump(
    mut rows: BoxStream<'static, streamhouse_log::Result<RecordBatch>>,
    tx: mpsc::Sender<Result<RecordBatch, FlightError>>,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            item = rows.next() => {
                let Some(item) = item else { return };
                let item = item.map_err(|e| FlightError::Tonic(Box::new(log_status(e))));
                if tx.send(item).await.is_err() {
                    return;
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
