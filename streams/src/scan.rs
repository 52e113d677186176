//! A stream as a DataFusion table.
//!
//! `scan()` is cheap: it reads the partitions' end offsets once (the
//! snapshot the query sees), turns the filters into [`ScanBounds`] and
//! returns a [`StreamScanExec`] with one execution partition per stream
//! partition that may hold matches. `execute()` is lazy: the log is read only
//! when DataFusion polls, chunk by chunk, with the projection pushed into the
//! IPC decoder.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::TryStreamExt;
use streamhouse_log::{Log, StreamInfo, TimeFilter};

use crate::prune::ScanBounds;

/// Offset ranges to read, one per partition (`start..end`); see
/// [`StreamTable::delta`].
pub type Ranges = Arc<std::sync::Mutex<Vec<std::ops::Range<u64>>>>;

/// A stream, readable with SQL.
#[derive(Debug)]
pub struct StreamTable {
    log: Arc<Log>,
    info: Arc<StreamInfo>,
    schema: SchemaRef,
    /// When set, scans read exactly these offsets of each partition instead
    /// of everything up to the partitions' ends.
    delta: Option<Ranges>,
}

impl StreamTable {
    pub fn new(log: Arc<Log>, info: Arc<StreamInfo>) -> Self {
        let schema = info.read_schema();
        Self {
            log,
            info,
            schema,
            delta: None,
        }
    }

    /// The same stream, but each scan reads only the offset ranges in
    /// `ranges` at the time of the scan: how a continuous query runs its
    /// plan over just the rows that arrived since its last step.
    pub fn delta(log: Arc<Log>, info: Arc<StreamInfo>, ranges: Ranges) -> Self {
        let schema = info.read_schema();
        Self {
            log,
            info,
            schema,
            delta: Some(ranges),
        }
    }

    /// The stream behind the table.
    pub fn info(&self) -> &Arc<StreamInfo> {
        &self.info
    }
}

fn external(e: streamhouse_log::LogError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters prune chunks; DataFusion still checks every row.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let et = self
            .info
            .spec
            .event_time
            .as_ref()
            .map(|e| e.column.as_str());
        let bounds = ScanBounds::from_filters(filters, et);
        let ranges: Vec<std::ops::Range<u64>> = match &self.delta {
            Some(r) => r.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => self
                .log
                .metadata()
                .partition_ends(self.info.id)
                .await
                .map_err(external)?
                .into_iter()
                .map(|end| bounds.offsets.start..end)
                .collect(),
        };
        let partitions: Vec<(u32, std::ops::Range<u64>)> = if bounds.is_empty() {
            Vec::new()
        } else {
            (0..self.info.spec.partitions)
                .filter(|p| bounds.partitions.as_ref().is_none_or(|s| s.contains(p)))
                .filter_map(|p| {
                    let r = ranges.get(p as usize)?;
                    let r = r.start.max(bounds.offsets.start)..r.end;
                    (r.end > r.start).then_some((p, r))
                })
                .collect()
        };
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(StreamScanExec {
            log: self.log.clone(),
            info: self.info.clone(),
            projection: projection.cloned(),
            bounds,
            partitions,
            schema,
            props: Arc::new(props),
        }))
    }
}

/// Reads the selected partitions of a stream, one execution partition each.
#[derive(Debug)]
pub struct StreamScanExec {
    log: Arc<Log>,
    info: Arc<StreamInfo>,
    projection: Option<Vec<usize>>,
    bounds: ScanBounds,
    /// (partition, offsets to read: from the lower bound to the end at
    /// planning time).
    partitions: Vec<(u32, std::ops::Range<u64>)>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

impl DisplayAs for StreamScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let parts: Vec<String> = self.partitions.iter().map(|(p, _)| p.to_string()).collect();
        write!(
            f,
            "StreamScanExec: stream={}, partitions=[{}]",
            self.info.name(),
            parts.join(",")
        )?;
        if self.bounds.offsets != (0..u64::MAX) {
            let end = match self.bounds.offsets.end {
                u64::MAX => String::new(),
                e => e.to_string(),
            };
            write!(f, ", offsets={}..{end}", self.bounds.offsets.start)?;
        }
        if let Some(r) = &self.bounds.event_time {
            write!(f, ", event_time={}", fmt_range(r))?;
        }
        if let Some(r) = &self.bounds.append_time {
            write!(f, ", append_time={}", fmt_range(r))?;
        }
        if self.projection.is_some() {
            write!(
                f,
                ", projection=[{}]",
                self.schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )?;
        }
        Ok(())
    }
}

fn fmt_range(r: &std::ops::Range<i64>) -> String {
    let s = |v: i64, open: i64| {
        if v == open {
            String::new()
        } else {
            v.to_string()
        }
    };
    format!("{}..{}", s(r.start, i64::MIN), s(r.end, i64::MAX))
}

impl ExecutionPlan for StreamScanExec {
    fn name(&self) -> &str {
        "StreamScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = self.schema.clone();
        let Some((p, range)) = self.partitions.get(partition).cloned() else {
            // Nothing can match: the plan still has one (empty) partition.
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let log = self.log.clone();
        // The plan's version of the stream: its projection indexes that
        // version's columns, whatever ALTER STREAM has done since.
        let info = self.info.clone();
        let projection = self.projection.clone();
        let bounds = self.bounds.clone();
        let open = async move {
            let offsets = range.start..bounds.offsets.end.min(range.end);
            let stream = if bounds.event_time.is_some() || bounds.append_time.is_some() {
                let filter = TimeFilter {
                    event_time: bounds.event_time.clone(),
                    append_time: bounds.append_time.clone(),
                };
                log.read_time_as(info, p, offsets, filter, projection).await
            } else {
                log.read_as(info, p, offsets, projection).await
            };
            Ok::<_, DataFusionError>(stream.map_err(external)?.map_err(external))
        };
        let stream = futures::stream::once(open).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The stream a logical plan's scan reads, when it reads one.
pub fn stream_of(scan: &datafusion::logical_expr::TableScan) -> Option<Arc<StreamInfo>> {
    let provider = datafusion::datasource::source_as_provider(&scan.source).ok()?;
    provider
        .downcast_ref::<StreamTable>()
        .map(|t| t.info().clone())
}
