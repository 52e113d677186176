//! The SQL front door of StreamHouse: `Database::execute(sql)`.
//!
//! - [`dialect`]: our statements (`CREATE STREAM`, `DROP STREAM`, `SHOW
//!   STREAMS`, `DESCRIBE`) on sqlparser's PostgreSQL dialect.
//! - [`matview`]: materialized views compiled into dataflows that
//!   `streamhouse_streams` runs (streams are DataFusion tables from
//!   `streamhouse_streams::scan`).
//! - [`rewrite`]: `SELECT *` hides the system columns.
//! - [`catalog`]: `pg_catalog` for clients that introspect it.
//! - [`database`]: statement dispatch; INSERT appends through the log.
//! - [`planner`]: the session in which streams are tables; planning (also
//!   against the schema versions a view was made with, in `pinned`).
//! - [`views`]: the service that owns the materialized views and runs
//!   their statements.
//! - [`roles`] and [`privileges`]: users, what they may do, and the one
//!   check every door's calls pass (`Database::authorize`).
//! - [`error`]: one error type, one SQLSTATE table.
//!
//! The PostgreSQL door and Flight SQL call this crate for statements; the
//! Flight producer/consumer API and the HTTP admin call `log` directly,
//! after `Database::authorize` allowed the caller.

pub mod audit;
pub mod bounded;
pub mod catalog;
pub mod connectors;
pub mod copy;
pub mod copy_binary;
pub mod database;
pub mod dialect;
pub mod error;
pub mod functions;
pub mod idents;
pub mod ingest;
pub mod insert;
pub mod limits;
pub mod matview;
pub mod metrics;
pub mod names;
pub mod options;
mod pinned;
pub mod planner;
mod prepared;
pub mod privileges;
pub mod result;
pub mod rewrite;
pub mod roles;
pub mod session;
mod settings;
mod stream_ddl;
pub mod system;
pub mod tables;
pub mod topics;
pub mod transaction;
pub mod typed;
pub mod types;
pub mod views;
pub mod window;

pub use database::{Database, DatabaseOptions};
pub use datafusion::common::ScalarValue;
pub use datafusion::physical_plan::SendableRecordBatchStream;
pub use error::{Result, SqlError};
pub use ingest::{IfExists, IngestMode};
pub use prepared::Prepared;
pub use result::{CommandTag, QueryResult};
pub use session::Session;
