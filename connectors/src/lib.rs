//! Connectors: sinks and sources declared in SQL. A sink (`CREATE SINK …
//! INTO PARQUET`) copies a stream's rows out of the log into an object
//! store; a source (`CREATE SOURCE … FROM POSTGRES`) copies a database's
//! tables and their changes into streams; both exactly once. What their
//! options mean is [`sink::SinkSpec`] and [`source::PostgresSpec`]; the
//! tasks that run them are [`sink::run`] and [`source::postgres::run`].
//! Who runs a connector (its lease) is the SQL layer's.

pub mod sink;
pub mod source;
pub mod status;

pub use sink::{Progress, SinkError, SinkFormat, SinkSpec};
pub use source::{PostgresSpec, SourceError, SourceProgress};
pub use status::Status;
