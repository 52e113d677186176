//! What a statement needs of its caller: the relations a plan or a query
//! reads, and the privileges each kind of statement takes.

use std::ops::ControlFlow;

use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use sqlparser::ast::{Query, visit_relations};

use super::grant::relation_name;
use super::{Need, Object, Privilege, SCHEMA};
use crate::dialect::{Statement, Subscribe};
use crate::roles::RoleStatement;

/// The schemas of the system catalog, which every role may read.
const OPEN_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];
/// The system's own relations that need a grant like a user's: the audit
/// trail (`streamhouse.audit`). The rest of `streamhouse` is open.
const GUARDED_SYSTEM_TABLES: &[&str] = &["audit"];

/// The name privileges know a relation by, or `None` for a relation every
/// role may read. `is_user_relation` says whether `public` has a relation
/// of a bare name (one it lacks is the catalog's, as PostgreSQL finds
/// `pg_class` without `pg_catalog.`).
fn guarded(
    schema: Option<&str>,
    table: &str,
    is_user_relation: &dyn Fn(&str) -> bool,
) -> Option<String> {
    match schema {
        None if is_user_relation(table) => Some(table.to_string()),
        None => None,
        Some(s) if s == SCHEMA => Some(table.to_string()),
        Some(s) if OPEN_SCHEMAS.contains(&s) => None,
        Some("streamhouse") if GUARDED_SYSTEM_TABLES.contains(&table) => {
            Some(format!("streamhouse.{table}"))
        }
        Some("streamhouse") => None,
        Some(s) => Some(format!("{s}.{table}")),
    }
}

/// SELECT on every guarded relation a plan scans, subqueries included,
/// and inside the plans of the tables it scans that are views (the table
/// functions `tumble`, `hop`, `session` and `changes` answer views over
/// the relation they are given; so do the catalog's views).
pub fn plan_reads(plan: &LogicalPlan, is_user_relation: &dyn Fn(&str) -> bool) -> Vec<Need> {
    let mut names = Vec::new();
    scans(plan, is_user_relation, &mut names, 0);
    names
        .into_iter()
        .map(|n| Need::Privilege(Privilege::Select, Object::table(n)))
        .collect()
}

/// Views over views nest at most this deep here (a guard, not a limit
/// any plan reaches).
const MAX_VIEW_DEPTH: usize = 16;

fn scans(
    plan: &LogicalPlan,
    is_user_relation: &dyn Fn(&str) -> bool,
    names: &mut Vec<String>,
    depth: usize,
) {
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let (schema, table) = match &scan.table_name {
                TableReference::Bare { table } => (None, table.as_ref()),
                TableReference::Partial { schema, table } => {
                    (Some(schema.as_ref()), table.as_ref())
                }
                TableReference::Full { schema, table, .. } => {
                    (Some(schema.as_ref()), table.as_ref())
                }
            };
            if let Some(name) = guarded(schema, table, is_user_relation)
                && !names.contains(&name)
            {
                names.push(name);
            }
            if let Some(inner) = scan.source.get_logical_plan() {
                if depth >= MAX_VIEW_DEPTH {
                    // Refuse what cannot be checked: a need nobody holds
                    // but a superuser.
                    names.push(format!("{table} (views nested too deeply)"));
                } else {
                    scans(&inner, is_user_relation, names, depth + 1);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

/// SELECT on every guarded relation a query names (for statements whose
/// query is planned later: views and subscriptions). A name the query
/// gives a CTE is checked like a relation's: stricter, never looser.
pub fn query_reads(query: &Query) -> Vec<Need> {
    // A bare name is taken as a user's relation: stricter, never looser.
    let bare = |_: &str| true;
    let mut names: Vec<String> = Vec::new();
    let _ = visit_relations(query, |r| {
        if let Ok(full) = relation_name(r) {
            let (schema, table) = match full.split_once('.') {
                Some((s, t)) => (Some(s), t),
                None => (None, full.as_str()),
            };
            if let Some(name) = guarded(schema, table, &bare)
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    names
        .into_iter()
        .map(|n| Need::Privilege(Privilege::Select, Object::table(n)))
        .collect()
}

/// What one of our own statements needs when `caller` runs it.
pub fn of_statement(stmt: &Statement, caller: &str) -> Vec<Need> {
    let create = || Need::Privilege(Privilege::Create, Object::schema(SCHEMA));
    let drop = |names: &[String]| {
        names
            .iter()
            .map(|n| Need::Privilege(Privilege::Drop, Object::table(n.clone())))
            .collect()
    };
    match stmt {
        Statement::CreateStream(_) => vec![create()],
        Statement::AlterStream { name, .. } => vec![Need::Owner(Object::table(name.clone()))],
        Statement::DropStream { names, .. }
        | Statement::DropMaterializedView { names, .. }
        | Statement::DropTable { names, .. } => drop(names),
        Statement::CreateTable(_) => vec![create()],
        Statement::CreateMaterializedView { query, .. } => {
            let mut needs = vec![create()];
            needs.extend(query_reads(query));
            needs
        }
        // A sink reads its stream; dropping one takes what creating did.
        Statement::CreateSink { from, .. } => vec![
            create(),
            Need::Privilege(Privilege::Select, Object::table(from.clone())),
        ],
        Statement::DropSink { .. } => vec![create()],
        // A source makes streams, or writes one (INTO); dropping one takes
        // what creating did.
        Statement::CreateSource { into, .. } => {
            let mut needs = vec![create()];
            needs.extend(
                into.iter()
                    .map(|s| Need::Privilege(Privilege::Insert, Object::table(s.clone()))),
            );
            needs
        }
        Statement::DropSource { .. } => vec![create()],
        Statement::Subscribe(Subscribe::View { name, .. }) => vec![Need::Privilege(
            Privilege::Select,
            Object::table(name.clone()),
        )],
        Statement::Subscribe(Subscribe::Query(q)) => query_reads(q),
        Statement::Role(RoleStatement::Alter { name, options })
            if name == caller && options.login.is_none() && options.superuser.is_none() =>
        {
            // Everyone may change their own password.
            Vec::new()
        }
        Statement::Role(_) => vec![Need::Superuser("creating, altering or dropping roles")],
        Statement::Grant(g) => g.needs(),
        Statement::ShowStreams
        | Statement::ShowMaterializedViews
        | Statement::ShowSinks
        | Statement::ShowSources
        | Statement::Describe { .. }
        | Statement::Sql(_) => Vec::new(),
    }
}
