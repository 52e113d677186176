//! Consumer groups: membership transactions and committed offsets, in SQLite.

use super::*;

#[async_trait]
impl GroupStore for SqliteMetadata {
    async fn commit_group_offsets(
        &self,
        group: &str,
        stream_id: StreamId,
        offsets: &[(u32, u64)],
        committed_at: Micros,
        check: Option<&CommitCheck>,
    ) -> Result<()> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(check) = check {
            let stored = load_group(&mut tx, group).await?;
            crate::groups::rules::check_commit(group, stored.as_ref(), check)?;
        }
        write_group_offsets(&mut tx, group, stream_id, offsets, committed_at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_group(
        &self,
        group: &str,
        op: &GroupOp,
        now: Micros,
    ) -> Result<Option<StoredGroup>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let stored = load_group(&mut tx, group).await?;
        let Some(g) = crate::groups::rules::apply(group, stored, op, now)? else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO consumer_groups (group_id, stream_id, partitions, strategy, generation) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET \
             stream_id = excluded.stream_id, partitions = excluded.partitions, \
             generation = excluded.generation",
        )
        .bind(group)
        .bind(g.stream_id)
        .bind(g.partitions as i64)
        .bind(rows::strategy_name(g.strategy))
        .bind(u(g.generation))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM group_members WHERE group_id = ?")
            .bind(group)
            .execute(&mut *tx)
            .await?;
        for (id, m) in &g.members {
            sqlx::query(
                "INSERT INTO group_members (group_id, member_id, heartbeat_at_us, timeout_us) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(group)
            .bind(id)
            .bind(m.heartbeat_at)
            .bind(m.timeout.as_micros() as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(g))
    }

    async fn group_names(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT group_id FROM consumer_groups ORDER BY group_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("group_id")?)).collect()
    }

    async fn group_offsets(&self, group: &str, stream_id: StreamId) -> Result<Vec<(u32, u64)>> {
        let rows = sqlx::query(
            "SELECT partition_no, next_offset FROM group_offsets \
             WHERE group_id = ? AND stream_id = ? ORDER BY partition_no",
        )
        .bind(group)
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("partition_no")? as u32,
                    r.try_get::<i64, _>("next_offset")? as u64,
                ))
            })
            .collect()
    }

    async fn groups(&self) -> Result<Vec<(String, StreamId)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT group_id, stream_id FROM group_offsets ORDER BY group_id, stream_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("group_id")?, r.try_get("stream_id")?)))
            .collect()
    }
}
