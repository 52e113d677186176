//! The write path: buffer appends, flush them as one object, commit offsets,
//! then acknowledge.
//!
//! Why an acknowledgement means durable: an append's future resolves only
//! after (1) the object holding its rows was written create-only and, for a
//! local directory, fsynced, and (2) the metadata transaction that assigns
//! its offsets committed. A failure at either step fails every append of the
//! flush and commits nothing, so no offset is consumed and nothing becomes
//! visible. The object of a commit the store refused is deleted; after a
//! commit that failed (perhaps committed after all) it stays, for the
//! index or the garbage collector.
//!
//! Each object ends with its manifest ([`crate::manifest`]): every chunk's
//! stream, partition and byte range, and the base offset this writer
//! expects it to get, so the index can be rebuilt from the objects.
//!
//! Ordering: one flush is in flight at a time and appends are committed in
//! arrival order within it, so rows appended in sequence to a partition get
//! increasing offsets. While a flush is in flight the next buffer fills,
//! which makes flushes grow with load (group commit).
//!
//! Groups: appends submitted together with [`Writer::submit_group`] (a
//! transaction's writes to several streams) enter the same flush and are
//! committed or rejected together; a producer transaction's group also
//! carries its epoch and consumer-group offsets into that commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{RecordBatch, TimestampMicrosecondArray};
use bytes::Bytes;
use object_store::ObjectStoreExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cache::ChunkCache;
use crate::chunk::{self, TimeBounds};
use crate::clock::ClockRef;
use crate::error::{LogError, Result};
use crate::manifest::{self, Manifest, ManifestChunk};
use crate::metadata::{
    AckPart, CommitOutcome, FlushCommit, MetadataStore, NewAppend, NewChunk, ProducerSeq,
    Rejection, TxnCommit, ended_message, fenced_message,
};
use crate::path::DataObjectPath;
use crate::store::{Store, StoreKind};
use crate::stream::{StreamId, StreamInfo, chunk_schema};
use crate::tail::Tail;

/// When the buffer is flushed, and how much it may hold.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushConfig {
    /// Flush once this many bytes are buffered.
    pub flush_bytes: usize,
    /// Flush once the oldest buffered append is this old.
    pub flush_interval: Duration,
    /// Appends wait while this many bytes are buffered or in flight.
    pub max_buffered_bytes: usize,
    /// zstd level of flushed chunks.
    pub zstd_level: i32,
}

impl FlushConfig {
    /// Defaults tuned for the store: a PUT to a local directory costs a
    /// write and an fsync; a PUT to S3 costs tens of milliseconds and money.
    pub fn for_store(kind: StoreKind) -> Self {
        let (flush_interval, flush_bytes) = match kind {
            StoreKind::Memory => (Duration::from_millis(2), 8 << 20),
            StoreKind::Local => (Duration::from_millis(5), 8 << 20),
            StoreKind::S3 => (Duration::from_millis(150), 16 << 20),
        };
        Self {
            flush_bytes,
            flush_interval,
            max_buffered_bytes: 256 << 20,
            zstd_level: chunk::FLUSH_ZSTD_LEVEL,
        }
    }
}

/// What an append got: its offsets, per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendAck {
    pub parts: Vec<AckPart>,
    /// The append carried a producer sequence that was already committed;
    /// nothing was written again. `parts` holds the original offsets when the
    /// sequence was the producer's latest, and is empty otherwise.
    pub duplicate: bool,
}

impl AppendAck {
    /// Rows acknowledged.
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|p| p.rows).sum()
    }
}

type Waiter = oneshot::Sender<Result<AppendAck>>;

/// Rows by the partition they go to.
pub type Parts = Vec<(u32, RecordBatch)>;

/// A buffered append; [`Submitted::durable`] waits for its acknowledgement.
#[derive(Debug)]
pub struct Submitted(oneshot::Receiver<Result<AppendAck>>);

impl Submitted {
    /// Resolves once the append is durable and has offsets.
    pub async fn durable(self) -> Result<AppendAck> {
        self.0.await.map_err(|_| LogError::ShuttingDown)?
    }
}

/// One append, waiting in the buffer.
struct Pending {
    stream: Arc<StreamInfo>,
    producer: Option<ProducerSeq>,
    /// Rows per partition, in chunk schema (with `_timestamp`).
    parts: Vec<(u32, RecordBatch)>,
    append_time: i64,
    waiters: Vec<Waiter>,
    /// Appends of one group commit together or not at all.
    group: Option<u64>,
    /// The producer transaction the group commits (its epoch is checked
    /// and its group offsets written in the same metadata transaction).
    transaction: Option<Arc<TxnCommit>>,
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Buffer {
    appends: Vec<Pending>,
    /// (stream, producer, sequence) of buffered idempotent appends, so a
    /// retry that arrives before the original is flushed joins it.
    producers: HashMap<(StreamId, String, u64), usize>,
    bytes: usize,
    since: Option<Instant>,
}

struct Shared {
    buffer: std::sync::Mutex<Buffer>,
    wake: Notify,
    closing: AtomicBool,
    config: FlushConfig,
    budget: Arc<Semaphore>,
    store: Store,
    meta: Arc<dyn MetadataStore>,
    cache: Arc<ChunkCache>,
    tail: Arc<Tail>,
    clock: ClockRef,
    /// The last group number given out.
    groups: AtomicU64,
    /// Each partition's end after this writer's last commit to it: the
    /// base offset the next flush's manifest expects (see
    /// [`crate::manifest`]). Forgotten when a commit fails.
    ends: std::sync::Mutex<HashMap<(StreamId, u32), u64>>,
}

/// Accepts appends and runs the flush loop.
pub struct Writer {
    shared: Arc<Shared>,
    flusher: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

/// Budget unit: the semaphore counts KiB so that it fits in u32 permits.
fn kib(bytes: usize) -> u32 {
    bytes.div_ceil(1024).clamp(1, u32::MAX as usize) as u32
}

impl Shared {
    /// Waits for buffer space for `bytes` (at most the whole budget, so one
    /// large append still fits).
    async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit> {
        let want = kib(bytes).min(kib(self.config.max_buffered_bytes));
        self.budget
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| LogError::ShuttingDown)
    }
}

impl Buffer {
    fn push(&mut self, pending: Pending, bytes: usize) {
        self.bytes += bytes;
        self.since.get_or_insert_with(crate::clock::monotonic);
        self.appends.push(pending);
    }
}

/// Rows in chunk schema: the declared columns and the append time.
fn with_append_time(
    stream: &StreamInfo,
    parts: Vec<(u32, RecordBatch)>,
    append_time: i64,
) -> Result<Vec<(u32, RecordBatch)>> {
    let schema = chunk_schema(&stream.spec.schema);
    parts
        .into_iter()
        .map(|(p, b)| {
            let ts = TimestampMicrosecondArray::from_value(append_time, b.num_rows())
                .with_timezone("UTC");
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(ts));
            Ok((p, RecordBatch::try_new(schema.clone(), cols)?))
        })
        .collect()
}

impl Writer {
    /// Starts the flush loop on the current runtime.
    pub fn start(
        config: FlushConfig,
        store: Store,
        meta: Arc<dyn MetadataStore>,
        cache: Arc<ChunkCache>,
        tail: Arc<Tail>,
        clock: ClockRef,
    ) -> Self {
        let budget = Arc::new(Semaphore::new(kib(config.max_buffered_bytes) as usize));
        let shared = Arc::new(Shared {
            buffer: std::sync::Mutex::new(Buffer::default()),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            config,
            budget,
            store,
            meta,
            cache,
            tail,
            clock,
            groups: AtomicU64::new(0),
            ends: std::sync::Mutex::new(HashMap::new()),
        });
        let flusher = tokio::spawn(flush_loop(shared.clone()));
        Self {
            shared,
            flusher: tokio::sync::Mutex::new(Some(flusher)),
        }
    }

    /// Buffers rows already split by partition and validated against the
    /// stream's schema; resolves once they are durable and have offsets.
    pub async fn append(
        &self,
        stream: Arc<StreamInfo>,
        parts: Vec<(u32, RecordBatch)>,
        producer: Option<ProducerSeq>,
    ) -> Result<AppendAck> {
        self.submit(stream, parts, producer).await?.durable().await
    }

    /// Buffers rows (waiting for buffer space) and returns at once: the rows
    /// of appends submitted one after another get offsets in that order.
    /// The returned [`Submitted`] resolves when they are durable.
    pub async fn submit(
        &self,
        stream: Arc<StreamInfo>,
        parts: Vec<(u32, RecordBatch)>,
        producer: Option<ProducerSeq>,
    ) -> Result<Submitted> {
        let s = &self.shared;
        if s.closing.load(Ordering::Acquire) {
            return Err(LogError::ShuttingDown);
        }
        let bytes: usize = parts.iter().map(|(_, b)| b.get_array_memory_size()).sum();
        let permit = s.reserve(bytes).await?;
        let append_time = s.clock.now_micros();
        let parts = with_append_time(&stream, parts, append_time)?;

        let (tx, rx) = oneshot::channel();
        let wake = {
            let mut buf = s.buffer.lock().unwrap_or_else(|p| p.into_inner());
            if s.closing.load(Ordering::Acquire) {
                return Err(LogError::ShuttingDown);
            }
            let joined = producer.as_ref().and_then(|p| {
                let key = (stream.id, p.producer_id.clone(), p.sequence);
                buf.producers.get(&key).copied()
            });
            if let Some(i) = joined {
                buf.appends[i].waiters.push(tx);
                false
            } else {
                if let Some(p) = &producer {
                    let key = (stream.id, p.producer_id.clone(), p.sequence);
                    let idx = buf.appends.len();
                    buf.producers.insert(key, idx);
                }
                buf.push(
                    Pending {
                        stream,
                        producer,
                        parts,
                        append_time,
                        waiters: vec![tx],
                        group: None,
                        transaction: None,
                        _permit: Some(permit),
                    },
                    bytes,
                );
                buf.bytes >= s.config.flush_bytes || buf.appends.len() == 1
            }
        };
        if wake {
            s.wake.notify_one();
        }
        Ok(Submitted(rx))
    }

    /// Buffers appends to several streams as one group: they enter the same
    /// flush and commit in the same metadata transaction, and if one of them
    /// cannot commit (its stream was dropped, its transaction is fenced)
    /// none does. With `transaction`, the producer transaction's epoch is
    /// checked and its group offsets written in that same metadata
    /// transaction. With `producer`, every append of the group carries it:
    /// its sequence and progress are recorded on each of their streams in
    /// that transaction (and its epoch checked there). One [`Submitted`]
    /// per append, in order.
    pub async fn submit_group(
        &self,
        appends: Vec<(Arc<StreamInfo>, Parts)>,
        transaction: Option<TxnCommit>,
        producer: Option<ProducerSeq>,
    ) -> Result<Vec<Submitted>> {
        let transaction = transaction.map(Arc::new);
        let s = &self.shared;
        if s.closing.load(Ordering::Acquire) {
            return Err(LogError::ShuttingDown);
        }
        let sizes: Vec<usize> = appends
            .iter()
            .map(|(_, parts)| parts.iter().map(|(_, b)| b.get_array_memory_size()).sum())
            .collect();
        let permit = s.reserve(sizes.iter().sum()).await?;
        let append_time = s.clock.now_micros();
        let group = s.groups.fetch_add(1, Ordering::Relaxed) + 1;
        let mut pending = Vec::with_capacity(appends.len());
        let mut submitted = Vec::with_capacity(appends.len());
        let mut permit = Some(permit);
        for (stream, parts) in appends {
            let parts = with_append_time(&stream, parts, append_time)?;
            let (tx, rx) = oneshot::channel();
            submitted.push(Submitted(rx));
            pending.push(Pending {
                stream,
                producer: producer.clone(),
                parts,
                append_time,
                waiters: vec![tx],
                group: Some(group),
                transaction: transaction.clone(),
                _permit: permit.take(),
            });
        }
        let wake = {
            let mut buf = s.buffer.lock().unwrap_or_else(|p| p.into_inner());
            if s.closing.load(Ordering::Acquire) {
                return Err(LogError::ShuttingDown);
            }
            let first = buf.appends.is_empty();
            for (p, bytes) in pending.into_iter().zip(sizes) {
                buf.push(p, bytes);
            }
            first || buf.bytes >= s.config.flush_bytes
        };
        if wake {
            s.wake.notify_one();
        }
        Ok(submitted)
    }

    /// Stops accepting appends, flushes what is buffered, and waits for the
    /// flush loop to end.
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(handle) = self.flusher.lock().await.take()
            && let Err(e) = handle.await
        {
            warn!(error = %e, "flush loop ended abnormally");
        }
    }
}

async fn flush_loop(s: Arc<Shared>) {
    loop {
        let (empty, ready, deadline) = {
            let buf = s.buffer.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = buf.since.map(|t| t + s.config.flush_interval);
            (
                buf.appends.is_empty(),
                buf.bytes >= s.config.flush_bytes,
                deadline,
            )
        };
        let closing = s.closing.load(Ordering::Acquire);
        if empty {
            if closing {
                return;
            }
            s.wake.notified().await;
            continue;
        }
        if !ready && !closing {
            let deadline = deadline.unwrap_or_else(crate::clock::monotonic);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = s.wake.notified() => continue,
            }
        }
        let taken = std::mem::take(&mut *s.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        flush(&s, taken.appends).await;
    }
}

/// Where each partition's rows go in the object being built.
struct PlannedChunk {
    stream: Arc<StreamInfo>,
    partition: u32,
    batches: Vec<RecordBatch>,
    rows: u64,
    append_time: TimeBounds,
}

/// Rows of one append inside a planned chunk: (chunk key, first row, rows).
type Slice = ((StreamId, u32, u32), u64, u64);

/// Flushes `appends` until each is acknowledged or failed.
async fn flush(s: &Shared, mut appends: Vec<Pending>) {
    while !appends.is_empty() {
        match flush_once(s, &appends).await {
            Ok(FlushResult::Done(acks)) => {
                for (p, ack) in appends.into_iter().zip(acks) {
                    for w in p.waiters {
                        let _ = w.send(Ok(ack.clone()));
                    }
                }
                return;
            }
            Ok(FlushResult::Rejected(rejections)) => {
                // Settle the rejected appends, and every append of a group
                // one of them belongs to, then flush the others again.
                let mut rejected: HashMap<usize, (Rejection, String)> = rejections
                    .into_iter()
                    .map(|(i, r)| (i, (r, appends[i].stream.name().to_string())))
                    .collect();
                let failed_groups: HashMap<u64, (Rejection, String)> = rejected
                    .iter()
                    .filter_map(|(i, r)| appends[*i].group.map(|g| (g, r.clone())))
                    .collect();
                for (i, p) in appends.iter().enumerate() {
                    if let Some(r) = p.group.and_then(|g| failed_groups.get(&g)) {
                        rejected.entry(i).or_insert_with(|| r.clone());
                    }
                }
                let mut keep = Vec::with_capacity(appends.len());
                for (i, p) in appends.into_iter().enumerate() {
                    let outcome = match rejected.get(&i) {
                        None => {
                            keep.push(p);
                            continue;
                        }
                        Some((Rejection::StreamGone, stream)) => {
                            Err(LogError::UnknownStream(stream.clone()))
                        }
                        Some((Rejection::Duplicate { previous }, _)) => Ok(AppendAck {
                            parts: previous.clone().unwrap_or_default(),
                            duplicate: true,
                        }),
                        Some((Rejection::OutOfOrder { expected, got }, stream)) => {
                            Err(LogError::OutOfOrderSequence(format!(
                                "producer sequence {got} on stream \"{stream}\" is out of order: \
                                 expected {expected}"
                            )))
                        }
                        Some((Rejection::Fenced { epoch, current }, stream)) => {
                            Err(LogError::Fenced(format!(
                                "producer epoch {epoch} of stream \"{stream}\" is superseded by \
                                 epoch {current}"
                            )))
                        }
                        Some((
                            Rejection::TransactionFenced {
                                transactional_id,
                                epoch,
                                current,
                            },
                            _,
                        )) => Err(LogError::Fenced(fenced_message(
                            transactional_id,
                            *epoch,
                            *current,
                        ))),
                        Some((Rejection::TransactionEnded { transactional_id }, _)) => Err(
                            LogError::TransactionAborted(ended_message(transactional_id)),
                        ),
                    };
                    for w in p.waiters {
                        let _ = w.send(outcome.as_ref().map_err(clone_error).cloned());
                    }
                }
                appends = keep;
            }
            Err(e) => {
                warn!(error = %e, appends = appends.len(), "flush failed");
                let e = Arc::new(e);
                for p in appends {
                    for w in p.waiters {
                        let _ = w.send(Err(LogError::FlushFailed(e.clone())));
                    }
                }
                return;
            }
        }
    }
}

/// The base offset each chunk of a flush expects (in plan order): the
/// partition's end after this writer's last commit, read from the
/// metadata store for partitions it has not committed to yet.
async fn expected_bases(s: &Shared, chunks: &[PlannedChunk]) -> Result<Vec<u64>> {
    let missing: Vec<StreamId> = {
        let ends = s.ends.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<StreamId> = chunks
            .iter()
            .filter(|c| !ends.contains_key(&(c.stream.id, c.partition)))
            .map(|c| c.stream.id)
            .collect();
        ids.dedup();
        ids
    };
    let mut read = HashMap::new();
    for id in missing {
        // A stream dropped meanwhile has none: its commit is refused.
        let stream_ends = s.meta.partition_ends(id).await?;
        for (p, end) in stream_ends.into_iter().enumerate() {
            read.insert((id, p as u32), end);
        }
    }
    let ends = s.ends.lock().unwrap_or_else(|p| p.into_inner());
    let mut next: HashMap<(StreamId, u32), u64> = HashMap::new();
    Ok(chunks
        .iter()
        .map(|c| {
            let key = (c.stream.id, c.partition);
            let at = next.entry(key).or_insert_with(|| {
                ends.get(&key)
                    .or_else(|| read.get(&key))
                    .copied()
                    .unwrap_or(0)
            });
            let base = *at;
            *at += c.rows;
            base
        })
        .collect())
}

fn clone_error(e: &LogError) -> LogError {
    match e {
        LogError::UnknownStream(s) => LogError::UnknownStream(s.clone()),
        other => LogError::Internal(other.to_string()),
    }
}

enum FlushResult {
    Done(Vec<AppendAck>),
    Rejected(Vec<(usize, Rejection)>),
}

async fn flush_once(s: &Shared, appends: &[Pending]) -> Result<FlushResult> {
    // Group rows by (stream, schema version, partition), keeping arrival
    // order: a chunk holds rows of one schema version.
    let mut plan: BTreeMap<(StreamId, u32, u32), PlannedChunk> = BTreeMap::new();
    let mut slices: Vec<Vec<Slice>> = Vec::with_capacity(appends.len());
    for a in appends {
        let mut mine = Vec::with_capacity(a.parts.len());
        for (p, batch) in &a.parts {
            let key = (a.stream.id, a.stream.schema_version, *p);
            let c = plan.entry(key).or_insert_with(|| PlannedChunk {
                stream: a.stream.clone(),
                partition: *p,
                batches: Vec::new(),
                rows: 0,
                append_time: TimeBounds::default(),
            });
            let n = batch.num_rows() as u64;
            // Rows of one append in one partition are contiguous: one slice.
            match mine.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, first, rows)) if *first + *rows == c.rows => *rows += n,
                _ => mine.push((key, c.rows, n)),
            }
            c.rows += n;
            c.batches.push(batch.clone());
            c.append_time = TimeBounds {
                min: Some(
                    c.append_time
                        .min
                        .map_or(a.append_time, |m| m.min(a.append_time)),
                ),
                max: Some(
                    c.append_time
                        .max
                        .map_or(a.append_time, |m| m.max(a.append_time)),
                ),
            };
        }
        slices.push(mine);
    }
    let mut chunks: Vec<PlannedChunk> = plan.into_values().collect();
    let index: HashMap<(StreamId, u32, u32), usize> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.stream.id, c.stream.schema_version, c.partition), i))
        .collect();

    // Coalesce and encode every chunk in parallel, off the async workers.
    // The coalesced batches are what the cache keeps: one batch per chunk
    // instead of one per INSERT, each with its own arrays and schema.
    let level = s.config.zstd_level;
    let encoded = futures::future::try_join_all(chunks.iter_mut().map(|c| {
        let batches = std::mem::take(&mut c.batches);
        let schema = chunk_schema(&c.stream.spec.schema);
        let et = c.stream.event_time_index();
        tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, TimeBounds, Vec<RecordBatch>)> {
            let batches = chunk::coalesce(&schema, batches)?;
            let bytes = chunk::encode(&schema, &batches, level)?;
            let event_time = match et {
                Some(i) => chunk::batches_time_bounds(&batches, i)?,
                None => TimeBounds::default(),
            };
            Ok((bytes, event_time, batches))
        })
    }))
    .await
    .map_err(|e| LogError::Internal(format!("encode task: {e}")))?
    .into_iter()
    .collect::<Result<Vec<_>>>()?;

    let expected = expected_bases(s, &chunks).await?;
    let total: usize = encoded.iter().map(|(b, _, _)| b.len()).sum();
    let mut object = Vec::with_capacity(total + 256 * chunks.len());
    let mut new_chunks = Vec::with_capacity(chunks.len());
    let mut decoded = Vec::with_capacity(chunks.len());
    let mut described = Manifest {
        chunks: Vec::with_capacity(chunks.len()),
    };
    for ((c, (bytes, event_time, batches)), base) in chunks.iter().zip(encoded).zip(expected) {
        let start = object.len() as u64;
        object.extend_from_slice(&bytes);
        described.chunks.push(ManifestChunk {
            stream: c.stream.id,
            partition: c.partition,
            schema_version: c.stream.schema_version,
            bytes: [start, object.len() as u64],
            offsets: [base, base + c.rows],
            exact: false,
            sparse_rows: None,
            event_time: manifest::bounds(event_time),
            append_time: manifest::bounds(c.append_time),
        });
        new_chunks.push(NewChunk {
            stream_id: c.stream.id,
            partition: c.partition,
            byte_range: start..object.len() as u64,
            rows: c.rows,
            event_time,
            append_time: c.append_time,
            schema_version: c.stream.schema_version,
        });
        decoded.push(batches);
    }

    manifest::append(&mut object, &described)?;

    let object_size = object.len() as u64;
    let forget = |s: &Shared| {
        let mut ends = s.ends.lock().unwrap_or_else(|p| p.into_inner());
        for c in &chunks {
            ends.remove(&(c.stream.id, c.partition));
        }
    };
    let key = || DataObjectPath::new_unique().as_path().clone();
    let path = match s.store.put_new(key, Bytes::from(object)).await {
        Ok(landed) => DataObjectPath::parse(landed.as_ref()),
        Err(e) => {
            forget(s);
            return Err(e);
        }
    };

    // One entry per producer transaction, found by its group.
    let mut transactions: Vec<TxnCommit> = Vec::new();
    let mut txn_of_group: HashMap<u64, usize> = HashMap::new();
    let txn_index: Vec<Option<usize>> = appends
        .iter()
        .map(|a| {
            let (group, txn) = (a.group?, a.transaction.as_ref()?);
            Some(*txn_of_group.entry(group).or_insert_with(|| {
                transactions.push(TxnCommit::clone(txn));
                transactions.len() - 1
            }))
        })
        .collect();

    let commit = FlushCommit {
        object: path.as_str().to_string(),
        object_size,
        created_at: s.clock.now_micros(),
        chunks: new_chunks,
        appends: appends
            .iter()
            .zip(&slices)
            .zip(txn_index)
            .map(|((a, sl), transaction)| NewAppend {
                stream_id: a.stream.id,
                producer: a.producer.clone(),
                transaction,
                slices: sl
                    .iter()
                    .map(|(k, first, n)| (index[k], *first, *n))
                    .collect(),
            })
            .collect(),
        transactions,
    };
    let committing = crate::clock::Stopwatch::start();
    let outcome = s.meta.commit_flush(&commit).await;
    metrics::histogram!(crate::metrics::METADATA_COMMIT_SECONDS)
        .record(committing.elapsed().as_secs_f64());
    let bases = match outcome {
        Ok(CommitOutcome::Committed { chunk_base_offsets }) => chunk_base_offsets,
        Ok(CommitOutcome::Rejected { rejections }) => {
            debug!(object = %path, rejected = rejections.len(), "flush rejected, retrying");
            forget(s);
            // Nothing of it was committed: its rows are written again.
            if let Err(e) = s.store.object_store().delete(path.as_path()).await {
                debug!(object = %path, error = %e, "cannot delete a rejected flush's object");
            }
            return Ok(FlushResult::Rejected(rejections));
        }
        Err(e) => {
            // Perhaps committed after all: the object stays, for the
            // index or for garbage collection.
            forget(s);
            return Err(e);
        }
    };
    {
        let mut ends = s.ends.lock().unwrap_or_else(|p| p.into_inner());
        for (c, base) in chunks.iter().zip(&bases) {
            ends.insert((c.stream.id, c.partition), base + c.rows);
        }
    }

    metrics::histogram!(crate::metrics::FLUSH_BYTES).record(object_size as f64);
    metrics::histogram!(crate::metrics::FLUSH_ROWS)
        .record(commit.chunks.iter().map(|c| c.rows).sum::<u64>() as f64);
    for (c, nc) in chunks.iter().zip(&commit.chunks) {
        let stream = c.stream.name().to_string();
        metrics::counter!(crate::metrics::APPENDED_ROWS, "stream" => stream.clone())
            .increment(nc.rows);
        metrics::counter!(crate::metrics::APPENDED_BYTES, "stream" => stream)
            .increment(nc.byte_range.end - nc.byte_range.start);
    }
    let object_key: Arc<str> = Arc::from(path.as_str());
    for (((c, nc), base), batches) in chunks.iter().zip(&commit.chunks).zip(&bases).zip(decoded) {
        s.cache
            .insert((object_key.clone(), nc.byte_range.start), Arc::new(batches));
        s.tail.publish(c.stream.id, c.partition, base + c.rows);
    }
    let acks = commit
        .appends
        .iter()
        .map(|a| AppendAck {
            parts: a
                .slices
                .iter()
                .map(|&(ci, first, rows)| AckPart {
                    partition: commit.chunks[ci].partition,
                    base_offset: bases[ci] + first,
                    rows,
                })
                .collect(),
            duplicate: false,
        })
        .collect();
    debug!(object = %path, bytes = object_size, chunks = bases.len(), "flushed");
    Ok(FlushResult::Done(acks))
}
