//! Building blocks of continuous queries, below SQL:
//! - [`state`]: operator state in RocksDB and its snapshots in the object
//!   store, every object named by its content.
//! - [`aggregate`]: incremental aggregate state (plain and windowed,
//!   sessions, `count(DISTINCT)`, retractions) merged a step at a time.
//! - [`watermark`]: event-time watermarks per input partition.
//!
//! The loop that runs a view (steps, joins, changelog output, checkpoints,
//! replay, leases) is in `sql` today (`sql/src/matview/`); see
//! docs/architecture.md. This crate never parses SQL and sits on `log` only.

pub mod aggregate;
pub mod error;
pub mod state;
pub mod watermark;

pub use aggregate::{
    AggregateState, Changes, Distinct, Final, Merge, Merged, PartialState, Sessions, Windowing,
};
pub use error::{Result, StreamsError};
pub use state::StateStore;
pub use watermark::Watermarks;
