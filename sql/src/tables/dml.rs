//! A table's UPDATE and DELETE: each reads the rows it changes from the
//! table and appends their new versions to the table's log (an UPDATE the
//! changed row, a DELETE the row marked deleted), in one atomic append —
//! an `INSERT INTO log SELECT … FROM t WHERE …` with its own command tag.
//!
//! Concurrent writers of one key: the last append wins (an UPDATE reads the
//! row, then appends; another write of the key in between is overwritten).

use sqlparser::ast::{
    AssignmentTarget, Delete, FromTable, Statement as SqlStatement, TableFactor, TableWithJoins,
    Update,
};
use streamhouse_log::StreamInfo;

use super::{DELETED, quoted};
use crate::database::Database;
use crate::error::{Result, SqlError};
use crate::idents::{normalize, object_name};
use crate::prepared::{Action, Verb};

/// The one table an UPDATE or DELETE names, and its alias.
fn single_table(t: &TableWithJoins) -> Result<(String, Option<String>)> {
    if !t.joins.is_empty() {
        return Err(SqlError::NotSupported(
            "UPDATE or DELETE of a join: name one table".into(),
        ));
    }
    match &t.relation {
        TableFactor::Table { name, alias, .. } => Ok((
            object_name(name)?,
            alias.as_ref().map(|a| normalize(&a.name)),
        )),
        other => Err(SqlError::NotSupported(format!(
            "UPDATE or DELETE of {other}: name a table"
        ))),
    }
}

impl Database {
    /// The log of the table an UPDATE or DELETE changes (a stream is
    /// append-only and refused).
    async fn changed_table(&self, name: &str, verb: &str) -> Result<std::sync::Arc<StreamInfo>> {
        if let Some(info) = self.table_log(name).await? {
            return Ok(info);
        }
        if self.log.stream(name).await.is_ok() || self.views.exists(name) {
            return Err(SqlError::NotSupported(format!(
                "{verb} of \"{name}\": streams and materialized views are append-only \
                 or maintained; a table (CREATE TABLE … PRIMARY KEY) takes {verb}"
            )));
        }
        Err(SqlError::UndefinedTable(name.to_string()))
    }

    /// The table's columns (its log's, without the deleted mark).
    fn table_columns(info: &StreamInfo) -> Vec<String> {
        info.spec
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != DELETED)
            .collect()
    }

    /// An append of the rows `select` (the log's columns, in order) to the
    /// log, planned.
    async fn append_selected(&self, info: &StreamInfo, select: &str, verb: Verb) -> Result<Action> {
        let query = match crate::dialect::parse(select)?.pop() {
            Some(crate::dialect::Statement::Sql(s)) => match *s {
                SqlStatement::Query(q) => q,
                other => {
                    return Err(SqlError::Internal(format!("not a query: {other}")));
                }
            },
            _ => return Err(SqlError::Internal("not a query".into())),
        };
        let source = self.planner.plan(SqlStatement::Query(query)).await?;
        let width = info.spec.schema.fields().len();
        if source.schema().fields().len() != width {
            return Err(SqlError::Internal(format!(
                "{select} has {} columns, the log {width}",
                source.schema().fields().len()
            )));
        }
        Ok(Action::Insert {
            stream: info.name().to_string(),
            targets: (0..width).collect(),
            source,
            param_hints: Vec::new(),
            verb,
        })
    }

    /// `UPDATE t SET c = e, … [WHERE …]`: the rows it matches, changed,
    /// appended to the table's log. A key column cannot be set.
    pub(crate) async fn prepare_update(&self, u: Update) -> Result<Action> {
        if u.from.is_some() || u.returning.is_some() || u.limit.is_some() || u.or.is_some() {
            return Err(SqlError::NotSupported(
                "UPDATE … FROM / RETURNING / LIMIT / OR: set columns of one table, \
                 with a WHERE"
                    .into(),
            ));
        }
        let (name, alias) = single_table(&u.table)?;
        let info = self.changed_table(&name, "UPDATE").await?;
        let columns = Self::table_columns(&info);
        let mut values: Vec<Option<String>> = vec![None; columns.len()];
        for a in &u.assignments {
            let AssignmentTarget::ColumnName(target) = &a.target else {
                return Err(SqlError::NotSupported(
                    "UPDATE … SET (a, b) = …: set each column".into(),
                ));
            };
            let column = target
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(normalize)
                .unwrap_or_default();
            let Some(i) = columns.iter().position(|c| *c == column) else {
                return Err(SqlError::UndefinedColumn(format!(
                    "column \"{column}\" of relation \"{name}\" does not exist"
                )));
            };
            if info.spec.key.contains(&column) {
                return Err(SqlError::NotSupported(format!(
                    "UPDATE of primary key column \"{column}\": DELETE the row and INSERT it \
                     with its new key"
                )));
            }
            if values[i].is_some() {
                return Err(SqlError::Syntax(format!(
                    "multiple assignments to same column \"{column}\""
                )));
            }
            values[i] = Some(format!("({})", a.value));
        }
        let items: Vec<String> = columns
            .iter()
            .zip(values)
            .map(|(c, v)| v.unwrap_or_else(|| quoted(c)))
            .chain(std::iter::once("false".to_string()))
            .collect();
        let select = select_from(&items, &name, alias.as_deref(), u.selection.as_ref());
        self.append_selected(&info, &select, Verb::Update).await
    }

    /// `DELETE FROM t [WHERE …]`: the rows it matches, marked deleted,
    /// appended to the table's log.
    pub(crate) async fn prepare_delete(&self, d: Delete) -> Result<Action> {
        if !d.tables.is_empty()
            || d.using.is_some()
            || d.returning.is_some()
            || d.limit.is_some()
            || !d.order_by.is_empty()
        {
            return Err(SqlError::NotSupported(
                "DELETE … USING / RETURNING / ORDER BY / LIMIT: delete from one table, \
                 with a WHERE"
                    .into(),
            ));
        }
        let tables = match &d.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let [table] = tables.as_slice() else {
            return Err(SqlError::NotSupported(
                "DELETE from several tables: delete from one".into(),
            ));
        };
        let (name, alias) = single_table(table)?;
        let info = self.changed_table(&name, "DELETE").await?;
        let items: Vec<String> = Self::table_columns(&info)
            .iter()
            .map(|c| quoted(c))
            .chain(std::iter::once("true".to_string()))
            .collect();
        let select = select_from(&items, &name, alias.as_deref(), d.selection.as_ref());
        self.append_selected(&info, &select, Verb::Delete).await
    }
}

/// `SELECT items FROM "table" [AS alias] [WHERE selection]`.
fn select_from(
    items: &[String],
    table: &str,
    alias: Option<&str>,
    selection: Option<&sqlparser::ast::Expr>,
) -> String {
    let mut sql = format!("SELECT {} FROM {}", items.join(", "), quoted(table));
    if let Some(a) = alias {
        sql.push_str(&format!(" AS {}", quoted(a)));
    }
    if let Some(w) = selection {
        sql.push_str(&format!(" WHERE {w}"));
    }
    sql
}
