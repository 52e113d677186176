//! [`DatabaseOptions`]: how a [`Database`](crate::Database) is set up —
//! where view state lives, view timing, and the memory queries may reserve.

use crate::limits;

/// Settings of a [`Database`].
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// Local directory for the state of materialized views (a cache of
    /// what their checkpoints hold in the object store); none: a temporary
    /// directory removed with the database.
    pub state_dir: Option<std::path::PathBuf>,
    /// How often a changing view is checkpointed.
    pub checkpoint_interval: std::time::Duration,
    /// After this long without rows, an input partition stops holding a
    /// view's watermark back (a view's `idle_timeout` option overrides it).
    pub idle_timeout: std::time::Duration,
    /// How long a view's lease lasts unless renewed: an agent that stops
    /// renewing (killed, paused) loses its views to others after this.
    pub lease_duration: std::time::Duration,
    /// The memory one query's operators may reserve unless its session sets
    /// `query_memory_limit`; by default half of the machine's memory.
    pub query_memory_limit: usize,
    /// The memory all running queries may reserve together; by default
    /// half of the machine's memory.
    pub server_query_memory: usize,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            state_dir: None,
            checkpoint_interval: std::time::Duration::from_secs(2),
            idle_timeout: std::time::Duration::from_secs(5),
            lease_duration: std::time::Duration::from_secs(10),
            query_memory_limit: limits::default_query_memory(),
            server_query_memory: limits::default_query_memory(),
        }
    }
}
