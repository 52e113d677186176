//! Errors of the log, and the small set of kinds callers branch on.
//!
//! Every failure the log can report is one variant of [`LogError`]. Adapters
//! (pgwire, Flight) never match on variants: they call [`LogError::kind`],
//! whose exhaustive `match` is the one place that decides whether a failure is
//! the caller's fault, a missing object, or the system's.

use std::sync::Arc;

/// Result alias of the log crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// The coarse class of a [`LogError`], stable for protocol mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A named thing (stream) does not exist.
    NotFound,
    /// A named thing already exists.
    AlreadyExists,
    /// The request is malformed: bad partition, wrong schema, bad spec.
    InvalidArgument,
    /// A dependency (object store, metadata store) failed; retrying may help.
    Unavailable,
    /// Stored bytes could not be decoded.
    DataCorruption,
    /// The log is shutting down and takes no more work.
    ShuttingDown,
    /// The caller's view is stale (a consumer-group member that was
    /// rebalanced away or expired); refresh and retry.
    Conflict,
    /// The caller may not do this (write a system stream, take a reserved
    /// name).
    PermissionDenied,
    /// A bound the server keeps was reached; the request is refused whole.
    ResourceExhausted,
    /// A bug or an unexpected state.
    Internal,
}

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("stream \"{0}\" does not exist")]
    UnknownStream(String),

    #[error("consumer group \"{0}\" does not exist")]
    UnknownGroup(String),

    #[error("stream \"{0}\" already exists")]
    StreamExists(String),

    #[error("materialized view \"{0}\" already exists")]
    ViewExists(String),

    #[error("connector \"{0}\" already exists")]
    ConnectorExists(String),

    #[error("role \"{0}\" already exists")]
    RoleExists(String),

    #[error("role \"{0}\" does not exist")]
    UnknownRole(String),

    #[error(
        "partition {partition} is out of range for stream \"{stream}\" ({partitions} partitions)"
    )]
    PartitionOutOfRange {
        stream: String,
        partition: u32,
        partitions: u32,
    },

    #[error("batch does not match the schema of stream \"{stream}\": {detail}")]
    SchemaMismatch { stream: String, detail: String },

    #[error("\"{0}\" is a reserved name: names beginning with \"__\" belong to the system")]
    ReservedName(String),

    #[error("stream \"{0}\" belongs to the system: only the system writes or drops it")]
    InternalStream(String),

    #[error("invalid stream definition: {0}")]
    InvalidSpec(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A change the log does not make, with the rule that forbids it.
    #[error("{0}")]
    Unsupported(String),

    #[error("invalid object store URL \"{url}\": {detail}")]
    InvalidStoreUrl { url: String, detail: String },

    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    #[error("metadata store: {0}")]
    Metadata(#[from] sqlx::Error),

    #[error("metadata store migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    #[error("corrupt chunk in object \"{object}\": {detail}")]
    CorruptChunk { object: String, detail: String },

    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("io: {0}")]
    Io(#[from] std::io::Error),

    #[error("data directory {path} is in use by another process")]
    DataDirLocked { path: String },

    #[error("the log is shutting down")]
    ShuttingDown,

    /// A flush failed; every append waiting on it gets the same cause.
    #[error("flush failed: {0}")]
    FlushFailed(#[source] Arc<LogError>),

    #[error(
        "member \"{member}\" is not in consumer group \"{group}\" (expired or never joined; join again)"
    )]
    NotMember { group: String, member: String },

    #[error("{0}")]
    Fenced(String),

    /// An idempotent producer's append leaves a gap after its last
    /// committed sequence.
    #[error("{0}")]
    OutOfOrderSequence(String),

    #[error("consumer group \"{group}\" rebalanced (generation {generation}); read again")]
    Rebalanced { group: String, generation: u64 },

    #[error(
        "consumer group \"{group}\" has {members} live members; stop them before resetting its offsets"
    )]
    GroupActive { group: String, members: usize },

    #[error("stream \"{0}\" changed while the read started; retry")]
    StreamChanged(String),

    /// Another change of the stream's schema came first.
    #[error("the schema of stream \"{stream}\" changed meanwhile (now version {version}); retry")]
    SchemaChanged { stream: String, version: u32 },

    /// A producer transaction was rolled back by the server (it ran past
    /// its timeout, or grew past its limit); the producer begins again.
    #[error("{0}")]
    TransactionAborted(String),

    #[error(
        "transactional producer \"{0}\" was not started on this server in this epoch; call init_transactions"
    )]
    UnknownTransactionalProducer(String),

    /// Another writer changed the record first; read it again and retry.
    #[error("{0}")]
    Conflict(String),

    /// A bound the server keeps (open producers, staged bytes).
    #[error("{0}")]
    LimitExceeded(String),

    /// An operation that could not be applied within its time window and
    /// was not applied at all (its client may have given up and sent a
    /// newer one); the client retries.
    #[error("{0}")]
    TimedOut(String),

    #[error("internal error: {0}")]
    Internal(String),
}

impl LogError {
    /// The class of this error. Exhaustive on purpose: a new variant must
    /// choose its class here.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LogError::UnknownStream(_) | LogError::UnknownGroup(_) | LogError::UnknownRole(_) => {
                ErrorKind::NotFound
            }
            LogError::StreamExists(_)
            | LogError::ViewExists(_)
            | LogError::ConnectorExists(_)
            | LogError::RoleExists(_) => ErrorKind::AlreadyExists,
            LogError::PartitionOutOfRange { .. }
            | LogError::SchemaMismatch { .. }
            | LogError::InvalidSpec(_)
            | LogError::InvalidArgument(_)
            | LogError::Unsupported(_)
            | LogError::InvalidStoreUrl { .. } => ErrorKind::InvalidArgument,
            LogError::ObjectStore(_)
            | LogError::Metadata(_)
            | LogError::Io(_)
            | LogError::DataDirLocked { .. }
            | LogError::TimedOut(_) => ErrorKind::Unavailable,
            LogError::CorruptChunk { .. } => ErrorKind::DataCorruption,
            LogError::ShuttingDown => ErrorKind::ShuttingDown,
            LogError::NotMember { .. }
            | LogError::Fenced(_)
            | LogError::OutOfOrderSequence(_)
            | LogError::Rebalanced { .. }
            | LogError::GroupActive { .. }
            | LogError::StreamChanged(_)
            | LogError::SchemaChanged { .. }
            | LogError::TransactionAborted(_)
            | LogError::UnknownTransactionalProducer(_)
            | LogError::Conflict(_) => ErrorKind::Conflict,
            LogError::LimitExceeded(_) => ErrorKind::ResourceExhausted,
            LogError::ReservedName(_) | LogError::InternalStream(_) => ErrorKind::PermissionDenied,
            LogError::FlushFailed(inner) => inner.kind(),
            LogError::Migration(_) | LogError::Arrow(_) | LogError::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }
}
