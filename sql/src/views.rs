//! `CREATE MATERIALIZED VIEW`, `DROP MATERIALIZED VIEW`, `SHOW MATERIALIZED
//! VIEWS`, push queries (`SUBSCRIBE`, `… EMIT CHANGES`), and bringing views
//! back at start-up (see [`crate::matview`]).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use sqlparser::ast::{Query, Statement as SqlStatement};

use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::database::Database;
use crate::dialect::{self, Emit, Statement, Subscribe, ViewOptions};
use crate::error::{Result, SqlError};
use crate::matview::MatView;
use crate::names::output_names;
use crate::registry::show_views_schema;
use crate::result::{CommandTag, QueryResult};
use streamhouse_log::{StreamInfo, StreamKind, StreamSpec, ViewCheckpoint, ViewLease, ViewRecord};
use streamhouse_streams::StateStore;
use streamhouse_streams::dataflow::changes::{self, CHANGELOG_PREFIX};
use streamhouse_streams::scan::StreamTable;
use streamhouse_streams::{Output, Placement, Status};

/// The plan with its output columns named as PostgreSQL names them
/// (`count`, `sum`, …), so the view's columns have those names.
fn with_output_names(plan: LogicalPlan, query: &Query) -> Result<LogicalPlan> {
    let Some(names) = output_names(query) else {
        return Ok(plan);
    };
    if names.len() != plan.schema().fields().len() {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = plan
        .schema()
        .iter()
        .zip(&names)
        .map(|((q, f), n)| {
            let col = Expr::Column(datafusion::common::Column::new(q.cloned(), f.name()));
            match n {
                Some(n) if n != f.name() => col.alias(n),
                _ => col,
            }
        })
        .collect();
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

/// Stream name of a view incarnation's changelog.
fn changelog_name(dataflow: &str) -> String {
    format!("{CHANGELOG_PREFIX}{dataflow}")
}

/// The statement stored for a view: enough to compile it again.
fn stored_definition(name: &str, options: &ViewOptions, query: &Query) -> String {
    format!(
        "CREATE MATERIALIZED VIEW \"{}\" {}AS {query}",
        name.replace('"', "\"\""),
        options.to_sql()
    )
}

/// A stored definition: the statement, or (older records) the query alone.
fn parse_stored(definition: &str) -> Result<(ViewOptions, Query)> {
    match dialect::parse(definition)?.pop() {
        Some(Statement::CreateMaterializedView { options, query, .. }) => Ok((options, *query)),
        Some(Statement::Sql(s)) => match *s {
            SqlStatement::Query(q) => Ok((ViewOptions::default(), *q)),
            other => Err(SqlError::Internal(format!(
                "stored view is not a query: {other}"
            ))),
        },
        _ => Err(SqlError::Internal(
            "stored view definition unreadable".into(),
        )),
    }
}

impl Database {
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
            checkpoint_interval: self.options.checkpoint_interval,
            output,
            epoch: 0,
        }
    }

    /// Plans a view's query, its columns named as PostgreSQL names them.
    async fn plan_view(&self, query: &Query) -> Result<LogicalPlan> {
        let plan = self
            .plan(SqlStatement::Query(Box::new(query.clone())))
            .await?;
        with_output_names(plan, query)
    }

    /// The changelog stream of a view incarnation (created if missing).
    async fn changelog_stream(
        &self,
        dataflow: &str,
        plan: &LogicalPlan,
    ) -> Result<Arc<StreamInfo>> {
        let name = changelog_name(dataflow);
        match self.log().stream(&name).await {
            Ok(info) => Ok(info),
            Err(_) => {
                let schema = changes::changes_schema(plan.schema().as_arrow())?;
                Ok(self
                    .log()
                    .create_internal_stream(
                        StreamKind::ViewChangelog,
                        StreamSpec::new(name, schema),
                    )
                    .await?)
            }
        }
    }

    fn install_view(&self, view: Arc<MatView>) -> Result<()> {
        self.ctx
            .register_table(TableReference::bare(view.name.clone()), view.table())?;
        if let Some(info) = view.changelog() {
            self.changelogs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    view.name.clone(),
                    Arc::new(StreamTable::new(self.log().clone(), info.clone())),
                );
        }
        view.flow.start(self.log().clone(), self.ctx.clone());
        self.views
            .failed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&view.name);
        self.views
            .running
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(view.name.clone(), view);
        Ok(())
    }

    pub(crate) async fn create_materialized_view(
        &self,
        name: String,
        if_not_exists: bool,
        options: ViewOptions,
        query: Query,
    ) -> Result<QueryResult> {
        let exists = self
            .views
            .running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&name)
            || self
                .views
                .failed
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&name)
            || self
                .views
                .remote
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&name);
        if exists {
            if if_not_exists {
                return Ok(QueryResult::command(CommandTag::CreateMaterializedView));
            }
            return Err(SqlError::DuplicateTable(format!(
                "materialized view \"{name}\" already exists"
            )));
        }
        if self.log().stream(&name).await.is_ok() {
            return Err(SqlError::DuplicateTable(format!(
                "a stream named \"{name}\" already exists"
            )));
        }
        let dataflow = format!("{name}-{:x}", self.log().now_micros());
        let plan = self.plan_view(&query).await?;
        let changelog = self.changelog_stream(&dataflow, &plan).await?;
        // The creating agent holds the view's first lease.
        let mut placement =
            self.placement(&dataflow, None, Some(Output::Changelog(changelog.clone())));
        placement.epoch = 1;
        let created = async {
            let view = MatView::compile(
                self.log(),
                &name,
                query.to_string(),
                options.clone(),
                plan,
                placement,
                self.options.idle_timeout,
            )
            .await?;
            // Like a CREATE INDEX, the statement returns once the view holds
            // everything its inputs held when it started, checkpointed.
            view.backfill(self.log(), &self.ctx).await?;
            let record = ViewRecord {
                name: name.clone(),
                dataflow: dataflow.clone(),
                definition: stored_definition(&name, &options, &query),
                checkpoint: None,
                lease: ViewLease {
                    owner: Some(self.log().agent().id()),
                    epoch: 1,
                    until: Some(
                        self.log().now_micros() + self.options.lease_duration.as_micros() as i64,
                    ),
                },
            };
            if let Err(e) = self
                .log()
                .metadata()
                .create_view(&record, self.log().now_micros())
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
                    .log()
                    .drop_internal_stream(StreamKind::ViewChangelog, changelog.name())
                    .await;
                return Err(e);
            }
        };
        view.checkpoint(self.log()).await?;
        self.install_view(view)?;
        Ok(QueryResult::command(CommandTag::CreateMaterializedView))
    }

    pub(crate) async fn drop_materialized_views(
        &self,
        names: Vec<String>,
        if_exists: bool,
    ) -> Result<QueryResult> {
        for name in names {
            let view = self
                .views
                .running
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            let failed = self
                .views
                .failed
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            if let Some(v) = &view
                && let Some(info) = v.changelog()
            {
                let dependents: Vec<String> = self
                    .views
                    .running
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .filter(|d| d.reads(info.name()))
                    .map(|d| d.name.clone())
                    .collect();
                if !dependents.is_empty() {
                    self.views
                        .running
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone(), v.clone());
                    return Err(SqlError::DependentObjects(format!(
                        "cannot drop materialized view \"{name}\": {} read{} it; drop {} first",
                        dependents.join(", "),
                        if dependents.len() == 1 { "s" } else { "" },
                        if dependents.len() == 1 { "it" } else { "them" },
                    )));
                }
            }
            match (view, failed) {
                (Some(v), _) => {
                    v.shutdown().await;
                    self.ctx
                        .deregister_table(TableReference::bare(name.clone()))?;
                    self.changelogs
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&name);
                    self.log().metadata().drop_view(&name).await?;
                    let _ = self
                        .log()
                        .drop_internal_stream(
                            StreamKind::ViewChangelog,
                            &changelog_name(&v.dataflow),
                        )
                        .await;
                    v.remove_local_state();
                    self.delete_snapshots(&v.dataflow).await;
                }
                (None, _)
                    if self
                        .views
                        .remote
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains_key(&name) =>
                {
                    // Its owner notices the record is gone and stops it.
                    let remote = self
                        .views
                        .remote
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&name)
                        .cloned();
                    self.forget_remote(&name)?;
                    self.log().metadata().drop_view(&name).await?;
                    if let Some(r) = remote {
                        let _ = self
                            .log()
                            .drop_internal_stream(
                                StreamKind::ViewChangelog,
                                &changelog_name(&r.record.dataflow),
                            )
                            .await;
                        self.delete_snapshots(&r.record.dataflow).await;
                    }
                }
                (None, Some(_)) => {
                    let records = self.log().metadata().views().await?;
                    self.log().metadata().drop_view(&name).await?;
                    if let Some(r) = records.iter().find(|r| r.name == name) {
                        let _ = self
                            .log()
                            .drop_internal_stream(
                                StreamKind::ViewChangelog,
                                &changelog_name(&r.dataflow),
                            )
                            .await;
                        self.delete_snapshots(&r.dataflow).await;
                    }
                }
                (None, None) if if_exists => {}
                (None, None) => {
                    return Err(SqlError::UndefinedTable(format!(
                        "materialized view \"{name}\" does not exist"
                    )));
                }
            }
        }
        Ok(QueryResult::command(CommandTag::DropMaterializedView))
    }

    /// Sets the gauges that describe views and consumer groups now (lag,
    /// freshness, state size, watermark, late rows); called when metrics
    /// are scraped.
    pub async fn refresh_metrics(&self) -> Result<()> {
        use crate::metrics as m;
        for v in self.views.by_name() {
            let (status, lag) = v.progress(self.log()).await;
            let view = v.name.clone();
            metrics::gauge!(m::VIEW_LAG_ROWS, "view" => view.clone()).set(lag as f64);
            metrics::gauge!(m::VIEW_FRESHNESS_SECONDS, "view" => view.clone())
                .set(v.freshness(lag));
            metrics::gauge!(m::VIEW_STATE_BYTES, "view" => view.clone())
                .set(v.state_bytes() as f64);
            metrics::gauge!(m::VIEW_RUNNING, "view" => view.clone())
                .set(if status == Status::Running { 1.0 } else { 0.0 });
            metrics::counter!(m::VIEW_LATE_ROWS, "view" => view.clone()).absolute(v.late_rows());
            if let Some(w) = v.watermark() {
                metrics::gauge!(m::VIEW_WATERMARK_SECONDS, "view" => view).set(w as f64 / 1e6);
            }
        }
        for name in self
            .views
            .failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
        {
            metrics::gauge!(m::VIEW_RUNNING, "view" => name.clone()).set(0.0);
        }
        for g in self.log().group_lags().await? {
            metrics::gauge!(
                m::CONSUMER_LAG_ROWS,
                "group" => g.group,
                "stream" => g.stream,
                "partition" => g.partition.to_string()
            )
            .set(g.lag as f64);
        }
        Ok(())
    }

    pub(crate) async fn show_materialized_views(&self) -> Result<QueryResult> {
        let mut rows: Vec<ShowRow> = Vec::new();
        for v in &self.views.by_name() {
            let (status, lag) = v.progress(self.log()).await;
            rows.push(ShowRow {
                name: v.name.clone(),
                status: status.to_string(),
                lag,
                checkpoint: v.checkpoints() as i64,
                origin: v.origin(),
                inputs: v.input_names().join(", "),
                emit: match v.emit() {
                    Emit::OnClose => "on_close",
                    Emit::OnUpdate => "on_update",
                }
                .into(),
                watermark: v.watermark().map(format_micros),
                late_rows: v.late_rows() as i64,
                definition: format!("{}{}", v.options.to_sql(), v.definition),
            });
        }
        for (name, (definition, error)) in self
            .views
            .failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            rows.push(ShowRow {
                name: name.clone(),
                status: format!("failed: {error}"),
                definition: definition.clone(),
                ..ShowRow::default()
            });
        }
        for (name, status, definition) in self.views.remote_rows() {
            rows.push(ShowRow {
                name,
                status,
                definition,
                ..ShowRow::default()
            });
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.name))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.status),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.lag))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.checkpoint),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.origin),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.inputs),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.emit))),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.watermark.clone()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.late_rows),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.definition),
            )),
        ];
        QueryResult::rows(RecordBatch::try_new(show_views_schema(), cols)?)
    }

    /// Brings back every stored view: from its last checkpoint, or — when
    /// it has none, or it cannot be restored — from the beginning of its
    /// inputs (the result is the same; only the time differs). A view that
    /// cannot be compiled at all (an input was dropped) is listed as failed.
    pub(crate) async fn load_views(&self) -> Result<()> {
        let records = self.log().metadata().views().await?;
        if self.log().metadata().is_shared() {
            // Which agent runs which view is settled by the lease upkeep
            // ([`Database::maintain_views`]); until then all are remote.
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
        for s in self.log().all_streams().await? {
            if StreamKind::of(s.name()) == StreamKind::ViewChangelog && !live.contains(s.name()) {
                let _ = self
                    .log()
                    .drop_internal_stream(StreamKind::ViewChangelog, s.name())
                    .await;
            }
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
                    self.views
                        .failed
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

    /// Whether a stored view's changelog only inserts (decided as the view
    /// decides it when running: compiled once, in a scratch directory, and
    /// dropped), so views over it plan alike on every agent.
    pub(crate) async fn changelog_inserts_only(
        &self,
        record: &ViewRecord,
        changelog: &Arc<StreamInfo>,
    ) -> Result<bool> {
        let (options, query) = parse_stored(&record.definition)?;
        let plan = self.plan_view(&query).await?;
        let probe = format!("probe-{}-{:x}", record.dataflow, self.log().now_micros());
        let placement = self.placement(&probe, None, Some(Output::Changelog(changelog.clone())));
        let view = MatView::compile(
            self.log(),
            &record.name,
            query.to_string(),
            options,
            plan,
            placement,
            self.options.idle_timeout,
        )
        .await?;
        let inserts_only = view.inserts_only();
        view.remove_local_state();
        Ok(inserts_only)
    }

    /// The changelog stream of a stored view (created if missing).
    pub(crate) async fn changelog_stream_of(&self, record: &ViewRecord) -> Result<Arc<StreamInfo>> {
        if let Ok(info) = self.log().stream(&changelog_name(&record.dataflow)).await {
            return Ok(info);
        }
        let (_, query) = parse_stored(&record.definition)?;
        let plan = self.plan_view(&query).await?;
        self.changelog_stream(&record.dataflow, &plan).await
    }

    /// Compiles a stored view from its checkpoint (or the log, when the
    /// checkpoint cannot be restored), replays what it wrote after the
    /// checkpoint, and starts it, under lease epoch `epoch`.
    pub(crate) async fn load_view(&self, record: &ViewRecord, epoch: u64) -> Result<()> {
        let name = &record.name;
        let (options, query) = parse_stored(&record.definition)?;
        let plan = self.plan_view(&query).await?;
        let changelog = self.changelog_stream(&record.dataflow, &plan).await?;
        let compile = |restore: Option<ViewCheckpoint>| {
            let mut placement = self.placement(
                &record.dataflow,
                restore,
                Some(Output::Changelog(changelog.clone())),
            );
            placement.epoch = epoch;
            MatView::compile(
                self.log(),
                name,
                query.to_string(),
                options.clone(),
                plan.clone(),
                placement,
                self.options.idle_timeout,
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
        view.recover(self.log(), &self.ctx).await?;
        self.install_view(view)
    }

    /// Deletes a dropped view's state snapshots from the object store (a
    /// failure only leaves garbage behind, which is logged).
    async fn delete_snapshots(&self, dataflow: &str) {
        if let Err(e) = StateStore::delete_snapshots(self.log().store(), dataflow).await {
            tracing::warn!(dataflow, error = %e, "state snapshots of a dropped view not deleted");
        }
    }

    /// The columns a push query returns.
    pub(crate) async fn subscription_schema(&self, s: &Subscribe) -> Result<SchemaRef> {
        match s {
            // The changelog's declared columns: `op`, then the view's.
            Subscribe::View { name, .. } => {
                Ok(self.view_changelog(name).await?.spec.schema.clone())
            }
            Subscribe::Query(q) => {
                let plan = self.plan_view(q).await?;
                Ok(changes::changes_schema(plan.schema().as_arrow())?)
            }
        }
    }

    fn view(&self, name: &str) -> Result<Arc<MatView>> {
        self.views
            .running
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| {
                SqlError::UndefinedTable(format!("materialized view \"{name}\" does not exist"))
            })
    }

    /// The changelog stream of view `name`, if there is such a view (here
    /// or on another agent).
    pub fn changelog_of(&self, name: &str) -> Option<String> {
        if let Ok(view) = self.view(name) {
            return view.changelog().map(|i| i.name().to_string());
        }
        self.views
            .remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|r| changelog_name(&r.record.dataflow))
    }

    /// The changelog stream of view `name`, wherever it runs.
    async fn view_changelog(&self, name: &str) -> Result<Arc<StreamInfo>> {
        if let Ok(view) = self.view(name) {
            return view
                .changelog()
                .cloned()
                .ok_or_else(|| SqlError::Internal(format!("view \"{name}\" has no changelog")));
        }
        match self.changelog_of(name) {
            Some(changelog) => Ok(self.log().stream(&changelog).await?),
            None => Err(SqlError::UndefinedTable(format!(
                "materialized view \"{name}\" does not exist"
            ))),
        }
    }

    /// `SUBSCRIBE TO view` follows its changelog; `SELECT … EMIT CHANGES`
    /// maintains the query as a view of its own for as long as the client
    /// reads.
    pub(crate) async fn subscribe(&self, s: Subscribe) -> Result<QueryResult> {
        match s {
            Subscribe::View { name, snapshot } => {
                let info = self.view_changelog(&name).await?;
                let from = if snapshot {
                    0
                } else {
                    self.log().partition_ends(info.name()).await?[0]
                };
                Ok(QueryResult::Subscription(changes::follow(
                    self.log().clone(),
                    info,
                    from,
                )))
            }
            Subscribe::Query(q) => {
                let plan = self.plan_view(&q).await?;
                let schema = changes::changes_schema(plan.schema().as_arrow())?;
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                let dataflow = format!("push-{:x}", self.log().now_micros());
                let view = MatView::compile(
                    self.log(),
                    &dataflow,
                    q.to_string(),
                    ViewOptions::default(),
                    plan,
                    self.placement(&dataflow, None, Some(Output::Channel(tx))),
                    self.options.idle_timeout,
                )
                .await?;
                view.flow.start(self.log().clone(), self.ctx.clone());
                // The stream owns the query: when the client goes away it is
                // dropped, and with it the query and its local state.
                let guard = PushQuery(view);
                let first = futures::stream::iter([Ok(RecordBatch::new_empty(schema.clone()))]);
                let rest = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
                    rx.recv().await.map(|b| (Ok(b), (rx, guard)))
                });
                Ok(QueryResult::Subscription(Box::pin(
                    RecordBatchStreamAdapter::new(schema, first.chain(rest)),
                )))
            }
        }
    }
}

/// A push query's view, removed when its stream is dropped.
struct PushQuery(Arc<MatView>);

impl Drop for PushQuery {
    fn drop(&mut self) {
        self.0.stop();
        self.0.remove_local_state();
    }
}

/// One row of SHOW MATERIALIZED VIEWS.
#[derive(Default)]
struct ShowRow {
    name: String,
    status: String,
    lag: i64,
    checkpoint: i64,
    origin: String,
    inputs: String,
    emit: String,
    watermark: Option<String>,
    late_rows: i64,
    definition: String,
}

/// µs since the epoch as a timestamp (UTC).
fn format_micros(us: i64) -> String {
    arrow::temporal_conversions::timestamp_us_to_datetime(us)
        .map(|t| t.to_string())
        .unwrap_or_else(|| us.to_string())
}
