//! Finding a top-N in a view's query: `ROW_NUMBER()`, `RANK()` or
//! `DENSE_RANK()` over `PARTITION BY … ORDER BY …` with a `WHERE` bounding
//! it (`rn <= N`, `rn < N`, `rn = 1`), or `ORDER BY … LIMIT N`, under any
//! projections, filters and aliases. The query splits into the pipeline
//! below (the rows ranked) and the plan above, whose ranked input becomes
//! a table the dataflow fills with each step's changed ranked rows.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, FetchType, LogicalPlan, LogicalPlanBuilder, Operator, SkipType,
};
use streamhouse_streams::dataflow::changes::SIGN;
use streamhouse_streams::dataflow::{Rank, StepRows, TopNDescription, recompute_schemas};

use super::unsupported;
use crate::error::Result;

/// The top-N node of a query: reached from the root through projections,
/// filters, aliases and sorts only.
fn locate(plan: &LogicalPlan) -> Option<&LogicalPlan> {
    match plan {
        LogicalPlan::Projection(p) => locate(&p.input),
        LogicalPlan::Filter(f) => locate(&f.input),
        LogicalPlan::SubqueryAlias(a) => locate(&a.input),
        LogicalPlan::Sort(s) if s.fetch.is_none() => locate(&s.input),
        LogicalPlan::Window(w) if w.window_expr.iter().any(ranks) => Some(plan),
        LogicalPlan::Limit(_) => Some(plan),
        _ => None,
    }
}

/// A ranking window function (`ROW_NUMBER()`, `RANK()`, `DENSE_RANK()`).
fn ranks(e: &Expr) -> bool {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    matches!(e, Expr::WindowFunction(f)
        if matches!(f.fun.name().to_lowercase().as_str(), "row_number" | "rank" | "dense_rank"))
}

/// Whether the query is a top-N (its output then has updates).
pub(super) fn is_top_n(plan: &LogicalPlan) -> bool {
    locate(plan).is_some()
}

/// The query split at its top-N: the input pipeline and the top-N with the
/// plan above it; the plan as it is without one. `inserts_only`: the input
/// rows' signs are all 1.
pub(super) fn split(
    plan: LogicalPlan,
    inserts_only: bool,
) -> Result<(LogicalPlan, Option<TopNDescription>)> {
    let Some(node) = locate(&plan).cloned() else {
        return Ok((plan, None));
    };
    let (input, partition, order, rank, limit, replaced) = match &node {
        LogicalPlan::Window(w) => {
            let [expr] = w.window_expr.as_slice() else {
                return Err(unsupported("more than one window function"));
            };
            let inner = match expr {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            let Expr::WindowFunction(f) = inner else {
                return Err(unsupported(format!("the window expression {expr}")));
            };
            let WindowFunction { fun, params } = f.as_ref();
            let rank = match fun.name().to_lowercase().as_str() {
                "row_number" => Rank::RowNumber,
                "rank" => Rank::Rank,
                "dense_rank" => Rank::DenseRank,
                other => {
                    return Err(unsupported(format!(
                        "the window function {other}() (ROW_NUMBER(), RANK() and DENSE_RANK() \
                         bounded by a WHERE are supported, as a top-N)"
                    )));
                }
            };
            if params.order_by.is_empty() {
                return Err(unsupported(format!("{}() without ORDER BY", fun.name())));
            }
            let column = w.schema.field(w.input.schema().fields().len()).name();
            let Some(limit) = bound(&plan, &node, column) else {
                return Err(unsupported(format!(
                    "{}() without a bound (write WHERE rn <= N over it, as a top-N)",
                    fun.name()
                )));
            };
            (
                w.input.as_ref().clone(),
                params.partition_by.clone(),
                params.order_by.clone(),
                rank,
                limit,
                node.clone(),
            )
        }
        LogicalPlan::Limit(l) => {
            if !matches!(l.get_skip_type()?, SkipType::Literal(0)) {
                return Err(unsupported("OFFSET"));
            }
            let FetchType::Literal(Some(fetch)) = l.get_fetch_type()? else {
                return Err(unsupported("LIMIT without a constant count"));
            };
            let sort = match l.input.as_ref() {
                LogicalPlan::Projection(p) => p.input.as_ref(),
                other => other,
            };
            let LogicalPlan::Sort(s) = sort else {
                return Err(unsupported("LIMIT without ORDER BY"));
            };
            (
                s.input.as_ref().clone(),
                Vec::new(),
                s.expr.clone(),
                Rank::Limit,
                fetch as u64,
                sort.clone(),
            )
        }
        _ => return Ok((plan, None)),
    };
    let mut grouped = false;
    input.apply(|n| {
        grouped |= matches!(n, LogicalPlan::Aggregate(_));
        Ok(TreeNodeRecursion::Continue)
    })?;
    if grouped {
        return Err(unsupported(
            "a top-N over the GROUP BY of its own SELECT (write the GROUP BY in a subquery in \
             FROM or a CTE, and rank its rows)",
        ));
    }
    // The ranked rows: the input's columns (the sign among them), then the
    // rank.
    let ranked_schema = replaced.schema().clone();
    if !ranked_schema.fields().iter().any(|f| f.name() == SIGN) {
        return Err(unsupported("a top-N over rows without a sign"));
    }
    let fields: Vec<Field> = ranked_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
        .collect();
    let rows = StepRows::new(Arc::new(Schema::new(fields)));
    let scan =
        LogicalPlanBuilder::scan("__ranked", provider_as_source(rows.clone()), None)?.build()?;
    let exprs: Vec<Expr> = ranked_schema
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            Expr::Column(Column::new(Some("__ranked"), format!("c{i}")))
                .alias_qualified(q.cloned(), f.name())
        })
        .collect();
    let table = LogicalPlanBuilder::from(scan).project(exprs)?.build()?;
    let mut table = Some(table);
    let above = plan
        .transform_down(|n| {
            // A LIMIT goes (its rows are the top-N's), and the ranked node
            // becomes the table of ranked rows.
            let n = match n {
                LogicalPlan::Limit(l) if LogicalPlan::Limit(l.clone()) == node => {
                    l.input.as_ref().clone()
                }
                n => n,
            };
            if n == replaced
                && let Some(t) = table.take()
            {
                return Ok(Transformed::new(t, true, TreeNodeRecursion::Jump));
            }
            Ok(Transformed::yes(n))
        })?
        .data;
    let above = recompute_schemas(above)?;
    if above.schema().fields().last().map(|f| f.name().as_str()) != Some(SIGN) {
        return Err(unsupported(
            "a top-N whose output does not keep the row's sign",
        ));
    }
    Ok((
        input,
        Some(TopNDescription {
            partition,
            order,
            rank,
            limit,
            above,
            rows,
            inserts_only,
        }),
    ))
}

/// The bound a `WHERE` above `window` puts on its column `column`: the
/// smallest N of `c <= N`, `c < N + 1`, `c = 1` (or mirrored) whose `c`
/// is the window's column through the aliases between.
fn bound(plan: &LogicalPlan, window: &LogicalPlan, column: &str) -> Option<u64> {
    let mut best: Option<u64> = None;
    let mut at = plan;
    loop {
        if at == window {
            return best;
        }
        let next = match at {
            LogicalPlan::Projection(p) => p.input.as_ref(),
            LogicalPlan::SubqueryAlias(a) => a.input.as_ref(),
            LogicalPlan::Sort(s) => s.input.as_ref(),
            LogicalPlan::Filter(f) => {
                for c in split_conjunction(&f.predicate) {
                    if let Some((col, n)) = comparison(c)
                        && resolves_to(&col, &f.input, window, column)
                    {
                        best = Some(best.map_or(n, |b| b.min(n)));
                    }
                }
                f.input.as_ref()
            }
            _ => return None,
        };
        at = next;
    }
}

/// An integer literal (under casts).
fn int(e: &Expr) -> Option<i128> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int8(Some(n)) => Some(i128::from(*n)),
            ScalarValue::Int16(Some(n)) => Some(i128::from(*n)),
            ScalarValue::Int32(Some(n)) => Some(i128::from(*n)),
            ScalarValue::Int64(Some(n)) => Some(i128::from(*n)),
            ScalarValue::UInt8(Some(n)) => Some(i128::from(*n)),
            ScalarValue::UInt16(Some(n)) => Some(i128::from(*n)),
            ScalarValue::UInt32(Some(n)) => Some(i128::from(*n)),
            ScalarValue::UInt64(Some(n)) => Some(i128::from(*n)),
            _ => None,
        },
        Expr::Cast(c) => int(&c.expr),
        Expr::TryCast(c) => int(&c.expr),
        _ => None,
    }
}

/// `col <= N`, `col < N`, `col = 1` and their mirrors, as (col, bound).
fn comparison(e: &Expr) -> Option<(Column, u64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let col = |e: &Expr| -> Option<Column> {
        match e {
            Expr::Column(c) => Some(c.clone()),
            Expr::Cast(c) => match c.expr.as_ref() {
                Expr::Column(c) => Some(c.clone()),
                _ => None,
            },
            _ => None,
        }
    };
    let (c, op, n) = match (col(left), int(right), col(right), int(left)) {
        (Some(c), Some(n), _, _) => (c, *op, n),
        (_, _, Some(c), Some(n)) => (c, op.swap()?, n),
        _ => return None,
    };
    let n = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    u64::try_from(n).ok().filter(|&n| n > 0).map(|n| (c, n))
}

/// Whether column `col` of `plan`'s output is the column `column` of
/// `window`'s output, through projections (plain renames) and aliases.
fn resolves_to(col: &Column, plan: &LogicalPlan, window: &LogicalPlan, column: &str) -> bool {
    if plan == window {
        return col.name == column;
    }
    match plan {
        LogicalPlan::SubqueryAlias(a) => resolves_to(
            &Column::from_name(col.name.clone()),
            &a.input,
            window,
            column,
        ),
        LogicalPlan::Filter(f) => resolves_to(col, &f.input, window, column),
        LogicalPlan::Sort(s) => resolves_to(col, &s.input, window, column),
        LogicalPlan::Projection(p) => {
            let Ok(i) = p.schema.index_of_column(col) else {
                return false;
            };
            let e = match &p.expr[i] {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            match e {
                Expr::Column(c) => resolves_to(c, &p.input, window, column),
                _ => false,
            }
        }
        _ => false,
    }
}
