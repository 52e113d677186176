//! Errors of continuous dataflows.

use streamhouse_log::LogError;

/// Result alias of the streams crate.
pub type Result<T, E = StreamsError> = std::result::Result<T, E>;

/// Everything that can go wrong running a dataflow.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("state store: {0}")]
    State(#[from] rocksdb::Error),

    #[error(transparent)]
    Log(#[from] LogError),

    #[error("io: {0}")]
    Io(#[from] std::io::Error),

    #[error("internal error: {0}")]
    Internal(String),
}
