//! The `streamhouse` schema: system tables any door can query —
//! `streams`, `schema_versions` (every version of each stream's schema),
//! `partitions`, `views`, `sinks`, `sources`, `consumer_groups`, `queries` (running statements
//! and subscriptions) and `agents`. Each is computed when it is
//! scanned, from the log's metadata and the server's own state.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;

use std::collections::HashMap;

use streamhouse_log::{Log, StreamKind, TABLE_PREFIX};

use crate::error::Result;

/// Name of the schema.
pub const SCHEMA: &str = "streamhouse";

/// Builds a table's rows when it is scanned.
pub type Fill = Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<ArrayRef>>> + Send + Sync>;

/// One system table.
pub struct SystemTable {
    schema: SchemaRef,
    fill: Fill,
}

impl fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SystemTable({:?})", self.schema)
    }
}

impl SystemTable {
    pub fn new(columns: Vec<(&str, DataType)>, fill: Fill) -> Arc<SystemTable> {
        let fields: Vec<Field> = columns
            .into_iter()
            .map(|(n, t)| Field::new(n, t, true))
            .collect();
        Arc::new(SystemTable {
            schema: Arc::new(Schema::new(fields)),
            fill,
        })
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let columns = (self.fill)()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        MemTable::try_new(self.schema.clone(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// A schema holding `tables`.
pub fn schema(tables: Vec<(&str, Arc<SystemTable>)>) -> DfResult<Arc<dyn SchemaProvider>> {
    let schema = MemorySchemaProvider::new();
    for (name, table) in tables {
        schema.register_table(name.to_string(), table)?;
    }
    Ok(Arc::new(schema))
}

/// Column builders for the fills.
pub fn text<S: AsRef<str>>(v: impl IntoIterator<Item = Option<S>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<StringArray>())
}
pub fn int(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<Int64Array>())
}
pub fn float(v: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<Float64Array>())
}
pub fn boolean(v: impl IntoIterator<Item = Option<bool>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<BooleanArray>())
}
/// Microseconds since the epoch, as `timestamptz`.
pub fn time(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        v.into_iter()
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}
/// `timestamptz`, the type [`time`] builds.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Statements running now, for `streamhouse.queries`.
pub struct Running {
    next: AtomicU64,
    entries: Mutex<BTreeMap<u64, RunningQuery>>,
    clock: streamhouse_log::ClockRef,
}

/// One running statement.
#[derive(Debug, Clone)]
pub struct RunningQuery {
    pub id: u64,
    pub door: &'static str,
    pub text: String,
    /// `statement` or `subscription`.
    pub kind: &'static str,
    pub started_at: i64,
    pub started: Instant,
}

/// Removes its statement from [`Running`] when dropped.
pub struct RunningGuard {
    running: Arc<Running>,
    id: u64,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Running {
    /// An empty registry; start times by `clock`.
    pub fn new(clock: streamhouse_log::ClockRef) -> Self {
        Running {
            next: AtomicU64::new(0),
            entries: Mutex::new(BTreeMap::new()),
            clock,
        }
    }

    /// Registers a statement until the guard is dropped.
    pub fn begin(self: &Arc<Self>, door: &'static str, text: String) -> RunningGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                RunningQuery {
                    id,
                    door,
                    text,
                    kind: "statement",
                    started_at: self.clock.now_micros(),
                    started: streamhouse_log::monotonic().into_std(),
                },
            );
        RunningGuard {
            running: self.clone(),
            id,
        }
    }

    /// Marks a running statement as a subscription.
    pub fn subscription(&self, guard: &RunningGuard) {
        if let Some(e) = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&guard.id)
        {
            e.kind = "subscription";
        }
    }

    /// What runs now.
    pub fn list(&self) -> Vec<RunningQuery> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// What the tables read.
pub(crate) struct Sources {
    pub log: Arc<Log>,
    pub views: Arc<crate::views::Views>,
    pub connectors: Arc<crate::connectors::Connectors>,
    pub running: Arc<Running>,
}

fn fill<F, Fut>(sources: &Arc<Sources>, f: F) -> Fill
where
    F: Fn(Arc<Sources>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Vec<ArrayRef>>> + Send + 'static,
{
    let sources = sources.clone();
    Arc::new(move || Box::pin(f(sources.clone())))
}

/// A system table with the columns of a `SHOW` statement's `schema`.
fn listed_as(schema: &SchemaRef, fill: Fill) -> Arc<SystemTable> {
    SystemTable::new(
        schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone()))
            .collect(),
        fill,
    )
}

/// Streams with their partitions' stats, as listed by `streams` and
/// `tables`.
type WithStats = [(
    Arc<streamhouse_log::StreamInfo>,
    Vec<streamhouse_log::PartitionStats>,
)];

/// `streams` with their partitions' stats, from one metadata query.
async fn with_stats(
    log: &Log,
    streams: Vec<Arc<streamhouse_log::StreamInfo>>,
) -> Result<
    Vec<(
        Arc<streamhouse_log::StreamInfo>,
        Vec<streamhouse_log::PartitionStats>,
    )>,
> {
    let mut by_id: HashMap<streamhouse_log::StreamId, Vec<_>> = HashMap::new();
    for (id, p) in log.metadata().all_partition_stats().await? {
        by_id.entry(id).or_default().push(p);
    }
    Ok(streams
        .into_iter()
        .map(|info| {
            let stats = by_id.remove(&info.id).unwrap_or_default();
            (info, stats)
        })
        .collect())
}

/// Per stream, the sum of `f` over its partitions.
fn partition_sums(rows: &WithStats, f: fn(&streamhouse_log::PartitionStats) -> u64) -> ArrayRef {
    int(rows
        .iter()
        .map(|(_, st)| Some(st.iter().map(f).sum::<u64>() as i64)))
}

/// Per stream, when its newest row was appended.
fn last_appends(rows: &WithStats) -> ArrayRef {
    time(
        rows.iter()
            .map(|(_, st)| st.iter().filter_map(|p| p.last_append).max()),
    )
}

/// The tables of the `streamhouse` schema.
pub(crate) fn tables(sources: Arc<Sources>) -> Vec<(&'static str, Arc<SystemTable>)> {
    use DataType::{Boolean, Float64, Int64, Utf8};
    vec![
        (
            "streams",
            SystemTable::new(
                vec![
                    ("name", Utf8),
                    ("partitions", Int64),
                    ("key", Utf8),
                    ("event_time", Utf8),
                    ("rows", Int64),
                    ("bytes", Int64),
                    ("chunks", Int64),
                    ("high_watermark", Int64),
                    ("last_append", time_type()),
                ],
                fill(&sources, |s| async move {
                    let rows = with_stats(&s.log, s.log.streams().await?).await?;
                    let sum = |f| partition_sums(&rows, f);
                    Ok(vec![
                        text(rows.iter().map(|(i, _)| Some(i.name()))),
                        int(rows.iter().map(|(i, _)| Some(i.spec.partitions as i64))),
                        text(
                            rows.iter().map(|(i, _)| {
                                Some(i.spec.key.join(", ")).filter(|k| !k.is_empty())
                            }),
                        ),
                        text(
                            rows.iter()
                                .map(|(i, _)| i.spec.event_time.as_ref().map(|e| e.column.clone())),
                        ),
                        sum(|p| p.rows),
                        sum(|p| p.bytes),
                        sum(|p| p.chunks),
                        sum(|p| p.next_offset),
                        last_appends(&rows),
                    ])
                }),
            ),
        ),
        (
            "tables",
            SystemTable::new(
                vec![
                    ("name", Utf8),
                    ("partitions", Int64),
                    ("primary_key", Utf8),
                    ("writes", Int64),
                    ("log_rows", Int64),
                    ("log_bytes", Int64),
                    ("last_write", time_type()),
                ],
                fill(&sources, |s| async move {
                    let tables = s
                        .log
                        .all_streams()
                        .await?
                        .into_iter()
                        .filter(|info| StreamKind::of(info.name()) == StreamKind::Table);
                    let rows = with_stats(&s.log, tables.collect()).await?;
                    let sum = |f| partition_sums(&rows, f);
                    Ok(vec![
                        text(
                            rows.iter()
                                .map(|(i, _)| i.name().strip_prefix(TABLE_PREFIX)),
                        ),
                        int(rows.iter().map(|(i, _)| Some(i.spec.partitions as i64))),
                        text(rows.iter().map(|(i, _)| Some(i.spec.key.join(", ")))),
                        sum(|p| p.next_offset),
                        sum(|p| p.rows),
                        sum(|p| p.bytes),
                        last_appends(&rows),
                    ])
                }),
            ),
        ),
        (
            "schema_versions",
            SystemTable::new(
                vec![
                    ("stream", Utf8),
                    ("version", Int64),
                    ("columns", Utf8),
                    ("change", Utf8),
                    ("created_at", time_type()),
                ],
                fill(&sources, |s| async move {
                    let mut rows = Vec::new();
                    for info in s.log.streams().await? {
                        for v in s.log.metadata().schema_versions(info.id).await? {
                            rows.push((info.name().to_string(), v));
                        }
                    }
                    let columns = |v: &streamhouse_log::SchemaVersion| {
                        v.schema
                            .fields()
                            .iter()
                            .map(|f| {
                                let null = if f.is_nullable() { "" } else { " NOT NULL" };
                                format!("{} {}{null}", f.name(), crate::types::sql_type_name(f))
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    Ok(vec![
                        text(rows.iter().map(|r| Some(r.0.clone()))),
                        int(rows.iter().map(|r| Some(r.1.version as i64))),
                        text(rows.iter().map(|r| Some(columns(&r.1)))),
                        text(rows.iter().map(|r| Some(r.1.change.clone()))),
                        time(rows.iter().map(|r| Some(r.1.created_at))),
                    ])
                }),
            ),
        ),
        (
            "partitions",
            SystemTable::new(
                vec![
                    ("stream", Utf8),
                    ("partition", Int64),
                    ("start_offset", Int64),
                    ("high_watermark", Int64),
                    ("rows", Int64),
                    ("bytes", Int64),
                    ("chunks", Int64),
                    ("last_append", time_type()),
                ],
                fill(&sources, |s| async move {
                    let rows: Vec<_> = with_stats(&s.log, s.log.streams().await?)
                        .await?
                        .into_iter()
                        .flat_map(|(info, stats)| {
                            let name = info.name().to_string();
                            stats.into_iter().map(move |p| (name.clone(), p))
                        })
                        .collect();
                    Ok(vec![
                        text(rows.iter().map(|r| Some(r.0.clone()))),
                        int(rows.iter().map(|r| Some(r.1.partition as i64))),
                        int(rows
                            .iter()
                            .map(|r| Some(r.1.first_offset.unwrap_or(r.1.next_offset) as i64))),
                        int(rows.iter().map(|r| Some(r.1.next_offset as i64))),
                        int(rows.iter().map(|r| Some(r.1.rows as i64))),
                        int(rows.iter().map(|r| Some(r.1.bytes as i64))),
                        int(rows.iter().map(|r| Some(r.1.chunks as i64))),
                        time(rows.iter().map(|r| r.1.last_append)),
                    ])
                }),
            ),
        ),
        (
            "views",
            SystemTable::new(
                vec![
                    ("name", Utf8),
                    ("status", Utf8),
                    ("lag_rows", Int64),
                    ("freshness_seconds", Float64),
                    ("last_checkpoint", Int64),
                    ("restored_from", Utf8),
                    ("emit", Utf8),
                    ("watermark", time_type()),
                    ("late_rows", Int64),
                    ("state_bytes", Int64),
                    ("inputs", Utf8),
                    ("definition", Utf8),
                    ("owner", Utf8),
                ],
                fill(&sources, |s| async move { views(&s).await }),
            ),
        ),
        (
            "sinks",
            listed_as(
                &crate::connectors::show_sinks_schema(),
                fill(
                    &sources,
                    |s| async move { s.connectors.sink_listing().await },
                ),
            ),
        ),
        (
            "sources",
            listed_as(
                &crate::connectors::show_sources_schema(),
                fill(
                    &sources,
                    |s| async move { s.connectors.source_listing().await },
                ),
            ),
        ),
        (
            "consumer_groups",
            SystemTable::new(
                vec![
                    ("group", Utf8),
                    ("stream", Utf8),
                    ("partition", Int64),
                    ("committed", Int64),
                    ("high_watermark", Int64),
                    ("lag", Int64),
                    ("member", Utf8),
                    ("generation", Int64),
                ],
                fill(&sources, |s| async move {
                    let lags = s.log.group_lags().await?;
                    let mut live: HashMap<String, streamhouse_log::groups::GroupState> =
                        HashMap::new();
                    for l in &lags {
                        if !live.contains_key(&l.group)
                            && let Some(g) = s.log.groups().describe(&l.group).await?
                        {
                            live.insert(l.group.clone(), g);
                        }
                    }
                    let member = |g: &str, p: u32| {
                        live.get(g).and_then(|g| {
                            g.members
                                .iter()
                                .find(|m| m.partitions.contains(&p))
                                .map(|m| m.member.clone())
                        })
                    };
                    Ok(vec![
                        text(lags.iter().map(|l| Some(l.group.clone()))),
                        text(lags.iter().map(|l| Some(l.stream.clone()))),
                        int(lags.iter().map(|l| Some(l.partition as i64))),
                        int(lags.iter().map(|l| l.committed.map(|c| c as i64))),
                        int(lags.iter().map(|l| Some(l.end as i64))),
                        int(lags.iter().map(|l| Some(l.lag as i64))),
                        text(lags.iter().map(|l| member(&l.group, l.partition))),
                        int(lags
                            .iter()
                            .map(|l| live.get(&l.group).map(|g| g.generation as i64))),
                    ])
                }),
            ),
        ),
        (
            "queries",
            SystemTable::new(
                vec![
                    ("id", Int64),
                    ("door", Utf8),
                    ("kind", Utf8),
                    ("query", Utf8),
                    ("started_at", time_type()),
                    ("running_seconds", Float64),
                ],
                fill(&sources, |s| async move {
                    let q = s.running.list();
                    Ok(vec![
                        int(q.iter().map(|q| Some(q.id as i64))),
                        text(q.iter().map(|q| Some(q.door))),
                        text(q.iter().map(|q| Some(q.kind))),
                        text(q.iter().map(|q| Some(q.text.clone()))),
                        time(q.iter().map(|q| Some(q.started_at))),
                        float(q.iter().map(|q| Some(q.started.elapsed().as_secs_f64()))),
                    ])
                }),
            ),
        ),
        (
            "agents",
            SystemTable::new(
                vec![
                    ("agent", Utf8),
                    ("state", Utf8),
                    ("this", Boolean),
                    ("version", Utf8),
                    ("started_at", time_type()),
                    ("heartbeat_at", time_type()),
                    ("pgwire", Utf8),
                    ("flight", Utf8),
                    ("http", Utf8),
                    ("views", Int64),
                ],
                fill(&sources, |s| async move {
                    let me = s.log.agent().id();
                    let views = s.views.running_count();
                    let agents = s.log.agents().await?;
                    let addr = |door: &str| -> ArrayRef {
                        text(agents.iter().map(|(a, _)| a.addresses.get(door).cloned()))
                    };
                    Ok(vec![
                        text(agents.iter().map(|(a, _)| Some(a.id.clone()))),
                        text(agents.iter().map(|(_, st)| Some(st.as_str()))),
                        boolean(agents.iter().map(|(a, _)| Some(a.id == me))),
                        text(agents.iter().map(|(a, _)| Some(a.version.clone()))),
                        time(agents.iter().map(|(a, _)| Some(a.started_at))),
                        time(agents.iter().map(|(a, _)| Some(a.heartbeat_at))),
                        addr("pgwire"),
                        addr("flight"),
                        addr("http"),
                        // Views run on the agent that created them.
                        int(agents
                            .iter()
                            .map(|(a, _)| (a.id == me).then_some(views as i64))),
                    ])
                }),
            ),
        ),
    ]
}

async fn views(s: &Sources) -> Result<Vec<ArrayRef>> {
    let list = s.views.listed();
    let here = Some(s.log.agent().id());
    let mut rows = Vec::new();
    for v in &list {
        let (status, lag, fresh) = s.views.progress_of(v).await;
        rows.push((
            v.name.clone(),
            status.to_string(),
            Some(lag),
            Some(fresh),
            Some(v.checkpoints() as i64),
            Some(v.origin()),
            Some(match v.emit() {
                crate::dialect::Emit::OnClose => "on_close",
                crate::dialect::Emit::OnUpdate => "on_update",
            }),
            s.views.watermark_of(v),
            Some(v.late_rows() as i64),
            Some(v.state_bytes() as i64),
            Some(s.views.inputs_of(v).join(", ")),
            format!("{}{}", v.options.to_sql(), v.definition),
            here.clone(),
        ));
    }
    for (name, definition, error) in s.views.failed_rows() {
        rows.push((
            name,
            format!("failed: {error}"),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            definition,
            here.clone(),
        ));
    }
    for (name, status, definition, owner) in s.views.remote_rows() {
        rows.push((
            name, status, None, None, None, None, None, None, None, None, None, definition, owner,
        ));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vec![
        text(rows.iter().map(|r| Some(r.0.clone()))),
        text(rows.iter().map(|r| Some(r.1.clone()))),
        int(rows.iter().map(|r| r.2)),
        float(rows.iter().map(|r| r.3)),
        int(rows.iter().map(|r| r.4)),
        text(rows.iter().map(|r| r.5.clone())),
        text(rows.iter().map(|r| r.6)),
        time(rows.iter().map(|r| r.7)),
        int(rows.iter().map(|r| r.8)),
        int(rows.iter().map(|r| r.9)),
        text(rows.iter().map(|r| r.10.clone())),
        text(rows.iter().map(|r| Some(r.11.clone()))),
        text(rows.iter().map(|r| r.12.clone())),
    ])
}
