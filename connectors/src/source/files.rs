//! The file source: `CREATE SOURCE name FROM FILES WITH (path = 's3://…/' |
//! 'file:///…', format = 'csv' | 'json' | 'parquet' [, watch = true]) INTO
//! stream` loads the files under a prefix into a stream, each file exactly
//! once — the files there when it starts, and with `watch` every file that
//! appears later.
//!
//! **Exactly once per file.** The source keeps a ledger: a system stream
//! (`__source_files__<name>`) with a row per file it finished — path, size,
//! modification time, rows, the error that made it skip the file. A file's
//! rows and its ledger row go into the log in one append (a group append
//! across the two streams), as an idempotent producer (`source:<name>`)
//! fenced to the lease's epoch; so a file is either loaded and in the
//! ledger, or neither. Several small files share one append; a file larger
//! than `commit_rows` is appended in parts, each recording in the same
//! commit how many of its rows are in (the producer's progress), so a
//! restart goes on after them. A restart anywhere reads the ledger back and
//! loads what it lacks, the interrupted file first.
//!
//! A file is known by its path: one that changes after it was loaded is not
//! loaded again. Names starting with `.` or `_` (in any directory of the
//! path) are passed over, so a file written in place under such a name and
//! then renamed is read only once whole. How each format is read:
//! [`read`].

pub mod read;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::TryStreamExt;
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};
use streamhouse_log::{AppendOptions, Log, ProducerSeq, StagedAppend, Store, StreamInfo};

use super::{ROWS_METRIC, Result, SourceError, SourceProgress, producer_id};
use crate::status::Status;
use crate::text::{self, quoted};

/// Where a file source's ledger streams are named.
pub const LEDGER_PREFIX: &str = "__source_files__";

/// The ledger stream of file source `source`.
pub fn ledger_of(source: &str) -> String {
    format!("{LEDGER_PREFIX}{source}")
}

/// The columns of a ledger: a row per file the source finished.
pub fn ledger_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::Int64, false),
        Field::new("modified", ts.clone(), false),
        Field::new("rows", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("loaded_at", ts, false),
    ]))
}

/// Files a file source finished, by `source`.
pub const FILES_METRIC: &str = "streamhouse_source_files_total";

/// Rows held for one append at most, in bytes of Arrow data (with fewer
/// than `commit_rows` rows).
const MAX_PENDING_BYTES: usize = 256 << 20;

/// The formats a file source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma- (or `delimiter`-) separated values, with a header line
    /// naming the columns unless `header = false`.
    Csv,
    /// One JSON object per line.
    Json,
    Parquet,
}

impl FileFormat {
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// What a file that cannot be read does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The source stops at it (status `retrying`, naming the file and
    /// why) until the file is replaced or removed.
    Stop,
    /// The source records it in its ledger with the error and goes on.
    Skip,
}

impl OnError {
    /// `on_error = 'stop' | 'skip'`.
    pub fn parse(k: &str, v: &str) -> Result<OnError> {
        match v.to_ascii_lowercase().as_str() {
            "stop" => Ok(OnError::Stop),
            "skip" => Ok(OnError::Skip),
            _ => Err(SourceError::Invalid(format!(
                "source option {k} = '{v}': expected 'stop' or 'skip'"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OnError::Stop => "stop",
            OnError::Skip => "skip",
        }
    }
}

/// What a file source loads: `CREATE SOURCE name FROM FILES WITH (path,
/// format, watch, poll_interval, header, delimiter, on_error, commit_rows)
/// INTO stream`.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesSpec {
    pub name: String,
    /// `file:///dir/` or `s3://bucket/prefix/` (credentials from the
    /// environment, as for the log's own store).
    pub path: String,
    pub format: FileFormat,
    /// Keep listing the prefix for new files (else load what is there and
    /// stop: status `done`).
    pub watch: bool,
    /// How long a watching source waits between listings.
    pub poll_interval: Duration,
    /// CSV: the first line names the columns (else they are the stream's,
    /// in order).
    pub header: bool,
    /// CSV: the field separator.
    pub delimiter: u8,
    pub on_error: OnError,
    /// Rows per append: files are grouped up to this, and a larger file is
    /// appended in parts of it.
    pub commit_rows: usize,
    /// The stream the rows go to.
    pub stream: String,
}

/// The options a file source knows, for error messages.
const KNOWN: &str = "path, format, watch, poll_interval, header, delimiter, on_error, commit_rows";

impl FilesSpec {
    /// A source from its statement's parts; `options` are (lower-case key,
    /// value) pairs, `into` the stream after `INTO`. Checks every option;
    /// does not look at the files.
    pub fn new(name: &str, options: &[(String, String)], into: Option<&str>) -> Result<FilesSpec> {
        let bad = |k: &str, v: &str, why: &str| {
            SourceError::Invalid(format!("source option {k} = '{v}': {why}"))
        };
        let stream = into.ok_or_else(|| {
            SourceError::Invalid(
                "a file source names the stream its rows go to: CREATE SOURCE … FROM FILES \
                 WITH (…) INTO stream"
                    .into(),
            )
        })?;
        let mut path = None;
        let mut format = None;
        let mut spec = FilesSpec {
            name: name.to_string(),
            path: String::new(),
            format: FileFormat::Csv,
            watch: false,
            poll_interval: Duration::from_secs(1),
            header: true,
            delimiter: b',',
            on_error: OnError::Stop,
            commit_rows: 1_000_000,
            stream: stream.to_string(),
        };
        let mut csv_only = None;
        for (k, v) in options {
            match k.as_str() {
                "path" => {
                    if !(v.starts_with("file:///") || v.starts_with("s3://")) {
                        return Err(bad(
                            k,
                            v,
                            "expected 'file:///directory/' or 's3://bucket/prefix/'",
                        ));
                    }
                    path = Some(v.clone());
                }
                "format" => {
                    format = Some(match v.to_ascii_lowercase().as_str() {
                        "csv" => FileFormat::Csv,
                        "json" | "jsonl" | "ndjson" => FileFormat::Json,
                        "parquet" => FileFormat::Parquet,
                        _ => return Err(bad(k, v, "expected 'csv', 'json' or 'parquet'")),
                    })
                }
                "watch" => spec.watch = bool_option(k, v)?,
                "poll_interval" => {
                    spec.poll_interval = humantime::parse_duration(v)
                        .ok()
                        .filter(|d| {
                            *d >= Duration::from_millis(10) && *d <= Duration::from_secs(3600)
                        })
                        .ok_or_else(|| {
                            bad(k, v, "expected a duration from 10ms to 1h, e.g. '1s'")
                        })?;
                }
                "header" => {
                    spec.header = bool_option(k, v)?;
                    csv_only = Some(k);
                }
                "delimiter" => {
                    spec.delimiter = match v.as_bytes() {
                        [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
                        b"\\t" => b'\t',
                        _ => return Err(bad(k, v, "expected one ASCII character (or '\\t')")),
                    };
                    csv_only = Some(k);
                }
                "on_error" => spec.on_error = OnError::parse(k, v)?,
                "commit_rows" => {
                    spec.commit_rows = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=10_000_000).contains(n))
                        .ok_or_else(|| bad(k, v, "expected a number from 1 to 10000000"))?;
                }
                other => {
                    return Err(SourceError::Invalid(format!(
                        "unknown file source option \"{other}\" (known: {KNOWN})"
                    )));
                }
            }
        }
        let (Some(path), Some(format)) = (path, format) else {
            return Err(SourceError::Invalid(
                "a file source needs WITH (path = 'file:///…' | 's3://…', format = 'csv' | \
                 'json' | 'parquet')"
                    .into(),
            ));
        };
        if let Some(k) = csv_only
            && format != FileFormat::Csv
        {
            return Err(SourceError::Invalid(format!(
                "source option {k} applies to CSV files, not {}",
                format.name()
            )));
        }
        spec.path = path;
        spec.format = format;
        Ok(spec)
    }

    /// The statement that makes this source.
    pub fn to_sql(&self) -> String {
        let mut options = vec![
            ("path", self.path.clone()),
            ("format", self.format.name().to_string()),
            ("watch", self.watch.to_string()),
            (
                "poll_interval",
                humantime::format_duration(self.poll_interval).to_string(),
            ),
        ];
        if self.format == FileFormat::Csv {
            options.push(("header", self.header.to_string()));
            let d = match self.delimiter {
                b'\t' => "\\t".to_string(),
                b => (b as char).to_string(),
            };
            options.push(("delimiter", d));
        }
        options.push(("on_error", self.on_error.name().to_string()));
        options.push(("commit_rows", self.commit_rows.to_string()));
        format!(
            "CREATE SOURCE {} FROM FILES WITH ({}) INTO {}",
            quoted(&self.name),
            text::options(&options),
            quoted(&self.stream)
        )
    }

    /// The store under the source's prefix.
    pub fn store(&self) -> Result<Store> {
        Store::open(&self.path).map_err(|e| SourceError::Invalid(e.to_string()))
    }
}

fn bool_option(k: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(SourceError::Invalid(format!(
            "source option {k} = '{v}': expected true or false"
        ))),
    }
}

/// Whether a listed object is one to load: no directory or file of its
/// path starts with `.` or `_` (files being written, markers like
/// `_SUCCESS`).
fn loadable(meta: &ObjectMeta) -> bool {
    meta.location
        .parts()
        .all(|p| !p.as_ref().starts_with('.') && !p.as_ref().starts_with('_'))
}

/// The files under the source's prefix it has not loaded, in path order
/// (the one it was interrupted in first).
pub async fn unloaded(
    store: &Store,
    loaded: &HashSet<String>,
    first: Option<&str>,
) -> Result<Vec<ObjectMeta>> {
    let mut files: Vec<ObjectMeta> = store
        .object_store()
        .list(None)
        .try_filter(|m| futures::future::ready(loadable(m)))
        .try_collect()
        .await
        .map_err(|e| SourceError::Upstream(format!("listing the files: {e}")))?;
    files.retain(|m| !loaded.contains(m.location.as_ref()));
    files.sort_by(|a, b| {
        let a_first = Some(a.location.as_ref()) == first;
        let b_first = Some(b.location.as_ref()) == first;
        b_first
            .cmp(&a_first)
            .then_with(|| a.location.cmp(&b.location))
    });
    Ok(files)
}

/// What each append records with it (the producer's progress): the file
/// some of whose rows are in, and how many.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Recorded {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partial: Option<Partial>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Partial {
    path: String,
    rows: u64,
}

/// Runs a source until it has loaded every file (without `watch`: status
/// `done`), the task is aborted, or it cannot go on (status `failed`):
/// after any other failure it waits (backing off, unless the failed run
/// appended rows) and starts again from its ledger.
pub async fn run(log: Arc<Log>, spec: FilesSpec, epoch: u64, progress: Arc<SourceProgress>) {
    let (log, spec_ref, p) = (&*log, &spec, &*progress);
    super::supervise(&spec.name, p, Some(Status::Done), move || {
        run_once(log, spec_ref, epoch, p)
    })
    .await;
}

/// The rows, ledger rows and position of the next append.
struct Pending {
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    files: Vec<Finished>,
    recorded: Recorded,
}

/// A file read to its end (or skipped).
struct Finished {
    meta: ObjectMeta,
    rows: u64,
    error: Option<String>,
}

/// What one run appends with: its producer, sequence and streams.
struct Appender<'a> {
    log: &'a Log,
    spec: &'a FilesSpec,
    producer: String,
    epoch: u64,
    sequence: u64,
    ledger: String,
}

impl Appender<'_> {
    /// Appends what is pending (a no-op when nothing is).
    async fn commit(&mut self, p: &mut Pending, progress: &SourceProgress) -> Result<()> {
        if p.batches.is_empty() && p.files.is_empty() {
            return Ok(());
        }
        let mut staged: Vec<StagedAppend> = Vec::new();
        let n = p.rows as u64;
        if !p.batches.is_empty() {
            let batches = std::mem::take(&mut p.batches);
            staged.extend(
                self.log
                    .stage(&self.spec.stream, batches, &AppendOptions::default())
                    .await?,
            );
        }
        let files = std::mem::take(&mut p.files);
        if !files.is_empty() {
            let options = AppendOptions {
                internal: true,
                ..AppendOptions::default()
            };
            staged.extend(
                self.log
                    .stage(&self.ledger, vec![ledger_rows(self.log, &files)?], &options)
                    .await?,
            );
        }
        self.sequence += 1;
        let seq = ProducerSeq {
            producer_id: self.producer.clone(),
            sequence: self.sequence,
            progress: Some(
                serde_json::to_string(&p.recorded)
                    .map_err(|e| SourceError::Fatal(e.to_string()))?,
            ),
            epoch: Some(self.epoch),
            first: None,
        };
        self.log.append_staged_as(staged, Some(seq)).await?;
        p.rows = 0;
        p.bytes = 0;
        progress.set_status(Status::Running);
        progress.rows.fetch_add(n, Ordering::Relaxed);
        let name = self.spec.name.clone();
        metrics::counter!(ROWS_METRIC, "source" => name.clone()).increment(n);
        metrics::counter!(FILES_METRIC, "source" => name).increment(files.len() as u64);
        for f in &files {
            progress
                .lag_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(f.meta.size))
                })
                .ok();
        }
        Ok(())
    }
}

/// The ledger's rows for `files`.
fn ledger_rows(log: &Log, files: &[Finished]) -> Result<RecordBatch> {
    let now = log.now_micros();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            files.iter().map(|f| f.meta.location.as_ref()),
        )),
        Arc::new(Int64Array::from_iter_values(
            files.iter().map(|f| f.meta.size as i64),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                files
                    .iter()
                    .map(|f| f.meta.last_modified.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(
            files.iter().map(|f| f.rows as i64),
        )),
        Arc::new(StringArray::from_iter(
            files.iter().map(|f| f.error.as_deref()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(files.iter().map(|_| now))
                .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(ledger_schema(), columns)?)
}

/// The paths in a ledger.
async fn ledger_paths(log: &Log, ledger: Arc<StreamInfo>) -> Result<HashSet<String>> {
    let mut paths = HashSet::new();
    let ends = log.partition_ends(ledger.name()).await?;
    for (p, end) in ends.into_iter().enumerate() {
        let mut rows = log
            .read_as(ledger.clone(), p as u32, 0..end, Some(vec![0]))
            .await?;
        while let Some(batch) = rows.try_next().await? {
            let path = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| SourceError::Fatal("a ledger without paths".into()))?;
            paths.extend(path.iter().flatten().map(str::to_string));
        }
    }
    Ok(paths)
}

/// One run: read the ledger and the position, then load the pending files
/// (and, watching, keep listing).
async fn run_once(
    log: &Log,
    spec: &FilesSpec,
    epoch: u64,
    progress: &SourceProgress,
) -> Result<()> {
    progress.starting();
    let store = spec.store()?;
    let producer = producer_id(&spec.name);
    let meta = log.metadata();
    let data = log.stream(&spec.stream).await?;
    let ledger = log.stream(&ledger_of(&spec.name)).await?;
    let mut sequence = 0;
    let mut recorded = Recorded::default();
    for info in [&data, &ledger] {
        meta.fence_producer(&producer, info.id, epoch).await?;
        if let Some((s, text)) = meta.producer_progress(&producer, info.id).await?
            && s >= sequence
        {
            sequence = s;
            recorded = match text {
                Some(t) => serde_json::from_str(&t).map_err(|e| {
                    SourceError::Fatal(format!(
                        "stream \"{}\" records no file source position: {e}",
                        info.name()
                    ))
                })?,
                None => Recorded::default(),
            };
        }
    }
    let mut loaded = ledger_paths(log, ledger).await?;
    let mut appender = Appender {
        log,
        spec,
        producer,
        epoch,
        sequence,
        ledger: ledger_of(&spec.name),
    };
    let mut pending = Pending {
        batches: Vec::new(),
        rows: 0,
        bytes: 0,
        files: Vec::new(),
        recorded,
    };
    loop {
        let first = pending.recorded.partial.as_ref().map(|p| p.path.clone());
        let files = unloaded(&store, &loaded, first.as_deref()).await?;
        progress
            .lag_bytes
            .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
        if first.is_some() && files.first().map(|f| f.location.as_ref()) != first.as_deref() {
            // The interrupted file is gone: nothing more of it to load.
            pending.recorded.partial = None;
        }
        for file in files {
            let skip = match &pending.recorded.partial {
                Some(p) if p.path == file.location.as_ref() => p.rows,
                _ => 0,
            };
            let finished = load(
                log,
                spec,
                &store,
                &file,
                skip,
                &mut pending,
                &mut appender,
                progress,
            )
            .await?;
            if let Some(f) = finished {
                loaded.insert(f.meta.location.to_string());
                pending.files.push(f);
            }
            if pending.rows >= spec.commit_rows {
                appender.commit(&mut pending, progress).await?;
            }
        }
        appender.commit(&mut pending, progress).await?;
        progress.set_status(Status::Running);
        if !spec.watch {
            return Ok(());
        }
        tokio::time::sleep(spec.poll_interval).await;
    }
}

/// Why reading a file stopped early.
enum Interrupted {
    /// It vanished before it could be read.
    Gone,
    /// It cannot be read (the cause, naming the file).
    Bad(String),
    /// The store or the log failed.
    Failed(SourceError),
}

impl From<SourceError> for Interrupted {
    fn from(e: SourceError) -> Self {
        Interrupted::Failed(e)
    }
}

impl From<read::ReadError> for Interrupted {
    fn from(e: read::ReadError) -> Self {
        match e {
            read::ReadError::Gone => Interrupted::Gone,
            read::ReadError::Bad(m) => Interrupted::Bad(m),
            read::ReadError::Store(m) => Interrupted::Failed(SourceError::Upstream(m)),
        }
    }
}

/// Reads `file` into `pending` from its row `skip`, appending whenever
/// `commit_rows` rows (or [`MAX_PENDING_BYTES`]) are pending; the file,
/// finished — None when it vanished before it could be read. A file that
/// cannot be read loses its rows not yet appended (all of them when it
/// fits in one append); then with `on_error = 'skip'` it is finished with
/// its error, else what is pending is appended and the error returned.
#[allow(clippy::too_many_arguments)]
async fn load(
    log: &Log,
    spec: &FilesSpec,
    store: &Store,
    file: &ObjectMeta,
    skip: u64,
    pending: &mut Pending,
    appender: &mut Appender<'_>,
    progress: &SourceProgress,
) -> Result<Option<Finished>> {
    let target = log.stream(&spec.stream).await?.spec.schema.clone();
    let path = file.location.to_string();
    // Rows of the file read (from its start), and in the log.
    let mut seen = 0u64;
    let mut durable = skip;
    // Where this file's rows start among the pending batches.
    let mut first_batch = pending.batches.len();
    let outcome: Result<(), Interrupted> = async {
        let mut reader = read::FileReader::open(store, file, spec, target).await?;
        while let Some(batch) = reader.next().await? {
            let n = batch.num_rows() as u64;
            let before = seen;
            seen += n;
            if seen <= skip {
                continue;
            }
            let batch = if before < skip {
                let drop = (skip - before) as usize;
                batch.slice(drop, batch.num_rows() - drop)
            } else {
                batch
            };
            pending.rows += batch.num_rows();
            pending.bytes += batch.get_array_memory_size();
            pending.batches.push(batch);
            pending.recorded.partial = Some(Partial {
                path: path.clone(),
                rows: seen,
            });
            if pending.rows >= spec.commit_rows || pending.bytes >= MAX_PENDING_BYTES {
                appender.commit(pending, progress).await?;
                durable = seen;
                first_batch = 0;
            }
        }
        Ok(())
    }
    .await;
    let finished = |rows, error| Finished {
        meta: file.clone(),
        rows,
        error,
    };
    match outcome {
        Ok(()) => {
            pending.recorded.partial = None;
            Ok(Some(finished(seen.max(skip), None)))
        }
        Err(Interrupted::Gone) => Ok(None),
        Err(Interrupted::Failed(e)) => Err(e),
        Err(Interrupted::Bad(cause)) => {
            let cause = format!("file {path}: {cause}");
            tracing::warn!(source = %spec.name, file = %path, error = %cause, "a file cannot be loaded");
            pending.batches.truncate(first_batch);
            pending.rows = pending.batches.iter().map(|b| b.num_rows()).sum();
            pending.bytes = pending
                .batches
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum();
            match spec.on_error {
                OnError::Skip => {
                    pending.recorded.partial = None;
                    Ok(Some(finished(durable, Some(cause))))
                }
                OnError::Stop => {
                    pending.recorded.partial = (durable > 0).then(|| Partial {
                        path: path.clone(),
                        rows: durable,
                    });
                    appender.commit(pending, progress).await?;
                    Err(SourceError::Protocol(cause))
                }
            }
        }
    }
}
