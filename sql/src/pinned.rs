//! Planning against pinned schema versions. A materialized view reads each
//! input stream through the schema version it was made with, so a later
//! `ALTER STREAM` (a column added, renamed or dropped) changes neither its
//! plan nor the shape of what it keeps: when the view is compiled again
//! (restart, lease move) its query is planned in a session whose stream
//! tables — in the catalog and behind the window table functions — are
//! those versions, while every other name resolves as usual.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use streamhouse_streams::scan::StreamTable;

use crate::window::{Kind, Tables, WindowFunction};

/// A copy of `state` in which the bare table names of `pinned` resolve to
/// those tables (in the default catalog and schema, and for TUMBLE, HOP and
/// SESSION); `tables` are the session's stream tables for the window
/// functions.
pub(crate) fn pinned_state(
    state: SessionState,
    tables: &Tables,
    pinned: HashMap<String, Arc<StreamTable>>,
) -> SessionState {
    let options = state.config_options().catalog.clone();
    let list = Arc::new(PinnedList {
        inner: state.catalog_list().clone(),
        catalog: options.default_catalog,
        schema: options.default_schema,
        pinned: Arc::new(pinned.clone()),
    });
    let mut state = SessionStateBuilder::new_from_existing(state)
        .with_catalog_list(list)
        .build();
    let mut windowed = tables.read().unwrap_or_else(|p| p.into_inner()).clone();
    windowed.extend(pinned);
    let windowed: Tables = Arc::new(RwLock::new(windowed));
    for (name, kind) in [
        ("tumble", Kind::Tumble),
        ("hop", Kind::Hop),
        ("session", Kind::Session),
    ] {
        state.register_udtf(name, Arc::new(WindowFunction::new(kind, windowed.clone())));
    }
    state
}

type Pins = Arc<HashMap<String, Arc<StreamTable>>>;

#[derive(Debug)]
struct PinnedList {
    inner: Arc<dyn CatalogProviderList>,
    catalog: String,
    schema: String,
    pinned: Pins,
}

impl CatalogProviderList for PinnedList {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.inner.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let inner = self.inner.catalog(name)?;
        if name != self.catalog {
            return Some(inner);
        }
        Some(Arc::new(PinnedCatalog {
            inner,
            schema: self.schema.clone(),
            pinned: self.pinned.clone(),
        }))
    }
}

#[derive(Debug)]
struct PinnedCatalog {
    inner: Arc<dyn CatalogProvider>,
    schema: String,
    pinned: Pins,
}

impl CatalogProvider for PinnedCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        if name != self.schema {
            return Some(inner);
        }
        Some(Arc::new(PinnedSchema {
            inner,
            pinned: self.pinned.clone(),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }
}

#[derive(Debug)]
struct PinnedSchema {
    inner: Arc<dyn SchemaProvider>,
    pinned: Pins,
}

#[async_trait]
impl SchemaProvider for PinnedSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(
        &self,
        name: &str,
    ) -> std::result::Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if let Some(t) = self.pinned.get(name) {
            return Ok(Some(t.clone()));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.pinned.contains_key(name) || self.inner.table_exist(name)
    }
}
