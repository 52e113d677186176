//! The chunk index, data objects and producers, for either store (the
//! flush commit itself is the backend's: `Backend::commit_chunks`).

use std::ops::Range;

use async_trait::async_trait;

use super::super::commit;
use super::super::rows::{self, CHUNK_COLUMNS, CHUNK_READ_COLUMNS, MetaRow};
use super::super::sql::{Backend, Sql, Statement};
use super::super::{
    ChunkRecord, ChunkStore, CommitOutcome, FlushCommit, Rejection, TimeFilter, TxnCommit,
};
use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::stream::StreamId;

#[async_trait]
impl<B: Backend> ChunkStore for B {
    async fn commit_flush(&self, c: &FlushCommit) -> Result<CommitOutcome> {
        self.commit_chunks(c).await
    }

    async fn chunks_by_offset(
        &self,
        stream_id: StreamId,
        partition: u32,
        range: Range<u64>,
    ) -> Result<Vec<ChunkRecord>> {
        let rows = self
            .reader()
            .await?
            .fetch_all(
                Statement::new(format!(
                    "SELECT {CHUNK_READ_COLUMNS} FROM chunks \
                     WHERE stream_id = $1 AND partition_no = $2 \
                     AND end_offset > $3 AND base_offset < $4 ORDER BY base_offset"
                ))
                .int(stream_id)
                .int(partition as i64)
                .uint(range.start)
                .uint(range.end.min(i64::MAX as u64)),
            )
            .await?;
        rows.iter().map(rows::chunk).collect()
    }

    async fn chunks_by_time(
        &self,
        stream_id: StreamId,
        partition: u32,
        filter: &TimeFilter,
    ) -> Result<Vec<ChunkRecord>> {
        let bounds = |r: &Option<Range<Micros>>| match r {
            Some(r) => (Some(r.start), Some(r.end)),
            None => (None, None),
        };
        let (event_start, event_end) = bounds(&filter.event_time);
        let (append_start, append_end) = bounds(&filter.append_time);
        let rows = self
            .reader()
            .await?
            .fetch_all(
                Statement::new(format!(
                    "SELECT {CHUNK_READ_COLUMNS} FROM chunks \
                     WHERE stream_id = $1 AND partition_no = $2 \
                     AND (CAST($3 AS BIGINT) IS NULL \
                          OR (max_event_time_us >= $3 AND min_event_time_us < $4)) \
                     AND (CAST($5 AS BIGINT) IS NULL \
                          OR (max_append_time_us >= $5 AND min_append_time_us < $6)) \
                     ORDER BY base_offset"
                ))
                .int(stream_id)
                .int(partition as i64)
                .opt_int(event_start)
                .opt_int(event_end)
                .opt_int(append_start)
                .opt_int(append_end),
            )
            .await?;
        rows.iter().map(rows::chunk).collect()
    }

    async fn expire_chunks(&self, stream_id: StreamId, before: Micros) -> Result<u64> {
        self.single()
            .await?
            .execute(
                Statement::new(
                    "DELETE FROM chunks WHERE stream_id = $1 AND end_offset <= (\
                       SELECT coalesce(min(c.base_offset), 9223372036854775807) FROM chunks c \
                       WHERE c.stream_id = chunks.stream_id \
                       AND c.partition_no = chunks.partition_no \
                       AND c.max_append_time_us >= $2)",
                )
                .int(stream_id)
                .int(before),
            )
            .await
    }

    async fn orphaned_objects(&self, now: Micros, cutoff: Micros) -> Result<Vec<String>> {
        let mut c = self.single().await?;
        c.execute(
            Statement::new(
                "UPDATE objects SET orphaned_at_us = $1 WHERE orphaned_at_us IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key)",
            )
            .int(now),
        )
        .await?;
        let rows = c
            .fetch_all(
                Statement::new(
                    "SELECT object_key FROM objects WHERE orphaned_at_us < $1 \
                     AND NOT EXISTS \
                       (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key) \
                     ORDER BY object_key",
                )
                .int(cutoff),
            )
            .await?;
        rows.iter().map(|r| r.text("object_key")).collect()
    }

    async fn forget_object(&self, key: &str) -> Result<()> {
        self.single()
            .await?
            .execute(
                Statement::new(
                    "DELETE FROM objects WHERE object_key = $1 AND NOT EXISTS \
                     (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key)",
                )
                .text(key),
            )
            .await?;
        Ok(())
    }

    async fn knows_object(&self, key: &str) -> Result<bool> {
        let row = self
            .reader()
            .await?
            .fetch_optional(
                Statement::new("SELECT 1 AS one FROM objects WHERE object_key = $1").text(key),
            )
            .await?;
        Ok(row.is_some())
    }

    async fn replace_chunks(
        &self,
        old: &[ChunkRecord],
        new: &ChunkRecord,
        object_size: u64,
        created_at: Micros,
    ) -> Result<bool> {
        let mut w = self.writer().await?;
        let mut gone = 0;
        for c in old {
            gone += w
                .execute(
                    Statement::new(
                        "DELETE FROM chunks WHERE stream_id = $1 AND partition_no = $2 \
                         AND base_offset = $3 AND end_offset = $4 AND object_key = $5",
                    )
                    .int(c.stream_id)
                    .int(c.partition as i64)
                    .uint(c.base_offset)
                    .uint(c.end_offset)
                    .text(&c.object),
                )
                .await?;
        }
        // A chunk already gone (expired, or replaced by another
        // compaction): nothing changes.
        if gone != old.len() as u64 {
            return Ok(false);
        }
        w.execute(
            Statement::new(
                "INSERT INTO objects (object_key, size_bytes, created_at_us) VALUES ($1, $2, $3)",
            )
            .text(&new.object)
            .uint(object_size)
            .int(created_at),
        )
        .await?;
        w.execute(
            Statement::new(format!(
                "INSERT INTO chunks ({CHUNK_COLUMNS}, row_count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .int(new.stream_id)
            .int(new.partition as i64)
            .uint(new.base_offset)
            .uint(new.end_offset)
            .text(&new.object)
            .uint(new.byte_range.start)
            .uint(new.byte_range.end - new.byte_range.start)
            .opt_int(new.event_time.min)
            .opt_int(new.event_time.max)
            .int(new.append_time.min.unwrap_or(created_at))
            .int(new.append_time.max.unwrap_or(created_at))
            .int(new.schema_version.into())
            .opt_int(new.sparse_rows.map(|n| n as i64)),
        )
        .await?;
        B::commit(w).await?;
        Ok(true)
    }

    async fn fence_producer(
        &self,
        producer_id: &str,
        stream_id: StreamId,
        epoch: u64,
    ) -> Result<()> {
        // Under the producer's lock, as commits take it.
        let mut w = self.writer().await?;
        B::lock_key(&mut w, 0, &format!("{stream_id}:{producer_id}")).await?;
        w.execute(
            Statement::new(format!(
                "INSERT INTO producers (producer_id, stream_id, last_sequence, last_ack, epoch) \
                 VALUES ($1, $2, 0, '[]', $3) ON CONFLICT (producer_id, stream_id) DO UPDATE \
                 SET epoch = {}(producers.epoch, excluded.epoch)",
                B::GREATEST
            ))
            .text(producer_id)
            .int(stream_id)
            .uint(epoch),
        )
        .await?;
        B::commit(w).await
    }

    async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        now: Micros,
    ) -> Result<u64> {
        let mut w = self.writer().await?;
        let row = w
            .fetch_optional(
                Statement::new(
                    "INSERT INTO transactional_producers \
                     (transactional_id, epoch, updated_at_us) VALUES ($1, 1, $2) \
                     ON CONFLICT (transactional_id) DO UPDATE \
                     SET epoch = transactional_producers.epoch + 1, \
                     updated_at_us = excluded.updated_at_us \
                     RETURNING epoch",
                )
                .text(transactional_id)
                .int(now),
            )
            .await?
            .ok_or_else(|| LogError::Internal("an upsert returned no row".into()))?;
        let epoch = row.int("epoch")? as u64;
        // What older instances staged away from their agent is dropped
        // (maintenance deletes the objects).
        w.execute(
            Statement::new("DELETE FROM shared_staged WHERE transactional_id = $1 AND epoch < $2")
                .text(transactional_id)
                .uint(epoch),
        )
        .await?;
        B::commit(w).await?;
        Ok(epoch)
    }

    async fn commit_transaction_offsets(&self, txn: &TxnCommit, now: Micros) -> Result<()> {
        let mut w = self.writer().await?;
        let epochs =
            B::transactional_epochs(&mut w, std::slice::from_ref(&txn.transactional_id)).await?;
        let current = epochs.get(&txn.transactional_id).copied();
        match commit::transaction_rejection(txn, current) {
            Some(Rejection::TransactionEnded { .. }) => {
                return Err(LogError::TransactionAborted(commit::ended_message(
                    &txn.transactional_id,
                )));
            }
            Some(_) => {
                return Err(LogError::Fenced(commit::fenced_message(
                    &txn.transactional_id,
                    txn.epoch,
                    current.map(|c| c.epoch),
                )));
            }
            None => {}
        }
        for g in &txn.offsets {
            B::write_group_offsets(&mut w, &g.group, g.stream_id, &g.offsets, now).await?;
        }
        B::end_shared_transactions(&mut w, std::slice::from_ref(txn)).await?;
        B::commit(w).await
    }

    async fn producer_progress(
        &self,
        producer_id: &str,
        stream_id: StreamId,
    ) -> Result<Option<(u64, Option<String>)>> {
        let row = self
            .reader()
            .await?
            .fetch_optional(
                Statement::new(
                    "SELECT last_sequence, progress FROM producers \
                     WHERE producer_id = $1 AND stream_id = $2",
                )
                .text(producer_id)
                .int(stream_id),
            )
            .await?;
        row.map(|r| Ok((r.int("last_sequence")? as u64, r.opt_text("progress")?)))
            .transpose()
    }
}
