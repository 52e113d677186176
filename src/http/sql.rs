//! `POST /v1/sql`: statements over HTTP, answered as they run.
//!
//! The body is `{"sql": "…", "limit": n}`; the statements run in order in
//! a session of the caller's role (its privileges apply; a transaction
//! left open at the end is rolled back). The first statement runs before
//! the answer starts, so its error is the answer's status (by SQLSTATE:
//! 400, 403, 404, 409 …) with `{"error", "sqlstate"}`. After that the
//! answer streams as JSON lines (`application/x-ndjson`), each one object:
//! `{"columns": […]}` when a statement's rows begin, `{"rows": [[…], …]}`
//! as they come, `{"done": {"tag", "rows", "truncated"}}` when a statement
//! ends, `{"error": {"message", "sqlstate"}}` when one fails (the rest do
//! not run); a syntax error says where it is in the text, `"position":
//! {"line", "column"}` (from 1). A statement stops after `limit` rows (default 1,000, at most
//! 100,000; `truncated` says so). Push queries stream until the limit or
//! until the client goes away, and a client that goes away cancels what
//! runs. `COPY` needs a client that streams data (psql, a driver's copy
//! API) and is refused here.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use streamhouse_sql::result::QueryResult;
use streamhouse_sql::session::Session;
use streamhouse_sql::{Database, SqlError};
use tokio::sync::mpsc;

use super::{AdminState, Caller, DOOR, reply, values};

/// Rows a statement answers unless the request says otherwise.
const DEFAULT_LIMIT: u64 = 1_000;
/// The most rows a statement may answer.
const MAX_LIMIT: u64 = 100_000;
/// Lines buffered ahead of a slow client.
const BUFFERED_LINES: usize = 16;

#[derive(Deserialize)]
pub struct SqlRequest {
    sql: String,
    limit: Option<u64>,
}

/// The session a caller's statements run in.
pub fn session_of(caller: &Caller) -> Session {
    match &caller.0 {
        Some(role) => Session::for_role(DOOR, role.clone()),
        None => Session::for_door(DOOR),
    }
}

pub async fn run(
    State(s): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<SqlRequest>,
) -> Response {
    let db = match s.ready_db() {
        Ok(db) => db.clone(),
        Err(r) => return r.into_response(),
    };
    let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return reply::client_error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT}, not {limit}"),
        );
    }
    let mut statements = match db.parse(&req.sql) {
        Ok(s) => s.into_iter(),
        Err(e) => return reply::sql_error(&e),
    };
    let Some(first) = statements.next() else {
        return reply::client_error(StatusCode::BAD_REQUEST, "no statement to run".into());
    };
    let session = session_of(&caller);
    let first = match db.execute_statement(&session, first).await {
        Ok(r) => r,
        Err(e) => return reply::sql_error(&e),
    };
    let (tx, mut rx) = mpsc::channel::<String>(BUFFERED_LINES);
    tokio::spawn(async move {
        let mut result = Some(first);
        loop {
            let done = match result.take() {
                Some(r) => answer(r, limit, &tx).await,
                None => match statements.next() {
                    None => return,
                    Some(stmt) => match db.execute_statement(&session, stmt).await {
                        Ok(r) => answer(r, limit, &tx).await,
                        Err(e) => Err(e),
                    },
                },
            };
            match done {
                Ok(true) => {}
                // The client went away.
                Ok(false) => return,
                Err(e) => {
                    let _ = tx.send(error_line(&e)).await;
                    return;
                }
            }
        }
    });
    let lines = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|mut line| {
        line.push('\n');
        Ok::<_, Infallible>(line)
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

fn error_line(e: &SqlError) -> String {
    json!({ "error": reply::sql_error_json(e, "message") }).to_string()
}

/// Sends one statement's answer; false once the client went away.
async fn answer(
    result: QueryResult,
    limit: u64,
    tx: &mpsc::Sender<String>,
) -> Result<bool, SqlError> {
    let mut rows = match result {
        QueryResult::Command(tag) => {
            let line = json!({ "done": { "tag": tag.to_string() } }).to_string();
            return Ok(tx.send(line).await.is_ok());
        }
        QueryResult::CopyIn(_) | QueryResult::CopyOut { .. } => {
            return Err(SqlError::NotSupported(
                "COPY over HTTP: use psql or a driver's copy API, or INSERT".into(),
            ));
        }
        QueryResult::Rows(rows) | QueryResult::Subscription(rows) => rows,
    };
    let columns = json!({ "columns": values::columns(&rows.schema()) }).to_string();
    if tx.send(columns).await.is_err() {
        return Ok(false);
    }
    let mut sent = 0u64;
    let mut truncated = false;
    loop {
        let next = tokio::select! {
            next = rows.next() => next,
            () = tx.closed() => return Ok(false),
        };
        let Some(batch) = next else { break };
        let batch = batch.map_err(SqlError::from)?;
        let left = (limit - sent) as usize;
        let part = values::rows(&batch, 0, left)
            .map_err(|e| SqlError::Internal(format!("rendering rows: {e}")))?;
        sent += part.len() as u64;
        if !part.is_empty() && tx.send(json!({ "rows": part }).to_string()).await.is_err() {
            return Ok(false);
        }
        if batch.num_rows() > left {
            truncated = true;
            break;
        }
        if sent == limit {
            // One more batch tells whether rows were left out.
            let more = tokio::select! {
                next = rows.next() => next,
                () = tx.closed() => return Ok(false),
            };
            truncated = matches!(more, Some(Ok(b)) if b.num_rows() > 0);
            break;
        }
    }
    let done = json!({ "done": { "tag": format!("SELECT {sent}"), "rows": sent, "truncated": truncated } });
    Ok(tx.send(done.to_string()).await.is_ok())
}

/// Every row of one query as JSON objects keyed by column, read whole
/// (for the system tables the REST API lists).
pub async fn objects(db: &Database, caller: &Caller, sql: &str) -> Result<Vec<Value>, SqlError> {
    let session = session_of(caller);
    let mut out = Vec::new();
    for stmt in db.parse(sql)? {
        let QueryResult::Rows(mut rows) = db.execute_statement(&session, stmt).await? else {
            return Err(SqlError::Internal("expected rows".into()));
        };
        let schema = rows.schema();
        while let Some(batch) = rows.next().await {
            let batch = batch.map_err(SqlError::from)?;
            let rendered = values::rows(&batch, 0, batch.num_rows())
                .map_err(|e| SqlError::Internal(format!("rendering rows: {e}")))?;
            for row in rendered {
                let Value::Array(cells) = row else { continue };
                out.push(Value::Object(
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .zip(cells)
                        .collect(),
                ));
            }
        }
    }
    Ok(out)
}
