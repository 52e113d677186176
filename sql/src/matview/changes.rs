//! `changes(view)`: a view's changelog as a table, for ad-hoc queries. The
//! table is a view whose plan scans the changelog under the view's name,
//! so reading it needs SELECT on the view.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::plan_err;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::logical_expr::LogicalPlanBuilder;

use crate::window::Tables;

/// `changes(view)`: a view's changelog as a table (`op`, the view's
/// columns, and the stream's system columns).
#[derive(Debug)]
pub struct ChangesFunction {
    changelogs: Tables,
}

impl ChangesFunction {
    pub fn new(changelogs: Tables) -> Self {
        Self { changelogs }
    }
}

impl TableFunctionImpl for ChangesFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let name = match args.exprs() {
            [datafusion::logical_expr::Expr::Column(c)] => c.name.clone(),
            [
                datafusion::logical_expr::Expr::Literal(
                    datafusion::common::ScalarValue::Utf8(Some(s)),
                    _,
                ),
            ] => s.clone(),
            _ => return plan_err!("changes(view): expected the name of a materialized view"),
        };
        let tables = self.changelogs.read().unwrap_or_else(|p| p.into_inner());
        let Some(t) = tables.get(&name) else {
            return plan_err!("changes({name}): no materialized view named \"{name}\"");
        };
        let plan = LogicalPlanBuilder::scan(name, provider_as_source(t.clone()), None)?.build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}
