//! Connectors: records and leases, for either store.

use async_trait::async_trait;

use super::super::rows::{self, CONNECTOR_COLUMNS, MetaRow};
use super::super::sql::{Backend, Sql, Statement};
use super::super::{ConnectorRecord, ConnectorStore};
use crate::clock::Micros;
use crate::error::{LogError, Result};

#[async_trait]
impl<B: Backend> ConnectorStore for B {
    async fn create_connector(&self, c: &ConnectorRecord, created_at: Micros) -> Result<()> {
        let done = self
            .single()
            .await?
            .execute(
                Statement::new(
                    "INSERT INTO connectors \
                     (name, kind, definition, created_at_us, owner, epoch, lease_until_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
                )
                .text(&c.name)
                .text(&c.kind)
                .text(&c.definition)
                .int(created_at)
                .opt_text(c.lease.owner.clone())
                .uint(c.lease.epoch)
                .opt_int(c.lease.until),
            )
            .await?;
        if done == 0 {
            return Err(LogError::ConnectorExists(c.name.clone()));
        }
        Ok(())
    }

    async fn drop_connector(&self, name: &str) -> Result<bool> {
        let done = self
            .single()
            .await?
            .execute(Statement::new("DELETE FROM connectors WHERE name = $1").text(name))
            .await?;
        Ok(done > 0)
    }

    async fn connectors(&self) -> Result<Vec<ConnectorRecord>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(format!(
                "SELECT {CONNECTOR_COLUMNS} FROM connectors ORDER BY name"
            )))
            .await?;
        rows.iter().map(rows::connector).collect()
    }

    async fn acquire_connector_lease(
        &self,
        name: &str,
        agent: &str,
        now: Micros,
        until: Micros,
        steal: bool,
    ) -> Result<Option<u64>> {
        let row = self
            .single()
            .await?
            .fetch_optional(
                Statement::new(
                    "UPDATE connectors SET owner = $1, epoch = epoch + 1, lease_until_us = $2 \
                     WHERE name = $3 AND ($4 OR owner IS NULL OR lease_until_us IS NULL \
                                          OR lease_until_us < $5) \
                     RETURNING epoch",
                )
                .text(agent)
                .int(until)
                .text(name)
                .bool(steal)
                .int(now),
            )
            .await?;
        row.map(|r| Ok(r.int("epoch")? as u64)).transpose()
    }

    async fn renew_connector_lease(
        &self,
        name: &str,
        agent: &str,
        epoch: u64,
        until: Micros,
    ) -> Result<bool> {
        let done = self
            .single()
            .await?
            .execute(
                Statement::new(
                    "UPDATE connectors SET lease_until_us = $1 \
                     WHERE name = $2 AND owner = $3 AND epoch = $4",
                )
                .int(until)
                .text(name)
                .text(agent)
                .uint(epoch),
            )
            .await?;
        Ok(done > 0)
    }

    async fn release_connector_lease(&self, name: &str, agent: &str, epoch: u64) -> Result<()> {
        self.single()
            .await?
            .execute(
                Statement::new(
                    "UPDATE connectors SET owner = NULL, lease_until_us = NULL \
                     WHERE name = $1 AND owner = $2 AND epoch = $3",
                )
                .text(name)
                .text(agent)
                .uint(epoch),
            )
            .await?;
        Ok(())
    }
}
