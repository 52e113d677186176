//! The flush commit in SQLite: the decisions of `metadata::commit`, one
//! statement per row, in one `BEGIN IMMEDIATE` transaction under the write
//! lock.

use std::collections::BTreeMap;

use super::SqliteMetadata;
use crate::error::Result;
use crate::metadata::commit;
use crate::metadata::rows::{self, CHUNK_COLUMNS, MetaRow};
use crate::metadata::sql::{Backend, Sql, Statement};
use crate::metadata::{CommitOutcome, FlushCommit};

pub(super) async fn commit(m: &SqliteMetadata, c: &FlushCommit) -> Result<CommitOutcome> {
    let mut w = m.writer().await?;

    // What the decision needs: the partitions' next offsets (a missing row:
    // the stream was dropped meanwhile) and the producers' state.
    let mut next = BTreeMap::new();
    for (stream_id, partition) in commit::partitions(c) {
        let row = w
            .fetch_optional(
                Statement::new(
                    "SELECT next_offset FROM partitions \
                     WHERE stream_id = $1 AND partition_no = $2",
                )
                .int(stream_id)
                .int(partition as i64),
            )
            .await?;
        if let Some(r) = row {
            next.insert((stream_id, partition), r.int("next_offset")? as u64);
        }
    }
    let mut stored = BTreeMap::new();
    for (producer_id, stream_id) in commit::producers(c) {
        let row = w
            .fetch_optional(
                Statement::new(
                    "SELECT last_sequence, last_ack, epoch FROM producers \
                     WHERE producer_id = $1 AND stream_id = $2",
                )
                .text(&producer_id)
                .int(stream_id),
            )
            .await?;
        if let Some(r) = row {
            stored.insert((producer_id, stream_id), rows::stored_producer(&r)?);
        }
    }
    let ids: Vec<String> = commit::transactional_ids(c).into_iter().collect();
    let epochs = SqliteMetadata::transactional_epochs(&mut w, &ids).await?;
    let plan = match commit::plan(c, next, &stored, &epochs)? {
        Ok(plan) => plan,
        Err(rejections) => return Ok(CommitOutcome::Rejected { rejections }),
    };

    w.execute(
        Statement::new(
            "INSERT INTO objects (object_key, size_bytes, created_at_us) VALUES ($1, $2, $3)",
        )
        .text(&c.object)
        .uint(c.object_size)
        .int(c.created_at),
    )
    .await?;
    for (ch, &base) in c.chunks.iter().zip(&plan.bases) {
        w.execute(
            Statement::new(format!(
                "INSERT INTO chunks ({CHUNK_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .int(ch.stream_id)
            .int(ch.partition as i64)
            .uint(base)
            .uint(base + ch.rows)
            .text(&c.object)
            .uint(ch.byte_range.start)
            .uint(ch.byte_range.end - ch.byte_range.start)
            .opt_int(ch.event_time.min)
            .opt_int(ch.event_time.max)
            .int(ch.append_time.min.unwrap_or(c.created_at))
            .int(ch.append_time.max.unwrap_or(c.created_at))
            .int(ch.schema_version.into()),
        )
        .await?;
    }
    for (&(stream_id, partition), &n) in &plan.next_offsets {
        w.execute(
            Statement::new(
                "UPDATE partitions SET next_offset = $1 \
                 WHERE stream_id = $2 AND partition_no = $3",
            )
            .uint(n)
            .int(stream_id)
            .int(partition as i64),
        )
        .await?;
    }
    for ((producer_id, stream_id), p) in plan.producers {
        w.execute(
            Statement::new(
                "INSERT INTO producers \
                 (producer_id, stream_id, last_sequence, last_ack, progress, epoch) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (producer_id, stream_id) DO UPDATE \
                 SET last_sequence = excluded.last_sequence, last_ack = excluded.last_ack, \
                 progress = excluded.progress, epoch = max(producers.epoch, excluded.epoch)",
            )
            .text(producer_id)
            .int(stream_id)
            .uint(p.last_sequence)
            .text(p.last_ack)
            .opt_text(p.progress)
            .uint(p.epoch),
        )
        .await?;
    }
    for t in &c.transactions {
        for g in &t.offsets {
            SqliteMetadata::write_group_offsets(
                &mut w,
                &g.group,
                g.stream_id,
                &g.offsets,
                c.created_at,
            )
            .await?;
        }
    }
    SqliteMetadata::end_shared_transactions(&mut w, &c.transactions).await?;
    SqliteMetadata::commit(w).await?;
    Ok(CommitOutcome::Committed {
        chunk_base_offsets: plan.bases,
    })
}
