//! The event time of a view's changelog. A view that emits each window's
//! row once, when the watermark passes the window's end (`on_close`), and
//! passes that end through as one of its columns, writes its changelog in
//! order of that column: a step closes every window ending at or before
//! its watermark, in order of end (the state's keys start with it), and
//! later steps close only windows ending later. So no row still to come
//! ends before the latest end read, and the column is an event time with
//! no delay: a view reading the changelog gets a watermark from it, its
//! joins drop rows no later row can meet and its windows close.

use std::sync::Arc;
use std::time::Duration;

use datafusion::logical_expr::LogicalPlan;
use streamhouse_log::Log;
use streamhouse_streams::dataflow::{Emit, Shape};
use streamhouse_streams::lineage::origin;

use super::compile::describe;
use crate::dialect::ViewOptions;

/// The column of view query `plan` that is its changelog's event time, if
/// any (see the module's comment).
pub fn changelog_event_time(
    log: &Arc<Log>,
    plan: &LogicalPlan,
    options: &ViewOptions,
    idle_timeout: Duration,
) -> Option<String> {
    let idle_timeout = options.idle_timeout.unwrap_or(idle_timeout);
    let d = describe(log, plan.clone(), options.emit, idle_timeout).ok()?;
    let (Shape::Aggregate(a), Emit::OnClose) = (&d.shape, d.emit) else {
        return None;
    };
    let end = a.windowing?.end_column;
    let fields = plan.schema().fields();
    if a.plan.schema().fields().len() != fields.len() {
        return None;
    }
    (0..fields.len())
        .find(|&at| window_end_at(&a.plan, at, end))
        .map(|at| fields[at].name().clone())
}

/// Whether column `at` of `plan`'s rows is group column `end` of its
/// aggregate, passed through unchanged.
fn window_end_at(plan: &LogicalPlan, at: usize, end: usize) -> bool {
    matches!(origin(plan, at), Some((LogicalPlan::Aggregate(_), i)) if i == end)
}
