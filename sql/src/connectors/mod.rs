//! Connectors declared in SQL — sinks ([`sinks`]: `CREATE SINK`, `DROP
//! SINK`, `SHOW SINKS`) and sources ([`sources`]: `CREATE SOURCE`, `DROP
//! SOURCE`, `SHOW SOURCES`) — and which agent runs each.
//!
//! A connector is a record in the metadata store (its statement) with a
//! lease, like a view's: the agent holding the lease runs it; the others
//! know it by its record. [`Connectors::maintain`] renews the leases held
//! here every `lease_duration / 5`, stops a connector whose lease was lost
//! or which was dropped elsewhere, and takes connectors whose lease is free
//! or expired. With the embedded store one process runs every connector. A
//! second run of one (an owner that lost its lease and does not know it
//! yet) cannot write a row twice: a sink's destination files decide, and a
//! source appends as a producer fenced to the lease's epoch.

pub(crate) mod sinks;
pub(crate) mod sources;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::Field;
use futures::future::BoxFuture;
use streamhouse_connectors::{Progress, SourceProgress, SourceSpec};
use streamhouse_log::{ConnectorRecord, Log};
use tokio::task::JoinHandle;

use crate::dialect::Statement;
use crate::error::{Result, SqlError};
use crate::result::{CommandTag, QueryResult};

pub use sinks::show_sinks_schema;
pub use sources::show_sources_schema;

/// Tables a source writes are made by the database (a table is a log and
/// the view of its rows).
pub(crate) trait MakeTables: Sync {
    /// Makes table `name` of `fields`, keyed by `key`.
    fn make_table<'a>(
        &'a self,
        name: &'a str,
        fields: Vec<Field>,
        key: Vec<String>,
        partitions: u32,
    ) -> BoxFuture<'a, Result<()>>;

    /// Drops table `name` (one just made, when a later one fails).
    fn drop_table<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// The kind of a sink's record.
const SINK: &str = "sink";
/// The kind of a source's record.
const SOURCE: &str = "source";

/// What a connector running here shows.
enum Shown {
    Sink {
        /// The log stream it reads (`None` when its source is gone).
        stream: Option<String>,
        progress: Arc<Progress>,
    },
    Source {
        progress: Arc<SourceProgress>,
    },
}

/// A connector running on this agent.
struct Running {
    epoch: u64,
    shown: Shown,
    /// Its task (`None` when it could not start).
    task: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// The connectors: those running here, and every recorded one.
pub struct Connectors {
    log: Arc<Log>,
    lease_duration: Duration,
    running: Mutex<HashMap<String, Running>>,
}

impl Connectors {
    /// Runs a sink or source statement (`CREATE | DROP | SHOW SINKS |
    /// SOURCES`); with its result, the streams and tables it made (through
    /// `tables`), whose owner the caller records.
    pub(crate) async fn execute(
        &self,
        stmt: Statement,
        tables: &dyn MakeTables,
    ) -> Result<(QueryResult, Vec<String>)> {
        let done = match stmt {
            Statement::CreateSink {
                name,
                if_not_exists,
                from,
                format,
                options,
            } => {
                self.create_sink(name, if_not_exists, from, format, options)
                    .await?
            }
            Statement::DropSink { names, if_exists } => self.drop_sinks(&names, if_exists).await?,
            Statement::ShowSinks => self.show_sinks().await?,
            Statement::CreateSource {
                name,
                if_not_exists,
                kind,
                options,
                tables: upstream,
                into,
            } => {
                let spec = SourceSpec::new(&name, &kind, &options, &upstream, into.as_deref())
                    .map_err(sources::source_error)?;
                return self.create_source(spec, if_not_exists, tables).await;
            }
            Statement::DropSource { names, if_exists } => {
                self.drop_sources(&names, if_exists).await?
            }
            Statement::ShowSources => self.show_sources().await?,
            _ => {
                return Err(SqlError::Internal("not a sink or source statement".into()));
            }
        };
        Ok((done, Vec::new()))
    }

    pub fn new(log: Arc<Log>, lease_duration: Duration) -> Connectors {
        Connectors {
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

    /// Takes connector `record`'s lease and starts it here; `false` when
    /// another agent holds it.
    async fn take(&self, record: &ConnectorRecord) -> Result<bool> {
        let meta = self.log.metadata();
        let me = self.log.agent().id();
        let steal = !meta.is_shared();
        let name = &record.name;
        let Some(epoch) = meta
            .acquire_connector_lease(name, &me, self.log.now_micros(), self.lease_until(), steal)
            .await?
        else {
            return Ok(false);
        };
        let started = match record.kind.as_str() {
            SINK => self.start_sink(record).await,
            SOURCE => self.start_source(record, epoch),
            other => Err(SqlError::Internal(format!(
                "connector \"{name}\" is of an unknown kind {other:?}"
            ))),
        };
        let (shown, task) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = meta.release_connector_lease(name, &me, epoch).await;
                return Err(e);
            }
        };
        tracing::info!(connector = %name, kind = %record.kind, epoch, "connector started");
        self.running()
            .insert(name.to_string(), Running { epoch, shown, task });
        Ok(true)
    }

    /// `DROP SINK` / `DROP SOURCE` (`kind`): stops each and forgets it;
    /// what it wrote stays. The records dropped.
    async fn drop_connectors(
        &self,
        kind: &str,
        names: &[String],
        if_exists: bool,
    ) -> Result<Vec<ConnectorRecord>> {
        let meta = self.log.metadata();
        let known: Vec<ConnectorRecord> = meta
            .connectors()
            .await?
            .into_iter()
            .filter(|c| c.kind == kind)
            .collect();
        if !if_exists
            && let Some(missing) = names.iter().find(|n| !known.iter().any(|c| &c.name == *n))
        {
            return Err(SqlError::UndefinedObject(format!(
                "{kind} \"{missing}\" does not exist"
            )));
        }
        let mut dropped = Vec::new();
        for record in known.into_iter().filter(|c| names.contains(&c.name)) {
            let stopped = self.running().remove(&record.name);
            if let Some(r) = stopped {
                let me = self.log.agent().id();
                let epoch = r.epoch;
                drop(r);
                meta.release_connector_lease(&record.name, &me, epoch)
                    .await?;
            }
            meta.drop_connector(&record.name).await?;
            dropped.push(record);
        }
        Ok(dropped)
    }

    /// Starts the recorded connectors this agent can take (at start-up).
    pub async fn load(&self) -> Result<()> {
        self.balance().await
    }

    /// Keeps the leases: see the module doc. Ends when the connectors are
    /// dropped.
    pub async fn maintain(self: Arc<Self>) {
        let tick = self.lease_duration / 5;
        let weak = Arc::downgrade(&self);
        drop(self);
        loop {
            tokio::time::sleep(tick).await;
            let Some(connectors) = weak.upgrade() else {
                return;
            };
            if let Err(e) = connectors.balance().await {
                tracing::warn!(error = %e, "cannot maintain connector leases");
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
                tracing::warn!(connector = %name, epoch, "connector dropped or its lease lost; stopping it here");
                self.running().remove(&name);
            }
        }
        for (name, record) in records {
            if self.running().contains_key(&name) {
                continue;
            }
            if let Err(e) = self.take(&record).await {
                tracing::warn!(connector = %name, error = %e, "cannot start a connector");
            }
        }
        Ok(())
    }

    /// Stops every connector running here and gives up its lease (a clean
    /// stop).
    pub async fn shutdown(&self) {
        let stopped: Vec<(String, Running)> = self.running().drain().collect();
        let me = self.log.agent().id();
        for (name, r) in stopped {
            let epoch = r.epoch;
            drop(r); // stops its task
            if let Err(e) = self
                .log
                .metadata()
                .release_connector_lease(&name, &me, epoch)
                .await
            {
                tracing::warn!(connector = %name, error = %e, "cannot release a connector's lease");
            }
        }
    }

    /// Where a connector not running here runs.
    fn elsewhere(&self, record: &ConnectorRecord) -> String {
        let me = self.log.agent().id();
        match &record.lease.owner {
            Some(owner) if *owner != me => format!("running on {owner}"),
            _ => "waiting".to_string(),
        }
    }

    /// Records `record` (`ConnectorExists` mapped to 42710 unless
    /// `if_not_exists`); `false` when it existed.
    async fn record(&self, record: &ConnectorRecord, if_not_exists: bool) -> Result<bool> {
        match self
            .log
            .metadata()
            .create_connector(record, self.log.now_micros())
            .await
        {
            Ok(()) => Ok(true),
            Err(streamhouse_log::LogError::ConnectorExists(_)) if if_not_exists => Ok(false),
            Err(streamhouse_log::LogError::ConnectorExists(_)) => {
                Err(SqlError::DuplicateObject(format!(
                    "a sink or source \"{}\" already exists (they share names)",
                    record.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn done(tag: CommandTag) -> Result<QueryResult> {
    Ok(QueryResult::command(tag))
}
