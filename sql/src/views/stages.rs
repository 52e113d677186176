//! Stages: a view whose query nests a GROUP BY (or a top-N, a DISTINCT)
//! below a join, a union, another GROUP BY, a DISTINCT, a window function
//! or a LIMIT is maintained as a chain of views, split at the SQL level.
//!
//! Each derived table or CTE whose own query keeps state and sits below
//! such an operator becomes a hidden view — a *stage* — whose definition is
//! the user's own SQL text for that subquery (with the CTEs it may name;
//! with its SELECT's WHERE too when it is that SELECT's only relation, so
//! that a top-N's bound stays with its ranking), and the query reads the
//! stage in its place, as a view with updates. `GROUP BY … ORDER BY …
//! LIMIT` is first written as a top-N over the groups in a subquery.
//! A stage's query is split again the same way, so every level holds one
//! stateful operator. Stages are named `__stage__<view>__<path>` (`path`
//! is `1`, `2`, … for the view's own stages and `2_1`, … for a stage's
//! stages): internal names users cannot take, which tie a stage to its
//! view. They are created before their view, restored like any view (views
//! over views wait for theirs), dropped with it, and left out of listings.
//!
//! Every view stores its query as written; splitting depends only on that
//! query's plan, so restoring a view splits it again into the same stages.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;
use sqlparser::ast::helpers::attached_token::AttachedToken;
use sqlparser::ast::{
    Expr as SqlExpr, GroupByExpr, Ident, ObjectName, OrderBy, OrderByExpr, OrderByKind, Query,
    Select, SelectFlavor, SelectItem, SetExpr, TableAlias, TableFactor, TableWithJoins, Value,
    VisitMut, VisitorMut, With,
};
use streamhouse_log::RESERVED_PREFIX;

use crate::idents::normalize;
use crate::names::output_names;

/// Names of stages start with this.
const STAGE_PREFIX: &str = "__stage__";

/// The name of the `n`th stage (from 1) of view (or stage) `parent`.
pub(super) fn stage_name(parent: &str, n: usize) -> String {
    match stage_of(parent) {
        Some((view, path)) => format!("{STAGE_PREFIX}{view}__{path}_{n}"),
        None => format!("{STAGE_PREFIX}{parent}__{n}"),
    }
}

/// The view a stage belongs to, and the stage's path, when `name` names a
/// stage.
pub(super) fn stage_of(name: &str) -> Option<(&str, &str)> {
    let (view, path) = name.strip_prefix(STAGE_PREFIX)?.rsplit_once("__")?;
    let valid = !view.is_empty()
        && !path.is_empty()
        && path
            .split('_')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    valid.then_some((view, path))
}

/// Whether `name` is one a user may not give a view (internal names).
pub(super) fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// A view's query split into stages.
pub(super) struct Split {
    /// The stages it reads, in creation order: (name, query as written).
    pub stages: Vec<(String, Query)>,
    /// The query over the stages (the query itself when there are none).
    pub query: Query,
}

/// Splits `query` (planned as `plan`) of view `name` into its stages.
pub(super) fn split(name: &str, query: &Query, plan: &LogicalPlan) -> Split {
    let mut aliases = HashSet::new();
    staged(plan, false, &mut aliases);
    let mut split = Split {
        stages: Vec::new(),
        query: query.clone(),
    };
    if aliases.is_empty() {
        return split;
    }
    // CTEs first: a stage replaces the CTE everywhere it is named.
    let mut renamed: Vec<(String, String)> = Vec::new();
    let mut stages = Vec::new();
    if let Some(with) = split.query.with.take() {
        let mut kept = Vec::new();
        for cte in with.cte_tables {
            let mut cte = cte;
            rename(&mut cte.query, &renamed);
            let cte_name = normalize(&cte.alias.name);
            if aliases.contains(&cte_name) && cte.alias.columns.is_empty() {
                let stage = stage_name(name, stages.len() + 1);
                stages.push((stage.clone(), with_ctes(&cte.query, &kept, with.recursive)));
                renamed.push((cte_name, stage));
            } else {
                kept.push(cte);
            }
        }
        if !kept.is_empty() {
            split.query.with = Some(With {
                cte_tables: kept,
                ..with
            });
        }
    }
    rename_body(&mut split.query, &renamed);
    // Then derived tables, outermost first (a stage's own query is split
    // when the stage is made).
    let ctes: Vec<_> = split
        .query
        .with
        .as_ref()
        .map(|w| w.cte_tables.clone())
        .unwrap_or_default();
    let recursive = split.query.with.as_ref().is_some_and(|w| w.recursive);
    let mut derived = Derived {
        aliases: &aliases,
        stages: &mut stages,
        name,
        ctes: &ctes,
        recursive,
    };
    derived.with_filter(&mut split.query.body);
    let _ = split.query.body.visit(&mut derived);
    if let Some(with) = &mut split.query.with {
        for cte in &mut with.cte_tables {
            let _ = cte.query.visit(&mut derived);
        }
    }
    split.stages = stages;
    split
}

/// `query` as it is planned and split: a ranking of groups written as a
/// top-N over them ([`group_before_ranking`]), every derived table named
/// ([`name_subqueries`]).
pub(super) fn prepared(query: &Query) -> Query {
    let mut query = query.clone();
    group_before_ranking(&mut query);
    name_subqueries(&mut query);
    query
}

/// Gives every derived table without an alias one (`__subquery1`, …), so
/// that any can become a stage; deterministic, so a restored view's query
/// is named alike.
fn name_subqueries(query: &mut Query) {
    struct Namer(usize);
    impl VisitorMut for Namer {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Derived {
                lateral: false,
                alias: alias @ None,
                ..
            } = factor
            {
                self.0 += 1;
                *alias = Some(TableAlias {
                    explicit: true,
                    name: Ident::with_quote('"', format!("__subquery{}", self.0)),
                    columns: Vec::new(),
                    at: None,
                });
            }
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut Namer(0));
}

/// `SELECT … GROUP BY … ORDER BY … LIMIT n` (or a `SELECT DISTINCT`) as a
/// top-N over the groups in a subquery — `SELECT * FROM (SELECT … GROUP BY
/// …) AS "__grouped" ORDER BY … LIMIT n` — so the groups become a stage.
/// The select list is named as PostgreSQL names it and ORDER BY refers to
/// those names; left as it is when an ORDER BY item names no output column
/// (the view is then refused as before).
fn group_before_ranking(query: &mut Query) {
    let ranked =
        query.order_by.is_some() && (query.limit_clause.is_some() || query.fetch.is_some());
    let SetExpr::Select(select) = query.body.as_ref() else {
        return;
    };
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
        GroupByExpr::All(_) => true,
    } || select.distinct.is_some();
    if !ranked || !grouped {
        return;
    }
    let Some(names) = output_names(query) else {
        return;
    };
    let names: Vec<String> = names
        .into_iter()
        .zip(&select.projection)
        .filter_map(|(name, item)| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(normalize(alias)),
            _ => name,
        })
        .collect();
    let unique: HashSet<&String> = names.iter().collect();
    if names.len() != select.projection.len() || unique.len() != names.len() {
        return;
    }
    let Some(OrderBy {
        kind: OrderByKind::Expressions(items),
        ..
    }) = &query.order_by
    else {
        return;
    };
    let mut ordered = Vec::new();
    for item in items {
        let Some(i) = output_of(&item.expr, &select.projection, &names) else {
            return;
        };
        ordered.push(OrderByExpr {
            expr: SqlExpr::Identifier(Ident::with_quote('"', names[i].clone())),
            ..item.clone()
        });
    }
    let mut inner = select.as_ref().clone();
    inner.projection = inner
        .projection
        .into_iter()
        .zip(&names)
        .map(|(item, name)| match item {
            SelectItem::UnnamedExpr(expr) => SelectItem::ExprWithAlias {
                expr,
                alias: Ident::with_quote('"', name.clone()),
            },
            other => other,
        })
        .collect();
    let grouped = TableFactor::Derived {
        lateral: false,
        subquery: Box::new(Query {
            body: Box::new(SetExpr::Select(Box::new(inner))),
            ..empty_query()
        }),
        alias: Some(TableAlias {
            explicit: true,
            name: Ident::with_quote('"', "__grouped"),
            columns: Vec::new(),
            at: None,
        }),
        sample: None,
    };
    query.body = select_all_from(grouped, None).body;
    if let Some(order) = &mut query.order_by {
        order.kind = OrderByKind::Expressions(ordered);
    }
}

/// Which output column (by index) ORDER BY item `expr` sorts by: a
/// position, an output name, or the text of a select list expression.
fn output_of(expr: &SqlExpr, projection: &[SelectItem], names: &[String]) -> Option<usize> {
    if let SqlExpr::Value(v) = expr
        && let Value::Number(n, _) = &v.value
    {
        let n: usize = n.parse().ok()?;
        return (1..=names.len()).contains(&n).then(|| n - 1);
    }
    if let SqlExpr::Identifier(ident) = expr
        && let Some(i) = names.iter().position(|n| *n == normalize(ident))
    {
        return Some(i);
    }
    let text = expr.to_string();
    projection.iter().position(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            e.to_string() == text
        }
        _ => false,
    })
}

/// The aliases (of derived tables and CTEs) whose subqueries keep state
/// below an operator that a view cannot run over state in the same stage.
fn staged(plan: &LogicalPlan, below_state: bool, out: &mut HashSet<String>) {
    if let LogicalPlan::SubqueryAlias(a) = plan
        && below_state
        && keeps_state(&a.input)
    {
        // The chain of aliases down to the subquery (`c AS x` over CTE `c`).
        let mut node = plan;
        while let LogicalPlan::SubqueryAlias(a) = node {
            out.insert(a.alias.table().to_string());
            node = &a.input;
        }
        return;
    }
    let stateful = !matches!(
        plan,
        LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::SubqueryAlias(_)
    );
    for input in plan.inputs() {
        staged(input, below_state || stateful, out);
    }
}

/// Whether `plan` groups, ranks, limits or removes duplicates.
fn keeps_state(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|n| {
        found |= matches!(
            n,
            LogicalPlan::Aggregate(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Distinct(_)
        );
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// `query` with the CTEs `ctes` declared before its own.
fn with_ctes(query: &Query, ctes: &[sqlparser::ast::Cte], recursive: bool) -> Query {
    let mut query = query.clone();
    if ctes.is_empty() {
        return query;
    }
    match &mut query.with {
        Some(with) => {
            let mut all = ctes.to_vec();
            all.append(&mut with.cte_tables);
            with.cte_tables = all;
            with.recursive |= recursive;
        }
        None => {
            query.with = Some(With {
                with_token: AttachedToken::empty(),
                recursive,
                cte_tables: ctes.to_vec(),
            })
        }
    }
    query
}

/// Renames the relations `query` names after `renamed` (CTE → stage).
fn rename(query: &mut Query, renamed: &[(String, String)]) {
    if renamed.is_empty() {
        return;
    }
    let _ = query.visit(&mut Rename { renamed });
}

/// [`rename`] of the query's body (its own CTEs were renamed already).
fn rename_body(query: &mut Query, renamed: &[(String, String)]) {
    if renamed.is_empty() {
        return;
    }
    let _ = query.body.visit(&mut Rename { renamed });
    if let Some(order) = &mut query.order_by {
        let _ = order.visit(&mut Rename { renamed });
    }
}

struct Rename<'a> {
    renamed: &'a [(String, String)],
}

impl VisitorMut for Rename<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name, alias, args, ..
        } = factor
            && args.is_none()
            && let [part] = name.0.as_slice()
            && let Some(ident) = part.as_ident()
            && let Some((from, to)) = self.renamed.iter().find(|(f, _)| *f == normalize(ident))
        {
            if alias.is_none() {
                *alias = Some(TableAlias {
                    explicit: true,
                    name: Ident::with_quote('"', from.clone()),
                    columns: Vec::new(),
                    at: None,
                });
            }
            *name = quoted_name(to);
        }
        ControlFlow::Continue(())
    }
}

/// Replaces the derived tables whose aliases need stages.
struct Derived<'a> {
    aliases: &'a HashSet<String>,
    stages: &'a mut Vec<(String, Query)>,
    name: &'a str,
    ctes: &'a [sqlparser::ast::Cte],
    recursive: bool,
}

impl Derived<'_> {
    /// A derived table that is its SELECT's only relation takes the
    /// SELECT's WHERE into its stage (the filter then runs twice, to the
    /// same rows): a top-N's bound (`WHERE rn <= 10` over a ranking
    /// subquery) must be in the stage that ranks.
    fn with_filter(&mut self, body: &mut SetExpr) {
        let SetExpr::Select(select) = body else {
            return;
        };
        let ([from], Some(filter)) = (select.from.as_mut_slice(), &select.selection) else {
            return;
        };
        let TableFactor::Derived {
            lateral: false,
            alias: Some(alias),
            ..
        } = &from.relation
        else {
            return;
        };
        if !from.joins.is_empty()
            || !self.aliases.contains(&normalize(&alias.name))
            || has_subquery(filter)
        {
            return;
        }
        let staged = select_all_from(from.relation.clone(), Some(filter.clone()));
        let stage = stage_name(self.name, self.stages.len() + 1);
        self.stages
            .push((stage.clone(), with_ctes(&staged, self.ctes, self.recursive)));
        from.relation = table(&stage, alias.clone());
    }
}

/// `SELECT * FROM relation [WHERE filter]`.
fn select_all_from(relation: TableFactor, filter: Option<SqlExpr>) -> Query {
    let select = Select {
        select_token: AttachedToken::empty(),
        optimizer_hints: Vec::new(),
        distinct: None,
        select_modifiers: None,
        top: None,
        top_before_distinct: false,
        projection: vec![SelectItem::Wildcard(Default::default())],
        exclude: None,
        into: None,
        from: vec![TableWithJoins {
            relation,
            joins: Vec::new(),
        }],
        lateral_views: Vec::new(),
        prewhere: None,
        selection: filter,
        connect_by: Vec::new(),
        group_by: GroupByExpr::Expressions(Vec::new(), Vec::new()),
        cluster_by: Vec::new(),
        distribute_by: Vec::new(),
        sort_by: Vec::new(),
        having: None,
        named_window: Vec::new(),
        qualify: None,
        window_before_qualify: false,
        value_table_mode: None,
        flavor: SelectFlavor::Standard,
    };
    Query {
        body: Box::new(SetExpr::Select(Box::new(select))),
        ..empty_query()
    }
}

/// A query with nothing but an empty body, for filling in.
fn empty_query() -> Query {
    Query {
        with: None,
        body: Box::new(SetExpr::Values(sqlparser::ast::Values {
            explicit_row: false,
            value_keyword: false,
            rows: Vec::new(),
        })),
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks: Vec::new(),
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators: Vec::new(),
    }
}

/// Whether `e` holds a subquery.
fn has_subquery(e: &SqlExpr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(e, |e| {
        found |= matches!(
            e,
            SqlExpr::Subquery(_) | SqlExpr::InSubquery { .. } | SqlExpr::Exists { .. }
        );
        ControlFlow::<()>::Continue(())
    });
    found
}

impl VisitorMut for Derived<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.with_filter(&mut query.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        if !self.aliases.contains(&normalize(&alias.name)) {
            return ControlFlow::Continue(());
        }
        let stage = stage_name(self.name, self.stages.len() + 1);
        self.stages.push((
            stage.clone(),
            with_ctes(subquery, self.ctes, self.recursive),
        ));
        *factor = table(&stage, alias.clone());
        ControlFlow::Continue(())
    }
}

fn quoted_name(name: &str) -> ObjectName {
    ObjectName::from(vec![Ident::with_quote('"', name)])
}

/// A reference to relation `name` as `alias`.
fn table(name: &str, alias: TableAlias) -> TableFactor {
    TableFactor::Table {
        name: quoted_name(name),
        alias: Some(alias),
        args: None,
        with_hints: Vec::new(),
        version: None,
        with_ordinality: false,
        partitions: Vec::new(),
        json_path: None,
        sample: None,
        index_hints: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_tie_a_stage_to_its_view() {
        assert_eq!(stage_name("q5", 2), "__stage__q5__2");
        assert_eq!(stage_name("__stage__q5__2", 1), "__stage__q5__2_1");
        assert_eq!(stage_of("__stage__q5__2_1"), Some(("q5", "2_1")));
        assert_eq!(stage_of("__stage__a__1__3"), Some(("a__1", "3")));
        assert_eq!(stage_of("__stage__a__x"), None);
        assert_eq!(stage_of("__stage__a__1__"), None);
        assert_eq!(stage_of("__stage____1"), None);
        assert_eq!(stage_of("q5"), None);
    }
}
