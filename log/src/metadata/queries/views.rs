//! Materialized views: records, leases and checkpoints, for either store.

use async_trait::async_trait;

use super::super::rows::{self, VIEW_COLUMNS};
use super::super::sql::{Backend, Sql, Statement};
use super::super::{ViewCheckpoint, ViewRecord, ViewStore};
use super::leases::{self, Leased};
use crate::clock::Micros;
use crate::error::{LogError, Result};

#[async_trait]
impl<B: Backend> ViewStore for B {
    async fn create_view(&self, view: &ViewRecord, created_at: Micros) -> Result<()> {
        let done = self
            .single()
            .await?
            .execute(
                Statement::new(
                    "INSERT INTO views \
                     (name, dataflow, definition, created_at_us, owner, epoch, lease_until_us, \
                     input_versions) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING",
                )
                .text(&view.name)
                .text(&view.dataflow)
                .text(&view.definition)
                .int(created_at)
                .opt_text(view.lease.owner.clone())
                .uint(view.lease.epoch)
                .opt_int(view.lease.until)
                .text(
                    &serde_json::to_string(&view.input_versions)
                        .map_err(|e| LogError::Internal(e.to_string()))?,
                ),
            )
            .await?;
        if done == 0 {
            return Err(LogError::ViewExists(view.name.clone()));
        }
        Ok(())
    }

    async fn drop_view(&self, name: &str) -> Result<bool> {
        let done = self
            .single()
            .await?
            .execute(Statement::new("DELETE FROM views WHERE name = $1").text(name))
            .await?;
        Ok(done > 0)
    }

    async fn views(&self) -> Result<Vec<ViewRecord>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(format!(
                "SELECT {VIEW_COLUMNS} FROM views ORDER BY name"
            )))
            .await?;
        rows.iter().map(rows::view).collect()
    }

    async fn commit_view_checkpoint(
        &self,
        name: &str,
        dataflow: &str,
        epoch: u64,
        checkpoint: &ViewCheckpoint,
        at: Micros,
    ) -> Result<()> {
        let done = self
            .single()
            .await?
            .execute(
                Statement::new(
                    "UPDATE views SET checkpoint_no = $1, input_offsets = $2, state_key = $3, \
                     checkpointed_at_us = $4 \
                     WHERE name = $5 AND dataflow = $6 AND epoch = $7 \
                     AND (checkpoint_no IS NULL OR checkpoint_no < $1)",
                )
                .uint(checkpoint.number)
                .text(&checkpoint.input_offsets)
                .text(&checkpoint.state_key)
                .int(at)
                .text(name)
                .text(dataflow)
                .uint(epoch),
            )
            .await?;
        if done == 0 {
            return Err(LogError::Fenced(format!(
                "checkpoint {} of view \"{name}\" ({dataflow}, epoch {epoch}) is stale, \
                 its lease was taken over, or the view is gone",
                checkpoint.number
            )));
        }
        Ok(())
    }

    async fn acquire_view_lease(
        &self,
        name: &str,
        agent: &str,
        now: Micros,
        until: Micros,
        steal: bool,
    ) -> Result<Option<u64>> {
        leases::acquire(self, Leased::Views, name, agent, now, until, steal).await
    }

    async fn renew_view_lease(
        &self,
        name: &str,
        agent: &str,
        epoch: u64,
        until: Micros,
    ) -> Result<bool> {
        leases::renew(self, Leased::Views, name, agent, epoch, until).await
    }

    async fn release_view_lease(&self, name: &str, agent: &str, epoch: u64) -> Result<()> {
        leases::release(self, Leased::Views, name, agent, epoch).await
    }
}
