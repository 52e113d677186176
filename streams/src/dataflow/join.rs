//! Incremental inner equi-joins (a symmetric hash join).
//!
//! In a view's delta plan each `Join` becomes a scan of a [`DeltaJoin`]:
//! planning a step's scan runs the join's two sides over the step's rows
//! (ΔL, ΔR), and the step's joined rows are
//! `ΔL ⋈ (R ∪ ΔR)  ∪  L ⋈ ΔR`, where `L` and `R` are every row the sides
//! produced in earlier steps, kept here in memory with a hash index on the
//! join key. A residual (non-equality) join condition filters the joined
//! rows. Rows whose key has a NULL never match (an inner join).
//!
//! Over a view with updates the sides' rows carry a sign (a delete is a
//! row with sign −1, kept like any other): the stored rows are then a
//! multiset with signed counts, the join stays bilinear, and the plan above
//! multiplies the two signs of each pair — a pair made with a deleted row
//! is taken back.
//!
//! The state is not checkpointed: a view restored from a checkpoint runs
//! its delta plan once over its inputs up to the checkpoint (discarding the
//! output) to refill it — the log is the join's durable state.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, filter_record_batch, interleave, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::common::hash_map::EntryRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchemaRef, HashMap, JoinType, NullEquality};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Join, LogicalPlan, LogicalPlanBuilder, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::Result;

/// What makes a join one a dataflow cannot maintain incrementally, if
/// anything: only inner joins with at least one equality between a column
/// expression of each side are.
pub fn unsupported_join(j: &Join) -> Option<String> {
    if j.join_type != JoinType::Inner {
        return Some(format!(
            "a {} join (inner joins are supported)",
            j.join_type
        ));
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

/// Replaces every join of a delta plan (whose scans are in delta mode) by
/// a scan of its incremental state; also how many joins there were.
pub(super) fn delta_joins(plan: LogicalPlan) -> Result<(LogicalPlan, usize)> {
    let mut joins = 0;
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::Join(j) = &node else {
                return Ok(Transformed::no(node));
            };
            joins += 1;
            let (on, filter) = equalities(j);
            let fields: Vec<Field> = j
                .schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
                .collect();
            let provider = Arc::new(DeltaJoin {
                left: j.left.as_ref().clone(),
                right: j.right.as_ref().clone(),
                on,
                filter,
                output: j.schema.clone(),
                schema: Arc::new(Schema::new(fields)),
                state: Mutex::new(Sides::default()),
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
    Ok((plan, joins))
}

/// Whether a delta plan has joins (whose state a restored view refills).
pub(super) fn contains(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|n| {
        if let LogicalPlan::TableScan(scan) = n
            && let Ok(p) = datafusion::datasource::source_as_provider(&scan.source)
        {
            found |= p.downcast_ref::<DeltaJoin>().is_some();
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

/// The rows one side produced so far, indexed by join key.
#[derive(Default)]
struct Side {
    batches: Vec<RecordBatch>,
    /// (batch, row) of each stored row, numbered in arrival order.
    rows: Vec<(usize, usize)>,
    /// Per row, the previous row with the same key (`u32::MAX`: none).
    next: Vec<u32>,
    /// Per key, its latest row.
    heads: HashMap<Vec<u8>, u32>,
}

impl Side {
    fn insert(&mut self, batch: RecordBatch, keys: &arrow::row::Rows, valid: &[bool]) {
        if batch.num_rows() == 0 {
            return;
        }
        let b = self.batches.len();
        for (r, key) in keys.iter().enumerate() {
            if !valid[r] {
                continue;
            }
            let id = self.rows.len() as u32;
            self.rows.push((b, r));
            // A key seen before does not allocate again.
            let prev = match self.heads.entry_ref(key.as_ref()) {
                EntryRef::Occupied(mut o) => std::mem::replace(o.get_mut(), id),
                EntryRef::Vacant(v) => {
                    v.insert(id);
                    u32::MAX
                }
            };
            self.next.push(prev);
        }
        self.batches.push(batch);
    }

    /// (probe row, stored (batch, row)) of every match of `keys`.
    fn probe(&self, keys: &arrow::row::Rows, valid: &[bool]) -> (Vec<u32>, Vec<(usize, usize)>) {
        let (mut probe, mut stored) = (Vec::new(), Vec::new());
        for (r, key) in keys.iter().enumerate() {
            if !valid[r] {
                continue;
            }
            let mut at = self.heads.get(key.as_ref()).copied().unwrap_or(u32::MAX);
            while at != u32::MAX {
                probe.push(r as u32);
                stored.push(self.rows[at as usize]);
                at = self.next[at as usize];
            }
        }
        (probe, stored)
    }
}

#[derive(Default)]
struct Sides {
    left: Side,
    right: Side,
}

/// One join of a view: its sides' delta plans and its state.
pub(super) struct DeltaJoin {
    left: LogicalPlan,
    right: LogicalPlan,
    on: Vec<(Expr, Expr)>,
    filter: Option<Expr>,
    /// The join's schema (left columns, then right columns).
    output: DFSchemaRef,
    /// The same columns, named `c0…` (unique).
    schema: SchemaRef,
    state: Mutex<Sides>,
}

impl fmt::Debug for DeltaJoin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeltaJoin")
    }
}

/// A side's join keys as comparable rows, and which have no NULL.
fn keys(
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
    /// Joined rows: probe-side rows `probe` of `batch` with stored rows
    /// `stored` of `side`, the probe side being the left one or not.
    fn assemble(
        &self,
        batch: &RecordBatch,
        probe: Vec<u32>,
        side: &Side,
        stored: &[(usize, usize)],
        probe_is_left: bool,
    ) -> DfResult<Option<RecordBatch>> {
        if probe.is_empty() {
            return Ok(None);
        }
        let idx = UInt32Array::from(probe);
        let probed: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| take(c, &idx, None))
            .collect::<Result<_, _>>()?;
        let width = side.batches.first().map_or(0, |b| b.num_columns());
        let kept: Vec<ArrayRef> = (0..width)
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    side.batches.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, stored)
            })
            .collect::<Result<_, _>>()?;
        let columns = if probe_is_left {
            [probed, kept].concat()
        } else {
            [kept, probed].concat()
        };
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }

    /// One step: the joined rows of the sides' new rows.
    async fn step(&self, session: &dyn CatalogSession) -> DfResult<Vec<RecordBatch>> {
        let run = |plan: &LogicalPlan| {
            let plan = plan.clone();
            async move {
                let physical = session.create_physical_plan(&plan).await?;
                datafusion::physical_plan::collect(physical, session.task_ctx()).await
            }
        };
        let (left, right) = (run(&self.left).await?, run(&self.right).await?);
        let physical =
            |e: &Expr, schema: &DFSchemaRef| session.create_physical_expr(e.clone(), schema);
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
            Some(f) => Some(session.create_physical_expr(f.clone(), &self.output)?),
            None => None,
        };

        let mut out = Vec::new();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Sides {
            left: ls,
            right: rs,
        } = &mut *state;
        // New right rows join the stored ones first, so that new left rows
        // meet them below; then new right rows meet the stored left rows.
        let mut right_keyed = Vec::new();
        for b in right {
            let (k, v) = keys(&right_keys, &types, &b)?;
            right_keyed.push((b, k, v));
        }
        for (b, k, v) in &right_keyed {
            let (probe, stored) = ls.probe(k, v);
            out.extend(self.assemble(b, probe, ls, &stored, false)?);
        }
        for (b, k, v) in right_keyed {
            rs.insert(b, &k, &v);
        }
        for b in left {
            let (k, v) = keys(&left_keys, &types, &b)?;
            let (probe, stored) = rs.probe(&k, &v);
            out.extend(self.assemble(&b, probe, rs, &stored, true)?);
            ls.insert(b, &k, &v);
        }
        drop(state);
        match filter {
            None => Ok(out),
            Some(f) => out
                .into_iter()
                .map(|b| {
                    let keep = f.evaluate(&b)?.into_array(b.num_rows())?;
                    let keep = keep
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| {
                            DataFusionError::Internal("join condition not boolean".into())
                        })?
                        .clone();
                    Ok(filter_record_batch(&b, &keep)?)
                })
                .collect(),
        }
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
