//! Reading a top-N view from its state: every partition's ranked rows now
//! (one pass over the state's top-N entries), with the plan above the
//! top-N run over them — the view's rows without reading its inputs again.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType, provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::ExecutionPlan;

use super::{Ranker, StepRows, TOP, TopN, split_entry};
use crate::error::{Result, StreamsError};
use crate::state::count_of;

/// Rows per batch of a read.
const BATCH_ROWS: usize = 8192;

impl TopN {
    /// Every partition's ranked rows now, in the step rows' schema (sign
    /// +1).
    pub(crate) fn current(&self) -> Result<Vec<RecordBatch>> {
        let (kind, limit) = (self.description.rank, self.description.limit);
        let mut batches = Vec::new();
        let mut rows: Vec<Vec<u8>> = Vec::new();
        let mut ranks = Vec::new();
        let mut partition: Vec<u8> = Vec::new();
        let mut ranker = Ranker::new(kind, limit);
        let bad = || StreamsError::Internal("top-N key".into());
        self.store.scan_while(&[TOP], |k, v| {
            let count = count_of(v);
            if count <= 0 {
                return Ok(true);
            }
            let pk_len =
                u32::from_be_bytes(k.get(1..5).ok_or_else(bad)?.try_into().map_err(|_| bad())?)
                    as usize;
            let prefix = 5 + pk_len;
            if prefix > k.len() {
                return Err(bad());
            }
            if k[..prefix] != partition[..] {
                partition = k[..prefix].to_vec();
                ranker = Ranker::new(kind, limit);
            }
            let (order, row) = split_entry(&k[prefix..])?;
            ranker.push(order, count, |value| {
                rows.push(row.to_vec());
                ranks.push(value);
            });
            if rows.len() >= BATCH_ROWS {
                let n = rows.len();
                batches.push(self.batch(&rows, std::mem::take(&mut ranks), vec![1; n])?);
                rows.clear();
            }
            Ok(true)
        })?;
        if !rows.is_empty() || batches.is_empty() {
            let n = rows.len();
            batches.push(self.batch(&rows, ranks, vec![1; n])?);
        }
        Ok(batches)
    }
}

/// A top-N's ranked rows now, as a table.
struct RankedRows {
    top_n: Arc<TopN>,
    schema: SchemaRef,
}

impl fmt::Debug for RankedRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RankedRows")
    }
}

#[async_trait]
impl TableProvider for RankedRows {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = self
            .top_n
            .current()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

/// What reading a top-N view runs: the plan above the top-N over its
/// ranked rows now, as the view's columns (`view`: qualified as the view's
/// query has them, without the sign).
pub(crate) fn read_plan(top_n: &Arc<TopN>, view: &DFSchema) -> DfResult<LogicalPlan> {
    let above = top_n
        .description
        .above
        .clone()
        .transform_up(|node| {
            let LogicalPlan::TableScan(mut scan) = node else {
                return Ok(Transformed::no(node));
            };
            let provider = source_as_provider(&scan.source)?;
            let Some(rows) = provider.downcast_ref::<StepRows>() else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            scan.source = provider_as_source(Arc::new(RankedRows {
                top_n: top_n.clone(),
                schema: rows.schema.clone(),
            }));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        })?
        .data;
    let out = above.schema().clone();
    let columns = view
        .iter()
        .map(|(q, f)| {
            let (from_q, _) = out
                .iter()
                .find(|(_, g)| g.name() == f.name())
                .ok_or_else(|| {
                    DataFusionError::Plan(format!("top-N read: no column {}", f.name()))
                })?;
            Ok(Expr::Column(Column::new(from_q.cloned(), f.name()))
                .alias_qualified(q.cloned(), f.name()))
        })
        .collect::<DfResult<Vec<_>>>()?;
    LogicalPlanBuilder::from(above).project(columns)?.build()
}
