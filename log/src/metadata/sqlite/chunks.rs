//! The chunk index, data objects and idempotent producers, in SQLite.

use super::*;

#[async_trait]
impl ChunkStore for SqliteMetadata {
    async fn commit_flush(&self, c: &FlushCommit) -> Result<CommitOutcome> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;

        // What the decision needs: the partitions' next offsets (a missing
        // row: the stream was dropped meanwhile) and the producers' state.
        let mut next = BTreeMap::new();
        for (stream_id, partition) in commit::partitions(c) {
            let row = sqlx::query(
                "SELECT next_offset FROM partitions WHERE stream_id = ? AND partition_no = ?",
            )
            .bind(stream_id)
            .bind(partition as i64)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = row {
                next.insert(
                    (stream_id, partition),
                    r.try_get::<i64, _>("next_offset")? as u64,
                );
            }
        }
        let mut stored = BTreeMap::new();
        for (producer_id, stream_id) in commit::producers(c) {
            let row = sqlx::query(
                "SELECT last_sequence, last_ack, epoch FROM producers \
                 WHERE producer_id = ? AND stream_id = ?",
            )
            .bind(&producer_id)
            .bind(stream_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = row {
                stored.insert((producer_id, stream_id), rows::stored_producer(&r)?);
            }
        }
        let epochs = transactional_epochs(&mut tx, commit::transactional_ids(c)).await?;
        let plan = match commit::plan(c, next, &stored, &epochs)? {
            Ok(plan) => plan,
            Err(rejections) => {
                tx.rollback().await?;
                return Ok(CommitOutcome::Rejected { rejections });
            }
        };

        sqlx::query("INSERT INTO objects (object_key, size_bytes, created_at_us) VALUES (?, ?, ?)")
            .bind(&c.object)
            .bind(u(c.object_size))
            .bind(c.created_at)
            .execute(&mut *tx)
            .await?;
        for (ch, &base) in c.chunks.iter().zip(&plan.bases) {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO chunks ({CHUNK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )))
            .bind(ch.stream_id)
            .bind(ch.partition as i64)
            .bind(u(base))
            .bind(u(base + ch.rows))
            .bind(&c.object)
            .bind(u(ch.byte_range.start))
            .bind(u(ch.byte_range.end - ch.byte_range.start))
            .bind(ch.event_time.min)
            .bind(ch.event_time.max)
            .bind(ch.append_time.min.unwrap_or(c.created_at))
            .bind(ch.append_time.max.unwrap_or(c.created_at))
            .execute(&mut *tx)
            .await?;
        }
        for ((stream_id, partition), n) in &plan.next_offsets {
            sqlx::query(
                "UPDATE partitions SET next_offset = ? WHERE stream_id = ? AND partition_no = ?",
            )
            .bind(u(*n))
            .bind(stream_id)
            .bind(*partition as i64)
            .execute(&mut *tx)
            .await?;
        }
        for ((producer_id, stream_id), p) in &plan.producers {
            sqlx::query(
                "INSERT INTO producers \
                 (producer_id, stream_id, last_sequence, last_ack, progress, epoch) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (producer_id, stream_id) DO UPDATE \
                 SET last_sequence = excluded.last_sequence, last_ack = excluded.last_ack, \
                 progress = excluded.progress, epoch = max(producers.epoch, excluded.epoch)",
            )
            .bind(producer_id)
            .bind(stream_id)
            .bind(u(p.last_sequence))
            .bind(&p.last_ack)
            .bind(&p.progress)
            .bind(u(p.epoch))
            .execute(&mut *tx)
            .await?;
        }
        for t in &c.transactions {
            for g in &t.offsets {
                write_group_offsets(&mut tx, &g.group, g.stream_id, &g.offsets, c.created_at)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(CommitOutcome::Committed {
            chunk_base_offsets: plan.bases,
        })
    }

    async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        now: Micros,
    ) -> Result<u64> {
        let _w = self.write.lock().await;
        let row = sqlx::query(
            "INSERT INTO transactional_producers (transactional_id, epoch, updated_at_us) \
             VALUES (?, 1, ?) ON CONFLICT (transactional_id) DO UPDATE \
             SET epoch = transactional_producers.epoch + 1, updated_at_us = excluded.updated_at_us \
             RETURNING epoch",
        )
        .bind(transactional_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("epoch")? as u64)
    }

    async fn commit_transaction_offsets(&self, txn: &TxnCommit, now: Micros) -> Result<()> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let epochs = transactional_epochs(&mut tx, [txn.transactional_id.clone()]).await?;
        let current = epochs.get(&txn.transactional_id).copied();
        if commit::transaction_rejection(txn, current).is_some() {
            return Err(LogError::Fenced(commit::fenced_message(
                &txn.transactional_id,
                txn.epoch,
                current,
            )));
        }
        for g in &txn.offsets {
            write_group_offsets(&mut tx, &g.group, g.stream_id, &g.offsets, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn producer_progress(
        &self,
        producer_id: &str,
        stream_id: StreamId,
    ) -> Result<Option<(u64, Option<String>)>> {
        let row = sqlx::query(
            "SELECT last_sequence, progress FROM producers WHERE producer_id = ? AND stream_id = ?",
        )
        .bind(producer_id)
        .bind(stream_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get::<i64, _>("last_sequence")? as u64,
                r.try_get::<Option<String>, _>("progress")?,
            ))
        })
        .transpose()
    }

    async fn chunks_by_offset(
        &self,
        stream_id: StreamId,
        partition: u32,
        range: Range<u64>,
    ) -> Result<Vec<ChunkRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CHUNK_COLUMNS} FROM chunks WHERE stream_id = ? AND partition_no = ? \
             AND end_offset > ? AND base_offset < ? ORDER BY base_offset"
        )))
        .bind(stream_id)
        .bind(partition as i64)
        .bind(u(range.start))
        .bind(u(range.end.min(i64::MAX as u64)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::chunk).collect()
    }

    async fn chunks_by_time(
        &self,
        stream_id: StreamId,
        partition: u32,
        filter: &TimeFilter,
    ) -> Result<Vec<ChunkRecord>> {
        let (es, ee) = filter
            .event_time
            .clone()
            .map(|r| (Some(r.start), Some(r.end)))
            .unwrap_or((None, None));
        let (as_, ae) = filter
            .append_time
            .clone()
            .map(|r| (Some(r.start), Some(r.end)))
            .unwrap_or((None, None));
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CHUNK_COLUMNS} FROM chunks WHERE stream_id = ? AND partition_no = ? \
             AND (? IS NULL OR (max_event_time_us >= ? AND min_event_time_us < ?)) \
             AND (? IS NULL OR (max_append_time_us >= ? AND min_append_time_us < ?)) \
             ORDER BY base_offset"
        )))
        .bind(stream_id)
        .bind(partition as i64)
        .bind(es)
        .bind(es)
        .bind(ee)
        .bind(as_)
        .bind(as_)
        .bind(ae)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::chunk).collect()
    }

    async fn expire_chunks(&self, stream_id: StreamId, before: Micros) -> Result<u64> {
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "DELETE FROM chunks WHERE stream_id = ? AND end_offset <= (\
               SELECT coalesce(min(c.base_offset), 9223372036854775807) FROM chunks c \
               WHERE c.stream_id = chunks.stream_id AND c.partition_no = chunks.partition_no \
               AND c.max_append_time_us >= ?)",
        )
        .bind(stream_id)
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn orphaned_objects(&self, now: Micros, cutoff: Micros) -> Result<Vec<String>> {
        let _w = self.write.lock().await;
        sqlx::query(
            "UPDATE objects SET orphaned_at_us = ? WHERE orphaned_at_us IS NULL \
             AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key)",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT object_key FROM objects WHERE orphaned_at_us < ? \
             AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key) \
             ORDER BY object_key",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("object_key")?)).collect()
    }

    async fn forget_object(&self, key: &str) -> Result<()> {
        let _w = self.write.lock().await;
        sqlx::query(
            "DELETE FROM objects WHERE object_key = ? \
             AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key)",
        )
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn knows_object(&self, key: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 AS one FROM objects WHERE object_key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    async fn replace_chunks(
        &self,
        old: &[ChunkRecord],
        new: &ChunkRecord,
        object_size: u64,
        created_at: Micros,
    ) -> Result<bool> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut gone = 0;
        for c in old {
            gone += sqlx::query(
                "DELETE FROM chunks WHERE stream_id = ? AND partition_no = ? \
                 AND base_offset = ? AND end_offset = ? AND object_key = ?",
            )
            .bind(c.stream_id)
            .bind(c.partition as i64)
            .bind(u(c.base_offset))
            .bind(u(c.end_offset))
            .bind(&c.object)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if gone != old.len() as u64 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO objects (object_key, size_bytes, created_at_us) VALUES (?, ?, ?)")
            .bind(&new.object)
            .bind(u(object_size))
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO chunks ({CHUNK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(new.stream_id)
        .bind(new.partition as i64)
        .bind(u(new.base_offset))
        .bind(u(new.end_offset))
        .bind(&new.object)
        .bind(u(new.byte_range.start))
        .bind(u(new.byte_range.end - new.byte_range.start))
        .bind(new.event_time.min)
        .bind(new.event_time.max)
        .bind(new.append_time.min.unwrap_or(created_at))
        .bind(new.append_time.max.unwrap_or(created_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn fence_producer(
        &self,
        producer_id: &str,
        stream_id: StreamId,
        epoch: u64,
    ) -> Result<()> {
        let _w = self.write.lock().await;
        sqlx::query(
            "INSERT INTO producers (producer_id, stream_id, last_sequence, last_ack, epoch) \
             VALUES (?, ?, 0, '[]', ?) ON CONFLICT (producer_id, stream_id) DO UPDATE \
             SET epoch = max(producers.epoch, excluded.epoch)",
        )
        .bind(producer_id)
        .bind(stream_id)
        .bind(u(epoch))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
