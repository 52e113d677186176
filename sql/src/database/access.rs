//! Who may do what, at the front door: logins and bearer tokens, the one
//! privilege check every door's calls pass (denials audited), and the
//! ownership and grants that objects' statements record or forget.

use std::sync::Arc;

use super::Database;
use crate::audit::AuditEvent;
use crate::error::{Result, SqlError};
use crate::privileges::{Need, Object, needs};
use crate::session::Session;

impl Database {
    /// The password verifier `user` logs in with through any door (`None`:
    /// no such user, it may not log in, or it has no password).
    pub async fn login_verifier(
        &self,
        user: &str,
    ) -> Result<Option<crate::roles::password::Verifier>> {
        crate::roles::login_verifier(&self.log, user).await
    }

    /// Checks a password a door received (through `door`) and issues a
    /// bearer token for later calls; 28P01 for any failure. The login, or
    /// its failure, goes to the audit trail.
    pub async fn login(&self, door: &str, user: &str, password: &str) -> Result<String> {
        let result = crate::roles::login(&self.log, &self.tokens, user, password).await;
        self.audit(AuditEvent {
            event: if result.is_ok() {
                "login"
            } else {
                "login_failed"
            },
            user: Some(user.to_string()),
            door: door.to_string(),
            success: result.is_ok(),
            detail: Some(match &result {
                Ok(_) => "Basic, for a bearer token".to_string(),
                Err(e) => e.to_string(),
            }),
            ..AuditEvent::default()
        });
        result
    }

    /// Checks `user`'s `password` without issuing a token (a door whose
    /// clients send their credentials with every request); failures are
    /// audited like logins.
    pub async fn check_password(&self, door: &str, user: &str, password: &str) -> Result<()> {
        let ok = match crate::roles::login_verifier(&self.log, user).await? {
            Some(v) => v.matches(password),
            None => false,
        };
        if ok {
            return Ok(());
        }
        let e = SqlError::InvalidPassword(format!(
            "password authentication failed for user \"{user}\""
        ));
        self.audit(AuditEvent {
            event: "login_failed",
            user: Some(user.to_string()),
            door: door.to_string(),
            success: false,
            detail: Some(e.to_string()),
            ..AuditEvent::default()
        });
        Err(e)
    }

    /// The user a bearer token was issued to, while it is live.
    pub fn token_user(&self, token: &str) -> Option<String> {
        self.tokens.user_of(token)
    }

    /// Revokes a bearer token; whether it was live.
    pub fn revoke_token(&self, token: &str) -> bool {
        self.tokens.revoke(token)
    }

    /// The one privilege check every door's calls pass: whether `role`
    /// (a client of `door`) may do everything `needs` says. `None` is a
    /// trusted caller (the server runs with `--auth trust`, or the system
    /// itself), which may do anything. A denial is 42501 and goes to the
    /// audit trail.
    pub async fn authorize(&self, door: &str, role: Option<&str>, needs: &[Need]) -> Result<()> {
        let Some(role) = role else {
            return Ok(());
        };
        if needs.is_empty() {
            return Ok(());
        }
        let Err(need) = self.privileges.check(role, needs).await? else {
            return Ok(());
        };
        let message = need.denied();
        self.audit(AuditEvent {
            event: "denied",
            user: Some(role.to_string()),
            door: door.to_string(),
            object: match &need {
                Need::Privilege(_, o) | Need::Owner(o) => Some(o.describe()),
                Need::Superuser(_) | Need::Role(_) => None,
            },
            success: false,
            detail: Some(message.clone()),
            ..AuditEvent::default()
        });
        Err(SqlError::InsufficientPrivilege(message))
    }

    /// [`Database::authorize`] for a session's role.
    pub async fn authorize_session(&self, session: &Session, needs: &[Need]) -> Result<()> {
        self.authorize(session.door(), session.role(), needs).await
    }

    /// SELECT on the streams and views a plan reads.
    pub(crate) fn reads(&self, plan: &datafusion::logical_expr::LogicalPlan) -> Vec<Need> {
        let public = self
            .planner
            .ctx
            .catalog(crate::session::DATABASE)
            .and_then(|c| c.schema(crate::privileges::SCHEMA));
        let is_user_relation = |name: &str| public.as_ref().is_some_and(|s| s.table_exist(name));
        needs::plan_reads(plan, &is_user_relation)
    }

    /// What is held now (for the catalog's privilege functions and tables).
    pub async fn privileges(&self) -> Result<Arc<crate::privileges::Snapshot>> {
        self.privileges.snapshot().await
    }

    /// Records that the session's role owns a new object (nothing for a
    /// trusted session, whose objects only superusers own).
    pub(crate) async fn record_owner(&self, session: &Session, object: Object) -> Result<()> {
        let Some(role) = session.role() else {
            return Ok(());
        };
        if self.privileges.snapshot().await?.owner(&object).is_some() {
            return Ok(());
        }
        self.log
            .metadata()
            .grant(&[streamhouse_log::GrantRecord {
                object_kind: object.kind.stored().to_string(),
                object_name: object.name,
                grantee: role.to_string(),
                privilege: crate::privileges::OWNER.to_string(),
                grantor: role.to_string(),
            }])
            .await?;
        self.log.roles_changed();
        Ok(())
    }

    /// Forgets the privileges on dropped relations.
    pub(crate) async fn forget_grants(&self, names: &[String]) -> Result<()> {
        for name in names {
            self.log
                .metadata()
                .forget_grants_on(crate::privileges::ObjectKind::Table.stored(), name)
                .await?;
        }
        self.log.roles_changed();
        Ok(())
    }
}
