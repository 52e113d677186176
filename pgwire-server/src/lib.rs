//! The PostgreSQL wire protocol through the `pgwire` crate: simple and
//! extended query, COPY, cancel, SSL negotiation, authentication, SQLSTATE
//! error codes, and the `pg_catalog` surface that psql, drivers and BI tools
//! expect.
//!
//! A thin adapter over `sql`: it translates, it does not decide.
