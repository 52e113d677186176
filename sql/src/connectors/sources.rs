//! Sources: `CREATE SOURCE name FROM POSTGRES WITH (…) [FOR ALL TABLES |
//! FOR TABLES (…)]`, `CREATE SOURCE name FROM FILES WITH (…) INTO stream`,
//! `DROP SOURCE`, `SHOW SOURCES`. Creating a PostgreSQL source reads the
//! publication's tables upstream and makes a table per upstream table with
//! a primary key (through the database: [`MakeTables`]) and a changelog
//! stream per table without; a
//! file source checks its stream and its files' store and makes its ledger
//! (a system stream). The source then runs
//! ([`streamhouse_connectors::source::postgres::run`],
//! [`streamhouse_connectors::source::files::run`]) on the agent holding its
//! lease (see the parent module). Its statement is stored whole (a URL's
//! password with it: the source needs it to connect) but shown with the
//! password masked.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use streamhouse_connectors::source::{files, kafka, postgres};
use streamhouse_connectors::{
    FilesSpec, KafkaSpec, PostgresSpec, SourceError, SourceProgress, SourceSpec,
};
use streamhouse_log::{
    ConnectorRecord, LogError, StreamKind, StreamSpec, ViewLease, table_log_name,
};
use tokio::task::JoinHandle;

use super::{Connectors, MakeTables, SOURCE, Shown, done};
use crate::dialect::{self, Statement};
use crate::error::{Result, SqlError};
use crate::result::{CommandTag, QueryResult};

/// How long `DROP SOURCE` waits for its run to let go of the slot.
const DROP_PATIENCE: Duration = Duration::from_secs(5);
/// How long `CREATE SOURCE … FROM FILES` waits to list its files' store.
const LIST_PATIENCE: Duration = Duration::from_secs(10);

pub(super) fn source_error(e: SourceError) -> SqlError {
    match e {
        SourceError::Invalid(m) => SqlError::InvalidDefinition(m),
        SourceError::Upstream(m) => SqlError::ConnectionFailure(m),
        other => SqlError::Internal(other.to_string()),
    }
}

impl Connectors {
    /// `CREATE SOURCE` of `spec` (its options checked): checks what the
    /// source reads, makes its streams and tables, records the source and
    /// starts it here. The streams and tables it made.
    pub(crate) async fn create_source(
        &self,
        spec: SourceSpec,
        if_not_exists: bool,
        tables: &dyn MakeTables,
    ) -> Result<(QueryResult, Vec<String>)> {
        if if_not_exists && self.exists(spec.name()).await? {
            return Ok((done(CommandTag::CreateSource)?, Vec::new()));
        }
        match spec {
            SourceSpec::Postgres(spec) => self.create_postgres(spec, if_not_exists, tables).await,
            SourceSpec::Files(spec) => self.create_files(spec, if_not_exists).await,
            SourceSpec::Kafka(spec) => self.create_kafka(spec, if_not_exists).await,
        }
    }

    /// Reads the publication's tables upstream and makes a table of the
    /// same primary key for each with one, a changelog stream for each
    /// without.
    async fn create_postgres(
        &self,
        mut spec: PostgresSpec,
        if_not_exists: bool,
        tables: &dyn MakeTables,
    ) -> Result<(QueryResult, Vec<String>)> {
        let upstream = postgres::describe(&spec).await.map_err(source_error)?;
        spec.tables = upstream.iter().map(|t| t.name.clone()).collect();
        for t in &upstream {
            let name = spec.stream_of(&t.name);
            if let Some(what) = self.taken(&name).await? {
                return Err(SqlError::DuplicateTable(format!(
                    "{what} \"{name}\" (for upstream table {}) already exists; drop it, or give \
                     the source's tables a prefix: WITH (prefix = '…')",
                    t.name
                )));
            }
        }
        let name = spec.name.clone();
        let record = ConnectorRecord {
            name: name.clone(),
            kind: SOURCE.into(),
            definition: spec.to_sql(true),
            lease: ViewLease::default(),
        };
        if !self.record(&record, if_not_exists).await? {
            return Ok((done(CommandTag::CreateSource)?, Vec::new()));
        }
        let mut made: Vec<(String, bool)> = Vec::new();
        for t in &upstream {
            let target = spec.stream_of(&t.name);
            let key = t.key();
            let is_table = !key.is_empty();
            let result = if is_table {
                tables
                    .make_table(&target, t.fields(), key, spec.partitions)
                    .await
            } else {
                let s = StreamSpec::new(&target, t.schema()).with_partitions(spec.partitions);
                self.log
                    .create_stream(s)
                    .await
                    .map(drop)
                    .map_err(Into::into)
            };
            if let Err(e) = result {
                let _ = self.log.metadata().drop_connector(&name).await;
                for (m, is_table) in &made {
                    let _ = match is_table {
                        true => tables.drop_table(m).await,
                        false => self.log.drop_stream(m).await.map_err(Into::into),
                    };
                }
                return Err(e);
            }
            made.push((target, is_table));
        }
        self.take(&record).await?;
        Ok((
            done(CommandTag::CreateSource)?,
            made.into_iter().map(|(m, _)| m).collect(),
        ))
    }

    /// What holds `name` among streams, tables and views, if anything.
    async fn taken(&self, name: &str) -> Result<Option<&'static str>> {
        match self.log.stream(name).await {
            Ok(_) => return Ok(Some("stream")),
            Err(LogError::UnknownStream(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if !self
            .log
            .metadata()
            .views()
            .await?
            .iter()
            .any(|v| v.name == name)
        {
            return Ok(None);
        }
        Ok(Some(match self.log.stream(&table_log_name(name)).await {
            Ok(_) => "table",
            Err(_) => "materialized view",
        }))
    }

    /// Checks that `stream` is a user's stream that exists (a source's
    /// `INTO`).
    async fn check_into(&self, stream: &str) -> Result<()> {
        if StreamKind::of(stream).is_internal() {
            return Err(SqlError::InvalidDefinition(format!(
                "\"{stream}\" is one of the system's streams: a source cannot write it"
            )));
        }
        self.log.stream(stream).await?;
        Ok(())
    }

    /// Checks the stream the records go to and that the endpoint has the
    /// topic.
    async fn create_kafka(
        &self,
        spec: KafkaSpec,
        if_not_exists: bool,
    ) -> Result<(QueryResult, Vec<String>)> {
        self.check_into(&spec.stream).await?;
        // Boxed: the Kafka client's futures are deep, and this one sits
        // inside every statement's future.
        Box::pin(kafka::describe(&spec))
            .await
            .map_err(source_error)?;
        let record = ConnectorRecord {
            name: spec.name.clone(),
            kind: SOURCE.into(),
            definition: spec.to_sql(),
            lease: ViewLease::default(),
        };
        if self.record(&record, if_not_exists).await? {
            self.take(&record).await?;
        }
        Ok((done(CommandTag::CreateSource)?, Vec::new()))
    }

    /// Checks the stream the files go to and lists their store, then makes
    /// the source's ledger.
    async fn create_files(
        &self,
        spec: FilesSpec,
        if_not_exists: bool,
    ) -> Result<(QueryResult, Vec<String>)> {
        self.check_into(&spec.stream).await?;
        let store = spec.store().map_err(source_error)?;
        let listed = tokio::time::timeout(LIST_PATIENCE, async {
            store.object_store().list(None).next().await.transpose()
        })
        .await;
        match listed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(SqlError::ConnectionFailure(format!(
                    "cannot list the files at {}: {e}",
                    spec.path
                )));
            }
            Err(_) => {
                return Err(SqlError::ConnectionFailure(format!(
                    "cannot list the files at {}: no answer in {}s",
                    spec.path,
                    LIST_PATIENCE.as_secs()
                )));
            }
        }
        let record = ConnectorRecord {
            name: spec.name.clone(),
            kind: SOURCE.into(),
            definition: spec.to_sql(),
            lease: ViewLease::default(),
        };
        if !self.record(&record, if_not_exists).await? {
            return Ok((done(CommandTag::CreateSource)?, Vec::new()));
        }
        let ledger = files::ledger_of(&spec.name);
        // A ledger left by a source of this name that was dropped halfway
        // would hide files from this one.
        let _ = self
            .log
            .drop_internal_stream(StreamKind::System, &ledger)
            .await;
        let made = self
            .log
            .create_internal_stream(
                StreamKind::System,
                StreamSpec::new(&ledger, files::ledger_schema()),
            )
            .await;
        if let Err(e) = made {
            let _ = self.log.metadata().drop_connector(&spec.name).await;
            return Err(e.into());
        }
        self.take(&record).await?;
        Ok((done(CommandTag::CreateSource)?, Vec::new()))
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        Ok(self
            .log
            .metadata()
            .connectors()
            .await?
            .iter()
            .any(|c| c.name == name))
    }

    /// Starts source `record` here (its lease taken in `epoch`).
    pub(super) fn start_source(
        &self,
        record: &ConnectorRecord,
        epoch: u64,
    ) -> Result<(Shown, Option<JoinHandle<()>>)> {
        let progress = Arc::new(SourceProgress::default());
        let log = self.log.clone();
        let task = match spec_of(record)? {
            SourceSpec::Postgres(spec) => {
                tokio::spawn(postgres::run(log, spec, epoch, progress.clone()))
            }
            SourceSpec::Files(spec) => tokio::spawn(files::run(log, spec, epoch, progress.clone())),
            SourceSpec::Kafka(spec) => tokio::spawn(kafka::run(log, spec, epoch, progress.clone())),
        };
        Ok((Shown::Source { progress }, Some(task)))
    }

    /// `DROP SOURCE`: stops each source, forgets it and drops what it kept
    /// for itself — a PostgreSQL source's replication slot upstream, a file
    /// source's ledger; the streams it wrote stay. A slot that cannot be
    /// dropped (the database is unreachable) is named in a warning in the
    /// server's log, to drop by hand.
    pub(crate) async fn drop_sources(
        &self,
        names: &[String],
        if_exists: bool,
    ) -> Result<QueryResult> {
        for record in self.drop_connectors(SOURCE, names, if_exists).await? {
            let spec = match spec_of(&record) {
                Ok(SourceSpec::Postgres(spec)) => spec,
                Ok(SourceSpec::Files(spec)) => {
                    let ledger = files::ledger_of(&spec.name);
                    self.log
                        .drop_internal_stream(StreamKind::System, &ledger)
                        .await?;
                    continue;
                }
                Ok(SourceSpec::Kafka(_)) | Err(_) => continue,
            };
            if let Err(e) = postgres::drop_slot(&spec, DROP_PATIENCE).await {
                tracing::warn!(
                    source = %record.name,
                    slot = %spec.slot,
                    error = %e,
                    "cannot drop a dropped source's replication slot; drop it upstream by hand"
                );
            }
        }
        done(CommandTag::DropSource)
    }

    /// Refuses to drop streams or tables (`names`) that sources write.
    pub(crate) async fn refuse_dropping_written(&self, names: &[String]) -> Result<()> {
        for record in self.log.metadata().connectors().await? {
            if record.kind != SOURCE {
                continue;
            }
            for stream in spec_of(&record)?.streams() {
                if names.contains(&stream) {
                    return Err(SqlError::DependentObjects(format!(
                        "cannot drop \"{stream}\": source \"{}\" writes it; drop the source first",
                        record.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// `SHOW SOURCES`: every source, its status where it runs here, the
    /// rows it appended in this run, the upstream position confirmed and
    /// how far behind it is.
    pub(crate) async fn show_sources(&self) -> Result<QueryResult> {
        let columns = self.source_listing().await?;
        QueryResult::rows(RecordBatch::try_new(show_sources_schema(), columns)?)
    }

    /// The columns of [`show_sources_schema`], a row per source (what
    /// `SHOW SOURCES` and `streamhouse.sources` list).
    pub(crate) async fn source_listing(&self) -> Result<Vec<ArrayRef>> {
        let records = self.log.metadata().connectors().await?;
        let mut name = Vec::new();
        let mut kind = Vec::new();
        let mut url = Vec::new();
        let mut streams = Vec::new();
        let mut status = Vec::new();
        let mut cause: Vec<Option<String>> = Vec::new();
        let mut rows: Vec<Option<i64>> = Vec::new();
        let mut confirmed: Vec<Option<String>> = Vec::new();
        let mut lag: Vec<Option<i64>> = Vec::new();
        let mut lag_records: Vec<Option<i64>> = Vec::new();
        let mut definition = Vec::new();
        for record in records.iter().filter(|c| c.kind == SOURCE) {
            let spec = spec_of(record)?;
            let here = self
                .running()
                .get(&record.name)
                .and_then(|r| match &r.shown {
                    Shown::Source { progress } => Some(progress.clone()),
                    Shown::Sink { .. } => None,
                });
            match here {
                Some(p) => {
                    let s = p.status();
                    status.push(s.name().to_string());
                    cause.push(s.cause().map(str::to_string));
                    rows.push(Some(p.rows() as i64));
                    confirmed.push(matches!(spec, SourceSpec::Postgres(_)).then(|| p.confirmed()));
                    let kafka = matches!(spec, SourceSpec::Kafka(_));
                    lag.push((!kafka).then(|| p.lag_bytes() as i64));
                    lag_records.push(kafka.then(|| p.lag_records() as i64));
                }
                None => {
                    status.push(self.elsewhere(record));
                    cause.push(None);
                    rows.push(None);
                    confirmed.push(None);
                    lag.push(None);
                    lag_records.push(None);
                }
            }
            name.push(record.name.clone());
            kind.push(spec.kind().to_string());
            url.push(spec.location());
            streams.push(spec.streams().join(", "));
            definition.push(spec.to_sql(false));
        }
        let strings = |v: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        Ok(vec![
            strings(name),
            strings(kind),
            strings(url),
            strings(streams),
            strings(status),
            Arc::new(StringArray::from(cause)),
            Arc::new(Int64Array::from(rows)),
            Arc::new(StringArray::from(confirmed)),
            Arc::new(Int64Array::from(lag)),
            Arc::new(Int64Array::from(lag_records)),
            strings(definition),
        ])
    }
}

/// The spec a source's stored statement describes.
fn spec_of(record: &ConnectorRecord) -> Result<SourceSpec> {
    match dialect::parse(&record.definition)?.pop() {
        Some(Statement::CreateSource {
            name,
            kind,
            options,
            tables,
            into,
            ..
        }) => SourceSpec::new(&name, &kind, &options, &tables, into.as_deref())
            .map_err(|e| SqlError::Internal(format!("source \"{}\": {e}", record.name))),
        _ => Err(SqlError::Internal(format!(
            "source \"{}\" has no CREATE SOURCE statement",
            record.name
        ))),
    }
}

/// The columns of `SHOW SOURCES` and `streamhouse.sources`.
pub fn show_sources_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("streams", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("cause", DataType::Utf8, true),
        Field::new("rows_written", DataType::Int64, true),
        Field::new("confirmed_lsn", DataType::Utf8, true),
        Field::new("lag_bytes", DataType::Int64, true),
        Field::new("lag_records", DataType::Int64, true),
        Field::new("definition", DataType::Utf8, false),
    ]))
}
