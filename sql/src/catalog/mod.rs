//! The PostgreSQL system catalog, for the clients that introspect it.
//!
//! psql (`\d`, `\dt`, `\l`, `\dn`), drivers (psycopg, asyncpg, pgjdbc, node
//! `pg`), SQLAlchemy and BI tools query `pg_catalog` and
//! `information_schema` on connect and when they list tables. The tables
//! and most functions come from `datafusion-pg-catalog`: `pg_class`,
//! `pg_attribute`, `pg_namespace` … are derived from our DataFusion catalog
//! (so every stream shows up as a table with its columns), the fixed ones
//! (`pg_type`, `pg_proc`, `pg_am` …) are PostgreSQL's own rows.
//!
//! Catalog queries are written in PostgreSQL's dialect (`OPERATOR(pg_catalog.~)`,
//! `COLLATE`, `'t'::regclass`, `ARRAY(subquery)`, correlated subqueries
//! DataFusion cannot plan). [`Compat`] rewrites those, and only those: a
//! statement qualifies when it reads a `pg_catalog` or `information_schema`
//! relation or casts to an object-identifier type. User queries over streams
//! are planned exactly as written.
//!
//! Internal relations (views' stages, tables' logs) are left out of the
//! listings (`unlisted`).

mod functions;
pub mod privileges;
mod rewrite;
mod tables;
mod unlisted;

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::setup_pg_catalog;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use sqlparser::ast::Statement as SqlStatement;

use crate::dialect::{self, Statement};
use crate::error::{Result, SqlError};

pub use rewrite::is_catalog_query;

/// Installs `pg_catalog` and the catalog functions into `ctx`, whose
/// catalog is `catalog`; returns the rewriter for catalog queries.
pub async fn install(
    ctx: &SessionContext,
    catalog: &str,
    log: Arc<streamhouse_log::Log>,
    privileges: Arc<crate::privileges::Privileges>,
) -> Result<Compat> {
    unlisted::install(ctx, catalog, crate::privileges::SCHEMA)?;
    setup_pg_catalog(ctx, catalog, tables::Roles { log })
        .map_err(|e| SqlError::Internal(format!("pg_catalog: {e}")))?;
    privileges::register(ctx, privileges.clone());
    tables::with_array_columns(ctx, catalog).await?;
    {
        let state = ctx.state_ref();
        let existing = state.read().clone();
        let new_state = SessionStateBuilder::new_from_existing(existing)
            .with_type_planner(Arc::new(tables::OidTypes))
            .build();
        *state.write() = new_state;
    }
    functions::register(ctx);
    tables::information_schema(ctx, catalog, privileges).await?;
    Ok(Compat {
        parser: PostgresCompatibilityParser::new(),
        oid_columns: tables::oid_columns(ctx, catalog).await?,
        array_columns: tables::number_array_columns(),
    })
}

/// Rewrites client catalog queries into SQL DataFusion plans.
pub struct Compat {
    parser: PostgresCompatibilityParser,
    /// Catalog columns PostgreSQL types as `oid`.
    oid_columns: HashSet<String>,
    /// Catalog columns that are arrays of numbers.
    array_columns: HashSet<String>,
}

impl std::fmt::Debug for Compat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compat")
    }
}

impl Compat {
    /// The statements of `sql`, catalog queries among them rewritten.
    ///
    /// A few whole client queries (psql's row-security policies, pgcli's
    /// foreign keys …) need features no catalog here has; the compatibility
    /// parser recognises them by their tokens and answers with an empty
    /// result of the same shape, which is the truth for objects StreamHouse
    /// does not have. That matching needs the query text, hence parsing
    /// here rather than per statement.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        let mut stmts = dialect::parse(sql)?;
        for stmt in stmts.iter_mut() {
            if let Statement::Sql(s) = stmt
                && matches!(s.as_ref(), SqlStatement::Query(_))
            {
                rewrite::like_escapes(s);
            }
        }
        if !stmts.iter().any(is_catalog_statement) {
            return Ok(stmts);
        }
        let replaced = self.parser.parse(sql).ok();
        let replaced = replaced.filter(|r| r.len() == stmts.len());
        for (i, stmt) in stmts.iter_mut().enumerate() {
            if !is_catalog_statement(stmt) {
                continue;
            }
            let Statement::Sql(s) = stmt else { continue };
            // Grafana's table list reads the search path with
            // `string_to_array` in FROM; the compatibility parser answers
            // that with an empty list, these rewrites answer it properly.
            let mut rewritten = match &replaced {
                Some(r) if !rewrite::scalar_functions_in_from(s) => r[i].clone(),
                _ => self.parser.rewrite(s.as_ref().clone()),
            };
            rewrite::user_keyword(&mut rewritten);
            rewrite::qualify_added_relations(&mut rewritten);
            rewrite::regproc_zero(&mut rewritten);
            rewrite::table_visibility(&mut rewritten);
            rewrite::scalar_functions_as_relations(&mut rewritten);
            rewrite::like_escapes(&mut rewritten);
            rewrite::array_subqueries(&mut rewritten);
            rewrite::subqueries::hoist_outer_predicates(&mut rewritten);
            rewrite::subqueries::null_outer_projections(&mut rewritten);
            rewrite::subqueries::null_recursive_lookups(&mut rewritten);
            rewrite::generate_subscripts(&mut rewritten);
            rewrite::oid_arrays(&mut rewritten, &self.oid_columns);
            rewrite::array_literals(&mut rewritten, &self.array_columns);
            rewrite::subqueries::aggregate_scalar_subqueries(&mut rewritten);
            **s = rewritten;
        }
        Ok(stmts)
    }
}

fn is_catalog_statement(stmt: &Statement) -> bool {
    match stmt {
        Statement::Sql(s) => is_catalog_query(s),
        _ => false,
    }
}
