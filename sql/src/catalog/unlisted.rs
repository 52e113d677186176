//! The `public` schema as listings see it: relations under the reserved
//! prefix `__` (views' stages, tables' logs) are left out of its names —
//! so `pg_class`, `information_schema` and the Flight SQL catalog do not
//! show them — and are still found by name (the views that read them plan
//! through it).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;
use datafusion::prelude::SessionContext;
use streamhouse_log::RESERVED_PREFIX;

use crate::error::{Result, SqlError};

/// Wraps schema `schema` of `catalog` in `ctx` so that its listing leaves
/// internal relations out.
pub fn install(ctx: &SessionContext, catalog: &str, schema: &str) -> Result<()> {
    let missing = || SqlError::Internal(format!("schema {catalog}.{schema} missing"));
    let catalog = ctx.catalog(catalog).ok_or_else(missing)?;
    let inner = catalog.schema(schema).ok_or_else(missing)?;
    catalog.register_schema(schema, Arc::new(Unlisted { inner }))?;
    Ok(())
}

#[derive(Debug)]
struct Unlisted {
    inner: Arc<dyn SchemaProvider>,
}

#[async_trait]
impl SchemaProvider for Unlisted {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.retain(|n| !n.starts_with(RESERVED_PREFIX));
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.inner.table(name).await
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        self.inner.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}
