//! A view's changes: the changelog's rows (`op` — `insert` or `delete` —
//! then the view's columns), how a step's before/after rows become them,
//! and push queries that follow a changelog (`SUBSCRIBE`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use streamhouse_log::{Log, StreamInfo};

use crate::error::{Result, StreamsError};

/// Name of the changelog's operation column.
pub const OP: &str = "op";
pub const INSERT: &str = "insert";
pub const DELETE: &str = "delete";

pub use streamhouse_log::CHANGELOG_PREFIX;

/// Name of the column that carries each input row's weight through the
/// pipeline of a dataflow over a changelog with updates: 1 for an insert,
/// -1 for a delete. Signed rows end with it.
pub const SIGN: &str = "__sign";

/// What reading a view that only inserts runs: its changelog's rows (the
/// columns after `op`, stream `info`) as the view's columns (`view`:
/// qualified as the view's query has them).
pub(super) fn read_plan(
    log: &Arc<Log>,
    info: &Arc<StreamInfo>,
    view: &DFSchema,
) -> Result<LogicalPlan> {
    let table = crate::scan::StreamTable::new(log.clone(), info.clone());
    let scan = LogicalPlanBuilder::scan(info.name(), provider_as_source(Arc::new(table)), None)?
        .build()?;
    let stored = scan.schema().clone();
    let columns = view
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            let (sq, sf) = stored.qualified_field(i + 1);
            Expr::Column(Column::new(sq.cloned(), sf.name())).alias_qualified(q.cloned(), f.name())
        })
        .collect::<Vec<_>>();
    Ok(LogicalPlanBuilder::from(scan).project(columns)?.build()?)
}

/// The changelog schema of a view with columns `view`.
pub fn changes_schema(view: &Schema) -> Result<SchemaRef> {
    let mut fields = vec![Field::new(OP, DataType::Utf8, false)];
    for f in view.fields() {
        if f.name() == OP {
            return Err(StreamsError::NotSupported(format!(
                "a materialized view column named \"{OP}\" (the changelog's operation column); \
                 rename it"
            )));
        }
        fields.push(Field::new(f.name(), f.data_type().clone(), true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// `rows` (view columns) as changelog rows of operation `op`.
pub fn with_op(schema: &SchemaRef, op: &str, rows: &RecordBatch) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(op, rows.num_rows()),
    ))];
    cols.extend(rows.columns().iter().cloned());
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// Rows that end with a sign (1: insert, -1: delete), as changelog rows
/// (a view without aggregate over a view with updates). Equal rows net
/// out within the step, and its deletes come before its inserts, so the
/// changelog applied in order never deletes a row it does not hold.
pub fn with_signs(schema: &SchemaRef, rows: &RecordBatch) -> Result<RecordBatch> {
    let last = rows.num_columns() - 1;
    let sign = arrow::compute::cast(rows.column(last), &DataType::Int64)?;
    let sign = sign.as_primitive::<arrow::datatypes::Int64Type>();
    let values = &rows.columns()[..last];
    let conv = RowConverter::new(
        values
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let keys = conv.convert_columns(values)?;
    // Per distinct row: its net sign and where it first appears.
    let mut net: HashMap<&[u8], (i64, u32)> = HashMap::new();
    let mut order = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let s = if sign.is_valid(i) { sign.value(i) } else { 1 };
        let e = net.entry(k.data()).or_insert_with(|| {
            order.push(k.data());
            (0, i as u32)
        });
        e.0 += s.signum();
    }
    let (mut deletes, mut inserts) = (Vec::new(), Vec::new());
    for k in order {
        let (n, at) = net[k];
        let into = if n < 0 { &mut deletes } else { &mut inserts };
        into.extend(std::iter::repeat_n(at, n.unsigned_abs() as usize));
    }
    let ops: StringArray = std::iter::repeat_n(Some(DELETE), deletes.len())
        .chain(std::iter::repeat_n(Some(INSERT), inserts.len()))
        .collect();
    let idx = arrow::array::UInt32Array::from([deletes, inserts].concat());
    let mut cols: Vec<ArrayRef> = vec![Arc::new(ops)];
    for c in values {
        cols.push(arrow::compute::take(c, &idx, None)?);
    }
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// Deletes of `before` and inserts of `after`, less the rows present in
/// both (a group whose visible row did not change emits nothing).
pub fn consolidate(
    schema: &SchemaRef,
    before: &RecordBatch,
    after: &RecordBatch,
) -> Result<Option<RecordBatch>> {
    let (mut keep_before, mut keep_after) =
        (vec![true; before.num_rows()], vec![true; after.num_rows()]);
    if before.num_rows() > 0 && after.num_rows() > 0 {
        let conv = RowConverter::new(
            before
                .schema()
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let b = conv.convert_columns(before.columns())?;
        let a = conv.convert_columns(after.columns())?;
        let mut deleted: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for i in 0..b.num_rows() {
            deleted.entry(b.row(i).data()).or_default().push(i);
        }
        for (j, keep) in keep_after.iter_mut().enumerate() {
            if let Some(i) = deleted.get_mut(a.row(j).data()).and_then(Vec::pop) {
                keep_before[i] = false;
                *keep = false;
            }
        }
    }
    let before = filter_record_batch(before, &BooleanArray::from(keep_before))?;
    let after = filter_record_batch(after, &BooleanArray::from(keep_after))?;
    if before.num_rows() + after.num_rows() == 0 {
        return Ok(None);
    }
    let parts = [
        with_op(schema, DELETE, &before)?,
        with_op(schema, INSERT, &after)?,
    ];
    Ok(Some(concat_batches(schema, &parts)?))
}

/// Follows partition 0 of a changelog stream from offset `from`: yields an
/// empty batch at once (so a door can describe the result), then every
/// committed batch, waiting for more, until the reader goes away.
pub fn follow(log: Arc<Log>, info: Arc<StreamInfo>, from: u64) -> SendableRecordBatchStream {
    let schema = info.spec.schema.clone();
    let declared: Vec<usize> = (0..schema.fields().len()).collect();
    let name = info.name().to_string();
    let first = futures::stream::iter([Ok(RecordBatch::new_empty(schema.clone()))]);
    let rest = futures::stream::unfold(Some(from), move |offset| {
        let (log, name, declared) = (log.clone(), name.clone(), declared.clone());
        async move {
            let offset = offset?;
            let step = async {
                let end = log.wait_for(&name, 0, offset).await?;
                let batches: Vec<RecordBatch> = log
                    .read(&name, 0, offset..end, Some(declared))
                    .await?
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<std::result::Result<_, _>>()?;
                Ok::<_, streamhouse_log::LogError>((batches, end))
            };
            match step.await {
                Ok((batches, end)) => Some((
                    futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
                    Some(end),
                )),
                Err(e) => Some((
                    futures::stream::iter([Err(DataFusionError::External(Box::new(e)))]).boxed(),
                    None,
                )),
            }
        }
    })
    .flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, first.chain(rest)))
}
