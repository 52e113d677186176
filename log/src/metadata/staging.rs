//! What a transaction stages away from its producer's agent, as the
//! metadata store records it: the rows' objects, group offsets and runs of
//! sequences ([`SharedStagingStore`]; the statements are in
//! `queries/staging.rs`, the log's side in `transactional/shared.rs`).

use async_trait::async_trait;

use crate::clock::Micros;
use crate::error::Result;
use crate::stream::StreamId;

/// Rows (or group offsets) a transaction staged on an agent other than the
/// one its producer started on, recorded in the metadata store until the
/// transaction ends ([`SharedStagingStore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRow {
    /// The object holding the rows, or a unique name for group offsets.
    pub object: String,
    pub stream_id: StreamId,
    pub stream_name: String,
    pub partition: u32,
    /// The rows' size in memory, as Arrow holds them.
    pub bytes: u64,
    /// Group offsets instead of rows.
    pub offsets: Option<StagedOffsets>,
    /// When it was staged, by the staging agent's clock.
    pub staged_at: Micros,
    /// The batch's run of producer sequences, if it has one.
    pub seq: Option<SeqRun>,
}

/// A consumer group and its next offsets by partition, committed with a
/// transaction.
pub type StagedOffsets = (String, Vec<(u32, u64)>);

/// A batch's run of producer sequences in one partition (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRun {
    pub first: u64,
    pub last: u64,
}

/// What staging a shared row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedStaged {
    Staged,
    /// Its sequences were staged before (a retry): nothing recorded.
    Duplicate,
}

/// Transactional rows staged away from their producer's agent: a Kafka
/// client sends each partition's records to that partition's leader, which
/// need not be the agent its transactional producer started on. The rows
/// are an object in the store (written before it is recorded here); the
/// commit on the producer's agent reads them back and ends the transaction
/// in the flush's own metadata transaction ([`TxnCommit::shared`]).
#[async_trait]
pub trait SharedStagingStore: Send + Sync {
    /// Records `row` for the open transaction of producer `id` in `epoch`,
    /// in one transaction: `Fenced` or `UnknownTransactionalProducer`
    /// unless `epoch` is its current one; with `seq`, a run that directly
    /// follows the partition's last staged one (or the first this epoch
    /// stages there) is recorded, one already staged is a `Duplicate`, one
    /// after a gap `OutOfOrderSequence`; `LimitExceeded` past `max_bytes`
    /// staged in the transaction.
    async fn stage_shared(
        &self,
        id: &str,
        epoch: u64,
        row: &SharedRow,
        seq: Option<SeqRun>,
        max_bytes: u64,
    ) -> Result<SharedStaged>;

    /// The current epoch of transactional producer `id` (`None`: never
    /// started).
    async fn transactional_epoch(&self, id: &str) -> Result<Option<u64>>;

    /// The open transaction's number and shared rows, in the order of
    /// their objects' keys (which one agent makes in increasing order, and
    /// one partition's rows come from one agent); empty when `epoch` is
    /// not the current one.
    async fn shared_staged(&self, id: &str, epoch: u64) -> Result<(u64, Vec<SharedRow>)>;

    /// Ends the open transaction of producer `id` in `epoch` without
    /// committing: its shared rows are forgotten (an abort). Nothing when
    /// `epoch` is not the current one.
    async fn end_shared(&self, id: &str, epoch: u64) -> Result<()>;

    /// Whether a staged object is still recorded (an object in the store
    /// that is not, and old enough, is deleted by maintenance).
    async fn knows_staged(&self, object: &str) -> Result<bool>;
}
