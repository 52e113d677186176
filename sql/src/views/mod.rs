//! [`Views`]: the service that owns this agent's materialized views — those
//! it runs, those other agents run, and those that could not be brought
//! back — and runs every statement about them.
//!
//! - `ddl`: `CREATE` and `DROP MATERIALIZED VIEW`, and bringing stored
//!   views back (at start-up, or when this agent takes a view over).
//! - `inputs`: the schema versions a view reads its streams through, and
//!   the columns it reads (what `ALTER STREAM` may change under it).
//! - `ownership`: which agent runs each view (leases with epochs).
//! - `show`: `SHOW MATERIALIZED VIEWS` and the views' gauges.
//! - `stages`: a query that nests a GROUP BY or a top-N in a subquery,
//!   split into hidden views over views.
//! - `subscribe`: push queries (`SUBSCRIBE`, `… EMIT CHANGES`).
//!
//! A view is compiled by [`crate::matview`] into a dataflow that
//! `streamhouse_streams` runs. Views plan their queries through the
//! [`Planner`] the front door shares with them; the `streamhouse.*` system
//! tables read this service.

mod ddl;
mod definition;
mod inputs;
mod ownership;
mod restarts;
mod restore;
mod show;
mod stages;
mod subscribe;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::common::TableReference;
use datafusion::logical_expr::LogicalPlan;
use sqlparser::ast::{Query, Statement as SqlStatement};
use streamhouse_log::{Log, StreamInfo, StreamKind, StreamSpec, ViewCheckpoint, ViewRecord};
use streamhouse_streams::dataflow::changes;
use streamhouse_streams::scan::StreamTable;
use streamhouse_streams::{Output, Placement};

use crate::dialect::ViewOptions;
use crate::error::{Result, SqlError};
use crate::matview::{MatView, changelog_event_time};
use crate::planner::Planner;
use crate::window::Tables;

pub use show::show_views_schema;

/// The stream a view's changelog is written to, by its stored record.
pub fn changelog_stream(record: &streamhouse_log::ViewRecord) -> String {
    definition::changelog_name(&record.dataflow)
}

/// The timings every view of this agent runs with.
#[derive(Debug, Clone, Copy)]
pub struct ViewTimings {
    /// How often a changing view is checkpointed.
    pub checkpoint_interval: Duration,
    /// After this long without rows, an input partition stops holding a
    /// view's watermark back (unless the view says otherwise).
    pub idle_timeout: Duration,
    /// How long a view's lease lasts unless renewed.
    pub lease_duration: Duration,
}

/// A view another agent maintains.
#[derive(Debug, Clone)]
struct RemoteView {
    record: ViewRecord,
}

/// The views of this agent, by name, and what running them takes.
pub struct Views {
    log: Arc<Log>,
    planner: Arc<Planner>,
    /// Views' changelogs as tables, by view name (for `changes(view)`).
    changelogs: Tables,
    /// Where views keep local state.
    state_dir: PathBuf,
    /// The temporary state directory, when none was given.
    _temp_state: Option<tempfile::TempDir>,
    timings: ViewTimings,
    /// Views running here.
    running: RwLock<HashMap<String, Arc<MatView>>>,
    /// Views other agents maintain.
    remote: RwLock<HashMap<String, RemoteView>>,
    /// Stored views that could not be brought back: (definition, error).
    failed: RwLock<HashMap<String, (String, String)>>,
    /// Views stopped by an error, started again with a backoff.
    restarts: restarts::Restarts,
    /// Held while a view's table is registered, as running here or as
    /// another agent's: a statement learning of a view and the upkeep
    /// taking it over register it one at a time, never over each other.
    registering: std::sync::Mutex<()>,
}

impl Views {
    /// A service with no view yet, keeping view state in `state_dir` (a
    /// temporary directory removed with the service when `None`);
    /// [`Views::load`] brings the stored views back.
    pub(crate) fn new(
        log: Arc<Log>,
        planner: Arc<Planner>,
        changelogs: Tables,
        state_dir: Option<PathBuf>,
        timings: ViewTimings,
    ) -> Result<Views> {
        let (state_dir, temp_state) = match state_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("streamhouse-state-")
                    .tempdir()
                    .map_err(|e| {
                        SqlError::Unavailable(format!("temporary state directory: {e}"))
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        Ok(Views {
            log,
            planner,
            changelogs,
            state_dir,
            _temp_state: temp_state,
            timings,
            running: RwLock::default(),
            remote: RwLock::default(),
            failed: RwLock::default(),
            restarts: restarts::Restarts::default(),
            registering: std::sync::Mutex::default(),
        })
    }

    /// The views running here, sorted by name.
    pub fn by_name(&self) -> Vec<Arc<MatView>> {
        let mut list: Vec<Arc<MatView>> = self
            .running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// The views running here that listings show (not stages), sorted by
    /// name.
    pub fn listed(&self) -> Vec<Arc<MatView>> {
        let mut list = self.by_name();
        list.retain(|v| stages::stage_of(&v.name).is_none());
        list
    }

    /// The views other agents run: (name, status, definition, owner
    /// agent); stages left out.
    pub fn remote_rows(&self) -> Vec<(String, String, String, Option<String>)> {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| stages::stage_of(&r.record.name).is_none())
            .map(|r| {
                let status = match &r.record.lease.owner {
                    Some(agent) => format!("running on agent {agent}"),
                    None => "waiting for an agent".to_string(),
                };
                (
                    r.record.name.clone(),
                    status,
                    r.record.definition.clone(),
                    r.record.lease.owner.clone(),
                )
            })
            .collect()
    }

    /// The stored views that could not be brought back: (name, definition,
    /// error); stages left out (their views fail with them).
    pub fn failed_rows(&self) -> Vec<(String, String, String)> {
        self.failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(name, _)| stages::stage_of(name).is_none())
            .map(|(name, (definition, error))| (name.clone(), definition.clone(), error.clone()))
            .collect()
    }

    /// How many views run here.
    pub fn running_count(&self) -> usize {
        self.running.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether a view of this name exists (here, elsewhere, or failed).
    pub(crate) fn exists(&self, name: &str) -> bool {
        self.running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
            || self
                .failed
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(name)
            || self.is_remote(name)
    }

    /// Whether another agent runs view `name`.
    fn is_remote(&self, name: &str) -> bool {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    /// View `name` if it runs here.
    fn running(&self, name: &str) -> Option<Arc<MatView>> {
        self.running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The changelog stream of view `name`, if there is such a view (here
    /// or on another agent).
    pub fn changelog_of(&self, name: &str) -> Option<String> {
        if let Some(view) = self.running(name) {
            return view.changelog().map(|i| i.name().to_string());
        }
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|r| changelog_stream(&r.record))
    }

    /// Where view incarnation `dataflow` keeps its state, and how it runs.
    fn placement(
        &self,
        dataflow: &str,
        restore: Option<ViewCheckpoint>,
        output: Option<Output>,
    ) -> Placement {
        Placement {
            dir: self.state_dir.join(dataflow),
            dataflow: dataflow.to_string(),
            restore,
            checkpoint_interval: self.timings.checkpoint_interval,
            output,
            epoch: 0,
        }
    }

    /// Plans a view's query, its columns named as PostgreSQL names them.
    async fn plan_view(&self, query: &Query) -> Result<LogicalPlan> {
        let plan = self
            .planner
            .plan(SqlStatement::Query(Box::new(query.clone())))
            .await?;
        definition::with_output_names(plan, query)
    }

    /// The changelog stream of a view incarnation (created if missing),
    /// with the event time of [`changelog_event_time`] when it has one.
    async fn changelog_stream(
        &self,
        dataflow: &str,
        plan: &LogicalPlan,
        options: &ViewOptions,
    ) -> Result<Arc<StreamInfo>> {
        let name = definition::changelog_name(dataflow);
        match self.log.stream(&name).await {
            Ok(info) => Ok(info),
            Err(_) => {
                let schema = changes::changes_schema(plan.schema().as_arrow())?;
                let mut spec = StreamSpec::new(name, schema);
                if let Some(column) =
                    changelog_event_time(&self.log, plan, options, self.timings.idle_timeout)
                {
                    spec = spec.with_event_time(column, Duration::ZERO);
                }
                Ok(self
                    .log
                    .create_internal_stream(StreamKind::ViewChangelog, spec)
                    .await?)
            }
        }
    }

    /// Makes `view` a table and its changelog readable, and starts it.
    /// Known as remote meanwhile (this agent learned of its record between
    /// its creation or takeover and now): that registration goes.
    fn install(&self, view: Arc<MatView>) -> Result<()> {
        let _one = self.registering.lock().unwrap_or_else(|p| p.into_inner());
        self.forget_remote(&view.name)?;
        // Replaces whatever a statement registered under the name meanwhile.
        let _ = self
            .planner
            .ctx
            .deregister_table(TableReference::bare(view.name.clone()));
        self.planner
            .ctx
            .register_table(TableReference::bare(view.name.clone()), view.table())?;
        if let Some(info) = view.changelog() {
            self.changelogs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    view.name.clone(),
                    Arc::new(StreamTable::new(self.log.clone(), info.clone())),
                );
        }
        view.flow.start(self.log.clone(), self.planner.ctx.clone());
        self.failed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&view.name);
        self.running
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(view.name.clone(), view);
        Ok(())
    }

    /// Removes view `name` from the running ones and its table and
    /// changelog from the session; the view itself is the caller's to stop.
    fn uninstall(&self, name: &str) -> Option<Arc<MatView>> {
        let view = self
            .running
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)?;
        let _ = self
            .planner
            .ctx
            .deregister_table(TableReference::bare(name));
        self.changelogs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Some(view)
    }
}
