//! The continuous-query engine, below SQL:
//! - [`dataflow`]: runs a compiled continuous query — steps over what the
//!   input streams gained, incremental joins, changelog output,
//!   checkpoints and exactly-once recovery.
//! - [`scan`]: a stream as a DataFusion table, read whole or by offset
//!   ranges (what a step reads); [`prune`] turns filters into the chunks a
//!   scan fetches.
//! - [`state`]: operator state in RocksDB and its snapshots in the object
//!   store, every object named by its content.
//! - [`aggregate`]: incremental aggregate state (plain and windowed,
//!   sessions, `count(DISTINCT)`, retractions) merged a step at a time.
//! - [`watermark`]: event-time watermarks per input partition.
//! - [`placement`]: which views an agent runs, as pure decisions over the
//!   stored leases and the time.
//!
//! It executes DataFusion plans that the SQL layer compiled; it never
//! parses SQL, and sits on `log` only.

pub mod aggregate;
pub mod dataflow;
pub mod error;
pub mod lineage;
pub mod placement;
pub mod prune;
pub mod scan;
pub mod state;
pub mod watermark;

pub use aggregate::{
    AggregateState, Changes, Distinct, Final, Merge, Merged, PartialState, Sessions, ValueSet,
    Windowing,
};
pub use dataflow::{Dataflow, Description, Emit, Output, Placement, Shape, Status};
pub use error::{Result, StreamsError};
pub use state::StateStore;
pub use watermark::Watermarks;
