//! Tables: rows kept by primary key.
//!
//! `CREATE TABLE t (…, PRIMARY KEY (k))` makes two objects under one name:
//!
//! - the table's **log**, a stream of the system's (`__table__t`,
//!   partitioned by the key) holding every write as a row: INSERT and
//!   UPDATE append the new row, DELETE appends the deleted row marked by
//!   the log's `__deleted` column;
//! - a **materialized view** `t` keeping the latest row of each key (a
//!   top-1 per key, ordered by offset — one key lives in one partition, so
//!   its offsets order its writes), without the deleted ones. Its changelog
//!   is the table's changes: an INSERT over an existing key deletes the old
//!   row and inserts the new one, so views over the table, joins with it,
//!   `changes(t)` and `SUBSCRIBE TO t` see updates and deletes.
//!
//! INSERT overwrites the row of its key (an upsert); UPDATE and DELETE
//! read the rows they change from the table and append their new versions
//! (`dml`). A read of the table waits until the view reflects everything
//! its log held when the read began, so an acknowledged write is seen by
//! the next read.

mod dml;
pub(crate) mod own_writes;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use sqlparser::ast::{
    ColumnOption, CreateTable, CreateTableOptions, Expr, SqlOption, TableConstraint, Value,
};
use streamhouse_log::stream::{DEFAULT_KEY, is_system_column};
use streamhouse_log::{LogError, StreamInfo, StreamKind, StreamSpec, TABLE_PREFIX, table_log_name};

use crate::database::Database;
use crate::dialect::ViewOptions;
use crate::error::{Result, SqlError};
use crate::idents::{normalize, object_name};
use crate::result::{CommandTag, QueryResult};

/// The log's column saying a row deletes its key.
pub(crate) const DELETED: &str = streamhouse_log::TABLE_DELETED_COLUMN;

/// The name users know a relation by: a table's log answers to its table.
pub(crate) fn relation_name(stream: &str) -> &str {
    stream.strip_prefix(TABLE_PREFIX).unwrap_or(stream)
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The query of the view that keeps a table's rows: the latest write of
/// each key, unless it deletes.
fn latest_rows(table: &str, columns: &[String], key: &[String]) -> String {
    let cols = columns
        .iter()
        .map(|c| quoted(c))
        .collect::<Vec<_>>()
        .join(", ");
    let key = key.iter().map(|c| quoted(c)).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {cols} FROM (SELECT {cols}, {deleted}, row_number() OVER \
         (PARTITION BY {key} ORDER BY _offset DESC) AS __latest FROM {log}) AS writes \
         WHERE __latest = 1 AND NOT {deleted}",
        deleted = quoted(DELETED),
        log = quoted(&table_log_name(table)),
    )
}

/// The primary key's columns, from a column's `PRIMARY KEY` or the
/// table's constraint (exactly one of them).
fn primary_key(c: &CreateTable) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for col in &c.columns {
        if col
            .options
            .iter()
            .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
        {
            keys.push(vec![normalize(&col.name)]);
        }
    }
    for constraint in &c.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                let cols = pk
                    .columns
                    .iter()
                    .map(|ic| match &ic.column.expr {
                        Expr::Identifier(id) => Ok(normalize(id)),
                        other => Err(SqlError::NotSupported(format!(
                            "PRIMARY KEY over an expression ({other}): name columns"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                keys.push(cols);
            }
            other => {
                return Err(SqlError::NotSupported(format!(
                    "table constraint {other}: a table has one PRIMARY KEY and no other constraint"
                )));
            }
        }
    }
    match keys.len() {
        0 => Err(SqlError::NotSupported(
            "CREATE TABLE without a PRIMARY KEY: a table keeps one row per key; \
             for rows without a key, use CREATE STREAM"
                .into(),
        )),
        1 => Ok(keys.pop().unwrap_or_default()),
        _ => Err(SqlError::InvalidDefinition(format!(
            "multiple primary keys for table \"{}\" are not allowed",
            c.name
        ))),
    }
}

/// `WITH (partitions = N)`; 1 without it.
fn partitions(options: &CreateTableOptions) -> Result<u32> {
    let opts: &[SqlOption] = match options {
        CreateTableOptions::None => return Ok(1),
        CreateTableOptions::With(opts) => opts,
        other => {
            return Err(SqlError::NotSupported(format!(
                "table options {other} (supported: WITH (partitions = N))"
            )));
        }
    };
    let mut partitions = 1;
    for opt in opts {
        let SqlOption::KeyValue { key, value } = opt else {
            return Err(SqlError::InvalidDefinition(format!(
                "expected key = value in WITH, got {opt}"
            )));
        };
        if !key.value.eq_ignore_ascii_case("partitions") {
            return Err(SqlError::InvalidDefinition(format!(
                "unknown table option \"{}\" (known: partitions)",
                key.value
            )));
        }
        partitions = match value {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<u32>().ok(),
                _ => None,
            },
            _ => None,
        }
        .filter(|&n| (1..=1024).contains(&n))
        .ok_or_else(|| {
            SqlError::InvalidDefinition(format!(
                "invalid value for partitions: {value} (expected 1 to 1024)"
            ))
        })?;
    }
    Ok(partitions)
}

impl Database {
    /// The table `name`'s log, when `name` is a table.
    pub(crate) async fn table_log(&self, name: &str) -> Result<Option<Arc<StreamInfo>>> {
        if StreamKind::of(name).is_internal() {
            return Ok(None);
        }
        match self.log.stream(&table_log_name(name)).await {
            Ok(info) => Ok(Some(info)),
            Err(LogError::UnknownStream(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where a write naming `name` goes: the stream `name`, or the log of
    /// the table `name`. A table's log is not a name writes may use.
    pub(crate) async fn write_target(&self, name: &str) -> Result<Arc<StreamInfo>> {
        if StreamKind::of(name) == StreamKind::Table {
            return Err(SqlError::ReservedName(format!(
                "\"{name}\" is a table's log, written only through the table \"{}\"",
                relation_name(name)
            )));
        }
        match self.log.stream(name).await {
            Err(LogError::UnknownStream(e)) => match self.table_log(name).await? {
                Some(info) => Ok(info),
                None => Err(SqlError::UndefinedTable(e)),
            },
            other => Ok(other?),
        }
    }

    /// `CREATE TABLE`: the table's log, then the view of its rows (the
    /// log is dropped again when the view cannot be made).
    pub(crate) async fn create_table(&self, c: CreateTable) -> Result<QueryResult> {
        if c.query.is_some() || c.like.is_some() || c.clone.is_some() {
            return Err(SqlError::NotSupported(
                "CREATE TABLE … AS / LIKE / CLONE: create the table, then INSERT … SELECT".into(),
            ));
        }
        if c.or_replace || c.temporary || c.external {
            return Err(SqlError::NotSupported(
                "CREATE OR REPLACE / TEMPORARY / EXTERNAL TABLE".into(),
            ));
        }
        let name = object_name(&c.name)?;
        if StreamKind::of(&name).is_internal() {
            return Err(LogError::ReservedName(name).into());
        }
        let taken = self.views.exists(&name)
            || self.log.stream(&name).await.is_ok()
            || self.table_log(&name).await?.is_some();
        if taken {
            if c.if_not_exists {
                return Ok(QueryResult::command(CommandTag::CreateTable));
            }
            return Err(SqlError::DuplicateTable(name.to_string()));
        }
        let key = primary_key(&c)?;
        let partitions = partitions(&c.table_options)?;
        let mut fields = Vec::with_capacity(c.columns.len() + 1);
        for col in &c.columns {
            fields.push(crate::stream_ddl::column_field(col)?);
        }
        self.make_table(&name, fields, key, partitions).await?;
        Ok(QueryResult::command(CommandTag::CreateTable))
    }

    /// Makes table `name` of the columns `fields`, keyed by `key` (its
    /// columns made NOT NULL): its log, then the view of its rows (the log
    /// is dropped again when the view cannot be made). Reserved column
    /// names and a key naming no column are refused.
    pub(crate) async fn make_table(
        &self,
        name: &str,
        mut fields: Vec<Field>,
        key: Vec<String>,
        partitions: u32,
    ) -> Result<()> {
        let name = name.to_string();
        for field in &mut fields {
            if is_system_column(field.name()) || field.name().starts_with("__") {
                return Err(SqlError::ReservedName(format!(
                    "column name \"{}\" is reserved",
                    field.name()
                )));
            }
            // Key columns are NOT NULL, as PostgreSQL makes them.
            if key.contains(field.name()) {
                *field = field.clone().with_nullable(false);
            }
        }
        for k in &key {
            if !fields.iter().any(|f| f.name() == k) {
                return Err(SqlError::UndefinedColumn(format!(
                    "column \"{k}\" named in key does not exist"
                )));
            }
        }
        let columns: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        fields.push(
            Field::new(DELETED, DataType::Boolean, false)
                .with_metadata([(DEFAULT_KEY.to_string(), "false".to_string())].into()),
        );
        let spec = StreamSpec::new(table_log_name(&name), Arc::new(Schema::new(fields)))
            .with_partitions(partitions)
            .with_key(key.clone());
        let info = self
            .log
            .create_internal_stream(StreamKind::Table, spec)
            .await?;
        self.planner.register(info)?;
        let made = async {
            let query = match crate::dialect::parse(&latest_rows(&name, &columns, &key))?.pop() {
                Some(crate::dialect::Statement::Sql(s)) => match *s {
                    sqlparser::ast::Statement::Query(q) => *q,
                    _ => return Err(SqlError::Internal("table query".into())),
                },
                _ => return Err(SqlError::Internal("table query".into())),
            };
            self.views
                .create(name.clone(), false, ViewOptions::default(), query)
                .await
        }
        .await;
        if let Err(e) = made {
            let log = table_log_name(&name);
            let _ = self.log.drop_internal_stream(StreamKind::Table, &log).await;
            let _ = self.planner.deregister(&log);
            return Err(e);
        }
        Ok(())
    }

    /// Refuses a statement for streams or views (`what`) naming a table.
    pub(crate) async fn refuse_tables(&self, names: &[String], what: &str) -> Result<()> {
        for name in names {
            if self.table_log(name).await?.is_some() {
                return Err(SqlError::WrongObjectType(format!(
                    "\"{name}\" is a table: use DROP TABLE (not {what})"
                )));
            }
        }
        Ok(())
    }

    /// `DROP TABLE`: the view of its rows (refused while other views read
    /// it), then its log.
    pub(crate) async fn drop_tables(
        &self,
        names: &[String],
        if_exists: bool,
    ) -> Result<QueryResult> {
        self.connectors.refuse_dropping(names).await?;
        self.connectors.refuse_dropping_written(names).await?;
        for name in names {
            if self.table_log(name).await?.is_none() {
                if if_exists {
                    continue;
                }
                return Err(SqlError::UndefinedTable(name.to_string()));
            }
            self.views.drop_views(vec![name.clone()], true).await?;
            let log = table_log_name(name);
            self.log
                .drop_internal_stream(StreamKind::Table, &log)
                .await?;
            self.planner.deregister(&log)?;
        }
        self.forget_grants(names).await?;
        Ok(QueryResult::command(CommandTag::DropTable))
    }
}

impl crate::connectors::MakeTables for Database {
    fn make_table<'a>(
        &'a self,
        name: &'a str,
        fields: Vec<Field>,
        key: Vec<String>,
        partitions: u32,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(Database::make_table(self, name, fields, key, partitions))
    }

    fn drop_table<'a>(&'a self, name: &'a str) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.drop_tables(&[name.to_string()], true).await?;
            Ok(())
        })
    }
}
