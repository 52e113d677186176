//! Hiding the system columns from `SELECT *`.
//!
//! A stream's table schema includes `_partition`, `_offset` and
//! `_timestamp`, so naming them works; `*` must not show them. DataFusion
//! expands wildcards inside its plan builder, so the rewrite happens on the
//! AST before planning: a wildcard over a single stream gets
//! `EXCLUDE (_partition, _offset, _timestamp)`; an unqualified `*` over a
//! join that involves a stream becomes one qualified wildcard per relation,
//! with the exclusion on the streams'. Names are resolved against the
//! catalog's stream names, minus CTE names in scope (which shadow them).

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    CastKind, DataType, ExcludeSelectItem, Expr, Ident, ObjectName, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, UnaryOperator, Value,
    VisitMut, VisitorMut, WildcardAdditionalOptions,
};
use streamhouse_log::stream::{OFFSET_COLUMN, PARTITION_COLUMN, TIMESTAMP_COLUMN};

use crate::dialect::normalize;

const SYSTEM: [&str; 3] = [PARTITION_COLUMN, OFFSET_COLUMN, TIMESTAMP_COLUMN];

/// Folds unquoted table-function names to lower case, as PostgreSQL folds
/// every unquoted name (DataFusion looks table functions up verbatim, so
/// `TUMBLE(…)` would not find `tumble`).
pub fn fold_table_function_names(stmt: &mut Statement) {
    struct Folder;
    impl VisitorMut for Folder {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                args: Some(_),
                ..
            } = t
            {
                for part in name.0.iter_mut() {
                    if let sqlparser::ast::ObjectNamePart::Identifier(i) = part
                        && i.quote_style.is_none()
                    {
                        i.value = i.value.to_lowercase();
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Folder);
}

/// PostgreSQL types an integer literal that fits 32 bits as `integer`;
/// DataFusion makes every integer literal `Int64`. A literal that is itself
/// a select-list value (`SELECT 1`, `CASE … THEN 1 ELSE 0 END`) is cast to
/// `INT`, so clients see the column type PostgreSQL would send. Operands of
/// arithmetic stay `Int64`: DataFusion's 32-bit arithmetic wraps where
/// PostgreSQL raises "integer out of range", and a wider exact result beats
/// a wrapped one.
pub fn integer_literals(stmt: &mut Statement) {
    struct Caster;
    impl VisitorMut for Caster {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(s) = q.body.as_mut() {
                for item in s.projection.iter_mut() {
                    if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } =
                        item
                    {
                        cast_int_literals(e);
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Caster);
}

fn cast_int_literals(e: &mut Expr) {
    match e {
        Expr::Value(v) => {
            if let Value::Number(n, _) = &v.value
                && n.parse::<i32>().is_ok()
            {
                let literal = e.clone();
                *e = Expr::Cast {
                    kind: CastKind::Cast,
                    expr: Box::new(literal),
                    data_type: DataType::Int(None),
                    array: false,
                    format: None,
                };
            }
        }
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        }
        | Expr::Nested(expr) => cast_int_literals(expr),
        Expr::Case {
            conditions,
            else_result,
            ..
        } => {
            for c in conditions {
                cast_int_literals(&mut c.result);
            }
            if let Some(e) = else_result {
                cast_int_literals(e);
            }
        }
        _ => {}
    }
}

/// Rewrites every wildcard of `stmt` that would expose system columns.
pub fn hide_system_columns(stmt: &mut Statement, streams: &HashSet<String>) {
    let mut v = Hider {
        streams,
        ctes: Vec::new(),
    };
    let _ = stmt.visit(&mut v);
}

struct Hider<'a> {
    streams: &'a HashSet<String>,
    ctes: Vec<HashSet<String>>,
}

/// A relation of a FROM clause: how `*` may qualify it, and whether it is a
/// stream.
struct Relation {
    qualifier: Option<ObjectName>,
    stream: bool,
}

impl Hider<'_> {
    fn is_stream(&self, name: &ObjectName) -> bool {
        let Some(last) = name.0.last().and_then(|p| p.as_ident()) else {
            return false;
        };
        let n = normalize(last);
        self.streams.contains(&n) && !self.ctes.iter().any(|s| s.contains(&n))
    }

    fn relations(&self, select: &Select) -> Vec<Relation> {
        let mut out = Vec::new();
        for twj in &select.from {
            for factor in
                std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation))
            {
                out.push(match factor {
                    TableFactor::Table {
                        name, alias, args, ..
                    } => Relation {
                        qualifier: Some(match alias {
                            Some(a) => ObjectName::from(vec![a.name.clone()]),
                            None => name.clone(),
                        }),
                        stream: args.is_none() && self.is_stream(name),
                    },
                    TableFactor::Derived { alias, .. } => Relation {
                        qualifier: alias
                            .as_ref()
                            .map(|a| ObjectName::from(vec![a.name.clone()])),
                        stream: false,
                    },
                    _ => Relation {
                        qualifier: None,
                        stream: false,
                    },
                });
            }
        }
        out
    }

    fn rewrite_select(&self, select: &mut Select) {
        let rels = self.relations(select);
        if !rels.iter().any(|r| r.stream) {
            return;
        }
        let mut items = Vec::with_capacity(select.projection.len());
        for item in std::mem::take(&mut select.projection) {
            match item {
                SelectItem::Wildcard(mut opts) if rels.len() == 1 => {
                    exclude_system(&mut opts);
                    items.push(SelectItem::Wildcard(opts));
                }
                SelectItem::Wildcard(opts)
                    if plain(&opts) && rels.iter().all(|r| r.qualifier.is_some()) =>
                {
                    for r in &rels {
                        let mut o = opts.clone();
                        if r.stream {
                            exclude_system(&mut o);
                        }
                        let q = r.qualifier.clone().unwrap_or_else(|| ObjectName(vec![]));
                        items.push(SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(q),
                            o,
                        ));
                    }
                }
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(q),
                    mut opts,
                ) => {
                    let stream = rels
                        .iter()
                        .any(|r| r.stream && r.qualifier.as_ref().is_some_and(|rq| same(rq, &q)));
                    if stream {
                        exclude_system(&mut opts);
                    }
                    items.push(SelectItem::QualifiedWildcard(
                        SelectItemQualifiedWildcardKind::ObjectName(q),
                        opts,
                    ));
                }
                other => items.push(other),
            }
        }
        select.projection = items;
    }

    fn rewrite_set(&self, body: &mut SetExpr) {
        match body {
            SetExpr::Select(s) => self.rewrite_select(s),
            SetExpr::SetOperation { left, right, .. } => {
                self.rewrite_set(left);
                self.rewrite_set(right);
            }
            // Nested queries are visited as queries of their own.
            _ => {}
        }
    }
}

impl VisitorMut for Hider<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let ctes = query
            .with
            .as_ref()
            .map(|w| {
                w.cte_tables
                    .iter()
                    .map(|c| normalize(&c.alias.name))
                    .collect()
            })
            .unwrap_or_default();
        self.ctes.push(ctes);
        self.rewrite_set(&mut query.body);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &mut Query) -> ControlFlow<()> {
        self.ctes.pop();
        ControlFlow::Continue(())
    }
}

/// A wildcard with no options of its own.
fn plain(o: &WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
}

fn same(a: &ObjectName, b: &ObjectName) -> bool {
    let key = |n: &ObjectName| -> Vec<String> {
        n.0.iter()
            .map(|p| p.as_ident().map(normalize).unwrap_or_default())
            .collect()
    };
    key(a) == key(b)
}

fn exclude_system(opts: &mut WildcardAdditionalOptions) {
    let mut names: Vec<ObjectName> = match opts.opt_exclude.take() {
        None => Vec::new(),
        Some(ExcludeSelectItem::Single(n)) => vec![n],
        Some(ExcludeSelectItem::Multiple(ns)) => ns,
    };
    for s in SYSTEM {
        let already = names.iter().any(|n| {
            n.0.last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| normalize(i) == s)
        });
        if !already {
            names.push(ObjectName::from(vec![Ident::new(s)]));
        }
    }
    opts.opt_exclude = Some(ExcludeSelectItem::Multiple(names));
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn rewrite(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        let streams: HashSet<String> = ["orders".to_string(), "users".to_string()].into();
        hide_system_columns(&mut stmt, &streams);
        stmt.to_string()
    }

    #[test]
    fn single_stream_wildcards_exclude_system_columns() {
        assert_eq!(
            rewrite("SELECT * FROM orders WHERE _offset > 3"),
            "SELECT * EXCLUDE (_partition, _offset, _timestamp) FROM orders WHERE _offset > 3"
        );
        assert_eq!(
            rewrite("SELECT o.* FROM Orders AS o"),
            "SELECT o.* EXCLUDE (_partition, _offset, _timestamp) FROM Orders AS o"
        );
        // Named system columns stay.
        assert_eq!(
            rewrite("SELECT _offset, * FROM orders")
                .matches("EXCLUDE")
                .count(),
            1
        );
    }

    #[test]
    fn joins_subqueries_ctes_and_non_streams() {
        assert_eq!(
            rewrite("SELECT * FROM orders o JOIN t ON o.id = t.id"),
            "SELECT o.* EXCLUDE (_partition, _offset, _timestamp), t.* FROM orders o JOIN t ON o.id = t.id"
        );
        assert_eq!(
            rewrite("SELECT * FROM (SELECT * FROM orders) AS x"),
            "SELECT * FROM (SELECT * EXCLUDE (_partition, _offset, _timestamp) FROM orders) AS x"
        );
        assert_eq!(
            rewrite("WITH orders AS (SELECT 1 AS a) SELECT * FROM orders"),
            "WITH orders AS (SELECT 1 AS a) SELECT * FROM orders"
        );
        assert_eq!(rewrite("SELECT * FROM t"), "SELECT * FROM t");
        assert!(
            rewrite("SELECT * FROM orders UNION ALL SELECT * FROM users")
                .matches("EXCLUDE")
                .count()
                == 2
        );
        assert!(rewrite("SELECT id FROM t WHERE id IN (SELECT * FROM orders)").contains("EXCLUDE"));
    }
}
