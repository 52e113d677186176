//! `CREATE MATERIALIZED VIEW` and `DROP MATERIALIZED VIEW`.

use sqlparser::ast::Query;

use super::Views;
use super::definition::{changelog_name, stored_definition};
use super::inputs::input_versions;
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
        if self.exists(&name) {
            if if_not_exists {
                return Ok(QueryResult::command(CommandTag::CreateMaterializedView));
            }
            return Err(SqlError::DuplicateTable(format!(
                "materialized view \"{name}\" already exists"
            )));
        }
        if self.log.stream(&name).await.is_ok() {
            return Err(SqlError::DuplicateTable(format!(
                "a stream named \"{name}\" already exists"
            )));
        }
        let dataflow = format!("{name}-{:x}", self.log.now_micros());
        let plan = self.plan_view(&query).await?;
        let versions = input_versions(&plan);
        let changelog = self.changelog_stream(&dataflow, &plan).await?;
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
            if let Some(v) = self.running(&name) {
                self.refuse_with_dependents(&v)?;
                if let Some(v) = self.uninstall(&name) {
                    v.shutdown().await;
                    self.log.metadata().drop_view(&name).await?;
                    self.drop_incarnation(&v.dataflow).await;
                    v.remove_local_state();
                }
            } else if let Some(remote) = self.forget_remote(&name)? {
                self.log.metadata().drop_view(&name).await?;
                self.drop_incarnation(&remote.record.dataflow).await;
            } else if self
                .failed
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name)
                .is_some()
            {
                let records = self.log.metadata().views().await?;
                self.log.metadata().drop_view(&name).await?;
                if let Some(r) = records.iter().find(|r| r.name == name) {
                    self.drop_incarnation(&r.dataflow).await;
                }
            } else if !if_exists {
                return Err(SqlError::UndefinedTable(format!(
                    "materialized view \"{name}\" does not exist"
                )));
            }
        }
        Ok(QueryResult::command(CommandTag::DropMaterializedView))
    }

    /// Refuses to drop `view` while other views here read its changelog.
    fn refuse_with_dependents(&self, view: &MatView) -> Result<()> {
        let Some(info) = view.changelog() else {
            return Ok(());
        };
        let dependents: Vec<String> = self
            .by_name()
            .iter()
            .filter(|d| d.name != view.name && d.reads(info.name()))
            .map(|d| d.name.clone())
            .collect();
        if dependents.is_empty() {
            return Ok(());
        }
        Err(SqlError::DependentObjects(format!(
            "cannot drop materialized view \"{}\": {} read{} it; drop {} first",
            view.name,
            dependents.join(", "),
            if dependents.len() == 1 { "s" } else { "" },
            if dependents.len() == 1 { "it" } else { "them" },
        )))
    }

    /// Deletes what a dropped view incarnation left in the log and the
    /// object store: its changelog and its state snapshots (a failure only
    /// leaves garbage behind, which is logged).
    async fn drop_incarnation(&self, dataflow: &str) {
        let _ = self
            .log
            .drop_internal_stream(StreamKind::ViewChangelog, &changelog_name(dataflow))
            .await;
        if let Err(e) = StateStore::delete_snapshots(self.log.store(), dataflow).await {
            tracing::warn!(dataflow, error = %e, "state snapshots of a dropped view not deleted");
        }
    }
}
