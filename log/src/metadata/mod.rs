//! The metadata store: order and ownership of the log.
//!
//! Object storage holds the bytes; this store holds which bytes exist and in
//! what order. Its one critical operation is [`ChunkStore::commit_flush`]:
//! a single transaction that assigns offsets to every chunk of a flushed
//! object, records the chunks, advances idempotent-producer state and
//! writes the consumer-group offsets of the producer transactions it
//! commits (after checking their epochs). Either
//! all of a flush becomes visible or none of it does, and offsets are dense
//! because they are read and bumped inside that transaction.
//!
//! The operations come by topic — [`StreamStore`], [`ChunkStore`],
//! [`GroupStore`], [`ViewStore`], [`ConnectorStore`], [`AgentStore`], [`RoleStore`],
//! [`RegistryStore`], [`SharedStagingStore`] — and
//! [`MetadataStore`] is
//! all of them. Two stores with the same schema: SQLite (embedded, the
//! default; one process) and PostgreSQL (clusters: several agents share
//! it, and it tells each agent what the others committed). Each topic's
//! operations are written once (`queries`, a file per topic) over a
//! `sql::Backend`, the part where the two differ: how to reach the
//! database, locks, announcements and the flush commit's statements. The
//! decisions of a flush commit are shared too (`commit`).

mod commit;
pub mod postgres;
mod queries;
mod rows;
mod sql;
pub mod sqlite;
mod staging;

pub(crate) use commit::{ended_message, fenced_message};
pub use staging::{SeqRun, SharedRow, SharedStaged, SharedStagingStore, StagedOffsets};

use std::collections::BTreeMap;

use std::ops::Range;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::chunk::TimeBounds;
use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::groups::classic::{ClassicGroup, ClassicOp, ClassicReply};
use crate::groups::rules::{CommitCheck, GroupOp, StoredGroup};
use crate::stream::{SchemaVersion, StreamId, StreamInfo, StreamSpec};

/// A chunk as indexed: where its bytes are and which offsets they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    pub stream_id: StreamId,
    pub partition: u32,
    pub base_offset: u64,
    /// Exclusive.
    pub end_offset: u64,
    pub object: String,
    pub byte_range: Range<u64>,
    pub event_time: TimeBounds,
    pub append_time: TimeBounds,
    /// The version of the stream's schema the chunk was written with.
    pub schema_version: u32,
    /// `Some(n)`: the chunk holds `n` rows at some of its offsets, listed
    /// in its last column (a table's log compacted by key; see
    /// [`crate::stream::sparse_chunk_schema`]). `None`: one row per offset.
    pub sparse_rows: Option<u64>,
}

impl ChunkRecord {
    /// Rows in the chunk.
    pub fn rows(&self) -> u64 {
        self.sparse_rows
            .unwrap_or(self.end_offset - self.base_offset)
    }
}

/// A chunk of a flush, before offsets are assigned.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub stream_id: StreamId,
    pub partition: u32,
    pub byte_range: Range<u64>,
    pub rows: u64,
    pub event_time: TimeBounds,
    pub append_time: TimeBounds,
    /// The version of the stream's schema the chunk is written with.
    pub schema_version: u32,
}

/// An idempotent producer's identity and the sequence number of one append.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProducerSeq {
    pub producer_id: String,
    pub sequence: u64,
    /// Opaque progress recorded with the append, in the same transaction
    /// (a dataflow's input offsets; see [`ChunkStore::producer_progress`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The producer's epoch: refused once the producer has been fenced to a
    /// newer one ([`ChunkStore::fence_producer`]). None: not fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The append's first sequence, when it holds a run of them ending at
    /// `sequence` (a Kafka batch): it must directly follow the producer's
    /// last committed sequence (or be 0 for a new producer), else it is
    /// refused as out of order. None: any greater sequence follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
}

/// A transactional producer's commit: who commits under which epoch, and
/// the consumer-group offsets committed with its appends. Refused unless the
/// epoch is still the producer's current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnCommit {
    pub transactional_id: String,
    pub epoch: u64,
    pub offsets: Vec<GroupOffsets>,
    /// The transaction number (within the epoch) whose shared rows
    /// ([`SharedStagingStore`]) the commit takes: refused unless that is
    /// still the producer's open transaction, and it ends it. `None`: the
    /// commit has no shared rows.
    pub shared: Option<u64>,
    /// (stream, partition, next sequence) after the producer sequences
    /// the commit's batches carry: a batch of an earlier run staged late
    /// through the shared staging is then a duplicate (with `shared`).
    pub sequences: Vec<(StreamId, u32, u64)>,
}

/// A consumer group's next offsets for some partitions of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffsets {
    pub group: String,
    pub stream_id: StreamId,
    /// (partition, next offset).
    pub offsets: Vec<(u32, u64)>,
}

/// Where one append's rows sit inside a flush's chunks.
#[derive(Debug, Clone)]
pub struct NewAppend {
    pub stream_id: StreamId,
    pub producer: Option<ProducerSeq>,
    /// The transaction it commits with (an index into
    /// [`FlushCommit::transactions`]).
    pub transaction: Option<usize>,
    /// (index into [`FlushCommit::chunks`], first row in that chunk, rows).
    pub slices: Vec<(usize, u64, u64)>,
}

/// Everything one flush commits.
#[derive(Debug, Clone)]
pub struct FlushCommit {
    pub object: String,
    pub object_size: u64,
    pub created_at: Micros,
    pub chunks: Vec<NewChunk>,
    pub appends: Vec<NewAppend>,
    /// Producer transactions committing with their appends.
    pub transactions: Vec<TxnCommit>,
}

/// The offsets one append received in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckPart {
    pub partition: u32,
    pub base_offset: u64,
    pub rows: u64,
}

/// Why an append of a flush cannot be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Its stream was dropped while the append was buffered.
    StreamGone,
    /// Its producer sequence is already committed. `previous` holds that
    /// commit's offsets when the sequence is the producer's latest.
    Duplicate { previous: Option<Vec<AckPart>> },
    /// Its producer epoch is older than the one the producer is fenced to
    /// (another agent has taken the producer over).
    Fenced { epoch: u64, current: u64 },
    /// Its first sequence does not follow its producer's last one.
    OutOfOrder { expected: u64, got: u64 },
    /// Its transaction's epoch is not its transactional producer's current
    /// one (`None`: the producer was never started).
    TransactionFenced {
        transactional_id: String,
        epoch: u64,
        current: Option<u64>,
    },
    /// The transaction whose shared rows it commits has ended meanwhile
    /// (committed or aborted by another call).
    TransactionEnded { transactional_id: String },
}

/// Result of [`ChunkStore::commit_flush`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Committed; the base offset of each chunk, in order.
    Committed { chunk_base_offsets: Vec<u64> },
    /// Nothing was committed: these appends (by index) cannot be. The caller
    /// settles them and commits the rest in a new flush.
    Rejected { rejections: Vec<(usize, Rejection)> },
}

/// A materialized view as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewRecord {
    pub name: String,
    /// This incarnation's id (names its state objects).
    pub dataflow: String,
    pub definition: String,
    /// The schema version of each stream the view reads (by stream id), as
    /// when it was made: what its plan reads through. Empty for views made
    /// before streams had versions.
    pub input_versions: std::collections::BTreeMap<crate::stream::StreamId, u32>,
    pub checkpoint: Option<ViewCheckpoint>,
    /// Who maintains it, under which epoch, until when.
    pub lease: ViewLease,
}

/// A view's lease: the agent maintaining the view, the epoch of that
/// ownership (bumped by every acquisition, so a superseded owner can be
/// told apart), and when the lease expires unless renewed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewLease {
    pub owner: Option<String>,
    pub epoch: u64,
    pub until: Option<Micros>,
}

/// What one partition holds (for system tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    pub partition: u32,
    /// The next offset (high watermark).
    pub next_offset: u64,
    /// The first offset still held (none: no chunk, e.g. all expired).
    pub first_offset: Option<u64>,
    pub rows: u64,
    /// Encoded bytes of its chunks.
    pub bytes: u64,
    pub chunks: u64,
    /// When its newest row was appended (µs).
    pub last_append: Option<i64>,
}

/// A view's checkpoint: what it has read, and where its state is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewCheckpoint {
    pub number: u64,
    /// JSON: `{"<stream id>": [next offset per partition]}`.
    pub input_offsets: String,
    /// Object key of the state snapshot's manifest.
    pub state_key: String,
}

/// An agent (a server process) as registered in the metadata store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Unique per process start.
    pub id: String,
    /// Where it listens, by door ("pgwire", "flight", "http").
    pub addresses: BTreeMap<String, String>,
    pub version: String,
    pub started_at: Micros,
    /// Its latest heartbeat.
    pub heartbeat_at: Micros,
    /// Set when it stopped cleanly.
    pub stopped_at: Option<Micros>,
}

/// A role (a user when it may log in), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    pub name: String,
    /// Passes every privilege check.
    pub superuser: bool,
    /// May open sessions (a user); a role without it only holds privileges.
    pub login: bool,
    /// The password's SCRAM-SHA-256 verifier, in PostgreSQL's form
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`);
    /// none: no password, so no password login.
    pub verifier: Option<String>,
    pub created_at: Micros,
}

/// A privilege a role holds on an object, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrantRecord {
    /// `table` (a stream or a view), `schema` or `group`.
    pub object_kind: String,
    /// The object's name; for groups, `*` stands for every group.
    pub object_name: String,
    /// The role that holds it (`public`: every role).
    pub grantee: String,
    /// `SELECT`, `INSERT`, `CREATE`, `DROP`, `CONSUME`, or `OWNER` for the
    /// role that created the object.
    pub privilege: String,
    /// Who granted it.
    pub grantor: String,
}

/// A change committed by some agent, as the metadata store announces it to
/// every agent (see [`MetadataStore::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Partitions' new ends (next offsets) after a commit.
    Ends(Vec<(StreamId, u32, u64)>),
    /// A stream was dropped.
    StreamDropped(StreamId),
    /// A stream's schema changed (a new version).
    StreamChanged(StreamId),
    /// Roles, their memberships or privileges changed.
    Roles,
    /// Announcements may have been missed (the listening connection was
    /// lost): whoever caches state should re-read it.
    Resync,
}

/// Which chunks a time-range read wants. Bounds are half-open, in µs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeFilter {
    pub event_time: Option<Range<Micros>>,
    pub append_time: Option<Range<Micros>>,
}

/// Streams and their partitions.
#[async_trait]
pub trait StreamStore: Send + Sync {
    /// Creates a stream and its partitions (next offset 0).
    async fn create_stream(&self, spec: &StreamSpec, created_at: Micros) -> Result<StreamInfo>;

    /// Removes a stream, its partitions, chunk rows and producer state. The
    /// objects stay until garbage collection finds them unreferenced.
    async fn drop_stream(&self, name: &str) -> Result<StreamInfo>;

    /// A stream by name.
    async fn stream(&self, name: &str) -> Result<Option<StreamInfo>>;

    /// Every stream, by name.
    async fn streams(&self) -> Result<Vec<StreamInfo>>;

    /// Next offset of each partition of a stream (its high watermark).
    async fn partition_ends(&self, stream_id: StreamId) -> Result<Vec<u64>>;

    /// What each partition of a stream holds, by partition.
    async fn partition_stats(&self, stream_id: StreamId) -> Result<Vec<PartitionStats>>;

    /// What each partition of every stream holds, by stream id and
    /// partition: [`StreamStore::partition_stats`] of all in one query.
    async fn all_partition_stats(&self) -> Result<Vec<(StreamId, PartitionStats)>>;

    /// Every version of a stream's schema, oldest first.
    async fn schema_versions(&self, stream_id: StreamId) -> Result<Vec<SchemaVersion>>;

    /// Gives stream `name` its next schema version, `schema`, made by
    /// `change`, if its current version is still `expected` (another
    /// change in between: [`LogError::Conflict`]); announced to other
    /// agents.
    async fn evolve_stream(
        &self,
        name: &str,
        expected: u32,
        schema: &arrow::datatypes::Schema,
        change: &str,
        at: Micros,
    ) -> Result<StreamInfo>;

    /// Sets stream `name`'s `retention` and `archive_after` (`None`: none);
    /// announced to other agents.
    async fn set_stream_options(
        &self,
        name: &str,
        retention: Option<std::time::Duration>,
        archive_after: Option<std::time::Duration>,
    ) -> Result<StreamInfo>;
}

/// The chunk index, data objects and idempotent producers: what flushes commit and reads, upkeep and recovery look up.
#[async_trait]
pub trait ChunkStore: Send + Sync {
    /// Commits a flushed object in one transaction; see the module doc.
    async fn commit_flush(&self, commit: &FlushCommit) -> Result<CommitOutcome>;

    /// Chunks of a partition that hold any offset of `range`, by offset.
    async fn chunks_by_offset(
        &self,
        stream_id: StreamId,
        partition: u32,
        range: Range<u64>,
    ) -> Result<Vec<ChunkRecord>>;

    /// Chunks of a partition whose time bounds overlap the filter, by offset.
    async fn chunks_by_time(
        &self,
        stream_id: StreamId,
        partition: u32,
        filter: &TimeFilter,
    ) -> Result<Vec<ChunkRecord>>;

    /// Retention: deletes the chunk rows of a stream's partitions up to the
    /// first chunk holding a row appended at or after `before` (whole
    /// chunks, oldest first, so each partition keeps a contiguous tail);
    /// how many. Their objects become garbage for [`Self::orphaned_objects`].
    async fn expire_chunks(&self, stream_id: StreamId, before: Micros) -> Result<u64>;

    /// Garbage collection: notes at `now` the objects no chunk references,
    /// and returns those noted before `cutoff` (past the grace period).
    async fn orphaned_objects(&self, now: Micros, cutoff: Micros) -> Result<Vec<String>>;

    /// Forgets an object whose bytes were deleted (unless a chunk
    /// references it).
    async fn forget_object(&self, key: &str) -> Result<()>;

    /// Whether the index knows an object key (an object in the store it
    /// does not know is left over from a flush whose commit failed).
    async fn knows_object(&self, key: &str) -> Result<bool>;

    /// Compaction: in one transaction, replaces `old` (consecutive chunks of
    /// one partition) with `new`, held by the new object `object`; `false`
    /// (and nothing changed) when they are no longer indexed as given.
    async fn replace_chunks(
        &self,
        old: &[ChunkRecord],
        new: &ChunkRecord,
        object_size: u64,
        created_at: Micros,
    ) -> Result<bool>;

    /// Fences a producer on a stream to `epoch`: from now on its appends
    /// carrying an older epoch are refused ([`Rejection::Fenced`]).
    async fn fence_producer(
        &self,
        producer_id: &str,
        stream_id: StreamId,
        epoch: u64,
    ) -> Result<()>;

    /// Starts (or starts again) a transactional producer: bumps its epoch,
    /// which fences every older instance of it; the new epoch (1 for a new
    /// id).
    async fn init_transactional_producer(&self, transactional_id: &str, now: Micros)
    -> Result<u64>;

    /// Commits a transaction that has consumer-group offsets and no
    /// appends, in one transaction; `Fenced` unless its epoch is still the
    /// producer's current one.
    async fn commit_transaction_offsets(&self, txn: &TxnCommit, now: Micros) -> Result<()>;

    /// An idempotent producer's latest committed sequence on a stream and
    /// the progress recorded with it.
    async fn producer_progress(
        &self,
        producer_id: &str,
        stream_id: StreamId,
    ) -> Result<Option<(u64, Option<String>)>>;
}

/// Consumer groups: membership transactions and committed offsets.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Records a consumer group's next offsets for some partitions of a
    /// stream, in one transaction; with `check`, only if it holds in that
    /// transaction ([`crate::groups::rules::check_commit`]: the committing member
    /// owns those partitions, or the group has no live member). Past
    /// `deadline` (checked after the writes, before the transaction
    /// commits) nothing is written and the answer is `TimedOut`.
    async fn commit_group_offsets(
        &self,
        group: &str,
        stream_id: StreamId,
        offsets: &[(u32, u64)],
        committed_at: Micros,
        check: Option<&CommitCheck>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<()>;

    /// Applies a membership operation to a group in one transaction (see
    /// [`crate::groups::rules::apply`]) and returns its new state (`None`: no such
    /// group).
    async fn update_group(
        &self,
        group: &str,
        op: &GroupOp,
        now: Micros,
    ) -> Result<Option<StoredGroup>>;

    /// Every group with membership state, by name.
    async fn group_names(&self) -> Result<Vec<String>>;

    /// A group's committed next offsets for a stream, by partition.
    async fn group_offsets(&self, group: &str, stream_id: StreamId) -> Result<Vec<(u32, u64)>>;

    /// Every (group, stream) pair with committed offsets, by group.
    async fn groups(&self) -> Result<Vec<(String, StreamId)>>;

    /// Applies an operation of the classic join/sync protocol to a group
    /// in one transaction ([`crate::groups::classic::apply`]) and returns
    /// its answer. A commit the group accepts writes `offsets` (next
    /// offsets by stream and partition) in the same transaction, unless it
    /// is past `deadline` by then (`TimedOut`, nothing written).
    async fn update_classic_group(
        &self,
        group: &str,
        op: &ClassicOp,
        now: Micros,
        offsets: &[(StreamId, Vec<(u32, u64)>)],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<ClassicReply>;

    /// Every group of the classic protocol, by name.
    async fn classic_groups(&self) -> Result<Vec<(String, ClassicGroup)>>;
}

/// Materialized views: records, leases and checkpoints.
#[async_trait]
pub trait ViewStore: Send + Sync {
    /// Records a materialized view with its lease; `ViewExists` if the
    /// name is taken.
    async fn create_view(&self, view: &ViewRecord, created_at: Micros) -> Result<()>;

    /// Takes a view's lease for `agent` until `until` if it is free or
    /// expired at `now` (or whoever holds it, with `steal`: for a store no
    /// other process shares), bumping its epoch; the new epoch, or `None`
    /// when another agent holds it (or the view is gone).
    async fn acquire_view_lease(
        &self,
        name: &str,
        agent: &str,
        now: Micros,
        until: Micros,
        steal: bool,
    ) -> Result<Option<u64>>;

    /// Extends a lease `agent` holds in `epoch`; `false` when it no longer
    /// does (superseded, or the view is gone).
    async fn renew_view_lease(
        &self,
        name: &str,
        agent: &str,
        epoch: u64,
        until: Micros,
    ) -> Result<bool>;

    /// Gives up a lease `agent` holds in `epoch` (a clean stop), so another
    /// agent can take the view at once.
    async fn release_view_lease(&self, name: &str, agent: &str, epoch: u64) -> Result<()>;

    /// Removes a view; `false` if there was none.
    async fn drop_view(&self, name: &str) -> Result<bool>;

    /// Every view, by name, with its last checkpoint.
    async fn views(&self) -> Result<Vec<ViewRecord>>;

    /// Records a view's checkpoint: in one transaction, the input offsets
    /// its state reflects and the snapshot that holds that state. Refused
    /// (`Fenced`) unless `dataflow` is still the view's, `epoch` is still
    /// its lease's, and the number is newer than the recorded one.
    async fn commit_view_checkpoint(
        &self,
        name: &str,
        dataflow: &str,
        epoch: u64,
        checkpoint: &ViewCheckpoint,
        at: Micros,
    ) -> Result<()>;
}

/// A connector (a sink) as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorRecord {
    pub name: String,
    /// `sink`.
    pub kind: String,
    /// The statement that made it.
    pub definition: String,
    /// Who runs it, under which epoch, until when.
    pub lease: ViewLease,
}

/// Connectors: records and leases (with the semantics of views' leases).
#[async_trait]
pub trait ConnectorStore: Send + Sync {
    /// Records a connector; `ConnectorExists` if the name is taken.
    async fn create_connector(&self, c: &ConnectorRecord, created_at: Micros) -> Result<()>;

    /// Removes a connector; `false` if there was none.
    async fn drop_connector(&self, name: &str) -> Result<bool>;

    /// Every connector, by name.
    async fn connectors(&self) -> Result<Vec<ConnectorRecord>>;

    /// Takes a connector's lease for `agent` until `until` if it is free
    /// or expired at `now` (or whoever holds it, with `steal`), bumping its
    /// epoch; the new epoch, or `None`.
    async fn acquire_connector_lease(
        &self,
        name: &str,
        agent: &str,
        now: Micros,
        until: Micros,
        steal: bool,
    ) -> Result<Option<u64>>;

    /// Extends a lease `agent` holds in `epoch`; `false` when it no longer
    /// does.
    async fn renew_connector_lease(
        &self,
        name: &str,
        agent: &str,
        epoch: u64,
        until: Micros,
    ) -> Result<bool>;

    /// Gives up a lease `agent` holds in `epoch`.
    async fn release_connector_lease(&self, name: &str, agent: &str, epoch: u64) -> Result<()>;
}

/// The agents sharing the store.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Records an agent (inserted, or its row replaced: a heartbeat, a
    /// clean stop).
    async fn register_agent(&self, agent: &AgentRecord) -> Result<()>;

    /// Every registered agent, by start time.
    async fn agents(&self) -> Result<Vec<AgentRecord>>;

    /// Forgets agents whose last heartbeat is older than `before`.
    async fn forget_agents(&self, before: Micros) -> Result<()>;
}

/// Users and roles, shared by every agent of the store.
#[async_trait]
pub trait RoleStore: Send + Sync {
    /// Records a new role; [`crate::LogError::RoleExists`] if the name is
    /// taken.
    async fn create_role(&self, role: &RoleRecord) -> Result<()>;

    /// Replaces a role's attributes (superuser, login, verifier);
    /// [`crate::LogError::UnknownRole`] if there is no such role.
    async fn alter_role(&self, role: &RoleRecord) -> Result<()>;

    /// Forgets a role, the privileges granted to it and its memberships;
    /// whether there was one.
    async fn drop_role(&self, name: &str) -> Result<bool>;

    /// Role `name`, if there is one.
    async fn role(&self, name: &str) -> Result<Option<RoleRecord>>;

    /// Every role, by name.
    async fn roles(&self) -> Result<Vec<RoleRecord>>;

    /// Records privileges (those already held stay as they are).
    async fn grant(&self, grants: &[GrantRecord]) -> Result<()>;

    /// Takes privileges away (whoever granted them); how many were held.
    async fn revoke(&self, grants: &[GrantRecord]) -> Result<u64>;

    /// Forgets every privilege on an object (it was dropped).
    async fn forget_grants_on(&self, object_kind: &str, object_name: &str) -> Result<()>;

    /// Every privilege held, by object.
    async fn grants(&self) -> Result<Vec<GrantRecord>>;

    /// Makes `member` a member of `role`.
    async fn add_member(&self, role: &str, member: &str, grantor: &str) -> Result<()>;

    /// Ends `member`'s membership of `role`; whether it was one.
    async fn remove_member(&self, role: &str, member: &str) -> Result<bool>;

    /// Every membership, as (role, member).
    async fn members(&self) -> Result<Vec<(String, String)>>;
}

/// A schema of the Schema Registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Global and stable: the same schema always has this id.
    pub id: i64,
    /// `AVRO`, `JSON` or `PROTOBUF`.
    pub schema_type: String,
    /// As first registered.
    pub schema: String,
    /// JSON: `[{"name", "subject", "version"}]`.
    pub references: String,
}

/// One version of a Schema Registry subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub schema_id: i64,
    /// Soft-deleted: hidden unless asked for, its number not reused.
    pub deleted: bool,
}

/// Compatibility level and mode of a subject, or (subject `""`) of the
/// registry; `None` where not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    pub compatibility: Option<String>,
    pub mode: Option<String>,
}

/// The Schema Registry's records: schemas by id, subjects' versions and
/// settings. The rules (compatibility, what may be deleted) are the
/// registry's; this stores.
#[async_trait]
pub trait RegistryStore: Send + Sync {
    /// The id of the schema with `fingerprint`, stored first when no schema
    /// has it.
    async fn registry_schema_id(
        &self,
        fingerprint: &str,
        schema_type: &str,
        schema: &str,
        references: &str,
    ) -> Result<i64>;

    /// The id of the schema with `fingerprint`, if one has it.
    async fn registry_schema_with(&self, fingerprint: &str) -> Result<Option<i64>>;

    /// The schema with id `id`.
    async fn registry_schema(&self, id: i64) -> Result<Option<RegisteredSchema>>;

    /// The versions of `subject` (soft-deleted ones too), by version.
    async fn subject_versions(&self, subject: &str) -> Result<Vec<SubjectVersion>>;

    /// Every subject's versions (soft-deleted ones too), by subject and
    /// version.
    async fn all_subject_versions(&self) -> Result<Vec<SubjectVersion>>;

    /// The subject versions that are schema `id`.
    async fn versions_of_schema(&self, id: i64) -> Result<Vec<SubjectVersion>>;

    /// Adds schema `schema_id` as version `version` of `subject`; another
    /// writer took that version first: [`LogError::Conflict`].
    async fn add_subject_version(&self, subject: &str, version: u32, schema_id: i64) -> Result<()>;

    /// Marks versions of `subject` soft-deleted.
    async fn soft_delete_versions(&self, subject: &str, versions: &[u32]) -> Result<()>;

    /// Removes versions of `subject`.
    async fn delete_versions(&self, subject: &str, versions: &[u32]) -> Result<()>;

    /// The settings of `subject` (`""`: the registry's).
    async fn registry_settings(&self, subject: &str) -> Result<RegistrySettings>;

    /// Replaces the settings of `subject` (`""`: the registry's); all
    /// `None` removes them.
    async fn put_registry_settings(&self, subject: &str, settings: &RegistrySettings)
    -> Result<()>;
}

/// The metadata store: every topic's operations, and how the store is
/// shared and closed.
#[async_trait]
pub trait MetadataStore:
    StreamStore
    + ChunkStore
    + GroupStore
    + ViewStore
    + ConnectorStore
    + AgentStore
    + RoleStore
    + RegistryStore
    + SharedStagingStore
    + std::fmt::Debug
{
    /// Closes connections, waiting for those in use.
    async fn close(&self) {}

    /// Writes a consistent copy of the committed state to `file` (which
    /// must not exist) while the store stays open for reads and writes.
    /// The embedded store can; a PostgreSQL store is backed up by
    /// PostgreSQL's own tools (`pg_dump`, continuous archiving).
    async fn snapshot_into(&self, file: &std::path::Path) -> Result<()> {
        let _ = file;
        Err(LogError::Unsupported(
            "a PostgreSQL metadata store is backed up with PostgreSQL's own tools \
             (pg_dump, continuous archiving)"
                .into(),
        ))
    }

    /// Whether other agents may share this store (a cluster).
    fn is_shared(&self) -> bool {
        false
    }

    /// Changes committed by any agent sharing this store, as they commit
    /// (`None`: the store is private to this process, so nothing else
    /// commits to it).
    async fn changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Change>>> {
        Ok(None)
    }
}
