//! The HTTP admin server: liveness, readiness, health, Prometheus metrics
//! and a small REST API.
//!
//! `/live` answers as soon as the process serves HTTP; `/ready` only once
//! the log is open and the views are recovered (metadata and object store
//! reached, recovery done) and until shutdown begins; `/health` reports
//! both in JSON. `/metrics` is the Prometheus exposition: counters and
//! histograms recorded as things happen, and gauges of views, consumer
//! groups and the allocator's memory refreshed at each scrape. The REST API reads through the same
//! `Log` every other door uses. With `--auth password` everything but the
//! probes needs a bearer token (`POST /v1/login`). The Schema Registry's
//! API is served at the root too (`registry_http`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use streamhouse_log::Log;
use streamhouse_sql::Database;
use streamhouse_sql::SqlError;
use streamhouse_sql::privileges::{MONITOR, Need};

use crate::registry_http::RegistryDoor;

/// What the admin endpoints observe.
pub struct AdminState {
    log: OnceLock<Arc<Log>>,
    db: OnceLock<Arc<Database>>,
    registry: Arc<RegistryDoor>,
    draining: AtomicBool,
    metrics: PrometheusHandle,
    /// Everything but the probes needs a bearer token.
    require_token: bool,
}

impl AdminState {
    pub fn new(metrics: PrometheusHandle, require_token: bool) -> AdminState {
        AdminState {
            log: OnceLock::new(),
            db: OnceLock::new(),
            registry: Arc::new(RegistryDoor::new(require_token)),
            draining: AtomicBool::new(false),
            metrics,
            require_token,
        }
    }

    /// The log is open and the views recovered: the server is ready.
    pub fn set_ready(&self, log: Arc<Log>, db: Arc<Database>) {
        self.registry.set_ready(
            streamhouse_registry::Registry::new(log.metadata().clone()),
            db.clone(),
        );
        let _ = self.db.set(db);
        let _ = self.log.set(log);
    }

    /// Shutdown began: stop advertising readiness.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn ready_log(&self) -> Option<&Arc<Log>> {
        if self.draining.load(Ordering::SeqCst) {
            return None;
        }
        self.log.get()
    }
}

/// The admin routes: the probes are always open; with passwords required
/// the rest needs `Authorization: Bearer <token>`, from `POST /v1/login`
/// with Basic credentials (or a Flight handshake).
pub fn router(state: Arc<AdminState>) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/streams", get(streams))
        .route("/v1/agents", get(agents))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorized));
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .route("/v1/login", post(login))
        .merge(guarded)
        .with_state(state.clone())
        .merge(crate::registry_http::router(state.registry.clone()))
}

/// Lets a request through when passwords are not required, or when it
/// carries a live bearer token (401 otherwise) of a role that may read the
/// admin API: a superuser or a member of `pg_monitor` (403 otherwise).
async fn authorized(State(s): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    if !s.require_token {
        return next.run(request).await;
    }
    let Some(db) = s.db.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| db.token_user(t.trim())) {
        Some(user) => {
            let need = Need::Role(MONITOR);
            match db
                .authorize("http", Some(&user), std::slice::from_ref(&need))
                .await
            {
                Ok(()) => next.run(request).await,
                Err(e @ SqlError::InsufficientPrivilege(_)) => {
                    (StatusCode::FORBIDDEN, Json(json!({"error": e.to_string()}))).into_response()
                }
                Err(e) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": e.to_string()})),
                )
                    .into_response(),
            }
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "authentication required: POST /v1/login with Basic credentials, then send Authorization: Bearer <token>"})),
        )
            .into_response(),
    }
}

/// `POST /v1/login` with `Authorization: Basic …`: a bearer token.
async fn login(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let Some(db) = s.db.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    };
    let unauthorized = |message: String| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic")],
            Json(json!({ "error": message })),
        )
            .into_response()
    };
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(streamhouse_sql::roles::basic_credentials);
    let Some((user, password)) = credentials else {
        return unauthorized("send Authorization: Basic base64(user:password)".into());
    };
    match db.login("http", &user, &password).await {
        Ok(token) => Json(json!({
            "token": token,
            "expires_in": streamhouse_sql::roles::tokens::TOKEN_LIFETIME.as_secs(),
        }))
        .into_response(),
        Err(e) => unauthorized(e.to_string()),
    }
}

async fn ready(State(s): State<Arc<AdminState>>) -> Response {
    match s.ready_log() {
        Some(_) => (StatusCode::OK, "ready\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
    }
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
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

async fn health(State(s): State<Arc<AdminState>>) -> Response {
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

/// The agents sharing this agent's metadata store, with their state.
async fn agents(State(s): State<Arc<AdminState>>) -> Response {
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

/// `GET /v1/streams`: the users' streams; `?internal=true` adds the
/// system's own (views' changelogs).
async fn streams(State(s): State<Arc<AdminState>>, RawQuery(query): RawQuery) -> Response {
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
        let mut out = Vec::new();
        let listed = if internal {
            log.all_streams().await?
        } else {
            log.streams().await?
        };
        for info in listed {
            let ends = log.metadata().partition_ends(info.id).await?;
            out.push(json!({
                "name": info.name(),
                "kind": streamhouse_log::StreamKind::of(info.name()).as_str(),
                "partitions": info.spec.partitions,
                "key": info.spec.key,
                "event_time": info.spec.event_time.as_ref().map(|e| json!({
                    "column": e.column,
                    "watermark_delay_ms": e.watermark_delay.as_millis() as u64,
                })),
                "retention_ms": info.spec.retention.map(|r| r.as_millis() as u64),
                "columns": info.spec.schema.fields().iter().map(|f| json!({
                    "name": f.name(),
                    "type": f.data_type().to_string(),
                    "nullable": f.is_nullable(),
                })).collect::<Vec<_>>(),
                "rows": ends.iter().sum::<u64>(),
                "partition_ends": ends,
            }));
        }
        Ok::<_, streamhouse_log::LogError>(out)
    }
    .await;
    match result {
        Ok(streams) => Json(json!({ "streams": streams })).into_response(),
        Err(e) => log_error(e),
    }
}

/// A client error as JSON.
fn client_error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

/// A log error as JSON, with the HTTP status of its kind (one exhaustive
/// match: a new kind must choose its status here).
fn log_error(e: streamhouse_log::LogError) -> Response {
    use streamhouse_log::ErrorKind;
    let code = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable | ErrorKind::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::DataCorruption | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(json!({ "error": e.to_string() }))).into_response()
}
