//! Users and roles, for either store.

use async_trait::async_trait;

use super::super::rows::{self, ROLE_COLUMNS};
use super::super::sql::{Backend, Sql, Statement};
use super::super::{RoleRecord, RoleStore};
use crate::error::{LogError, Result};

#[async_trait]
impl<B: Backend> RoleStore for B {
    async fn create_role(&self, role: &RoleRecord) -> Result<()> {
        let done = self
            .single()
            .await?
            .execute(
                Statement::new(format!(
                    "INSERT INTO roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (name) DO NOTHING"
                ))
                .text(&role.name)
                .int(role.superuser.into())
                .int(role.login.into())
                .opt_text(role.verifier.clone())
                .int(role.created_at),
            )
            .await?;
        if done == 0 {
            return Err(LogError::RoleExists(role.name.clone()));
        }
        Ok(())
    }

    async fn alter_role(&self, role: &RoleRecord) -> Result<()> {
        let done = self
            .single()
            .await?
            .execute(
                Statement::new(
                    "UPDATE roles SET superuser = $1, can_login = $2, verifier = $3 \
                     WHERE name = $4",
                )
                .int(role.superuser.into())
                .int(role.login.into())
                .opt_text(role.verifier.clone())
                .text(&role.name),
            )
            .await?;
        if done == 0 {
            return Err(LogError::UnknownRole(role.name.clone()));
        }
        Ok(())
    }

    async fn drop_role(&self, name: &str) -> Result<bool> {
        let done = self
            .single()
            .await?
            .execute(Statement::new("DELETE FROM roles WHERE name = $1").text(name))
            .await?;
        Ok(done > 0)
    }

    async fn role(&self, name: &str) -> Result<Option<RoleRecord>> {
        let row = self
            .reader()
            .await?
            .fetch_optional(
                Statement::new(format!("SELECT {ROLE_COLUMNS} FROM roles WHERE name = $1"))
                    .text(name),
            )
            .await?;
        row.as_ref().map(rows::role).transpose()
    }

    async fn roles(&self) -> Result<Vec<RoleRecord>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(format!(
                "SELECT {ROLE_COLUMNS} FROM roles ORDER BY name"
            )))
            .await?;
        rows.iter().map(rows::role).collect()
    }
}
