//! Engine errors as Kafka error codes, chosen so that clients do what they
//! should: retry what is transient, refresh metadata where the agent is
//! going away, and stop on what will not change.

use kafka_protocol::ResponseError as E;
use streamhouse_log::{ErrorKind, LogError};
use streamhouse_sql::error::SqlError;

/// What an object the error is about is: the authorization code differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum About {
    Topic,
    Group,
    Cluster,
}

/// The Kafka error for a log error.
pub fn of_log(e: &LogError) -> E {
    match e {
        LogError::UnknownStream(_) | LogError::PartitionOutOfRange { .. } => {
            E::UnknownTopicOrPartition
        }
        LogError::StreamExists(_) => E::TopicAlreadyExists,
        LogError::ReservedName(_) => E::InvalidTopicException,
        LogError::SchemaMismatch { .. } => E::InvalidRecord,
        LogError::OutOfOrderSequence(_) => E::OutOfOrderSequenceNumber,
        LogError::Fenced(_) => E::ProducerFenced,
        LogError::NotMember { .. } => E::UnknownMemberId,
        LogError::Rebalanced { .. } => E::RebalanceInProgress,
        LogError::ShuttingDown => E::NotLeaderOrFollower,
        LogError::TimedOut(_) => E::RequestTimedOut,
        LogError::FlushFailed(inner) => of_log(inner),
        _ => match e.kind() {
            ErrorKind::NotFound => E::UnknownTopicOrPartition,
            ErrorKind::AlreadyExists => E::TopicAlreadyExists,
            ErrorKind::InvalidArgument => E::InvalidRequest,
            ErrorKind::Unavailable => E::KafkaStorageError,
            ErrorKind::DataCorruption => E::CorruptMessage,
            ErrorKind::ShuttingDown => E::NotLeaderOrFollower,
            ErrorKind::Conflict => E::ConcurrentTransactions,
            ErrorKind::PermissionDenied => E::TopicAuthorizationFailed,
            ErrorKind::ResourceExhausted => E::PolicyViolation,
            ErrorKind::Internal => E::UnknownServerError,
        },
    }
}

/// The Kafka error for an engine error about `about`.
pub fn of_sql(e: &SqlError, about: About) -> E {
    match e {
        SqlError::InsufficientPrivilege(_) | SqlError::ReservedName(_) => match about {
            About::Topic => E::TopicAuthorizationFailed,
            About::Group => E::GroupAuthorizationFailed,
            About::Cluster => E::ClusterAuthorizationFailed,
        },
        SqlError::UndefinedTable(_) => E::UnknownTopicOrPartition,
        SqlError::DuplicateTable(_) => E::TopicAlreadyExists,
        SqlError::InvalidDefinition(_) | SqlError::InvalidInput(_) => E::InvalidRequest,
        SqlError::Unavailable(_) => E::KafkaStorageError,
        SqlError::ShuttingDown => E::NotLeaderOrFollower,
        _ => E::UnknownServerError,
    }
}
