//! SQL errors as PostgreSQL error responses: the SQLSTATE comes from the
//! SQL layer's one table (`SqlError::sqlstate`); nothing is decided here.

use pgwire::error::{ErrorInfo, PgWireError};
use streamhouse_sql::SqlError;

/// The error response for a failed statement.
pub fn error_info(e: &SqlError) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), e.sqlstate().to_string(), e.to_string())
}

/// The same, as the error type pgwire handlers return.
pub fn pg_error(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

/// A protocol-level problem with what the client sent (bad parameter …).
pub fn protocol_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}
