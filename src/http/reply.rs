//! Error answers of the REST API: JSON `{"error": …}` (with the SQLSTATE
//! for SQL errors, and a syntax error's position) under the HTTP status of
//! the error's kind.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use streamhouse_sql::SqlError;

/// A client error as JSON.
pub fn client_error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

/// The HTTP status of a SQLSTATE: by its class, as PostgreSQL groups them.
pub fn status_of_sqlstate(sqlstate: &str) -> StatusCode {
    match sqlstate {
        "42501" => StatusCode::FORBIDDEN,
        "28000" | "28P01" => StatusCode::UNAUTHORIZED,
        "42P01" | "42704" | "3D000" | "3F000" => StatusCode::NOT_FOUND,
        "42P07" | "42710" | "23505" | "40001" => StatusCode::CONFLICT,
        "57014" => StatusCode::REQUEST_TIMEOUT,
        "54000" => StatusCode::PAYLOAD_TOO_LARGE,
        s if s.starts_with("53") => StatusCode::TOO_MANY_REQUESTS,
        s if s.starts_with("57") || s.starts_with("58") || s.starts_with("08") => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        s if s.starts_with("XX") => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `error` with `message_key` holding its message, `sqlstate`, and for a
/// syntax error its `position` in the statement text, `{"line",
/// "column"}` counted from 1.
pub fn sql_error_json(e: &SqlError, message_key: &str) -> Value {
    let mut v = json!({ message_key: e.to_string(), "sqlstate": e.sqlstate() });
    if let Some((line, column)) = e.location() {
        v["position"] = json!({ "line": line, "column": column });
    }
    v
}

/// A SQL error as JSON `{"error", "sqlstate", "position"}`
/// ([`sql_error_json`]) with the status of its SQLSTATE.
pub fn sql_error(e: &SqlError) -> Response {
    (
        status_of_sqlstate(e.sqlstate()),
        Json(sql_error_json(e, "error")),
    )
        .into_response()
}

/// A log error as JSON, with the HTTP status of its kind (one exhaustive
/// match: a new kind must choose its status here).
pub fn log_error(e: streamhouse_log::LogError) -> Response {
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
