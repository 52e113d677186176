//! Where a plan's output column comes from: followed down through
//! projections that pass a column on (perhaps renamed), filters, aliases
//! and repartitions, to the first node that makes or reads it.

use datafusion::logical_expr::{Expr, LogicalPlan};

/// The node column `at` of `plan`'s rows comes from unchanged, and its
/// position there; `None` when a projection computes it.
pub fn origin(plan: &LogicalPlan, at: usize) -> Option<(&LogicalPlan, usize)> {
    match plan {
        LogicalPlan::Projection(p) => {
            let mut e = p.expr.get(at)?;
            while let Expr::Alias(a) = e {
                e = &a.expr;
            }
            match e {
                Expr::Column(c) => origin(&p.input, p.input.schema().index_of_column(c).ok()?),
                _ => None,
            }
        }
        LogicalPlan::Filter(f) => origin(&f.input, at),
        LogicalPlan::SubqueryAlias(s) => origin(&s.input, at),
        LogicalPlan::Repartition(r) => origin(&r.input, at),
        other => Some((other, at)),
    }
}
