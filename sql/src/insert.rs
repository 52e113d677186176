//! Rows into streams: `INSERT` (plain literal `VALUES` without DataFusion,
//! anything else planned), `COPY … FROM STDIN` dispatch, and conforming
//! batches to a stream's declared columns before one append.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::logical_expr::LogicalPlan;
use futures::StreamExt;
use sqlparser::ast::{
    CopySource, CopyTarget, Ident, Insert, ObjectName, Query, SelectItem, SetExpr,
    Statement as SqlStatement, TableObject,
};
use streamhouse_log::stream::is_system_column;
use streamhouse_log::{AppendOptions, StreamInfo, StreamKind};

use crate::copy::{CopyFormat, CopyIn, copy_out};
use crate::dialect::{self, object_name};
use crate::error::{Result, SqlError};
use crate::types::{bytea_from_text, sql_type_name};

use crate::database::Database;
use crate::prepared::{Action, Verb, values_placeholders};
use crate::privileges::{Need, Object, Privilege};
use crate::result::QueryResult;
use crate::session::Session;
use crate::transaction::{BlockState, Write};

/// PostgreSQL's arity rules for INSERT.
pub(crate) fn check_arity(width: usize, targets: usize, explicit_columns: bool) -> Result<()> {
    if width > targets {
        return Err(SqlError::Syntax(
            "INSERT has more expressions than target columns".into(),
        ));
    }
    if width < targets && explicit_columns {
        return Err(SqlError::Syntax(
            "INSERT has more target columns than expressions".into(),
        ));
    }
    Ok(())
}

/// The rows of a `VALUES` list whose every cell is a literal (number,
/// string, boolean, NULL, or a negated number), as one text column per
/// position; `None` when any cell needs the planner. Text is what a
/// PostgreSQL literal is until it meets its column's type, and casting each
/// column once is far cheaper than planning thousands of expressions.
pub(crate) fn literal_values(q: &sqlparser::ast::Query) -> Result<Option<Vec<ArrayRef>>> {
    use sqlparser::ast::{Expr, SetExpr, UnaryOperator, Value};
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() {
        return Ok(None);
    }
    let SetExpr::Values(values) = q.body.as_ref() else {
        return Ok(None);
    };
    let width = values.rows.first().map(|r| r.len()).unwrap_or(0);
    let mut cols: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(values.rows.len()); width];
    for row in &values.rows {
        if row.len() != width {
            return Err(SqlError::Syntax(
                "VALUES lists must all be the same length".into(),
            ));
        }
        for (col, e) in cols.iter_mut().zip(row.iter()) {
            let v = match e {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => Some(n.clone()),
                    Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => {
                        Some(s.clone())
                    }
                    Value::Boolean(b) => Some(b.to_string()),
                    Value::Null => None,
                    _ => return Ok(None),
                },
                Expr::UnaryOp {
                    op: UnaryOperator::Minus,
                    expr,
                } => match expr.as_ref() {
                    Expr::Value(v) => match &v.value {
                        Value::Number(n, _) => Some(format!("-{n}")),
                        _ => return Ok(None),
                    },
                    _ => return Ok(None),
                },
                _ => return Ok(None),
            };
            col.push(v);
        }
    }
    Ok(Some(
        cols.into_iter()
            .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
            .collect(),
    ))
}

/// An INSERT's source SELECT whose output columns would share a name
/// (`SELECT a, a`), which a plan cannot hold, with its columns named by
/// position (`column1`, …): an INSERT maps columns by position anyway.
fn positional_names(mut query: Box<Query>) -> Box<Query> {
    let Some(names) = crate::names::output_names(&query) else {
        return query;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return query;
    };
    let names: Vec<String> = names
        .into_iter()
        .zip(&select.projection)
        .filter_map(|(name, item)| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(dialect::normalize(alias)),
            _ => name,
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = names.iter().collect();
    if names.len() != select.projection.len() || distinct.len() == names.len() {
        return query;
    }
    for (i, item) in select.projection.iter_mut().enumerate() {
        let expr = match std::mem::replace(item, SelectItem::Wildcard(Default::default())) {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            other => {
                *item = other;
                continue;
            }
        };
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: Ident::new(format!("column{}", i + 1)),
        };
    }
    query
}

/// Declared-column indices an INSERT writes, in source order.
pub(crate) fn target_columns(info: &StreamInfo, columns: &[ObjectName]) -> Result<Vec<usize>> {
    let schema = &info.spec.schema;
    // A table's log has one column of the system's: whether a row deletes.
    let written = match StreamKind::of(info.name()) {
        StreamKind::Table => schema.fields().len() - 1,
        _ => schema.fields().len(),
    };
    if columns.is_empty() {
        return Ok((0..written).collect());
    }
    let mut out = Vec::with_capacity(columns.len());
    for c in columns {
        let n = object_name(c)?;
        if is_system_column(&n) {
            return Err(SqlError::InvalidInput(format!(
                "cannot insert into system column \"{n}\""
            )));
        }
        let i = schema
            .index_of(&n)
            .ok()
            .filter(|&i| i < written)
            .ok_or_else(|| {
                SqlError::UndefinedColumn(format!(
                    "column \"{n}\" of relation \"{}\" does not exist",
                    crate::tables::relation_name(info.name())
                ))
            })?;
        if out.contains(&i) {
            return Err(SqlError::Syntax(format!(
                "column \"{n}\" specified more than once"
            )));
        }
        out.push(i);
    }
    Ok(out)
}

/// Casts an INSERT's source batch to the stream's declared columns; columns
/// not written are their default, or NULL.
pub(crate) fn conform_insert(
    stream: &str,
    declared: &SchemaRef,
    targets: &[usize],
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let opts = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut cols: Vec<ArrayRef> = declared
        .fields()
        .iter()
        .map(|f| {
            Ok(streamhouse_log::stream::default_array(f, n)?
                .unwrap_or_else(|| new_null_array(f.data_type(), n)))
        })
        .collect::<Result<_>>()?;
    for (src, &t) in targets.iter().enumerate() {
        let field = declared.field(t);
        let col = batch.column(src);
        cols[t] = if col.data_type() == field.data_type() {
            col.clone()
        } else if field.data_type() == &DataType::Binary && col.data_type() == &DataType::Utf8 {
            // bytea literals: '\x00ff' is two bytes, not six characters.
            let text = col.as_string::<i32>();
            let bytes = text
                .iter()
                .map(|v| v.map(bytea_from_text).transpose())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(SqlError::InvalidInput)?;
            Arc::new(arrow::array::BinaryArray::from_iter(bytes))
        } else {
            cast_with_options(col, field.data_type(), &opts).map_err(|e| {
                SqlError::InvalidInput(format!(
                    "invalid input for column \"{}\" of type {}: {e}",
                    field.name(),
                    sql_type_name(field)
                ))
            })?
        };
    }
    for (f, c) in declared.fields().iter().zip(&cols) {
        if !f.is_nullable() && c.null_count() > 0 {
            return Err(SqlError::NotNullViolation(format!(
                "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                f.name(),
                crate::tables::relation_name(stream)
            )));
        }
    }
    Ok(RecordBatch::try_new(declared.clone(), cols)?)
}

impl Database {
    pub(crate) async fn copy(&self, session: &Session, stmt: SqlStatement) -> Result<QueryResult> {
        let SqlStatement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            values,
        } = stmt
        else {
            return Err(SqlError::Internal("not a COPY".into()));
        };
        let format = CopyFormat::from_options(&options, &legacy_options)?;
        if !to {
            if target != CopyTarget::Stdin {
                return Err(SqlError::NotSupported(
                    "COPY FROM a file or program: use COPY … FROM STDIN (psql: \\copy)".into(),
                ));
            }
            if !values.is_empty() {
                return Err(SqlError::NotSupported(
                    "COPY data inline in the statement".into(),
                ));
            }
            let CopySource::Table {
                table_name,
                columns,
            } = source
            else {
                return Err(SqlError::Syntax("COPY FROM needs a stream name".into()));
            };
            let info = self.write_target(&object_name(&table_name)?).await?;
            let name = info.name().to_string();
            let cols: Vec<ObjectName> = columns.into_iter().map(ObjectName::from).collect();
            let targets = target_columns(&info, &cols)?;
            let pool = crate::limits::query_pool(self.memory_limit(session), &self.query_memory);
            let memory = MemoryConsumer::new("COPY rows").register(&pool);
            let copy = CopyIn::new(name, info.spec.schema.clone(), targets, format, memory)?;
            return Ok(QueryResult::CopyIn(Box::new(copy)));
        }
        if target != CopyTarget::Stdout {
            return Err(SqlError::NotSupported(
                "COPY TO a file or program: use COPY … TO STDOUT (psql: \\copy)".into(),
            ));
        }
        let stream = match source {
            CopySource::Query(q) => {
                let plan = self.planner.plan(SqlStatement::Query(q)).await?;
                self.authorize_session(session, &self.reads(&plan)).await?;
                self.planner
                    .ctx
                    .execute_logical_plan(plan)
                    .await?
                    .execute_stream()
                    .await?
            }
            CopySource::Table {
                table_name,
                columns,
            } => {
                let name = object_name(&table_name)?;
                let need = Need::Privilege(Privilege::Select, Object::table(name.clone()));
                self.authorize_session(session, std::slice::from_ref(&need))
                    .await?;
                // A stream's declared columns (not the system ones), or a
                // view's or table's columns.
                let df = self
                    .planner
                    .ctx
                    .table(TableReference::bare(name.clone()))
                    .await?;
                let cols: Vec<String> = if !columns.is_empty() {
                    columns.iter().map(dialect::normalize).collect()
                } else if let Ok(info) = self.log.stream(&name).await {
                    info.spec
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect()
                } else {
                    df.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect()
                };
                let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
                df.select_columns(&cols)?.execute_stream().await?
            }
        };
        let columns = stream.schema().fields().len();
        let binary = format.binary;
        Ok(QueryResult::CopyOut {
            columns,
            binary,
            data: copy_out(stream, format),
        })
    }

    /// Ends a copy-in: appends every row it decoded, in one atomic append.
    /// Returns the row count.
    /// In a transaction block the rows are held until COMMIT.
    pub async fn finish_copy(&self, session: &Session, copy: Box<CopyIn>) -> Result<u64> {
        let result = match copy.finish() {
            Ok(d) => {
                self.append_rows(
                    session,
                    &d.stream,
                    &d.declared,
                    &d.targets,
                    Verb::Insert,
                    &d.batches,
                )
                .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            session.transaction().fail();
        }
        result
    }

    /// Casts rows to the stream's columns (`targets` say where each source
    /// column goes) and appends them all in one atomic append, or, inside a
    /// transaction block, holds them for its COMMIT. The shared end of
    /// INSERT and COPY.
    pub(crate) async fn append_rows(
        &self,
        session: &Session,
        stream: &str,
        declared: &SchemaRef,
        targets: &[usize],
        verb: Verb,
        batches: &[RecordBatch],
    ) -> Result<u64> {
        let rows = batches
            .iter()
            .map(|b| conform_insert(stream, declared, targets, b))
            .collect::<Result<Vec<_>>>()?;
        self.write(session, stream, verb, rows).await
    }

    /// Appends rows already in the stream's columns in one atomic append,
    /// or, inside a transaction block, holds them for its COMMIT.
    pub(crate) async fn write(
        &self,
        session: &Session,
        stream: &str,
        verb: Verb,
        rows: Vec<RecordBatch>,
    ) -> Result<u64> {
        if session.role().is_some() {
            let object = Object::table(crate::tables::relation_name(stream));
            let need = Need::Privilege(verb.privilege(), object);
            self.authorize_session(session, std::slice::from_ref(&need))
                .await?;
        }
        // A table's log is the system's: written here for the table's
        // statements only (its name is not one a user can write to).
        let options = AppendOptions {
            internal: StreamKind::of(stream) == StreamKind::Table,
            ..Default::default()
        };
        if session.transaction().state() == BlockState::Idle {
            let ack = self.log.append_batches(stream, rows, options).await?;
            return Ok(ack.rows());
        }
        let staged = self.log.stage(stream, rows, &options).await?;
        let Some(staged) = staged else {
            return Ok(0);
        };
        let n = staged.rows();
        let write = Write {
            staged,
            at: self.log.now_micros(),
        };
        session
            .transaction()
            .stage(write, session.transaction_buffer_size())?;
        Ok(n)
    }

    pub(crate) async fn prepare_insert(&self, insert: Insert) -> Result<Action> {
        let TableObject::TableName(target) = &insert.table else {
            return Err(SqlError::NotSupported(
                "INSERT INTO a table function".into(),
            ));
        };
        let info = self.write_target(&object_name(target)?).await?;
        let name = info.name().to_string();
        if insert.returning.is_some() || insert.on.is_some() || insert.overwrite {
            return Err(SqlError::NotSupported(
                "INSERT … RETURNING / ON CONFLICT / OVERWRITE into a stream".into(),
            ));
        }
        let Some(source) = insert.source else {
            return Err(SqlError::NotSupported(
                "INSERT without VALUES or a query".into(),
            ));
        };
        let targets = target_columns(&info, &insert.columns)?;
        if let Some(columns) = literal_values(&source)? {
            check_arity(columns.len(), targets.len(), !insert.columns.is_empty())?;
            let fields: Vec<Field> = (0..columns.len())
                .map(|i| Field::new(format!("column{}", i + 1), DataType::Utf8, true))
                .collect();
            let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
            return Ok(Action::InsertRows {
                stream: name,
                targets: targets[..rows.num_columns()].to_vec(),
                rows,
            });
        }
        let value_params = values_placeholders(&source);
        let source = positional_names(source);
        let source = self.planner.plan(SqlStatement::Query(source)).await?;
        let width = source.schema().fields().len();
        check_arity(width, targets.len(), !insert.columns.is_empty())?;
        // `VALUES ($1, $2)` gives the planner no types; the target columns do.
        let mut param_hints = Vec::new();
        for (col, n) in value_params {
            if let Some(&t) = targets.get(col) {
                param_hints.push((n, info.spec.schema.field(t).data_type().clone()));
            }
        }
        Ok(Action::Insert {
            stream: name,
            targets: targets[..width].to_vec(),
            source,
            param_hints,
            verb: Verb::Insert,
        })
    }

    pub(crate) async fn run_insert(
        &self,
        session: &Session,
        name: &str,
        targets: &[usize],
        verb: Verb,
        source: LogicalPlan,
    ) -> Result<QueryResult> {
        let info = self.log.stream(name).await?;
        let declared = info.spec.schema.clone();
        let ctx = crate::limits::query_context(
            &self.planner.ctx,
            self.memory_limit(session),
            &self.query_memory,
        )?;
        let df = ctx.execute_logical_plan(source).await?;
        // The rows are held until one atomic append; they count against the
        // query's memory like an operator's buffers, so an INSERT … SELECT
        // of more than it may hold fails with 53200 instead of exhausting
        // the machine.
        let held = MemoryConsumer::new("INSERT rows").register(&ctx.runtime_env().memory_pool);
        let mut rows_in = df.execute_stream().await?;
        let mut batches = Vec::new();
        while let Some(batch) = rows_in.next().await {
            let batch = batch?;
            held.try_grow(batch.get_array_memory_size())?;
            batches.push(batch);
        }
        let rows = self
            .append_rows(session, name, &declared, targets, verb, &batches)
            .await?;
        Ok(QueryResult::command(verb.tag(rows)))
    }
}
