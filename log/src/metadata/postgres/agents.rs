//! The agents sharing the store, in PostgreSQL.

use super::*;

#[async_trait]
impl AgentStore for PostgresMetadata {
    async fn register_agent(&self, a: &AgentRecord) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (agent_id) DO UPDATE SET addresses = excluded.addresses, \
             version = excluded.version, heartbeat_at_us = excluded.heartbeat_at_us, \
             stopped_at_us = excluded.stopped_at_us"
        )))
        .bind(&a.id)
        .bind(rows::encode_addresses(&a.addresses))
        .bind(&a.version)
        .bind(a.started_at)
        .bind(a.heartbeat_at)
        .bind(a.stopped_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY started_at_us, agent_id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::agent).collect()
    }

    async fn forget_agents(&self, before: Micros) -> Result<()> {
        sqlx::query("DELETE FROM agents WHERE heartbeat_at_us < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
