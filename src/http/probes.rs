//! The probes and the Prometheus exposition: `/ready`, `/health` and
//! `/metrics` (counters and histograms recorded as things happen; gauges
//! of views, consumer groups and the allocator's memory refreshed at each
//! scrape).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AdminState;

pub async fn ready(State(s): State<Arc<AdminState>>) -> Response {
    match s.ready_log() {
        Some(_) => (StatusCode::OK, "ready\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
    }
}

pub async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    if let Some(db) = s.db.get()
        && let Err(e) = db.refresh_metrics().await
    {
        tracing::warn!(error = %e, "view and consumer gauges not refreshed");
    }
    crate::metrics::record_allocator();
    s.metrics.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

pub async fn health(State(s): State<Arc<AdminState>>) -> Response {
    let ready = s.ready_log().is_some();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ok" } else { "starting" },
        "live": true,
        "ready": ready,
        "version": env!("CARGO_PKG_VERSION"),
    });
    (code, Json(body)).into_response()
}
