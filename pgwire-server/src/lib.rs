//! The PostgreSQL wire protocol through the `pgwire` crate: simple and
//! extended query, SQLSTATE error codes, and the settings drivers expect.
//!
//! A thin adapter over `streamhouse_sql::Database`: [`handler`] translates
//! messages to `prepare`/`execute` calls, [`encode`] turns Arrow batches into
//! rows on the wire, [`params`] turns bound values into typed scalars, and
//! [`server`] owns the accept loop.

pub mod encode;
pub mod error;
pub mod handler;
pub mod params;
pub mod server;

pub use server::{PgConfig, serve};
