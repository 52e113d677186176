//! Materialized views, first stage: incremental `GROUP BY` aggregates over
//! streams.
//!
//! A view's query is planned by DataFusion and split at its one
//! `Aggregate`:
//!
//! - **below** it, a stateless pipeline (projection, filter, scalar
//!   functions, `TUMBLE`/`HOP` window columns, `UNION ALL`) over streams.
//!   Each step runs that pipeline and a *partial* aggregate over only the
//!   rows that arrived since the last step (the streams are scanned in delta
//!   mode, by offset ranges), never over the whole input again;
//! - the **state**: per group, mergeable components of each aggregate
//!   (`count` and `sum` add, `min`/`max` compare, `avg` is a sum and a
//!   count), merged with each step's partial results;
//! - **above** it (`HAVING`, expressions over aggregates, renames, ORDER
//!   BY), evaluated when the view is read, over the state.
//!
//! A view without an aggregate is a stateless pipeline over the log: the log
//! is its storage, and reading it runs the pipeline. Anything else (joins,
//! window functions, nested aggregates, `DISTINCT` aggregates, aggregates
//! without mergeable state) is refused at CREATE with 0A000 naming the part.
//!
//! Definitions are kept in the metadata store; after a restart each view is
//! rebuilt by running its steps over the log from the beginning. State in
//! RocksDB with checkpoints, changelogs and subscriptions build on this.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{
    MemTable, TableProvider, TableType, ViewTable, provider_as_source, source_as_provider,
};
use datafusion::error::Result as DfResult;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, SubqueryAlias, TableScan, cast,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use streamhouse_log::{Log, StreamInfo, ViewCheckpoint};
use streamhouse_streams::{AggregateState, Final, Merge, StateStore};
use tokio::task::JoinHandle;

use crate::error::{Result, SqlError};
use crate::table::{Ranges, StreamTable};

/// A stream a view reads, and how far it has read it.
struct Input {
    info: Arc<StreamInfo>,
    ranges: Ranges,
    consumed: Vec<u64>,
}

/// Where a view stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Running,
    Failed(String),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Running => f.write_str("running"),
            Status::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// The incremental part of an aggregate view.
struct Aggregation {
    delta: LogicalPlan,
    state: AggregateState,
}

/// Where a view's state lives, and what to restore it from.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Local directory of its state store.
    pub dir: PathBuf,
    /// This incarnation's id (names its state objects).
    pub dataflow: String,
    /// The checkpoint to resume from; none: start from the beginning.
    pub restore: Option<ViewCheckpoint>,
    /// How often the state is checkpointed while it changes.
    pub checkpoint_interval: Duration,
}

/// One materialized view.
pub struct MatView {
    pub name: String,
    pub definition: String,
    pub dataflow: String,
    dir: PathBuf,
    checkpoint_interval: Duration,
    /// Number of the last checkpoint recorded.
    checkpoint_no: AtomicU64,
    /// State changed since the last checkpoint.
    dirty: AtomicBool,
    /// Where its state came from when this process started it.
    origin: RwLock<String>,
    inputs: Mutex<Vec<Input>>,
    aggregation: Option<Arc<Aggregation>>,
    /// What reading the view runs.
    read_plan: LogicalPlan,
    status: RwLock<Status>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for MatView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatView").field("name", &self.name).finish()
    }
}

impl Drop for MatView {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unsupported(what: impl fmt::Display) -> SqlError {
    SqlError::NotSupported(format!(
        "{what} in a materialized view (supported: projection, WHERE, scalar functions, \
         TUMBLE/HOP windows, UNION ALL of streams, one GROUP BY with count, sum, min, max, avg, \
         and HAVING)"
    ))
}

/// Replaces scans of `ViewTable`s (the window table functions) with their
/// plans, so that the streams under them are visible.
fn inline_views(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up(|node| {
            if let LogicalPlan::TableScan(scan) = &node
                && let Ok(provider) = source_as_provider(&scan.source)
                && let Some(view) = provider.downcast_ref::<ViewTable>()
            {
                let inner = inline_views(view.logical_plan().clone())
                    .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
                let aliased = SubqueryAlias::try_new(Arc::new(inner), scan.table_name.clone())?;
                return Ok(Transformed::yes(LogicalPlan::SubqueryAlias(aliased)));
            }
            Ok(Transformed::no(node))
        })?
        .data)
}

/// Checks that a plan below the aggregate is a stateless pipeline over
/// streams, and returns the streams it scans.
fn check_pipeline(plan: &LogicalPlan) -> Result<Vec<Arc<StreamInfo>>> {
    let mut streams = Vec::new();
    let mut bad: Option<SqlError> = None;
    plan.apply(|node| {
        match node {
            LogicalPlan::Projection(p) => {
                if p.expr.iter().any(has_subquery) {
                    bad = Some(unsupported("a subquery"));
                }
            }
            LogicalPlan::Filter(f) => {
                if has_subquery(&f.predicate) {
                    bad = Some(unsupported("a subquery"));
                }
            }
            LogicalPlan::SubqueryAlias(_) | LogicalPlan::Union(_) => {}
            LogicalPlan::TableScan(scan) => match stream_of(scan) {
                Some(info) => streams.push(info),
                None => {
                    bad = Some(unsupported(format!(
                        "reading \"{}\" (only streams can feed a view)",
                        scan.table_name
                    )))
                }
            },
            LogicalPlan::Join(_) => bad = Some(unsupported("a join")),
            LogicalPlan::Window(_) => {
                bad = Some(unsupported("a window function (or SESSION window)"))
            }
            LogicalPlan::Aggregate(_) => bad = Some(unsupported("a GROUP BY over a GROUP BY")),
            LogicalPlan::Distinct(_) => bad = Some(unsupported("SELECT DISTINCT")),
            LogicalPlan::Sort(_) => bad = Some(unsupported("ORDER BY below the aggregate")),
            LogicalPlan::Limit(_) => bad = Some(unsupported("LIMIT below the aggregate")),
            other => bad = Some(unsupported(format!("{} step", other.display()))),
        }
        Ok(if bad.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    match bad {
        Some(e) => Err(e),
        None => Ok(streams),
    }
}

fn has_subquery(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|e| {
        found |= matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
        );
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn stream_of(scan: &TableScan) -> Option<Arc<StreamInfo>> {
    let provider = source_as_provider(&scan.source).ok()?;
    provider
        .downcast_ref::<StreamTable>()
        .map(|t| t.info().clone())
}

/// The aggregate's functions as mergeable components.
fn decompose(aggr: &[Expr]) -> Result<(Vec<Expr>, Vec<Merge>, Vec<Final>)> {
    let (mut components, mut merges, mut finals) = (Vec::new(), Vec::new(), Vec::new());
    for e in aggr {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return Err(unsupported(format!("the aggregate {e}")));
        };
        if params.distinct {
            return Err(unsupported(format!("{}(DISTINCT …)", func.name())));
        }
        if params.filter.is_some() || !params.order_by.is_empty() {
            return Err(unsupported(format!(
                "{} with FILTER or ORDER BY",
                func.name()
            )));
        }
        let name = func.name().to_lowercase();
        match name.as_str() {
            "count" | "sum" | "min" | "max" => {
                finals.push(Final::Same {
                    component: components.len(),
                    is_count: name == "count",
                });
                merges.push(match name.as_str() {
                    "min" => Merge::Min,
                    "max" => Merge::Max,
                    _ => Merge::Sum,
                });
                components.push(inner.clone());
            }
            "avg" | "mean" => {
                let arg = params
                    .args
                    .first()
                    .cloned()
                    .ok_or_else(|| unsupported("avg without an argument"))?;
                finals.push(Final::Avg {
                    sum: components.len(),
                    count: components.len() + 1,
                });
                components.push(sum(cast(arg.clone(), DataType::Float64)));
                components.push(count(arg));
                merges.extend([Merge::Sum, Merge::Sum]);
            }
            other => return Err(unsupported(format!("the aggregate {other}()"))),
        }
    }
    // Name the components so the delta plan's schema is unambiguous.
    let components = components
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.alias(format!("__component{i}")))
        .collect();
    Ok((components, merges, finals))
}

impl MatView {
    /// Compiles a planned view query. Fails with 0A000 on shapes a view
    /// cannot maintain.
    pub async fn compile(
        log: &Arc<Log>,
        name: &str,
        definition: String,
        plan: LogicalPlan,
        placement: Placement,
    ) -> Result<Arc<MatView>> {
        let plan = inline_views(plan)?;
        let mut aggregates = Vec::new();
        plan.apply(|n| {
            if let LogicalPlan::Aggregate(a) = n {
                aggregates.push(a.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if aggregates.len() > 1 {
            return Err(unsupported("more than one GROUP BY level"));
        }
        let Some(agg) = aggregates.pop() else {
            // Stateless: the view reads the pipeline over the log.
            let streams = check_pipeline(&plan)?;
            return Ok(Arc::new(MatView {
                name: name.to_string(),
                definition,
                dataflow: placement.dataflow,
                dir: placement.dir,
                checkpoint_interval: placement.checkpoint_interval,
                checkpoint_no: AtomicU64::new(0),
                dirty: AtomicBool::new(false),
                origin: RwLock::new("the log".into()),
                inputs: Mutex::new(inputs(&streams)),
                aggregation: None,
                read_plan: plan,
                status: RwLock::new(Status::Running),
                task: Mutex::new(None),
            }));
        };
        let streams = check_pipeline(&agg.input)?;
        if streams.is_empty() {
            return Err(unsupported("an aggregate over no stream"));
        }
        let mut ins = inputs(&streams);
        if agg
            .group_expr
            .iter()
            .any(|g| matches!(g, Expr::GroupingSet(_)))
        {
            return Err(unsupported("GROUPING SETS, CUBE or ROLLUP"));
        }
        let (components, merges, finals) = decompose(&agg.aggr_expr)?;

        // The delta plan: the same pipeline, its stream scans in delta mode.
        let by_id: HashMap<i64, Ranges> =
            ins.iter().map(|i| (i.info.id, i.ranges.clone())).collect();
        let delta_input = agg
            .input
            .as_ref()
            .clone()
            .transform_up(|node| {
                if let LogicalPlan::TableScan(scan) = &node
                    && let Some(info) = stream_of(scan)
                {
                    let table =
                        StreamTable::delta(log.clone(), info.clone(), by_id[&info.id].clone());
                    let mut scan = scan.clone();
                    scan.source = provider_as_source(Arc::new(table));
                    return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
                }
                Ok(Transformed::no(node))
            })?
            .data;
        let delta = LogicalPlanBuilder::from(delta_input)
            .aggregate(agg.group_expr.clone(), components)?
            .build()?;

        // The state: the aggregate's output, as columns c0…
        let out = agg.schema.as_ref();
        let schema: SchemaRef = Arc::new(Schema::new(
            out.fields()
                .iter()
                .enumerate()
                .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let groups = agg.group_expr.len();
        let component_types: Vec<DataType> = delta.schema().fields()[groups..]
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let (store, checkpoint_no) = match &placement.restore {
            Some(cp) => {
                restore_offsets(&mut ins, &cp.input_offsets)?;
                let store = StateStore::restore(
                    log.store(),
                    &cp.state_key,
                    &run_dir(&placement.dir)?,
                    &placement.dataflow,
                )
                .await?;
                (store, cp.number)
            }
            None => (
                StateStore::open(&run_dir(&placement.dir)?, &placement.dataflow)?,
                0,
            ),
        };
        let state = AggregateState::new(store, schema, groups, component_types, merges, finals)?;
        let aggregation = Arc::new(Aggregation { delta, state });
        let provider = Arc::new(StateTable {
            aggregation: aggregation.clone(),
        });
        let read_plan = read_plan(&plan, &agg, provider)?;
        Ok(Arc::new(MatView {
            name: name.to_string(),
            definition,
            dataflow: placement.dataflow,
            dir: placement.dir,
            checkpoint_interval: placement.checkpoint_interval,
            checkpoint_no: AtomicU64::new(checkpoint_no),
            dirty: AtomicBool::new(false),
            origin: RwLock::new(match checkpoint_no {
                0 => "the log".to_string(),
                n => format!("checkpoint {n}"),
            }),
            inputs: Mutex::new(ins),
            aggregation: Some(aggregation),
            read_plan,
            status: RwLock::new(Status::Running),
            task: Mutex::new(None),
        }))
    }

    /// What `SELECT … FROM view` reads.
    pub fn table(&self) -> Arc<dyn TableProvider> {
        Arc::new(ViewTable::new(
            self.read_plan.clone(),
            Some(self.definition.clone()),
        ))
    }

    /// Brings the view up to date with everything its inputs hold now
    /// (before [`MatView::start`]: steps must not run concurrently).
    pub async fn backfill(&self, log: &Arc<Log>, ctx: &SessionContext) -> Result<()> {
        while self.step(log, ctx).await? {}
        Ok(())
    }

    /// Starts maintaining the view in the background: steps as rows
    /// arrive, and a checkpoint once the state has changed and the interval
    /// has passed.
    pub fn start(self: &Arc<Self>, log: Arc<Log>, ctx: SessionContext) {
        if self.aggregation.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
            let mut last_checkpoint = tokio::time::Instant::now();
            loop {
                let Some(view) = weak.upgrade() else { return };
                let mut progressed = false;
                let outcome = async {
                    progressed = view.step(&log, &ctx).await?;
                    if view.dirty.load(Ordering::Acquire)
                        && last_checkpoint.elapsed() >= view.checkpoint_interval
                    {
                        view.checkpoint(&log).await?;
                        last_checkpoint = tokio::time::Instant::now();
                    }
                    Ok::<_, SqlError>(())
                }
                .await;
                if let Err(e) = outcome {
                    tracing::warn!(view = %view.name, error = %e, "materialized view stopped");
                    *view.status.write().unwrap_or_else(|p| p.into_inner()) =
                        Status::Failed(e.to_string());
                    return;
                }
                if progressed {
                    continue;
                }
                let mut waits = view.waits(&log);
                if view.dirty.load(Ordering::Acquire) {
                    let due = last_checkpoint + view.checkpoint_interval;
                    waits.push(Box::pin(tokio::time::sleep_until(due)));
                }
                drop(view);
                if waits.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    let _ = futures::future::select_all(waits).await;
                }
            }
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Records a checkpoint: a snapshot of the state and, in one metadata
    /// transaction, the input offsets it reflects. Must not run
    /// concurrently with a step.
    pub async fn checkpoint(&self, log: &Arc<Log>) -> Result<()> {
        let Some(agg) = &self.aggregation else {
            return Ok(());
        };
        let number = self.checkpoint_no.load(Ordering::Acquire) + 1;
        let input_offsets = {
            let inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
            let map: HashMap<String, Vec<u64>> = inputs
                .iter()
                .map(|i| (i.info.id.to_string(), i.consumed.clone()))
                .collect();
            serde_json::to_string(&map).map_err(|e| SqlError::Internal(e.to_string()))?
        };
        let state_key = agg.state.snapshot(log.store(), number).await?;
        log.metadata()
            .commit_view_checkpoint(
                &self.name,
                &self.dataflow,
                &ViewCheckpoint {
                    number,
                    input_offsets,
                    state_key,
                },
                now_micros(),
            )
            .await?;
        self.checkpoint_no.store(number, Ordering::Release);
        self.dirty.store(false, Ordering::Release);
        Ok(())
    }

    /// Number of the last checkpoint (0: none).
    pub fn checkpoints(&self) -> u64 {
        self.checkpoint_no.load(Ordering::Acquire)
    }

    /// Where the state came from at start: "the log" or "checkpoint N".
    pub fn origin(&self) -> String {
        self.origin
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A view rebuilt from the log although it had checkpoints: its next
    /// checkpoint numbers continue after `number`.
    pub fn rebuilt_after(&self, number: u64, why: &str) {
        self.checkpoint_no.store(number, Ordering::Release);
        *self.origin.write().unwrap_or_else(|p| p.into_inner()) =
            format!("the log (checkpoint {number} not restored: {why})");
    }

    /// Removes the local state directory (after DROP).
    pub fn remove_local_state(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Stops maintaining the view.
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    /// Futures that resolve when any input partition grows past what the
    /// view consumed.
    fn waits(&self, log: &Arc<Log>) -> Vec<BoxFuture<'static, ()>> {
        let inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<BoxFuture<'static, ()>> = Vec::new();
        for input in inputs.iter() {
            for (p, &offset) in input.consumed.iter().enumerate() {
                let log = log.clone();
                let name = input.info.name().to_string();
                out.push(Box::pin(async move {
                    if log.wait_for(&name, p as u32, offset).await.is_err() {
                        // The stream is gone: the next step reports it.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }));
            }
        }
        out
    }

    /// Runs one step over what arrived since the last one; `false` when
    /// nothing had.
    async fn step(&self, log: &Arc<Log>, ctx: &SessionContext) -> Result<bool> {
        let Some(agg) = &self.aggregation else {
            return Ok(false);
        };
        let mut ends = Vec::new();
        {
            let names: Vec<(String, Ranges, Vec<u64>)> = {
                let inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
                inputs
                    .iter()
                    .map(|i| {
                        (
                            i.info.name().to_string(),
                            i.ranges.clone(),
                            i.consumed.clone(),
                        )
                    })
                    .collect()
            };
            let mut any = false;
            for (name, ranges, consumed) in names {
                let e = log.partition_ends(&name).await?;
                let r: Vec<Range<u64>> = consumed.iter().zip(&e).map(|(&c, &e)| c..e).collect();
                any |= r.iter().any(|r| r.end > r.start);
                *ranges.lock().unwrap_or_else(|p| p.into_inner()) = r;
                ends.push(e);
            }
            if !any {
                return Ok(false);
            }
        }
        let batches = ctx
            .execute_logical_plan(agg.delta.clone())
            .await?
            .collect()
            .await?;
        agg.state.merge(&batches)?;
        self.dirty.store(true, Ordering::Release);
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        for (input, e) in inputs.iter_mut().zip(ends) {
            input.consumed = e;
        }
        Ok(true)
    }

    /// Status and rows not yet reflected, for SHOW MATERIALIZED VIEWS.
    pub async fn progress(&self, log: &Arc<Log>) -> (Status, i64) {
        let status = self
            .status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if self.aggregation.is_none() {
            return (status, 0);
        }
        let inputs: Vec<(String, Vec<u64>)> = {
            let inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
            inputs
                .iter()
                .map(|i| (i.info.name().to_string(), i.consumed.clone()))
                .collect()
        };
        let mut lag = 0i64;
        for (name, consumed) in inputs {
            if let Ok(ends) = log.partition_ends(&name).await {
                lag += ends
                    .iter()
                    .zip(&consumed)
                    .map(|(e, c)| e.saturating_sub(*c) as i64)
                    .sum::<i64>();
            }
        }
        (status, lag)
    }

    /// The streams this view reads.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|i| i.info.name().to_string())
            .collect()
    }
}

fn inputs(streams: &[Arc<StreamInfo>]) -> Vec<Input> {
    let mut out: Vec<Input> = Vec::new();
    for s in streams {
        if out.iter().any(|i| i.info.id == s.id) {
            continue;
        }
        let n = s.spec.partitions as usize;
        out.push(Input {
            info: s.clone(),
            ranges: Arc::new(Mutex::new(vec![0..0; n])),
            consumed: vec![0; n],
        });
    }
    out
}

/// The view's query with its aggregate replaced by a scan of the state,
/// renamed back to the aggregate's own (qualified) output columns.
fn read_plan(
    plan: &LogicalPlan,
    agg: &Aggregate,
    provider: Arc<StateTable>,
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
    Ok(plan
        .clone()
        .transform_up(|node| {
            if let LogicalPlan::Aggregate(a) = &node
                && a.schema == out
            {
                return Ok(Transformed::yes(replacement.clone()));
            }
            Ok(Transformed::no(node))
        })?
        .data)
}

/// Now, in µs since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A fresh local directory for this run of a view's state, under its
/// dataflow's directory; earlier runs' directories (a cache of what the
/// checkpoints hold) are removed.
fn run_dir(dataflow_dir: &std::path::Path) -> Result<PathBuf> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    if let Ok(entries) = std::fs::read_dir(dataflow_dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let run = dataflow_dir.join(format!(
        "run-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&run)
        .map_err(|e| SqlError::Unavailable(format!("state directory {}: {e}", run.display())))?;
    Ok(run)
}

/// Sets each input's consumed offsets from a checkpoint's record.
fn restore_offsets(inputs: &mut [Input], json: &str) -> Result<()> {
    let map: HashMap<String, Vec<u64>> = serde_json::from_str(json)
        .map_err(|e| SqlError::Internal(format!("checkpoint offsets: {e}")))?;
    for input in inputs.iter_mut() {
        let Some(offsets) = map.get(&input.info.id.to_string()) else {
            return Err(SqlError::Conflict(format!(
                "stream \"{}\" was created again since the view's checkpoint",
                input.info.name()
            )));
        };
        if offsets.len() != input.consumed.len() {
            return Err(SqlError::Conflict(format!(
                "stream \"{}\" has another partition count than at the view's checkpoint",
                input.info.name()
            )));
        }
        input.consumed = offsets.clone();
    }
    Ok(())
}

/// The state of an aggregate view as a table (read by the view's read
/// plan).
struct StateTable {
    aggregation: Arc<Aggregation>,
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
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .aggregation
            .state
            .contents()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        MemTable::try_new(self.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
