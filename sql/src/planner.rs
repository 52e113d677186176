//! [`Planner`]: the DataFusion session in which every stream is a table,
//! and the planning of queries over it.
//!
//! It registers streams as tables (and drops them when their stream goes),
//! keeps that registration in line with the metadata store when other
//! agents create or drop streams, and plans a query after the rewrites our
//! dialect needs (`*` hides the system columns, table-function names fold
//! to lower case, integer literals keep PostgreSQL's types). The front
//! door ([`crate::Database`]) and the view service ([`crate::views`]) plan
//! through it; neither reaches into the other for it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use datafusion::common::TableReference;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use sqlparser::ast::Statement as SqlStatement;
use streamhouse_log::{Log, StreamInfo};
use streamhouse_streams::scan::StreamTable;
use tracing::debug;

use crate::error::Result;
use crate::rewrite::{fold_table_function_names, hide_system_columns, integer_literals};
use crate::window::Tables;

/// The session, and the streams registered in it as tables.
pub struct Planner {
    log: Arc<Log>,
    /// The session every statement plans and runs in.
    pub(crate) ctx: SessionContext,
    /// Names of the streams registered as tables (for the `*` rewrite).
    streams: RwLock<HashSet<String>>,
    /// The same tables, for the window table functions.
    tables: Tables,
    /// The log's schemas epoch when the tables were last synced.
    schemas_seen: std::sync::atomic::AtomicU64,
}

impl Planner {
    /// A planner over `ctx` with no stream registered yet.
    pub(crate) fn new(log: Arc<Log>, ctx: SessionContext) -> Planner {
        Planner {
            log,
            ctx,
            streams: RwLock::new(HashSet::new()),
            tables: Tables::default(),
            schemas_seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The stream tables, by name (shared with the window functions).
    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Registers stream `info` as a table of its name.
    pub(crate) fn register(&self, info: Arc<StreamInfo>) -> Result<()> {
        let name = info.name().to_string();
        let table = Arc::new(StreamTable::new(self.log.clone(), info));
        self.ctx
            .register_table(TableReference::bare(name.clone()), table.clone())?;
        self.tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), table);
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
        Ok(())
    }

    /// Drops the table of stream `name`.
    pub(crate) fn deregister(&self, name: &str) -> Result<()> {
        self.ctx.deregister_table(TableReference::bare(name))?;
        self.tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    /// Brings the registered stream tables in line with the metadata store
    /// (streams created or dropped through other agents); whether anything
    /// changed.
    pub async fn sync_streams(&self) -> Result<bool> {
        let current: HashMap<String, Arc<StreamInfo>> = self
            .log
            .sql_streams()
            .await?
            .into_iter()
            .map(|s| (s.name().to_string(), s))
            .collect();
        // Each stream by id and schema version: a new version (ALTER STREAM
        // through another agent) is registered again.
        let registered: HashMap<String, (i64, u32)> = {
            let names = self.streams.read().unwrap_or_else(|p| p.into_inner());
            let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
            names
                .iter()
                .filter_map(|n| {
                    tables
                        .get(n)
                        .map(|t| (n.clone(), (t.info().id, t.info().schema_version)))
                })
                .collect()
        };
        let version = |s: &StreamInfo| (s.id, s.schema_version);
        let mut changed = false;
        for (name, had) in &registered {
            if current.get(name).map(|s| version(s)) != Some(*had) {
                self.deregister(name)?;
                changed = true;
            }
        }
        for (name, info) in current {
            if registered.get(&name) != Some(&version(&info)) {
                self.register(info)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Syncs the stream tables when a stream's schema changed since the
    /// last look (the log's schemas epoch moved): one atomic load
    /// otherwise.
    pub async fn sync_schemas(&self) -> Result<()> {
        let epoch = self.log.schemas_epoch();
        if self.schemas_seen.load(std::sync::atomic::Ordering::Acquire) == epoch {
            return Ok(());
        }
        self.sync_streams().await?;
        self.schemas_seen
            .store(epoch, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Plans a query (after hiding system columns from `*`).
    pub async fn plan(&self, stmt: SqlStatement) -> Result<LogicalPlan> {
        let stmt = self.rewrite(stmt);
        debug!(sql = %stmt, "planning");
        let state = self.ctx.state();
        Ok(state
            .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
            .await?)
    }

    /// [`Planner::plan`] with the streams of `pinned` read through the
    /// schema versions those infos hold (see [`crate::pinned`]).
    pub async fn plan_pinned(
        &self,
        stmt: SqlStatement,
        pinned: Vec<Arc<StreamInfo>>,
    ) -> Result<LogicalPlan> {
        if pinned.is_empty() {
            return self.plan(stmt).await;
        }
        let stmt = self.rewrite(stmt);
        debug!(sql = %stmt, "planning against pinned versions");
        let tables = pinned
            .into_iter()
            .map(|info| {
                let name = info.name().to_string();
                (name, Arc::new(StreamTable::new(self.log.clone(), info)))
            })
            .collect();
        let state = crate::pinned::pinned_state(self.ctx.state(), &self.tables, tables);
        Ok(state
            .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
            .await?)
    }

    fn rewrite(&self, mut stmt: SqlStatement) -> SqlStatement {
        let streams = self.streams.read().unwrap_or_else(|p| p.into_inner());
        hide_system_columns(&mut stmt, &streams);
        fold_table_function_names(&mut stmt);
        integer_literals(&mut stmt);
        stmt
    }
}
