//! Stream statements: `CREATE STREAM`, `ALTER STREAM`,
//! `SHOW STREAMS`, `DESCRIBE`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use streamhouse_log::stream::is_system_column;
use streamhouse_log::{LogError, SchemaChange, StreamSpec, TABLE_DELETED_COLUMN};

use sqlparser::ast::{ColumnOption, Expr, UnaryOperator, Value};
use streamhouse_log::stream::DEFAULT_KEY;

use crate::dialect::{CreateStream, StreamAlteration};
use crate::error::{Result, SqlError};
use crate::types::{SQL_TYPE_KEY, arrow_type, sql_type_name};

use crate::database::Database;
use crate::result::{CommandTag, QueryResult, describe_schema, show_streams_schema};

impl Database {
    pub(crate) async fn create_stream(&self, c: CreateStream) -> Result<QueryResult> {
        // Streams, views and tables share one namespace.
        if self.views.exists(&c.name) || self.table_log(&c.name).await?.is_some() {
            if c.if_not_exists {
                return Ok(QueryResult::command(CommandTag::CreateStream));
            }
            return Err(SqlError::DuplicateTable(c.name));
        }
        let followed = self.followed_schema(&c).await?;
        let mut fields = Vec::with_capacity(c.columns.len());
        for col in &c.columns {
            let (dt, sql_type) = arrow_type(&col.data_type)?;
            let not_null = col
                .options
                .iter()
                .any(|o| matches!(o.option, sqlparser::ast::ColumnOption::NotNull));
            let mut field = Field::new(col.name.value.clone(), dt, !not_null);
            if let Some(t) = sql_type {
                field = field.with_metadata([(SQL_TYPE_KEY.to_string(), t.to_string())].into());
            }
            fields.push(field);
        }
        let schema = match followed {
            Some(schema) => schema,
            None => Schema::new(fields),
        };
        let mut spec = StreamSpec::new(c.name.clone(), Arc::new(schema))
            .with_partitions(c.partitions.unwrap_or(1))
            .with_key(c.key);
        if let Some((col, delay)) = c.watermark {
            spec = spec.with_event_time(col, delay);
        }
        if let Some(r) = c.retention {
            spec = spec.with_retention(r);
        }
        if let Some(a) = c.archive_after {
            spec = spec.with_archive_after(a);
        }
        match self.log.create_stream(spec).await {
            Ok(info) => self.planner.register(info)?,
            Err(streamhouse_log::LogError::StreamExists(_)) if c.if_not_exists => {}
            Err(e) => return Err(e.into()),
        }
        Ok(QueryResult::command(CommandTag::CreateStream))
    }

    /// `ALTER STREAM`: the stream's next schema version (see
    /// `streamhouse_log::evolve`). Materialized views keep reading the
    /// versions they were made with, so a column may be added or renamed
    /// under them; dropping, retyping or allowing NULL in a column a view
    /// reads is refused, naming the views.
    pub(crate) async fn alter_stream(
        &self,
        name: &str,
        alteration: StreamAlteration,
    ) -> Result<QueryResult> {
        let info = self.log.stream(name).await?;
        let done = || Ok(QueryResult::command(CommandTag::AlterStream));
        if let StreamAlteration::SetOptions {
            retention,
            archive_after,
        } = alteration
        {
            let retention = retention.unwrap_or(info.spec.retention);
            let archive_after = archive_after.unwrap_or(info.spec.archive_after);
            let set = self
                .log
                .set_stream_options(name, retention, archive_after)
                .await?;
            self.planner.deregister(name)?;
            self.planner.register(set)?;
            return done();
        }
        let schema = &info.spec.schema;
        if crate::topics::is_record_shaped(&info) {
            return Err(SqlError::NotSupported(format!(
                "cannot change the columns of \"{name}\": it has the Kafka record shape (key, \
                 value, headers, timestamp), which Kafka producers and consumers rely on"
            )));
        }
        let must_exist = match &alteration {
            StreamAlteration::AddColumn { .. }
            | StreamAlteration::DropColumn {
                if_exists: true, ..
            } => None,
            StreamAlteration::DropColumn { column, .. }
            | StreamAlteration::RenameColumn { from: column, .. }
            | StreamAlteration::AlterType { column, .. }
            | StreamAlteration::DropNotNull { column } => Some(column),
            StreamAlteration::SetOptions { .. } => None,
        };
        if let Some(column) = must_exist
            && schema.field_with_name(column).is_err()
        {
            return Err(SqlError::UndefinedColumn(format!(
                "column \"{column}\" of stream \"{name}\" does not exist"
            )));
        }
        let change = match &alteration {
            StreamAlteration::AddColumn {
                column,
                if_not_exists,
            } => {
                if *if_not_exists && schema.field_with_name(&column.name.value).is_ok() {
                    return done();
                }
                SchemaChange::AddColumn(column_field(column)?)
            }
            StreamAlteration::DropColumn { column, if_exists } => {
                if *if_exists && schema.field_with_name(column).is_err() {
                    return done();
                }
                SchemaChange::DropColumn(column.clone())
            }
            StreamAlteration::RenameColumn { from, to } => SchemaChange::RenameColumn {
                from: from.clone(),
                to: to.clone(),
            },
            StreamAlteration::AlterType { column, data_type } => {
                let (dt, sql_type) = arrow_type(data_type)?;
                let mut to = Field::new("", dt, true);
                if let Some(t) = sql_type {
                    to = to.with_metadata([(SQL_TYPE_KEY.to_string(), t.to_string())].into());
                }
                if let Ok(old) = schema.field_with_name(column) {
                    let (was, will) = (
                        old.metadata().get(SQL_TYPE_KEY),
                        to.metadata().get(SQL_TYPE_KEY),
                    );
                    if old.data_type() == to.data_type() && was == will {
                        // varchar(n) to varchar(m), text to varchar: one type here.
                        return done();
                    }
                    if will.is_some() && was != will {
                        return Err(SqlError::NotSupported(format!(
                            "cannot change column \"{column}\" from {} to {data_type}: rows \
                             already written are not checked to be {data_type}",
                            sql_type_name(old)
                        )));
                    }
                }
                SchemaChange::AlterType {
                    column: column.clone(),
                    to,
                }
            }
            StreamAlteration::DropNotNull { column } => {
                if schema
                    .field_with_name(column)
                    .is_ok_and(|f| f.is_nullable())
                {
                    return done();
                }
                SchemaChange::DropNotNull(column.clone())
            }
            StreamAlteration::SetOptions { .. } => return done(),
        };
        if !matches!(
            change,
            SchemaChange::AddColumn(_) | SchemaChange::RenameColumn { .. }
        ) {
            let column = change.column().unwrap_or_default();
            let readers = self.views().readers_of_column(&info, column).await?;
            if !readers.is_empty() {
                return Err(SqlError::DependentObjects(format!(
                    "cannot {alteration} of stream \"{name}\": materialized view{} {} read{} \
                     it (drop {} first)",
                    if readers.len() == 1 { "" } else { "s" },
                    readers.join(", "),
                    if readers.len() == 1 { "s" } else { "" },
                    if readers.len() == 1 { "it" } else { "them" },
                )));
            }
        }
        let info = self
            .log
            .alter_stream(name, std::slice::from_ref(&change), &alteration.to_string())
            .await?;
        self.planner.deregister(name)?;
        self.planner.register(info)?;
        done()
    }

    pub(crate) async fn show_streams(&self) -> Result<QueryResult> {
        let streams = self.log.streams().await?;
        let mut rows = Vec::with_capacity(streams.len());
        for s in &streams {
            let ends = self.log.metadata().partition_ends(s.id).await?;
            rows.push(ends.iter().sum::<u64>() as i64);
        }
        let human =
            |d: Option<std::time::Duration>| d.map(|d| humantime::format_duration(d).to_string());
        let schema = show_streams_schema();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                streams.iter().map(|s| s.name()),
            )),
            Arc::new(Int32Array::from_iter_values(
                streams.iter().map(|s| s.spec.partitions as i32),
            )),
            Arc::new(StringArray::from_iter(streams.iter().map(|s| {
                (!s.spec.key.is_empty()).then(|| s.spec.key.join(", "))
            }))),
            Arc::new(StringArray::from_iter(
                streams
                    .iter()
                    .map(|s| s.spec.event_time.as_ref().map(|e| e.column.clone())),
            )),
            Arc::new(StringArray::from_iter(streams.iter().map(|s| {
                human(s.spec.event_time.as_ref().map(|e| e.watermark_delay))
            }))),
            Arc::new(StringArray::from_iter(
                streams.iter().map(|s| human(s.spec.retention)),
            )),
            Arc::new(Int64Array::from(rows)),
        ];
        QueryResult::rows(RecordBatch::try_new(schema, cols)?)
    }

    /// `DESCRIBE name` / `SHOW COLUMNS FROM name`: a stream's columns (with
    /// its system columns), or a table's.
    pub(crate) async fn describe(&self, name: &str) -> Result<QueryResult> {
        // A table shows its columns, without its log's.
        let (info, table) = match self.log.stream(name).await {
            Err(LogError::UnknownStream(e)) => match self.table_log(name).await? {
                Some(info) => (info, true),
                None => return Err(SqlError::UndefinedTable(e)),
            },
            other => (other?, false),
        };
        let read = info.read_schema();
        let note = |f: &Field| -> Option<String> {
            let n = f.name();
            if is_system_column(n) {
                return Some("system".into());
            }
            let mut parts = Vec::new();
            if info.spec.key.iter().any(|k| k == n) {
                parts.push("key".to_string());
            }
            if let Some(et) = info.spec.event_time.as_ref().filter(|e| &e.column == n) {
                parts.push(format!(
                    "event time, watermark {}",
                    humantime::format_duration(et.watermark_delay)
                ));
            }
            (!parts.is_empty()).then(|| parts.join("; "))
        };
        let schema = describe_schema();
        let fields: Vec<&Field> = read
            .fields()
            .iter()
            .map(|f| f.as_ref())
            .filter(|f| !table || !(is_system_column(f.name()) || f.name() == TABLE_DELETED_COLUMN))
            .collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                fields.iter().map(|f| f.name().clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                fields.iter().map(|f| sql_type_name(f)),
            )),
            Arc::new(StringArray::from_iter_values(
                fields
                    .iter()
                    .map(|f| if f.is_nullable() { "YES" } else { "NO" }),
            )),
            Arc::new(StringArray::from_iter(fields.iter().map(|f| note(f)))),
        ];
        QueryResult::rows(RecordBatch::try_new(schema, cols)?)
    }
}

/// A column default's text, stored with the column and cast to its type
/// when read: a constant (a number, a string, TRUE/FALSE, NULL — `None`), or
/// a constant cast (`'2026-01-01'::date`).
fn default_text(e: &Expr) -> Result<Option<String>> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => Ok(None),
            Value::Number(n, _) => Ok(Some(n.clone())),
            Value::Boolean(b) => Ok(Some(b.to_string())),
            Value::SingleQuotedString(s) => Ok(Some(s.clone())),
            other => Err(SqlError::NotSupported(format!("DEFAULT {other}"))),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => Ok(default_text(expr)?.map(|t| format!("-{t}"))),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => default_text(expr),
        other => Err(SqlError::NotSupported(format!(
            "DEFAULT {other}: a stream column's default must be a constant"
        ))),
    }
}

/// The field of a column added by `ALTER STREAM … ADD COLUMN`: its type,
/// nullability and default.
pub(crate) fn column_field(column: &sqlparser::ast::ColumnDef) -> Result<Field> {
    let (dt, sql_type) = arrow_type(&column.data_type)?;
    let mut not_null = false;
    let mut metadata = std::collections::HashMap::new();
    if let Some(t) = sql_type {
        metadata.insert(SQL_TYPE_KEY.to_string(), t.to_string());
    }
    for o in &column.options {
        match &o.option {
            ColumnOption::NotNull => not_null = true,
            ColumnOption::Null => not_null = false,
            ColumnOption::Default(e) => {
                if let Some(text) = default_text(e)? {
                    metadata.insert(DEFAULT_KEY.to_string(), text);
                }
            }
            _ => {}
        }
    }
    Ok(Field::new(column.name.value.clone(), dt, !not_null).with_metadata(metadata))
}
