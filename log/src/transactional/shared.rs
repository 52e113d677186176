//! A transaction's rows staged on an agent other than the one its producer
//! started on: a Kafka client sends each partition's records to that
//! partition's leader, and its offsets to its group's coordinator, which
//! need not be the agent that holds the producer.
//!
//! Such rows are written to the object store (one object per partition,
//! an Arrow IPC stream like a chunk's) and then recorded in the metadata
//! store under the producer's epoch and open transaction number, with the
//! epoch and the partition's sequences checked in the same transaction
//! ([`crate::metadata::SharedStagingStore`]). The commit, on the
//! producer's own agent, reads them back and appends them with its own
//! staged rows; its flush's metadata transaction checks that the
//! transaction is still the open one, forgets the rows and moves the
//! transaction number on. An abort moves it on too, so rows of an ended
//! transaction (a staging held up past its client's patience) never join
//! the next one. Objects no longer recorded are deleted by maintenance.

use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::{GroupCommit, MAX_STAGED_BYTES, check_id};
use crate::error::{LogError, Result};
use crate::log::{AppendOptions, Log};
use crate::metadata::{GroupOffsets, SeqRun, SharedRow, SharedStaged};
use crate::staged::StagedAppend;

/// Objects read back at once by a commit.
const FETCHES: usize = 8;

/// A transaction's shared rows, read back for its commit.
pub(super) struct SharedTake {
    /// The transaction number they belong to.
    pub txn_no: u64,
    pub staged: Vec<StagedAppend>,
    pub offsets: Vec<GroupOffsets>,
    pub objects: Vec<String>,
}

impl Log {
    /// The current epoch of transactional producer `id` (`None`: never
    /// started), as the metadata store has it.
    pub async fn transactional_epoch(&self, id: &str) -> Result<Option<u64>> {
        check_id(id)?;
        self.metadata().transactional_epoch(id).await
    }

    /// Stages rows for the open transaction of producer `id` in `epoch` on
    /// an agent that did not start it (see the module doc). With `seq`
    /// (the batch's run of sequences; the rows must then go to one
    /// partition), a retry already staged is a `Duplicate` and a gap is
    /// `OutOfOrderSequence`.
    pub async fn stage_shared(
        &self,
        id: &str,
        epoch: u64,
        stream: &str,
        batches: Vec<RecordBatch>,
        options: &AppendOptions,
        seq: Option<SeqRun>,
    ) -> Result<SharedStaged> {
        check_id(id)?;
        let Some(staged) = self.stage(stream, batches, options).await? else {
            return Ok(SharedStaged::Staged);
        };
        if seq.is_some() && staged.parts.len() != 1 {
            return Err(LogError::InvalidArgument(
                "a batch with producer sequences goes to one partition".into(),
            ));
        }
        for (partition, batch) in &staged.parts {
            let encoded = crate::chunk::encode(
                &batch.schema(),
                std::slice::from_ref(batch),
                self.zstd_level,
            )?;
            let key = crate::path::new_staged_object();
            self.store().put_durable(&key, Bytes::from(encoded)).await?;
            let row = SharedRow {
                object: key.to_string(),
                stream_id: staged.info.id,
                stream_name: staged.info.name().to_string(),
                partition: *partition,
                bytes: batch.get_array_memory_size() as u64,
                offsets: None,
                staged_at: self.now_micros(),
                seq,
            };
            let recorded = self
                .metadata()
                .stage_shared(id, epoch, &row, seq, MAX_STAGED_BYTES as u64)
                .await;
            match recorded {
                Ok(SharedStaged::Staged) => {}
                other => {
                    self.forget_staged_objects(std::slice::from_ref(&row.object))
                        .await;
                    return other;
                }
            }
        }
        Ok(SharedStaged::Staged)
    }

    /// Stages group offsets for the open transaction of producer `id` in
    /// `epoch` on an agent that did not start it.
    pub async fn stage_shared_offsets(
        &self,
        id: &str,
        epoch: u64,
        offsets: &[GroupCommit],
    ) -> Result<()> {
        check_id(id)?;
        for g in offsets {
            if g.group.is_empty() {
                return Err(LogError::InvalidArgument(
                    "a consumer group needs a name".into(),
                ));
            }
            let info = self.checked_offsets(&g.stream, &g.offsets).await?;
            let row = SharedRow {
                // A name no object has: offsets are recorded in the row.
                object: format!("offsets/{}", crate::path::new_staged_object()),
                stream_id: info.id,
                stream_name: info.name().to_string(),
                partition: 0,
                bytes: 0,
                offsets: Some((g.group.clone(), g.offsets.clone())),
                staged_at: self.now_micros(),
                seq: None,
            };
            self.metadata()
                .stage_shared(id, epoch, &row, None, MAX_STAGED_BYTES as u64)
                .await?;
        }
        Ok(())
    }

    /// Aborts the shared rows of the open transaction of producer `id` in
    /// `epoch`: they are forgotten, and the transaction number moves on.
    pub async fn abort_shared(&self, id: &str, epoch: u64) -> Result<()> {
        check_id(id)?;
        self.metadata().end_shared(id, epoch).await
    }

    /// The open transaction's shared rows, read back: refused when one was
    /// staged longer ago than `timeout` (the transaction ran past it).
    pub(super) async fn take_shared(
        &self,
        id: &str,
        epoch: u64,
        timeout: Duration,
    ) -> Result<SharedTake> {
        let (txn_no, rows) = self.metadata().shared_staged(id, epoch).await?;
        let now = self.now_micros();
        if let Some(oldest) = rows.iter().map(|r| r.staged_at).min()
            && now.saturating_sub(oldest) > timeout.as_micros() as i64
        {
            return Err(LogError::TransactionAborted(format!(
                "the transaction of producer \"{id}\" was open longer than its timeout ({} ms) \
                 and was rolled back; abort it and begin again",
                timeout.as_millis()
            )));
        }
        let mut offsets = Vec::new();
        let mut objects = Vec::new();
        for r in &rows {
            match &r.offsets {
                Some((group, o)) => offsets.push(GroupOffsets {
                    group: group.clone(),
                    stream_id: r.stream_id,
                    offsets: o.clone(),
                }),
                None => objects.push(r.clone()),
            }
        }
        let reads: Vec<_> = objects.iter().map(|r| self.read_staged(r)).collect();
        let staged: Vec<Option<StagedAppend>> = futures::stream::iter(reads)
            .buffered(FETCHES)
            .try_collect()
            .await?;
        Ok(SharedTake {
            txn_no,
            staged: staged.into_iter().flatten().collect(),
            offsets,
            objects: objects.into_iter().map(|r| r.object).collect(),
        })
    }

    /// One staged object's rows, checked against their stream again (its
    /// columns may have changed since).
    async fn read_staged(&self, r: &SharedRow) -> Result<Option<StagedAppend>> {
        let bytes = self.store().get(&Path::from(r.object.as_str())).await?;
        let batches = crate::chunk::decode(&r.object, bytes, None)?;
        let options = AppendOptions {
            partition: Some(r.partition),
            ..AppendOptions::default()
        };
        let mut staged = self.stage(&r.stream_name, batches, &options).await?;
        if let Some(s) = &mut staged {
            s.seq = r.seq;
        }
        if let Some(s) = &staged
            && s.info.id != r.stream_id
        {
            return Err(LogError::TransactionAborted(format!(
                "stream \"{}\" was dropped while the transaction was open; abort it",
                r.stream_name
            )));
        }
        Ok(staged)
    }

    /// Deletes staged objects no longer recorded (what fails is left to
    /// maintenance).
    pub(super) async fn forget_staged_objects(&self, objects: &[String]) {
        let store = self.store().object_store().clone();
        for o in objects {
            if let Err(e) = store.delete(&Path::from(o.as_str())).await {
                tracing::debug!(object = %o, error = %e, "staged object left to maintenance");
            }
        }
    }
}
