//! Bringing stored views back: every view at start-up, one view when this
//! agent takes it over, and what a remote view's table needs to know.

use std::sync::Arc;

use streamhouse_log::{StreamInfo, StreamKind, ViewCheckpoint, ViewRecord};
use streamhouse_streams::Output;

use datafusion::logical_expr::LogicalPlan;
use sqlparser::ast::Query;

use super::Views;
use super::definition::{changelog_name, parse_stored};
use super::stages;
use crate::dialect::ViewOptions;
use crate::error::Result;
use crate::matview::MatView;

impl Views {
    /// Brings back every stored view: from its last checkpoint, or — when
    /// it has none, or it cannot be restored — from the beginning of its
    /// inputs (the result is the same; only the time differs). A view that
    /// cannot be compiled at all (an input was dropped) is listed as failed.
    pub(crate) async fn load(&self) -> Result<()> {
        let records = self.log.metadata().views().await?;
        if self.log.metadata().is_shared() {
            // Which agent runs which view is settled by the lease upkeep
            // ([`Views::maintain`]); until then all are remote.
            for r in &records {
                if let Err(e) = self.know_remote(r).await {
                    tracing::warn!(view = %r.name, error = %e, "view not known");
                }
            }
            return Ok(());
        }
        // Changelogs of views that no longer exist (a CREATE that crashed).
        let live: std::collections::HashSet<String> = records
            .iter()
            .map(|r| changelog_name(&r.dataflow))
            .collect();
        for s in self.log.all_streams().await? {
            if StreamKind::of(s.name()) == StreamKind::ViewChangelog && !live.contains(s.name()) {
                let _ = self
                    .log
                    .drop_internal_stream(StreamKind::ViewChangelog, s.name())
                    .await;
            }
        }
        // Stages whose view is gone (a CREATE that crashed between them).
        let names: std::collections::HashSet<String> =
            records.iter().map(|r| r.name.clone()).collect();
        let (orphans, records): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| {
            stages::stage_of(&r.name).is_some_and(|(view, _)| !names.contains(view))
        });
        for orphan in orphans {
            self.log.metadata().drop_view(&orphan.name).await?;
            self.drop_incarnation(&orphan.dataflow).await;
        }
        // Views over views need theirs first: retry while any comes back.
        let mut pending = records;
        loop {
            let mut failed = Vec::new();
            let before = pending.len();
            for record in pending {
                if let Err(e) = self.take_view(&record.name).await {
                    failed.push((record, e));
                }
            }
            if failed.is_empty() || failed.len() == before {
                for (record, e) in failed {
                    tracing::warn!(view = %record.name, error = %e, "materialized view not restored");
                    self.failed
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(
                            record.name.clone(),
                            (record.definition.clone(), e.to_string()),
                        );
                }
                return Ok(());
            }
            pending = failed.into_iter().map(|(r, _)| r).collect();
        }
    }

    /// A stored view's options, its query as written, and the plan it
    /// runs: the query's over its stages (see [`super::stages`]).
    async fn stored_plan(&self, record: &ViewRecord) -> Result<(ViewOptions, Query, LogicalPlan)> {
        let (options, query) = parse_stored(&record.definition)?;
        let named = stages::prepared(&query);
        let plan = self.plan_stored(record, &named).await?;
        let split = stages::split(&record.name, &named, &plan);
        if split.stages.is_empty() {
            return Ok((options, query, plan));
        }
        let plan = self.plan_stored(record, &split.query).await?;
        Ok((options, query, plan))
    }

    /// Whether a stored view's changelog only inserts (decided as the view
    /// decides it when running: compiled once, in a scratch directory, and
    /// dropped), so views over it plan alike on every agent.
    pub(super) async fn changelog_inserts_only(
        &self,
        record: &ViewRecord,
        changelog: &Arc<StreamInfo>,
    ) -> Result<bool> {
        let (options, query, plan) = self.stored_plan(record).await?;
        let probe = format!("probe-{}-{:x}", record.dataflow, self.log.now_micros());
        let placement = self.placement(&probe, None, Some(Output::Changelog(changelog.clone())));
        let view = MatView::compile(
            &self.log,
            &record.name,
            query.to_string(),
            options,
            plan,
            placement,
            self.timings.idle_timeout,
        )
        .await?;
        let inserts_only = view.inserts_only();
        view.remove_local_state();
        Ok(inserts_only)
    }

    /// The changelog stream of a stored view (created if missing).
    pub(super) async fn changelog_stream_of(&self, record: &ViewRecord) -> Result<Arc<StreamInfo>> {
        if let Ok(info) = self.log.stream(&changelog_name(&record.dataflow)).await {
            return Ok(info);
        }
        let (options, _, plan) = self.stored_plan(record).await?;
        self.changelog_stream(&record.dataflow, &plan, &options)
            .await
    }

    /// Compiles a stored view from its checkpoint (or the log, when the
    /// checkpoint cannot be restored), replays what it wrote after the
    /// checkpoint, and starts it, under lease epoch `epoch`.
    pub(super) async fn load_view(&self, record: &ViewRecord, epoch: u64) -> Result<()> {
        let name = &record.name;
        let (options, query, plan) = self.stored_plan(record).await?;
        let changelog = self
            .changelog_stream(&record.dataflow, &plan, &options)
            .await?;
        let compile = |restore: Option<ViewCheckpoint>| {
            let mut placement = self.placement(
                &record.dataflow,
                restore,
                Some(Output::Changelog(changelog.clone())),
            );
            placement.epoch = epoch;
            MatView::compile(
                &self.log,
                name,
                query.to_string(),
                options.clone(),
                plan.clone(),
                placement,
                self.timings.idle_timeout,
            )
        };
        let view = match (compile(record.checkpoint.clone()).await, &record.checkpoint) {
            (Ok(v), _) => v,
            (Err(e), Some(cp)) => {
                tracing::warn!(view = %name, error = %e, "checkpoint not restored; rebuilding from the log");
                let v = compile(None).await?;
                v.rebuilt_after(cp.number, &e.to_string());
                v
            }
            (Err(e), None) => return Err(e),
        };
        view.recover(&self.log, &self.planner.ctx).await?;
        self.install(view)
    }
}
