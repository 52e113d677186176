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

    /// Planning or executing a step's plan failed.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("io: {0}")]
    Io(#[from] std::io::Error),

    /// A shape the engine cannot run (reported when the dataflow is made).
    #[error("not supported: {0}")]
    NotSupported(String),

    /// What a checkpoint recorded no longer matches its inputs.
    #[error("{0}")]
    Conflict(String),

    /// The dataflow's output went away (a push query's client left).
    #[error("cancelled")]
    Cancelled,

    #[error("internal error: {0}")]
    Internal(String),
}
