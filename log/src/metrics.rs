//! The log's Prometheus metrics (recorded through the `metrics` facade; the
//! server installs the exporter). Names and labels are part of the
//! operations interface: dashboards and alerts use them.

use std::time::Duration;

/// Object-store requests, by `op` (`put`, `get`).
pub const STORE_REQUESTS: &str = "streamhouse_object_store_requests_total";
/// Bytes sent (`put`) or received (`get`).
pub const STORE_BYTES: &str = "streamhouse_object_store_bytes_total";
/// Latency of object-store requests, by `op`.
pub const STORE_SECONDS: &str = "streamhouse_object_store_request_seconds";
/// Creates of data objects raced by a second PUT (see `store/hedged.rs`).
pub const HEDGED_PUTS: &str = "streamhouse_object_store_hedged_puts_total";
/// Rows appended (committed), by `stream`.
pub const APPENDED_ROWS: &str = "streamhouse_appended_rows_total";
/// Rows read from the log by every reader (queries, views, consumers,
/// sinks), by `stream`.
pub const READ_ROWS: &str = "streamhouse_read_rows_total";
/// Bytes appended (encoded chunk bytes committed), by `stream`.
pub const APPENDED_BYTES: &str = "streamhouse_appended_bytes_total";
/// Size of each flushed data object, in bytes.
pub const FLUSH_BYTES: &str = "streamhouse_flush_bytes";
/// Rows in each flushed data object.
pub const FLUSH_ROWS: &str = "streamhouse_flush_rows";
/// Latency of the metadata transaction that commits a flush.
pub const METADATA_COMMIT_SECONDS: &str = "streamhouse_metadata_commit_seconds";
/// Chunk reads served from the decoded-chunk cache, and those that were not.
pub const CACHE_HITS: &str = "streamhouse_cache_hits_total";
pub const CACHE_MISSES: &str = "streamhouse_cache_misses_total";

/// One object-store request of `bytes`, taking `elapsed`.
pub(crate) fn store_request(op: &'static str, bytes: u64, elapsed: Duration) {
    metrics::counter!(STORE_REQUESTS, "op" => op).increment(1);
    metrics::counter!(STORE_BYTES, "op" => op).increment(bytes);
    metrics::histogram!(STORE_SECONDS, "op" => op).record(elapsed.as_secs_f64());
}
