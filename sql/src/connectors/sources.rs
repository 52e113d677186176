//! Sources: `CREATE SOURCE name FROM POSTGRES WITH (…) [FOR ALL TABLES |
//! FOR TABLES (…)]`, `DROP SOURCE`, `SHOW SOURCES`. Creating one reads the
//! publication's tables upstream and makes a changelog stream per table;
//! the source then runs as [`streamhouse_connectors::source::postgres::run`]
//! on the agent holding its lease (see the parent module). Its statement is
//! stored whole (the URL's password with it: the source needs it to
//! connect) but shown with the password masked.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use streamhouse_connectors::source::postgres;
use streamhouse_connectors::{PostgresSpec, SourceError, SourceProgress};
use streamhouse_log::{ConnectorRecord, StreamSpec, ViewLease};
use tokio::task::JoinHandle;

use super::{Connectors, SOURCE, Shown, done};
use crate::dialect::{self, Statement};
use crate::error::{Result, SqlError};
use crate::result::{CommandTag, QueryResult};

/// How long `DROP SOURCE` waits for its run to let go of the slot.
const DROP_PATIENCE: Duration = Duration::from_secs(5);

fn source_error(e: SourceError) -> SqlError {
    match e {
        SourceError::Invalid(m) => SqlError::InvalidDefinition(m),
        SourceError::Upstream(m) => SqlError::ConnectionFailure(m),
        other => SqlError::Internal(other.to_string()),
    }
}

impl Connectors {
    /// `CREATE SOURCE`: checks the options and the upstream publication,
    /// makes a stream per table, records the source and starts it here.
    /// The streams it made.
    pub(crate) async fn create_source(
        &self,
        name: String,
        if_not_exists: bool,
        kind: String,
        options: Vec<(String, String)>,
        tables: Vec<String>,
    ) -> Result<(QueryResult, Vec<String>)> {
        if kind != "postgres" {
            return Err(SqlError::InvalidDefinition(format!(
                "source kind {} is not one StreamHouse reads (known: POSTGRES)",
                kind.to_uppercase()
            )));
        }
        let mut spec = PostgresSpec::new(&name, &options, &tables).map_err(source_error)?;
        if if_not_exists && self.exists(&name).await? {
            return Ok((done(CommandTag::CreateSource)?, Vec::new()));
        }
        let upstream = postgres::describe(&spec).await.map_err(source_error)?;
        spec.tables = upstream.iter().map(|t| t.name.clone()).collect();
        for t in &upstream {
            let stream = spec.stream_of(&t.name);
            if self.log.stream(&stream).await.is_ok() {
                return Err(SqlError::DuplicateTable(format!(
                    "stream \"{stream}\" (for upstream table {}) already exists; drop it, or give \
                     the source's streams a prefix: WITH (prefix = '…')",
                    t.name
                )));
            }
        }
        let record = ConnectorRecord {
            name: name.clone(),
            kind: SOURCE.into(),
            definition: spec.to_sql(true),
            lease: ViewLease::default(),
        };
        if !self.record(&record, if_not_exists).await? {
            return Ok((done(CommandTag::CreateSource)?, Vec::new()));
        }
        let mut made = Vec::new();
        for t in &upstream {
            let stream = spec.stream_of(&t.name);
            let mut s = StreamSpec::new(&stream, t.schema()).with_partitions(spec.partitions);
            s.key = t.key();
            match self.log.create_stream(s).await {
                Ok(_) => made.push(stream),
                Err(e) => {
                    for m in &made {
                        let _ = self.log.drop_stream(m).await;
                    }
                    let _ = self.log.metadata().drop_connector(&name).await;
                    return Err(e.into());
                }
            }
        }
        self.take(&record).await?;
        Ok((done(CommandTag::CreateSource)?, made))
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
        let spec = spec_of(record)?;
        let progress = Arc::new(SourceProgress::default());
        let task = tokio::spawn(postgres::run(
            self.log.clone(),
            spec,
            epoch,
            progress.clone(),
        ));
        Ok((Shown::Source { progress }, Some(task)))
    }

    /// `DROP SOURCE`: stops each source, forgets it and drops its
    /// replication slot upstream; its streams stay. A slot that cannot be
    /// dropped (the database is unreachable) is named in a warning in the
    /// server's log, to drop by hand.
    pub(crate) async fn drop_sources(
        &self,
        names: &[String],
        if_exists: bool,
    ) -> Result<QueryResult> {
        for record in self.drop_connectors(SOURCE, names, if_exists).await? {
            let Ok(spec) = spec_of(&record) else { continue };
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

    /// Refuses to drop streams (`names`) that sources write.
    pub(crate) async fn refuse_dropping_written(&self, names: &[String]) -> Result<()> {
        for record in self.log.metadata().connectors().await? {
            if record.kind != SOURCE {
                continue;
            }
            let spec = spec_of(&record)?;
            for table in &spec.tables {
                let stream = spec.stream_of(table);
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
                    confirmed.push(Some(p.confirmed()));
                    lag.push(Some(p.lag_bytes() as i64));
                }
                None => {
                    status.push(self.elsewhere(record));
                    cause.push(None);
                    rows.push(None);
                    confirmed.push(None);
                    lag.push(None);
                }
            }
            name.push(record.name.clone());
            kind.push("POSTGRES".to_string());
            url.push(spec.shown_url());
            let written: Vec<String> = spec.tables.iter().map(|t| spec.stream_of(t)).collect();
            streams.push(written.join(", "));
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
            strings(definition),
        ])
    }
}

/// The spec a source's stored statement describes.
fn spec_of(record: &ConnectorRecord) -> Result<PostgresSpec> {
    match dialect::parse(&record.definition)?.pop() {
        Some(Statement::CreateSource {
            name,
            options,
            tables,
            ..
        }) => PostgresSpec::new(&name, &options, &tables)
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
        Field::new("definition", DataType::Utf8, false),
    ]))
}
