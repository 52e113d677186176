//! The HTTP server: probes, Prometheus metrics, the REST API scripts and
//! the console use, the console itself, and the Schema Registry's API.
//!
//! `/live` answers as soon as the process serves HTTP; `/ready` only once
//! the log is open and the views are recovered, until shutdown begins;
//! `/health` reports both in JSON (`probes`). The REST API (`cluster`,
//! `streams`, `sql`, `tail`, `watch`, `simulator`) reads through the same
//! `Log` and `Database` every other door uses. With `--auth password`
//! everything but the probes, the console's files and `POST /v1/login`
//! needs a bearer token from `POST /v1/login`: `/v1/sql`, `/v1/whoami`,
//! `/v1/logout`, one stream, its messages and tail, a group's reset, a
//! watch and the simulator take any signed-in role (SQL runs with its
//! privileges, a stream's answers need SELECT, a reset CONSUME on the
//! group and SELECT, a watch what its path needs, the simulator what its
//! clients do: `simulator`), the rest (metrics, agents, the stream list,
//! views, groups) a member of
//! `pg_monitor` or a superuser. Errors are JSON `{"error": …}` with the
//! HTTP status of their kind (`reply`).

mod backups;
mod cluster;
mod console;
mod probes;
pub mod registry;
mod reply;
mod simulator;
mod sql;
mod streams;
mod tail;
mod values;
mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use streamhouse_log::Log;
use streamhouse_sql::Database;
use streamhouse_sql::SqlError;
use streamhouse_sql::privileges::{MONITOR, Need};

use registry::RegistryDoor;

/// The door's name in privileges, metrics and audit records.
pub const DOOR: &str = "http";

/// What the admin endpoints observe.
pub struct AdminState {
    log: OnceLock<Arc<Log>>,
    db: OnceLock<Arc<Database>>,
    registry: Arc<RegistryDoor>,
    draining: AtomicBool,
    /// Turns true when shutdown begins: long answers (a tail) end.
    closing: tokio::sync::watch::Sender<bool>,
    simulator: OnceLock<Arc<crate::simulator::Simulator>>,
    /// Backups of an embedded metadata store.
    backups: OnceLock<Arc<crate::backups::Backups>>,
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
            closing: tokio::sync::watch::Sender::new(false),
            simulator: OnceLock::new(),
            backups: OnceLock::new(),
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
        let _ = self
            .simulator
            .set(Arc::new(crate::simulator::Simulator::new(log.clone())));
        let _ = self.db.set(db);
        let _ = self.log.set(log);
    }

    /// The server backs up its embedded metadata store with `backups`.
    pub fn set_backups(&self, backups: Arc<crate::backups::Backups>) {
        let _ = self.backups.set(backups);
    }

    /// Shutdown began: stop advertising readiness, end long answers, and
    /// stop the simulated clients (consumers leave their groups).
    pub async fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.closing.send_replace(true);
        if let Some(sim) = self.simulator.get() {
            sim.stop_where(|_| true).await;
        }
    }

    /// Turns true when shutdown begins.
    fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    fn ready_log(&self) -> Option<&Arc<Log>> {
        if self.draining.load(Ordering::SeqCst) {
            return None;
        }
        self.log.get()
    }

    /// The database once ready, or the answer that it is not.
    fn ready_db(&self) -> Result<&Arc<Database>, NotReady> {
        match (self.ready_log(), self.db.get()) {
            (Some(_), Some(db)) => Ok(db),
            _ => Err(NotReady),
        }
    }
}

/// The answer while the server is not ready (503).
pub struct NotReady;

impl IntoResponse for NotReady {
    fn into_response(self) -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Why a request has no caller.
enum NoCaller {
    NotReady,
    /// No live bearer token (401).
    Unauthenticated,
}

impl IntoResponse for NoCaller {
    fn into_response(self) -> Response {
        match self {
            NoCaller::NotReady => NotReady.into_response(),
            NoCaller::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "authentication required: POST /v1/login with Basic credentials, then send Authorization: Bearer <token>"})),
            )
                .into_response(),
        }
    }
}

/// Who a request comes from: the signed-in role, or `None` when passwords
/// are not required (trusted, as the other doors without passwords).
#[derive(Clone, Debug)]
pub struct Caller(pub Option<String>);

/// The routes of the HTTP port.
pub fn router(state: Arc<AdminState>) -> Router {
    let monitor = Router::new()
        .route("/metrics", get(probes::metrics))
        .route("/v1/agents", get(cluster::agents))
        .route("/v1/streams", get(streams::list))
        .route("/v1/views", get(cluster::views))
        .route("/v1/groups", get(cluster::groups))
        .route("/v1/metadata/backups", get(backups::list))
        .route_layer(middleware::from_fn_with_state(state.clone(), monitors));
    let signed_in = Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/logout", post(logout))
        .route("/v1/sql", post(sql::run))
        .route("/v1/streams/{name}", get(streams::one))
        .route("/v1/streams/{name}/messages", get(cluster::messages))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/metadata/backups", post(backups::take))
        .route("/v1/groups/{group}/reset", post(cluster::reset_group))
        .route("/v1/streams/{name}/tail", get(tail::tail))
        .route(
            "/v1/simulator",
            get(simulator::list).delete(simulator::stop_all),
        )
        .route("/v1/simulator/producers", post(simulator::start_producers))
        .route("/v1/simulator/consumers", post(simulator::start_consumers))
        .route("/v1/simulator/clients/{id}", delete(simulator::stop))
        .route_layer(middleware::from_fn_with_state(state.clone(), signed_in));
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(probes::ready))
        .route("/health", get(probes::health))
        .route("/v1/login", post(login))
        .merge(monitor)
        .merge(signed_in)
        .with_state(state.clone())
        .merge(console::router())
        .merge(registry::router(state.registry.clone()))
}

/// The caller of a request: trusted without passwords, else the role of
/// its bearer token (401 without a live one).
fn caller(s: &AdminState, headers: &HeaderMap) -> Result<Caller, NoCaller> {
    if !s.require_token {
        return Ok(Caller(None));
    }
    let Some(db) = s.db.get() else {
        return Err(NoCaller::NotReady);
    };
    match bearer(headers).and_then(|t| db.token_user(t)) {
        Some(user) => Ok(Caller(Some(user))),
        None => Err(NoCaller::Unauthenticated),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Lets a signed-in request through (any role), with its [`Caller`].
async fn signed_in(State(s): State<Arc<AdminState>>, mut request: Request, next: Next) -> Response {
    match caller(&s, request.headers()) {
        Ok(c) => {
            request.extensions_mut().insert(c);
            next.run(request).await
        }
        Err(r) => r.into_response(),
    }
}

/// Lets a request through from a role that may read the admin API: a
/// superuser or a member of `pg_monitor` (403 otherwise).
async fn monitors(State(s): State<Arc<AdminState>>, mut request: Request, next: Next) -> Response {
    let c = match caller(&s, request.headers()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if let (Some(user), Some(db)) = (&c.0, s.db.get())
        && let Err(e) = db
            .authorize(DOOR, Some(user), std::slice::from_ref(&Need::Role(MONITOR)))
            .await
    {
        return reply::sql_error(&e);
    }
    request.extensions_mut().insert(c);
    next.run(request).await
}

/// The database, once the server is ready and the caller may read stream
/// `name` (SELECT on it); else the answer that it is not or may not.
async fn readable<'a>(
    s: &'a AdminState,
    c: &Caller,
    name: &str,
) -> Result<&'a Arc<Database>, Response> {
    let db = s.ready_db().map_err(IntoResponse::into_response)?;
    let need = [Need::Privilege(
        streamhouse_sql::privileges::Privilege::Select,
        streamhouse_sql::privileges::Object::table(name.to_string()),
    )];
    db.authorize(DOOR, c.0.as_deref(), &need)
        .await
        .map_err(|e| reply::sql_error(&e))?;
    Ok(db)
}

/// `GET /v1/whoami`: the caller, whether passwords are required, and
/// whether it may read the admin API.
async fn whoami(State(s): State<Arc<AdminState>>, Extension(c): Extension<Caller>) -> Response {
    let monitor = match (&c.0, s.db.get()) {
        (Some(user), Some(db)) => match db
            .authorize(DOOR, Some(user), std::slice::from_ref(&Need::Role(MONITOR)))
            .await
        {
            Ok(()) => true,
            Err(SqlError::InsufficientPrivilege(_)) => false,
            Err(e) => return reply::sql_error(&e),
        },
        _ => true,
    };
    Json(json!({
        "user": c.0,
        "auth_required": s.require_token,
        "monitor": monitor,
    }))
    .into_response()
}

/// `POST /v1/logout`: the bearer token stops working.
async fn logout(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let (Some(db), Some(token)) = (s.db.get(), bearer(&headers)) {
        db.revoke_token(token);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Credentials in a login's body (how the console signs in: a failed
/// Basic login would make a browser ask for a password itself).
#[derive(serde::Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

/// `POST /v1/login` with `Authorization: Basic …`, or a JSON body
/// `{"user", "password"}`: a bearer token.
async fn login(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(db) = s.db.get() else {
        return NotReady.into_response();
    };
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(streamhouse_sql::roles::basic_credentials);
    let (credentials, challenge) = match basic {
        Some(c) => (Some(c), "Basic"),
        None => (
            serde_json::from_slice::<LoginBody>(&body)
                .ok()
                .map(|b| (b.user, b.password)),
            "Bearer",
        ),
    };
    let unauthorized = |message: String| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            Json(json!({ "error": message })),
        )
            .into_response()
    };
    let Some((user, password)) = credentials else {
        return unauthorized(
            "send Authorization: Basic base64(user:password), or {\"user\", \"password\"}".into(),
        );
    };
    match db.login(DOOR, &user, &password).await {
        Ok(token) => Json(json!({
            "token": token,
            "expires_in": streamhouse_sql::roles::tokens::TOKEN_LIFETIME.as_secs(),
        }))
        .into_response(),
        Err(e) => unauthorized(e.to_string()),
    }
}
