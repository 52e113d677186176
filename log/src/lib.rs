//! The StreamHouse log: partitioned streams whose rows live as Arrow IPC
//! chunks (zstd) in object storage, with order and ownership in a metadata
//! store.
//!
//! - Write path ([`writer`]): appends are buffered and flushed by size or
//!   interval; one flush is one create-only PUT, however many streams and
//!   partitions it holds, followed by one metadata transaction that assigns
//!   offsets. An append resolves only after both.
//! - Read path ([`reader`]): the chunk index picks chunks by offset or time,
//!   ranged GETs fetch them (or the [`cache`] has them), and the system
//!   columns `_partition`, `_offset`, `_timestamp` are added.
//! - [`Log`] is the API other crates call. No SQL and no DataFusion here.

pub mod agent;
pub mod backup;
pub mod cache;
pub mod chunk;
pub mod clock;
pub mod config;
pub mod consume;
pub mod definitions;
pub mod error;
pub mod evolve;
pub mod groups;
mod log;
pub mod maintenance;
pub mod manifest;
pub mod metadata;
pub mod metrics;
pub mod partitioner;
pub mod path;
pub mod reader;
pub mod recover;
pub mod staged;
pub mod store;
pub mod stream;
pub mod tail;
pub mod transactional;
pub mod writer;

pub use agent::{Agent, AgentState};
pub use clock::{Clock, ClockRef, ManualClock, Micros, Stopwatch, SystemClock, monotonic};
pub use config::{LogConfig, MaintenanceConfig};
pub use consume::GroupLag;
pub use error::{ErrorKind, LogError, Result};
pub use evolve::SchemaChange;
pub use log::{AppendOptions, DataDir, Log};
pub use maintenance::MaintenanceReport;
pub use metadata::postgres::PostgresMetadata;
pub use metadata::sqlite::SqliteMetadata;
pub use metadata::{
    AckPart, AgentRecord, AgentStore, Change, ChunkStore, ConnectorRecord, ConnectorStore,
    GrantRecord, GroupOffsets, GroupStore, MetadataStore, PartitionStats, ProducerSeq,
    RegisteredSchema, RegistrySettings, RegistryStore, RoleRecord, RoleStore, StreamStore,
    SubjectVersion, TimeFilter, TxnCommit, ViewCheckpoint, ViewLease, ViewRecord, ViewStore,
};
pub use reader::BatchStream;
pub use staged::StagedAppend;
pub use store::{Store, StoreKind};
pub use stream::{
    CHANGELOG_PREFIX, RESERVED_PREFIX, SchemaVersion, StreamId, StreamInfo, StreamKind, StreamSpec,
    TABLE_DELETED_COLUMN, TABLE_PREFIX, table_log_name,
};
pub use transactional::{CommittedAppend, GroupCommit};
pub use writer::{AppendAck, FlushConfig, Submitted};
