//! The chunk index, data objects and idempotent producers, in PostgreSQL.

use super::*;

#[async_trait]
impl ChunkStore for PostgresMetadata {
    async fn commit_flush(&self, c: &FlushCommit) -> Result<CommitOutcome> {
        let mut tx = self.pool.begin().await?;

        // Lock and read the partitions the flush advances, in key order; a
        // missing row means the stream was dropped meanwhile.
        let keys = commit::partitions(c);
        let (ks, kp): (Vec<i64>, Vec<i64>) = keys.iter().map(|&(s, p)| (s, p as i64)).unzip();
        let locked = sqlx::query(
            "SELECT p.stream_id, p.partition_no, p.next_offset FROM partitions p \
             JOIN unnest($1::bigint[], $2::bigint[]) AS k(s, n) \
               ON p.stream_id = k.s AND p.partition_no = k.n \
             ORDER BY p.stream_id, p.partition_no FOR UPDATE OF p",
        )
        .bind(&ks)
        .bind(&kp)
        .fetch_all(&mut *tx)
        .await?;
        let mut next: BTreeMap<(StreamId, u32), u64> = BTreeMap::new();
        for r in &locked {
            next.insert(
                (
                    r.try_get("stream_id")?,
                    r.try_get::<i64, _>("partition_no")? as u32,
                ),
                r.try_get::<i64, _>("next_offset")? as u64,
            );
        }

        // One agent at a time per idempotent producer, then its state.
        let producers = commit::producers(c);
        let mut last: BTreeMap<(String, StreamId), rows::StoredProducer> = BTreeMap::new();
        if !producers.is_empty() {
            let (pp, ps): (Vec<String>, Vec<i64>) = producers.iter().cloned().unzip();
            let lock_keys: Vec<String> =
                producers.iter().map(|(p, s)| format!("{s}:{p}")).collect();
            sqlx::query(
                "SELECT pg_advisory_xact_lock(h) FROM \
                 (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k \
                  ORDER BY h) AS locks",
            )
            .bind(&lock_keys)
            .execute(&mut *tx)
            .await?;
            let rows = sqlx::query(
                "SELECT producer_id, stream_id, last_sequence, last_ack, epoch FROM producers \
                 JOIN unnest($1::text[], $2::bigint[]) AS k(p, s) \
                   ON producer_id = k.p AND stream_id = k.s",
            )
            .bind(&pp)
            .bind(&ps)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                last.insert(
                    (r.try_get("producer_id")?, r.try_get("stream_id")?),
                    rows::stored_producer(r)?,
                );
            }
        }

        let ids: Vec<String> = commit::transactional_ids(c).into_iter().collect();
        let epochs = if ids.is_empty() {
            BTreeMap::new()
        } else {
            transactional_epochs(&mut tx, &ids).await?
        };
        let plan = match commit::plan(c, next, &last, &epochs)? {
            Ok(plan) => plan,
            Err(rejections) => {
                tx.rollback().await?;
                return Ok(CommitOutcome::Rejected { rejections });
            }
        };

        sqlx::query(
            "INSERT INTO objects (object_key, size_bytes, created_at_us) VALUES ($1, $2, $3)",
        )
        .bind(&c.object)
        .bind(u(c.object_size))
        .bind(c.created_at)
        .execute(&mut *tx)
        .await?;

        // Every chunk row in one statement, then the offsets.
        let mut cols: [Vec<i64>; 6] = Default::default();
        let mut times: [Vec<Option<i64>>; 2] = Default::default();
        let mut append_times: [Vec<i64>; 2] = Default::default();
        for (ch, &base) in c.chunks.iter().zip(&plan.bases) {
            cols[0].push(ch.stream_id);
            cols[1].push(ch.partition as i64);
            cols[2].push(u(base));
            cols[3].push(u(base + ch.rows));
            cols[4].push(u(ch.byte_range.start));
            cols[5].push(u(ch.byte_range.end - ch.byte_range.start));
            times[0].push(ch.event_time.min);
            times[1].push(ch.event_time.max);
            append_times[0].push(ch.append_time.min.unwrap_or(c.created_at));
            append_times[1].push(ch.append_time.max.unwrap_or(c.created_at));
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO chunks ({CHUNK_COLUMNS}) \
             SELECT s, p, b, e, $7, bs, bl, mine, maxe, mina, maxa FROM unnest(\
               $1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
               $6::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[]) \
             AS t(s, p, b, e, bs, bl, mine, maxe, mina, maxa)"
        )))
        .bind(&cols[0])
        .bind(&cols[1])
        .bind(&cols[2])
        .bind(&cols[3])
        .bind(&cols[4])
        .bind(&cols[5])
        .bind(&c.object)
        .bind(&times[0])
        .bind(&times[1])
        .bind(&append_times[0])
        .bind(&append_times[1])
        .execute(&mut *tx)
        .await?;
        let (us, up, un): (Vec<i64>, Vec<i64>, Vec<i64>) = plan.next_offsets.iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut s, mut p, mut e), (&(sid, part), &end)| {
                s.push(sid);
                p.push(part as i64);
                e.push(u(end));
                (s, p, e)
            },
        );
        sqlx::query(
            "UPDATE partitions SET next_offset = t.e \
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS t(s, p, e) \
             WHERE stream_id = t.s AND partition_no = t.p",
        )
        .bind(&us)
        .bind(&up)
        .bind(&un)
        .execute(&mut *tx)
        .await?;

        if !plan.producers.is_empty() {
            let mut ids = Vec::new();
            let mut sids = Vec::new();
            let mut seqs = Vec::new();
            let mut acks = Vec::new();
            let mut progress = Vec::new();
            let mut epochs = Vec::new();
            for ((id, sid), p) in plan.producers {
                ids.push(id);
                sids.push(sid);
                seqs.push(u(p.last_sequence));
                acks.push(p.last_ack);
                progress.push(p.progress);
                epochs.push(u(p.epoch));
            }
            sqlx::query(
                "INSERT INTO producers \
                 (producer_id, stream_id, last_sequence, last_ack, progress, epoch) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], \
                                      $5::text[], $6::bigint[]) \
                 ON CONFLICT (producer_id, stream_id) DO UPDATE \
                 SET last_sequence = excluded.last_sequence, last_ack = excluded.last_ack, \
                 progress = excluded.progress, epoch = GREATEST(producers.epoch, excluded.epoch)",
            )
            .bind(ids)
            .bind(sids)
            .bind(seqs)
            .bind(acks)
            .bind(progress)
            .bind(epochs)
            .execute(&mut *tx)
            .await?;
        }

        for t in &c.transactions {
            for g in &t.offsets {
                write_group_offsets(&mut tx, &g.group, g.stream_id, &g.offsets, c.created_at)
                    .await?;
            }
        }

        let changes: Vec<String> = us
            .iter()
            .zip(&up)
            .zip(&un)
            .map(|((s, p), e)| format!("e:{s}:{p}:{e}"))
            .collect();
        announce(&mut tx, &changes).await?;
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
        let row = sqlx::query(
            "INSERT INTO transactional_producers (transactional_id, epoch, updated_at_us) \
             VALUES ($1, 1, $2) ON CONFLICT (transactional_id) DO UPDATE \
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
        let mut tx = self.pool.begin().await?;
        let epochs =
            transactional_epochs(&mut tx, std::slice::from_ref(&txn.transactional_id)).await?;
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
            "SELECT last_sequence, progress FROM producers \
             WHERE producer_id = $1 AND stream_id = $2",
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
            "SELECT {CHUNK_COLUMNS} FROM chunks WHERE stream_id = $1 AND partition_no = $2 \
             AND end_offset > $3 AND base_offset < $4 ORDER BY base_offset"
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
            "SELECT {CHUNK_COLUMNS} FROM chunks WHERE stream_id = $1 AND partition_no = $2 \
             AND ($3::bigint IS NULL OR (max_event_time_us >= $3 AND min_event_time_us < $4)) \
             AND ($5::bigint IS NULL OR (max_append_time_us >= $5 AND min_append_time_us < $6)) \
             ORDER BY base_offset"
        )))
        .bind(stream_id)
        .bind(partition as i64)
        .bind(es)
        .bind(ee)
        .bind(as_)
        .bind(ae)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::chunk).collect()
    }

    async fn expire_chunks(&self, stream_id: StreamId, before: Micros) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM chunks WHERE stream_id = $1 AND end_offset <= (\
               SELECT coalesce(min(c.base_offset), 9223372036854775807) FROM chunks c \
               WHERE c.stream_id = chunks.stream_id AND c.partition_no = chunks.partition_no \
               AND c.max_append_time_us >= $2)",
        )
        .bind(stream_id)
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn orphaned_objects(&self, now: Micros, cutoff: Micros) -> Result<Vec<String>> {
        sqlx::query(
            "UPDATE objects SET orphaned_at_us = $1 WHERE orphaned_at_us IS NULL \
             AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key)",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT object_key FROM objects WHERE orphaned_at_us < $1 \
             AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key) \
             ORDER BY object_key",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("object_key")?)).collect()
    }

    async fn forget_object(&self, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM objects WHERE object_key = $1 \
             AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key)",
        )
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn knows_object(&self, key: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 AS one FROM objects WHERE object_key = $1")
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
        let mut tx = self.pool.begin().await?;
        let mut gone = 0;
        for c in old {
            gone += sqlx::query(
                "DELETE FROM chunks WHERE stream_id = $1 AND partition_no = $2 \
                 AND base_offset = $3 AND end_offset = $4 AND object_key = $5",
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
        sqlx::query(
            "INSERT INTO objects (object_key, size_bytes, created_at_us) VALUES ($1, $2, $3)",
        )
        .bind(&new.object)
        .bind(u(object_size))
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO chunks ({CHUNK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
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
        // Under the producer's lock, as commits take it.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{stream_id}:{producer_id}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO producers (producer_id, stream_id, last_sequence, last_ack, epoch) \
             VALUES ($1, $2, 0, '[]', $3) ON CONFLICT (producer_id, stream_id) DO UPDATE \
             SET epoch = GREATEST(producers.epoch, excluded.epoch)",
        )
        .bind(producer_id)
        .bind(stream_id)
        .bind(u(epoch))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
