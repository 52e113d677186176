//! Materialized views: records, leases and checkpoints, for either store.

use async_trait::async_trait;

use super::super::rows::{self, MetaRow, VIEW_COLUMNS};
use super::super::sql::{Backend, Sql, Statement};
use super::super::{ViewCheckpoint, ViewRecord, ViewStore};
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
        let row = self
            .single()
            .await?
            .fetch_optional(
                Statement::new(
                    "UPDATE views SET owner = $1, epoch = epoch + 1, lease_until_us = $2 \
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

    async fn renew_view_lease(
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
                    "UPDATE views SET lease_until_us = $1 \
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

    async fn release_view_lease(&self, name: &str, agent: &str, epoch: u64) -> Result<()> {
        self.single()
            .await?
            .execute(
                Statement::new(
                    "UPDATE views SET owner = NULL, lease_until_us = NULL \
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
