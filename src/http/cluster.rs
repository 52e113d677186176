//! The cluster's REST resources: agents, views and consumer groups (the
//! `streamhouse` system tables' rows), a stream partition's messages for a
//! browser, and resetting a group's offsets.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use streamhouse_log::consume::Position;
use streamhouse_sql::privileges::{Need, Object, Privilege};

use super::reply::{client_error, log_error, sql_error};
use super::{AdminState, Caller, DOOR, sql, values};

/// The most messages one request reads.
const MAX_MESSAGES: u64 = 1_000;

/// The agents sharing this agent's metadata store, with their state.
pub async fn agents(State(s): State<Arc<AdminState>>) -> Response {
    let Some(log) = s.ready_log() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let me = log.agent().id();
    match log.agents().await {
        Ok(agents) => Json(json!({
            "agents": agents.iter().map(|(a, state)| json!({
                "id": a.id,
                "state": state.as_str(),
                "this": a.id == me,
                "version": a.version,
                "addresses": a.addresses,
                "started_at_us": a.started_at,
                "heartbeat_at_us": a.heartbeat_at,
                "stopped_at_us": a.stopped_at,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => log_error(e),
    }
}

/// `GET /v1/views`: every view, its state, lag and freshness.
pub async fn views(State(s): State<Arc<AdminState>>, Extension(c): Extension<Caller>) -> Response {
    system_rows(&s, &c, "views").await
}

/// `GET /v1/groups`: every consumer group's committed offset and lag per
/// partition.
pub async fn groups(State(s): State<Arc<AdminState>>, Extension(c): Extension<Caller>) -> Response {
    system_rows(&s, &c, "consumer_groups").await
}

async fn system_rows(s: &AdminState, c: &Caller, table: &str) -> Response {
    let db = match s.ready_db() {
        Ok(db) => db,
        Err(r) => return r.into_response(),
    };
    match sql::objects(db, c, &format!("SELECT * FROM streamhouse.{table}")).await {
        Ok(rows) => Json(json!({ table: rows })).into_response(),
        Err(e) => sql_error(&e),
    }
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    partition: Option<u32>,
    /// From this offset; without it (and without `time`), the last
    /// `limit` messages.
    offset: Option<u64>,
    /// From the first message at or after this time (microseconds since
    /// the epoch).
    time_us: Option<i64>,
    limit: Option<u64>,
}

/// `GET /v1/streams/{name}/messages?partition=&offset=|time_us=&limit=`:
/// up to `limit` (default 100, at most 1,000) committed messages of one
/// partition with their `_offset` and `_timestamp`, and where the next
/// page starts. Needs SELECT on the stream.
pub async fn messages(
    State(s): State<Arc<AdminState>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Response {
    let db = match super::readable(&s, &c, &name).await {
        Ok(db) => db,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_MESSAGES {
        return client_error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_MESSAGES}, not {limit}"),
        );
    }
    let partition = q.partition.unwrap_or(0);
    let log = db.log();
    let result = async {
        let info = log.stream(&name).await?;
        let ends = log.metadata().partition_ends(info.id).await?;
        let Some(&end) = ends.get(partition as usize) else {
            return Err(streamhouse_log::LogError::InvalidArgument(format!(
                "stream {name} has partitions 0 to {}, not {partition}",
                ends.len().saturating_sub(1)
            )));
        };
        let start = match (q.offset, q.time_us) {
            (Some(o), _) => o.min(end),
            (None, Some(t)) => log.offset_for_time(&name, partition, t).await?.min(end),
            (None, None) => end.saturating_sub(limit),
        };
        let stop = start.saturating_add(limit).min(end);
        let mut read = log.read(&name, partition, start..stop, None).await?;
        let mut columns = None;
        let mut rows = Vec::new();
        while let Some(batch) = read.next().await {
            let batch = batch?;
            columns.get_or_insert_with(|| values::columns(&batch.schema()));
            rows.extend(values::rows(&batch, 0, batch.num_rows()).map_err(|e| {
                streamhouse_log::LogError::Internal(format!("rendering rows: {e}"))
            })?);
        }
        let columns = columns.unwrap_or_else(|| values::columns(&info.read_schema()));
        Ok(json!({
            "stream": name,
            "partition": partition,
            "start": start,
            "next": start + rows.len() as u64,
            "end": end,
            "columns": columns,
            "rows": rows,
        }))
    }
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => log_error(e),
    }
}

/// Where a reset moves a group's offsets: `"earliest"`, `"latest"`, an
/// offset, or an RFC 3339 time.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ResetTo {
    Offset(u64),
    Named(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    stream: String,
    to: ResetTo,
}

/// `POST /v1/groups/{group}/reset` with `{"stream", "to"}`: commits the
/// offsets of every partition of the stream at `to` for a group with no
/// live members (409 otherwise); answers them. Needs CONSUME on the
/// group and SELECT on the stream.
pub async fn reset_group(
    State(s): State<Arc<AdminState>>,
    Extension(c): Extension<Caller>,
    Path(group): Path<String>,
    Json(body): Json<ResetBody>,
) -> Response {
    let db = match s.ready_db() {
        Ok(db) => db,
        Err(r) => return r.into_response(),
    };
    let need = [
        Need::Privilege(Privilege::Consume, Object::group(group.clone())),
        Need::Privilege(Privilege::Select, Object::table(body.stream.clone())),
    ];
    if let Err(e) = db.authorize(DOOR, c.0.as_deref(), &need).await {
        return sql_error(&e);
    }
    let to = match body.to {
        ResetTo::Offset(n) => Ok(Position::Offset(n)),
        ResetTo::Named(s) => Position::parse(&s),
    };
    let result = match to {
        Ok(to) => db.log().reset_offsets(&group, &body.stream, to).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(offsets) => Json(json!({
            "group": group,
            "stream": body.stream,
            "offsets": offsets.iter().map(|(p, o)| json!({"partition": p, "offset": o})).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => log_error(e),
    }
}
