//! `GET /v1/streams/{name}/tail?partition=&offset=`: one partition's
//! messages pushed as Server-Sent Events as they are committed (the
//! console's live tail).
//!
//! The answer is `text/event-stream`: an `event: columns` with the
//! columns, then an `event: rows` per read, `data: {"start", "next",
//! "rows"}` (at most [`MAX_EVENT_ROWS`] rows each), woken by the log's
//! commit notifications rather than polled; a `: keepalive` comment every
//! [`KEEPALIVE`] while nothing is committed. It starts at `offset`, or at
//! the partition's end. It ends when the client goes away or the server
//! shuts down; an error ends it with `event: error`, `data: {"error"}`.
//! Needs SELECT on the stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use streamhouse_log::stream::OFFSET_COLUMN;
use streamhouse_log::{Log, LogError, StreamInfo};
use tokio::sync::{mpsc, watch};

use super::reply::log_error;
use super::{AdminState, Caller, values};

/// Rows in one event, at most.
pub const MAX_EVENT_ROWS: u64 = 1_000;
/// How often an idle tail sends a comment (so proxies keep it open).
const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailQuery {
    partition: Option<u32>,
    offset: Option<u64>,
}

fn event(kind: &str, data: &Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

pub async fn tail(
    State(s): State<Arc<AdminState>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<TailQuery>,
) -> Response {
    let db = match super::readable(&s, &c, &name).await {
        Ok(db) => db,
        Err(r) => return r,
    };
    let log = db.log().clone();
    let partition = q.partition.unwrap_or(0);
    let start = async {
        let info = log.stream(&name).await?;
        let ends = log.metadata().partition_ends(info.id).await?;
        let Some(&end) = ends.get(partition as usize) else {
            return Err(LogError::PartitionOutOfRange {
                stream: name.clone(),
                partition,
                partitions: info.spec.partitions,
            });
        };
        Ok((info, q.offset.unwrap_or(end).min(end)))
    }
    .await;
    let (info, offset) = match start {
        Ok(s) => s,
        Err(e) => return log_error(e),
    };
    let (tx, mut rx) = mpsc::channel::<String>(4);
    tokio::spawn(push(log, info, partition, offset, tx, s.closing()));
    let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, Infallible>);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

/// Sends the partition's rows from `offset` as they are committed, until
/// the client goes, the server closes, or an error.
async fn push(
    log: Arc<Log>,
    info: Arc<StreamInfo>,
    partition: u32,
    mut offset: u64,
    tx: mpsc::Sender<String>,
    mut closing: watch::Receiver<bool>,
) {
    let name = info.name().to_string();
    let columns = json!({ "columns": values::columns(&info.read_schema()) });
    if tx.send(event("columns", &columns)).await.is_err() {
        return;
    }
    loop {
        let end = tokio::select! {
            end = log.wait_for(&name, partition, offset) => end,
            () = tokio::time::sleep(KEEPALIVE) => {
                if tx.send(": keepalive\n\n".into()).await.is_err() {
                    return;
                }
                continue;
            }
            () = tx.closed() => return,
            _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => return,
        };
        let sent = match end {
            Ok(end) => rows(&log, &info, partition, offset, end).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok((next, data)) => {
                offset = next;
                if tx.send(event("rows", &data)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx
                    .send(event("error", &json!({ "error": e.to_string() })))
                    .await;
                return;
            }
        }
    }
}

/// The rows `offset..end` (at most [`MAX_EVENT_ROWS`]) as an event's data,
/// and the offset after them.
async fn rows(
    log: &Log,
    info: &Arc<StreamInfo>,
    partition: u32,
    offset: u64,
    end: u64,
) -> Result<(u64, Value), LogError> {
    let stop = end.min(offset.saturating_add(MAX_EVENT_ROWS));
    let mut read = log
        .read_as(info.clone(), partition, offset..stop, None)
        .await?;
    let mut out = Vec::new();
    // Past the last row read; past the range when none were (rows removed
    // by retention leave a gap).
    let mut next = stop;
    while let Some(batch) = read.next().await {
        let batch = batch?;
        if let Some(o) = batch.column_by_name(OFFSET_COLUMN)
            && !o.is_empty()
        {
            let o = o.as_primitive::<Int64Type>();
            next = o.value(o.len() - 1) as u64 + 1;
        }
        out.extend(
            values::rows(&batch, 0, batch.num_rows())
                .map_err(|e| LogError::Internal(format!("rendering rows: {e}")))?,
        );
    }
    Ok((next, json!({ "start": offset, "next": next, "rows": out })))
}
