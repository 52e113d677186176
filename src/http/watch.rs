//! `GET /v1/watch?path=…&every_ms=…`: the answer of another GET endpoint
//! of this port pushed as Server-Sent Events every `every_ms` (the
//! console's live charts and tables).
//!
//! The watched request is made inside the server with the caller's own
//! `Authorization` header, so it answers exactly what a GET of `path`
//! would, privileges included. If the first answer is not a success it is
//! returned with its status, its JSON (`error`, `sqlstate`) and `status`.
//! Then each answer is an
//! `event: answer` whose `data` is the body: JSON as sent, any other body
//! (`/metrics`) as a JSON string. A later answer that is not a success is
//! sent as `event: error`, `data: {"status", "error", …}`, and ends the
//! stream; so do the client going away and the server shutting down.
//! `path` is a path of this port with its query, e.g.
//! `/v1/streams?internal=true` (URL-encoded in `path=`); endless answers
//! (`/v1/watch`, a tail) are refused with 400, as is `every_ms` outside
//! [`MIN_EVERY`]..=[`MAX_EVERY`] (default 2,000).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::AdminState;

/// The shortest interval between answers, in milliseconds.
pub const MIN_EVERY: u64 = 250;
/// The longest, in milliseconds.
pub const MAX_EVERY: u64 = 60_000;
/// The largest answer pushed, in bytes (a larger one is an error).
const MAX_ANSWER: usize = 32 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    path: String,
    every_ms: Option<u64>,
}

/// One watched answer.
enum Answer {
    /// A success: the event's data.
    Ok(String),
    /// Anything else: the status and the body.
    Failed(StatusCode, String),
}

pub async fn watch(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(q): Query<WatchQuery>,
) -> Response {
    let every = q.every_ms.unwrap_or(2_000);
    if !(MIN_EVERY..=MAX_EVERY).contains(&every) {
        return bad(format!(
            "every_ms must be between {MIN_EVERY} and {MAX_EVERY}, not {every}"
        ));
    }
    let route = q.path.split('?').next().unwrap_or_default();
    if !q.path.starts_with('/') || q.path.starts_with("//") {
        return bad(format!(
            "path must be a path of this port such as /v1/groups, not {:?}",
            q.path
        ));
    }
    if route.trim_end_matches('/') == "/v1/watch" || route.ends_with("/tail") {
        return bad(format!(
            "{route} answers without end and cannot be watched; open it directly"
        ));
    }
    let uri: axum::http::Uri = match q.path.parse() {
        Ok(u) => u,
        Err(e) => return bad(format!("path {:?}: {e}", q.path)),
    };
    let auth = headers.get(header::AUTHORIZATION).cloned();
    let routes = super::router(s.clone());
    let ask = move || {
        let mut req = Request::builder().method(Method::GET).uri(uri.clone());
        if let Some(a) = &auth {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        let req = req.body(Body::empty());
        let routes = routes.clone();
        async move {
            let req = match req {
                Ok(r) => r,
                Err(e) => return Answer::Failed(StatusCode::BAD_REQUEST, e.to_string()),
            };
            answer(routes, req).await
        }
    };
    let first = match ask().await {
        Answer::Ok(data) => data,
        Answer::Failed(status, body) => {
            return (status, Json(failure(status, &body))).into_response();
        }
    };
    let (tx, mut rx) = mpsc::channel::<String>(2);
    let mut closing = s.closing();
    tokio::spawn(async move {
        let mut data = first;
        let mut tick = tokio::time::interval(Duration::from_millis(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            if tx
                .send(format!("event: answer\ndata: {data}\n\n"))
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                _ = tick.tick() => {}
                () = tx.closed() => return,
                _ = closing.wait_for(|c| *c) => return,
            }
            data = match ask().await {
                Answer::Ok(data) => data,
                Answer::Failed(status, body) => {
                    let data = failure(status, &body);
                    let _ = tx.send(format!("event: error\ndata: {data}\n\n")).await;
                    return;
                }
            };
        }
    });
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

/// Asks the port's routes and renders the answer as an event's data.
async fn answer(routes: Router, req: Request) -> Answer {
    let resp = match routes.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match axum::body::to_bytes(resp.into_body(), MAX_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            return Answer::Failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": format!("answer over {MAX_ANSWER} bytes or unreadable: {e}") })
                    .to_string(),
            );
        }
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Answer::Failed(status, text);
    }
    if json && !text.contains('\n') {
        Answer::Ok(text)
    } else if json {
        // One line: an event's data may not hold a bare newline.
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => Answer::Ok(v.to_string()),
            Err(e) => Answer::Failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": format!("answer is not JSON: {e}") }).to_string(),
            ),
        }
    } else {
        Answer::Ok(serde_json::Value::String(text).to_string())
    }
}

/// A failed answer as JSON: its own JSON object (`error`, and `sqlstate`
/// where it has one) or its text as `error`, with its `status`.
fn failure(status: StatusCode, body: &str) -> serde_json::Value {
    let mut out = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => {
            let mut o = serde_json::Map::new();
            o.insert("error".into(), json!(body.trim()));
            o
        }
    };
    out.insert("status".into(), json!(status.as_u16()));
    serde_json::Value::Object(out)
}

fn bad(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}
