//! Errors of the SQL layer and their SQLSTATE codes.
//!
//! Every failure a statement can report is one [`SqlError`]; the doors map it
//! with [`SqlError::sqlstate`] (pgwire) and the same class to gRPC codes
//! (Flight). The mapping is one exhaustive `match`, so a client can always
//! tell a syntax error from a missing stream from an internal bug.

use datafusion::error::DataFusionError;
use streamhouse_log::{ErrorKind, LogError};

/// Result alias of the SQL layer.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// Everything a statement can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),

    /// A table or stream that does not exist.
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),

    /// A column that does not exist.
    #[error("{0}")]
    UndefinedColumn(String),

    /// A function that does not exist.
    #[error("{0}")]
    UndefinedFunction(String),

    /// A named object (a setting, a role) that does not exist.
    #[error("{0}")]
    UndefinedObject(String),

    /// A login that failed (no such user, no password, a wrong one).
    #[error("{0}")]
    InvalidPassword(String),

    /// A GRANT or REVOKE that cannot be (a privilege an object cannot
    /// have, a membership loop).
    #[error("{0}")]
    InvalidGrant(String),

    /// A named object (a role) that already exists.
    #[error("{0}")]
    DuplicateObject(String),

    /// A cursor that does not exist.
    #[error("{0}")]
    InvalidCursor(String),

    /// A stream or view of that name exists already.
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),

    /// Values that do not fit their column's type.
    #[error("{0}")]
    InvalidInput(String),

    /// Binary-format data (COPY BINARY, a binary parameter) that is not a
    /// valid value of its type.
    #[error("{0}")]
    InvalidBinary(String),

    /// A date, timestamp or interval outside the range a column holds.
    #[error("{0}")]
    DatetimeOverflow(String),

    /// A type mismatch in an expression or an INSERT.
    #[error("{0}")]
    DatatypeMismatch(String),

    /// An option or definition that is malformed (e.g. `WITH (partitions = 0)`).
    #[error("{0}")]
    InvalidDefinition(String),

    /// NULL into a NOT NULL column.
    #[error("{0}")]
    NotNullViolation(String),

    /// Valid SQL that StreamHouse does not support (yet).
    #[error("not supported: {0}")]
    NotSupported(String),

    /// A plan-time error DataFusion reports (ambiguous names, bad GROUP BY …).
    #[error("{0}")]
    Plan(String),

    /// Storage or metadata unavailable: retrying may help.
    #[error("{0}")]
    Unavailable(String),

    /// An external system a statement needs (a source's database) cannot be
    /// reached.
    #[error("{0}")]
    ConnectionFailure(String),

    /// Stored data could not be decoded.
    #[error("{0}")]
    DataCorrupted(String),

    /// A statement inside a transaction block that already failed.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,

    /// A statement that cannot run inside a transaction block (DDL: it
    /// could not be undone); the block goes on.
    #[error("{0}")]
    ActiveTransaction(String),

    /// A savepoint command outside a transaction block.
    #[error("{0}")]
    NoActiveTransaction(String),

    /// A savepoint that does not exist.
    #[error("{0}")]
    InvalidSavepoint(String),

    /// A statement over a limit (a transaction's buffered writes, a
    /// value's size).
    #[error("{0}")]
    ProgramLimitExceeded(String),

    /// The statement ran past `statement_timeout`.
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,

    /// A query needed more memory than its `query_memory_limit`, or the
    /// server's query memory shared by all queries, allows.
    #[error("{0}")]
    OutOfMemory(String),

    /// The statement was cancelled.
    #[error("canceling statement due to user request")]
    Cancelled,

    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,

    /// Division by zero.
    #[error("{0}")]
    DivisionByZero(String),

    /// Arithmetic whose result does not fit its type.
    #[error("{0}")]
    NumericOutOfRange(String),

    /// Any other failure of a value while a statement runs (a function's
    /// bad argument, say).
    #[error("{0}")]
    DataException(String),

    /// An object others depend on (a view read by another view).
    #[error("{0}")]
    DependentObjects(String),

    /// The caller acted on a stale view (a fenced consumer-group member).
    #[error("{0}")]
    Conflict(String),

    /// A statement for one kind of object named another (DROP STREAM of a
    /// table).
    #[error("{0}")]
    WrongObjectType(String),

    /// A name that belongs to the system (streams beginning with `__`).
    #[error("{0}")]
    ReservedName(String),

    /// The caller may not do this (write or drop a system stream).
    #[error("{0}")]
    InsufficientPrivilege(String),

    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl SqlError {
    /// Where in the statement text a syntax error is, as (line, column)
    /// counted from 1: the parser's `at Line: L, Column: C`.
    pub fn location(&self) -> Option<(u64, u64)> {
        let SqlError::Syntax(m) = self else {
            return None;
        };
        let rest = &m[m.rfind("Line: ")? + "Line: ".len()..];
        let (line, rest) = rest.split_once(", Column: ")?;
        let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((line.parse().ok()?, column.parse().ok()?))
    }

    /// The PostgreSQL SQLSTATE of this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SqlError::Syntax(_) => "42601",
            SqlError::UndefinedTable(_) => "42P01",
            SqlError::UndefinedColumn(_) => "42703",
            SqlError::UndefinedFunction(_) => "42883",
            SqlError::UndefinedObject(_) => "42704",
            SqlError::DuplicateObject(_) => "42710",
            SqlError::InvalidGrant(_) => "0LP01",
            SqlError::InvalidPassword(_) => "28P01",
            SqlError::InvalidCursor(_) => "34000",
            SqlError::DuplicateTable(_) => "42P07",
            SqlError::InvalidInput(_) => "22P02",
            SqlError::InvalidBinary(_) => "22P03",
            SqlError::DatetimeOverflow(_) => "22008",
            SqlError::DatatypeMismatch(_) => "42804",
            SqlError::InvalidDefinition(_) => "42P16",
            SqlError::NotNullViolation(_) => "23502",
            SqlError::NotSupported(_) => "0A000",
            SqlError::Plan(_) => "42000",
            SqlError::Unavailable(_) => "58000",
            SqlError::ConnectionFailure(_) => "08001",
            SqlError::DataCorrupted(_) => "XX001",
            SqlError::InFailedTransaction => "25P02",
            SqlError::ActiveTransaction(_) => "25001",
            SqlError::NoActiveTransaction(_) => "25P01",
            SqlError::InvalidSavepoint(_) => "3B001",
            SqlError::ProgramLimitExceeded(_) => "54000",
            SqlError::Cancelled | SqlError::StatementTimeout => "57014",
            SqlError::OutOfMemory(_) => "53200",
            SqlError::ShuttingDown => "57P01",
            SqlError::DivisionByZero(_) => "22012",
            SqlError::NumericOutOfRange(_) => "22003",
            SqlError::DataException(_) => "22000",
            SqlError::Conflict(_) => "55000",
            SqlError::DependentObjects(_) => "2BP01",
            SqlError::ReservedName(_) => "42939",
            SqlError::WrongObjectType(_) => "42809",
            SqlError::InsufficientPrivilege(_) => "42501",
            SqlError::Internal(_) => "XX000",
        }
    }
}

impl From<streamhouse_streams::StreamsError> for SqlError {
    fn from(e: streamhouse_streams::StreamsError) -> Self {
        use streamhouse_streams::StreamsError as E;
        match e {
            E::Log(l) => l.into(),
            E::DataFusion(d) => d.into(),
            E::Arrow(a) => a.into(),
            E::State(_) | E::Io(_) => SqlError::Unavailable(e.to_string()),
            E::NotSupported(m) => SqlError::NotSupported(m),
            E::Conflict(m) => SqlError::Conflict(m),
            E::Cancelled => SqlError::Cancelled,
            E::Internal(_) => SqlError::Internal(e.to_string()),
        }
    }
}

impl From<LogError> for SqlError {
    fn from(e: LogError) -> Self {
        match (&e, e.kind()) {
            (LogError::UnknownStream(name), _) => SqlError::UndefinedTable(name.clone()),
            (LogError::StreamExists(name), _) => SqlError::DuplicateTable(name.clone()),
            (LogError::SchemaMismatch { .. }, _) => SqlError::DatatypeMismatch(e.to_string()),
            (LogError::ReservedName(_), _) => SqlError::ReservedName(e.to_string()),
            (LogError::UnknownRole(_), _) => SqlError::UndefinedObject(e.to_string()),
            (LogError::RoleExists(_), _) => SqlError::DuplicateObject(e.to_string()),
            (LogError::Unsupported(rule), _) => SqlError::NotSupported(rule.clone()),
            (_, ErrorKind::NotFound) => SqlError::UndefinedTable(e.to_string()),
            (_, ErrorKind::AlreadyExists) => SqlError::DuplicateTable(e.to_string()),
            (_, ErrorKind::InvalidArgument) => SqlError::InvalidDefinition(e.to_string()),
            (_, ErrorKind::Unavailable) => SqlError::Unavailable(e.to_string()),
            (_, ErrorKind::DataCorruption) => SqlError::DataCorrupted(e.to_string()),
            (_, ErrorKind::ShuttingDown) => SqlError::ShuttingDown,
            (_, ErrorKind::Conflict) => SqlError::Conflict(e.to_string()),
            (_, ErrorKind::PermissionDenied) => SqlError::InsufficientPrivilege(e.to_string()),
            (_, ErrorKind::ResourceExhausted) => SqlError::ProgramLimitExceeded(e.to_string()),
            (_, ErrorKind::Internal) => SqlError::Internal(e.to_string()),
        }
    }
}

impl From<sqlparser::parser::ParserError> for SqlError {
    fn from(e: sqlparser::parser::ParserError) -> Self {
        let msg = match e {
            sqlparser::parser::ParserError::TokenizerError(m)
            | sqlparser::parser::ParserError::ParserError(m) => m,
            sqlparser::parser::ParserError::RecursionLimitExceeded => {
                "statement nests too deeply".to_string()
            }
        };
        SqlError::Syntax(msg)
    }
}

impl From<arrow::error::ArrowError> for SqlError {
    fn from(e: arrow::error::ArrowError) -> Self {
        use arrow::error::ArrowError as A;
        match e {
            A::DivideByZero => SqlError::DivisionByZero("division by zero".into()),
            A::ArithmeticOverflow(m) => SqlError::NumericOutOfRange(m),
            A::CastError(m) | A::ParseError(m) | A::InvalidArgumentError(m) => {
                SqlError::InvalidInput(m)
            }
            A::ExternalError(inner) => match inner.downcast::<LogError>() {
                Ok(log) => SqlError::from(*log),
                Err(other) => SqlError::Internal(other.to_string()),
            },
            other => SqlError::Internal(other.to_string()),
        }
    }
}

/// A query's memory pool (its own `query_memory_limit`, or the server's
/// pool all queries share) was exhausted; `detail` says which.
fn out_of_memory(detail: &str) -> SqlError {
    SqlError::OutOfMemory(format!("out of memory: {detail}"))
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        // However deeply wrapped (shared by partitions, under context), a
        // memory limit reached is the query's limit.
        if let DataFusionError::ResourcesExhausted(m) = e.find_root() {
            return out_of_memory(m);
        }
        match e {
            DataFusionError::SQL(p, _) => SqlError::from(*p),
            DataFusionError::Plan(m) => classify_plan(m),
            DataFusionError::SchemaError(s, _) => {
                let m = s.to_string();
                if m.contains("No field named") {
                    SqlError::UndefinedColumn(m)
                } else {
                    SqlError::Plan(m)
                }
            }
            DataFusionError::NotImplemented(m) => SqlError::NotSupported(m),
            DataFusionError::ArrowError(a, _) => SqlError::from(*a),
            DataFusionError::Execution(m) => classify_execution(m),
            DataFusionError::External(inner) => match inner.downcast::<LogError>() {
                Ok(log) => SqlError::from(*log),
                Err(other) => match other.downcast::<SqlError>() {
                    Ok(sql) => *sql,
                    Err(other) => match other.downcast::<streamhouse_streams::StreamsError>() {
                        Ok(streams) => SqlError::from(*streams),
                        Err(other) => SqlError::Internal(other.to_string()),
                    },
                },
            },
            DataFusionError::Context(ctx, inner) => match SqlError::from(*inner) {
                SqlError::Internal(m) => SqlError::Internal(format!("{ctx}: {m}")),
                other => other,
            },
            DataFusionError::Shared(inner) => {
                SqlError::from(DataFusionError::External(Box::new(SharedError(inner))))
            }
            DataFusionError::Diagnostic(_, inner) => SqlError::from(*inner),
            DataFusionError::Collection(mut errors) => match errors.pop() {
                Some(first) => SqlError::from(first),
                None => SqlError::Internal("empty error collection".into()),
            },
            DataFusionError::ResourcesExhausted(m) => out_of_memory(&m),
            DataFusionError::ExecutionJoin(e) => SqlError::Internal(e.to_string()),
            DataFusionError::ObjectStore(e) => SqlError::Unavailable(e.to_string()),
            DataFusionError::IoError(e) => SqlError::Unavailable(e.to_string()),
            DataFusionError::Configuration(m) => SqlError::InvalidDefinition(m),
            DataFusionError::Substrait(m) | DataFusionError::Internal(m) => SqlError::Internal(m),
            DataFusionError::ParquetError(e) => SqlError::Internal(e.to_string()),
            DataFusionError::Ffi(m) => SqlError::Internal(m),
        }
    }
}

/// Execution errors come as text: division by zero, overflow and values
/// that do not parse or cast get their own SQLSTATE, the rest 22000.
fn classify_execution(m: String) -> SqlError {
    let lower = m.to_ascii_lowercase();
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        SqlError::DivisionByZero(m)
    } else if lower.contains("overflow") || lower.contains("out of range") {
        SqlError::NumericOutOfRange(m)
    } else if lower.contains("cast") || lower.contains("parse") || lower.contains("invalid") {
        SqlError::InvalidInput(m)
    } else {
        SqlError::DataException(m)
    }
}

/// Plan errors come as text; the few a client must tell apart get a class.
fn classify_plan(m: String) -> SqlError {
    if m.contains("table") && m.contains("not found") {
        // "table 'catalog.schema.name' not found": PostgreSQL names the
        // relation as the user wrote it, unqualified here.
        let name = m.split('\'').nth(1).unwrap_or(&m);
        SqlError::UndefinedTable(name.rsplit('.').next().unwrap_or(name).to_string())
    } else if m.contains("Invalid function") || m.contains("function") && m.contains("not found") {
        SqlError::UndefinedFunction(m)
    } else if m.contains("No field named") {
        SqlError::UndefinedColumn(m)
    } else {
        SqlError::Plan(m)
    }
}

/// A shared DataFusion error, made ownable.
#[derive(Debug)]
struct SharedError(std::sync::Arc<DataFusionError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {}

#[cfg(test)]
mod tests {
    #[test]
    fn a_syntax_error_says_where_it_is() {
        let e = crate::dialect::parse("SELECT a\nFROM t\nWHERE ORDER BY a").unwrap_err();
        assert_eq!(e.sqlstate(), "42601");
        // ORDER reads as a column name; the parser stops at BY.
        assert_eq!(e.location(), Some((3, 13)), "{e}");
        assert_eq!(
            super::SqlError::Internal("at Line: 1, Column: 2".into()).location(),
            None
        );
    }

    use super::*;

    #[test]
    fn execution_errors_get_their_class() {
        let state = |m: &str| SqlError::from(DataFusionError::Execution(m.into())).sqlstate();
        assert_eq!(state("Divide by zero error"), "22012");
        assert_eq!(
            state("Overflow happened on: 9223372036854775807 + 1"),
            "22003"
        );
        assert_eq!(
            state("Cannot cast string 'abc' to value of Int32 type"),
            "22P02"
        );
        assert_eq!(state("regexp_match() requires a pattern"), "22000");
        let overflow = arrow::error::ArrowError::ArithmeticOverflow("x".into());
        assert_eq!(SqlError::from(overflow).sqlstate(), "22003");
    }
}
