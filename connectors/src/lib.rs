//! Connectors: sinks and sources declared in SQL. A sink (`CREATE SINK …
//! INTO PARQUET`) copies a stream's rows out of the log into an object
//! store; a source copies a database's tables and their changes (`CREATE
//! SOURCE … FROM POSTGRES`) or an object store's files (`FROM FILES`) into
//! streams; all exactly once. What their options mean is
//! [`sink::SinkSpec`] and [`source::SourceSpec`]; the tasks that run them
//! are [`sink::run`], [`source::postgres::run`] and [`source::files::run`].
//! Who runs a connector (its lease) is the SQL layer's.

pub mod kafka;
pub mod sink;
pub mod source;
pub mod status;
pub mod text;

pub use sink::{Progress, SinkError, SinkFormat, SinkSpec};
pub use source::{FilesSpec, KafkaSpec, PostgresSpec, SourceError, SourceProgress, SourceSpec};
pub use status::Status;
