//! A sink: a stream's rows copied, partition by partition, into Parquet
//! files or a Delta Lake table in an object store, from where the copy left
//! off, each row exactly once.
//!
//! The destination itself records how far a sink got. Parquet: every file
//! is named by the first offset it covers and carries the end of its range
//! in its footer ([`parquet`]); a file is created only if no file of that
//! name exists. Delta: every commit carries an application transaction per
//! partition whose version is the end of its offsets ([`delta`]), and a
//! commit of a version another run already moved is refused. Either way a
//! sink restarted anywhere — after a crash, on another agent — reads where
//! each partition got and goes on from there, and two runs of one sink (an
//! owner that lost its lease and does not know it yet) can never both write
//! a range: the second is refused, reads again and continues after the
//! winner.
//!
//! A file (a commit) is cut at `file_rows` rows or `file_bytes` bytes of
//! Arrow data, or `flush_interval` after its first row, whichever comes
//! first: large files for analytics when the stream is busy, bounded delay
//! when it is not. Memory holds at most one file's rows per partition.

pub mod delta;
pub mod kafka;
pub mod parquet;

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    /// Rows `v` with their `_offset`s, `offsets`.
    pub fn rows(offsets: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("_offset", DataType::Int64, false),
        ]));
        let col = Arc::new(Int64Array::from_iter_values(offsets));
        RecordBatch::try_new(schema, vec![col.clone(), col]).unwrap()
    }
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use streamhouse_log::{Log, LogError, Store};

use crate::status::Status;
use crate::text::{self, quoted};

/// Errors of a sink's definition or its run.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An option is unknown, missing or malformed.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("delta: {0}")]
    Delta(String),
    /// The destination cannot be reached or refused a request.
    #[error("{0}")]
    Upstream(String),
    /// A task of the sink failed.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = SinkError> = std::result::Result<T, E>;

/// The file format of a sink's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    Parquet,
    Delta,
    /// JSON records in a topic of a Kafka-protocol endpoint.
    Kafka,
}

impl SinkFormat {
    pub fn name(self) -> &'static str {
        match self {
            SinkFormat::Parquet => "PARQUET",
            SinkFormat::Delta => "DELTA",
            SinkFormat::Kafka => "KAFKA",
        }
    }
}

/// What a sink copies where: `CREATE SINK name FROM stream INTO PARQUET |
/// DELTA WITH (path = 'file:///…' | 's3://bucket/prefix', file_rows = …,
/// file_bytes = …, flush_interval = '…')`, or `INTO KAFKA WITH (bootstrap
/// = 'host:port', topic = '…', …)` (a file is then a batch of records).
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    pub name: String,
    /// The stream or materialized view whose rows it copies (a view's
    /// changelog: its rows with the change each made).
    pub stream: String,
    pub format: SinkFormat,
    /// Where the files go (a Kafka sink: `kafka://brokers/topic`).
    pub path: String,
    /// A file holds at most this many rows …
    pub file_rows: usize,
    /// … and about this many bytes of Arrow data (the Parquet file is
    /// smaller: encoded and compressed).
    pub file_bytes: usize,
    /// A file is written at most this long after its first row arrived.
    pub flush_interval: Duration,
}

/// The options a sink knows, for error messages.
const KNOWN: &str = "path, file_rows, file_bytes, flush_interval";
/// The options a Kafka sink knows.
const KNOWN_KAFKA: &str = "bootstrap, topic, file_rows, file_bytes, flush_interval";

impl SinkSpec {
    /// A sink from its statement's parts; `options` are (lower-case key,
    /// value) pairs. Checks every option; does not touch the destination.
    pub fn new(
        name: &str,
        stream: &str,
        format: &str,
        options: &[(String, String)],
    ) -> Result<SinkSpec> {
        let format = match format.to_ascii_lowercase().as_str() {
            "parquet" => SinkFormat::Parquet,
            "delta" => SinkFormat::Delta,
            "kafka" => SinkFormat::Kafka,
            other => {
                return Err(SinkError::Invalid(format!(
                    "sink format {other:?} is not one StreamHouse writes (known: PARQUET, \
                     DELTA, KAFKA)"
                )));
            }
        };
        let kafka = format == SinkFormat::Kafka;
        // Kafka: a "file" is a batch of records, written soon.
        let mut spec = SinkSpec {
            name: name.to_string(),
            stream: stream.to_string(),
            format,
            path: String::new(),
            file_rows: if kafka { 10_000 } else { 1_000_000 },
            file_bytes: if kafka { 4 << 20 } else { 256 << 20 },
            flush_interval: if kafka {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(10)
            },
        };
        let mut brokers = Vec::new();
        let mut topic = String::new();
        let bad = |k: &str, v: &str, why: &str| {
            SinkError::Invalid(format!("sink option {k} = '{v}': {why}"))
        };
        for (k, v) in options {
            match k.as_str() {
                "bootstrap" if kafka => {
                    brokers = crate::kafka::parse_bootstrap(v).map_err(|e| bad(k, v, &e))?;
                }
                "topic" if kafka => {
                    crate::kafka::check_topic(v).map_err(|e| bad(k, v, &e))?;
                    topic = v.clone();
                }
                "path" if !kafka => {
                    if !(v.starts_with("file:///") || v.starts_with("s3://")) {
                        return Err(bad(
                            k,
                            v,
                            "expected an absolute file:/// URL or s3://bucket/prefix",
                        ));
                    }
                    spec.path = v.clone();
                }
                "file_rows" => {
                    spec.file_rows = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=100_000_000).contains(n))
                        .ok_or_else(|| {
                            bad(k, v, "expected a number of rows from 1 to 100000000")
                        })?;
                }
                "file_bytes" => {
                    spec.file_bytes = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=(4usize << 30)).contains(n))
                        .ok_or_else(|| bad(k, v, "expected a number of bytes from 1 to 4 GiB"))?;
                }
                "flush_interval" => {
                    spec.flush_interval = humantime::parse_duration(v)
                        .ok()
                        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(24 * 3600))
                        .ok_or_else(|| {
                            bad(k, v, "expected a duration from 1ms to 24h, e.g. '10s'")
                        })?;
                }
                other => {
                    return Err(SinkError::Invalid(format!(
                        "unknown sink option \"{other}\" (known: {})",
                        if kafka { KNOWN_KAFKA } else { KNOWN }
                    )));
                }
            }
        }
        if kafka {
            if brokers.is_empty() || topic.is_empty() {
                return Err(SinkError::Invalid(
                    "a Kafka sink needs WITH (bootstrap = 'host:port', topic = '…')".into(),
                ));
            }
            spec.path = kafka::url(&brokers, &topic);
        } else if spec.path.is_empty() {
            return Err(SinkError::Invalid(
                "a sink needs WITH (path = 'file:///…' or 's3://…')".into(),
            ));
        }
        Ok(spec)
    }

    /// Every option, as `CREATE SINK` would be written to make it again.
    pub fn options(&self) -> Vec<(String, String)> {
        let place = match kafka::parse_url(&self.path) {
            Ok((brokers, topic)) if self.format == SinkFormat::Kafka => vec![
                ("bootstrap".into(), brokers.join(",")),
                ("topic".into(), topic),
            ],
            _ => vec![("path".into(), self.path.clone())],
        };
        place
            .into_iter()
            .chain([
                ("file_rows".into(), self.file_rows.to_string()),
                ("file_bytes".into(), self.file_bytes.to_string()),
                (
                    "flush_interval".into(),
                    humantime::format_duration(self.flush_interval).to_string(),
                ),
            ])
            .collect()
    }

    /// The statement that makes this sink.
    pub fn to_sql(&self) -> String {
        format!(
            "CREATE SINK {} FROM {} INTO {} WITH ({})",
            quoted(&self.name),
            quoted(&self.stream),
            self.format.name(),
            text::options(&self.options())
        )
    }
}

/// A running sink's progress, shared with whoever shows it.
#[derive(Debug)]
pub struct Progress {
    status: Mutex<Status>,
    /// Per partition: the end of the last file (the next offset to copy).
    positions: Mutex<Vec<u64>>,
    rows: AtomicU64,
    files: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            status: Mutex::new(Status::Starting),
            positions: Mutex::new(Vec::new()),
            rows: AtomicU64::new(0),
            files: AtomicU64::new(0),
        }
    }
}

impl Progress {
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks the sink failed for good (it could not start: `cause`).
    pub fn fail(&self, cause: String) {
        self.set_status(Status::Failed(cause));
    }

    fn set_status(&self, s: Status) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// Per partition, the next offset the sink will copy (known once the
    /// partition's files were listed).
    pub fn positions(&self) -> Vec<u64> {
        self.positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_position(&self, partition: usize, at: u64) {
        let mut p = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        if p.len() <= partition {
            p.resize(partition + 1, 0);
        }
        p[partition] = at;
    }

    /// Rows and files written by this run.
    pub fn written(&self) -> (u64, u64) {
        (
            self.rows.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed),
        )
    }
}

/// A sink as it runs: its spec, and the log stream it reads.
struct SinkRun {
    spec: SinkSpec,
    log_stream: String,
}

impl std::ops::Deref for SinkRun {
    type Target = SinkSpec;

    fn deref(&self) -> &SinkSpec {
        &self.spec
    }
}

/// Rows a sink wrote to files, by `sink`.
pub const ROWS_METRIC: &str = "streamhouse_sink_rows_total";
/// Files a sink wrote, by `sink`.
pub const FILES_METRIC: &str = "streamhouse_sink_files_total";
/// Bytes of the files a sink wrote, by `sink`.
pub const BYTES_METRIC: &str = "streamhouse_sink_bytes_total";

/// How long a failed partition waits before it starts again.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Where a sink's rows go.
#[derive(Clone)]
enum Destination {
    /// Parquet files under a store.
    Parquet(Store),
    /// A Delta table.
    Delta(delta::Location),
    /// A Kafka topic: its brokers and name.
    Kafka(Vec<String>, String),
}

impl Destination {
    fn open(spec: &SinkSpec) -> Result<Destination> {
        Ok(match spec.format {
            SinkFormat::Parquet => Destination::Parquet(Store::open(&spec.path)?),
            SinkFormat::Delta => Destination::Delta(delta::Location::new(&spec.path)?),
            SinkFormat::Kafka => {
                let (brokers, topic) = kafka::parse_url(&spec.path)?;
                Destination::Kafka(brokers, topic)
            }
        })
    }
}

/// One partition's side of a destination.
enum PartitionDest {
    Parquet {
        store: Store,
        dir: parquet::PartitionDir,
    },
    Delta {
        location: delta::Location,
        /// Loaded (or made) once there is a table.
        table: Option<deltalake_core::DeltaTable>,
        app: String,
    },
    Kafka {
        brokers: Vec<String>,
        topic: String,
        sink: String,
        p: u32,
        /// Connected once there is a copy to resume.
        out: Option<kafka::PartitionOut>,
    },
}

impl PartitionDest {
    fn new(dest: &Destination, sink: &str, p: u32) -> PartitionDest {
        match dest {
            Destination::Parquet(store) => PartitionDest::Parquet {
                store: store.clone(),
                dir: parquet::PartitionDir::new(p),
            },
            Destination::Delta(location) => PartitionDest::Delta {
                location: location.clone(),
                table: None,
                app: delta::app_id(sink, p),
            },
            Destination::Kafka(brokers, topic) => PartitionDest::Kafka {
                brokers: brokers.clone(),
                topic: topic.clone(),
                sink: sink.to_string(),
                p,
                out: None,
            },
        }
    }

    /// Where the copy goes on: the first offset the destination lacks.
    async fn resume(&mut self) -> Result<u64> {
        match self {
            PartitionDest::Parquet { store, dir } => dir.resume(store).await,
            PartitionDest::Delta {
                location,
                table,
                app,
            } => {
                if table.is_none() {
                    *table = location.load().await?;
                }
                match table {
                    Some(t) => delta::resume(t, app).await,
                    None => Ok(0),
                }
            }
            PartitionDest::Kafka {
                brokers,
                topic,
                sink,
                p,
                out,
            } => {
                // A fresh producer each time the copy (re)starts: it fences
                // every earlier one before the copy reads where it got.
                let mut o = kafka::PartitionOut::open(brokers, topic, sink, *p).await?;
                let at = o.resume().await?;
                *out = Some(o);
                Ok(at)
            }
        }
    }

    /// Writes rows covering offsets `start..end`; the bytes written.
    async fn write(
        &mut self,
        spec: &SinkRun,
        rows: parquet::Buffer,
        start: u64,
        end: u64,
    ) -> Result<u64> {
        match self {
            PartitionDest::Parquet { store, dir } => {
                // Encoding is CPU work: off the async workers, which serve
                // the doors.
                let stream = spec.stream.clone();
                let bytes = tokio::task::spawn_blocking(move || {
                    parquet::encode(&rows.batches, start, end, &stream)
                })
                .await
                .map_err(|e| SinkError::Internal(format!("encoding a file: {e}")))??;
                let size = bytes.len() as u64;
                dir.create(store, start, bytes).await?;
                Ok(size)
            }
            PartitionDest::Delta {
                location,
                table,
                app,
            } => {
                if table.is_none() {
                    let schema = rows
                        .batches
                        .first()
                        .map(|b| b.schema())
                        .ok_or_else(|| SinkError::Internal("a commit without rows".into()))?;
                    *table = Some(location.load_or_create(&schema, &spec.stream).await?);
                }
                let t = table.as_mut().expect("loaded above");
                delta::commit(t, app, start, end, spec.file_bytes as u64, rows.batches).await
            }
            PartitionDest::Kafka { out, .. } => match out {
                Some(o) => o.write(&rows.batches).await,
                None => Err(SinkError::Internal(
                    "a Kafka sink wrote before resuming".into(),
                )),
            },
        }
    }
}

/// Runs a sink, reading log stream `stream` (its source's: the stream
/// itself, or a view's changelog), until the stream is dropped (then
/// `Failed`) or the task is aborted: one copy loop per partition, each
/// restarted from the destination's files after a failure.
pub async fn run(log: Arc<Log>, spec: SinkSpec, stream: String, progress: Arc<Progress>) {
    let dest = match Destination::open(&spec) {
        Ok(d) => d,
        Err(e) => {
            progress.set_status(Status::Failed(e.to_string()));
            return;
        }
    };
    let partitions = loop {
        match log.stream(&stream).await {
            Ok(info) => break info.spec.partitions,
            Err(e @ LogError::UnknownStream(_)) => {
                progress.set_status(Status::Failed(e.to_string()));
                return;
            }
            Err(e) => {
                progress.set_status(Status::Retrying(e.to_string()));
                tokio::time::sleep(RETRY_MAX).await;
            }
        }
    };
    let spec = Arc::new(SinkRun {
        spec,
        log_stream: stream,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..partitions {
        let (log, dest, spec, progress) =
            (log.clone(), dest.clone(), spec.clone(), progress.clone());
        tasks.spawn(async move { partition_loop(&log, &dest, &spec, &progress, p).await });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            progress.set_status(Status::Failed(e.to_string()));
            tasks.abort_all();
        }
    }
}

/// Copies one partition, starting again after failures; returns only when
/// the stream is gone.
async fn partition_loop(
    log: &Log,
    dest: &Destination,
    spec: &SinkRun,
    progress: &Progress,
    p: u32,
) -> Result<()> {
    let mut backoff = RETRY_MIN;
    loop {
        let mut part = PartitionDest::new(dest, &spec.name, p);
        match copy(log, &mut part, spec, progress, p).await {
            Ok(()) => return Ok(()),
            Err(SinkError::Log(e @ LogError::UnknownStream(_))) => return Err(SinkError::Log(e)),
            Err(e) => {
                tracing::warn!(sink = %spec.name, partition = p, error = %e, "sink retrying");
                progress.set_status(Status::Retrying(e.to_string()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// One partition's copy: from the end of its last file, read, buffer and
/// write files until an error.
async fn copy(
    log: &Log,
    dest: &mut PartitionDest,
    spec: &SinkRun,
    progress: &Progress,
    p: u32,
) -> Result<()> {
    let mut file_start = dest.resume().await?;
    progress.set_position(p as usize, file_start);
    progress.set_status(Status::Running);
    let mut read_at = file_start;
    let mut buffer = parquet::Buffer::default();
    loop {
        // Wait for rows, but no longer than the buffered file may wait.
        let wait = match buffer.first_at {
            Some(at) => spec.flush_interval.saturating_sub(at.elapsed()),
            None => spec.flush_interval,
        };
        let end = match tokio::time::timeout(wait, log.wait_for(&spec.log_stream, p, read_at)).await
        {
            Ok(end) => Some(end?),
            Err(_) => None,
        };
        if let Some(end) = end {
            let info = log.stream(&spec.log_stream).await?;
            let declared = info.spec.schema.fields().len();
            // The declared columns, `_offset` and `_timestamp` (and
            // `_partition` in a Delta table, which holds every partition).
            let system: &[usize] = match spec.format {
                SinkFormat::Parquet | SinkFormat::Kafka => &[declared + 1, declared + 2],
                SinkFormat::Delta => &[declared, declared + 1, declared + 2],
            };
            let projection: Vec<usize> = (0..declared).chain(system.iter().copied()).collect();
            let mut rows = log.read_as(info, p, read_at..end, Some(projection)).await?;
            while let Some(mut batch) = rows.try_next().await? {
                if buffer.schema_differs(&batch) {
                    file_start = write(dest, spec, progress, &mut buffer, file_start, p).await?;
                }
                // A file takes at most `file_rows` rows: the rest of a
                // batch starts the next.
                while buffer.rows + batch.num_rows() > spec.file_rows {
                    let take = spec.file_rows - buffer.rows;
                    buffer.push(batch.slice(0, take));
                    batch = batch.slice(take, batch.num_rows() - take);
                    file_start = write(dest, spec, progress, &mut buffer, file_start, p).await?;
                }
                buffer.push(batch);
                if buffer.rows >= spec.file_rows || buffer.bytes >= spec.file_bytes {
                    file_start = write(dest, spec, progress, &mut buffer, file_start, p).await?;
                }
            }
            read_at = end;
            buffer.end = Some(end);
        }
        let due = buffer
            .first_at
            .is_some_and(|at| at.elapsed() >= spec.flush_interval);
        if due {
            file_start = write(dest, spec, progress, &mut buffer, file_start, p).await?;
        }
    }
}

/// Writes the buffered rows as the file starting at `start`; the next
/// file's start. Refused because a file of that name exists (another run of
/// this sink wrote it): an error, so the copy lists its files again.
async fn write(
    dest: &mut PartitionDest,
    spec: &SinkRun,
    progress: &Progress,
    buffer: &mut parquet::Buffer,
    start: u64,
    p: u32,
) -> Result<u64> {
    let Some(end) = buffer.covered_end() else {
        return Ok(start);
    };
    let rows = std::mem::take(buffer);
    let n = rows.rows as u64;
    let size = dest.write(spec, rows, start, end).await?;
    progress.rows.fetch_add(n, Ordering::Relaxed);
    progress.files.fetch_add(1, Ordering::Relaxed);
    let sink = spec.name.clone();
    metrics::counter!(ROWS_METRIC, "sink" => sink.clone()).increment(n);
    metrics::counter!(FILES_METRIC, "sink" => sink.clone()).increment(1);
    metrics::counter!(BYTES_METRIC, "sink" => sink).increment(size);
    progress.set_position(p as usize, end);
    Ok(end)
}
