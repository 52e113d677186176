//! Materialized views: queries over streams maintained incrementally.
//!
//! A view's query is planned by DataFusion and split at its one
//! `Aggregate`:
//!
//! - **below** it, a stateless pipeline (projection, filter, scalar
//!   functions, `TUMBLE`/`HOP` window columns, `UNION ALL`) over streams;
//!   a `SESSION` window's functions find the sessions among a step's rows,
//!   which the state merges with the stored sessions they overlap.
//!   Each step runs that pipeline and a *partial* aggregate over only the
//!   rows that arrived since the last step (the streams are scanned in delta
//!   mode, by offset ranges), never over the whole input again;
//! - the **state**: per group, mergeable components of each aggregate
//!   (`count` and `sum` add, `min`/`max` compare, `avg` is a sum and a
//!   count, any other function keeps its partial state, see `partial`),
//!   merged with each step's partial results (RocksDB, see
//!   `streamhouse_streams::AggregateState`);
//! - **above** it (`HAVING`, expressions over aggregates, renames, ORDER
//!   BY), evaluated when the view is read, over the state.
//!
//! Inner equi-joins may appear below the aggregate (or make up a view
//! without one): each keeps the rows of both sides it has seen, indexed by
//! key, and a step joins only the new rows (`join`); over views with
//! updates, a pair's sign is the product of its rows' signs.
//!
//! A view without an aggregate is a stateless pipeline over the log: the log
//! is its storage, and reading it runs the pipeline. Anything else (outer
//! joins, window functions, nested aggregates, `DISTINCT` aggregates other than
//! `count(DISTINCT x)`, `LIMIT`) is refused at CREATE with 0A000 naming
//! the part.
//!
//! A view over another view reads that view's changelog; when it has
//! updates, input rows carry a sign (deletes retract) up to the aggregate,
//! which weights counts and sums by it and drops groups left empty.
//!
//! Every view also has a changelog (see [`changes`] and `run`): what each
//! step changed, as `delete`/`insert` rows, written to a hidden stream with
//! the step's progress in the same metadata transaction — the basis of
//! exactly-once output across crashes — or, for a push query, sent to its
//! client.

pub mod changes;
mod join;
mod partial;
mod run;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::{
    TableProvider, TableType, ViewTable, provider_as_source, source_as_provider,
};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{
    Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, Projection, SubqueryAlias, TableScan, cast,
    lit, when,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use streamhouse_log::{Log, StreamInfo, ViewCheckpoint};
use streamhouse_streams::{
    AggregateState, Distinct, Final, Merge, Sessions, StateStore, Watermarks, Windowing,
};
use tokio::task::JoinHandle;

use crate::dialect::{Emit, ViewOptions};
use crate::window::SessionTable;
use run::Run;

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
    /// Per `count(DISTINCT …)`, the plan of the step's distinct pairs.
    distinct: Vec<LogicalPlan>,
    state: AggregateState,
    /// Grouped by a window (has a `window_end` group column).
    windowed: bool,
    /// The view's query and its aggregate: state rows become view rows by
    /// running the query with the aggregate replaced by those rows.
    plan: LogicalPlan,
    agg: Aggregate,
}

/// What a step runs.
enum Body {
    /// A view without aggregate: the query with its scans in delta mode.
    Pipeline {
        delta: LogicalPlan,
        /// Its rows end with a [`SIGN`] (it reads a view with updates).
        signed: bool,
    },
    Aggregate(Arc<Aggregation>),
}

/// Where a view's changes go.
pub enum Output {
    /// The view's changelog stream (stored views).
    Changelog(Arc<StreamInfo>),
    /// A push query's client; a closed channel ends the query.
    Channel(tokio::sync::mpsc::Sender<arrow::array::RecordBatch>),
}

/// Where a view's state lives, and what to restore it from.
pub struct Placement {
    /// Local directory of its state store.
    pub dir: PathBuf,
    /// This incarnation's id (names its state objects).
    pub dataflow: String,
    /// The checkpoint to resume from; none: start from the beginning.
    pub restore: Option<ViewCheckpoint>,
    /// How often the state is checkpointed while it changes.
    pub checkpoint_interval: Duration,
    /// Idle timeout of input partitions when the view sets none.
    pub idle_timeout: Duration,
    /// Where changes go; none: nowhere (the view is only read).
    pub output: Option<Output>,
    /// The epoch of this agent's lease on the view: its checkpoints and
    /// changelog appends carry it, and are refused once it is superseded.
    pub epoch: u64,
}

/// One materialized view.
pub struct MatView {
    pub name: String,
    /// The query, as stored.
    pub definition: String,
    pub options: ViewOptions,
    pub dataflow: String,
    dir: PathBuf,
    checkpoint_interval: Duration,
    /// When changes are emitted.
    emit: Emit,
    /// `op`, then the view's columns.
    changes_schema: SchemaRef,
    output: Option<Output>,
    /// Number of the last checkpoint recorded.
    checkpoint_no: AtomicU64,
    /// The lease epoch this incarnation runs under (see [`Placement`]).
    pub(crate) epoch: u64,
    /// State changed since the last checkpoint.
    dirty: AtomicBool,
    /// Where its state came from when this process started it.
    origin: RwLock<String>,
    inputs: Mutex<Vec<Input>>,
    body: Body,
    /// What reading the view runs.
    read_plan: LogicalPlan,
    status: RwLock<Status>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Asks the background loop to end after its current step.
    stopping: AtomicBool,
    wake: Arc<tokio::sync::Notify>,
    /// Step state (watermarks, steps since the checkpoint, output
    /// sequence); held for a whole step or checkpoint.
    run: tokio::sync::Mutex<Run>,
    /// Rows dropped because their window had closed.
    late_rows: AtomicU64,
    /// The watermark, µs (`i64::MIN`: none yet).
    watermark: AtomicI64,
    /// When the view last reflected every row committed to its inputs.
    caught_up: Mutex<Option<std::time::Instant>>,
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
         TUMBLE/HOP/SESSION windows, UNION ALL of streams and views, inner equi-joins, one \
         GROUP BY with aggregate functions, HAVING and ORDER BY)"
    ))
}

/// A materialized view as a table.
struct MatViewTable {
    name: String,
    inner: ViewTable,
    /// The changelog (another view reads it instead of the view).
    changelog: Option<Arc<StreamInfo>>,
    /// The changelog only inserts.
    inserts_only: bool,
}

impl fmt::Debug for MatViewTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MatViewTable({})", self.name)
    }
}

#[async_trait]
impl TableProvider for MatViewTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }
}

/// Name of the column that carries each input row's weight through the
/// pipeline of a view over a view with updates: 1 for an insert, -1 for a
/// delete.
const SIGN: &str = "__sign";

fn mat_view_of(scan: &TableScan) -> Option<Arc<dyn TableProvider>> {
    let provider = source_as_provider(&scan.source).ok()?;
    provider.downcast_ref::<MatViewTable>()?;
    Some(provider)
}

/// Replaces scans of materialized views with scans of their changelogs, so
/// a view over a view is a view over a stream. When one of them has
/// updates, every input row gets a [`SIGN`] (deletes retract) that the
/// pipeline carries up to the aggregate, or to the output of a view
/// without one; the second value says so.
fn views_as_changelogs(log: &Arc<Log>, plan: LogicalPlan) -> Result<(LogicalPlan, bool)> {
    let mut signed = false;
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(p) = mat_view_of(scan)
            && p.downcast_ref::<MatViewTable>()
                .is_some_and(|v| !v.inserts_only)
        {
            signed = true;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let mut refused: Option<SqlError> = None;
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let columns = |q: &TableReference| -> Vec<Expr> {
                scan.projected_schema
                    .fields()
                    .iter()
                    .map(|f| Expr::Column(Column::new(Some(q.clone()), f.name())))
                    .collect()
            };
            let q = scan.table_name.clone();
            let (input, sign) = if let Some(provider) = mat_view_of(scan) {
                let view = provider
                    .downcast_ref::<MatViewTable>()
                    .expect("a materialized view");
                let Some(info) = &view.changelog else {
                    refused = Some(unsupported(format!(
                        "reading the view \"{}\", which has no changelog",
                        view.name
                    )));
                    return Ok(Transformed::no(node));
                };
                let table = StreamTable::new(log.clone(), info.clone());
                let input =
                    LogicalPlanBuilder::scan(q.clone(), provider_as_source(Arc::new(table)), None)?
                        .build()?;
                let sign = if view.inserts_only {
                    lit(1i64)
                } else {
                    when(
                        Expr::Column(Column::new(Some(q.clone()), changes::OP))
                            .eq(lit(changes::DELETE)),
                        lit(-1i64),
                    )
                    .otherwise(lit(1i64))?
                };
                (input, sign)
            } else if signed && stream_of(scan).is_some() {
                (node.clone(), lit(1i64))
            } else {
                return Ok(Transformed::no(node));
            };
            let mut exprs = columns(&q);
            if signed {
                exprs.push(sign.alias(SIGN));
            }
            let replaced = LogicalPlanBuilder::from(input).project(exprs)?.build()?;
            Ok(Transformed::yes(replaced))
        })?
        .data;
    if let Some(e) = refused {
        return Err(e);
    }
    let plan = if signed { carry_sign(plan)? } else { plan };
    Ok((recompute_schemas(plan)?, signed))
}

/// Adds the [`SIGN`] column to every projection whose input has it (up to
/// the aggregate, which consumes it). A join's rows get the product of its
/// sides' signs (a pair made with a deleted row is taken back).
fn carry_sign(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut joins = 0;
    Ok(plan
        .transform_up(|node| {
            // The children gained the sign: this node's schema follows.
            let node = node.recompute_schema()?;
            if let LogicalPlan::Join(_) = &node {
                let join = node;
                let schema = join.schema().clone();
                let signs: Vec<Expr> = schema
                    .iter()
                    .filter(|(_, f)| f.name() == SIGN)
                    .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
                    .collect();
                let [left, right] = signs.as_slice() else {
                    return Ok(Transformed::yes(join));
                };
                let mut exprs: Vec<Expr> = schema
                    .iter()
                    .filter(|(_, f)| f.name() != SIGN)
                    .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
                    .collect();
                // Qualified, so a join above can tell it from its other
                // side's sign.
                joins += 1;
                exprs.push(
                    (left.clone() * right.clone())
                        .alias_qualified(Some(format!("__signed{joins}")), SIGN),
                );
                return Ok(Transformed::yes(
                    LogicalPlanBuilder::from(join).project(exprs)?.build()?,
                ));
            }
            let LogicalPlan::Projection(p) = &node else {
                return Ok(Transformed::no(node));
            };
            let input = p.input.schema();
            let Some(i) = input.fields().iter().position(|f| f.name() == SIGN) else {
                return Ok(Transformed::no(node));
            };
            if p.schema.fields().iter().any(|f| f.name() == SIGN) {
                return Ok(Transformed::no(node));
            }
            let (q, f) = input.qualified_field(i);
            let mut exprs = p.expr.clone();
            exprs.push(Expr::Column(Column::new(q.cloned(), f.name())));
            Ok(Transformed::yes(LogicalPlan::Projection(
                Projection::try_new(exprs, p.input.clone())?,
            )))
        })?
        .data)
}

/// Replaces scans of `ViewTable`s (the window table functions) with their
/// plans, so that the streams under them are visible. The key columns of
/// each `SESSION` window inlined are added to `sessions`.
fn inline_views(plan: LogicalPlan, sessions: &mut Vec<Vec<String>>) -> Result<LogicalPlan> {
    let mut found = Vec::new();
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let Ok(provider) = source_as_provider(&scan.source) else {
                return Ok(Transformed::no(node));
            };
            let view = if let Some(s) = provider.downcast_ref::<SessionTable>() {
                found.push(s.keys.clone());
                &s.view
            } else if let Some(v) = provider.downcast_ref::<ViewTable>() {
                v
            } else {
                return Ok(Transformed::no(node));
            };
            let inner = inline_views(view.logical_plan().clone(), &mut found)
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            let aliased = SubqueryAlias::try_new(Arc::new(inner), scan.table_name.clone())?;
            Ok(Transformed::yes(LogicalPlan::SubqueryAlias(aliased)))
        })?
        .data;
    sessions.extend(found);
    Ok(plan)
}

/// The window functions a `SESSION` window is computed with (over each
/// step's rows, they find the step's own sessions).
fn is_session_window(w: &datafusion::logical_expr::Window) -> bool {
    w.window_expr.iter().all(|e| {
        matches!(e, Expr::Alias(a) if a.name.starts_with("_session") || a.name == "window_start")
    })
}

/// Checks that a plan below the aggregate is a stateless pipeline over
/// streams, and returns the streams it scans.
fn check_pipeline(plan: &LogicalPlan, sessions: bool) -> Result<Vec<Arc<StreamInfo>>> {
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
            LogicalPlan::Join(j) => {
                if let Err(e) = join::check(j) {
                    bad = Some(e);
                }
            }
            LogicalPlan::Window(w) if sessions && is_session_window(w) => {}
            LogicalPlan::Window(_) => bad = Some(unsupported("a window function")),
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
#[derive(Default)]
struct Decomposed {
    components: Vec<Expr>,
    merges: Vec<Merge>,
    finals: Vec<Final>,
    /// The `count(DISTINCT …)` among them: (component, argument).
    distinct: Vec<(usize, Expr)>,
    /// Over rows with a [`SIGN`]: the component counting a group's rows.
    rows: Option<usize>,
}

/// `signed`: the input rows carry a [`SIGN`] (deletes retract); only
/// aggregates that can subtract are possible then.
fn decompose(aggr: &[Expr], input: &DFSchema, signed: bool) -> Result<Decomposed> {
    let mut d = Decomposed::default();
    for e in aggr {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(function) = inner else {
            return Err(unsupported(format!("the aggregate {e}")));
        };
        let AggregateFunction { func, params } = function;
        let name = func.name().to_lowercase();
        if !params.order_by.is_empty() {
            return Err(unsupported(format!("{} with ORDER BY", func.name())));
        }
        // A FILTER applies to each step's rows, so the components of
        // count, sum, min, max and avg carry it as they are.
        let filterable = matches!(
            name.as_str(),
            "count" | "sum" | "min" | "max" | "avg" | "mean"
        );
        if params.filter.is_some() && (signed || params.distinct || !filterable) {
            return Err(unsupported(format!(
                "{} with FILTER (supported on count, sum, min, max and avg over streams)",
                func.name()
            )));
        }
        if signed {
            d.retracting(&name, params)?;
            continue;
        }
        let Decomposed {
            components,
            merges,
            finals,
            distinct,
            ..
        } = &mut d;
        if params.distinct {
            if name != "count" || params.args.len() != 1 {
                return Err(unsupported(format!(
                    "{}(DISTINCT …) (count(DISTINCT x) of one column is supported)",
                    func.name()
                )));
            }
            // The step counts values new to the group (kept in the state);
            // the aggregate only holds the place (always 0).
            finals.push(Final::Same {
                component: components.len(),
                is_count: true,
            });
            distinct.push((components.len(), params.args[0].clone()));
            merges.push(Merge::Sum);
            components.push(count(Expr::Literal(
                datafusion::common::ScalarValue::Int64(None),
                None,
            )));
            continue;
        }
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
                let filtered = |e: Expr| match e {
                    Expr::AggregateFunction(mut f) => {
                        f.params.filter = params.filter.clone();
                        Expr::AggregateFunction(f)
                    }
                    other => other,
                };
                components.push(filtered(sum(cast(arg.clone(), DataType::Float64))));
                components.push(filtered(count(arg)));
                merges.extend([Merge::Sum, Merge::Sum]);
            }
            _ => {
                // Any other function keeps its own partial state.
                let (state, merger) = partial::partial_state(function, input)?;
                finals.push(Final::Partial {
                    component: components.len(),
                    state: merger.clone(),
                });
                merges.push(Merge::Partial(merger));
                components.push(state);
            }
        }
    }
    if signed {
        d.rows = Some(d.components.len());
        d.components
            .push(sum(Expr::Column(Column::from_name(SIGN))));
        d.merges.push(Merge::Sum);
    }
    // Name the components so the delta plan's schema is unambiguous.
    d.components = std::mem::take(&mut d.components)
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.alias(format!("__component{i}")))
        .collect();
    Ok(d)
}

impl Decomposed {
    /// An aggregate over rows with a [`SIGN`]: counts and sums weighted by
    /// it, so that a delete takes back what its insert added.
    fn retracting(&mut self, name: &str, params: &AggregateFunctionParams) -> Result<()> {
        let sign = Expr::Column(Column::from_name(SIGN));
        let refuse = || {
            unsupported(format!(
                "{name}{} over a view whose changelog has updates (count, sum and avg \
                 can take back deleted rows)",
                if params.distinct {
                    "(DISTINCT …)"
                } else {
                    "()"
                }
            ))
        };
        if params.distinct || params.args.len() > 1 {
            return Err(refuse());
        }
        // How many non-NULL values (rows, for count(*)).
        let counted = match params.args.first() {
            Some(arg) => when(arg.clone().is_null(), lit(0i64)).otherwise(sign.clone())?,
            None => sign.clone(),
        };
        let at = self.components.len();
        match name {
            "count" => {
                self.finals.push(Final::Same {
                    component: at,
                    is_count: true,
                });
                self.components.push(sum(counted));
                self.merges.push(Merge::Sum);
            }
            "sum" | "avg" | "mean" => {
                let arg = params.args[0].clone();
                let (value, last) = if name == "sum" {
                    (
                        arg,
                        Final::SumIfAny {
                            sum: at,
                            count: at + 1,
                        },
                    )
                } else {
                    (
                        cast(arg, DataType::Float64),
                        Final::Avg {
                            sum: at,
                            count: at + 1,
                        },
                    )
                };
                self.finals.push(last);
                self.components.push(sum(value * sign));
                self.components.push(sum(counted));
                self.merges.extend([Merge::Sum, Merge::Sum]);
            }
            _ => return Err(refuse()),
        }
        Ok(())
    }
}

/// For an aggregate over a `SESSION` window: which group columns are the
/// session's keys, start and end. The groups must be exactly those (a
/// session is one group).
fn session_groups(agg: &Aggregate, sessions: &[Vec<String>]) -> Result<Option<Sessions>> {
    let keys = match sessions {
        [] => return Ok(None),
        [keys] => keys,
        _ => return Err(unsupported("more than one SESSION window")),
    };
    let position = |name: &str| {
        agg.group_expr
            .iter()
            .position(|g| matches!(g, Expr::Column(c) if c.name == name))
    };
    let refuse = || {
        unsupported(format!(
            "this GROUP BY over a SESSION window (group by exactly {}window_start and \
             window_end)",
            match keys.as_slice() {
                [] => String::new(),
                _ => format!("its key columns {}, ", keys.join(", ")),
            }
        ))
    };
    let (Some(start_column), Some(end_column)) = (position("window_start"), position("window_end"))
    else {
        return Err(refuse());
    };
    let keys = keys
        .iter()
        .map(|k| position(k).ok_or_else(refuse))
        .collect::<Result<Vec<_>>>()?;
    if agg.group_expr.len() != keys.len() + 2 {
        return Err(refuse());
    }
    Ok(Some(Sessions {
        keys,
        start_column,
        end_column,
    }))
}

/// The column of an aggregate's group key that is a window's end.
fn window_end_column(agg: &Aggregate) -> Option<usize> {
    agg.group_expr
        .iter()
        .position(|g| matches!(g, Expr::Column(c) if c.name == "window_end"))
}

/// The watermarks of a view's input partitions, when every input has an
/// event-time column.
fn watermarks(inputs: &[Input], idle_timeout: Duration) -> Option<Watermarks> {
    let mut delays = Vec::new();
    for i in inputs {
        let et = i.info.spec.event_time.as_ref()?;
        let delay = et.watermark_delay.as_micros() as i64;
        delays.extend(std::iter::repeat_n(delay, i.consumed.len()));
    }
    Some(Watermarks::new(
        delays,
        idle_timeout,
        streamhouse_log::monotonic().into_std(),
    ))
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
            {
                let table = StreamTable::delta(log.clone(), info.clone(), by_id[&info.id].clone());
                let mut scan = scan.clone();
                scan.source = provider_as_source(Arc::new(table));
                return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
            }
            Ok(Transformed::no(node))
        })?
        .data)
}

impl MatView {
    /// Compiles a planned view query. Fails with 0A000 on shapes a view
    /// cannot maintain.
    pub async fn compile(
        log: &Arc<Log>,
        name: &str,
        definition: String,
        options: ViewOptions,
        plan: LogicalPlan,
        placement: Placement,
    ) -> Result<Arc<MatView>> {
        // The query as planned is what a view without aggregate over a
        // view with updates reads; its steps read the changelogs.
        let mut sessions = Vec::new();
        let original = inline_views(plan, &mut sessions)?;
        let (plan, signed) = views_as_changelogs(log, original.clone())?;
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
        let idle_timeout = options.idle_timeout.unwrap_or(placement.idle_timeout);
        let changes_schema = changes::changes_schema(original.schema().as_arrow())?;
        let Some(agg) = aggregates.pop() else {
            // Stateless: the view reads the pipeline over the log; steps
            // run it over new rows for the changelog.
            if !sessions.is_empty() {
                return Err(unsupported("a SESSION window without a GROUP BY over it"));
            }
            let streams = check_pipeline(&plan, false)?;
            if options.emit == Some(Emit::OnClose) {
                return Err(unsupported("emit = 'on_close' without a windowed GROUP BY"));
            }
            let mut ins = inputs(&streams);
            let checkpoint_no = restore_progress(&mut ins, placement.restore.as_ref())?;
            let (delta, _) = join::delta_joins(delta_scans(log, &plan, &ins)?)?;
            let run = Run::new(watermarks(&ins, idle_timeout), placement.restore.as_ref())?;
            let read = if signed { original } else { plan };
            return Ok(Arc::new(MatView::assemble(
                name,
                definition,
                options,
                placement,
                Emit::OnUpdate,
                changes_schema,
                checkpoint_no,
                ins,
                Body::Pipeline { delta, signed },
                read,
                run,
            )));
        };
        let mut limited = false;
        plan.apply(|n| {
            limited |= matches!(n, LogicalPlan::Limit(_));
            Ok(TreeNodeRecursion::Continue)
        })?;
        if limited {
            return Err(unsupported("LIMIT (top-N)"));
        }
        let session_spec = session_groups(&agg, &sessions)?;
        let streams = check_pipeline(&agg.input, session_spec.is_some())?;
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
        let Decomposed {
            mut components,
            mut merges,
            finals,
            distinct,
            rows,
        } = decompose(&agg.aggr_expr, agg.input.schema(), signed)?;
        if session_spec.is_some() && !distinct.is_empty() {
            return Err(unsupported("count(DISTINCT …) over SESSION windows"));
        }
        let wm = watermarks(&ins, idle_timeout);
        let end_column = window_end_column(&agg);
        let windowing = match end_column {
            Some(end_column) if wm.is_some() => {
                // A hidden row count per group counts late rows.
                let rows_component = components.len();
                components.push(
                    count(datafusion::logical_expr::lit(1i64))
                        .alias(format!("__component{rows_component}")),
                );
                merges.push(Merge::Sum);
                Some(Windowing {
                    end_column,
                    rows_component,
                })
            }
            _ => None,
        };
        let emit = match (options.emit, windowing) {
            (Some(Emit::OnClose), None) => {
                return Err(unsupported(
                    "emit = 'on_close' without a TUMBLE/HOP/SESSION window over streams with \
                     WATERMARK FOR",
                ));
            }
            (Some(e), _) => e,
            (None, Some(_)) => Emit::OnClose,
            (None, None) => Emit::OnUpdate,
        };

        // The delta plan: the same pipeline, its stream scans in delta mode.
        let (delta_input, joins) = join::delta_joins(delta_scans(log, agg.input.as_ref(), &ins)?)?;
        if joins > 0 && (!distinct.is_empty() || session_spec.is_some()) {
            return Err(unsupported(
                "count(DISTINCT …) or a SESSION window over a join",
            ));
        }
        // Per count(DISTINCT x): the step's distinct (group, x) pairs.
        let mut distinct_plans = Vec::new();
        let mut distinct_specs = Vec::new();
        for (component, arg) in &distinct {
            let mut groups = agg.group_expr.clone();
            groups.push(arg.clone().alias("__distinct_value"));
            let plan = LogicalPlanBuilder::from(delta_input.clone())
                .aggregate(groups, Vec::<Expr>::new())?
                .build()?;
            let value_type = plan
                .schema()
                .field(agg.group_expr.len())
                .data_type()
                .clone();
            distinct_specs.push(Distinct {
                component: *component,
                value_type,
            });
            distinct_plans.push(plan);
        }
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
        let checkpoint_no = restore_progress(&mut ins, placement.restore.as_ref())?;
        let run_dir = run_dir(&placement.dir)?;
        let store = match &placement.restore {
            Some(cp) if !cp.state_key.is_empty() => {
                StateStore::restore(log.store(), &cp.state_key, &run_dir, &placement.dataflow)
                    .await?
            }
            _ => StateStore::open(&run_dir, &placement.dataflow)?,
        };
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
        let state = match session_spec {
            Some(spec) => state.with_sessions(spec)?,
            None => state,
        };
        let aggregation = Arc::new(Aggregation {
            delta,
            distinct: distinct_plans,
            state,
            windowed: windowing.is_some(),
            plan: plan.clone(),
            agg: agg.clone(),
        });
        let provider = Arc::new(StateTable {
            aggregation: aggregation.clone(),
        });
        let read_plan = read_plan(&plan, &agg, provider)?;
        let run = Run::new(wm, placement.restore.as_ref())?;
        if windowing.is_some()
            && let Some(w) = run.watermark()
        {
            // The restored state's windows up to its watermark were closed.
            aggregation.state.set_closed_until(w);
        }
        Ok(Arc::new(MatView::assemble(
            name,
            definition,
            options,
            placement,
            emit,
            changes_schema,
            checkpoint_no,
            ins,
            Body::Aggregate(aggregation),
            read_plan,
            run,
        )))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        name: &str,
        definition: String,
        options: ViewOptions,
        placement: Placement,
        emit: Emit,
        changes_schema: SchemaRef,
        checkpoint_no: u64,
        inputs: Vec<Input>,
        body: Body,
        read_plan: LogicalPlan,
        run: Run,
    ) -> MatView {
        let watermark = run.watermark().unwrap_or(i64::MIN);
        let late_rows = run.restored_late_rows();
        MatView {
            name: name.to_string(),
            definition,
            options,
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
            inputs: Mutex::new(inputs),
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
        }
    }

    /// What `SELECT … FROM view` reads (and what another view reading
    /// this one reads instead: its changelog, when that only inserts).
    pub fn table(&self) -> Arc<dyn TableProvider> {
        Arc::new(MatViewTable {
            name: self.name.clone(),
            inner: ViewTable::new(self.read_plan.clone(), Some(self.definition.clone())),
            changelog: self.changelog().cloned(),
            inserts_only: self.inserts_only(),
        })
    }

    /// What `SELECT … FROM view` reads on an agent that does not run the
    /// view: `contents` (its changelog folded into rows); another view
    /// reading it reads the changelog, as from a view running here.
    pub fn remote_table(
        name: &str,
        definition: &str,
        contents: LogicalPlan,
        changelog: Arc<StreamInfo>,
        inserts_only: bool,
    ) -> Arc<dyn TableProvider> {
        Arc::new(MatViewTable {
            name: name.to_string(),
            inner: ViewTable::new(contents, Some(definition.to_string())),
            changelog: Some(changelog),
            inserts_only,
        })
    }

    /// The changelog only ever inserts: windows emitted once on close, or
    /// a view without aggregation.
    pub fn inserts_only(&self) -> bool {
        matches!(self.body, Body::Pipeline { signed: false, .. }) || self.emit == Emit::OnClose
    }

    /// The changelog's schema: `op`, then the view's columns.
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

    /// Stops maintaining the view and waits for a step or checkpoint in
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

    /// Stops maintaining the view at once (aborting a step in progress).
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    /// The streams this view reads (a view's changelog as `changes(v)`).
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

    /// Whether this view reads the changelog stream `stream`.
    pub fn reads(&self, stream: &str) -> bool {
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|i| i.info.name() == stream)
    }

    fn fail(&self, e: &SqlError) {
        tracing::warn!(view = %self.name, error = %e, "materialized view stopped");
        *self.status.write().unwrap_or_else(|p| p.into_inner()) = Status::Failed(e.to_string());
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
fn recompute_schemas(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    Ok(plan
        .transform_up(|node| Ok(Transformed::yes(node.recompute_schema()?)))?
        .data)
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

/// Sets each input's consumed offsets from a checkpoint's record; returns
/// the checkpoint's number (0: none).
fn restore_progress(inputs: &mut [Input], cp: Option<&ViewCheckpoint>) -> Result<u64> {
    let Some(cp) = cp else { return Ok(0) };
    let record = run::CheckpointRecord::parse(&cp.input_offsets)?;
    for input in inputs.iter_mut() {
        let Some(offsets) = record.inputs.get(&input.info.id.to_string()) else {
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
    Ok(cp.number)
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
