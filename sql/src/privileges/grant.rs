//! `GRANT` and `REVOKE`: of privileges on relations (streams and views),
//! schemas and consumer groups, and of membership in roles.
//!
//! ```text
//! GRANT { privilege [, …] | ALL [PRIVILEGES] }
//!     ON { [TABLE | STREAM | VIEW | MATERIALIZED VIEW] name [, …]
//!        | SCHEMA name [, …] | GROUP name [, …] | ALL GROUPS }
//!     TO { role | PUBLIC } [, …]
//! GRANT role [, …] TO role [, …]
//! REVOKE … FROM … [CASCADE | RESTRICT]
//! ```
//!
//! Privileges: SELECT, INSERT and DROP on relations; CREATE (and USAGE,
//! which every role holds already) on schemas; CONSUME on groups.

use sqlparser::ast::ObjectName;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;
use streamhouse_log::{GrantRecord, Log, LogError};

use super::{ALL_GROUPS, Need, Object, ObjectKind, PUBLIC, Privilege, Snapshot};
use crate::error::{Result, SqlError};
use crate::idents::normalize;
use crate::result::{CommandTag, QueryResult};

/// A `GRANT` or `REVOKE`.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantStatement {
    Privileges {
        grant: bool,
        /// Empty: `ALL`.
        privileges: Vec<Privilege>,
        kind: ObjectKind,
        objects: Vec<String>,
        grantees: Vec<String>,
    },
    Membership {
        grant: bool,
        roles: Vec<String>,
        members: Vec<String>,
    },
}

impl GrantStatement {
    /// The statement as logs and the audit trail show it.
    pub fn text(&self) -> String {
        match self {
            GrantStatement::Privileges {
                grant,
                privileges,
                kind,
                objects,
                grantees,
            } => {
                let privileges = if privileges.is_empty() {
                    "ALL".to_string()
                } else {
                    privileges
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let kind = match kind {
                    ObjectKind::Table => "TABLE",
                    ObjectKind::Schema => "SCHEMA",
                    ObjectKind::Group => "GROUP",
                };
                let (verb, to) = verbs(*grant);
                format!(
                    "{verb} {privileges} ON {kind} {} {to} {}",
                    objects.join(", "),
                    grantees.join(", ")
                )
            }
            GrantStatement::Membership {
                grant,
                roles,
                members,
            } => {
                let (verb, to) = verbs(*grant);
                format!("{verb} {} {to} {}", roles.join(", "), members.join(", "))
            }
        }
    }

    /// What the caller needs: ownership of each object (a superuser owns
    /// everything), or a superuser for memberships.
    pub fn needs(&self) -> Vec<Need> {
        match self {
            GrantStatement::Privileges { kind, objects, .. } => objects
                .iter()
                .map(|o| {
                    Need::Owner(Object {
                        kind: *kind,
                        name: o.clone(),
                    })
                })
                .collect(),
            GrantStatement::Membership { .. } => {
                vec![Need::Superuser("granting or revoking role membership")]
            }
        }
    }
}

/// The statement's verb and the word before its grantees.
fn verbs(grant: bool) -> (&'static str, &'static str) {
    if grant {
        ("GRANT", "TO")
    } else {
        ("REVOKE", "FROM")
    }
}

/// Parses a `GRANT` or `REVOKE` if `p` is at one; `None` (nothing
/// consumed) otherwise.
pub fn parse(p: &mut Parser) -> Result<Option<GrantStatement>> {
    let grant = if p.parse_keyword(Keyword::GRANT) {
        true
    } else if p.parse_keyword(Keyword::REVOKE) {
        false
    } else {
        return Ok(None);
    };
    if !grant && p.parse_keywords(&[Keyword::GRANT, Keyword::OPTION, Keyword::FOR]) {
        return Err(SqlError::NotSupported(
            "GRANT OPTION: only owners and superusers grant".into(),
        ));
    }
    let all = p.parse_keyword(Keyword::ALL);
    if all {
        let _ = p.parse_keyword(Keyword::PRIVILEGES);
    }
    let words = if all {
        Vec::new()
    } else {
        p.parse_comma_separated(|p| p.parse_identifier())?
    };
    let to = if grant { Keyword::TO } else { Keyword::FROM };
    let stmt = if p.parse_keyword(Keyword::ON) {
        let mut privileges = Vec::new();
        let mut usage = false;
        for w in &words {
            match Privilege::parse(&w.value) {
                Some(p) => privileges.push(p),
                None if w.value.eq_ignore_ascii_case("usage") => usage = true,
                None => {
                    return Err(SqlError::NotSupported(format!(
                        "privilege {}: StreamHouse grants SELECT, INSERT, UPDATE, DELETE, DROP, \
                         CREATE and CONSUME",
                        w.value.to_uppercase()
                    )));
                }
            }
        }
        let (kind, objects) = objects(p)?;
        if usage && kind != ObjectKind::Schema {
            return Err(SqlError::InvalidGrant(format!(
                "invalid privilege type USAGE for {}",
                kind_name(kind)
            )));
        }
        if let Some(bad) = privileges
            .iter()
            .find(|p| !Privilege::of_kind(kind).contains(p))
        {
            return Err(SqlError::InvalidGrant(format!(
                "invalid privilege type {} for {}",
                bad.name(),
                kind_name(kind)
            )));
        }
        // USAGE alone changes nothing: every role may use the schema.
        let objects = if !all && privileges.is_empty() {
            Vec::new()
        } else {
            objects
        };
        p.expect_keyword(to)?;
        GrantStatement::Privileges {
            grant,
            privileges,
            kind,
            objects,
            grantees: grantees(p)?,
        }
    } else {
        if all {
            return Err(SqlError::Syntax("expected ON after ALL PRIVILEGES".into()));
        }
        p.expect_keyword(to)?;
        GrantStatement::Membership {
            grant,
            roles: words.iter().map(normalize).collect(),
            members: p
                .parse_comma_separated(|p| p.parse_identifier())?
                .iter()
                .map(normalize)
                .collect(),
        }
    };
    finish(p, stmt)
}

/// The end of a statement: `WITH GRANT OPTION` and `GRANTED BY` are
/// refused; `CASCADE` and `RESTRICT` of a REVOKE change nothing (grant
/// options are not kept, so nothing depends on a privilege).
fn finish(p: &mut Parser, stmt: GrantStatement) -> Result<Option<GrantStatement>> {
    if p.parse_keywords(&[Keyword::WITH, Keyword::GRANT, Keyword::OPTION])
        || p.parse_keywords(&[Keyword::WITH, Keyword::ADMIN, Keyword::OPTION])
    {
        return Err(SqlError::NotSupported(
            "WITH GRANT OPTION / WITH ADMIN OPTION: only owners and superusers grant".into(),
        ));
    }
    if p.parse_keywords(&[Keyword::GRANTED, Keyword::BY]) {
        return Err(SqlError::NotSupported("GRANTED BY".into()));
    }
    let _ = p.parse_keyword(Keyword::CASCADE) || p.parse_keyword(Keyword::RESTRICT);
    Ok(Some(stmt))
}

fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Table => "relation",
        ObjectKind::Schema => "schema",
        ObjectKind::Group => "consumer group",
    }
}

/// What follows `ON`.
fn objects(p: &mut Parser) -> Result<(ObjectKind, Vec<String>)> {
    if p.parse_keyword(Keyword::SCHEMA) {
        let names = p.parse_comma_separated(|p| p.parse_identifier())?;
        return Ok((ObjectKind::Schema, names.iter().map(normalize).collect()));
    }
    if p.parse_keywords(&[Keyword::ALL, Keyword::GROUPS]) {
        return Ok((ObjectKind::Group, vec![ALL_GROUPS.to_string()]));
    }
    if p.parse_keyword(Keyword::GROUP) {
        let names = p.parse_comma_separated(|p| p.parse_identifier())?;
        return Ok((
            ObjectKind::Group,
            names.iter().map(|i| i.value.clone()).collect(),
        ));
    }
    if p.parse_keyword(Keyword::ALL) {
        return Err(SqlError::NotSupported(
            "ON ALL TABLES IN SCHEMA: name the streams and views".into(),
        ));
    }
    let _ = p.parse_keyword(Keyword::TABLE)
        || p.parse_keyword(Keyword::STREAM)
        || p.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW])
        || p.parse_keyword(Keyword::VIEW);
    let names = p
        .parse_comma_separated(|p| p.parse_object_name(false))?
        .iter()
        .map(relation_name)
        .collect::<Result<_>>()?;
    Ok((ObjectKind::Table, names))
}

fn grantees(p: &mut Parser) -> Result<Vec<String>> {
    Ok(p.parse_comma_separated(|p| {
        if let Token::Word(w) = &p.peek_token_ref().token
            && w.quote_style.is_none()
            && w.value.eq_ignore_ascii_case(PUBLIC)
        {
            p.next_token();
            return Ok(PUBLIC.to_string());
        }
        p.parse_identifier().map(|i| normalize(&i))
    })?)
}

/// A relation's name as privileges name it: bare in the `public` schema,
/// qualified in any other.
pub fn relation_name(name: &ObjectName) -> Result<String> {
    let parts = name
        .0
        .iter()
        .map(|p| p.as_ident().map(normalize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| SqlError::Syntax(format!("invalid name {name}")))?;
    Ok(match parts.as_slice() {
        [schema, name] if schema == super::SCHEMA => name.clone(),
        [_catalog, schema, name] if schema == super::SCHEMA => name.clone(),
        _ => parts.join("."),
    })
}

/// Refuses to drop roles that own objects (2BP01), as PostgreSQL does:
/// the objects would be left with no owner.
pub fn check_owns_nothing(held: &Snapshot, roles: &[String]) -> Result<()> {
    for g in held.grants() {
        if g.privilege == super::OWNER && roles.contains(&g.grantee) {
            return Err(SqlError::DependentObjects(format!(
                "role \"{}\" cannot be dropped because it owns {} {}: drop it first",
                g.grantee, g.object_kind, g.object_name
            )));
        }
    }
    Ok(())
}

/// Runs a GRANT or REVOKE the caller may run (its needs were checked).
/// `exists` says whether a relation of that name exists.
pub async fn run(
    log: &Log,
    held: &Snapshot,
    grantor: &str,
    stmt: GrantStatement,
    exists: impl Fn(&str) -> bool,
) -> Result<QueryResult> {
    let meta = log.metadata();
    let known = |role: &str| {
        if role == PUBLIC || held.role_exists(role) {
            Ok(())
        } else {
            Err(SqlError::from(LogError::UnknownRole(role.to_string())))
        }
    };
    let tag = match stmt {
        GrantStatement::Privileges {
            grant,
            privileges,
            kind,
            objects,
            grantees,
        } => {
            for g in &grantees {
                known(g)?;
            }
            for o in &objects {
                match kind {
                    ObjectKind::Table if !exists(o) => {
                        return Err(SqlError::UndefinedTable(o.clone()));
                    }
                    ObjectKind::Schema if o != super::SCHEMA => {
                        return Err(SqlError::UndefinedObject(format!(
                            "schema \"{o}\" does not exist"
                        )));
                    }
                    _ => {}
                }
            }
            let privileges = if privileges.is_empty() && !objects.is_empty() {
                Privilege::of_kind(kind).to_vec()
            } else {
                privileges
            };
            let mut records = Vec::new();
            for o in &objects {
                for g in &grantees {
                    for p in &privileges {
                        records.push(GrantRecord {
                            object_kind: kind.stored().to_string(),
                            object_name: o.clone(),
                            grantee: g.clone(),
                            privilege: p.name().to_string(),
                            grantor: grantor.to_string(),
                        });
                    }
                }
            }
            if !records.is_empty() {
                if grant {
                    meta.grant(&records).await?;
                } else {
                    meta.revoke(&records).await?;
                }
            }
            if grant {
                CommandTag::Grant
            } else {
                CommandTag::Revoke
            }
        }
        GrantStatement::Membership {
            grant,
            roles,
            members,
        } => {
            for r in roles.iter().chain(&members) {
                if r == PUBLIC {
                    return Err(SqlError::InvalidGrant(
                        "PUBLIC is every role; it has no members to grant".into(),
                    ));
                }
                known(r)?;
            }
            for role in &roles {
                for member in &members {
                    if grant {
                        if held.roles_of(role).contains(member) {
                            return Err(SqlError::InvalidGrant(format!(
                                "role \"{role}\" is a member of role \"{member}\": \
                                 memberships may not form a loop"
                            )));
                        }
                        meta.add_member(role, member, grantor).await?;
                    } else {
                        meta.remove_member(role, member).await?;
                    }
                }
            }
            if grant {
                CommandTag::GrantRole
            } else {
                CommandTag::RevokeRole
            }
        }
    };
    log.roles_changed();
    Ok(QueryResult::command(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::{Statement, parse as parse_sql};

    fn one(sql: &str) -> GrantStatement {
        match parse_sql(sql).unwrap().pop().unwrap() {
            Statement::Grant(g) => g,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn grants_parse_into_objects_privileges_and_grantees() {
        assert_eq!(
            one("GRANT SELECT, insert ON STREAM public.Orders, \"Mixed\" TO alice, PUBLIC"),
            GrantStatement::Privileges {
                grant: true,
                privileges: vec![Privilege::Select, Privilege::Insert],
                kind: ObjectKind::Table,
                objects: vec!["orders".into(), "Mixed".into()],
                grantees: vec!["alice".into(), "public".into()],
            }
        );
        assert_eq!(
            one("REVOKE ALL PRIVILEGES ON MATERIALIZED VIEW v FROM bob CASCADE"),
            GrantStatement::Privileges {
                grant: false,
                privileges: vec![],
                kind: ObjectKind::Table,
                objects: vec!["v".into()],
                grantees: vec!["bob".into()],
            }
        );
        assert_eq!(
            one("GRANT CONSUME ON ALL GROUPS TO w"),
            GrantStatement::Privileges {
                grant: true,
                privileges: vec![Privilege::Consume],
                kind: ObjectKind::Group,
                objects: vec![ALL_GROUPS.into()],
                grantees: vec!["w".into()],
            }
        );
        assert_eq!(
            one("GRANT analysts, ops TO alice"),
            GrantStatement::Membership {
                grant: true,
                roles: vec!["analysts".into(), "ops".into()],
                members: vec!["alice".into()],
            }
        );
        // USAGE on a schema is held by every role: nothing to record.
        let GrantStatement::Privileges { objects, .. } = one("GRANT USAGE ON SCHEMA public TO a")
        else {
            panic!("not a privilege grant")
        };
        assert!(objects.is_empty());
    }

    #[test]
    fn what_cannot_be_granted_is_refused_by_name() {
        for (sql, want) in [
            (
                "GRANT INSERT ON SCHEMA public TO a",
                "invalid privilege type INSERT",
            ),
            (
                "GRANT CONSUME ON orders TO a",
                "invalid privilege type CONSUME",
            ),
            ("GRANT TRUNCATE ON orders TO a", "privilege TRUNCATE"),
            (
                "GRANT SELECT ON orders TO a WITH GRANT OPTION",
                "GRANT OPTION",
            ),
            (
                "REVOKE GRANT OPTION FOR SELECT ON orders FROM a",
                "GRANT OPTION",
            ),
        ] {
            let e = parse_sql(sql).unwrap_err().to_string();
            assert!(e.contains(want), "{sql}: {e}");
        }
    }
}
