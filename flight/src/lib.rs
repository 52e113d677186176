//! Arrow Flight SQL (statements, prepared statements, catalog commands) and
//! the producer/consumer API on the same port: `DoPut` appends to a stream,
//! `DoGet` reads or tails it, `DoAction` manages consumer groups.
//!
//! A thin adapter over `sql` and `log`: it translates, it does not decide.
