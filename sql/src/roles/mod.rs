//! Users and roles: `CREATE ROLE`/`CREATE USER`, `ALTER ROLE`/`ALTER
//! USER` and `DROP ROLE`/`DROP USER`, kept in the metadata store (so every
//! agent of a cluster shares them), and what the doors authenticate
//! against ([`login_verifier`]). A password is stored only as its
//! SCRAM-SHA-256 verifier (`password`).

pub mod password;
pub mod tokens;

use sqlparser::ast::{
    AlterRoleOperation, Expr, ObjectName, Password, RoleOption, Statement as SqlStatement, Value,
};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use streamhouse_log::{Log, LogError, RoleRecord};

use crate::error::{Result, SqlError};
use crate::result::{CommandTag, QueryResult};
use tokens::Tokens;

/// The superuser every server has from its first start.
pub const FIRST_SUPERUSER: &str = "streamhouse";

/// A statement about roles.
#[derive(Debug, Clone, PartialEq)]
pub enum RoleStatement {
    Create {
        name: String,
        if_not_exists: bool,
        options: RoleOptions,
    },
    Alter {
        name: String,
        options: RoleOptions,
    },
    Drop {
        names: Vec<String>,
        if_exists: bool,
    },
}

impl RoleStatement {
    /// The statement as it may be shown (running queries, logs): never
    /// with its password.
    pub fn text(&self) -> String {
        match self {
            RoleStatement::Create { name, .. } => format!("CREATE ROLE {name}"),
            RoleStatement::Alter { name, .. } => format!("ALTER ROLE {name}"),
            RoleStatement::Drop { names, .. } => format!("DROP ROLE {}", names.join(", ")),
        }
    }
}

/// The attributes a statement sets; `None`: left as they are (or the
/// default, for a new role).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleOptions {
    pub login: Option<bool>,
    pub superuser: Option<bool>,
    /// `Some(None)`: `PASSWORD NULL` (no password).
    pub password: Option<Option<String>>,
}

/// Parses a role statement if `p` is at one; `None` (nothing consumed)
/// otherwise.
pub fn parse(p: &mut Parser) -> Result<Option<RoleStatement>> {
    if p.parse_keywords(&[Keyword::CREATE, Keyword::ROLE]) {
        return create(p, false).map(Some);
    }
    if p.parse_keywords(&[Keyword::CREATE, Keyword::USER]) {
        return create(p, true).map(Some);
    }
    if p.parse_keywords(&[Keyword::ALTER, Keyword::ROLE])
        || p.parse_keywords(&[Keyword::ALTER, Keyword::USER])
    {
        let SqlStatement::AlterRole { name, operation } = p.parse_alter_role()? else {
            return Err(SqlError::Syntax("expected ALTER ROLE".into()));
        };
        let AlterRoleOperation::WithOptions { options } = operation else {
            return Err(SqlError::NotSupported(format!(
                "ALTER ROLE {operation}: only attributes and passwords can be changed"
            )));
        };
        return Ok(Some(RoleStatement::Alter {
            name: name.value,
            options: role_options(options)?,
        }));
    }
    if p.parse_keywords(&[Keyword::DROP, Keyword::ROLE])
        || p.parse_keywords(&[Keyword::DROP, Keyword::USER])
    {
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let names = p
            .parse_comma_separated(|p| p.parse_identifier())?
            .into_iter()
            .map(|i| i.value)
            .collect();
        return Ok(Some(RoleStatement::Drop { names, if_exists }));
    }
    Ok(None)
}

/// `CREATE ROLE|USER` after those words; a user may log in unless it says
/// `NOLOGIN`, a role may not unless it says `LOGIN` (as in PostgreSQL).
fn create(p: &mut Parser, user: bool) -> Result<RoleStatement> {
    let c = p.parse_create_role()?;
    let [name] = c.names.as_slice() else {
        return Err(SqlError::NotSupported(
            "CREATE ROLE of several roles at once".into(),
        ));
    };
    let unsupported = c.inherit.is_some()
        || c.bypassrls.is_some()
        || c.create_db.is_some()
        || c.create_role.is_some()
        || c.replication.is_some()
        || c.connection_limit.is_some()
        || c.valid_until.is_some()
        || !c.in_role.is_empty()
        || !c.in_group.is_empty()
        || !c.role.is_empty()
        || !c.user.is_empty()
        || !c.admin.is_empty();
    if unsupported {
        return Err(SqlError::NotSupported(
            "role attributes other than LOGIN, SUPERUSER and PASSWORD".into(),
        ));
    }
    let password = match c.password {
        None => None,
        Some(Password::NullPassword) => Some(None),
        Some(Password::Password(e)) => Some(Some(string(&e)?)),
    };
    Ok(RoleStatement::Create {
        name: single_name(name)?,
        if_not_exists: c.if_not_exists,
        options: RoleOptions {
            login: Some(c.login.unwrap_or(user)),
            superuser: c.superuser,
            password,
        },
    })
}

/// A role's name: one identifier.
fn single_name(n: &ObjectName) -> Result<String> {
    match n.0.as_slice() {
        [part] => part
            .as_ident()
            .map(|i| i.value.clone())
            .ok_or_else(|| SqlError::Syntax(format!("bad role name {n}"))),
        _ => Err(SqlError::Syntax(format!(
            "a role's name is one identifier, not {n}"
        ))),
    }
}

fn role_options(options: Vec<RoleOption>) -> Result<RoleOptions> {
    let mut o = RoleOptions::default();
    for opt in options {
        match opt {
            RoleOption::Login(b) => o.login = Some(b),
            RoleOption::SuperUser(b) => o.superuser = Some(b),
            RoleOption::Password(Password::NullPassword) => o.password = Some(None),
            RoleOption::Password(Password::Password(e)) => o.password = Some(Some(string(&e)?)),
            other => {
                return Err(SqlError::NotSupported(format!(
                    "role attribute {other}: only LOGIN, SUPERUSER and PASSWORD"
                )));
            }
        }
    }
    Ok(o)
}

fn string(e: &Expr) -> Result<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Ok(s.clone()),
            _ => Err(SqlError::Syntax("a password is a string literal".into())),
        },
        _ => Err(SqlError::Syntax("a password is a string literal".into())),
    }
}

/// Runs a role statement; a changed password, a lost login right or a
/// dropped role revokes the role's tokens.
pub async fn run(log: &Log, tokens: &Tokens, stmt: RoleStatement) -> Result<QueryResult> {
    let meta = log.metadata();
    match stmt {
        RoleStatement::Create {
            name,
            if_not_exists,
            options,
        } => {
            let role = RoleRecord {
                name,
                superuser: options.superuser.unwrap_or(false),
                login: options.login.unwrap_or(false),
                verifier: options
                    .password
                    .flatten()
                    .map(|p| password::stored_form(&p)),
                created_at: log.now_micros(),
            };
            match meta.create_role(&role).await {
                Err(LogError::RoleExists(_)) if if_not_exists => {}
                other => other?,
            }
            Ok(QueryResult::command(CommandTag::CreateRole))
        }
        RoleStatement::Alter { name, options } => {
            let mut role = meta
                .role(&name)
                .await?
                .ok_or_else(|| LogError::UnknownRole(name.clone()))?;
            if let Some(b) = options.superuser {
                role.superuser = b;
            }
            if let Some(b) = options.login {
                role.login = b;
            }
            if let Some(p) = options.password {
                role.verifier = p.map(|p| password::stored_form(&p));
            }
            meta.alter_role(&role).await?;
            tokens.revoke_user(&role.name);
            Ok(QueryResult::command(CommandTag::AlterRole))
        }
        RoleStatement::Drop { names, if_exists } => {
            for name in names {
                if name == FIRST_SUPERUSER || name == crate::privileges::MONITOR {
                    return Err(SqlError::DependentObjects(format!(
                        "role \"{name}\" cannot be dropped: the server needs it"
                    )));
                }
                if !meta.drop_role(&name).await? && !if_exists {
                    return Err(LogError::UnknownRole(name).into());
                }
                tokens.revoke_user(&name);
            }
            Ok(QueryResult::command(CommandTag::DropRole))
        }
    }
}

/// The verifier `user` logs in with: `None` when there is no such role, it
/// may not log in, or it has no password — the doors answer all three
/// alike, so a client cannot tell which.
pub async fn login_verifier(log: &Log, user: &str) -> Result<Option<password::Verifier>> {
    let Some(role) = log.metadata().role(user).await? else {
        return Ok(None);
    };
    match role.verifier {
        Some(v) if role.login => Ok(Some(password::Verifier::parse(&v)?)),
        _ => Ok(None),
    }
}

/// Checks `user`'s `password` (for doors that receive one, rather than a
/// SCRAM exchange) and issues a token for later calls; every failure is
/// the same error, so a client cannot tell a wrong password from an
/// unknown user.
pub async fn login(log: &Log, tokens: &Tokens, user: &str, password: &str) -> Result<String> {
    match login_verifier(log, user).await? {
        Some(v) if v.matches(password) => Ok(tokens.issue(user)),
        _ => Err(SqlError::InvalidPassword(format!(
            "password authentication failed for user \"{user}\""
        ))),
    }
}

/// `(user, password)` from an `Authorization` header value `Basic
/// base64(user:password)`, the base64 padded or not (Go's Flight client
/// leaves the padding off).
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Makes sure the first superuser exists: created on a server's first
/// start, with `password` (none: no password, so it cannot log in with
/// one until `ALTER ROLE` gives it one). An existing role is left as it
/// is; its password is changed with `ALTER ROLE`. Also makes the role
/// `pg_monitor`, whose members may read the HTTP admin API.
pub async fn ensure_first_superuser(log: &Log, password: Option<&str>) -> Result<()> {
    let first = RoleRecord {
        name: FIRST_SUPERUSER.to_string(),
        superuser: true,
        login: true,
        verifier: password.map(password::verifier_of),
        created_at: log.now_micros(),
    };
    let monitor = RoleRecord {
        name: crate::privileges::MONITOR.to_string(),
        superuser: false,
        login: false,
        verifier: None,
        created_at: log.now_micros(),
    };
    for role in [first, monitor] {
        match log.metadata().create_role(&role).await {
            Ok(()) | Err(LogError::RoleExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::basic_credentials;

    #[test]
    fn basic_credentials_take_padded_and_unpadded_base64() {
        // "alice:pa:ss" padded, then without its padding.
        let want = Some(("alice".to_string(), "pa:ss".to_string()));
        assert_eq!(basic_credentials("Basic YWxpY2U6cGE6c3M="), want);
        assert_eq!(basic_credentials("Basic YWxpY2U6cGE6c3M"), want);
        assert_eq!(basic_credentials("Bearer YWxpY2U6cGE6c3M="), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        // No colon: not credentials.
        assert_eq!(basic_credentials("Basic YWxpY2U="), None);
    }
}
