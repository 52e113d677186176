//! A view's stored definition — the statement that compiles it again —
//! and the names derived from it.

use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use sqlparser::ast::{Query, Statement as SqlStatement};
use streamhouse_streams::dataflow::changes::CHANGELOG_PREFIX;

use crate::dialect::{self, Statement, ViewOptions};
use crate::error::{Result, SqlError};
use crate::names::output_names;

/// The plan with its output columns named as PostgreSQL names them
/// (`count`, `sum`, …), so the view's columns have those names.
pub(super) fn with_output_names(plan: LogicalPlan, query: &Query) -> Result<LogicalPlan> {
    let Some(names) = output_names(query) else {
        return Ok(plan);
    };
    if names.len() != plan.schema().fields().len() {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .zip(&names)
        .map(|((q, f), n)| {
            let col = Expr::Column(datafusion::common::Column::new(q.cloned(), f.name()));
            match n {
                Some(n) if n != f.name() => col.alias(n),
                _ => col,
            }
        })
        .collect();
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

/// Stream name of a view incarnation's changelog.
pub(super) fn changelog_name(dataflow: &str) -> String {
    format!("{CHANGELOG_PREFIX}{dataflow}")
}

/// The statement stored for a view: enough to compile it again.
pub(super) fn stored_definition(name: &str, options: &ViewOptions, query: &Query) -> String {
    format!(
        "CREATE MATERIALIZED VIEW \"{}\" {}AS {query}",
        name.replace('"', "\"\""),
        options.to_sql()
    )
}

/// A stored definition: the statement, or (older records) the query alone.
pub(super) fn parse_stored(definition: &str) -> Result<(ViewOptions, Query)> {
    match dialect::parse(definition)?.pop() {
        Some(Statement::CreateMaterializedView { options, query, .. }) => Ok((options, *query)),
        Some(Statement::Sql(s)) => match *s {
            SqlStatement::Query(q) => Ok((ViewOptions::default(), *q)),
            other => Err(SqlError::Internal(format!(
                "stored view is not a query: {other}"
            ))),
        },
        _ => Err(SqlError::Internal(
            "stored view definition unreadable".into(),
        )),
    }
}
