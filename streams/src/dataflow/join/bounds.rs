//! When a join's stored rows can no longer match: time bounds in its
//! condition, against the watermark.
//!
//! A condition such as `b.ts BETWEEN a.ts - INTERVAL '10 seconds' AND
//! a.ts` or `b.ts <= a.expires` bounds one side's event time from above by
//! an expression over the other side's row: `x.t <= E(y)`; a join key
//! `x.t = y.u` bounds both ways. The view's rows
//! arrive no earlier than its watermark `W` (rows behind it are dropped as
//! late, see below), so once `W > E(y)` no row of `x`'s side still to come
//! can match `y`, and `y` leaves the state. Several bounds on one side
//! combine: a row leaves once the watermark passes the least of them.
//!
//! This holds only where `x.t` *is* an event time the watermark covers: a
//! column that passes a stream's declared event-time column through
//! projections, filters and aliases. The side whose time bounds the other
//! then drops its rows behind the watermark as late (they might have met
//! rows already gone), and counts them as windows do. A side stored with
//! signs (it has deletes, or is an outer join's preserved side) keeps its
//! rows: a delete must find the row it takes back.
//!
//! A bound written in a `WHERE` directly above an inner join (Nexmark q7
//! writes it so) is moved into the join's condition first: the same rows,
//! and the join sees the bound ([`conditions_into_joins`]).

use arrow::datatypes::DataType;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchemaRef, JoinType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, ExprSchemable, Filter, LogicalPlan, Operator, binary_expr,
};

use crate::lineage::origin;
use crate::scan::stream_of;

/// How a join's two sides expire (index 0: left, 1: right).
#[derive(Debug, Default, Clone)]
pub(in crate::dataflow) struct Expiry {
    /// Per side: expressions over its own columns; a row leaves the state
    /// once the watermark passes the least of their values for it.
    pub until: [Vec<Expr>; 2],
    /// Per side: the position of its event-time column in its rows, when
    /// the other side's rows expire by it (its late rows are dropped).
    pub late: [Option<usize>; 2],
}

/// `plan` with each comparison (`<`, `<=`, `>`, `>=`, `BETWEEN`) of a
/// `WHERE` directly above an inner join that reads both of its sides moved
/// into the join's condition.
pub(in crate::dataflow) fn conditions_into_joins(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    Ok(plan
        .transform_down(|node| {
            let LogicalPlan::Filter(f) = &node else {
                return Ok(Transformed::no(node));
            };
            let LogicalPlan::Join(j) = f.input.as_ref() else {
                return Ok(Transformed::no(node));
            };
            if j.join_type != JoinType::Inner {
                return Ok(Transformed::no(node));
            }
            let reads = |e: &Expr, schema: &DFSchemaRef| {
                e.column_refs().iter().any(|c| schema.has_column(c))
            };
            let comparison = |e: &Expr| match e {
                Expr::Between(b) => !b.negated,
                Expr::BinaryExpr(b) => matches!(
                    b.op,
                    Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
                ),
                _ => false,
            };
            let (moved, kept): (Vec<Expr>, Vec<Expr>) = split_conjunction(&f.predicate)
                .into_iter()
                .cloned()
                .partition(|e| {
                    comparison(e) && reads(e, j.left.schema()) && reads(e, j.right.schema())
                });
            if moved.is_empty() {
                return Ok(Transformed::no(node));
            }
            let mut join = j.clone();
            join.filter = conjunction(join.filter.take().into_iter().chain(moved));
            let join = LogicalPlan::Join(join);
            Ok(Transformed::yes(match conjunction(kept) {
                Some(rest) => LogicalPlan::Filter(Filter::try_new(rest, Arc::new(join))?),
                None => join,
            }))
        })?
        .data)
}

/// The bounds in a join's equality keys `on` (left, right), each of which
/// bounds both ways, and `conjuncts` (its residual condition) between
/// sides `left` and `right`; `signed[i]`: side `i` is stored with signs
/// (it keeps its rows).
pub(in crate::dataflow) fn expiry(
    on: &[(Expr, Expr)],
    conjuncts: Option<&Expr>,
    left: &LogicalPlan,
    right: &LogicalPlan,
    signed: [bool; 2],
) -> Expiry {
    let mut out = Expiry::default();
    let sides = [left, right];
    let mut comparisons = Vec::new();
    for (l, r) in on {
        comparisons.push((l.clone(), r.clone()));
        comparisons.push((r.clone(), l.clone()));
    }
    for e in conjuncts.into_iter().flat_map(split_conjunction) {
        match e {
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                comparisons.push(((**low).clone(), (**expr).clone()));
                comparisons.push(((**expr).clone(), (**high).clone()));
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::Lt | Operator::LtEq => {
                    comparisons.push(((**left).clone(), (**right).clone()))
                }
                Operator::Gt | Operator::GtEq => {
                    comparisons.push(((**right).clone(), (**left).clone()))
                }
                _ => {}
            },
            _ => {}
        }
    }
    // Each `small <= big`: an upper bound on `small`'s event time.
    for (small, big) in comparisons {
        let Some((column, bound)) = peel(small, big) else {
            continue;
        };
        let Some(x) = (0..2).find(|&i| sides[i].schema().has_column(&column)) else {
            continue;
        };
        let y = 1 - x;
        if signed[y] || !only_columns_of(&bound, sides[y].schema()) {
            continue;
        }
        let Ok(at) = sides[x].schema().index_of_column(&column) else {
            continue;
        };
        if !is_event_time(sides[x], at) || !is_timestamp(&bound, sides[y].schema()) {
            continue;
        }
        match out.late[x] {
            Some(other) if other != at => continue,
            _ => out.late[x] = Some(at),
        }
        out.until[y].push(bound);
    }
    out
}

/// `small <= big` as `column <= bound` when `small` is a column, perhaps
/// plus or minus a literal (moved to the bound).
fn peel(small: Expr, big: Expr) -> Option<(Column, Expr)> {
    match small {
        Expr::Column(c) => Some((c, big)),
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(*left, Expr::Column(_)) && matches!(*right, Expr::Literal(..)) =>
        {
            let Expr::Column(c) = *left else {
                return None;
            };
            let back = match op {
                Operator::Plus => Operator::Minus,
                Operator::Minus => Operator::Plus,
                _ => return None,
            };
            Some((c, binary_expr(big, back, *right)))
        }
        _ => None,
    }
}

/// `e` reads columns, all of `schema`.
fn only_columns_of(e: &Expr, schema: &DFSchemaRef) -> bool {
    let cols = e.column_refs();
    !cols.is_empty() && cols.iter().all(|c| schema.has_column(c))
}

/// `e`'s values are timestamps.
fn is_timestamp(e: &Expr, schema: &DFSchemaRef) -> bool {
    matches!(e.get_type(schema.as_ref()), Ok(DataType::Timestamp(..)))
}

/// Whether column `at` of `plan`'s rows is a stream's event-time column,
/// passed through unchanged.
fn is_event_time(plan: &LogicalPlan, at: usize) -> bool {
    let Some((LogicalPlan::TableScan(scan), at)) = origin(plan, at) else {
        return false;
    };
    let Some(info) = stream_of(scan) else {
        return false;
    };
    let Some(et) = info.spec.event_time.as_ref() else {
        return false;
    };
    let field = scan.projected_schema.field(at);
    *field.name() == et.column && matches!(field.data_type(), DataType::Timestamp(..))
}
