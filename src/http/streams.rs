//! `GET /v1/streams` (every stream with its rows and bytes, from one
//! metadata query) and `GET /v1/streams/{name}` (one stream: its
//! partitions' offsets and sizes, and each consumer group's committed
//! offset and lag per partition).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use streamhouse_log::{LogError, PartitionStats, StreamInfo, StreamKind};

use super::reply::{client_error, log_error};
use super::{AdminState, Caller};

/// What both answers say of a stream.
fn describe(info: &StreamInfo, stats: &[PartitionStats]) -> serde_json::Map<String, Value> {
    let ends: Vec<u64> = stats.iter().map(|p| p.next_offset).collect();
    let mut out = serde_json::Map::new();
    out.insert("name".into(), json!(info.name()));
    out.insert("kind".into(), json!(StreamKind::of(info.name()).as_str()));
    out.insert("partitions".into(), json!(info.spec.partitions));
    out.insert("key".into(), json!(info.spec.key));
    out.insert(
        "event_time".into(),
        json!(info.spec.event_time.as_ref().map(|e| json!({
            "column": e.column,
            "watermark_delay_ms": e.watermark_delay.as_millis() as u64,
        }))),
    );
    out.insert(
        "retention_ms".into(),
        json!(info.spec.retention.map(|r| r.as_millis() as u64)),
    );
    out.insert(
        "columns".into(),
        json!(
            info.spec
                .schema
                .fields()
                .iter()
                .map(|f| json!({
                    "name": f.name(),
                    "type": f.data_type().to_string(),
                    "nullable": f.is_nullable(),
                }))
                .collect::<Vec<_>>()
        ),
    );
    out.insert("rows".into(), json!(ends.iter().sum::<u64>()));
    out.insert(
        "bytes".into(),
        json!(stats.iter().map(|p| p.bytes).sum::<u64>()),
    );
    out.insert("partition_ends".into(), json!(ends));
    out
}

/// `GET /v1/streams[?internal=true]`: every stream (with `internal=true`
/// also views' changelogs and the log's own), with its columns, rows
/// (offsets given out) and bytes held.
pub async fn list(State(s): State<Arc<AdminState>>, RawQuery(query): RawQuery) -> Response {
    let Some(log) = s.ready_log() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let mut internal = false;
    for pair in query.as_deref().unwrap_or_default().split('&') {
        match pair.split_once('=') {
            _ if pair.is_empty() => {}
            Some(("internal", "true")) => internal = true,
            Some(("internal", "false")) => internal = false,
            _ => {
                return client_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter \"{pair}\"; /v1/streams takes internal=true|false"
                    ),
                );
            }
        }
    }
    let result = async {
        let listed = if internal {
            log.all_streams().await?
        } else {
            log.streams().await?
        };
        let mut stats: HashMap<i64, Vec<PartitionStats>> = HashMap::new();
        for (id, p) in log.metadata().all_partition_stats().await? {
            stats.entry(id).or_default().push(p);
        }
        Ok::<_, LogError>(
            listed
                .iter()
                .map(|info| {
                    Value::Object(describe(
                        info,
                        stats.get(&info.id).map(Vec::as_slice).unwrap_or_default(),
                    ))
                })
                .collect::<Vec<_>>(),
        )
    }
    .await;
    match result {
        Ok(streams) => Json(json!({ "streams": streams })).into_response(),
        Err(e) => log_error(e),
    }
}

/// `GET /v1/streams/{name}`: what the list says of the stream, its
/// partitions (`partition_stats`: start and end offset, rows and bytes
/// held, chunks, last append) and, per consumer group that committed on
/// it, each partition's committed offset and lag (`groups`). Needs SELECT
/// on the stream.
pub async fn one(
    State(s): State<Arc<AdminState>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    let db = match super::readable(&s, &c, &name).await {
        Ok(db) => db,
        Err(r) => return r,
    };
    let log = db.log();
    let result = async {
        let info = log.stream(&name).await?;
        let meta = log.metadata();
        let stats = meta.partition_stats(info.id).await?;
        let mut groups = Vec::new();
        for (group, stream) in meta.groups().await? {
            if stream != info.id {
                continue;
            }
            for (partition, committed) in meta.group_offsets(&group, info.id).await? {
                let end = stats.get(partition as usize).map_or(0, |p| p.next_offset);
                groups.push(json!({
                    "group": group,
                    "partition": partition,
                    "committed": committed,
                    "end_offset": end,
                    "lag": end.saturating_sub(committed),
                }));
            }
        }
        let mut out = describe(&info, &stats);
        out.insert(
            "partition_stats".into(),
            json!(
                stats
                    .iter()
                    .map(|p| json!({
                        "partition": p.partition,
                        "start_offset": p.first_offset.unwrap_or(p.next_offset),
                        "end_offset": p.next_offset,
                        "rows": p.rows,
                        "bytes": p.bytes,
                        "chunks": p.chunks,
                        "last_append_us": p.last_append,
                    }))
                    .collect::<Vec<_>>()
            ),
        );
        out.insert("groups".into(), json!(groups));
        Ok::<_, LogError>(Value::Object(out))
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => log_error(e),
    }
}
