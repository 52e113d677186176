//! Sources and sinks that run inside the server over the log, declared in
//! SQL: file import, Parquet export to object storage, PostgreSQL CDC.
//! Sits on `log`; used by `sql`.
