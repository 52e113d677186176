//! The SQL front door: `Database::execute(sql, session)`, the catalog of
//! streams and views as DataFusion tables, the StreamHouse dialect
//! (`CREATE STREAM`, `CREATE MATERIALIZED VIEW`, `SUBSCRIBE`, windows) on
//! sqlparser, and planning of continuous queries into `streams` dataflows.
//!
//! Every door (pgwire, Flight, HTTP, CLI) calls this crate; business logic
//! lives here, not in the adapters.
