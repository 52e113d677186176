//! The agents sharing the store, for either store.

use async_trait::async_trait;

use super::super::rows::{self, AGENT_COLUMNS};
use super::super::sql::{Backend, Sql, Statement};
use super::super::{AgentRecord, AgentStore};
use crate::clock::Micros;
use crate::error::Result;

#[async_trait]
impl<B: Backend> AgentStore for B {
    async fn register_agent(&self, a: &AgentRecord) -> Result<()> {
        self.single()
            .await?
            .execute(
                Statement::new(format!(
                    "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (agent_id) DO UPDATE SET addresses = excluded.addresses, \
                     version = excluded.version, heartbeat_at_us = excluded.heartbeat_at_us, \
                     stopped_at_us = excluded.stopped_at_us"
                ))
                .text(&a.id)
                .text(rows::encode_addresses(&a.addresses))
                .text(&a.version)
                .int(a.started_at)
                .int(a.heartbeat_at)
                .opt_int(a.stopped_at),
            )
            .await?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(format!(
                "SELECT {AGENT_COLUMNS} FROM agents ORDER BY started_at_us, agent_id"
            )))
            .await?;
        rows.iter().map(rows::agent).collect()
    }

    async fn forget_agents(&self, before: Micros) -> Result<()> {
        self.single()
            .await?
            .execute(Statement::new("DELETE FROM agents WHERE heartbeat_at_us < $1").int(before))
            .await?;
        Ok(())
    }
}
