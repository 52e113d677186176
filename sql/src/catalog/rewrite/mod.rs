//! Rewrites that make client catalog queries plannable by DataFusion, each
//! a PostgreSQL construct turned into an equivalent DataFusion has.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use sqlparser::ast::{
    Expr, FunctionArguments, ObjectName, SetExpr, Statement as SqlStatement, TableFactor, Visit,
    VisitMut, Visitor, VisitorMut,
};

use crate::dialect::{self, Statement};

pub(super) mod subqueries;

use subqueries::{array_agg_over, parse_expr};

/// `x LIKE p ESCAPE '/'`: DataFusion's LIKE knows only the backslash as
/// escape, so the pattern is translated: backslashes are doubled, `//`
/// becomes a literal `/`, `/%` and `/_` become `\%` and `\_`.
pub(super) fn like_escapes(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let (Expr::Like {
                pattern,
                escape_char,
                ..
            }
            | Expr::ILike {
                pattern,
                escape_char,
                ..
            }) = e
            else {
                return ControlFlow::Continue(());
            };
            let Some(esc) = escape_char
                .as_ref()
                .and_then(|v| v.value.clone().into_string())
            else {
                return ControlFlow::Continue(());
            };
            if esc == "\\" {
                return ControlFlow::Continue(());
            }
            let Some(c) = esc.chars().next().filter(|_| esc.chars().count() == 1) else {
                return ControlFlow::Continue(());
            };
            let q = |s: String| format!("'{}'", s.replace('\'', "''"));
            let translated = format!(
                "replace(replace(replace(replace(replace({pattern}, '\\', '\\\\'), {}, chr(1)), \
                 {}, '\\%'), {}, '\\_'), chr(1), {})",
                q(format!("{c}{c}")),
                q(format!("{c}%")),
                q(format!("{c}_")),
                q(c.to_string()),
            );
            if let Ok(p) = parse_expr(&translated) {
                **pattern = p;
                *escape_char = None;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// Does `stmt` read the system catalog?
pub fn is_catalog_query(stmt: &SqlStatement) -> bool {
    struct Finder {
        found: bool,
        tables: HashSet<&'static str>,
    }
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let parts: Vec<String> = name
                .0
                .iter()
                .filter_map(|p| p.as_ident())
                .map(dialect::normalize)
                .collect();
            let hit = match parts.as_slice() {
                [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
                [table] => self.tables.contains(table.as_str()),
                [] => false,
            };
            if hit {
                self.found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Cast { data_type, .. } = e {
                let name = data_type.to_string().to_ascii_lowercase();
                let name = name.rsplit('.').next().unwrap_or(&name);
                if name.starts_with("reg") {
                    self.found = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    if !matches!(stmt, SqlStatement::Query(_)) {
        return false;
    }
    let mut f = Finder {
        found: false,
        tables: PG_CATALOG_TABLES
            .iter()
            .copied()
            .chain(ADDED_RELATIONS.iter().copied())
            .collect(),
    };
    let _ = stmt.visit(&mut f);
    f.found
}

/// `ARRAY(SELECT x …)` becomes `(SELECT array_agg(x) FROM (SELECT x …))`:
/// PostgreSQL's array constructor over a subquery, which DataFusion lacks.
pub(super) fn array_subqueries(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Function(f) = e else {
                return ControlFlow::Continue(());
            };
            let is_array = named(&f.name, "array");
            if !is_array {
                return ControlFlow::Continue(());
            }
            let FunctionArguments::Subquery(q) = &f.args else {
                return ControlFlow::Continue(());
            };
            if always_empty(q) {
                if let Ok(x) = parse_expr("make_array()") {
                    *e = x;
                }
                return ControlFlow::Continue(());
            }
            *e = Expr::Subquery(Box::new(array_agg_over(q.as_ref().clone())));
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// Whether a subquery reads rows no catalog here has: row-security
/// policies (`pg_policy`), or column privileges (`pg_attribute` rows with
/// `attacl IS NOT NULL`). psql's `\dp` asks for both in correlated
/// subqueries DataFusion cannot plan; their answer is known to be empty.
fn always_empty(q: &sqlparser::ast::Query) -> bool {
    let sqlparser::ast::SetExpr::Select(select) = q.body.as_ref() else {
        return false;
    };
    let [from] = select.from.as_slice() else {
        return false;
    };
    let TableFactor::Table { name, .. } = &from.relation else {
        return false;
    };
    let Some(table) = name.0.last().and_then(|p| p.as_ident()) else {
        return false;
    };
    match dialect::normalize(table).as_str() {
        "pg_policy" => true,
        "pg_attribute" => select
            .selection
            .as_ref()
            .is_some_and(|w| w.to_string().contains("attacl IS NOT NULL")),
        _ => false,
    }
}

/// `generate_subscripts(a, d)` (a set-returning function) becomes
/// `unnest(generate_series(1, array_length(a, d)))`, which DataFusion
/// zips with the other `unnest`s of the select list as PostgreSQL does.
pub(super) fn generate_subscripts(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Function(f) = e else {
                return ControlFlow::Continue(());
            };
            let is_it = named(&f.name, "generate_subscripts");
            let FunctionArguments::List(list) = &f.args else {
                return ControlFlow::Continue(());
            };
            if !is_it || list.args.len() != 2 {
                return ControlFlow::Continue(());
            }
            let (a, d) = (&list.args[0], &list.args[1]);
            let sql = format!("unnest(generate_series(1, array_length({a}, {d})))");
            if let Ok(x) = parse_expr(&sql) {
                *e = x;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// `array_agg(a.atttypid …)` over an `oid` column of the catalog is an
/// `oid[]` in PostgreSQL; the catalog holds oids as int4, so the aggregate
/// is cast. (asyncpg decodes `oid[]` before it can introspect any other
/// array type; an `int4[]` there would send it looking up `int4[]` with
/// the very query that returns one.)
pub(super) fn oid_arrays(stmt: &mut SqlStatement, oid_columns: &HashSet<String>) {
    struct Rewriter<'a>(&'a HashSet<String>);
    impl VisitorMut for Rewriter<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Function(f) = e else {
                return ControlFlow::Continue(());
            };
            let is_agg = named(&f.name, "array_agg");
            let FunctionArguments::List(list) = &f.args else {
                return ControlFlow::Continue(());
            };
            let column = match list.args.first() {
                Some(sqlparser::ast::FunctionArg::Unnamed(
                    sqlparser::ast::FunctionArgExpr::Expr(Expr::Identifier(i)),
                )) => Some(i),
                Some(sqlparser::ast::FunctionArg::Unnamed(
                    sqlparser::ast::FunctionArgExpr::Expr(Expr::CompoundIdentifier(p)),
                )) => p.last(),
                _ => None,
            };
            if is_agg
                && list.args.len() == 1
                && column.is_some_and(|c| self.0.contains(&dialect::normalize(c)))
            {
                let sql = format!("CAST({e} AS oid[])");
                if let Ok(x) = parse_expr(&sql) {
                    *e = x;
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter(oid_columns));
}

/// Relations this catalog adds to the bundled `pg_catalog` (PostgreSQL
/// finds them without `pg_catalog.`, as every catalog relation).
pub(super) const ADDED_RELATIONS: &[&str] = &["pg_user"];

/// `pg_user` becomes `pg_catalog.pg_user` (the bundled relations are
/// qualified by the compatibility parser; these are not in its list).
pub(super) fn qualify_added_relations(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &mut ObjectName) -> ControlFlow<()> {
            if let [part] = name.0.as_slice()
                && let Some(ident) = part.as_ident()
                && ADDED_RELATIONS.contains(&dialect::normalize(ident).as_str())
            {
                let table = part.clone();
                *name = ObjectName(vec![
                    sqlparser::ast::ObjectNamePart::Identifier(sqlparser::ast::Ident::new(
                        "pg_catalog",
                    )),
                    table,
                ]);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// `column <> '{0}'` (or `=`) where `column` is one of the catalog's
/// number arrays: the literal is an array constructor's text, which
/// PostgreSQL casts to the column's type and DataFusion cannot; it becomes
/// `make_array(0)`.
pub(super) fn array_literals(stmt: &mut SqlStatement, array_columns: &HashSet<String>) {
    use sqlparser::ast::{BinaryOperator, Value};
    struct Rewriter<'a>(&'a HashSet<String>);
    impl VisitorMut for Rewriter<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::BinaryOp { left, op, right } = e else {
                return ControlFlow::Continue(());
            };
            if !matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq) {
                return ControlFlow::Continue(());
            }
            let column = match left.as_ref() {
                Expr::Identifier(i) => Some(i),
                Expr::CompoundIdentifier(p) => p.last(),
                _ => None,
            };
            if !column.is_some_and(|c| self.0.contains(&dialect::normalize(c))) {
                return ControlFlow::Continue(());
            }
            let Expr::Value(v) = right.as_ref() else {
                return ControlFlow::Continue(());
            };
            let Value::SingleQuotedString(text) = &v.value else {
                return ControlFlow::Continue(());
            };
            let Some(items) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
                return ControlFlow::Continue(());
            };
            let numbers = items
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .all(|n| n.parse::<i64>().is_ok());
            if numbers && let Ok(x) = parse_expr(&format!("make_array({items})")) {
                **right = x;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter(array_columns));
}

/// Scalar functions PostgreSQL lets a FROM clause call (one row, one
/// column named after the alias).
const SCALAR_IN_FROM: &[&str] = &[
    "string_to_array",
    "regexp_split_to_array",
    "current_schemas",
];

fn scalar_function_name(t: &TableFactor) -> Option<String> {
    match t {
        TableFactor::Table {
            name,
            args: Some(_),
            ..
        } => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_ascii_lowercase())
            .filter(|n| SCALAR_IN_FROM.contains(&n.as_str())),
        _ => None,
    }
}

/// Does `stmt` call one of [`SCALAR_IN_FROM`] as a relation?
pub(super) fn scalar_functions_in_from(stmt: &SqlStatement) -> bool {
    struct Finder(bool);
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            if scalar_function_name(t).is_some() {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Finder(false);
    let _ = stmt.visit(&mut f);
    f.0
}

/// `FROM string_to_array(x, ',') s` becomes
/// `FROM (SELECT string_to_array(x, ',') AS s) AS s`, and a single-column
/// table function with a bare alias (`generate_series(…) AS i`) names its
/// column after the alias, as PostgreSQL does.
pub(super) fn scalar_functions_as_relations(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
            if let Some(name) = scalar_function_name(t)
                && let TableFactor::Table {
                    args: Some(args),
                    alias,
                    ..
                } = t
            {
                let column = alias
                    .as_ref()
                    .map(|a| a.name.to_string())
                    .unwrap_or_else(|| name.clone());
                let args: Vec<String> = args.args.iter().map(|a| a.to_string()).collect();
                let sql = format!(
                    "SELECT * FROM (SELECT {name}({}) AS {column}) AS {column}",
                    args.join(", ")
                );
                if let Ok(Some(Statement::Sql(q))) = dialect::parse(&sql).map(|mut v| v.pop())
                    && let SqlStatement::Query(q) = *q
                    && let SetExpr::Select(sel) = *q.body
                    && let Some(from) = sel.from.into_iter().next()
                {
                    *t = from.relation;
                }
                return ControlFlow::Continue(());
            }
            if let TableFactor::Table {
                name,
                args: Some(_),
                alias: Some(alias),
                ..
            } = t
                && alias.columns.is_empty()
                && named(name, "generate_series")
            {
                alias
                    .columns
                    .push(sqlparser::ast::TableAliasColumnDef::from_name(
                        alias.name.value.clone(),
                    ));
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// `pg_table_is_visible(oid)`: the relation's schema is on the search path
/// (`public`, and `pg_catalog`, always searched). The catalog crate's
/// version answers true for every relation, which lists
/// `information_schema`'s views among a user's.
pub(super) fn table_visibility(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Function(f) = e else {
                return ControlFlow::Continue(());
            };
            let is_it = named(&f.name, "pg_table_is_visible");
            let FunctionArguments::List(list) = &f.args else {
                return ControlFlow::Continue(());
            };
            if !is_it || list.args.len() != 1 {
                return ControlFlow::Continue(());
            }
            let sql = format!(
                "{} IN (SELECT _vc.oid FROM pg_catalog.pg_class AS _vc \
                 JOIN pg_catalog.pg_namespace AS _vn ON _vn.oid = _vc.relnamespace \
                 WHERE _vn.nspname IN ('public', 'pg_catalog'))",
                list.args[0]
            );
            if let Ok(x) = parse_expr(&sql) {
                *e = x;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// Is the (possibly qualified) name `name`, case-insensitively?
fn named(name: &ObjectName, wanted: &str) -> bool {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case(wanted))
}

/// Catalog columns of type `regproc`, which the bundled rows hold as the
/// function's name (`-` for none) rather than its oid.
const REGPROC_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
    "typsubscript",
    "aggfnoid",
    "aggtransfn",
    "aggfinalfn",
    "oprcode",
    "oprrest",
    "oprjoin",
];

/// `typreceive != 0` (ADBC's type probe): a `regproc` compared with oid 0
/// asks whether there is a function; with names, that is `<> '-'`.
pub(super) fn regproc_zero(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            use sqlparser::ast::BinaryOperator as B;
            let Expr::BinaryOp { left, op, right } = e else {
                return ControlFlow::Continue(());
            };
            if !matches!(op, B::Eq | B::NotEq) {
                return ControlFlow::Continue(());
            }
            let is_regproc = |x: &Expr| {
                let name = match x {
                    Expr::Identifier(i) => Some(i),
                    Expr::CompoundIdentifier(p) => p.last(),
                    _ => None,
                };
                name.is_some_and(|i| REGPROC_COLUMNS.contains(&dialect::normalize(i).as_str()))
            };
            let is_zero = |x: &Expr| matches!(x, Expr::Value(v) if matches!(&v.value, sqlparser::ast::Value::Number(n, _) if n == "0"));
            let dash = Expr::Value(sqlparser::ast::Value::SingleQuotedString("-".into()).into());
            if is_regproc(left) && is_zero(right) {
                **right = dash;
            } else if is_regproc(right) && is_zero(left) {
                **left = dash;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

/// PostgreSQL's `user` (a bare keyword, the same as `current_user`).
pub(super) fn user_keyword(stmt: &mut SqlStatement) {
    struct Rewriter;
    impl VisitorMut for Rewriter {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            // sqlparser reads it as an argument-less function call.
            let is_user = match e {
                Expr::Identifier(i) => {
                    i.quote_style.is_none() && i.value.eq_ignore_ascii_case("user")
                }
                Expr::Function(f) => {
                    matches!(f.args, FunctionArguments::None)
                        && f.name.0.len() == 1
                        && f.name.0[0].as_ident().is_some_and(|i| {
                            i.quote_style.is_none() && i.value.eq_ignore_ascii_case("user")
                        })
                }
                _ => false,
            };
            if is_user && let Ok(x) = parse_expr("pg_catalog.current_user()") {
                *e = x;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter);
}

#[cfg(test)]
mod tests {
    use super::subqueries::*;
    use super::*;

    fn one(sql: &str) -> SqlStatement {
        match dialect::parse(sql).unwrap().pop().unwrap() {
            Statement::Sql(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn rewritten(sql: &str, rule: fn(&mut SqlStatement)) -> String {
        let mut s = one(sql);
        rule(&mut s);
        s.to_string()
    }

    #[test]
    fn regproc_compared_with_zero_asks_for_a_function() {
        assert_eq!(
            rewritten(
                "SELECT oid FROM pg_type WHERE typreceive != 0 AND 0 = t.typsend AND typlen = 0",
                regproc_zero
            ),
            "SELECT oid FROM pg_type WHERE typreceive <> '-' AND '-' = t.typsend AND typlen = 0"
        );
    }

    #[test]
    fn scalar_functions_in_from_become_one_row_relations() {
        assert_eq!(
            rewritten(
                "SELECT s[i] FROM generate_series(1, 2) AS i, string_to_array('a,b', ',') s",
                scalar_functions_as_relations
            ),
            "SELECT s[i] FROM generate_series(1, 2) AS i (i), \
             (SELECT string_to_array('a,b', ',') AS s) AS s"
        );
    }

    #[test]
    fn bare_user_is_the_current_user() {
        assert_eq!(
            rewritten("SELECT user, \"user\" FROM t", user_keyword),
            // sqlparser prints the argument-less call without parentheses.
            "SELECT pg_catalog.current_user, \"user\" FROM t"
        );
    }

    #[test]
    fn visibility_means_on_the_search_path() {
        let out = rewritten(
            "SELECT relname FROM pg_class c WHERE pg_table_is_visible(c.oid)",
            table_visibility,
        );
        assert!(
            out.contains("c.oid IN (SELECT _vc.oid FROM pg_catalog.pg_class"),
            "{out}"
        );
        assert!(
            out.contains("_vn.nspname IN ('public', 'pg_catalog')"),
            "{out}"
        );
    }

    #[test]
    fn correlated_recursive_lookups_are_null() {
        let sql = "SELECT t.oid, (WITH RECURSIVE b(oid) AS (SELECT t2.typbasetype FROM pg_type t2 \
                   WHERE t2.oid = t.oid UNION ALL SELECT t3.typbasetype FROM pg_type t3, b \
                   WHERE b.oid = t3.oid) SELECT oid FROM b LIMIT 1) FROM pg_type t";
        assert_eq!(
            rewritten(sql, null_recursive_lookups),
            "SELECT t.oid, NULL FROM pg_type t"
        );
        // Uncorrelated: left alone.
        let sql = "SELECT (WITH RECURSIVE b(n) AS (SELECT 1 UNION ALL SELECT b.n + 1 FROM b \
                   WHERE b.n < 3) SELECT max(n) FROM b)";
        assert!(rewritten(sql, null_recursive_lookups).contains("WITH RECURSIVE"));
    }

    #[test]
    fn only_catalog_queries_qualify() {
        assert!(is_catalog_query(&one(
            "SELECT relname FROM pg_catalog.pg_class"
        )));
        assert!(is_catalog_query(&one("SELECT * FROM pg_type")));
        assert!(is_catalog_query(&one(
            "SELECT table_name FROM information_schema.tables"
        )));
        assert!(is_catalog_query(&one("SELECT 'orders'::regclass")));
        assert!(!is_catalog_query(&one(
            "SELECT a, (SELECT count(*) FROM b WHERE b.k = a.k) FROM a"
        )));
        assert!(!is_catalog_query(&one("INSERT INTO s SELECT * FROM t")));
    }

    #[test]
    fn like_escape_becomes_backslash() {
        let mut s = one("SELECT 'pg_x' LIKE 'pg/_%' ESCAPE '/'");
        like_escapes(&mut s);
        assert_eq!(
            s.to_string(),
            "SELECT 'pg_x' LIKE replace(replace(replace(replace(replace('pg/_%', '\\', '\\\\'), \
             '//', chr(1)), '/%', '\\%'), '/_', '\\_'), chr(1), '/')"
        );
    }

    #[test]
    fn outer_only_conjuncts_leave_the_subquery() {
        let mut s = one(
            "SELECT (SELECT d.x FROM pg_attrdef AS d WHERE a.atthasdef AND d.adrelid = a.attrelid) \
             FROM pg_attribute AS a",
        );
        hoist_outer_predicates(&mut s);
        assert_eq!(
            s.to_string(),
            "SELECT CASE WHEN a.atthasdef THEN (SELECT d.x FROM pg_attrdef AS d \
             WHERE d.adrelid = a.attrelid) END FROM pg_attribute AS a"
        );
    }

    #[test]
    fn array_of_a_subquery_becomes_array_agg() {
        let mut s = one("SELECT array(SELECT rolname FROM pg_roles ORDER BY 1)");
        array_subqueries(&mut s);
        assert_eq!(
            s.to_string(),
            "SELECT (SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles)"
        );
        let mut s = one("SELECT array(SELECT DISTINCT rolname FROM pg_roles)");
        array_subqueries(&mut s);
        assert_eq!(
            s.to_string(),
            "SELECT (SELECT array_agg(_array_element) FROM \
             (SELECT DISTINCT rolname AS _array_element FROM pg_roles) AS _array)"
        );
    }
}
