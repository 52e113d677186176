//! Stream statements: `CREATE STREAM`, `ALTER STREAM … ADD COLUMN`,
//! `SHOW STREAMS`, `DESCRIBE`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use streamhouse_log::StreamSpec;
use streamhouse_log::stream::is_system_column;

use sqlparser::ast::{ColumnOption, Expr, UnaryOperator, Value};
use streamhouse_log::stream::DEFAULT_KEY;

use crate::dialect::CreateStream;
use crate::error::{Result, SqlError};
use crate::types::{SQL_TYPE_KEY, arrow_type, sql_type_name};

use crate::database::Database;
use crate::result::{CommandTag, QueryResult, describe_schema, show_streams_schema};

impl Database {
    pub(crate) async fn create_stream(&self, c: CreateStream) -> Result<QueryResult> {
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
        let mut spec = StreamSpec::new(c.name.clone(), Arc::new(Schema::new(fields)))
            .with_partitions(c.partitions.unwrap_or(1))
            .with_key(c.key);
        if let Some((col, delay)) = c.watermark {
            spec = spec.with_event_time(col, delay);
        }
        if let Some(r) = c.retention {
            spec = spec.with_retention(r);
        }
        match self.log.create_stream(spec).await {
            Ok(info) => self.planner.register(info)?,
            Err(streamhouse_log::LogError::StreamExists(_)) if c.if_not_exists => {}
            Err(e) => return Err(e.into()),
        }
        Ok(QueryResult::command(CommandTag::CreateStream))
    }

    /// `ALTER STREAM name ADD COLUMN column`: the stream's next schema
    /// version (see `Log::add_column`). Refused while a materialized view
    /// reads the stream: a view's plan is fixed to the columns it was
    /// compiled against.
    pub(crate) async fn add_column(
        &self,
        name: &str,
        column: sqlparser::ast::ColumnDef,
        if_not_exists: bool,
    ) -> Result<QueryResult> {
        let info = self.log.stream(name).await?;
        if info.spec.schema.field_with_name(&column.name.value).is_ok() && if_not_exists {
            return Ok(QueryResult::command(CommandTag::AlterStream));
        }
        if crate::topics::is_record_shaped(&info) {
            return Err(SqlError::NotSupported(format!(
                "cannot add a column to \"{name}\": it has the Kafka record shape (key, value, \
                 headers, timestamp), which Kafka producers and consumers rely on"
            )));
        }
        let readers = self.views_reading(&info).await?;
        if !readers.is_empty() {
            return Err(SqlError::NotSupported(format!(
                "cannot add a column to stream \"{name}\" while materialized view{} {} read{} \
                 it: a view's plan is fixed to the columns it was made with",
                if readers.len() == 1 { "" } else { "s" },
                readers.join(", "),
                if readers.len() == 1 { "s" } else { "" },
            )));
        }
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
        let field = Field::new(column.name.value.clone(), dt, !not_null).with_metadata(metadata);
        let change = format!("ADD COLUMN {column}");
        let info = self.log.add_column(name, field, &change).await?;
        self.planner.deregister(name)?;
        self.planner.register(info)?;
        Ok(QueryResult::command(CommandTag::AlterStream))
    }

    /// The materialized views that read `stream`: those running here, and
    /// those whose last checkpoint (wherever they run) holds its offsets.
    async fn views_reading(&self, stream: &streamhouse_log::StreamInfo) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .views()
            .by_name()
            .iter()
            .filter(|v| v.reads(stream.name()))
            .map(|v| v.name.clone())
            .collect();
        let id = stream.id.to_string();
        for record in self.log.metadata().views().await? {
            let reads = record.checkpoint.as_ref().is_some_and(|c| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&c.input_offsets)
                    .is_ok_and(|m| m.contains_key(&id))
            });
            if reads && !names.contains(&record.name) {
                names.push(record.name);
            }
        }
        names.sort();
        Ok(names)
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

    pub(crate) async fn describe(&self, name: &str) -> Result<QueryResult> {
        let info = self.log.stream(name).await?;
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
        let fields = read.fields();
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
