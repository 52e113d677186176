//! `CREATE MATERIALIZED VIEW` and `DROP MATERIALIZED VIEW`.

use sqlparser::ast::Query;

use datafusion::logical_expr::LogicalPlan;

use super::Views;
use super::definition::{changelog_name, parse_stored, stored_definition};
use super::inputs::input_versions;
use super::stages;
use crate::dialect::ViewOptions;
use crate::error::{Result, SqlError};
use crate::matview::MatView;
use crate::result::{CommandTag, QueryResult};
use streamhouse_log::{StreamKind, ViewLease, ViewRecord};
use streamhouse_streams::{Output, StateStore};

impl Views {
    /// `CREATE MATERIALIZED VIEW`: plans and compiles the view, fills it
    /// from its inputs, stores its record holding the first lease, and
    /// starts it here.
    pub(crate) async fn create(
        &self,
        name: String,
        if_not_exists: bool,
        options: ViewOptions,
        query: Query,
    ) -> Result<QueryResult> {
        if stages::is_reserved(&name) {
            return Err(streamhouse_log::LogError::ReservedName(name).into());
        }
        self.create_view(name, if_not_exists, options, query).await
    }

    /// [`Views::create`] of a view or a stage: its stages first (a stage
    /// made before a failure is dropped again).
    async fn create_view(
        &self,
        name: String,
        if_not_exists: bool,
        options: ViewOptions,
        query: Query,
    ) -> Result<QueryResult> {
        if self.exists(&name) {
            if if_not_exists {
                return Ok(QueryResult::command(CommandTag::CreateMaterializedView));
            }
            return Err(SqlError::DuplicateTable(name.to_string()));
        }
        if self.log.stream(&name).await.is_ok() {
            return Err(SqlError::DuplicateTable(name.to_string()));
        }
        let named = stages::prepared(&query);
        let plan = self.plan_view(&named).await?;
        let versions = input_versions(&plan);
        let split = stages::split(&name, &named, &plan);
        if split.stages.is_empty() {
            return self
                .create_stage(name, options, query, plan, versions)
                .await;
        }
        // Stages a crashed CREATE of this name left behind go first.
        self.drop_stages(&name).await?;
        let stage_options = ViewOptions {
            emit: None,
            ..options.clone()
        };
        for (stage, stage_query) in split.stages {
            let made = Box::pin(self.create_view(stage, false, stage_options.clone(), stage_query));
            if let Err(e) = made.await {
                let _ = self.drop_stages(&name).await;
                return Err(e);
            }
        }
        let made = async {
            let plan = self.plan_view(&split.query).await?;
            self.create_stage(name.clone(), options, query, plan, versions)
                .await
        }
        .await;
        if made.is_err() {
            let _ = self.drop_stages(&name).await;
        }
        made
    }

    /// Makes view `name` (stored as `query`) from `plan`, the plan of its
    /// query over its stages, which exist already.
    async fn create_stage(
        &self,
        name: String,
        options: ViewOptions,
        query: Query,
        plan: LogicalPlan,
        versions: std::collections::BTreeMap<streamhouse_log::StreamId, u32>,
    ) -> Result<QueryResult> {
        let dataflow = format!("{name}-{:x}", self.log.now_micros());
        let changelog = self.changelog_stream(&dataflow, &plan, &options).await?;
        // The creating agent holds the view's first lease.
        let mut placement =
            self.placement(&dataflow, None, Some(Output::Changelog(changelog.clone())));
        placement.epoch = 1;
        let created = async {
            let view = MatView::compile(
                &self.log,
                &name,
                query.to_string(),
                options.clone(),
                plan,
                placement,
                self.timings.idle_timeout,
            )
            .await?;
            // Like a CREATE INDEX, the statement returns once the view holds
            // everything its inputs held when it started, checkpointed.
            view.backfill(&self.log, &self.planner.ctx).await?;
            let record = ViewRecord {
                name: name.clone(),
                dataflow: dataflow.clone(),
                definition: stored_definition(&name, &options, &query),
                input_versions: versions.clone(),
                checkpoint: None,
                lease: ViewLease {
                    owner: Some(self.log.agent().id()),
                    epoch: 1,
                    until: Some(
                        self.log.now_micros() + self.timings.lease_duration.as_micros() as i64,
                    ),
                },
            };
            if let Err(e) = self
                .log
                .metadata()
                .create_view(&record, self.log.now_micros())
                .await
            {
                view.remove_local_state();
                return Err(e.into());
            }
            Ok(view)
        }
        .await;
        let view = match created {
            Ok(v) => v,
            Err(e) => {
                let _ = self
                    .log
                    .drop_internal_stream(StreamKind::ViewChangelog, changelog.name())
                    .await;
                return Err(e);
            }
        };
        view.checkpoint(&self.log).await?;
        self.install(view)?;
        Ok(QueryResult::command(CommandTag::CreateMaterializedView))
    }

    /// `DROP MATERIALIZED VIEW`: stops each view wherever it runs (its
    /// owner notices the record is gone), and deletes its record,
    /// changelog and state.
    pub(crate) async fn drop_views(
        &self,
        names: Vec<String>,
        if_exists: bool,
    ) -> Result<QueryResult> {
        for name in names {
            if let Some((view, _)) = stages::stage_of(&name) {
                return Err(SqlError::DependentObjects(format!(
                    "cannot drop \"{name}\": it is a stage of materialized view \"{view}\"; \
                     drop \"{view}\""
                )));
            }
            let stages = self.stages_of(&name).await?;
            let together: Vec<&str> = std::iter::once(name.as_str())
                .chain(stages.iter().map(String::as_str))
                .collect();
            for n in &together {
                self.refuse_with_dependents(n, &together)?;
            }
            if !self.drop_view(&name).await? && !if_exists {
                return Err(SqlError::UndefinedTable(name.to_string()));
            }
            for stage in &stages {
                self.drop_view(stage).await?;
            }
        }
        Ok(QueryResult::command(CommandTag::DropMaterializedView))
    }

    /// Drops the stages of view (or stage) `parent`, readers first.
    pub(super) async fn drop_stages(&self, parent: &str) -> Result<()> {
        for stage in self.stages_of(parent).await? {
            self.drop_view(&stage).await?;
        }
        Ok(())
    }

    /// The stored stages of view (or stage) `parent`, those that read
    /// others before those they read.
    async fn stages_of(&self, parent: &str) -> Result<Vec<String>> {
        let (view, under) = match stages::stage_of(parent) {
            Some((view, path)) => (view, format!("{path}_")),
            None => (parent, String::new()),
        };
        let mut found: Vec<(usize, String)> = self
            .log
            .metadata()
            .views()
            .await?
            .into_iter()
            .filter_map(|r| {
                let (v, path) = stages::stage_of(&r.name)?;
                (v == view && path.starts_with(&under))
                    .then(|| (path.split('_').count(), r.name.clone()))
            })
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, n)| n).collect())
    }

    /// Stops view `name` wherever it runs (its owner notices the record is
    /// gone) and deletes its record, changelog and state; false when there
    /// is no such view.
    async fn drop_view(&self, name: &str) -> Result<bool> {
        if self.running(name).is_some() {
            if let Some(v) = self.uninstall(name) {
                v.shutdown().await;
                self.log.metadata().drop_view(name).await?;
                self.drop_incarnation(&v.dataflow).await;
                v.remove_local_state();
            }
        } else if let Some(remote) = self.forget_remote(name)? {
            self.log.metadata().drop_view(name).await?;
            self.drop_incarnation(&remote.record.dataflow).await;
        } else if self
            .failed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
        {
            let records = self.log.metadata().views().await?;
            self.log.metadata().drop_view(name).await?;
            if let Some(r) = records.iter().find(|r| r.name == name) {
                self.drop_incarnation(&r.dataflow).await;
            }
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Refuses to drop view `name` while other views read it: views
    /// running here that read its changelog, and views other agents run
    /// (or that failed to load) whose queries name it.
    /// Views dropped `together` do not count (a view and its stages); a
    /// stage counts as its view.
    fn refuse_with_dependents(&self, name: &str, together: &[&str]) -> Result<()> {
        let what = if self
            .running(name)
            .is_some_and(|v| v.reads(&streamhouse_log::table_log_name(name)))
        {
            "table"
        } else {
            "materialized view"
        };
        self.refuse_readers(name, self.changelog_of(name), together, what)
    }

    /// Refuses to drop stream `name` while views read it.
    pub(crate) fn refuse_dropping_stream(&self, name: &str) -> Result<()> {
        self.refuse_readers(name, Some(name.to_string()), &[], "stream")
    }

    /// Refuses to drop `name` (a `what`, whose rows views read from log
    /// stream `read`) while views other than those dropped `together` read
    /// it.
    fn refuse_readers(
        &self,
        name: &str,
        read: Option<String>,
        together: &[&str],
        what: &str,
    ) -> Result<()> {
        let changelog = read;
        let mut dependents: Vec<String> = self
            .by_name()
            .iter()
            .filter(|d| d.name != name && changelog.as_deref().is_some_and(|c| d.reads(c)))
            .map(|d| d.name.clone())
            .collect();
        let elsewhere: Vec<(String, String)> = {
            let remote = self.remote.read().unwrap_or_else(|p| p.into_inner());
            let failed = self.failed.read().unwrap_or_else(|p| p.into_inner());
            remote
                .values()
                .map(|r| (r.record.name.clone(), r.record.definition.clone()))
                .chain(failed.iter().map(|(n, (d, _))| (n.clone(), d.clone())))
                .collect()
        };
        for (other, definition) in elsewhere {
            if other != name && !dependents.contains(&other) && names(&definition, name) {
                dependents.push(other);
            }
        }
        let mut dependents: Vec<String> = dependents
            .into_iter()
            .filter(|d| !together.contains(&d.as_str()))
            .map(|d| match stages::stage_of(&d) {
                Some((view, _)) => view.to_string(),
                None => d,
            })
            .collect();
        if dependents.is_empty() {
            return Ok(());
        }
        dependents.sort();
        dependents.dedup();
        Err(SqlError::DependentObjects(format!(
            "cannot drop {what} \"{name}\": {} read{} it; drop {} first",
            dependents.join(", "),
            if dependents.len() == 1 { "s" } else { "" },
            if dependents.len() == 1 { "it" } else { "them" },
        )))
    }

    /// Deletes what a dropped view incarnation left in the log and the
    /// object store: its changelog and its state snapshots (a failure only
    /// leaves garbage behind, which is logged).
    pub(super) async fn drop_incarnation(&self, dataflow: &str) {
        let _ = self
            .log
            .drop_internal_stream(StreamKind::ViewChangelog, &changelog_name(dataflow))
            .await;
        if let Err(e) = StateStore::delete_snapshots(self.log.store(), dataflow).await {
            tracing::warn!(dataflow, error = %e, "state snapshots of a dropped view not deleted");
        }
    }
}

/// Whether the stored view `definition` names the relation `name`.
fn names(definition: &str, name: &str) -> bool {
    let Ok((_, query)) = parse_stored(definition) else {
        return false;
    };
    let mut found = false;
    let _ = sqlparser::ast::visit_relations(&query, |r| {
        if crate::idents::object_name(r).is_ok_and(|n| n == name) {
            found = true;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}
