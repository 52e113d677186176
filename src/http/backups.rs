//! `POST /v1/metadata/backups`: a backup of the embedded metadata store
//! taken now (a superuser); `GET /v1/metadata/backups`: the backups in the
//! object store, oldest first (a superuser or `pg_monitor`). Both answer
//! `{"key", "bytes", "taken_at_us"}` per backup; a server whose metadata
//! is in PostgreSQL answers 501 (PostgreSQL's own tools back it up).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use streamhouse_log::backup::Backup;
use streamhouse_sql::privileges::Need;

use super::reply::{client_error, log_error, sql_error};
use super::{AdminState, Caller, DOOR};
use crate::backups::Backups;

fn view(b: &Backup) -> Value {
    json!({ "key": b.key, "bytes": b.bytes, "taken_at_us": b.taken_at })
}

/// The server's backups, or the answer that there are none to take.
fn backups(s: &AdminState) -> Result<&Arc<Backups>, Box<Response>> {
    if s.ready_log().is_none() {
        return Err(Box::new(super::NotReady.into_response()));
    }
    s.backups.get().ok_or_else(|| {
        Box::new(client_error(
            StatusCode::NOT_IMPLEMENTED,
            "this server's metadata store is PostgreSQL: back it up with PostgreSQL's own \
             tools (pg_dump, continuous archiving)"
                .into(),
        ))
    })
}

pub async fn take(State(s): State<Arc<AdminState>>, Extension(c): Extension<Caller>) -> Response {
    let b = match backups(&s) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if let (Some(user), Some(db)) = (&c.0, s.db.get())
        && let Err(e) = db
            .authorize(
                DOOR,
                Some(user),
                &[Need::Superuser("taking a backup of the metadata store")],
            )
            .await
    {
        return sql_error(&e);
    }
    match b.take().await {
        Ok(taken) => (StatusCode::CREATED, Json(view(&taken))).into_response(),
        Err(e) => log_error(e),
    }
}

pub async fn list(State(s): State<Arc<AdminState>>) -> Response {
    let b = match backups(&s) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match b.list().await {
        Ok(all) => {
            Json(json!({ "backups": all.iter().map(view).collect::<Vec<_>>() })).into_response()
        }
        Err(e) => log_error(e),
    }
}
