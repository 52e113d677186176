//! [`Log`]: the public API of the log — streams, appends, reads, tail waits.
//!
//! It owns the writer (buffer + flush loop), the chunk cache, the tail
//! notifier and an in-memory map of stream definitions (filled from the
//! metadata store on first use). When the metadata store is shared with other
//! agents, a follower task applies what they commit: new partition ends wake
//! this agent's tail readers, dropped streams leave the map. It validates every append before anything
//! is buffered, so a bad batch is refused whole and nothing of it is written.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use tokio::sync::RwLock;

use crate::agent::{Agent, AgentState};
use crate::cache::ChunkCache;
use crate::clock::{ClockRef, Micros, SystemClock};
use crate::config::{LogConfig, MaintenanceConfig};
use crate::definitions;
use crate::error::{LogError, Result};
use crate::groups::Groups;
use crate::metadata::sqlite::SqliteMetadata;
use crate::metadata::{AgentRecord, Change, MetadataStore, ProducerSeq};
use crate::partitioner;
use crate::staged::StagedAppend;
use crate::store::Store;
use crate::stream::{StreamInfo, StreamKind, StreamSpec};
use crate::tail::Tail;
use crate::transactional::producers::TransactionalProducers;
use crate::writer::{AppendAck, Submitted, Writer};

mod reads;
mod versions;

/// Where an append's rows go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// This partition; otherwise by the stream's key, or round-robin by batch
    /// when the stream has no key.
    pub partition: Option<u32>,
    /// Idempotent producer identity; a retried append with the same sequence
    /// is not written twice.
    pub producer: Option<ProducerSeq>,
    /// Partition rows by these columns instead of the stream's key.
    pub key: Option<Vec<String>>,
    /// Set by the system's own writers (a view appending its changelog):
    /// without it, an append to an internal stream is refused.
    pub internal: bool,
}

impl AppendOptions {
    /// Rows go to `partition`.
    pub fn to_partition(partition: u32) -> Self {
        Self {
            partition: Some(partition),
            ..Self::default()
        }
    }
}

/// The log.
pub struct Log {
    meta: Arc<dyn MetadataStore>,
    store: Store,
    clock: ClockRef,
    writer: Writer,
    cache: Arc<ChunkCache>,
    tail: Arc<Tail>,
    tail_poll: Duration,
    streams: StreamMap,
    round_robin: AtomicU32,
    groups: Groups,
    follower: tokio::task::JoinHandle<()>,
    /// Counts changes of roles and privileges, here and announced by other
    /// agents: whoever caches them re-reads when it moves.
    roles_epoch: Arc<AtomicU64>,
    /// Counts changes of streams' schemas, here and announced by other
    /// agents (and resyncs): whoever caches schemas re-reads when it moves.
    schemas_epoch: Arc<AtomicU64>,
    agent: Arc<Agent>,
    heartbeat: tokio::task::JoinHandle<()>,
    maintenance: MaintenanceConfig,
    pub(crate) zstd_level: i32,
    pub(crate) transactional: TransactionalProducers,
}

type StreamMap = Arc<RwLock<HashMap<String, Arc<StreamInfo>>>>;

impl Drop for Log {
    fn drop(&mut self) {
        self.follower.abort();
        self.heartbeat.abort();
    }
}

/// Applies changes other agents commit (see the module doc) until the
/// announcements end.
async fn follow_changes(
    meta: Arc<dyn MetadataStore>,
    tail: Arc<Tail>,
    streams: StreamMap,
    roles_epoch: Arc<AtomicU64>,
    schemas_epoch: Arc<AtomicU64>,
) {
    let mut rx = loop {
        match meta.changes().await {
            Ok(Some(rx)) => break rx,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the metadata store's changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    while let Some(change) = rx.recv().await {
        match change {
            Change::Ends(ends) => {
                for (stream, partition, end) in ends {
                    tail.publish(stream, partition, end);
                }
            }
            Change::StreamDropped(id) => {
                streams.write().await.retain(|_, s| s.id != id);
                tail.forget(id);
            }
            Change::StreamChanged(id) => {
                streams.write().await.retain(|_, s| s.id != id);
                schemas_epoch.fetch_add(1, Ordering::AcqRel);
            }
            Change::Roles => {
                roles_epoch.fetch_add(1, Ordering::AcqRel);
            }
            Change::Resync => {
                streams.write().await.clear();
                roles_epoch.fetch_add(1, Ordering::AcqRel);
                schemas_epoch.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("store", &self.store).finish()
    }
}

impl Log {
    /// Starts a log over a store and a metadata store. Must be called inside
    /// a tokio runtime (it spawns the flush loop).
    pub fn open(
        store: Store,
        meta: Arc<dyn MetadataStore>,
        config: LogConfig,
        clock: ClockRef,
    ) -> Log {
        let cache = Arc::new(ChunkCache::new(config.cache_bytes));
        let tail = Arc::new(Tail::default());
        let zstd_level = config.flush.zstd_level;
        let writer = Writer::start(
            config.flush,
            store.clone(),
            meta.clone(),
            cache.clone(),
            tail.clone(),
            clock.clone(),
        );
        let streams = StreamMap::default();
        let roles_epoch = Arc::new(AtomicU64::new(0));
        let schemas_epoch = Arc::new(AtomicU64::new(0));
        let follower = tokio::spawn(follow_changes(
            meta.clone(),
            tail.clone(),
            streams.clone(),
            roles_epoch.clone(),
            schemas_epoch.clone(),
        ));
        let agent = Arc::new(Agent::new(
            meta.clone(),
            clock.clone(),
            config.agent_timeout,
        ));
        let heartbeat = tokio::spawn(
            agent
                .clone()
                .run(config.heartbeat_interval, config.sole_agent),
        );
        let groups = Groups::new(meta.clone(), clock.clone());
        Log {
            meta,
            store,
            clock,
            writer,
            cache,
            tail,
            tail_poll: config.tail_poll,
            streams,
            round_robin: AtomicU32::new(0),
            transactional: TransactionalProducers::default(),
            groups,
            follower,
            roles_epoch,
            schemas_epoch,
            agent,
            heartbeat,
            maintenance: config.maintenance,
            zstd_level,
        }
    }

    /// The object store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metadata store.
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.meta
    }

    /// Moves whenever roles, memberships or privileges change, here or
    /// (announced) on another agent; see [`Log::roles_changed`].
    pub fn roles_epoch(&self) -> u64 {
        self.roles_epoch.load(Ordering::Acquire)
    }

    /// Moves whenever a stream's schema changes, here or (announced) on
    /// another agent.
    pub fn schemas_epoch(&self) -> u64 {
        self.schemas_epoch.load(Ordering::Acquire)
    }

    /// Notes a change of roles or privileges made through this agent (other
    /// agents learn of it from the store's announcement).
    pub fn roles_changed(&self) {
        self.roles_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Bytes held by the chunk cache.
    pub fn cache_bytes(&self) -> u64 {
        self.cache.weight()
    }

    /// Creates a user's stream; reserved names are refused.
    pub async fn create_stream(&self, spec: StreamSpec) -> Result<Arc<StreamInfo>> {
        if StreamKind::of(&spec.name).is_internal() {
            return Err(LogError::ReservedName(spec.name));
        }
        self.create(spec).await
    }

    /// Creates one of the system's own streams (`kind` names which, and
    /// must be the kind of the spec's name).
    pub async fn create_internal_stream(
        &self,
        kind: StreamKind,
        spec: StreamSpec,
    ) -> Result<Arc<StreamInfo>> {
        if !kind.is_internal() || StreamKind::of(&spec.name) != kind {
            return Err(LogError::Internal(format!(
                "\"{}\" is not the name of a {kind:?} stream",
                spec.name
            )));
        }
        self.create(spec).await
    }

    async fn create(&self, spec: StreamSpec) -> Result<Arc<StreamInfo>> {
        spec.validate()?;
        let info = Arc::new(
            self.meta
                .create_stream(&spec, self.clock.now_micros())
                .await?,
        );
        self.streams
            .write()
            .await
            .insert(info.name().to_string(), info.clone());
        self.keep_definition(&info).await;
        Ok(info)
    }

    /// Keeps stream `info`'s definition in the object store (see
    /// [`crate::definitions`]); a failure is logged, and the upkeep writes
    /// a missing one later.
    pub(crate) async fn keep_definition(&self, info: &StreamInfo) {
        let kept = async {
            let versions = self.meta.schema_versions(info.id).await?;
            definitions::write(&self.store, info, &versions).await
        }
        .await;
        if let Err(e) = kept {
            tracing::warn!(stream = %info.name(), error = %e, "cannot keep the stream's definition in the object store");
        }
    }

    /// Drops a user's stream; buffered appends to it fail with
    /// `UnknownStream`. The system's streams are refused.
    pub async fn drop_stream(&self, name: &str) -> Result<()> {
        if StreamKind::of(name).is_internal() {
            return Err(LogError::InternalStream(name.to_string()));
        }
        self.drop_any(name).await
    }

    /// Drops one of the system's own streams (`kind` as in
    /// [`Log::create_internal_stream`]).
    pub async fn drop_internal_stream(&self, kind: StreamKind, name: &str) -> Result<()> {
        if !kind.is_internal() || StreamKind::of(name) != kind {
            return Err(LogError::Internal(format!(
                "\"{name}\" is not the name of a {kind:?} stream"
            )));
        }
        self.drop_any(name).await
    }

    async fn drop_any(&self, name: &str) -> Result<()> {
        let info = self.meta.drop_stream(name).await?;
        self.streams.write().await.remove(name);
        self.tail.forget(info.id);
        if let Err(e) = definitions::delete(&self.store, info.id).await {
            tracing::warn!(stream = %name, error = %e, "cannot delete the dropped stream's definition from the object store");
        }
        Ok(())
    }

    /// A stream by name.
    pub async fn stream(&self, name: &str) -> Result<Arc<StreamInfo>> {
        if let Some(s) = self.streams.read().await.get(name) {
            return Ok(s.clone());
        }
        let info = self
            .meta
            .stream(name)
            .await?
            .ok_or_else(|| LogError::UnknownStream(name.to_string()))?;
        let info = Arc::new(info);
        self.streams
            .write()
            .await
            .insert(name.to_string(), info.clone());
        Ok(info)
    }

    /// Every user's stream, by name: what listings show. The system's own
    /// streams are in [`Log::all_streams`].
    pub async fn streams(&self) -> Result<Vec<Arc<StreamInfo>>> {
        let mut all = self.all_streams().await?;
        all.retain(|s| !StreamKind::of(s.name()).is_internal());
        Ok(all)
    }

    /// The streams SQL names: users' streams and tables' logs (which the
    /// tables' views read).
    pub async fn sql_streams(&self) -> Result<Vec<Arc<StreamInfo>>> {
        let mut all = self.all_streams().await?;
        all.retain(|s| {
            matches!(
                StreamKind::of(s.name()),
                StreamKind::User | StreamKind::Table
            )
        });
        Ok(all)
    }

    /// Every stream, the system's own included, by name.
    pub async fn all_streams(&self) -> Result<Vec<Arc<StreamInfo>>> {
        Ok(self
            .meta
            .streams()
            .await?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    /// Next offset of each partition (what a reader may read up to).
    pub async fn partition_ends(&self, stream: &str) -> Result<Vec<u64>> {
        let info = self.stream(stream).await?;
        self.meta.partition_ends(info.id).await
    }

    /// Appends a batch. Resolves after the rows are durable in the object
    /// store and their offsets are committed; see `writer` for why.
    pub async fn append(
        &self,
        stream: &str,
        batch: RecordBatch,
        options: AppendOptions,
    ) -> Result<AppendAck> {
        self.append_batches(stream, vec![batch], options).await
    }

    /// Appends several batches as one append: all of their rows become
    /// visible in the same commit, or none do.
    pub async fn append_batches(
        &self,
        stream: &str,
        batches: Vec<RecordBatch>,
        options: AppendOptions,
    ) -> Result<AppendAck> {
        match self.submit(stream, batches, options).await? {
            Some(submitted) => submitted.durable().await,
            None => Ok(AppendAck {
                parts: Vec::new(),
                duplicate: false,
            }),
        }
    }

    /// Validates and buffers an append like [`Log::append_batches`], and
    /// returns once it is buffered (waiting only for buffer space): appends
    /// submitted one after another from one task get offsets in that order,
    /// while their durability is awaited concurrently. `None`: no rows.
    pub async fn submit(
        &self,
        stream: &str,
        batches: Vec<RecordBatch>,
        options: AppendOptions,
    ) -> Result<Option<Submitted>> {
        let producer = options.producer.clone();
        match self.stage(stream, batches, &options).await? {
            Some(staged) => self
                .writer
                .submit(staged.info, staged.parts, producer)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// Checks rows against a stream and splits them by partition, without
    /// appending them: what a transaction holds until it commits (see
    /// [`Log::append_staged`]). `None`: no rows. The producer of `options`
    /// is not used.
    pub async fn stage(
        &self,
        stream: &str,
        batches: Vec<RecordBatch>,
        options: &AppendOptions,
    ) -> Result<Option<StagedAppend>> {
        let info = self.stream(stream).await?;
        if StreamKind::of(stream).is_internal() && !options.internal {
            return Err(LogError::InternalStream(stream.to_string()));
        }
        let n = info.spec.partitions;
        if let Some(p) = options.partition
            && p >= n
        {
            return Err(LogError::PartitionOutOfRange {
                stream: stream.to_string(),
                partition: p,
                partitions: n,
            });
        }
        let key = match &options.key {
            Some(columns) => key_indices(&info, columns)?,
            None => info.key_indices(),
        };
        // Without a key, a whole append goes to one partition (round-robin
        // between appends), so its rows stay together and in order.
        let fixed = options.partition.or_else(|| {
            key.is_empty()
                .then(|| self.round_robin.fetch_add(1, Ordering::Relaxed) % n)
        });
        let mut parts = Vec::new();
        for batch in batches {
            let batch = match conform(&info, batch.clone()) {
                Ok(b) => b,
                Err(e @ LogError::SchemaMismatch { .. }) => {
                    match self.carried(&info, &batch).await? {
                        Some(b) => b,
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            if batch.num_rows() == 0 {
                continue;
            }
            match fixed {
                Some(p) => parts.push((p, batch)),
                None => parts.extend(partitioner::split_by_key(&batch, &key, n)?),
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(StagedAppend {
            info,
            parts,
            seq: None,
        }))
    }

    /// Rows made for an older version of a stream's columns (a write
    /// planned, or a value decoded, before an `ALTER STREAM` that landed
    /// before the append) carried over to the current version, as if they
    /// had been appended just before the change; `None` when they are not
    /// rows of an older version.
    async fn carried(&self, info: &StreamInfo, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let made_for = batch.schema();
        let older = self
            .meta
            .schema_versions(info.id)
            .await?
            .into_iter()
            .any(|v| v.version < info.schema_version && v.schema.fields() == made_for.fields());
        if !older {
            return Ok(None);
        }
        crate::evolve::rows_as(&info.spec.schema, batch).map(Some)
    }

    /// Appends staged rows of any number of streams as one append: every
    /// row becomes visible in the same metadata commit, or none does (a
    /// stream dropped in between fails them all). Resolves once durable,
    /// with one acknowledgement per staged append.
    pub async fn append_staged(&self, staged: Vec<StagedAppend>) -> Result<Vec<AppendAck>> {
        self.append_staged_as(staged, None).await
    }

    /// [`Log::append_staged`] by an idempotent producer: each stream of the
    /// group records `producer`'s sequence and progress in the same commit
    /// (so a writer of several streams resumes from
    /// [`crate::ChunkStore::producer_progress`] of any of them), and an
    /// older epoch or an already committed sequence on any of them refuses
    /// the whole group.
    pub async fn append_staged_as(
        &self,
        staged: Vec<StagedAppend>,
        producer: Option<ProducerSeq>,
    ) -> Result<Vec<AppendAck>> {
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        let submitted = self
            .writer
            .submit_group(
                staged.into_iter().map(|s| (s.info, s.parts)).collect(),
                None,
                producer,
            )
            .await?;
        let mut acks = Vec::with_capacity(submitted.len());
        for s in submitted {
            acks.push(s.durable().await?);
        }
        Ok(acks)
    }

    pub(crate) fn writer(&self) -> &Writer {
        &self.writer
    }

    pub(crate) fn check_partition(info: &StreamInfo, partition: u32) -> Result<()> {
        if partition >= info.spec.partitions {
            return Err(LogError::PartitionOutOfRange {
                stream: info.name().to_string(),
                partition,
                partitions: info.spec.partitions,
            });
        }
        Ok(())
    }

    /// The consumer groups of this agent (membership and assignment).
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// Tunables of retention, compaction and garbage collection.
    pub fn maintenance_config(&self) -> &MaintenanceConfig {
        &self.maintenance
    }

    /// Now, by the log's clock (µs since the epoch).
    pub fn now_micros(&self) -> Micros {
        self.clock.now_micros()
    }

    /// The log's clock, for the layers above that need wall-clock time.
    pub fn clock(&self) -> &ClockRef {
        &self.clock
    }

    pub(crate) fn zstd_level(&self) -> i32 {
        self.zstd_level
    }

    /// This process's registration as an agent.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// Every registered agent and what its heartbeat says of it now.
    pub async fn agents(&self) -> Result<Vec<(AgentRecord, AgentState)>> {
        let now = self.clock.now_micros();
        let timeout = self.agent.timeout();
        let mut agents = self.meta.agents().await?;
        // Just started: this agent's first heartbeat may not be recorded yet.
        let me = self.agent.record();
        if !agents.iter().any(|a| a.id == me.id) {
            agents.push(me);
        }
        Ok(agents
            .into_iter()
            .map(|a| {
                let state = AgentState::of(&a, now, timeout);
                (a, state)
            })
            .collect())
    }

    /// Stops taking appends, flushes what is buffered, and marks this agent
    /// stopped.
    pub async fn shutdown(&self) {
        self.writer.shutdown().await;
        self.heartbeat.abort();
        if let Err(e) = self.agent.stop().await {
            tracing::warn!(error = %e, "cannot record this agent's stop");
        }
    }
}

/// Checks a batch against the stream's declared schema and returns it with
/// exactly that schema (names, types, nullability).
fn conform(info: &StreamInfo, batch: RecordBatch) -> Result<RecordBatch> {
    let want = &info.spec.schema;
    let got = batch.schema();
    let mismatch = |detail: String| LogError::SchemaMismatch {
        stream: info.name().to_string(),
        detail,
    };
    if got.fields().len() != want.fields().len() {
        return Err(mismatch(format!(
            "expected {} columns ({}), got {} ({})",
            want.fields().len(),
            names(want),
            got.fields().len(),
            names(&got)
        )));
    }
    for (w, g) in want.fields().iter().zip(got.fields()) {
        if w.name() != g.name() {
            return Err(mismatch(format!(
                "expected column \"{}\", got \"{}\"",
                w.name(),
                g.name()
            )));
        }
        if w.data_type() != g.data_type() {
            return Err(mismatch(format!(
                "column \"{}\" has type {}, expected {}",
                g.name(),
                g.data_type(),
                w.data_type()
            )));
        }
    }
    if Arc::ptr_eq(want, &got) {
        return Ok(batch);
    }
    RecordBatch::try_new(want.clone(), batch.columns().to_vec())
        .map_err(|e| mismatch(e.to_string()))
}

fn names(s: &arrow::datatypes::Schema) -> String {
    s.fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An embedded data directory: objects under `objects/`, metadata in
/// `metadata.db`, and a lock that keeps a second process out.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates (if needed) and locks a data directory.
    pub fn open(path: &Path) -> Result<DataDir> {
        std::fs::create_dir_all(path)?;
        let lock = File::create(path.join("LOCK"))?;
        lock.try_lock().map_err(|_| LogError::DataDirLocked {
            path: path.display().to_string(),
        })?;
        Ok(DataDir {
            path: path.canonicalize()?,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Default object store location: `<dir>/objects`.
    pub fn objects(&self) -> PathBuf {
        self.path.join("objects")
    }

    /// Default metadata database: `<dir>/metadata.db`.
    pub fn metadata_db(&self) -> PathBuf {
        self.path.join("metadata.db")
    }

    /// Opens a log with the embedded defaults of this directory: local
    /// objects and SQLite metadata.
    pub async fn open_log(&self) -> Result<Log> {
        let store = Store::open_local(&self.objects())?;
        let meta = Arc::new(SqliteMetadata::open(&self.metadata_db()).await?);
        let config = LogConfig {
            sole_agent: true,
            ..LogConfig::for_store(&store)
        };
        Ok(Log::open(store, meta, config, Arc::new(SystemClock)))
    }
}

/// The positions of `columns` in a stream, for partitioning an append.
fn key_indices(info: &StreamInfo, columns: &[String]) -> Result<Vec<usize>> {
    columns
        .iter()
        .map(|c| {
            let i = info.spec.schema.index_of(c).map_err(|_| {
                LogError::InvalidArgument(format!(
                    "stream \"{}\" has no column \"{c}\" to partition by",
                    info.name()
                ))
            })?;
            let t = info.spec.schema.field(i).data_type();
            if !partitioner::is_hashable(t) {
                return Err(LogError::InvalidArgument(format!(
                    "column \"{c}\" of type {t} cannot be a partitioning key"
                )));
            }
            Ok(i)
        })
        .collect()
}
