//! The flush commit in PostgreSQL: the decisions of `metadata::commit` in
//! one transaction of a fixed number of statements, however many chunks it
//! has (arrays are passed whole and `unnest`ed), with the partition rows
//! and producer locks taken in key order (see the module above).

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row};

use super::{PostgresMetadata, announce, transactional_epochs, write_group_offsets};
use crate::error::Result;
use crate::metadata::commit;
use crate::metadata::rows::{self, CHUNK_COLUMNS};
use crate::metadata::sql::Backend;
use crate::metadata::{CommitOutcome, FlushCommit};
use crate::stream::StreamId;

fn u(v: u64) -> i64 {
    v as i64
}

pub(super) async fn commit(m: &PostgresMetadata, c: &FlushCommit) -> Result<CommitOutcome> {
    let mut tx = m.pool.begin().await?;

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
        let lock_keys: Vec<String> = producers.iter().map(|(p, s)| format!("{s}:{p}")).collect();
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

    sqlx::query("INSERT INTO objects (object_key, size_bytes, created_at_us) VALUES ($1, $2, $3)")
        .bind(&c.object)
        .bind(u(c.object_size))
        .bind(c.created_at)
        .execute(&mut *tx)
        .await?;

    // Every chunk row in one statement, then the offsets.
    let mut cols: [Vec<i64>; 7] = Default::default();
    let mut times: [Vec<Option<i64>>; 2] = Default::default();
    let mut append_times: [Vec<i64>; 2] = Default::default();
    for (ch, &base) in c.chunks.iter().zip(&plan.bases) {
        cols[0].push(ch.stream_id);
        cols[1].push(ch.partition as i64);
        cols[2].push(u(base));
        cols[3].push(u(base + ch.rows));
        cols[4].push(u(ch.byte_range.start));
        cols[5].push(u(ch.byte_range.end - ch.byte_range.start));
        cols[6].push(ch.schema_version.into());
        times[0].push(ch.event_time.min);
        times[1].push(ch.event_time.max);
        append_times[0].push(ch.append_time.min.unwrap_or(c.created_at));
        append_times[1].push(ch.append_time.max.unwrap_or(c.created_at));
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO chunks ({CHUNK_COLUMNS}) \
         SELECT s, p, b, e, $7, bs, bl, mine, maxe, mina, maxa, v FROM unnest(\
           $1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
           $6::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], \
           $12::bigint[]) \
         AS t(s, p, b, e, bs, bl, mine, maxe, mina, maxa, v)"
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
    .bind(&cols[6])
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
            write_group_offsets(&mut tx, &g.group, g.stream_id, &g.offsets, c.created_at).await?;
        }
    }
    PostgresMetadata::end_shared_transactions(&mut tx, &c.transactions).await?;

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
