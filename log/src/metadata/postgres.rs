//! The cluster metadata store: PostgreSQL, shared by every agent.
//!
//! Same tables, columns and behaviour as the SQLite store; what differs is
//! that several agents commit at once:
//! - A flush's transaction locks the partition rows it advances
//!   (`FOR UPDATE`, in key order, so two flushes never deadlock on them),
//!   then takes a transaction-scoped advisory lock per idempotent producer it
//!   records (in lock-id order), so offsets stay dense and each producer's
//!   sequence is checked and advanced by one agent at a time. A flush is one
//!   transaction of a fixed number of statements, however many chunks it has
//!   (arrays are passed whole and `unnest`ed).
//! - Commits announce what they changed with `pg_notify` inside the
//!   transaction (delivered only if it commits) on one channel that every
//!   agent LISTENs to ([`MetadataStore::changes`]), so a tail reader on one
//!   agent wakes on another agent's commit.
//! - Schema migrations run at start-up under the migrator's advisory lock:
//!   agents starting together apply them once.

use std::collections::BTreeMap;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::groups::rules::{CommitCheck, GroupOp, StoredGroup};

use super::commit;
use super::rows::{self, AGENT_COLUMNS, CHUNK_COLUMNS, STREAM_COLUMNS, VIEW_COLUMNS};
use super::{
    AgentRecord, Change, ChunkRecord, CommitOutcome, FlushCommit, MetadataStore, PartitionStats,
    TimeFilter, ViewCheckpoint, ViewRecord,
};
use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::stream::{StreamId, StreamInfo, StreamSpec, encode_schema};

/// The channel commits announce changes on.
const CHANNEL: &str = "streamhouse_changes";
/// A notification payload must stay under PostgreSQL's 8000 bytes.
const MAX_PAYLOAD: usize = 7000;

/// PostgreSQL-backed [`MetadataStore`].
#[derive(Debug)]
pub struct PostgresMetadata {
    pool: PgPool,
}

impl PostgresMetadata {
    /// Connects to `postgres://…` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?.application_name("streamhouse");
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn u(v: u64) -> i64 {
    v as i64
}

async fn stream_in_tx(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
) -> Result<Option<StreamInfo>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {STREAM_COLUMNS} FROM streams WHERE name = $1 FOR UPDATE"
    )))
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(rows::stream).transpose()
}

/// Sends `changes` to every listening agent when `tx` commits.
async fn announce(tx: &mut Transaction<'_, Postgres>, changes: &[String]) -> Result<()> {
    let mut payload = String::new();
    let mut payloads = Vec::new();
    for c in changes {
        if !payload.is_empty() && payload.len() + c.len() + 1 > MAX_PAYLOAD {
            payloads.push(std::mem::take(&mut payload));
        }
        if !payload.is_empty() {
            payload.push(';');
        }
        payload.push_str(c);
    }
    if !payload.is_empty() {
        payloads.push(payload);
    }
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Parses one notification payload (`e:stream:partition:end` and
/// `d:stream` items separated by `;`).
fn parse_payload(payload: &str) -> Vec<Change> {
    let mut ends = Vec::new();
    let mut out = Vec::new();
    for item in payload.split(';') {
        let mut f = item.split(':');
        match (f.next(), f.next(), f.next(), f.next()) {
            (Some("e"), Some(s), Some(p), Some(e)) => {
                if let (Ok(s), Ok(p), Ok(e)) = (s.parse(), p.parse(), e.parse()) {
                    ends.push((s, p, e));
                }
            }
            (Some("d"), Some(s), None, None) => {
                if let Ok(s) = s.parse() {
                    out.push(Change::StreamDropped(s));
                }
            }
            _ => debug!(item, "ignoring unknown change announcement"),
        }
    }
    if !ends.is_empty() {
        out.insert(0, Change::Ends(ends));
    }
    out
}

/// A group's stored state, read inside a transaction that holds its lock.
async fn load_group(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
) -> Result<Option<StoredGroup>> {
    let Some(row) = sqlx::query(
        "SELECT stream_id, partitions, strategy, generation FROM consumer_groups \
         WHERE group_id = $1 FOR UPDATE",
    )
    .bind(group)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let members = sqlx::query(
        "SELECT member_id, heartbeat_at_us, timeout_us FROM group_members WHERE group_id = $1",
    )
    .bind(group)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Some(rows::stored_group(&row, &members)?))
}

#[async_trait]
impl MetadataStore for PostgresMetadata {
    async fn create_stream(&self, spec: &StreamSpec, created_at: Micros) -> Result<StreamInfo> {
        spec.validate()?;
        let key = serde_json::to_string(&spec.key)
            .map_err(|e| LogError::Internal(format!("encode key: {e}")))?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO streams (name, schema_ipc, partitions, key_columns, event_time_column, \
             watermark_delay_us, retention_us, created_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(&spec.name)
        .bind(encode_schema(&spec.schema)?)
        .bind(spec.partitions as i64)
        .bind(key)
        .bind(spec.event_time.as_ref().map(|e| e.column.clone()))
        .bind(
            spec.event_time
                .as_ref()
                .map(|e| e.watermark_delay.as_micros() as i64),
        )
        .bind(spec.retention.map(|r| r.as_micros() as i64))
        .bind(created_at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(LogError::StreamExists(spec.name.clone()));
        };
        let id: i64 = row.try_get("id")?;
        sqlx::query(
            "INSERT INTO partitions (stream_id, partition_no, next_offset) \
             SELECT $1, g, 0 FROM generate_series(0, $2 - 1) AS g",
        )
        .bind(id)
        .bind(spec.partitions as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StreamInfo {
            id,
            spec: spec.clone(),
            created_at,
        })
    }

    async fn drop_stream(&self, name: &str) -> Result<StreamInfo> {
        let mut tx = self.pool.begin().await?;
        let info = stream_in_tx(&mut tx, name)
            .await?
            .ok_or_else(|| LogError::UnknownStream(name.to_string()))?;
        // Wait for flushes committing to it (they hold its partition rows).
        sqlx::query(
            "SELECT 1 FROM partitions WHERE stream_id = $1 ORDER BY partition_no FOR UPDATE",
        )
        .bind(info.id)
        .execute(&mut *tx)
        .await?;
        for table in [
            "chunks",
            "partitions",
            "producers",
            "group_offsets",
            "consumer_groups",
        ] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE stream_id = $1"
            )))
            .bind(info.id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM streams WHERE id = $1")
            .bind(info.id)
            .execute(&mut *tx)
            .await?;
        announce(&mut tx, &[format!("d:{}", info.id)]).await?;
        tx.commit().await?;
        Ok(info)
    }

    async fn stream(&self, name: &str) -> Result<Option<StreamInfo>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {STREAM_COLUMNS} FROM streams WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::stream).transpose()
    }

    async fn streams(&self) -> Result<Vec<StreamInfo>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {STREAM_COLUMNS} FROM streams ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::stream).collect()
    }

    async fn partition_ends(&self, stream_id: StreamId) -> Result<Vec<u64>> {
        let rows = sqlx::query(
            "SELECT next_offset FROM partitions WHERE stream_id = $1 ORDER BY partition_no",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64, _>("next_offset")? as u64))
            .collect()
    }

    async fn partition_stats(&self, stream_id: StreamId) -> Result<Vec<PartitionStats>> {
        let rows = sqlx::query(
            "SELECT p.partition_no, p.next_offset, min(c.base_offset) AS first_offset, \
                    coalesce(sum(c.end_offset - c.base_offset), 0)::bigint AS rows_held, \
                    coalesce(sum(c.byte_len), 0)::bigint AS bytes, \
                    count(c.base_offset) AS chunks, max(c.max_append_time_us) AS last_append \
             FROM partitions p LEFT JOIN chunks c \
               ON c.stream_id = p.stream_id AND c.partition_no = p.partition_no \
             WHERE p.stream_id = $1 GROUP BY p.partition_no, p.next_offset \
             ORDER BY p.partition_no",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::partition_stats).collect()
    }

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

        let plan = match commit::plan(c, next, &last)? {
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

    async fn commit_group_offsets(
        &self,
        group: &str,
        stream_id: StreamId,
        offsets: &[(u32, u64)],
        committed_at: Micros,
        check: Option<&CommitCheck>,
    ) -> Result<()> {
        // Last write per partition wins, as in SQLite's statement-by-statement upsert.
        let by_partition: BTreeMap<u32, u64> = offsets.iter().copied().collect();
        let mut tx = self.pool.begin().await?;
        if let Some(check) = check {
            let stored = load_group(&mut tx, group).await?;
            crate::groups::rules::check_commit(group, stored.as_ref(), check)?;
        }
        let (parts, offs): (Vec<i64>, Vec<i64>) =
            by_partition.iter().map(|(&p, &o)| (p as i64, u(o))).unzip();
        sqlx::query(
            "INSERT INTO group_offsets \
             (group_id, stream_id, partition_no, next_offset, committed_at_us) \
             SELECT $1, $2, p, o, $5 FROM unnest($3::bigint[], $4::bigint[]) AS t(p, o) \
             ON CONFLICT (group_id, stream_id, partition_no) DO UPDATE SET \
             next_offset = excluded.next_offset, committed_at_us = excluded.committed_at_us",
        )
        .bind(group)
        .bind(stream_id)
        .bind(parts)
        .bind(offs)
        .bind(committed_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_group(
        &self,
        group: &str,
        op: &GroupOp,
        now: Micros,
    ) -> Result<Option<StoredGroup>> {
        let mut tx = self.pool.begin().await?;
        // Serializes operations on the group, whether or not it exists yet.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))")
            .bind(group)
            .execute(&mut *tx)
            .await?;
        let stored = load_group(&mut tx, group).await?;
        let Some(g) = crate::groups::rules::apply(group, stored, op, now)? else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO consumer_groups (group_id, stream_id, partitions, strategy, generation) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id) DO UPDATE SET \
             stream_id = excluded.stream_id, partitions = excluded.partitions, \
             generation = excluded.generation",
        )
        .bind(group)
        .bind(g.stream_id)
        .bind(g.partitions as i64)
        .bind(rows::strategy_name(g.strategy))
        .bind(u(g.generation))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM group_members WHERE group_id = $1")
            .bind(group)
            .execute(&mut *tx)
            .await?;
        let (ids, (beats, timeouts)): (Vec<String>, (Vec<i64>, Vec<i64>)) = g
            .members
            .iter()
            .map(|(id, m)| (id.clone(), (m.heartbeat_at, m.timeout.as_micros() as i64)))
            .unzip();
        sqlx::query(
            "INSERT INTO group_members (group_id, member_id, heartbeat_at_us, timeout_us) \
             SELECT $1, m, h, t FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS x(m, h, t)",
        )
        .bind(group)
        .bind(ids)
        .bind(beats)
        .bind(timeouts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(g))
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

    async fn group_names(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT group_id FROM consumer_groups ORDER BY group_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("group_id")?)).collect()
    }

    async fn group_offsets(&self, group: &str, stream_id: StreamId) -> Result<Vec<(u32, u64)>> {
        let rows = sqlx::query(
            "SELECT partition_no, next_offset FROM group_offsets \
             WHERE group_id = $1 AND stream_id = $2 ORDER BY partition_no",
        )
        .bind(group)
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("partition_no")? as u32,
                    r.try_get::<i64, _>("next_offset")? as u64,
                ))
            })
            .collect()
    }

    async fn groups(&self) -> Result<Vec<(String, StreamId)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT group_id, stream_id FROM group_offsets ORDER BY group_id, stream_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("group_id")?, r.try_get("stream_id")?)))
            .collect()
    }

    async fn create_view(&self, view: &ViewRecord, created_at: Micros) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO views \
             (name, dataflow, definition, created_at_us, owner, epoch, lease_until_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&view.name)
        .bind(&view.dataflow)
        .bind(&view.definition)
        .bind(created_at)
        .bind(&view.lease.owner)
        .bind(u(view.lease.epoch))
        .bind(view.lease.until)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(LogError::ViewExists(view.name.clone()));
        }
        Ok(())
    }

    async fn drop_view(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM views WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn views(&self) -> Result<Vec<ViewRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {VIEW_COLUMNS} FROM views ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::view).collect()
    }

    async fn commit_view_checkpoint(
        &self,
        name: &str,
        dataflow: &str,
        epoch: u64,
        checkpoint: &ViewCheckpoint,
        at: Micros,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE views SET checkpoint_no = $1, input_offsets = $2, state_key = $3, \
             checkpointed_at_us = $4 \
             WHERE name = $5 AND dataflow = $6 AND epoch = $7 \
             AND (checkpoint_no IS NULL OR checkpoint_no < $1)",
        )
        .bind(u(checkpoint.number))
        .bind(&checkpoint.input_offsets)
        .bind(&checkpoint.state_key)
        .bind(at)
        .bind(name)
        .bind(dataflow)
        .bind(u(epoch))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(LogError::Fenced(format!(
                "checkpoint {} of view \"{name}\" ({dataflow}, epoch {epoch}) is stale, \
                 its lease was taken over, or the view is gone",
                checkpoint.number
            )));
        }
        Ok(())
    }

    async fn acquire_view_lease(
        &self,
        name: &str,
        agent: &str,
        now: Micros,
        until: Micros,
        steal: bool,
    ) -> Result<Option<u64>> {
        let row = sqlx::query(
            "UPDATE views SET owner = $1, epoch = epoch + 1, lease_until_us = $2 \
             WHERE name = $3 AND ($4 OR owner IS NULL OR lease_until_us IS NULL \
                                  OR lease_until_us < $5) \
             RETURNING epoch",
        )
        .bind(agent)
        .bind(until)
        .bind(name)
        .bind(steal)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get::<i64, _>("epoch")? as u64))
            .transpose()
    }

    async fn renew_view_lease(
        &self,
        name: &str,
        agent: &str,
        epoch: u64,
        until: Micros,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE views SET lease_until_us = $1 WHERE name = $2 AND owner = $3 AND epoch = $4",
        )
        .bind(until)
        .bind(name)
        .bind(agent)
        .bind(u(epoch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_view_lease(&self, name: &str, agent: &str, epoch: u64) -> Result<()> {
        sqlx::query(
            "UPDATE views SET owner = NULL, lease_until_us = NULL \
             WHERE name = $1 AND owner = $2 AND epoch = $3",
        )
        .bind(name)
        .bind(agent)
        .bind(u(epoch))
        .execute(&self.pool)
        .await?;
        Ok(())
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

    async fn register_agent(&self, a: &AgentRecord) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (agent_id) DO UPDATE SET addresses = excluded.addresses, \
             version = excluded.version, heartbeat_at_us = excluded.heartbeat_at_us, \
             stopped_at_us = excluded.stopped_at_us"
        )))
        .bind(&a.id)
        .bind(rows::encode_addresses(&a.addresses))
        .bind(&a.version)
        .bind(a.started_at)
        .bind(a.heartbeat_at)
        .bind(a.stopped_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY started_at_us, agent_id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::agent).collect()
    }

    async fn forget_agents(&self, before: Micros) -> Result<()> {
        sqlx::query("DELETE FROM agents WHERE heartbeat_at_us < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn changes(&self) -> Result<Option<mpsc::Receiver<Change>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            let mut connected = true;
            loop {
                let got = listener.try_recv().await;
                let changes = match got {
                    Ok(Some(n)) => {
                        connected = true;
                        parse_payload(n.payload())
                    }
                    // The connection was lost; it reconnects on the next
                    // call. What was announced meanwhile is gone.
                    Ok(None) => vec![Change::Resync],
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(e) => {
                        if connected {
                            warn!(error = %e, "lost the metadata store's change announcements; retrying");
                        }
                        connected = false;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        vec![Change::Resync]
                    }
                };
                for c in changes {
                    if tx.send(c).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Some(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_and_ignore_garbage() {
        assert_eq!(
            parse_payload("e:1:0:10;e:1:3:7;d:4;x:y;e:bad:1:2"),
            vec![
                Change::Ends(vec![(1, 0, 10), (1, 3, 7)]),
                Change::StreamDropped(4)
            ]
        );
        assert!(parse_payload("").is_empty());
    }
}
