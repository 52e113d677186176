//! Tunables of the log: [`LogConfig`] and the upkeep's [`MaintenanceConfig`].

use std::time::Duration;

use crate::store::Store;
use crate::writer::FlushConfig;

/// Tunables of a [`Log`](crate::Log).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub flush: FlushConfig,
    /// Bytes of decoded chunks kept in memory.
    pub cache_bytes: u64,
    /// How often a tail reader re-reads its partition's end even without a
    /// commit announcement (the fallback when announcements from other
    /// agents are late or lost).
    pub tail_poll: Duration,
    /// How often this agent records its heartbeat.
    pub heartbeat_interval: Duration,
    /// How old a heartbeat may be before its agent counts as dead.
    pub agent_timeout: Duration,
    /// Retention, compaction and garbage collection.
    pub maintenance: MaintenanceConfig,
    /// No other agent shares the metadata store (the embedded one inside a
    /// locked data directory): every registration it holds is a past start
    /// of this directory, stopped, however recent its heartbeat.
    pub sole_agent: bool,
}

impl LogConfig {
    /// Defaults for a store of this kind.
    pub fn for_store(store: &Store) -> Self {
        Self {
            flush: FlushConfig::for_store(store.kind()),
            cache_bytes: 256 << 20,
            tail_poll: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(2),
            agent_timeout: Duration::from_secs(10),
            maintenance: MaintenanceConfig::default(),
            sole_agent: false,
        }
    }
}

/// Tunables of the upkeep.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceConfig {
    /// How often an agent runs it (zero: never on its own).
    pub interval: Duration,
    /// How long an unreferenced object is kept before it is deleted.
    pub grace: Duration,
    /// Chunks younger than this are left alone by compaction.
    pub compact_after: Duration,
    /// Chunks smaller than this are compacted...
    pub small_chunk_bytes: u64,
    /// ...into chunks of about this size...
    pub target_chunk_bytes: u64,
    /// ...when at least this many are in a row.
    pub min_run: usize,
    /// How long a table's log keeps a deleted key's tombstone once it is
    /// the key's only row left: a reader that stopped before the delete
    /// must come back within this to see it.
    pub tombstone_retention: Duration,
    /// The most memory one round of compaction by key spends on the keys
    /// it has seen; a longer log is compacted over several rounds.
    pub key_map_bytes: usize,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            grace: Duration::from_secs(600),
            compact_after: Duration::from_secs(60),
            small_chunk_bytes: 1 << 20,
            target_chunk_bytes: 16 << 20,
            min_run: 4,
            tombstone_retention: Duration::from_secs(24 * 3600),
            key_map_bytes: 64 << 20,
        }
    }
}
