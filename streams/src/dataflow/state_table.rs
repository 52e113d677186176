//! An aggregate dataflow's state as a table, and the plan that reads its
//! output: the query with its aggregate replaced by a scan of the state.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};

use super::Aggregation;

/// The view's query with its aggregate replaced by a scan of the state,
/// renamed back to the aggregate's own (qualified) output columns.
pub(crate) fn read_plan(
    plan: &LogicalPlan,
    agg: &Aggregate,
    provider: Arc<dyn TableProvider>,
) -> DfResult<LogicalPlan> {
    let out = agg.schema.clone();
    let scan = LogicalPlanBuilder::scan("__state", provider_as_source(provider), None)?.build()?;
    let exprs: Vec<Expr> = out
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            Expr::Column(Column::new(Some("__state"), format!("c{i}")))
                .alias_qualified(q.cloned(), f.name())
        })
        .collect();
    let replacement = LogicalPlanBuilder::from(scan).project(exprs)?.build()?;
    let replaced = plan
        .clone()
        .transform_up(|node| {
            if let LogicalPlan::Aggregate(a) = &node
                && a.schema == out
            {
                return Ok(Transformed::yes(replacement.clone()));
            }
            Ok(Transformed::no(node))
        })?
        .data;
    recompute_schemas(replaced)
}

/// Recomputes every node's schema bottom-up (nodes cache theirs, e.g. the
/// nullability of a replaced child's columns).
pub fn recompute_schemas(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    Ok(plan
        .transform_up(|node| Ok(Transformed::yes(node.recompute_schema()?)))?
        .data)
}

/// The state of an aggregate view as a table (read by the view's read
/// plan).
pub(crate) struct StateTable {
    pub(crate) aggregation: Arc<Aggregation>,
}

impl fmt::Debug for StateTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateTable")
    }
}

#[async_trait]
impl TableProvider for StateTable {
    fn schema(&self) -> SchemaRef {
        self.aggregation.state.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let partition: Arc<dyn PartitionStream> = Arc::new(StatePages {
            aggregation: self.aggregation.clone(),
            schema: self.schema(),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            self.schema(),
            vec![partition],
            projection,
            Vec::new(),
            false,
            limit,
        )?))
    }
}

/// The state read page by page on a blocking thread (one RocksDB iterator,
/// so one consistent view), a bounded number of pages ahead of the reader.
struct StatePages {
    aggregation: Arc<Aggregation>,
    schema: SchemaRef,
}

impl fmt::Debug for StatePages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatePages")
    }
}

/// Groups per page of a state read.
const PAGE_ROWS: usize = 64 * 1024;

impl PartitionStream for StatePages {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<arrow::array::RecordBatch>>(2);
        let aggregation = self.aggregation.clone();
        tokio::task::spawn_blocking(move || {
            let sent = aggregation
                .state
                .contents_pages(PAGE_ROWS, |b| tx.blocking_send(Ok(b)).is_ok());
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(datafusion::error::DataFusionError::External(
                    Box::new(e),
                )));
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}
