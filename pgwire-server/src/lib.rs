//! The PostgreSQL wire protocol through the `pgwire` crate: simple and
//! extended query, SQLSTATE error codes, and the settings drivers expect.
//!
//! A thin adapter over `streamhouse_sql::Database`: [`handler`] translates
//! messages to `prepare`/`execute` calls, [`encode`] turns Arrow batches into
//! rows on the wire, [`params`] turns bound values into typed scalars,
//! [`startup`] authenticates connections, and [`server`] owns the accept
//! loop (and TLS).

/// The door's name in metrics, sessions and the audit trail.
pub(crate) const DOOR: &str = "pgwire";

pub mod encode;
pub mod error;
pub mod handler;
pub mod params;
pub mod server;
pub mod startup;

pub use server::{PgConfig, handlers, serve};
pub use startup::{Auth, StartupConfig};
