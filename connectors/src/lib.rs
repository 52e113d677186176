//! Connectors: sinks declared in SQL (`CREATE SINK … INTO PARQUET`) that
//! copy a stream's rows out of the log into an object store, exactly once.
//! What a sink's options mean is [`sink::SinkSpec`]; the task that runs one
//! is [`sink::run`]; the file layout that records how far it got is
//! [`sink::parquet`]. Who runs a sink (its lease) is the SQL layer's.

pub mod sink;

pub use sink::{Progress, SinkError, SinkFormat, SinkSpec, SinkStatus};
