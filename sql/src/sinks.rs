//! Sinks: `CREATE SINK name FROM stream INTO PARQUET WITH (…)`, `DROP
//! SINK`, `SHOW SINKS`, and which agent runs each.
//!
//! A sink is a record in the metadata store (its statement) with a lease,
//! like a view's: the agent holding the lease runs the copy
//! ([`streamhouse_connectors::sink::run`]); the others know the sink by its
//! record. [`Sinks::maintain`] renews the leases held here every
//! `lease_duration / 5`, stops a sink whose lease was lost or which was
//! dropped elsewhere, and takes sinks whose lease is free or expired. With
//! the embedded store one process runs every sink. A second run of a sink
//! (an owner that lost its lease and does not know it yet) cannot write a
//! row twice: the destination's files decide (see the sink module).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use streamhouse_connectors::{Progress, SinkSpec};
use streamhouse_log::{ConnectorRecord, Log, LogError, StreamKind, ViewLease};
use tokio::task::JoinHandle;

use crate::dialect::{self, Statement};
use crate::error::{Result, SqlError};
use crate::result::{CommandTag, QueryResult};

/// The kind of a sink's record.
const SINK: &str = "sink";

/// A sink running on this agent.
struct Running {
    /// The log stream it reads (`None` when its source is gone).
    stream: Option<String>,
    epoch: u64,
    progress: Arc<Progress>,
    /// The copy (`None` when it could not start).
    task: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// The sinks: those running here, and every recorded one.
pub struct Sinks {
    log: Arc<Log>,
    lease_duration: Duration,
    running: Mutex<HashMap<String, Running>>,
}

impl Sinks {
    pub fn new(log: Arc<Log>, lease_duration: Duration) -> Sinks {
        Sinks {
            log,
            lease_duration,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease_until(&self) -> i64 {
        self.log.now_micros() + self.lease_duration.as_micros() as i64
    }

    /// `CREATE SINK`: checks the options and the source, records the sink
    /// and starts it here.
    pub(crate) async fn create(
        &self,
        name: String,
        if_not_exists: bool,
        from: String,
        format: String,
        options: Vec<(String, String)>,
    ) -> Result<QueryResult> {
        let spec = SinkSpec::new(&name, &from, &format, &options)
            .map_err(|e| SqlError::InvalidDefinition(e.to_string()))?;
        self.source_stream(&from).await?;
        // The destination must open (a bad bucket or path fails here).
        streamhouse_log::Store::open(&spec.path)
            .map_err(|e| SqlError::InvalidDefinition(format!("sink path: {e}")))?;
        let record = ConnectorRecord {
            name: name.clone(),
            kind: SINK.into(),
            definition: spec.to_sql(),
            lease: ViewLease::default(),
        };
        match self
            .log
            .metadata()
            .create_connector(&record, self.log.now_micros())
            .await
        {
            Ok(()) => {}
            Err(LogError::ConnectorExists(_)) if if_not_exists => {
                return Ok(QueryResult::command(CommandTag::CreateSink));
            }
            Err(LogError::ConnectorExists(_)) => {
                return Err(SqlError::DuplicateObject(format!(
                    "sink \"{name}\" already exists"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.take(&name, spec).await?;
        Ok(QueryResult::command(CommandTag::CreateSink))
    }

    /// The log stream a sink of `from` reads: the stream itself, or a
    /// materialized view's changelog.
    async fn source_stream(&self, from: &str) -> Result<String> {
        match self.log.stream(from).await {
            Ok(info) if StreamKind::of(info.name()) == StreamKind::User => {
                return Ok(info.name().to_string());
            }
            Ok(_) | Err(LogError::UnknownStream(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let views = self.log.metadata().views().await?;
        match views.iter().find(|v| v.name == from) {
            Some(view) => Ok(crate::views::changelog_stream(view)),
            None => Err(SqlError::UndefinedTable(format!(
                "no stream or materialized view \"{from}\" (a sink copies one; not yet a table)"
            ))),
        }
    }

    /// Refuses to drop streams or views (`names`) that sinks copy.
    pub(crate) async fn refuse_dropping(&self, names: &[String]) -> Result<()> {
        for record in self.log.metadata().connectors().await? {
            if record.kind != SINK {
                continue;
            }
            let spec = spec_of(&record)?;
            if names.contains(&spec.stream) {
                return Err(SqlError::DependentObjects(format!(
                    "cannot drop \"{}\": sink \"{}\" copies it; drop the sink first",
                    spec.stream, record.name
                )));
            }
        }
        Ok(())
    }

    /// Takes sink `name`'s lease and starts it here; `false` when another
    /// agent holds it.
    async fn take(&self, name: &str, spec: SinkSpec) -> Result<bool> {
        let meta = self.log.metadata();
        let me = self.log.agent().id();
        let steal = !meta.is_shared();
        let Some(epoch) = meta
            .acquire_connector_lease(name, &me, self.log.now_micros(), self.lease_until(), steal)
            .await?
        else {
            return Ok(false);
        };
        let progress = Arc::new(Progress::default());
        let stream = match self.source_stream(&spec.stream).await {
            Ok(s) => Some(s),
            Err(e) => {
                progress.fail(e.to_string());
                None
            }
        };
        let task = stream.clone().map(|stream| {
            tokio::spawn(streamhouse_connectors::sink::run(
                self.log.clone(),
                spec,
                stream,
                progress.clone(),
            ))
        });
        tracing::info!(sink = %name, epoch, "sink started");
        self.running().insert(
            name.to_string(),
            Running {
                stream,
                epoch,
                progress,
                task,
            },
        );
        Ok(true)
    }

    /// `DROP SINK`: stops each sink and forgets it (its files stay).
    pub(crate) async fn drop_sinks(
        &self,
        names: &[String],
        if_exists: bool,
    ) -> Result<QueryResult> {
        let meta = self.log.metadata();
        let known: Vec<String> = meta
            .connectors()
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        if !if_exists && let Some(missing) = names.iter().find(|n| !known.contains(n)) {
            return Err(SqlError::UndefinedObject(format!(
                "sink \"{missing}\" does not exist"
            )));
        }
        for name in names {
            let stopped = self.running().remove(name);
            if let Some(r) = stopped {
                let me = self.log.agent().id();
                meta.release_connector_lease(name, &me, r.epoch).await?;
            }
            meta.drop_connector(name).await?;
        }
        Ok(QueryResult::command(CommandTag::DropSink))
    }

    /// Starts the recorded sinks this agent can take (at start-up).
    pub async fn load(&self) -> Result<()> {
        self.balance().await
    }

    /// Keeps the leases: see the module doc. Ends when the sinks are
    /// dropped.
    pub async fn maintain(self: Arc<Self>) {
        let tick = self.lease_duration / 5;
        let weak = Arc::downgrade(&self);
        drop(self);
        loop {
            tokio::time::sleep(tick).await;
            let Some(sinks) = weak.upgrade() else { return };
            if let Err(e) = sinks.balance().await {
                tracing::warn!(error = %e, "cannot maintain sink leases");
            }
        }
    }

    /// One round of lease upkeep.
    async fn balance(&self) -> Result<()> {
        let meta = self.log.metadata().clone();
        let me = self.log.agent().id();
        let records: HashMap<String, ConnectorRecord> = meta
            .connectors()
            .await?
            .into_iter()
            .filter(|c| c.kind == SINK)
            .map(|c| (c.name.clone(), c))
            .collect();
        let held: Vec<(String, u64)> = self
            .running()
            .iter()
            .map(|(n, r)| (n.clone(), r.epoch))
            .collect();
        for (name, epoch) in held {
            let kept = records.contains_key(&name)
                && meta
                    .renew_connector_lease(&name, &me, epoch, self.lease_until())
                    .await?;
            if !kept {
                tracing::warn!(sink = %name, epoch, "sink dropped or its lease lost; stopping it here");
                self.running().remove(&name);
            }
        }
        for (name, record) in records {
            if self.running().contains_key(&name) {
                continue;
            }
            let spec = match spec_of(&record) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, "cannot read a sink's statement");
                    continue;
                }
            };
            self.take(&name, spec).await?;
        }
        Ok(())
    }

    /// Stops every sink running here and gives up its lease (a clean stop).
    pub async fn shutdown(&self) {
        let stopped: Vec<(String, Running)> = self.running().drain().collect();
        let me = self.log.agent().id();
        for (name, r) in stopped {
            let epoch = r.epoch;
            drop(r); // stops the copy
            if let Err(e) = self
                .log
                .metadata()
                .release_connector_lease(&name, &me, epoch)
                .await
            {
                tracing::warn!(sink = %name, error = %e, "cannot release a sink's lease");
            }
        }
    }

    /// `SHOW SINKS`: every sink, its status where it runs here, rows and
    /// files written by this run, and its lag (rows of its stream not yet
    /// in files).
    pub(crate) async fn show(&self) -> Result<QueryResult> {
        let columns = self.listing().await?;
        QueryResult::rows(RecordBatch::try_new(show_sinks_schema(), columns)?)
    }

    /// The columns of [`show_sinks_schema`], a row per sink (what `SHOW
    /// SINKS` and `streamhouse.sinks` list).
    pub(crate) async fn listing(&self) -> Result<Vec<ArrayRef>> {
        let records = self.log.metadata().connectors().await?;
        let me = self.log.agent().id();
        let mut rows = ShowRows::default();
        for record in records.iter().filter(|c| c.kind == SINK) {
            let spec = spec_of(record)?;
            let here = self.running().get(&record.name).map(|r| {
                let (written, files) = r.progress.written();
                let status = r.progress.status();
                (
                    status,
                    r.stream.clone(),
                    r.progress.positions(),
                    written,
                    files,
                )
            });
            let (status, cause, lag, written, files) = match here {
                Some((status, stream, positions, written, files)) => {
                    let ends = match &stream {
                        Some(s) => self.log.partition_ends(s).await.unwrap_or_default(),
                        None => Vec::new(),
                    };
                    let lag = (positions.len() == ends.len()).then(|| {
                        ends.iter()
                            .zip(&positions)
                            .map(|(e, p)| e.saturating_sub(*p) as i64)
                            .sum::<i64>()
                    });
                    (
                        status.name().to_string(),
                        status.cause().map(str::to_string),
                        lag,
                        Some(written as i64),
                        Some(files as i64),
                    )
                }
                None => {
                    let status = match &record.lease.owner {
                        Some(owner) if *owner != me => format!("running on {owner}"),
                        _ => "waiting".to_string(),
                    };
                    (status, None, None, None, None)
                }
            };
            rows.name.push(record.name.clone());
            rows.from.push(spec.stream.clone());
            rows.into.push(spec.format.name().to_string());
            rows.path.push(spec.path.clone());
            rows.status.push(status);
            rows.cause.push(cause);
            rows.lag.push(lag);
            rows.rows.push(written);
            rows.files.push(files);
            rows.definition.push(record.definition.clone());
        }
        Ok(rows.columns())
    }
}

/// The spec a sink's stored statement describes.
fn spec_of(record: &ConnectorRecord) -> Result<SinkSpec> {
    match dialect::parse(&record.definition)?.pop() {
        Some(Statement::CreateSink {
            name,
            from,
            format,
            options,
            ..
        }) => SinkSpec::new(&name, &from, &format, &options)
            .map_err(|e| SqlError::Internal(format!("sink \"{}\": {e}", record.name))),
        _ => Err(SqlError::Internal(format!(
            "sink \"{}\" has no CREATE SINK statement",
            record.name
        ))),
    }
}

#[derive(Default)]
struct ShowRows {
    name: Vec<String>,
    from: Vec<String>,
    into: Vec<String>,
    path: Vec<String>,
    status: Vec<String>,
    cause: Vec<Option<String>>,
    lag: Vec<Option<i64>>,
    rows: Vec<Option<i64>>,
    files: Vec<Option<i64>>,
    definition: Vec<String>,
}

impl ShowRows {
    fn columns(self) -> Vec<ArrayRef> {
        let strings = |v: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        vec![
            strings(self.name),
            strings(self.from),
            strings(self.into),
            strings(self.path),
            strings(self.status),
            Arc::new(StringArray::from(self.cause)),
            Arc::new(Int64Array::from(self.lag)),
            Arc::new(Int64Array::from(self.rows)),
            Arc::new(Int64Array::from(self.files)),
            strings(self.definition),
        ]
    }
}

/// The columns of `SHOW SINKS` and `streamhouse.sinks`.
pub fn show_sinks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("from", DataType::Utf8, false),
        Field::new("into", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("cause", DataType::Utf8, true),
        Field::new("lag_rows", DataType::Int64, true),
        Field::new("rows_written", DataType::Int64, true),
        Field::new("files_written", DataType::Int64, true),
        Field::new("definition", DataType::Utf8, false),
    ]))
}
