//! Output column names the way PostgreSQL chooses them.
//!
//! DataFusion names an unaliased expression after its whole text
//! (`sum(orders.amount)`); PostgreSQL names it after the column or function
//! (`sum`), and anything else `?column?`. Clients and BI tools read these
//! names, so results are renamed to PostgreSQL's choice. Aliases, wildcards
//! and plain columns keep their names.

use sqlparser::ast::{Expr, Query, SelectItem, SetExpr};

use crate::dialect::normalize;

/// The PostgreSQL name of each output column of `query`, or `None` where the
/// planner's name is already right. `None` overall when the select list has
/// a wildcard (its width is only known after planning).
pub fn output_names(query: &Query) -> Option<Vec<Option<String>>> {
    let mut body = query.body.as_ref();
    loop {
        match body {
            SetExpr::SetOperation { left, .. } => body = left,
            SetExpr::Query(q) => body = q.body.as_ref(),
            SetExpr::Select(s) => {
                return s
                    .projection
                    .iter()
                    .map(|item| match item {
                        SelectItem::UnnamedExpr(e) => Some(Some(expr_name(e))),
                        SelectItem::ExprWithAlias { .. } => Some(None),
                        _ => None,
                    })
                    .collect();
            }
            _ => return None,
        }
    }
}

fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => normalize(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalize).unwrap_or_default(),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(normalize)
            .unwrap_or_default(),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => match expr_name(expr).as_str() {
            "?column?" => "?column?".into(),
            n => n.into(),
        },
        Expr::Case { .. } => "case".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Array(_) => "array".into(),
        _ => "?column?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::Statement;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn names(sql: &str) -> Option<Vec<Option<String>>> {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
        {
            Statement::Query(q) => output_names(&q),
            _ => unreachable!(),
        }
    }

    #[test]
    fn like_postgres() {
        let n = names("SELECT o.user_id, sum(amount), count(*), 1 + 2, amount::int, CASE WHEN true THEN 1 END, x AS y FROM o").unwrap();
        let n: Vec<String> = n
            .into_iter()
            .map(|x| x.unwrap_or_else(|| "<keep>".into()))
            .collect();
        assert_eq!(
            n,
            [
                "user_id", "sum", "count", "?column?", "amount", "case", "<keep>"
            ]
        );
        assert_eq!(names("SELECT * FROM o"), None);
        assert_eq!(
            names("SELECT a FROM o UNION SELECT b FROM p").unwrap(),
            [Some("a".to_string())]
        );
    }
}
