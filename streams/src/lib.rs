//! Continuous dataflows: the incremental operators that maintain materialized
//! views and subscriptions (filter, projection, windowed and plain
//! aggregates, joins, top-N), event-time watermarks, operator state in
//! RocksDB, and exactly-once checkpoints recorded in the metadata store.
//!
//! It executes dataflow descriptions that `sql` compiles from DataFusion
//! plans; it never parses SQL. It sits on `log` and nothing above it.

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
