//! Incremental equi-joins — inner, outer, semi and anti (a symmetric hash
//! join).
//!
//! In a view's delta plan each `Join` becomes a scan of a [`DeltaJoin`]:
//! planning a step's scan runs the join's two sides over the step's rows
//! (ΔL, ΔR), and the step's joined rows are
//! `ΔL ⋈ (R ∪ ΔR)  ∪  L ⋈ ΔR`, where `L` and `R` are every row the sides
//! produced in earlier steps, kept in the dataflow's state store indexed by
//! join key ([`side`]). A residual (non-equality) join condition decides
//! which pairs match. Rows whose key has a NULL never match. Outer, semi
//! and anti joins also output a side's rows by whether they have matches
//! ([`step`]).
//!
//! Over a view with updates the sides' rows carry a sign (a delete is a
//! row with sign −1): the stored rows are a multiset with signed counts,
//! the join stays bilinear, and the plan above multiplies the two signs of
//! each pair — a pair made with a deleted row is taken back.
//!
//! The state is checkpointed with the rest of the dataflow's; a step's
//! joined rows are computed once per step, however many plans of the step
//! scan the join (an aggregate's `count(DISTINCT …)` plans do).
//!
//! Rows that can no longer match leave the state as the watermark passes
//! the time bounds of the join's condition (interval and window joins over
//! streams with event times, see [`bounds`]); each step evicts at the
//! watermark it starts from, before it reads its rows.

mod bounds;
mod side;
mod step;

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchemaRef, JoinType, NullEquality};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Join, LogicalPlan, LogicalPlanBuilder, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;

use super::changes::SIGN;
use crate::error::Result;
use crate::state::StateStore;
use side::SideState;
use step::{Kind, Track};

/// Counts a dataflow's steps: a join computes its rows once per step.
pub(super) type Steps = Arc<AtomicU64>;

/// The watermark a dataflow's step starts from, as its joins see it, and
/// the rows they dropped as late.
#[derive(Debug)]
pub(super) struct Clock {
    /// µs; `i64::MIN`: none.
    watermark: AtomicI64,
    late: AtomicU64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            watermark: AtomicI64::new(i64::MIN),
            late: AtomicU64::new(0),
        }
    }
}

impl Clock {
    /// The watermark the next step starts from.
    pub fn set(&self, watermark: Option<i64>) {
        self.watermark
            .store(watermark.unwrap_or(i64::MIN), Ordering::Release);
    }

    fn get(&self) -> Option<i64> {
        Some(self.watermark.load(Ordering::Acquire)).filter(|&w| w != i64::MIN)
    }

    /// The rows dropped as late since the last call.
    pub fn take_late(&self) -> u64 {
        self.late.swap(0, Ordering::AcqRel)
    }
}

/// A timestamp array's values in µs.
fn micros(a: &ArrayRef) -> DfResult<arrow::array::Int64Array> {
    let us = match a.data_type() {
        DataType::Timestamp(_, tz) => {
            cast(a, &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))?
        }
        other => {
            return Err(DataFusionError::Internal(format!(
                "a join's time bound is {other}, not a timestamp"
            )));
        }
    };
    Ok(cast(&us, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// What a join of `join_type` outputs, if a dataflow maintains it.
fn kind(join_type: JoinType) -> Option<Kind> {
    let (pairs, left, right) = match join_type {
        JoinType::Inner => (true, None, None),
        JoinType::Left => (true, Some(Track::Unmatched), None),
        JoinType::Right => (true, None, Some(Track::Unmatched)),
        JoinType::Full => (true, Some(Track::Unmatched), Some(Track::Unmatched)),
        JoinType::LeftSemi => (false, Some(Track::Matched), None),
        JoinType::LeftAnti => (false, Some(Track::Unmatched), None),
        JoinType::RightSemi => (false, None, Some(Track::Matched)),
        JoinType::RightAnti => (false, None, Some(Track::Unmatched)),
        JoinType::LeftMark | JoinType::RightMark => return None,
    };
    Some(Kind { pairs, left, right })
}

/// Whether a join's output has deletes even over inputs that only insert
/// (an outer, semi or anti join: a row's first or last match changes what
/// it outputs).
pub fn retracts(j: &Join) -> bool {
    j.join_type != JoinType::Inner
}

/// What makes a join one a dataflow cannot maintain incrementally, if
/// anything: inner, outer (LEFT, RIGHT, FULL), semi and anti joins with at
/// least one equality between a column expression of each side are.
pub fn unsupported_join(j: &Join) -> Option<String> {
    if kind(j.join_type).is_none() {
        return Some(format!("a {} join", j.join_type));
    }
    if j.null_aware {
        return Some("NOT IN over a subquery (write NOT EXISTS)".into());
    }
    if j.null_equality == NullEquality::NullEqualsNull {
        return Some("a join on IS NOT DISTINCT FROM".into());
    }
    let (on, _) = equalities(j);
    if on.is_empty() {
        return Some("a join without an equality between its two sides (a cross join)".into());
    }
    None
}

/// The join's equality pairs (left, right) — its `on` and those in its
/// condition — and the rest of its condition.
fn equalities(j: &Join) -> (Vec<(Expr, Expr)>, Option<Expr>) {
    let mut on = j.on.clone();
    let mut rest = Vec::new();
    let side = |e: &Expr, schema: &DFSchemaRef| {
        let cols = e.column_refs();
        !cols.is_empty() && cols.iter().all(|c| schema.has_column(c))
    };
    if let Some(f) = &j.filter {
        for e in split_conjunction(f) {
            if let Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) = e
            {
                if side(left, j.left.schema()) && side(right, j.right.schema()) {
                    on.push((left.as_ref().clone(), right.as_ref().clone()));
                    continue;
                }
                if side(right, j.left.schema()) && side(left, j.right.schema()) {
                    on.push((right.as_ref().clone(), left.as_ref().clone()));
                    continue;
                }
            }
            rest.push(e.clone());
        }
    }
    (on, conjunction(rest))
}

/// What [`delta_joins`] made.
pub(super) struct DeltaJoins {
    pub plan: LogicalPlan,
    /// Some join drops late rows (its rows expire by the watermark).
    pub expiring: bool,
}

/// Replaces every join of a delta plan (whose scans are in delta mode) by
/// a scan of its incremental state in `store`; `expire`: rows may leave
/// the state by the watermark (the view is not read by running its query
/// over the log, which would still see them).
pub(super) fn delta_joins(
    plan: LogicalPlan,
    store: Option<&Arc<StateStore>>,
    (steps, clock): (&Steps, &Arc<Clock>),
    expire: bool,
) -> Result<DeltaJoins> {
    let mut joins = 0u16;
    let mut expiring = false;
    let plan = match expire {
        true => bounds::conditions_into_joins(plan)?,
        false => plan,
    };
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::Join(j) = &node else {
                return Ok(Transformed::no(node));
            };
            let Some(store) = store else {
                return Err(DataFusionError::Internal(
                    "a join without a state store".into(),
                ));
            };
            joins = joins
                .checked_add(1)
                .ok_or_else(|| DataFusionError::Plan("more than 65535 joins".into()))?;
            let kind = kind(j.join_type).ok_or_else(|| {
                DataFusionError::NotImplemented(format!("a {} join", j.join_type))
            })?;
            let side = |plan: &LogicalPlan, tag: u8, track: Option<Track>| {
                SideState::new(joins, tag, plan.schema().as_arrow(), SIGN, track.is_some())
                    .map_err(|e| DataFusionError::External(Box::new(e)))
            };
            let (on, filter) = equalities(j);
            let sides = [
                side(&j.left, b'l', kind.left)?,
                side(&j.right, b'r', kind.right)?,
            ];
            let expiry = match expire {
                true => bounds::expiry(
                    &on,
                    filter.as_ref(),
                    &j.left,
                    &j.right,
                    [sides[0].sign.is_some(), sides[1].sign.is_some()],
                ),
                false => bounds::Expiry::default(),
            };
            expiring |= expiry.late.iter().any(Option::is_some);
            let numbered = |schema: &DFSchemaRef| -> SchemaRef {
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
                    .collect();
                Arc::new(Schema::new(fields))
            };
            let pairs = Arc::new(j.left.schema().join(j.right.schema())?);
            let provider = Arc::new(DeltaJoin {
                left: j.left.as_ref().clone(),
                right: j.right.as_ref().clone(),
                on,
                filter,
                kind,
                pair_schema: numbered(&pairs),
                pairs,
                schema: numbered(&j.schema),
                store: store.clone(),
                sides,
                expiry,
                clock: clock.clone(),
                steps: steps.clone(),
                done: Mutex::new(None),
            });
            let name = format!("__join{joins}");
            let scan = LogicalPlanBuilder::scan(name.clone(), provider_as_source(provider), None)?
                .build()?;
            // Back to the join's own (qualified) column names.
            let exprs: Vec<Expr> = j
                .schema
                .iter()
                .enumerate()
                .map(|(i, (q, f))| {
                    Expr::Column(Column::new(Some(name.clone()), format!("c{i}")))
                        .alias_qualified(q.cloned(), f.name())
                })
                .collect();
            Ok(Transformed::yes(
                LogicalPlanBuilder::from(scan).project(exprs)?.build()?,
            ))
        })?
        .data;
    Ok(DeltaJoins { plan, expiring })
}

/// Whether a plan has joins whose output takes rows back (outer, semi,
/// anti).
pub(super) fn has_retracting_joins(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|n| {
        found |= matches!(n, LogicalPlan::Join(j) if retracts(j));
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

/// Whether a plan has joins (and its dataflow a state store for them).
pub(super) fn has_joins(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|n| {
        found |= matches!(n, LogicalPlan::Join(_));
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

/// One join of a view: its sides' delta plans and its state.
pub(super) struct DeltaJoin {
    left: LogicalPlan,
    right: LogicalPlan,
    on: Vec<(Expr, Expr)>,
    filter: Option<Expr>,
    kind: Kind,
    /// A pair's columns: the left side's, then the right side's (what the
    /// residual condition reads).
    pairs: DFSchemaRef,
    /// The same columns, named `c0…` (unique).
    pair_schema: SchemaRef,
    /// The join's output columns (the pair's, or one side's for a semi or
    /// anti join), named `c0…`.
    schema: SchemaRef,
    store: Arc<StateStore>,
    /// The left side's rows, then the right side's.
    sides: [SideState; 2],
    /// When stored rows leave, and which late rows are dropped.
    expiry: bounds::Expiry,
    clock: Arc<Clock>,
    steps: Steps,
    /// The last step's joined rows, and its number.
    done: Mutex<Option<(u64, Vec<RecordBatch>)>>,
}

impl fmt::Debug for DeltaJoin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeltaJoin")
    }
}

/// A side's join keys as comparable rows, and which have no NULL.
pub(super) fn keys(
    exprs: &[Arc<dyn PhysicalExpr>],
    types: &[DataType],
    batch: &RecordBatch,
) -> DfResult<(arrow::row::Rows, Vec<bool>)> {
    let columns: Vec<ArrayRef> = exprs
        .iter()
        .zip(types)
        .map(|(e, t)| {
            let a = e.evaluate(batch)?.into_array(batch.num_rows())?;
            Ok(if a.data_type() == t { a } else { cast(&a, t)? })
        })
        .collect::<DfResult<_>>()?;
    let valid: Vec<bool> = (0..batch.num_rows())
        .map(|r| columns.iter().all(|c| c.is_valid(r)))
        .collect();
    let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
    Ok((converter.convert_columns(&columns)?, valid))
}

impl DeltaJoin {
    /// The step's joined rows: computed by the first scan of the step,
    /// repeated to the others.
    async fn step(&self, session: &dyn CatalogSession) -> DfResult<Vec<RecordBatch>> {
        let step = self.steps.load(Ordering::Acquire);
        if let Some((n, rows)) = &*self.done.lock().unwrap_or_else(|p| p.into_inner())
            && *n == step
        {
            return Ok(rows.clone());
        }
        let rows = self.join(session).await?;
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some((step, rows.clone()));
        Ok(rows)
    }

    /// Joins the sides' new rows with each other and the stored ones, and
    /// stores them.
    async fn join(&self, session: &dyn CatalogSession) -> DfResult<Vec<RecordBatch>> {
        let run = |plan: &LogicalPlan| {
            let plan = plan.clone();
            async move {
                let physical = session.create_physical_plan(&plan).await?;
                datafusion::physical_plan::collect(physical, session.task_ctx()).await
            }
        };
        let watermark = self.clock.get();
        if let Some(w) = watermark {
            for (side, until) in self.sides.iter().zip(&self.expiry.until) {
                if !until.is_empty() {
                    side.evict(&self.store, w)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                }
            }
        }
        let (left, right) = (run(&self.left).await?, run(&self.right).await?);
        let (left, right) = (
            self.drop_late(0, left, watermark)?,
            self.drop_late(1, right, watermark)?,
        );
        let physical =
            |e: &Expr, schema: &DFSchemaRef| session.create_physical_expr(e.clone(), schema);
        let until = |i: usize, schema: &DFSchemaRef| -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
            self.expiry.until[i]
                .iter()
                .map(|e| physical(e, schema))
                .collect()
        };
        let until = [
            until(0, self.left.schema())?,
            until(1, self.right.schema())?,
        ];
        let left_keys: Vec<_> = self
            .on
            .iter()
            .map(|(l, _)| physical(l, self.left.schema()))
            .collect::<DfResult<_>>()?;
        let right_keys: Vec<_> = self
            .on
            .iter()
            .map(|(_, r)| physical(r, self.right.schema()))
            .collect::<DfResult<_>>()?;
        let arrow_left = self.left.schema().as_arrow().clone();
        let types: Vec<DataType> = left_keys
            .iter()
            .map(|e| e.data_type(&arrow_left))
            .collect::<DfResult<_>>()?;
        let filter = match &self.filter {
            Some(f) => Some(session.create_physical_expr(f.clone(), &self.pairs)?),
            None => None,
        };
        let mut out = Vec::new();
        let right_side = (&right_keys[..], &until[1][..]);
        let left_side = (&left_keys[..], &until[0][..]);
        self.phase(right, right_side, &types, false, filter.as_ref(), &mut out)?;
        self.phase(left, left_side, &types, true, filter.as_ref(), &mut out)?;
        Ok(out)
    }

    /// Side `side`'s rows without those behind `watermark` in the column
    /// the other side's rows expire by (counted as late).
    fn drop_late(
        &self,
        side: usize,
        batches: Vec<RecordBatch>,
        watermark: Option<i64>,
    ) -> DfResult<Vec<RecordBatch>> {
        let (Some(at), Some(w)) = (self.expiry.late[side], watermark) else {
            return Ok(batches);
        };
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let times = micros(b.column(at))?;
            let keep: BooleanArray = times
                .iter()
                .map(|t| Some(t.is_none_or(|t| t >= w)))
                .collect();
            let late = keep.false_count() as u64;
            if late == 0 {
                out.push(b);
                continue;
            }
            self.clock.late.fetch_add(late, Ordering::Relaxed);
            out.push(filter_record_batch(&b, &keep)?);
        }
        Ok(out)
    }

    /// When each row of `batch` leaves the state (µs; the least of its
    /// bounds, `i64::MIN` where one is NULL); `None` when its rows stay.
    fn expiry_of(
        until: &[Arc<dyn PhysicalExpr>],
        batch: &RecordBatch,
    ) -> DfResult<Option<Vec<i64>>> {
        if until.is_empty() {
            return Ok(None);
        }
        let mut out = vec![i64::MAX; batch.num_rows()];
        for e in until {
            let values = micros(&e.evaluate(batch)?.into_array(batch.num_rows())?)?;
            for (o, v) in out.iter_mut().zip(values.iter()) {
                *o = (*o).min(v.unwrap_or(i64::MIN));
            }
        }
        Ok(Some(out))
    }
}

#[async_trait]
impl TableProvider for DeltaJoin {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = self.step(state).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
