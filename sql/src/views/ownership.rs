//! Which agent maintains each materialized view: leases with epochs.
//!
//! Every view has one lease in the metadata store. The agent holding it
//! runs the view; every other agent knows the view as *remote*: its table
//! reads the view's changelog folded into rows, and subscriptions follow
//! that changelog. An agent takes a lease when it is free or expired, which
//! bumps its epoch; it then fences the view's changelog producer to that
//! epoch and restores the latest checkpoint. The superseded owner (paused,
//! partitioned, or killed mid-checkpoint) can neither commit a checkpoint
//! nor append to the changelog in its old epoch, so the view continues
//! exactly-once under its new owner.
//!
//! [`Views::maintain`] runs the cluster side every
//! `lease_duration / 5`: renew owned leases (stop a view whose lease is
//! lost), pick up views created or dropped through other agents, take
//! views whose lease expired while this agent holds less than its share of
//! the live agents' views, and hand one view back when it holds more. The
//! choices (the share, the free views, handing back) are the pure
//! functions of `streamhouse_streams::placement`; this module performs
//! them. With the embedded store one process owns everything: leases are taken
//! unconditionally at start-up.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{Column, TableReference};
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit, when};
use streamhouse_log::{AgentState, StreamInfo, ViewRecord};

use super::{RemoteView, Views};
use crate::error::{Result, SqlError};
use crate::matview::MatView;
use streamhouse_streams::dataflow::changes::{DELETE, OP};
use streamhouse_streams::placement;
use streamhouse_streams::scan::StreamTable;

impl Views {
    fn lease_until(&self) -> i64 {
        self.log.now_micros() + self.timings.lease_duration.as_micros() as i64
    }

    /// Takes view `name`'s lease (see the module doc) and starts the view
    /// from its latest checkpoint; `false` when another agent holds it.
    pub(super) async fn take_view(&self, name: &str) -> Result<bool> {
        let meta = self.log.metadata().clone();
        let me = self.log.agent().id();
        let steal = !meta.is_shared();
        let Some(epoch) = meta
            .acquire_view_lease(name, &me, self.log.now_micros(), self.lease_until(), steal)
            .await?
        else {
            return Ok(false);
        };
        let taken = async {
            // Read after taking: the previous owner can no longer checkpoint.
            let Some(record) = meta.views().await?.into_iter().find(|r| r.name == name) else {
                return Ok(false);
            };
            let changelog = self.changelog_stream_of(&record).await?;
            meta.fence_producer(
                &streamhouse_streams::dataflow::producer_id(&record.dataflow),
                changelog.id,
                epoch,
            )
            .await?;
            // Its inputs may be streams created through other agents.
            if steal {
                self.forget_remote(name)?;
                self.load_view(&record, epoch).await?;
            } else {
                self.planner.sync_streams().await?;
                self.forget_remote(name)?;
                if let Err(e) = self.load_view(&record, epoch).await {
                    self.know_remote(&record).await?;
                    return Err(e);
                }
            }
            tracing::info!(view = %name, epoch, "maintaining materialized view");
            Ok::<_, SqlError>(true)
        }
        .await;
        if !matches!(taken, Ok(true)) {
            let _ = meta.release_view_lease(name, &me, epoch).await;
        }
        taken
    }

    /// Knows view `record` as maintained by another agent: a table over its
    /// changelog, and its changelog for subscriptions.
    pub(super) async fn know_remote(&self, record: &ViewRecord) -> Result<()> {
        let changelog = self.changelog_stream_of(record).await?;
        let table = Arc::new(StreamTable::new(self.log.clone(), changelog.clone()));
        let contents = match self.table_contents(record).await? {
            Some(plan) => plan,
            None => folded(table.clone(), &changelog)?,
        };
        let inserts_only = self.changelog_inserts_only(record, &changelog).await?;
        let provider = MatView::remote_table(
            &record.name,
            &record.definition,
            contents,
            changelog.clone(),
            inserts_only,
        );
        // Taken over here while this was planned: it runs here, not there.
        let _one = self.registering.lock().unwrap_or_else(|p| p.into_inner());
        if self.running(&record.name).is_some() {
            return Ok(());
        }
        // Known already (learned by a concurrent statement): replaced.
        let _ = self
            .planner
            .ctx
            .deregister_table(TableReference::bare(record.name.clone()));
        self.planner
            .ctx
            .register_table(TableReference::bare(record.name.clone()), provider)?;
        self.changelogs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.name.clone(), table);
        self.remote
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                record.name.clone(),
                RemoteView {
                    record: record.clone(),
                },
            );
        Ok(())
    }

    /// For the view of a table: its rows read from the table's log (the
    /// latest write of each key), so a read through any agent sees every
    /// acknowledged write, however far the owner's changelog lags.
    async fn table_contents(&self, record: &ViewRecord) -> Result<Option<LogicalPlan>> {
        let log = streamhouse_log::table_log_name(&record.name);
        if self.log.stream(&log).await.is_err() {
            return Ok(None);
        }
        self.planner.sync_streams().await?;
        let (_, query) = super::definition::parse_stored(&record.definition)?;
        let plan = self
            .planner
            .plan(sqlparser::ast::Statement::Query(Box::new(query)))
            .await?;
        Ok(Some(plan))
    }

    /// Knows the views of the metadata store this agent has not heard of
    /// (created through other agents); whether there were any.
    pub(crate) async fn learn(&self) -> Result<bool> {
        let mut learned = false;
        for r in self.log.metadata().views().await? {
            if self.running(&r.name).is_none() && !self.is_remote(&r.name) {
                self.know_remote(&r).await?;
                learned = true;
            }
        }
        Ok(learned)
    }

    /// Forgets a remote view (taken over here, or dropped); what was
    /// known of it.
    pub(super) fn forget_remote(&self, name: &str) -> Result<Option<RemoteView>> {
        let was = self
            .remote
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if was.is_some() {
            self.planner
                .ctx
                .deregister_table(TableReference::bare(name))?;
            self.changelogs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        }
        Ok(was)
    }

    /// Stops running view `name` here without touching its lease or state
    /// objects (the lease was lost, or is handed over by the caller).
    async fn stop_view(&self, name: &str) {
        if let Some(view) = self.uninstall(name) {
            view.shutdown().await;
            view.remove_local_state();
        }
    }

    /// Keeps this agent's share of the views (see the module doc) until
    /// the service is dropped. Spawned by the server.
    pub async fn maintain(self: Arc<Self>) {
        let tick = self.timings.lease_duration / 5;
        let weak = Arc::downgrade(&self);
        drop(self);
        loop {
            tokio::time::sleep(tick).await;
            let Some(views) = weak.upgrade() else { return };
            if let Err(e) = views.balance().await {
                tracing::warn!(error = %e, "cannot maintain view leases");
            }
        }
    }

    /// One round of lease upkeep.
    async fn balance(&self) -> Result<()> {
        let meta = self.log.metadata().clone();
        let me = self.log.agent().id();
        let records: HashMap<String, ViewRecord> = meta
            .views()
            .await?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();

        self.restart_failed().await;
        // Renew what runs here; stop what was lost or dropped.
        let running: Vec<(String, u64)> = self
            .by_name()
            .iter()
            .map(|v| (v.name.clone(), v.epoch))
            .collect();
        let mut owned = 0;
        for (name, epoch) in running {
            let kept = records.contains_key(&name)
                && meta
                    .renew_view_lease(&name, &me, epoch, self.lease_until())
                    .await?;
            if kept {
                owned += 1;
                continue;
            }
            tracing::warn!(view = %name, epoch, "lease on materialized view lost; stopping it here");
            self.stop_view(&name).await;
            if let Some(r) = records.get(&name) {
                self.know_remote(r).await?;
            }
        }

        // Views dropped elsewhere; views created elsewhere.
        let remote: Vec<String> = self
            .remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for name in remote {
            if !records.contains_key(&name) {
                self.forget_remote(&name)?;
            }
        }
        let mut synced = false;
        for r in records.values() {
            if self.running(&r.name).is_some() {
                continue;
            }
            // Known: refresh who runs it. Unknown: learn it.
            let refreshed = match self
                .remote
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&r.name)
            {
                Some(known) => {
                    known.record = r.clone();
                    true
                }
                None => false,
            };
            if refreshed {
                continue;
            }
            // Its inputs may be streams created through other agents.
            if !synced {
                self.planner.sync_streams().await?;
                synced = true;
            }
            if let Err(e) = self.know_remote(r).await {
                tracing::debug!(view = %r.name, error = %e, "view not known yet");
            }
        }

        // This agent's share: views over live agents, rounded up.
        let live = self
            .log
            .agents()
            .await?
            .iter()
            .filter(|(_, s)| *s == AgentState::Live)
            .count();
        let share = placement::share(records.len(), live);
        let now = self.log.now_micros();
        let failed: std::collections::HashSet<String> = self
            .failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let free = placement::free_views(records.values(), &me, &failed, now);
        for r in free {
            if owned >= share {
                break;
            }
            match self.take_view(&r.name).await {
                Ok(true) => owned += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(view = %r.name, error = %e, "cannot take over view"),
            }
        }
        // Hand one back when holding more than the share (an agent joined).
        if placement::hand_back(owned, share)
            && let Some(v) = self.by_name().last().cloned()
        {
            self.hand_over(&v.name, v.epoch).await?;
        }
        Ok(())
    }

    /// Starts the views an error stopped again from their latest
    /// checkpoints, each when its backoff allows (see `restarts`): its
    /// lease is released and taken again, which bumps the epoch and fences
    /// whatever the failed run left behind. Should another agent take the
    /// lease in between, it runs the view instead.
    async fn restart_failed(&self) {
        let now = streamhouse_log::monotonic();
        let running = self.by_name();
        self.restarts
            .retain(|name| running.iter().any(|v| v.name == name));
        for view in running {
            let name = view.name.clone();
            let Some(why) = view.failure() else {
                self.restarts.running(&name, now);
                continue;
            };
            let Some(attempt) = self.restarts.due(&name, now) else {
                continue;
            };
            tracing::warn!(view = %name, error = %why, attempt,
                "restarting materialized view from its last checkpoint");
            let meta = self.log.metadata().clone();
            let me = self.log.agent().id();
            // Its task has ended; the lease is let go first, so that a
            // metadata store still out leaves the view as it is (failed,
            // leased) for the next round.
            if let Err(e) = meta.release_view_lease(&name, &me, view.epoch).await {
                tracing::warn!(view = %name, error = %e, "view not restarted yet");
                continue;
            }
            self.stop_view(&name).await;
            match self.take_view(&name).await {
                Ok(true) => {}
                Ok(false) => {
                    if let Some(r) = meta
                        .views()
                        .await
                        .ok()
                        .and_then(|all| all.into_iter().find(|r| r.name == name))
                        && let Err(e) = self.know_remote(&r).await
                    {
                        tracing::debug!(view = %name, error = %e, "view not known yet");
                    }
                }
                // Its lease expires, or is free: a later round takes it.
                Err(e) => tracing::warn!(view = %name, error = %e, "view not restarted yet"),
            }
        }
    }

    /// Checkpoints view `name` if it runs here, so whoever takes it next
    /// replays little (a failure only means more replay).
    async fn checkpoint_view(&self, name: &str) {
        if let Some(v) = self.running(name)
            && let Err(e) = v.checkpoint(&self.log).await
        {
            tracing::debug!(view = %name, error = %e, "no checkpoint before handing over");
        }
    }

    /// Stops a view here cleanly and frees its lease for another agent.
    async fn hand_over(&self, name: &str, epoch: u64) -> Result<()> {
        let meta = self.log.metadata().clone();
        self.checkpoint_view(name).await;
        self.stop_view(name).await;
        meta.release_view_lease(name, &self.log.agent().id(), epoch)
            .await?;
        if let Some(r) = meta.views().await?.into_iter().find(|r| r.name == name) {
            self.know_remote(&r).await?;
        }
        tracing::info!(view = %name, "handed materialized view over");
        Ok(())
    }

    /// Stops every view running here and frees their leases (a clean
    /// shutdown: other agents take the views at once).
    pub async fn release(&self) {
        let running: Vec<(String, u64)> = self
            .by_name()
            .iter()
            .map(|v| (v.name.clone(), v.epoch))
            .collect();
        for (name, epoch) in running {
            self.checkpoint_view(&name).await;
            let view = self
                .running
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            if let Some(v) = view {
                v.shutdown().await;
            }
            let me = self.log.agent().id();
            if let Err(e) = self
                .log
                .metadata()
                .release_view_lease(&name, &me, epoch)
                .await
            {
                tracing::warn!(view = %name, error = %e, "lease not released");
            }
        }
    }
}

/// A view's contents from its changelog: rows inserted and not deleted
/// since (a row inserted twice and deleted once counts once).
fn folded(table: Arc<StreamTable>, changelog: &StreamInfo) -> Result<LogicalPlan> {
    let columns: Vec<Expr> = changelog
        .spec
        .schema
        .fields()
        .iter()
        .filter(|f| f.name() != OP)
        .map(|f| Expr::Column(Column::new_unqualified(f.name())))
        .collect();
    let weight = when(col(OP).eq(lit(DELETE)), lit(-1i64)).otherwise(lit(1i64))?;
    let plan = LogicalPlanBuilder::scan(
        "changelog",
        datafusion::datasource::provider_as_source(table),
        None,
    )?
    .aggregate(columns.clone(), vec![sum(weight).alias("__weight")])?
    .filter(col("__weight").gt(lit(0i64)))?
    .project(columns)?
    .build()?;
    Ok(plan)
}
