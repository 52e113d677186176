//! Correlated scalar subqueries of catalog clients made plannable:
//! predicates on the outer row hoisted out, lookups DataFusion cannot
//! decorrelate turned into NULL or into an aggregate over the key. Also
//! the helpers every rewrite shares: parsing an expression, and
//! `array_agg` over a query.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::dialect::{self, Statement};
use sqlparser::ast::{
    Expr, Ident, Query, SelectItem, SetExpr, Statement as SqlStatement, TableFactor,
    TableWithJoins, Visit, VisitMut, Visitor, VisitorMut,
};

/// `(SELECT e FROM t WHERE outer.flag AND t.k = outer.k)`: conjuncts that
/// test only the outer row move out of the subquery, giving
/// `CASE WHEN outer.flag THEN (SELECT e FROM t WHERE t.k = outer.k) END`
/// (the same value: no row is NULL either way). DataFusion decorrelates
/// equality predicates only; catalog clients guard lookups with flags like
/// `pg_attribute.atthasdef`.
pub(in crate::catalog) fn hoist_outer_predicates(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Subquery(q) = e else {
                return ControlFlow::Continue(());
            };
            let SetExpr::Select(s) = q.body.as_mut() else {
                return ControlFlow::Continue(());
            };
            let Some(selection) = s.selection.take() else {
                return ControlFlow::Continue(());
            };
            let inner = relation_names(&s.from);
            let (outer, kept): (Vec<Expr>, Vec<Expr>) = conjuncts(selection)
                .into_iter()
                .partition(|c| only_outer(c, &inner));
            s.selection = conjoin(kept);
            if let Some(guard) = conjoin(outer) {
                let case = format!("CASE WHEN {guard} THEN ({q}) END");
                if let Ok(c) = parse_expr(&case) {
                    *e = c;
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// A scalar subquery whose select list reads the outer row (SQLAlchemy's
/// identity-column probe builds a JSON object from `pg_attribute` inside a
/// lookup on `pg_sequence`) is beyond DataFusion's decorrelation. In a
/// catalog query such a subquery describes something StreamHouse has none
/// of (identity columns, sequences), so its value is NULL.
pub(in crate::catalog) fn null_outer_projections(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Subquery(q) = e else {
                return ControlFlow::Continue(());
            };
            let SetExpr::Select(s) = q.body.as_ref() else {
                return ControlFlow::Continue(());
            };
            let inner = relation_names(&s.from);
            let outer = s.projection.iter().any(|item| match item {
                SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. } => {
                    reads_outer(x, &inner)
                }
                _ => false,
            });
            if outer {
                *e = Expr::Value(sqlparser::ast::Value::Null.into());
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// A correlated scalar subquery around a recursive CTE (asyncpg walks a
/// domain's base types that way) is beyond DataFusion's decorrelation. It
/// only ever finds domains, which StreamHouse has none of, so in a catalog
/// query its value is NULL.
pub(in crate::catalog) fn null_recursive_lookups(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Subquery(q) = e else {
                return ControlFlow::Continue(());
            };
            if q.with.as_ref().is_some_and(|w| w.recursive) && correlated(q) {
                *e = Expr::Value(sqlparser::ast::Value::Null.into());
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// Does `q` name a column of a relation it does not itself define?
fn correlated(q: &Query) -> bool {
    struct Names(HashSet<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            self.0.extend(relation_names(&[TableWithJoins {
                relation: t.clone(),
                joins: vec![],
            }]));
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                for cte in &w.cte_tables {
                    self.0.insert(dialect::normalize(&cte.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    struct Outer<'a>(&'a HashSet<String>, bool);
    impl Visitor for Outer<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::CompoundIdentifier(parts) = e
                && parts.len() >= 2
                && !self
                    .0
                    .contains(&dialect::normalize(&parts[parts.len() - 2]))
            {
                self.1 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(HashSet::new());
    let _ = q.visit(&mut names);
    let mut outer = Outer(&names.0, false);
    let _ = q.visit(&mut outer);
    outer.1
}

/// Does `e` name a column qualified by a relation other than `inner`'s
/// (not looking into nested subqueries)?
fn reads_outer(e: &Expr, inner: &HashSet<String>) -> bool {
    struct Check<'a>(&'a HashSet<String>, bool, usize);
    impl Visitor for Check<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => self.2 += 1,
                Expr::CompoundIdentifier(parts)
                    if self.2 == 0
                        && parts.len() >= 2
                        && !self
                            .0
                            .contains(&dialect::normalize(&parts[parts.len() - 2])) =>
                {
                    self.1 = true;
                    return ControlFlow::Break(());
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if matches!(
                e,
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
            ) {
                self.2 -= 1;
            }
            ControlFlow::Continue(())
        }
    }
    let mut c = Check(inner, false, 0);
    let _ = e.visit(&mut c);
    c.1
}

/// The names a FROM list's relations are referred to by (alias, else the
/// table's own name).
fn relation_names(from: &[TableWithJoins]) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut add = |t: &TableFactor| match t {
        TableFactor::Table { name, alias, .. } => {
            let n = match alias {
                Some(a) => Some(dialect::normalize(&a.name)),
                None => name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(dialect::normalize),
            };
            names.extend(n);
        }
        TableFactor::Derived { alias: Some(a), .. } => {
            names.insert(dialect::normalize(&a.name));
        }
        _ => {}
    };
    for t in from {
        add(&t.relation);
        for j in &t.joins {
            add(&j.relation);
        }
    }
    names
}

fn conjuncts(e: Expr) -> Vec<Expr> {
    match e {
        Expr::BinaryOp {
            left,
            op: sqlparser::ast::BinaryOperator::And,
            right,
        } => {
            let mut v = conjuncts(*left);
            v.extend(conjuncts(*right));
            v
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: sqlparser::ast::BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner)
        }
        other => vec![other],
    }
}

fn conjoin(parts: Vec<Expr>) -> Option<Expr> {
    parts.into_iter().reduce(|l, r| Expr::BinaryOp {
        left: Box::new(l),
        op: sqlparser::ast::BinaryOperator::And,
        right: Box::new(r),
    })
}

/// Does `e` read columns of the outer query only (every column qualified
/// by a relation that is not one of `inner`, no subquery)?
fn only_outer(e: &Expr, inner: &HashSet<String>) -> bool {
    struct Check<'a> {
        inner: &'a HashSet<String>,
        columns: usize,
        ok: bool,
    }
    impl Visitor for Check<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Identifier(_)
                | Expr::Subquery(_)
                | Expr::Exists { .. }
                | Expr::InSubquery { .. } => {
                    self.ok = false;
                    return ControlFlow::Break(());
                }
                Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                    let qualifier = dialect::normalize(&parts[parts.len() - 2]);
                    if self.inner.contains(&qualifier) {
                        self.ok = false;
                        return ControlFlow::Break(());
                    }
                    self.columns += 1;
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut c = Check {
        inner,
        columns: 0,
        ok: true,
    };
    let _ = e.visit(&mut c);
    c.ok && c.columns > 0
}

/// Aggregates that make a subquery return at most one row.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
];

/// `(SELECT c.relkind = 'c' FROM pg_class c WHERE c.oid = t.typrelid)`:
/// catalog clients look rows up by key in scalar subqueries, which
/// PostgreSQL checks at run time to return at most one row and DataFusion
/// refuses to decorrelate unless aggregated. Over a key the one row's value
/// is its `max`, so the select item is wrapped in `max(…)`.
pub(in crate::catalog) fn aggregate_scalar_subqueries(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Subquery(q) = e else {
                return ControlFlow::Continue(());
            };
            if q.limit_clause.is_some() || q.fetch.is_some() {
                return ControlFlow::Continue(());
            }
            let SetExpr::Select(s) = q.body.as_mut() else {
                return ControlFlow::Continue(());
            };
            let grouped = !matches!(&s.group_by, sqlparser::ast::GroupByExpr::Expressions(g, _) if g.is_empty());
            if grouped || s.distinct.is_some() || s.having.is_some() {
                return ControlFlow::Continue(());
            }
            let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
                s.projection.as_mut_slice()
            else {
                return ControlFlow::Continue(());
            };
            if contains_aggregate(item) {
                return ControlFlow::Continue(());
            }
            let wrapped = format!("max({item})");
            if let Ok(w) = parse_expr(&wrapped) {
                *item = w;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

fn contains_aggregate(e: &Expr) -> bool {
    struct Finder(bool);
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Subquery(_) = e {
                // An aggregate inside a nested subquery does not count.
                return ControlFlow::Continue(());
            }
            if let Expr::Function(f) = e
                && let Some(name) = f.name.0.last().and_then(|p| p.as_ident())
                && AGGREGATES.contains(&name.value.to_ascii_lowercase().as_str())
            {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Finder(false);
    let _ = e.visit(&mut f);
    f.0
}

pub(super) fn array_agg_over(mut inner: Query) -> Query {
    if aggregate_in_place(&mut inner) {
        inner
    } else {
        aggregate_derived(inner)
    }
}

/// `SELECT x FROM … WHERE … ORDER BY y` becomes
/// `SELECT array_agg(x ORDER BY y) FROM … WHERE …`, which stays a
/// (possibly correlated) scalar subquery DataFusion can decorrelate.
/// Leaves the query untouched (false) when its shape does not allow it.
fn aggregate_in_place(q: &mut Query) -> bool {
    let simple = q.limit_clause.is_none() && q.fetch.is_none() && q.with.is_none();
    let SetExpr::Select(s) = q.body.as_mut() else {
        return false;
    };
    let grouped =
        !matches!(&s.group_by, sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    if !simple || grouped || s.distinct.is_some() || s.having.is_some() {
        return false;
    }
    let [SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }] =
        s.projection.as_slice()
    else {
        return false;
    };
    let element = e.clone();
    let mut order = String::new();
    if let Some(ob) = &q.order_by
        && let sqlparser::ast::OrderByKind::Expressions(items) = &ob.kind
    {
        let mut parts = Vec::new();
        for item in items {
            // `ORDER BY 1` names the only output column.
            let by = match &item.expr {
                Expr::Value(v) if v.to_string() == "1" => element.to_string(),
                other => other.to_string(),
            };
            parts.push(format!("{by}{}", item.options));
        }
        order = format!(" ORDER BY {}", parts.join(", "));
    }
    let agg = format!("array_agg({element}{order})");
    let Ok(agg) = parse_expr(&agg) else {
        return false;
    };
    if let SetExpr::Select(s) = q.body.as_mut() {
        s.projection = vec![SelectItem::UnnamedExpr(agg)];
    }
    q.order_by = None;
    true
}

/// The general form: aggregate the subquery's only column from outside.
fn aggregate_derived(inner: Query) -> Query {
    let column = Ident::new("_array_element");
    let inner = alias_single_column(inner, &column);
    let mut outer =
        match dialect::parse("SELECT array_agg(_array_element) FROM (SELECT 1) AS _array")
            .ok()
            .and_then(|mut v| v.pop())
        {
            Some(Statement::Sql(s)) => match *s {
                SqlStatement::Query(q) => *q,
                _ => unreachable!("the template is a query"),
            },
            _ => unreachable!("the template parses"),
        };
    if let SetExpr::Select(s) = outer.body.as_mut()
        && let Some(TableWithJoins {
            relation: TableFactor::Derived { subquery, .. },
            ..
        }) = s.from.first_mut()
    {
        **subquery = inner;
    }
    outer
}

fn alias_single_column(mut q: Query, column: &Ident) -> Query {
    if let SetExpr::Select(s) = q.body.as_mut()
        && let [item] = s.projection.as_mut_slice()
    {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
            _ => return q,
        };
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: column.clone(),
        };
    }
    q
}

/// An expression parsed from SQL text a rule composed (an error leaves
/// the statement as it was).
pub(super) fn parse_expr(sql: &str) -> std::result::Result<Expr, sqlparser::parser::ParserError> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
}
