//! Leases with epochs, as views and connectors keep them: columns `owner`,
//! `epoch` and `lease_until_us` of a row found by `name`, in one of the
//! tables below.

use super::super::rows::MetaRow;
use super::super::sql::{Backend, Sql, Statement};
use crate::clock::Micros;
use crate::error::Result;

/// A table whose rows hold leases.
#[derive(Debug, Clone, Copy)]
pub(super) enum Leased {
    Views,
    Connectors,
}

impl Leased {
    fn table(self) -> &'static str {
        match self {
            Leased::Views => "views",
            Leased::Connectors => "connectors",
        }
    }
}

/// Takes the lease of row `name` for `agent` until `until` if it is free
/// or expired at `now` (or whoever holds it, with `steal`), bumping its
/// epoch; the new epoch, or `None` when another agent holds it (or the row
/// is gone).
pub(super) async fn acquire<B: Backend>(
    b: &B,
    leased: Leased,
    name: &str,
    agent: &str,
    now: Micros,
    until: Micros,
    steal: bool,
) -> Result<Option<u64>> {
    let row = b
        .single()
        .await?
        .fetch_optional(
            Statement::new(format!(
                "UPDATE {} SET owner = $1, epoch = epoch + 1, lease_until_us = $2 \
                 WHERE name = $3 AND ($4 OR owner IS NULL OR lease_until_us IS NULL \
                                      OR lease_until_us < $5) \
                 RETURNING epoch",
                leased.table()
            ))
            .text(agent)
            .int(until)
            .text(name)
            .bool(steal)
            .int(now),
        )
        .await?;
    row.map(|r| Ok(r.int("epoch")? as u64)).transpose()
}

/// Extends a lease `agent` holds in `epoch`; `false` when it no longer
/// does.
pub(super) async fn renew<B: Backend>(
    b: &B,
    leased: Leased,
    name: &str,
    agent: &str,
    epoch: u64,
    until: Micros,
) -> Result<bool> {
    let done = b
        .single()
        .await?
        .execute(
            Statement::new(format!(
                "UPDATE {} SET lease_until_us = $1 WHERE name = $2 AND owner = $3 AND epoch = $4",
                leased.table()
            ))
            .int(until)
            .text(name)
            .text(agent)
            .uint(epoch),
        )
        .await?;
    Ok(done > 0)
}

/// Gives up a lease `agent` holds in `epoch`, so another agent can take
/// it at once.
pub(super) async fn release<B: Backend>(
    b: &B,
    leased: Leased,
    name: &str,
    agent: &str,
    epoch: u64,
) -> Result<()> {
    b.single()
        .await?
        .execute(
            Statement::new(format!(
                "UPDATE {} SET owner = NULL, lease_until_us = NULL \
                 WHERE name = $1 AND owner = $2 AND epoch = $3",
                leased.table()
            ))
            .text(name)
            .text(agent)
            .uint(epoch),
        )
        .await?;
    Ok(())
}
