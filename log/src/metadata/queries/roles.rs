//! Users and roles, their memberships and privileges, for either store.
//! Every write announces `r`, so each agent re-reads what it caches of
//! them.

use async_trait::async_trait;

use super::super::rows::{self, GRANT_COLUMNS, MetaRow, ROLE_COLUMNS};
use super::super::sql::{Backend, Sql, Statement};
use super::super::{GrantRecord, RoleRecord, RoleStore};
use crate::error::{LogError, Result};

/// What a write announces to other agents.
const CHANGED: &str = "r";

/// Runs `statements` in one transaction that announces a change of roles;
/// the rows each changed.
async fn write<B: Backend>(b: &B, statements: Vec<Statement>) -> Result<Vec<u64>> {
    let mut w = b.writer().await?;
    let mut done = Vec::with_capacity(statements.len());
    for s in statements {
        done.push(w.execute(s).await?);
    }
    B::announce(&mut w, &[CHANGED.to_string()]).await?;
    B::commit(w).await?;
    Ok(done)
}

#[async_trait]
impl<B: Backend> RoleStore for B {
    async fn create_role(&self, role: &RoleRecord) -> Result<()> {
        let done = write(
            self,
            vec![
                Statement::new(format!(
                    "INSERT INTO roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (name) DO NOTHING"
                ))
                .text(&role.name)
                .int(role.superuser.into())
                .int(role.login.into())
                .opt_text(role.verifier.clone())
                .int(role.created_at),
            ],
        )
        .await?;
        if done[0] == 0 {
            return Err(LogError::RoleExists(role.name.clone()));
        }
        Ok(())
    }

    async fn alter_role(&self, role: &RoleRecord) -> Result<()> {
        let done = write(
            self,
            vec![
                Statement::new(
                    "UPDATE roles SET superuser = $1, can_login = $2, verifier = $3 \
                     WHERE name = $4",
                )
                .int(role.superuser.into())
                .int(role.login.into())
                .opt_text(role.verifier.clone())
                .text(&role.name),
            ],
        )
        .await?;
        if done[0] == 0 {
            return Err(LogError::UnknownRole(role.name.clone()));
        }
        Ok(())
    }

    async fn drop_role(&self, name: &str) -> Result<bool> {
        let done = write(
            self,
            vec![
                Statement::new("DELETE FROM roles WHERE name = $1").text(name),
                Statement::new("DELETE FROM privileges WHERE grantee = $1").text(name),
                Statement::new("DELETE FROM role_members WHERE role = $1 OR member = $1")
                    .text(name),
            ],
        )
        .await?;
        Ok(done[0] > 0)
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

    async fn grant(&self, grants: &[GrantRecord]) -> Result<()> {
        let statements = grants
            .iter()
            .map(|g| {
                Statement::new(format!(
                    "INSERT INTO privileges ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT DO NOTHING"
                ))
                .text(&g.object_kind)
                .text(&g.object_name)
                .text(&g.grantee)
                .text(&g.privilege)
                .text(&g.grantor)
            })
            .collect();
        write(self, statements).await?;
        Ok(())
    }

    async fn revoke(&self, grants: &[GrantRecord]) -> Result<u64> {
        let statements = grants
            .iter()
            .map(|g| {
                Statement::new(
                    "DELETE FROM privileges WHERE object_kind = $1 AND object_name = $2 \
                     AND grantee = $3 AND privilege = $4",
                )
                .text(&g.object_kind)
                .text(&g.object_name)
                .text(&g.grantee)
                .text(&g.privilege)
            })
            .collect();
        Ok(write(self, statements).await?.iter().sum())
    }

    async fn forget_grants_on(&self, object_kind: &str, object_name: &str) -> Result<()> {
        write(
            self,
            vec![
                Statement::new(
                    "DELETE FROM privileges WHERE object_kind = $1 AND object_name = $2",
                )
                .text(object_kind)
                .text(object_name),
            ],
        )
        .await?;
        Ok(())
    }

    async fn grants(&self) -> Result<Vec<GrantRecord>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(format!(
                "SELECT {GRANT_COLUMNS} FROM privileges \
                 ORDER BY object_kind, object_name, grantee, privilege"
            )))
            .await?;
        rows.iter().map(rows::grant).collect()
    }

    async fn add_member(&self, role: &str, member: &str, grantor: &str) -> Result<()> {
        write(
            self,
            vec![
                Statement::new(
                    "INSERT INTO role_members (role, member, grantor) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .text(role)
                .text(member)
                .text(grantor),
            ],
        )
        .await?;
        Ok(())
    }

    async fn remove_member(&self, role: &str, member: &str) -> Result<bool> {
        let done = write(
            self,
            vec![
                Statement::new("DELETE FROM role_members WHERE role = $1 AND member = $2")
                    .text(role)
                    .text(member),
            ],
        )
        .await?;
        Ok(done[0] > 0)
    }

    async fn members(&self) -> Result<Vec<(String, String)>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(Statement::new(
                "SELECT role, member FROM role_members ORDER BY role, member",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.text("role")?, r.text("member")?)))
            .collect()
    }
}
