//! Reads inside a block see the block's writes: every scan of a stream the
//! block wrote to also yields the block's rows for it.
//!
//! A query's plan is rewritten before it runs: the stream's table becomes
//! an [`Overlay`] whose scan is the union of the stream's scan and the
//! block's rows. Those rows carry the partition they will be appended to,
//! `_offset` -1 (offsets are assigned at COMMIT) and the time their
//! statement ran as `_timestamp`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session as DfSession;
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType, provider_as_source, source_as_provider};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use super::Transaction;
use crate::error::Result;

/// A stream's table plus rows a block has written to it.
#[derive(Debug)]
struct Overlay {
    inner: Arc<dyn TableProvider>,
    /// The block's rows, in the table's schema.
    rows: Vec<RecordBatch>,
}

#[async_trait]
impl TableProvider for Overlay {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // The block's rows are not filtered by the scan: whatever the
        // stream's table does, the filter stays above the union.
        Ok(self
            .inner
            .supports_filters_pushdown(filters)?
            .into_iter()
            .map(|f| match f {
                TableProviderFilterPushDown::Unsupported => {
                    TableProviderFilterPushDown::Unsupported
                }
                _ => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let base = self.inner.scan(state, projection, filters, limit).await?;
        let mine = MemorySourceConfig::try_new_exec(
            std::slice::from_ref(&self.rows),
            self.schema(),
            projection.cloned(),
        )?;
        UnionExec::try_new(vec![base, mine])
    }
}

/// The block's rows in a stream's read schema (declared columns, then
/// `_partition`, `_offset`, `_timestamp`).
fn as_read_rows(
    schema: &SchemaRef,
    partition: u32,
    batch: &RecordBatch,
    at: i64,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let mut cols = batch.columns().to_vec();
    cols.push(Arc::new(Int32Array::from_value(partition as i32, n)));
    cols.push(Arc::new(Int64Array::from_value(-1, n)));
    cols.push(Arc::new(
        TimestampMicrosecondArray::from_value(at, n).with_timezone("UTC"),
    ));
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// `plan` with every scan of a stream the block wrote to seeing those
/// writes; unchanged outside a block or before its first write.
pub(crate) fn with_own_writes(plan: LogicalPlan, block: &Transaction) -> Result<LogicalPlan> {
    let pending = block.pending();
    if pending.is_empty() {
        return Ok(plan);
    }
    let mut by_stream: HashMap<String, Vec<_>> = HashMap::new();
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for (stream, partition, batch, at) in pending {
        keys.entry(stream.name().to_string())
            .or_insert_with(|| stream.spec.key.clone());
        by_stream
            .entry(stream.name().to_string())
            .or_default()
            .push((partition, batch, at));
    }
    let rewritten = plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::TableScan(mut scan) = node else {
            return Ok(Transformed::no(node));
        };
        let in_public = matches!(scan.table_name.schema(), None | Some("public"));
        // A table the block wrote: its rows with the block's writes applied.
        let log = streamhouse_log::table_log_name(scan.table_name.table());
        if let Some(writes) = by_stream.get(&log).filter(|_| in_public) {
            let batches: Vec<RecordBatch> = writes.iter().map(|(_, b, _)| b.clone()).collect();
            let key = keys.get(&log).cloned().unwrap_or_default();
            return crate::tables::own_writes::table_with_writes(scan, &batches, &key)
                .map(Transformed::yes)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
        }
        let Some(writes) = by_stream.get(scan.table_name.table()).filter(|_| in_public) else {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        };
        let inner = source_as_provider(&scan.source)?;
        let schema = inner.schema();
        let rows = writes
            .iter()
            .map(|(p, b, at)| as_read_rows(&schema, *p, b, *at))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        scan.source = provider_as_source(Arc::new(Overlay { inner, rows }));
        Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
    })?;
    Ok(rewritten.data)
}
