//! The simulator's REST resource (`/v1/simulator`): start simulated
//! producers and consumers, list them, stop them (`crate::simulator` runs
//! them).
//!
//! Starting producers needs INSERT on the stream; consumers SELECT on the
//! stream and CONSUME on the group. A signed-in role lists and stops the
//! clients it started; a member of `pg_monitor` lists every client, a
//! superuser stops any.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use streamhouse_log::LogError;
use streamhouse_log::consume::Position;
use streamhouse_sql::SqlError;
use streamhouse_sql::privileges::{MONITOR, Need, Object, Privilege};

use super::reply::{client_error, log_error, sql_error};
use super::{AdminState, Caller, DOOR};
use crate::simulator::{ClientView, Simulator, Start, StartError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducersBody {
    stream: String,
    #[serde(default = "one")]
    count: u32,
    /// Rows per second, each.
    rate: u64,
    rows: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumersBody {
    stream: String,
    group: String,
    #[serde(default = "one")]
    count: u32,
    rate: Option<u64>,
    /// `earliest` (default), `latest`, an offset or an RFC 3339 time.
    from: Option<String>,
}

fn one() -> u32 {
    1
}

/// Why a simulator request is refused.
enum Refused {
    NotReady,
    Client(StatusCode, String),
    Sql(Box<SqlError>),
    Log(Box<LogError>),
}

impl From<SqlError> for Refused {
    fn from(e: SqlError) -> Self {
        Refused::Sql(Box::new(e))
    }
}

impl From<LogError> for Refused {
    fn from(e: LogError) -> Self {
        Refused::Log(Box::new(e))
    }
}

impl From<StartError> for Refused {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Invalid(m) => Refused::Client(StatusCode::BAD_REQUEST, m),
            e @ StartError::TooMany { .. } => {
                Refused::Client(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            }
            StartError::Log(e) => e.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NotReady => super::NotReady.into_response(),
            Refused::Client(code, m) => client_error(code, m),
            Refused::Sql(e) => sql_error(&e),
            Refused::Log(e) => log_error(*e),
        }
    }
}

fn answer(r: Result<Response, Refused>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// A JSON body, or a 400 that says what is wrong with it.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refused> {
    serde_json::from_slice(bytes)
        .map_err(|e| Refused::Client(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

fn simulator(s: &AdminState) -> Result<&Arc<Simulator>, Refused> {
    match (s.ready_log(), s.simulator.get()) {
        (Some(_), Some(sim)) => Ok(sim),
        _ => Err(Refused::NotReady),
    }
}

async fn authorize(s: &AdminState, c: &Caller, needs: &[Need]) -> Result<(), Refused> {
    let db = s.ready_db().map_err(|_| Refused::NotReady)?;
    Ok(db.authorize(DOOR, c.0.as_deref(), needs).await?)
}

/// Whether the caller holds `need` (a denial is an answer, not an error);
/// without passwords, every caller does.
async fn holds(s: &AdminState, c: &Caller, need: Need) -> Result<bool, Refused> {
    if c.0.is_none() {
        return Ok(true);
    }
    match authorize(s, c, &[need]).await {
        Ok(()) => Ok(true),
        Err(Refused::Sql(e)) if matches!(*e, SqlError::InsufficientPrivilege(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn created(clients: Vec<ClientView>) -> Response {
    (StatusCode::CREATED, Json(json!({ "clients": clients }))).into_response()
}

/// `POST /v1/simulator/producers` `{"stream", "count", "rate", "rows"}`.
pub async fn start_producers(
    State(s): State<Arc<AdminState>>,
    Extension(c): Extension<Caller>,
    bytes: axum::body::Bytes,
) -> Response {
    answer(
        async {
            let b: ProducersBody = body(&bytes)?;
            let sim = simulator(&s)?;
            let need = Need::Privilege(Privilege::Insert, Object::table(b.stream.clone()));
            authorize(&s, &c, &[need]).await?;
            let start = Start::Producers {
                stream: b.stream,
                count: b.count,
                rate: b.rate,
                rows: b.rows,
            };
            Ok(created(sim.start(start, c.0.clone()).await?))
        }
        .await,
    )
}

/// `POST /v1/simulator/consumers` `{"stream", "group", "count", "rate",
/// "from"}`.
pub async fn start_consumers(
    State(s): State<Arc<AdminState>>,
    Extension(c): Extension<Caller>,
    bytes: axum::body::Bytes,
) -> Response {
    answer(
        async {
            let b: ConsumersBody = body(&bytes)?;
            let sim = simulator(&s)?;
            let needs = [
                Need::Privilege(Privilege::Select, Object::table(b.stream.clone())),
                Need::Privilege(Privilege::Consume, Object::group(b.group.clone())),
            ];
            authorize(&s, &c, &needs).await?;
            let from = b.from.as_deref().map(Position::parse).transpose()?;
            let start = Start::Consumers {
                stream: b.stream,
                group: b.group,
                count: b.count,
                rate: b.rate,
                from: from.unwrap_or(Position::Earliest),
            };
            Ok(created(sim.start(start, c.0.clone()).await?))
        }
        .await,
    )
}

/// `GET /v1/simulator`: the simulated clients the caller may see.
pub async fn list(State(s): State<Arc<AdminState>>, Extension(c): Extension<Caller>) -> Response {
    answer(
        async {
            let sim = simulator(&s)?;
            let all = holds(&s, &c, Need::Role(MONITOR)).await?;
            let clients: Vec<ClientView> = sim
                .list()
                .into_iter()
                .filter(|v| all || v.owner == c.0)
                .collect();
            Ok(Json(json!({ "clients": clients })).into_response())
        }
        .await,
    )
}

/// The need to stop another role's clients.
const STOP_ANY: Need = Need::Superuser("stopping another role's simulated clients");

/// `DELETE /v1/simulator/clients/{id}`: stops one client (a consumer
/// commits what it took and leaves its group); answers it.
pub async fn stop(
    State(s): State<Arc<AdminState>>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    answer(
        async {
            let sim = simulator(&s)?;
            let missing = || {
                Refused::Client(
                    StatusCode::NOT_FOUND,
                    format!("no simulated client \"{id}\""),
                )
            };
            let client = sim.get(&id).ok_or_else(missing)?;
            if client.owner != c.0 && !holds(&s, &c, STOP_ANY).await? {
                return Err(Refused::Client(
                    StatusCode::FORBIDDEN,
                    format!("simulated client \"{id}\" was started by another role"),
                ));
            }
            let stopped = sim.stop(&id).await.ok_or_else(missing)?;
            Ok(Json(json!({ "client": stopped })).into_response())
        }
        .await,
    )
}

/// `DELETE /v1/simulator`: stops every client the caller may stop;
/// answers how many.
pub async fn stop_all(
    State(s): State<Arc<AdminState>>,
    Extension(c): Extension<Caller>,
) -> Response {
    answer(
        async {
            let sim = simulator(&s)?;
            let any = holds(&s, &c, STOP_ANY).await?;
            let owner = c.0.clone();
            let stopped = sim.stop_where(|v| any || v.owner == owner).await;
            Ok(Json(json!({ "stopped": stopped })).into_response())
        }
        .await,
    )
}
