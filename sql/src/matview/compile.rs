//! A view's query compiled into a dataflow [`Description`]: views it reads
//! become scans of their changelogs (signed when they have updates), the
//! shape is checked (0A000 names what a view cannot maintain), and the one
//! aggregate is split into mergeable components.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::Column;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{TableProvider, ViewTable, provider_as_source, source_as_provider};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{
    Aggregate, Distinct, Expr, LogicalPlan, LogicalPlanBuilder, Projection, SubqueryAlias,
    TableScan, lit, when,
};
use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
use datafusion::optimizer::{Optimizer, OptimizerContext};
use streamhouse_log::{Log, StreamInfo};
use streamhouse_streams::dataflow::changes::{self, SIGN};
use streamhouse_streams::dataflow::{
    AggregateDescription, Description, Emit, Placement, Shape, recompute_schemas, retracts,
    unsupported_join, watermark_delays,
};
use streamhouse_streams::scan::{StreamTable, stream_of};
use streamhouse_streams::{Dataflow, Merge, Sessions, Windowing};

use super::decompose::{Decomposed, decompose};
use super::{MatView, MatViewTable, unsupported};
use crate::dialect::ViewOptions;
use crate::error::{Result, SqlError};
use crate::window::SessionTable;

impl MatView {
    /// Compiles a planned view query and instantiates its dataflow at
    /// `placement`. Fails with 0A000 on shapes a view cannot maintain.
    /// `idle_timeout` applies when the view's options set none.
    #[allow(clippy::too_many_arguments)]
    pub async fn compile(
        log: &Arc<Log>,
        name: &str,
        definition: String,
        options: ViewOptions,
        plan: LogicalPlan,
        placement: Placement,
        idle_timeout: Duration,
    ) -> Result<Arc<MatView>> {
        let idle_timeout = options.idle_timeout.unwrap_or(idle_timeout);
        let description = describe(log, plan, options.emit, idle_timeout)?;
        let flow = Dataflow::new(log, name, description, placement).await?;
        // The view of a table reads the table's log.
        let table_log = streamhouse_log::table_log_name(name);
        let fresh = flow.reads(&table_log).then(|| super::Fresh {
            log: log.clone(),
            stream: table_log,
            flow: flow.clone(),
        });
        Ok(Arc::new(MatView {
            definition,
            options,
            flow,
            fresh,
        }))
    }
}

/// The dataflow that maintains `plan`.
pub(super) fn describe(
    log: &Arc<Log>,
    plan: LogicalPlan,
    emit: Option<Emit>,
    idle_timeout: Duration,
) -> Result<Description> {
    // The query as planned is what a view without aggregate over a
    // view with updates reads; its steps read the changelogs.
    let mut sessions = Vec::new();
    let plan = decorrelate(plan);
    let plan = distinct_as_aggregate(plan)?;
    let original = inline_views(plan, &mut sessions)?;
    // A top-N's output has updates whatever its input.
    let ranked = super::topn::is_top_n(&original);
    let (plan, signed, inserts_only) = views_as_changelogs(log, original.clone(), ranked)?;
    let (plan, top_n) = super::topn::split(plan, inserts_only)?;
    let mut aggregates = Vec::new();
    plan.apply(|n| {
        if let LogicalPlan::Aggregate(a) = n {
            aggregates.push(a.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if aggregates.len() > 1 {
        return Err(unsupported(
            "more than one GROUP BY level outside subqueries in FROM and CTEs (write the inner \
             GROUP BY in a subquery in FROM or a CTE)",
        ));
    }
    let changes_schema = changes::changes_schema(original.schema().as_arrow())?;
    let Some(agg) = aggregates.pop() else {
        // Stateless: the view reads the pipeline over the log; steps
        // run it over new rows for the changelog.
        if !sessions.is_empty() {
            return Err(unsupported("a SESSION window without a GROUP BY over it"));
        }
        let inputs = check_pipeline(&plan, false)?;
        if emit == Some(Emit::OnClose) {
            return Err(unsupported("emit = 'on_close' without a windowed GROUP BY"));
        }
        let read = if signed { original } else { plan.clone() };
        return Ok(Description {
            inputs,
            shape: Shape::Pipeline {
                plan,
                read,
                signed,
                top_n,
            },
            emit: Emit::OnUpdate,
            changes_schema,
            idle_timeout,
        });
    };
    let mut limited = false;
    plan.apply(|n| {
        limited |= matches!(n, LogicalPlan::Limit(_));
        Ok(TreeNodeRecursion::Continue)
    })?;
    if limited {
        return Err(unsupported("LIMIT (top-N)"));
    }
    check_above_aggregate(&plan)?;
    let session_spec = session_groups(&agg, &sessions)?;
    let inputs = check_pipeline(&agg.input, session_spec.is_some())?;
    if inputs.is_empty() {
        return Err(unsupported("an aggregate over no stream"));
    }
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
    if components.is_empty() {
        // A GROUP BY without aggregates (or a SELECT DISTINCT) keeps a row
        // count per group: the state needs a value for every group.
        components.push(count(lit(1i64)).alias("__component0"));
        merges.push(Merge::Sum);
    }
    // Windows close with a watermark, which the engine builds when every
    // input has an event time.
    let watermarked = watermark_delays(&inputs).is_some();
    let windowing = match window_end_column(&agg) {
        Some(end_column) if watermarked => {
            // A hidden row count per group counts late rows.
            let rows_component = components.len();
            components.push(count(lit(1i64)).alias(format!("__component{rows_component}")));
            merges.push(Merge::Sum);
            Some(Windowing {
                end_column,
                rows_component,
            })
        }
        _ => None,
    };
    let emit = match (emit, windowing) {
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
    let mut joins = 0;
    agg.input.apply(|n| {
        joins += usize::from(matches!(n, LogicalPlan::Join(_)));
        Ok(TreeNodeRecursion::Continue)
    })?;
    if joins > 0 && session_spec.is_some() {
        return Err(unsupported("a SESSION window over a join"));
    }
    Ok(Description {
        inputs,
        shape: Shape::Aggregate(AggregateDescription {
            plan,
            agg,
            components,
            merges,
            finals,
            distinct,
            rows,
            sessions: session_spec,
            windowing,
        }),
        emit,
        changes_schema,
        idle_timeout,
    })
}

fn mat_view_of(scan: &TableScan) -> Option<Arc<dyn TableProvider>> {
    let provider = source_as_provider(&scan.source).ok()?;
    provider.downcast_ref::<MatViewTable>()?;
    Some(provider)
}

/// Replaces scans of materialized views with scans of their changelogs, so
/// a view over a view is a view over a stream. When one of them has
/// updates, or an outer, semi or anti join makes updates, every input row
/// gets a [`SIGN`] (deletes retract) that the pipeline carries up to the
/// aggregate, or to the output of a view without one — also when `force`
/// (a top-N). The second value says whether rows are signed, the third
/// whether their signs are all 1 (no input has updates).
fn views_as_changelogs(
    log: &Arc<Log>,
    plan: LogicalPlan,
    force: bool,
) -> Result<(LogicalPlan, bool, bool)> {
    let mut signed = false;
    plan.apply(|node| {
        if let LogicalPlan::Join(j) = node
            && retracts(j)
        {
            signed = true;
        }
        if let LogicalPlan::TableScan(scan) = node
            && let Some(p) = mat_view_of(scan)
            && p.downcast_ref::<MatViewTable>()
                .is_some_and(|v| !v.inserts_only)
        {
            signed = true;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let inserts_only = !signed;
    signed |= force;
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
                exprs.push(sign.alias_qualified(Some(q.clone()), SIGN));
            }
            let replaced = LogicalPlanBuilder::from(input).project(exprs)?.build()?;
            Ok(Transformed::yes(replaced))
        })?
        .data;
    if let Some(e) = refused {
        return Err(e);
    }
    let plan = if signed { carry_sign(plan)? } else { plan };
    Ok((recompute_schemas(plan)?, signed, inserts_only))
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
                if let Some(what) = unsupported_join(j) {
                    bad = Some(unsupported(what));
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

/// `IN`/`EXISTS` subqueries (correlated or not) as the semi and anti joins
/// the planner makes of them, which views maintain. A subquery it cannot
/// rewrite stays, and is refused by name.
fn decorrelate(plan: LogicalPlan) -> LogicalPlan {
    let optimizer = Optimizer::with_rules(vec![Arc::new(DecorrelatePredicateSubquery::new())]);
    optimizer
        .optimize(plan.clone(), &OptimizerContext::new(), |_, _| {})
        .unwrap_or(plan)
}

/// `SELECT DISTINCT …` as the `GROUP BY` of all its columns (with no
/// aggregate), which views maintain.
fn distinct_as_aggregate(plan: LogicalPlan) -> Result<LogicalPlan> {
    let rewritten = plan.transform_up(|node| match node {
        LogicalPlan::Distinct(Distinct::All(input)) => {
            let columns: Vec<Expr> = input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            let grouped = LogicalPlanBuilder::from(input.as_ref().clone())
                .aggregate(
                    columns.clone(),
                    vec![count(lit(1i64)).alias("__distinct_rows")],
                )?
                .project(columns)?
                .build()?;
            Ok(Transformed::yes(grouped))
        }
        other => Ok(Transformed::no(other)),
    })?;
    Ok(rewritten.data)
}

/// What an aggregate view computes over its groups: each step evaluates
/// the plan above the aggregate over the groups it changed, so only steps
/// that take one group's row at a time may be there (projections, HAVING
/// filters, aliases, an ORDER BY that a view's contents ignore). A window
/// function, DISTINCT, join or union over the groups would need every
/// group, or another input, and is refused by name.
fn check_above_aggregate(plan: &LogicalPlan) -> Result<()> {
    let mut node = plan;
    loop {
        node = match node {
            LogicalPlan::Aggregate(_) => return Ok(()),
            LogicalPlan::Projection(p) => {
                if p.expr.iter().any(has_subquery) {
                    return Err(unsupported("a subquery over a GROUP BY"));
                }
                &p.input
            }
            LogicalPlan::Filter(f) => {
                if has_subquery(&f.predicate) {
                    return Err(unsupported("a subquery over a GROUP BY"));
                }
                &f.input
            }
            LogicalPlan::SubqueryAlias(a) => &a.input,
            LogicalPlan::Sort(s) => &s.input,
            LogicalPlan::Window(_) => {
                return Err(unsupported("a window function over a GROUP BY"));
            }
            LogicalPlan::Distinct(_) => return Err(unsupported("SELECT DISTINCT over a GROUP BY")),
            LogicalPlan::Join(_) => return Err(unsupported("a join over a GROUP BY")),
            other => {
                return Err(unsupported(format!("{} over a GROUP BY", other.display())));
            }
        };
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
