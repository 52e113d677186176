//! Stream statements: `CREATE STREAM`, `SHOW STREAMS`, `DESCRIBE`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use streamhouse_log::StreamSpec;
use streamhouse_log::stream::is_system_column;

use crate::dialect::CreateStream;
use crate::error::Result;
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
