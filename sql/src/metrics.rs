//! Metrics of the SQL layer: queries by door, materialized views and
//! consumer groups (recorded through the `metrics` facade; the server
//! installs the exporter). Gauges that describe a state rather than count
//! events — views' lag, consumer lag — are refreshed by
//! [`Database::refresh_metrics`](crate::Database::refresh_metrics) when
//! metrics are scraped.

use std::time::Duration;

use crate::error::SqlError;

/// Statements run, by `door` (`pgwire`, `flight`).
pub const QUERIES: &str = "streamhouse_queries_total";
/// Time until a statement's result is ready to stream, by `door`.
pub const QUERY_SECONDS: &str = "streamhouse_query_seconds";
/// Statements that failed, by `door` and SQLSTATE `class` (its first two
/// characters, e.g. `42` for a syntax or name error).
pub const QUERY_ERRORS: &str = "streamhouse_query_errors_total";
/// Open client connections, by `door`.
pub const CONNECTIONS: &str = "streamhouse_connections";
/// Counter: connections refused because the door was at its cap, by door.
pub const CONNECTIONS_REFUSED: &str = "streamhouse_connections_refused_total";
/// Rows of a view's inputs not reflected yet, by `view`.
pub const VIEW_LAG_ROWS: &str = "streamhouse_view_lag_rows";
/// How long since the view last reflected every row committed to its
/// inputs (0 while it has no lag), by `view`.
pub const VIEW_FRESHNESS_SECONDS: &str = "streamhouse_view_freshness_seconds";
/// Rows dropped as late, by `view`.
pub const VIEW_LATE_ROWS: &str = "streamhouse_view_late_rows_total";
/// Size of a view's state on local disk (SST files and memtables), by `view`.
pub const VIEW_STATE_BYTES: &str = "streamhouse_view_state_bytes";
/// A view's watermark, in seconds since the Unix epoch, by `view`.
pub const VIEW_WATERMARK_SECONDS: &str = "streamhouse_view_watermark_seconds";
/// Duration of a view's checkpoints (snapshot upload and metadata
/// transaction), by `view`.
pub const VIEW_CHECKPOINT_SECONDS: &str = "streamhouse_view_checkpoint_seconds";
/// Whether a view is running (1) or failed (0), by `view`.
pub const VIEW_RUNNING: &str = "streamhouse_view_running";
/// Rows a consumer group has not committed yet, by `group`, `stream` and
/// `partition`.
pub const CONSUMER_LAG_ROWS: &str = "streamhouse_consumer_lag_rows";

/// A statement run through `door` finished (its result ready, or failed).
pub fn query_done(door: &'static str, elapsed: Duration, error: Option<&SqlError>) {
    metrics::counter!(QUERIES, "door" => door).increment(1);
    metrics::histogram!(QUERY_SECONDS, "door" => door).record(elapsed.as_secs_f64());
    if let Some(e) = error {
        let class = &e.sqlstate()[..2];
        metrics::counter!(QUERY_ERRORS, "door" => door, "class" => class).increment(1);
    }
}

/// Counts an open connection of `door` while it lives.
pub struct ConnectionGauge(&'static str);

impl ConnectionGauge {
    pub fn open(door: &'static str) -> ConnectionGauge {
        metrics::gauge!(CONNECTIONS, "door" => door).increment(1.0);
        ConnectionGauge(door)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS, "door" => self.0).decrement(1.0);
    }
}
