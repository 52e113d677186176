//! The catalog's view of privileges, read from the engine's
//! [`Privileges`] snapshot: `has_table_privilege(user, relation,
//! privilege)` (the two-argument form is bound to the session's user when
//! a query runs), `pg_class.relacl` (what psql's `\dp` prints) and
//! `information_schema.table_privileges`.
//!
//! `relacl` items are PostgreSQL's `grantee=letters/grantor` (an empty
//! grantee is PUBLIC), with `r` SELECT and `a` INSERT as in PostgreSQL,
//! and `D` for DROP, which PostgreSQL has no letter for.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder, ListBuilder, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::privileges::{
    Need, OWNER, Object, ObjectKind, PUBLIC, Privilege, Privileges, SCHEMA, Snapshot,
};
use crate::session::{DATABASE, USER};
use crate::system::SystemTable;

/// The function that fills `pg_class.relacl`.
pub(super) const RELACL: &str = "streamhouse_relacl";

/// The engine's privileges, compared by identity (UDFs must be `Eq`).
#[derive(Debug, Clone)]
struct Held(Arc<Privileges>);

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Held {}
impl Hash for Held {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

pub(super) fn register(ctx: &SessionContext, privileges: Arc<Privileges>) {
    let held = Held(privileges);
    ctx.register_udf(ScalarUDF::new_from_impl(HasTablePrivilege {
        held: held.clone(),
        signature: Signature::variadic_any(Volatility::Stable),
        aliases: vec!["pg_catalog.has_table_privilege".into()],
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(RelAcl {
        held,
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Stable),
    }));
}

/// `has_table_privilege([user,] relation, privileges)`: whether the user
/// holds any of the comma-separated privileges on the relation (named as
/// text). The two-argument form asks about the session's user: bound when
/// the query runs ([`bind_current_user`]); unbound, it is a trusted
/// session's question, whose answer is yes.
#[derive(Debug, PartialEq, Eq, Hash)]
struct HasTablePrivilege {
    held: Held,
    signature: Signature,
    aliases: Vec<String>,
}

impl ScalarUDFImpl for HasTablePrivilege {
    fn name(&self) -> &str {
        "has_table_privilege"
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let (user, rest) = match args.args.len() {
            2 => (None, &args.args[..]),
            3 => (Some(&args.args[0]), &args.args[1..]),
            n => {
                return Err(DataFusionError::Plan(format!(
                    "has_table_privilege takes 2 or 3 arguments, not {n}"
                )));
            }
        };
        let snapshot = self.held.0.cached();
        let user = user.map(|u| u.to_array(rows)).transpose()?;
        let table = rest[0].to_array(rows)?;
        let privilege = rest[1].to_array(rows)?;
        let mut out = BooleanBuilder::with_capacity(rows);
        for row in 0..rows {
            let user = match &user {
                Some(u) => ScalarValue::try_from_array(u, row)?,
                None => ScalarValue::Utf8(Some(USER.to_string())),
            };
            let table = ScalarValue::try_from_array(&table, row)?;
            let privilege = ScalarValue::try_from_array(&privilege, row)?;
            let (Some(Some(user)), Some(Some(table)), Some(Some(privilege))) = (
                user.try_as_str(),
                table.try_as_str(),
                privilege.try_as_str(),
            ) else {
                if table.is_null() || user.is_null() || privilege.is_null() {
                    out.append_null();
                    continue;
                }
                return Err(DataFusionError::Execution(
                    "has_table_privilege: name the user and the relation as text".into(),
                ));
            };
            out.append_value(holds(&snapshot, user, table, privilege)?);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Whether `user` holds any of `privileges` (comma-separated, perhaps
/// with `WITH GRANT OPTION`) on relation `table`.
fn holds(snapshot: &Snapshot, user: &str, table: &str, privileges: &str) -> DfResult<bool> {
    let name = match table.strip_prefix("public.") {
        Some(bare) => bare,
        None => table,
    };
    let object = Object::table(name.to_lowercase());
    for p in privileges.split(',') {
        let p = p.trim();
        let p = p
            .strip_suffix("WITH GRANT OPTION")
            .or_else(|| p.strip_suffix("with grant option"))
            .unwrap_or(p)
            .trim();
        let known = [
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "REFERENCES",
            "TRIGGER",
            "MAINTAIN",
        ];
        match Privilege::parse(p) {
            Some(p) if snapshot.allows(user, &Need::Privilege(p, object.clone())) => {
                return Ok(true);
            }
            Some(_) => {}
            // What no stream or view can be given: only superusers hold it.
            None if known.iter().any(|k| k.eq_ignore_ascii_case(p)) => {
                if snapshot.is_superuser(user) {
                    return Ok(true);
                }
            }
            None => {
                return Err(DataFusionError::Execution(format!(
                    "unrecognized privilege type: \"{p}\""
                )));
            }
        }
    }
    Ok(false)
}

/// Replaces the two-argument `has_table_privilege` and `current_user` /
/// `session_user` with the session's user, when a query runs.
pub fn bind_current_user(e: Expr, user: &str, trusted: bool) -> DfResult<(Expr, bool)> {
    let Expr::ScalarFunction(f) = &e else {
        return Ok((e, false));
    };
    let name = f.name();
    if name == "current_user" || name == "session_user" {
        return Ok((
            Expr::Literal(ScalarValue::Utf8(Some(user.to_string())), None),
            true,
        ));
    }
    if name == "has_table_privilege" && f.args.len() == 2 {
        if trusted {
            return Ok((Expr::Literal(ScalarValue::Boolean(Some(true)), None), true));
        }
        let mut f = f.clone();
        f.args.insert(
            0,
            Expr::Literal(ScalarValue::Utf8(Some(user.to_string())), None),
        );
        return Ok((Expr::ScalarFunction(f), true));
    }
    Ok((e, false))
}

/// `pg_class.relacl` of a relation: its grants as `aclitem` text, or NULL
/// (PostgreSQL's "default privileges") when it has none.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RelAcl {
    held: Held,
    signature: Signature,
}

impl ScalarUDFImpl for RelAcl {
    fn name(&self) -> &str {
        RELACL
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::new_list(DataType::Utf8, true))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let names = args.args[0].to_array(rows)?;
        let snapshot = self.held.0.cached();
        let mut out = ListBuilder::new(StringBuilder::new());
        for row in 0..rows {
            let name = ScalarValue::try_from_array(&names, row)?;
            let items = match name.try_as_str() {
                Some(Some(n)) => acl_items(&snapshot, n),
                _ => Vec::new(),
            };
            if items.is_empty() {
                out.append_null();
            } else {
                for i in items {
                    out.values().append_value(i);
                }
                out.append(true);
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}

/// The letters of a privilege in an `aclitem`.
fn letter(privilege: &str) -> &'static str {
    match privilege {
        "SELECT" => "r",
        "INSERT" => "a",
        "DROP" => "D",
        OWNER => "raD",
        _ => "",
    }
}

/// `grantee=letters/grantor` for each role holding something on relation
/// `name`, the owner first.
fn acl_items(snapshot: &Snapshot, name: &str) -> Vec<String> {
    let mut by_grantee: Vec<(String, String, String)> = Vec::new();
    for g in snapshot.grants() {
        if g.object_kind != ObjectKind::Table.stored() || g.object_name != name {
            continue;
        }
        let grantee = if g.grantee == PUBLIC {
            String::new()
        } else {
            g.grantee.clone()
        };
        match by_grantee.iter_mut().find(|(e, _, _)| *e == grantee) {
            Some((_, letters, _)) => {
                for c in letter(&g.privilege).chars() {
                    if !letters.contains(c) {
                        letters.push(c);
                    }
                }
            }
            None => {
                let entry = (grantee, letter(&g.privilege).to_string(), g.grantor.clone());
                if g.privilege == OWNER {
                    by_grantee.insert(0, entry);
                } else {
                    by_grantee.push(entry);
                }
            }
        }
    }
    by_grantee
        .into_iter()
        .map(|(grantee, letters, grantor)| format!("{grantee}={letters}/{grantor}"))
        .collect()
}

/// `information_schema.table_privileges`: one row per privilege a role
/// holds on a stream or view (an owner holds each, grantable), read from
/// the privileges at each scan.
pub(super) fn table_privileges(privileges: Arc<Privileges>) -> Arc<SystemTable> {
    let columns = [
        "grantor",
        "grantee",
        "table_catalog",
        "table_schema",
        "table_name",
        "privilege_type",
        "is_grantable",
        "with_hierarchy",
    ]
    .into_iter()
    .map(|n| (n, DataType::Utf8))
    .collect();
    SystemTable::new(
        columns,
        Arc::new(move || {
            let privileges = privileges.clone();
            Box::pin(async move { Ok(table_privilege_rows(&*privileges.snapshot().await?)) })
        }),
    )
}

fn table_privilege_rows(snapshot: &Snapshot) -> Vec<ArrayRef> {
    let mut cols: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    for g in snapshot.grants() {
        if g.object_kind != ObjectKind::Table.stored() {
            continue;
        }
        let (schema, table) = match g.object_name.split_once('.') {
            Some((s, t)) => (s, t),
            None => (SCHEMA, g.object_name.as_str()),
        };
        let (privileges, grantable): (Vec<&str>, &str) = if g.privilege == OWNER {
            (
                Privilege::of_kind(ObjectKind::Table)
                    .iter()
                    .map(|p| p.name())
                    .collect(),
                "YES",
            )
        } else {
            (vec![g.privilege.as_str()], "NO")
        };
        let grantee = if g.grantee == PUBLIC {
            "PUBLIC"
        } else {
            g.grantee.as_str()
        };
        for p in privileges {
            let row = [
                g.grantor.as_str(),
                grantee,
                DATABASE,
                schema,
                table,
                p,
                grantable,
                "NO",
            ];
            for (col, v) in cols.iter_mut().zip(row) {
                col.append_value(v);
            }
        }
    }
    cols.iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect()
}
