//! Materialized views: records, leases and checkpoints, in SQLite.

use super::*;

#[async_trait]
impl ViewStore for SqliteMetadata {
    async fn create_view(&self, view: &ViewRecord, created_at: Micros) -> Result<()> {
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "INSERT INTO views \
             (name, dataflow, definition, created_at_us, owner, epoch, lease_until_us) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
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
        let _w = self.write.lock().await;
        let done = sqlx::query("DELETE FROM views WHERE name = ?")
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
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "UPDATE views SET checkpoint_no = ?, input_offsets = ?, state_key = ?, \
             checkpointed_at_us = ? \
             WHERE name = ? AND dataflow = ? AND epoch = ? \
             AND (checkpoint_no IS NULL OR checkpoint_no < ?)",
        )
        .bind(u(checkpoint.number))
        .bind(&checkpoint.input_offsets)
        .bind(&checkpoint.state_key)
        .bind(at)
        .bind(name)
        .bind(dataflow)
        .bind(u(epoch))
        .bind(u(checkpoint.number))
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
        let _w = self.write.lock().await;
        let row = sqlx::query(
            "UPDATE views SET owner = ?, epoch = epoch + 1, lease_until_us = ? \
             WHERE name = ? AND (? OR owner IS NULL OR lease_until_us IS NULL \
                                 OR lease_until_us < ?) \
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
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "UPDATE views SET lease_until_us = ? WHERE name = ? AND owner = ? AND epoch = ?",
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
        let _w = self.write.lock().await;
        sqlx::query(
            "UPDATE views SET owner = NULL, lease_until_us = NULL \
             WHERE name = ? AND owner = ? AND epoch = ?",
        )
        .bind(name)
        .bind(agent)
        .bind(u(epoch))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
