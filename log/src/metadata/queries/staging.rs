//! Transactional rows staged away from their producer's agent, for either
//! store: recording them (with the producer's epoch and sequences checked
//! in the same transaction), listing an open transaction's rows, and
//! ending a transaction that aborts. A commit ends its transaction inside
//! the flush (`Backend::end_shared_transactions`).

use async_trait::async_trait;

use super::super::rows::MetaRow;
use super::super::sql::{Backend, Sql, Statement};
use super::super::{
    SeqRun, SharedRow, SharedStaged, SharedStagingStore, StagedOffsets, fenced_message,
};
use crate::error::{LogError, Result};

fn encode_offsets(offsets: &Option<StagedOffsets>) -> Result<Option<String>> {
    offsets
        .as_ref()
        .map(|o| {
            serde_json::to_string(o)
                .map_err(|e| LogError::Internal(format!("staged group offsets: {e}")))
        })
        .transpose()
}

fn decode_offsets(text: Option<String>) -> Result<Option<StagedOffsets>> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| LogError::Internal(format!("stored staged group offsets: {e}")))
    })
    .transpose()
}

#[async_trait]
impl<B: Backend> SharedStagingStore for B {
    async fn stage_shared(
        &self,
        id: &str,
        epoch: u64,
        row: &SharedRow,
        seq: Option<SeqRun>,
        max_bytes: u64,
    ) -> Result<SharedStaged> {
        let mut w = self.writer().await?;
        // The producer's row stays locked: a commit, an abort or a new
        // epoch waits for this transaction.
        let current = B::transactional_epochs(&mut w, std::slice::from_ref(&id.to_string()))
            .await?
            .remove(id);
        let state = match current {
            Some(c) if c.epoch == epoch => c,
            Some(c) if c.epoch > epoch => {
                return Err(LogError::Fenced(fenced_message(id, epoch, Some(c.epoch))));
            }
            _ => return Err(LogError::UnknownTransactionalProducer(id.to_string())),
        };
        if let Some(run) = seq {
            if run.last < run.first {
                return Err(LogError::InvalidArgument(format!(
                    "a batch's last sequence {} is before its first {}",
                    run.last, run.first
                )));
            }
            let stored = w
                .fetch_optional(
                    Statement::new(
                        "SELECT epoch, next_seq FROM shared_sequences \
                         WHERE transactional_id = $1 AND stream_id = $2 AND partition_no = $3",
                    )
                    .text(id)
                    .int(row.stream_id)
                    .int(i64::from(row.partition)),
                )
                .await?;
            // Sequences of an older epoch do not count.
            let next = match stored {
                Some(r) if r.int("epoch")? as u64 == epoch => Some(r.int("next_seq")? as u64),
                _ => None,
            };
            // Runs between may have gone to the producer's own agent (the
            // partition's leader moved): a gap is not an error, an overlap
            // is.
            match next {
                Some(next) if run.last < next => return Ok(SharedStaged::Duplicate),
                Some(next) if run.first < next => {
                    return Err(LogError::OutOfOrderSequence(format!(
                        "transactional producer \"{id}\": sequence {} on partition {} of \
                         stream \"{}\" is out of order: expected {next}",
                        run.first, row.partition, row.stream_name
                    )));
                }
                _ => {}
            }
            w.execute(
                Statement::new(
                    "INSERT INTO shared_sequences \
                     (transactional_id, epoch, stream_id, partition_no, next_seq) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (transactional_id, stream_id, partition_no) DO UPDATE \
                     SET epoch = excluded.epoch, next_seq = excluded.next_seq",
                )
                .text(id)
                .uint(epoch)
                .int(row.stream_id)
                .int(i64::from(row.partition))
                .uint(run.last.saturating_add(1)),
            )
            .await?;
        }
        let staged = w
            .fetch_optional(
                Statement::new(
                    "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS bytes FROM shared_staged \
                     WHERE transactional_id = $1 AND epoch = $2 AND txn_no = $3",
                )
                .text(id)
                .uint(epoch)
                .uint(state.txn_no),
            )
            .await?
            .map(|r| r.int("bytes"))
            .transpose()?
            .unwrap_or(0) as u64;
        if staged.saturating_add(row.bytes) > max_bytes {
            return Err(LogError::LimitExceeded(format!(
                "the transaction of producer \"{id}\" staged more than {} MiB; abort it and \
                 commit smaller transactions",
                max_bytes >> 20
            )));
        }
        w.execute(
            Statement::new(
                "INSERT INTO shared_staged (transactional_id, epoch, txn_no, object, stream_id, \
                 stream_name, partition_no, bytes, offsets, staged_at_us, first_seq, last_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .text(id)
            .uint(epoch)
            .uint(state.txn_no)
            .text(&row.object)
            .int(row.stream_id)
            .text(&row.stream_name)
            .int(i64::from(row.partition))
            .uint(row.bytes)
            .opt_text(encode_offsets(&row.offsets)?)
            .int(row.staged_at)
            .opt_int(row.seq.map(|s| s.first as i64))
            .opt_int(row.seq.map(|s| s.last as i64)),
        )
        .await?;
        B::commit(w).await?;
        Ok(SharedStaged::Staged)
    }

    async fn shared_staged(&self, id: &str, epoch: u64) -> Result<(u64, Vec<SharedRow>)> {
        let mut r = self.reader().await?;
        let Some(producer) = r
            .fetch_optional(
                Statement::new(
                    "SELECT epoch, txn_no FROM transactional_producers \
                     WHERE transactional_id = $1",
                )
                .text(id),
            )
            .await?
        else {
            return Ok((0, Vec::new()));
        };
        let txn_no = producer.int("txn_no")? as u64;
        if producer.int("epoch")? as u64 != epoch {
            return Ok((txn_no, Vec::new()));
        }
        let rows = r
            .fetch_all(
                Statement::new(
                    "SELECT object, stream_id, stream_name, partition_no, bytes, offsets, \
                     staged_at_us, first_seq, last_seq \
                     FROM shared_staged \
                     WHERE transactional_id = $1 AND epoch = $2 AND txn_no = $3 \
                     ORDER BY object",
                )
                .text(id)
                .uint(epoch)
                .uint(txn_no),
            )
            .await?;
        let rows = rows
            .iter()
            .map(|r| {
                Ok(SharedRow {
                    object: r.text("object")?,
                    stream_id: r.int("stream_id")?,
                    stream_name: r.text("stream_name")?,
                    partition: r.int("partition_no")? as u32,
                    bytes: r.int("bytes")? as u64,
                    offsets: decode_offsets(r.opt_text("offsets")?)?,
                    staged_at: r.int("staged_at_us")?,
                    seq: match (r.opt_int("first_seq")?, r.opt_int("last_seq")?) {
                        (Some(first), Some(last)) => Some(SeqRun {
                            first: first as u64,
                            last: last as u64,
                        }),
                        _ => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((txn_no, rows))
    }

    async fn transactional_epoch(&self, id: &str) -> Result<Option<u64>> {
        let row = self
            .reader()
            .await?
            .fetch_optional(
                Statement::new(
                    "SELECT epoch FROM transactional_producers WHERE transactional_id = $1",
                )
                .text(id),
            )
            .await?;
        row.map(|r| Ok(r.int("epoch")? as u64)).transpose()
    }

    async fn end_shared(&self, id: &str, epoch: u64) -> Result<()> {
        let mut w = self.writer().await?;
        let current = B::transactional_epochs(&mut w, std::slice::from_ref(&id.to_string()))
            .await?
            .remove(id);
        let Some(state) = current.filter(|c| c.epoch == epoch) else {
            return Ok(());
        };
        w.execute(
            Statement::new(
                "DELETE FROM shared_staged \
                 WHERE transactional_id = $1 AND epoch = $2 AND txn_no = $3",
            )
            .text(id)
            .uint(epoch)
            .uint(state.txn_no),
        )
        .await?;
        w.execute(
            Statement::new(
                "UPDATE transactional_producers SET txn_no = txn_no + 1 \
                 WHERE transactional_id = $1",
            )
            .text(id),
        )
        .await?;
        B::commit(w).await
    }

    async fn knows_staged(&self, object: &str) -> Result<bool> {
        let row = self
            .reader()
            .await?
            .fetch_optional(
                Statement::new("SELECT 1 AS one FROM shared_staged WHERE object = $1").text(object),
            )
            .await?;
        Ok(row.is_some())
    }
}
