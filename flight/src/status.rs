//! Where errors become gRPC statuses, for both halves of the port: SQL
//! errors by an exhaustive match on their kind (the SQLSTATE in the
//! message), log errors by their kind.

use streamhouse_log::LogError;
use streamhouse_sql::SqlError;
use tonic::Status;

/// A gRPC status for a SQL error: the message as the PostgreSQL door
/// words it, with the SQLSTATE, and the code by the error's kind — one
/// exhaustive match, so a new kind of error must choose its code here.
pub fn sql_status(e: SqlError) -> Status {
    use tonic::Code;
    let code = match &e {
        SqlError::UndefinedTable(_)
        | SqlError::UndefinedColumn(_)
        | SqlError::UndefinedFunction(_)
        | SqlError::UndefinedObject(_)
        | SqlError::InvalidCursor(_) => Code::NotFound,
        SqlError::DuplicateTable(_) | SqlError::DuplicateObject(_) => Code::AlreadyExists,
        SqlError::InvalidPassword(_) => Code::Unauthenticated,
        SqlError::Syntax(_)
        | SqlError::InvalidInput(_)
        | SqlError::InvalidBinary(_)
        | SqlError::DatetimeOverflow(_)
        | SqlError::DatatypeMismatch(_)
        | SqlError::InvalidDefinition(_)
        | SqlError::NotNullViolation(_)
        | SqlError::Plan(_)
        | SqlError::DivisionByZero(_)
        | SqlError::NumericOutOfRange(_)
        | SqlError::DataException(_)
        | SqlError::InvalidGrant(_)
        | SqlError::WrongObjectType(_) => Code::InvalidArgument,
        SqlError::NotSupported(_) => Code::Unimplemented,
        SqlError::Cancelled => Code::Cancelled,
        SqlError::StatementTimeout => Code::DeadlineExceeded,
        SqlError::OutOfMemory(_) => Code::ResourceExhausted,
        SqlError::InFailedTransaction
        | SqlError::ActiveTransaction(_)
        | SqlError::NoActiveTransaction(_)
        | SqlError::InvalidSavepoint(_)
        | SqlError::Conflict(_)
        | SqlError::DependentObjects(_) => Code::FailedPrecondition,
        SqlError::ProgramLimitExceeded(_) => Code::ResourceExhausted,
        SqlError::ReservedName(_) | SqlError::InsufficientPrivilege(_) => Code::PermissionDenied,
        SqlError::Unavailable(_) | SqlError::ConnectionFailure(_) | SqlError::ShuttingDown => {
            Code::Unavailable
        }
        SqlError::DataCorrupted(_) => Code::DataLoss,
        SqlError::Internal(_) => Code::Internal,
    };
    Status::new(code, format!("{e} (SQLSTATE {})", e.sqlstate()))
}

/// A gRPC status for an error of the producer/consumer API: the log's own
/// message (it names streams, partitions and groups), coded by its kind.
pub fn log_status(e: LogError) -> tonic::Status {
    use streamhouse_log::ErrorKind;
    let message = e.to_string();
    match (&e, e.kind()) {
        (LogError::PartitionOutOfRange { .. }, _) => Status::out_of_range(message),
        (
            LogError::Rebalanced { .. }
            | LogError::StreamChanged(_)
            | LogError::TransactionAborted(_),
            _,
        ) => Status::aborted(message),
        (_, ErrorKind::NotFound) => Status::not_found(message),
        (_, ErrorKind::AlreadyExists) => Status::already_exists(message),
        (_, ErrorKind::InvalidArgument) => Status::invalid_argument(message),
        (_, ErrorKind::Unavailable | ErrorKind::ShuttingDown) => Status::unavailable(message),
        (_, ErrorKind::DataCorruption) => Status::data_loss(message),
        (_, ErrorKind::Conflict) => Status::failed_precondition(message),
        (_, ErrorKind::PermissionDenied) => Status::permission_denied(message),
        (_, ErrorKind::ResourceExhausted) => Status::resource_exhausted(message),
        (_, ErrorKind::Internal) => Status::internal(message),
    }
}
