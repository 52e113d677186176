//! Sinks: `CREATE SINK name FROM stream INTO PARQUET | DELTA | KAFKA WITH
//! (…)`, `DROP
//! SINK`, `SHOW SINKS`. A sink runs as [`streamhouse_connectors::sink::run`]
//! on the agent holding its lease (see the parent module).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use streamhouse_connectors::sink::kafka;
use streamhouse_connectors::{Progress, SinkError, SinkFormat, SinkSpec};
use streamhouse_log::{ConnectorRecord, LogError, StreamKind, ViewLease};
use tokio::task::JoinHandle;

use super::{Connectors, SINK, Shown, done};
use crate::dialect::{self, Statement};
use crate::error::{Result, SqlError};
use crate::result::{CommandTag, QueryResult};

impl Connectors {
    /// `CREATE SINK`: checks the options and the source, records the sink
    /// and starts it here.
    pub(crate) async fn create_sink(
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
        if spec.format == SinkFormat::Kafka {
            // The endpoint must answer and have the topic. Boxed: the Kafka
            // client's futures are deep, and this one sits inside every
            // statement's future.
            let (brokers, topic) = kafka::parse_url(&spec.path)
                .map_err(|e| SqlError::InvalidDefinition(e.to_string()))?;
            Box::pin(kafka::check(&brokers, &topic))
                .await
                .map_err(|e| match e {
                    SinkError::Upstream(m) => SqlError::ConnectionFailure(m),
                    other => SqlError::InvalidDefinition(other.to_string()),
                })?;
        } else {
            // The destination must open (a bad bucket or path fails here).
            streamhouse_log::Store::open(&spec.path)
                .map_err(|e| SqlError::InvalidDefinition(format!("sink path: {e}")))?;
        }
        let record = ConnectorRecord {
            name: name.clone(),
            kind: SINK.into(),
            definition: spec.to_sql(),
            lease: ViewLease::default(),
        };
        if self.record(&record, if_not_exists).await? {
            self.take(&record).await?;
        }
        done(CommandTag::CreateSink)
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
                "no stream, table or materialized view \"{from}\""
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

    /// Starts sink `record` here (its lease taken).
    pub(super) async fn start_sink(
        &self,
        record: &ConnectorRecord,
    ) -> Result<(Shown, Option<JoinHandle<()>>)> {
        let spec = spec_of(record)?;
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
        Ok((Shown::Sink { stream, progress }, task))
    }

    /// `DROP SINK`: stops each sink and forgets it (its files stay).
    pub(crate) async fn drop_sinks(
        &self,
        names: &[String],
        if_exists: bool,
    ) -> Result<QueryResult> {
        self.drop_connectors(SINK, names, if_exists).await?;
        done(CommandTag::DropSink)
    }

    /// `SHOW SINKS`: every sink, its status where it runs here, rows and
    /// files written by this run, and its lag (rows of its stream not yet
    /// in files).
    pub(crate) async fn show_sinks(&self) -> Result<QueryResult> {
        let columns = self.sink_listing().await?;
        QueryResult::rows(RecordBatch::try_new(show_sinks_schema(), columns)?)
    }

    /// The columns of [`show_sinks_schema`], a row per sink (what `SHOW
    /// SINKS` and `streamhouse.sinks` list).
    pub(crate) async fn sink_listing(&self) -> Result<Vec<ArrayRef>> {
        let records = self.log.metadata().connectors().await?;
        let mut rows = ShowRows::default();
        for record in records.iter().filter(|c| c.kind == SINK) {
            let spec = spec_of(record)?;
            let here = self
                .running()
                .get(&record.name)
                .and_then(|r| match &r.shown {
                    Shown::Sink { stream, progress } => {
                        let (written, files) = progress.written();
                        Some((
                            progress.status(),
                            stream.clone(),
                            progress.positions(),
                            written,
                            files,
                        ))
                    }
                    Shown::Source { .. } => None,
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
                None => (self.elsewhere(record), None, None, None, None),
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
