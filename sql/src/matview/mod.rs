//! Materialized views: queries over streams maintained incrementally.
//!
//! A view's query is planned by DataFusion and split at its one
//! `Aggregate`:
//!
//! - **below** it, a stateless pipeline (projection, filter, scalar
//!   functions, `TUMBLE`/`HOP` window columns, `UNION ALL`) over streams;
//!   a `SESSION` window's functions find the sessions among a step's rows,
//!   which the state merges with the stored sessions they overlap.
//!   Each step runs that pipeline and a *partial* aggregate over only the
//!   rows that arrived since the last step (the streams are scanned in delta
//!   mode, by offset ranges), never over the whole input again;
//! - the **state**: per group, mergeable components of each aggregate
//!   (`count` and `sum` add, `min`/`max` compare, `avg` is a sum and a
//!   count, any other function keeps its partial state, see `partial`),
//!   merged with each step's partial results (RocksDB, see
//!   `streamhouse_streams::AggregateState`);
//! - **above** it (`HAVING`, expressions over aggregates, renames, ORDER
//!   BY), evaluated when the view is read, over the state.
//!
//! Inner equi-joins may appear below the aggregate (or make up a view
//! without one): each keeps the rows of both sides it has seen, indexed by
//! key, and a step joins only the new rows; over views with updates, a
//! pair's sign is the product of its rows' signs.
//!
//! A view without an aggregate is a stateless pipeline over the log: the log
//! is its storage, and reading it runs the pipeline. Outer, semi and anti
//! joins and top-N (`topn`) take rows back. A query that nests a GROUP BY
//! or a top-N in a subquery in FROM or a CTE reaches this module already
//! split into one view per level (`crate::views` makes the stages), so a
//! plan compiled here holds one aggregate. Anything else (window functions
//! other than a bounded rank, `DISTINCT` aggregates other than
//! `count(DISTINCT x)`, `OFFSET`) is refused at CREATE with 0A000 naming
//! the part.
//!
//! A view over another view reads that view's changelog; when it has
//! updates, input rows carry a sign (deletes retract) up to the aggregate,
//! which weights counts and sums by it and drops groups left empty.
//!
//! Every view also has a changelog: what each step changed, as
//! `delete`/`insert` rows, written to a hidden stream with the step's
//! progress in the same metadata transaction — the basis of exactly-once
//! output across crashes — or, for a push query, sent to its client.
//!
//! This module compiles (`compile`, `decompose`, `topn`): it checks the shape and
//! turns the plan into a [`Description`](streamhouse_streams::Description).
//! Running it — steps, joins, state, changelog, checkpoints, recovery — is
//! [`streamhouse_streams::dataflow`]'s. A [`MatView`] is a running
//! dataflow with its SQL definition; [`MatView::table`] is what `SELECT …
//! FROM view` reads.

pub mod changes;
mod compile;
mod decompose;
mod event_time;
mod topn;

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::datasource::{TableProvider, TableType, ViewTable};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use streamhouse_log::{Log, StreamInfo};
use streamhouse_streams::Dataflow;

use crate::dialect::ViewOptions;
use crate::error::SqlError;

pub use event_time::changelog_event_time;

/// 0A000 naming the part of a query a view cannot maintain, and what it can.
fn unsupported(what: impl fmt::Display) -> SqlError {
    SqlError::NotSupported(format!(
        "{what} in a materialized view (supported: projection, WHERE, scalar functions, \
         TUMBLE/HOP/SESSION windows, UNION ALL of streams and views, equi-joins (inner, outer, semi, anti), top-N, \
         SELECT DISTINCT, GROUP BY with aggregate functions, HAVING and ORDER BY; subqueries in FROM and CTEs \
         may have their own GROUP BY or top-N)"
    ))
}

/// One materialized view: its running dataflow and its SQL definition.
pub struct MatView {
    /// The query, as stored.
    pub definition: String,
    pub options: ViewOptions,
    pub flow: Arc<Dataflow>,
    /// For the view that keeps a table's rows: the table's log, which a
    /// read waits for (see [`Fresh`]).
    fresh: Option<Fresh>,
}

/// How long a read of a table waits for the table's view to reach the
/// log's end before it fails.
const TABLE_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A table's log: a read of the table first waits until the view reflects
/// every row the log held when the read began (read-your-writes: an
/// acknowledged INSERT, UPDATE or DELETE is seen by the next read).
#[derive(Clone)]
struct Fresh {
    log: Arc<Log>,
    stream: String,
    flow: Arc<Dataflow>,
}

impl Fresh {
    async fn wait(&self) -> DfResult<()> {
        use datafusion::error::DataFusionError::External;
        let ends = self
            .log
            .partition_ends(&self.stream)
            .await
            .map_err(|e| External(Box::new(e)))?;
        self.flow
            .reflect(&self.stream, &ends, TABLE_READ_WAIT)
            .await
            .map_err(|e| External(Box::new(e)))
    }
}

impl fmt::Debug for MatView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatView")
            .field("name", &self.flow.name)
            .finish()
    }
}

impl Deref for MatView {
    type Target = Dataflow;

    fn deref(&self) -> &Dataflow {
        &self.flow
    }
}

impl MatView {
    /// What `SELECT … FROM view` reads (and what another view reading
    /// this one reads instead: its changelog, when that only inserts).
    pub fn table(&self) -> Arc<dyn TableProvider> {
        Arc::new(MatViewTable {
            name: self.flow.name.clone(),
            inner: ViewTable::new(self.flow.read_plan().clone(), Some(self.definition.clone())),
            changelog: self.flow.changelog().cloned(),
            inserts_only: self.flow.inserts_only(),
            fresh: self.fresh.clone(),
        })
    }

    /// What `SELECT … FROM view` reads on an agent that does not run the
    /// view: `contents` (its changelog folded into rows); another view
    /// reading it reads the changelog, as from a view running here.
    pub fn remote_table(
        name: &str,
        definition: &str,
        contents: LogicalPlan,
        changelog: Arc<StreamInfo>,
        inserts_only: bool,
    ) -> Arc<dyn TableProvider> {
        Arc::new(MatViewTable {
            name: name.to_string(),
            inner: ViewTable::new(contents, Some(definition.to_string())),
            changelog: Some(changelog),
            inserts_only,
            fresh: None,
        })
    }
}

/// A materialized view as a table.
struct MatViewTable {
    name: String,
    inner: ViewTable,
    /// The changelog (another view reads it instead of the view).
    changelog: Option<Arc<StreamInfo>>,
    /// The changelog only inserts.
    inserts_only: bool,
    /// A table's log, reflected before each read.
    fresh: Option<Fresh>,
}

impl fmt::Debug for MatViewTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MatViewTable({})", self.name)
    }
}

#[async_trait]
impl TableProvider for MatViewTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(fresh) = &self.fresh {
            fresh.wait().await?;
        }
        self.inner.scan(state, projection, filters, limit).await
    }
}
