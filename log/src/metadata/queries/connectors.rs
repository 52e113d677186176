//! Connectors: records and leases, for either store.

use async_trait::async_trait;

use super::super::rows::{self, CONNECTOR_COLUMNS};
use super::super::sql::{Backend, Sql, Statement};
use super::super::{ConnectorRecord, ConnectorStore};
use super::leases::{self, Leased};
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
        leases::acquire(self, Leased::Connectors, name, agent, now, until, steal).await
    }

    async fn renew_connector_lease(
        &self,
        name: &str,
        agent: &str,
        epoch: u64,
        until: Micros,
    ) -> Result<bool> {
        leases::renew(self, Leased::Connectors, name, agent, epoch, until).await
    }

    async fn release_connector_lease(&self, name: &str, agent: &str, epoch: u64) -> Result<()> {
        leases::release(self, Leased::Connectors, name, agent, epoch).await
    }
}
