//! The Schema Registry's REST API at the root of the HTTP admin port, as
//! Confluent's clients call it (`schema.registry.url = http://host:port`):
//! requests and answers in `application/vnd.schemaregistry.v1+json`,
//! errors as `{"error_code", "message"}`. Each handler parses the request
//! and calls [`Registry`]; the rules live there.
//!
//! With passwords required, every call needs Basic credentials or a
//! bearer token (401, error code 40101); reading needs only a login,
//! changing anything (registering, deleting, settings) the CREATE
//! privilege on schema `public` (403, error code 40301).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use streamhouse_registry::registry::{Reference, SchemaInfo, SchemaRequest, VersionInfo};
use streamhouse_registry::{Compatibility, Mode, Registry, RegistryError, VersionRef};
use streamhouse_sql::privileges::{Need, Object, Privilege, SCHEMA};
use streamhouse_sql::{Database, SqlError};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// What the routes serve: the registry and the database that checks
/// credentials, once the server is ready.
pub struct RegistryDoor {
    registry: OnceLock<Registry>,
    db: OnceLock<Arc<Database>>,
    /// Calls need credentials.
    require_token: bool,
}

impl RegistryDoor {
    pub fn new(require_token: bool) -> RegistryDoor {
        RegistryDoor {
            registry: OnceLock::new(),
            db: OnceLock::new(),
            require_token,
        }
    }

    /// The server is ready: serve `registry`, checking credentials with
    /// `db`.
    pub fn set_ready(&self, registry: Registry, db: Arc<Database>) {
        let _ = self.db.set(db);
        let _ = self.registry.set(registry);
    }
}

/// The registry's routes.
pub fn router(state: Arc<RegistryDoor>) -> Router {
    Router::new()
        .route("/schemas/types", get(types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .route("/config", get(config).put(set_config))
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(mode).put(set_mode))
        .route(
            "/mode/{subject}",
            get(subject_mode)
                .put(set_subject_mode)
                .delete(delete_subject_mode),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authorized))
        .with_state(state)
}

type Answer = Result<Response, Failure>;

/// An error answer.
struct Failure {
    status: StatusCode,
    code: u32,
    message: String,
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Failure {
        Failure {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.code, "message": self.message });
        (
            self.status,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response()
    }
}

fn failure(status: StatusCode, code: u32, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
    }
}

fn answer(value: Value) -> Answer {
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        value.to_string(),
    )
        .into_response())
}

fn registry(s: &RegistryDoor) -> Result<&Registry, Failure> {
    s.registry.get().ok_or_else(|| {
        failure(
            StatusCode::SERVICE_UNAVAILABLE,
            50003,
            "the server is starting",
        )
    })
}

/// Query parameters (`deleted=true`, `permanent=true`, …).
fn params(q: &Option<String>) -> HashMap<String, String> {
    q.as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn flag(q: &Option<String>, name: &str) -> bool {
    params(q)
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| {
        failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid request body: {e}"),
        )
    })
}

fn id_of(text: &str) -> Result<i64, Failure> {
    text.parse::<i64>().ok().filter(|i| *i >= 1).ok_or_else(|| {
        failure(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {text} not found"),
        )
    })
}

fn with_type(
    mut v: serde_json::Map<String, Value>,
    schema_type: &str,
    references: &[Reference],
) -> Value {
    if schema_type != "AVRO" {
        v.insert("schemaType".into(), json!(schema_type));
    }
    if !references.is_empty() {
        v.insert("references".into(), json!(references));
    }
    Value::Object(v)
}

fn version_json(v: VersionInfo) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("subject".into(), json!(v.subject));
    m.insert("version".into(), json!(v.version));
    m.insert("id".into(), json!(v.id));
    m.insert("schema".into(), json!(v.schema));
    with_type(m, &v.schema_type, &v.references)
}

fn schema_json(s: SchemaInfo) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("schema".into(), json!(s.schema));
    with_type(m, &s.schema_type, &s.references)
}

/// The schema text itself, as `…/schema` endpoints answer it.
fn raw(schema: String) -> Answer {
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        schema,
    )
        .into_response())
}

async fn types() -> Answer {
    answer(json!(streamhouse_registry::formats::SUPPORTED))
}

async fn schema_by_id(State(s): State<Arc<RegistryDoor>>, Path(id): Path<String>) -> Answer {
    let info = registry(&s)?.schema(id_of(&id)?).await?;
    answer(schema_json(info))
}

async fn raw_schema_by_id(State(s): State<Arc<RegistryDoor>>, Path(id): Path<String>) -> Answer {
    raw(registry(&s)?.schema(id_of(&id)?).await?.schema)
}

async fn versions_of_id(
    State(s): State<Arc<RegistryDoor>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let found = registry(&s)?
        .versions_of(id_of(&id)?, flag(&q, "deleted"))
        .await?;
    answer(json!(
        found
            .into_iter()
            .map(|(subject, version)| json!({"subject": subject, "version": version}))
            .collect::<Vec<_>>()
    ))
}

async fn subjects_of_id(
    State(s): State<Arc<RegistryDoor>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let mut found: Vec<String> = registry(&s)?
        .versions_of(id_of(&id)?, flag(&q, "deleted"))
        .await?
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    found.dedup();
    answer(json!(found))
}

async fn subjects(State(s): State<Arc<RegistryDoor>>, RawQuery(q): RawQuery) -> Answer {
    answer(json!(registry(&s)?.subjects(flag(&q, "deleted")).await?))
}

async fn lookup(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
    bytes: Bytes,
) -> Answer {
    let request: SchemaRequest = body(&bytes)?;
    let found = registry(&s)?
        .lookup(&subject, &request, flag(&q, "deleted"))
        .await?;
    answer(version_json(found))
}

async fn delete_subject(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    answer(json!(
        registry(&s)?
            .delete_subject(&subject, flag(&q, "permanent"))
            .await?
    ))
}

async fn versions(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    answer(json!(
        registry(&s)?
            .versions(&subject, flag(&q, "deleted"))
            .await?
    ))
}

async fn register(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    let request: SchemaRequest = body(&bytes)?;
    let id = registry(&s)?.register(&subject, &request).await?;
    // Streams that follow the subject take the new version now (a stream
    // that cannot says so when a value of the version is produced to it).
    if let Some(db) = s.db.get()
        && let Err(e) = db.follow_subject(&subject).await
    {
        tracing::warn!(subject, error = %e, "a stream cannot follow the new version");
    }
    answer(json!({ "id": id }))
}

async fn version(
    State(s): State<Arc<RegistryDoor>>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Answer {
    let v = registry(&s)?
        .version(&subject, VersionRef::parse(&version)?, flag(&q, "deleted"))
        .await?;
    answer(version_json(v))
}

async fn raw_version(
    State(s): State<Arc<RegistryDoor>>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Answer {
    let v = registry(&s)?
        .version(&subject, VersionRef::parse(&version)?, flag(&q, "deleted"))
        .await?;
    raw(v.schema)
}

async fn referenced_by(
    State(s): State<Arc<RegistryDoor>>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    let ids = registry(&s)?
        .referenced_by(&subject, VersionRef::parse(&version)?)
        .await?;
    answer(json!(ids))
}

async fn delete_version(
    State(s): State<Arc<RegistryDoor>>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Answer {
    let v = registry(&s)?
        .delete_version(
            &subject,
            VersionRef::parse(&version)?,
            flag(&q, "permanent"),
        )
        .await?;
    answer(json!(v))
}

async fn check(
    s: &RegistryDoor,
    subject: &str,
    version: Option<&str>,
    q: &Option<String>,
    bytes: &Bytes,
) -> Answer {
    let request: SchemaRequest = body(bytes)?;
    let version = version.map(VersionRef::parse).transpose()?;
    let messages = registry(s)?.check(subject, version, &request).await?;
    let mut out = json!({ "is_compatible": messages.is_empty() });
    if flag(q, "verbose") {
        out["messages"] = json!(messages);
    }
    answer(out)
}

async fn check_all(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
    bytes: Bytes,
) -> Answer {
    check(&s, &subject, None, &q, &bytes).await
}

async fn check_version(
    State(s): State<Arc<RegistryDoor>>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    bytes: Bytes,
) -> Answer {
    check(&s, &subject, Some(&version), &q, &bytes).await
}

/// `{"compatibility": …}` of a PUT /config.
fn level_of(bytes: &Bytes) -> Result<Compatibility, Failure> {
    let v: Value = body(bytes)?;
    let name = v
        .get("compatibility")
        .or_else(|| v.get("compatibilityLevel"))
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok(Compatibility::parse(name)?)
}

async fn config(State(s): State<Arc<RegistryDoor>>) -> Answer {
    let level = registry(&s)?.compatibility(None, true).await?;
    answer(json!({ "compatibilityLevel": level.name() }))
}

async fn set_config(State(s): State<Arc<RegistryDoor>>, bytes: Bytes) -> Answer {
    let level = level_of(&bytes)?;
    registry(&s)?.set_compatibility(None, Some(level)).await?;
    answer(json!({ "compatibility": level.name() }))
}

async fn subject_config(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let level = registry(&s)?
        .compatibility(Some(&subject), flag(&q, "defaultToGlobal"))
        .await?;
    answer(json!({ "compatibilityLevel": level.name() }))
}

async fn set_subject_config(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    let level = level_of(&bytes)?;
    registry(&s)?
        .set_compatibility(Some(&subject), Some(level))
        .await?;
    answer(json!({ "compatibility": level.name() }))
}

async fn delete_subject_config(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
) -> Answer {
    let r = registry(&s)?;
    let was = r.compatibility(Some(&subject), false).await?;
    r.set_compatibility(Some(&subject), None).await?;
    answer(json!({ "compatibilityLevel": was.name() }))
}

fn mode_of(bytes: &Bytes) -> Result<Mode, Failure> {
    let v: Value = body(bytes)?;
    Ok(Mode::parse(
        v.get("mode").and_then(Value::as_str).unwrap_or(""),
    )?)
}

async fn mode(State(s): State<Arc<RegistryDoor>>) -> Answer {
    let mode = registry(&s)?.mode(None, true).await?;
    answer(json!({ "mode": mode.name() }))
}

async fn set_mode(State(s): State<Arc<RegistryDoor>>, bytes: Bytes) -> Answer {
    let mode = mode_of(&bytes)?;
    registry(&s)?.set_mode(None, Some(mode)).await?;
    answer(json!({ "mode": mode.name() }))
}

async fn subject_mode(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let mode = registry(&s)?
        .mode(Some(&subject), flag(&q, "defaultToGlobal"))
        .await?;
    answer(json!({ "mode": mode.name() }))
}

async fn set_subject_mode(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Answer {
    let mode = mode_of(&bytes)?;
    registry(&s)?.set_mode(Some(&subject), Some(mode)).await?;
    answer(json!({ "mode": mode.name() }))
}

async fn delete_subject_mode(
    State(s): State<Arc<RegistryDoor>>,
    Path(subject): Path<String>,
) -> Answer {
    let r = registry(&s)?;
    let was = r.mode(Some(&subject), false).await?;
    r.set_mode(Some(&subject), None).await?;
    answer(json!({ "mode": was.name() }))
}

/// Lets a call through when passwords are not required; otherwise it
/// needs Basic credentials or a bearer token, and a change needs CREATE on
/// schema `public`.
async fn authorized(State(s): State<Arc<RegistryDoor>>, request: Request, next: Next) -> Response {
    if !s.require_token {
        return next.run(request).await;
    }
    let Some(db) = s.db.get() else {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            50003,
            "the server is starting",
        )
        .into_response();
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let user = if let Some(token) = header.strip_prefix("Bearer ") {
        db.token_user(token.trim())
    } else if let Some((user, password)) = streamhouse_sql::roles::basic_credentials(header) {
        db.check_password("schema-registry", &user, &password)
            .await
            .ok()
            .map(|()| user)
    } else {
        None
    };
    let Some(user) = user else {
        let mut r = failure(
            StatusCode::UNAUTHORIZED,
            40101,
            "Unauthorized: send Basic credentials (basic.auth.user.info) or a bearer token",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic"),
        );
        return r;
    };
    if request.method() != Method::GET {
        let need = Need::Privilege(Privilege::Create, Object::schema(SCHEMA));
        match db
            .authorize("schema-registry", Some(&user), std::slice::from_ref(&need))
            .await
        {
            Ok(()) => {}
            Err(e @ SqlError::InsufficientPrivilege(_)) => {
                return failure(StatusCode::FORBIDDEN, 40301, e.to_string()).into_response();
            }
            Err(e) => {
                return failure(StatusCode::SERVICE_UNAVAILABLE, 50003, e.to_string())
                    .into_response();
            }
        }
    }
    next.run(request).await
}
