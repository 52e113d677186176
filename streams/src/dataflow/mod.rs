//! Running continuous queries: a [`Description`] (the plans and state
//! layout the SQL layer compiled) instantiated at a [`Placement`] becomes a
//! [`Dataflow`] that steps over what its input streams gain.
//!
//! - **Pipeline** dataflows (no aggregate) run their plan over each step's
//!   new rows; their output is read by running the plan over the log.
//! - **Aggregate** dataflows run a partial aggregate over each step's new
//!   rows and merge it into RocksDB state ([`crate::aggregate`]); their
//!   output is the query above the aggregate run over the state
//!   (`state_table`).
//! - Inner equi-joins below the aggregate keep both sides' rows and join
//!   only new ones (`join`); aggregate functions without a mergeable form
//!   keep their partial state ([`partial`]).
//!
//! Every step's changes go to a changelog ([`changes`]) as an idempotent
//! producer whose progress commits with them; checkpoints snapshot the
//! state; recovery replays the recorded steps after the checkpoint
//! (`run`, `progress`).

pub mod changes;
mod description;
mod join;
pub mod partial;
mod progress;
mod run;
mod state_table;
mod topn;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder};
use streamhouse_log::{Log, StreamInfo, StreamKind, ViewCheckpoint};
use tokio::task::JoinHandle;

pub use description::{
    AggregateDescription, Description, Emit, Output, Placement, Shape, watermark_delays,
};
pub use join::{retracts, unsupported_join};
pub use state_table::recompute_schemas;
pub use topn::{Rank, StepRows, TopNDescription};

use crate::aggregate::{AggregateState, Distinct};
use crate::error::{Result, StreamsError};
use crate::scan::{Ranges, StreamTable, stream_of};
use crate::state::StateStore;
use crate::watermark::Watermarks;
use datafusion::functions_aggregate::expr_fn::sum;
use progress::{CheckpointRecord, Run};
use state_table::{StateTable, read_plan};

/// The producer id of a dataflow's changelog appends.
pub fn producer_id(dataflow: &str) -> String {
    format!("view:{dataflow}")
}

/// A stream a dataflow reads, and how far it has read it.
struct Input {
    info: Arc<StreamInfo>,
    ranges: Ranges,
    consumed: Vec<u64>,
}

/// Where a dataflow stands.
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

/// The incremental part of an aggregate dataflow.
pub(crate) struct Aggregation {
    delta: LogicalPlan,
    /// Per `count(DISTINCT …)`, the plan of the step's distinct pairs.
    distinct: Vec<LogicalPlan>,
    pub(crate) state: AggregateState,
    /// Grouped by a window (has a `window_end` group column).
    windowed: bool,
    /// The query and its aggregate: state rows become output rows by
    /// running the query with the aggregate replaced by those rows.
    plan: LogicalPlan,
    agg: Aggregate,
}

/// What a step runs.
enum Body {
    /// Without aggregate: the plan with its scans in delta mode.
    Pipeline {
        delta: LogicalPlan,
        /// Its rows end with a sign (it reads a changelog with updates).
        signed: bool,
        /// A top-N its rows go through.
        top_n: Option<Arc<topn::TopN>>,
    },
    Aggregate(Arc<Aggregation>),
}

/// One running continuous query.
pub struct Dataflow {
    pub name: String,
    pub dataflow: String,
    dir: PathBuf,
    checkpoint_interval: Duration,
    /// When changes are emitted.
    emit: Emit,
    /// `op`, then the output columns.
    changes_schema: SchemaRef,
    output: Option<Output>,
    /// Number of the last checkpoint recorded.
    checkpoint_no: AtomicU64,
    /// The lease epoch this incarnation runs under (see [`Placement`]).
    pub epoch: u64,
    /// State changed since the last checkpoint.
    dirty: AtomicBool,
    /// Where its state came from when this process started it.
    origin: RwLock<String>,
    inputs: Mutex<Vec<Input>>,
    /// Its state (aggregates and join sides), when it keeps any.
    state: Option<Arc<StateStore>>,
    /// Steps run (joins compute their rows once per step).
    steps: join::Steps,
    /// The watermark its joins' step runs at, and their late rows.
    join_clock: Arc<join::Clock>,
    /// Its joins' rows must be refilled from the log on recovery (a
    /// checkpoint from before they were part of the state).
    refill: AtomicBool,
    body: Body,
    /// What reading the output runs.
    read_plan: LogicalPlan,
    status: RwLock<Status>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Asks the background loop to end after its current step.
    stopping: AtomicBool,
    wake: Arc<tokio::sync::Notify>,
    /// Step state (watermarks, steps since the checkpoint, output
    /// sequence); held for a whole step or checkpoint.
    run: tokio::sync::Mutex<Run>,
    /// Rows dropped as late: their window had closed, or they were behind
    /// the watermark that a join's other side expires by.
    late_rows: AtomicU64,
    /// The watermark, µs (`i64::MIN`: none yet).
    watermark: AtomicI64,
    /// When the output last reflected every row committed to its inputs.
    caught_up: Mutex<Option<std::time::Instant>>,
    /// Counts steps that moved the inputs' consumed offsets (and failures),
    /// for readers waiting until the output reflects an offset.
    stepped: tokio::sync::watch::Sender<u64>,
}

impl fmt::Debug for Dataflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataflow")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for Dataflow {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Dataflow {
    /// Instantiates `description` at `placement`: input progress and state
    /// restored from the placement's checkpoint, scans switched to offset
    /// ranges, joins made incremental. Nothing runs until
    /// [`Dataflow::backfill`], [`Dataflow::recover`] or [`Dataflow::start`].
    pub async fn new(
        log: &Arc<Log>,
        name: &str,
        description: Description,
        placement: Placement,
    ) -> Result<Arc<Dataflow>> {
        let Description {
            inputs: streams,
            shape,
            emit,
            changes_schema,
            idle_timeout,
        } = description;
        let mut ins = inputs(&streams);
        let checkpoint_no = restore_progress(&mut ins, placement.restore.as_ref())?;
        let wm = watermarks(&ins, idle_timeout);
        let joins = match &shape {
            Shape::Pipeline { plan, .. } => join::has_joins(plan),
            Shape::Aggregate(a) => join::has_joins(&a.agg.input),
        };
        let state = match (&shape, joins) {
            (Shape::Pipeline { top_n: None, .. }, false) => None,
            _ => Some(Arc::new(open_state(log, &placement).await?)),
        };
        // Join rows were not part of the state before version 2 of its
        // layout: a view restored from such a checkpoint refills them.
        let refill = joins
            && checkpoint_no > 0
            && state.as_ref().is_some_and(
                |s| !matches!(s.get(LAYOUT), Ok(Some(v)) if v.as_slice() >= LAYOUT_VERSION),
            );
        if let Some(s) = &state {
            let mut wb = rocksdb::WriteBatch::default();
            wb.put(LAYOUT, LAYOUT_VERSION);
            s.write(wb)?;
        }
        let steps = join::Steps::default();
        let join_clock = Arc::new(join::Clock::default());
        let (body, read_plan, windowed) = match shape {
            Shape::Pipeline {
                plan,
                read,
                signed,
                top_n,
            } => {
                // Rows may leave a join's state where the view is not read
                // by running its query over the log: a top-N reads its
                // state, a view that only inserts its changelog.
                let inserts_only = !signed && !join::has_retracting_joins(&plan);
                let joins = join::delta_joins(
                    delta_scans(log, &plan, &ins)?,
                    state.as_ref(),
                    (&steps, &join_clock),
                    top_n.is_some() || inserts_only,
                )?;
                let delta = joins.plan;
                let read = match (&placement.output, &top_n, joins.expiring) {
                    (Some(Output::Changelog(info)), None, true) => {
                        changes::read_plan(log, info, read.schema())?
                    }
                    _ => read,
                };
                let top_n = match (top_n, &state) {
                    (Some(t), Some(store)) => Some(Arc::new(topn::TopN::new(
                        t,
                        store.clone(),
                        delta.schema().clone(),
                    )?)),
                    _ => None,
                };
                // A top-N view is read from its state: the ranked rows now,
                // not the query over its inputs' history.
                let read = match &top_n {
                    Some(t) => topn::read_plan(t, read.schema())?,
                    None => read,
                };
                (
                    Body::Pipeline {
                        delta,
                        signed,
                        top_n,
                    },
                    read,
                    false,
                )
            }
            Shape::Aggregate(a) => {
                let store = state.clone().expect("an aggregate has a state store");
                let aggregation =
                    Arc::new(aggregation(log, a, &ins, store, (&steps, &join_clock))?);
                let provider = Arc::new(StateTable {
                    aggregation: aggregation.clone(),
                });
                let read = read_plan(&aggregation.plan, &aggregation.agg, provider)?;
                let windowed = aggregation.windowed;
                (Body::Aggregate(aggregation), read, windowed)
            }
        };
        let run = Run::new(wm, placement.restore.as_ref())?;
        if let (Body::Aggregate(a), true, Some(w)) = (&body, windowed, run.watermark()) {
            // The restored state's windows up to its watermark were closed.
            a.state.set_closed_until(w);
        }
        let watermark = run.watermark().unwrap_or(i64::MIN);
        let late_rows = run.restored_late_rows();
        Ok(Arc::new(Dataflow {
            name: name.to_string(),
            dataflow: placement.dataflow,
            dir: placement.dir,
            checkpoint_interval: placement.checkpoint_interval,
            emit,
            changes_schema,
            output: placement.output,
            epoch: placement.epoch,
            checkpoint_no: AtomicU64::new(checkpoint_no),
            dirty: AtomicBool::new(false),
            origin: RwLock::new(match checkpoint_no {
                0 => "the log".to_string(),
                n => format!("checkpoint {n}"),
            }),
            inputs: Mutex::new(ins),
            state,
            steps,
            join_clock,
            refill: AtomicBool::new(refill),
            body,
            read_plan,
            status: RwLock::new(Status::Running),
            task: Mutex::new(None),
            stopping: AtomicBool::new(false),
            wake: Arc::new(tokio::sync::Notify::new()),
            run: tokio::sync::Mutex::new(run),
            late_rows: AtomicU64::new(late_rows),
            watermark: AtomicI64::new(watermark),
            caught_up: Mutex::new(None),
            stepped: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// What reading the output runs.
    pub fn read_plan(&self) -> &LogicalPlan {
        &self.read_plan
    }

    /// The changelog only ever inserts: windows emitted once on close, or
    /// a dataflow without aggregation over inserts only.
    pub fn inserts_only(&self) -> bool {
        matches!(self.body, Body::Pipeline { signed: false, .. }) || self.emit == Emit::OnClose
    }

    /// The changelog's schema: `op`, then the output columns.
    pub fn changes_schema(&self) -> SchemaRef {
        self.changes_schema.clone()
    }

    /// The stream holding the changelog, for stored views.
    pub fn changelog(&self) -> Option<&Arc<StreamInfo>> {
        match &self.output {
            Some(Output::Changelog(info)) => Some(info),
            _ => None,
        }
    }

    /// When changes are emitted.
    pub fn emit(&self) -> Emit {
        self.emit
    }

    /// Rows dropped as late.
    pub fn late_rows(&self) -> u64 {
        self.late_rows.load(Ordering::Relaxed)
    }

    /// The watermark (µs), once there is one.
    pub fn watermark(&self) -> Option<i64> {
        match self.watermark.load(Ordering::Relaxed) {
            i64::MIN => None,
            w => Some(w),
        }
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

    /// A dataflow rebuilt from the log although it had checkpoints: its
    /// next checkpoint numbers continue after `number`.
    pub fn rebuilt_after(&self, number: u64, why: &str) {
        self.checkpoint_no.store(number, Ordering::Release);
        *self.origin.write().unwrap_or_else(|p| p.into_inner()) =
            format!("the log (checkpoint {number} not restored: {why})");
    }

    /// Removes the local state directory (after DROP).
    pub fn remove_local_state(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Stops maintaining the output and waits for a step or checkpoint in
    /// progress to finish (nothing of it is written afterwards).
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        // A permit if the loop is not waiting yet: it wakes at once.
        self.wake.notify_one();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task
            && tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .is_err()
        {
            tracing::warn!(view = %self.name, "materialized view did not stop within 30 s");
        }
    }

    /// Stops at once (aborting a step in progress).
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    /// The streams read (a view's changelog as `changes(v)`).
    pub fn input_names(&self) -> Vec<String> {
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|i| {
                let name = i.info.name();
                match name.strip_prefix(changes::CHANGELOG_PREFIX) {
                    Some(dataflow) => {
                        let view = dataflow.rsplit_once('-').map_or(dataflow, |(v, _)| v);
                        format!("changes({view})")
                    }
                    None => name.to_string(),
                }
            })
            .collect()
    }

    /// Whether this dataflow reads the stream `stream`.
    pub fn reads(&self, stream: &str) -> bool {
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|i| i.info.name() == stream)
    }

    /// Why the dataflow stopped, if an error stopped it.
    pub fn failure(&self) -> Option<String> {
        match &*self.status.read().unwrap_or_else(|p| p.into_inner()) {
            Status::Failed(why) => Some(why.clone()),
            Status::Running => None,
        }
    }

    fn fail(&self, e: &StreamsError) {
        tracing::warn!(view = %self.name, error = %e, "materialized view stopped");
        *self.status.write().unwrap_or_else(|p| p.into_inner()) = Status::Failed(e.to_string());
        self.stepped.send_modify(|n| *n += 1);
    }

    /// Waits until the output reflects `stream` up to `ends` (its
    /// partitions' end offsets, as read before): what a read of a table
    /// waits for, so it sees every write acknowledged before it. Fails when
    /// the dataflow has failed or `limit` passes first.
    pub async fn reflect(&self, stream: &str, ends: &[u64], limit: Duration) -> Result<()> {
        let deadline = streamhouse_log::monotonic() + limit;
        let mut stepped = self.stepped.subscribe();
        loop {
            let behind = {
                let inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
                inputs
                    .iter()
                    .filter(|i| i.info.name() == stream)
                    .any(|i| i.consumed.iter().zip(ends).any(|(c, e)| c < e))
            };
            if !behind {
                return Ok(());
            }
            if let Status::Failed(why) = &*self.status.read().unwrap_or_else(|p| p.into_inner()) {
                return Err(StreamsError::Conflict(format!(
                    "\"{}\" stopped: {why}",
                    self.name
                )));
            }
            self.wake.notify_one();
            match tokio::time::timeout_at(deadline, stepped.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StreamsError::Cancelled),
                Err(_) => {
                    return Err(StreamsError::Conflict(format!(
                        "\"{}\" did not reach the end of \"{stream}\" within {limit:?}",
                        self.name
                    )));
                }
            }
        }
    }
}

/// Key of the state layout's version, and the version written now: 2 —
/// join sides are in the state.
const LAYOUT: &[u8] = b"~layout";
const LAYOUT_VERSION: &[u8] = b"2";

/// The dataflow's state store, restored from the placement's checkpoint
/// when it has one.
async fn open_state(log: &Arc<Log>, placement: &Placement) -> Result<StateStore> {
    let run_dir = run_dir(&placement.dir)?;
    match &placement.restore {
        Some(cp) if !cp.state_key.is_empty() => {
            StateStore::restore(log.store(), &cp.state_key, &run_dir, &placement.dataflow).await
        }
        _ => StateStore::open(&run_dir, &placement.dataflow),
    }
}

/// The aggregate's step plans and its state over `store`.
fn aggregation(
    log: &Arc<Log>,
    a: AggregateDescription,
    ins: &[Input],
    store: Arc<StateStore>,
    (steps, clock): (&join::Steps, &Arc<join::Clock>),
) -> Result<Aggregation> {
    let AggregateDescription {
        plan,
        agg,
        components,
        merges,
        finals,
        distinct,
        rows,
        sessions,
        windowing,
    } = a;
    // The aggregate is read from its state: its joins' rows may expire.
    let delta_input = join::delta_joins(
        delta_scans(log, agg.input.as_ref(), ins)?,
        Some(&store),
        (steps, clock),
        true,
    )?
    .plan;
    // Per value set: the step's distinct (group, x) pairs, with the sum
    // of their rows' signs over signed rows.
    let mut distinct_plans = Vec::new();
    let mut distinct_specs = Vec::new();
    for (component, arg, kind) in &distinct {
        let mut groups = agg.group_expr.clone();
        groups.push(arg.clone().alias("__distinct_value"));
        let weight: Vec<Expr> = match rows {
            Some(_) => vec![
                sum(Expr::Column(datafusion::common::Column::from_name(
                    changes::SIGN,
                )))
                .alias("__weight"),
            ],
            None => Vec::new(),
        };
        let plan = LogicalPlanBuilder::from(delta_input.clone())
            .aggregate(groups, weight)?
            .build()?;
        let value_type = plan
            .schema()
            .field(agg.group_expr.len())
            .data_type()
            .clone();
        distinct_specs.push(Distinct {
            component: *component,
            value_type,
            kind: *kind,
        });
        distinct_plans.push(plan);
    }
    let delta = LogicalPlanBuilder::from(delta_input)
        .aggregate(agg.group_expr.clone(), components)?
        .build()?;

    // The state: the aggregate's output, as columns c0…
    let schema: SchemaRef = Arc::new(Schema::new(
        agg.schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let groups = agg.group_expr.len();
    let component_types = delta.schema().fields()[groups..]
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let state = AggregateState::new(
        store,
        schema,
        groups,
        component_types,
        merges,
        finals,
        windowing,
    )?
    .with_distinct(distinct_specs)?;
    let state = match rows {
        Some(rows) => state.with_retraction(rows),
        None => state,
    };
    let state = match sessions {
        Some(spec) => state.with_sessions(spec)?,
        None => state,
    };
    Ok(Aggregation {
        delta,
        distinct: distinct_plans,
        state,
        windowed: windowing.is_some(),
        plan,
        agg,
    })
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

/// A fresh local directory for this run of a dataflow's state, under its
/// directory; earlier runs' directories (a cache of what the checkpoints
/// hold) are removed.
fn run_dir(dataflow_dir: &Path) -> Result<PathBuf> {
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
    std::fs::create_dir_all(&run)?;
    Ok(run)
}

/// Sets each input's consumed offsets from a checkpoint's record; returns
/// the checkpoint's number (0: none).
fn restore_progress(inputs: &mut [Input], cp: Option<&ViewCheckpoint>) -> Result<u64> {
    let Some(cp) = cp else { return Ok(0) };
    let record = CheckpointRecord::parse(&cp.input_offsets)?;
    for input in inputs.iter_mut() {
        let Some(offsets) = record.inputs.get(&input.info.id.to_string()) else {
            return Err(StreamsError::Conflict(format!(
                "stream \"{}\" was created again since the view's checkpoint",
                input.info.name()
            )));
        };
        if offsets.len() != input.consumed.len() {
            return Err(StreamsError::Conflict(format!(
                "stream \"{}\" has another partition count than at the view's checkpoint",
                input.info.name()
            )));
        }
        input.consumed = offsets.clone();
    }
    Ok(cp.number)
}

/// The watermarks of the input partitions, when every input has an
/// event-time column.
fn watermarks(inputs: &[Input], idle_timeout: Duration) -> Option<Watermarks> {
    let infos: Vec<Arc<StreamInfo>> = inputs.iter().map(|i| i.info.clone()).collect();
    let mut delays = Vec::new();
    let mut holding = Vec::new();
    for (i, delay) in inputs.iter().zip(description::watermark_delays(&infos)?) {
        let delay = delay.as_micros() as i64;
        if StreamKind::of(i.info.name()) == StreamKind::ViewChangelog {
            holding.extend(delays.len()..delays.len() + i.consumed.len());
        }
        delays.extend(std::iter::repeat_n(delay, i.consumed.len()));
    }
    let mut w = Watermarks::new(
        delays,
        idle_timeout,
        streamhouse_log::monotonic().into_std(),
    );
    // A view's changelog (its event time is a window's end, see the SQL
    // layer's `changelog_event_time`): quiet until the next window closes.
    for i in holding {
        w.hold(i);
    }
    Some(w)
}

/// The plan with its stream scans in delta mode (reading the ranges in
/// `inputs`).
fn delta_scans(log: &Arc<Log>, plan: &LogicalPlan, inputs: &[Input]) -> Result<LogicalPlan> {
    let by_id: HashMap<i64, Ranges> = inputs
        .iter()
        .map(|i| (i.info.id, i.ranges.clone()))
        .collect();
    Ok(plan
        .clone()
        .transform_up(|node| {
            if let LogicalPlan::TableScan(scan) = &node
                && let Some(info) = stream_of(scan)
                && let Some(ranges) = by_id.get(&info.id)
            {
                let table = StreamTable::delta(log.clone(), info.clone(), ranges.clone());
                let mut scan = scan.clone();
                scan.source = provider_as_source(Arc::new(table));
                return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
            }
            Ok(Transformed::no(node))
        })?
        .data)
}
