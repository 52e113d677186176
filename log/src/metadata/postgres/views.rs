//! Materialized views: records, leases and checkpoints, in PostgreSQL.

use super::*;

#[async_trait]
impl ViewStore for PostgresMetadata {
    async fn create_view(&self, view: &ViewRecord, created_at: Micros) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO views \
             (name, dataflow, definition, created_at_us, owner, epoch, lease_until_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&view.name)
        .bind(&view.dataflow)
        .bind(&view.definition)
        .bind(created_at)
        .bind(&view.lease.owner)
        .bind(u(view.lease.epoch))
        .bind(view.lease.until)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(LogError::ViewExists(view.name.clone()));
        }
        Ok(())
    }

    async fn drop_view(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM views WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn views(&self) -> Result<Vec<ViewRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {VIEW_COLUMNS} FROM views ORDER BY name"
        )))
        .fetch_all(&self.pool)
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
        let done = sqlx::query(
            "UPDATE views SET checkpoint_no = $1, input_offsets = $2, state_key = $3, \
             checkpointed_at_us = $4 \
             WHERE name = $5 AND dataflow = $6 AND epoch = $7 \
             AND (checkpoint_no IS NULL OR checkpoint_no < $1)",
        )
        .bind(u(checkpoint.number))
        .bind(&checkpoint.input_offsets)
        .bind(&checkpoint.state_key)
        .bind(at)
        .bind(name)
        .bind(dataflow)
        .bind(u(epoch))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
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
        let row = sqlx::query(
            "UPDATE views SET owner = $1, epoch = epoch + 1, lease_until_us = $2 \
             WHERE name = $3 AND ($4 OR owner IS NULL OR lease_until_us IS NULL \
                                  OR lease_until_us < $5) \
             RETURNING epoch",
        )
        .bind(agent)
        .bind(until)
        .bind(name)
        .bind(steal)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get::<i64, _>("epoch")? as u64))
            .transpose()
    }

    async fn renew_view_lease(
        &self,
        name: &str,
        agent: &str,
        epoch: u64,
        until: Micros,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE views SET lease_until_us = $1 WHERE name = $2 AND owner = $3 AND epoch = $4",
        )
        .bind(until)
        .bind(name)
        .bind(agent)
        .bind(u(epoch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_view_lease(&self, name: &str, agent: &str, epoch: u64) -> Result<()> {
        sqlx::query(
            "UPDATE views SET owner = NULL, lease_until_us = NULL \
             WHERE name = $1 AND owner = $2 AND epoch = $3",
        )
        .bind(name)
        .bind(agent)
        .bind(u(epoch))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
