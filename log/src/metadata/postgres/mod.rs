//! The cluster metadata store: PostgreSQL, shared by every agent.
//!
//! Same tables, columns and behaviour as the SQLite store; what differs is
//! that several agents commit at once:
//! - A flush's transaction locks the partition rows it advances
//!   (`FOR UPDATE`, in key order, so two flushes never deadlock on them),
//!   then takes a transaction-scoped advisory lock per idempotent producer it
//!   records (in lock-id order), so offsets stay dense and each producer's
//!   sequence is checked and advanced by one agent at a time. It locks
//!   the rows of the transactional producers it commits for (`FOR UPDATE`),
//!   so no producer starts a new epoch while its old one commits. A flush is one
//!   transaction of a fixed number of statements, however many chunks it has
//!   (arrays are passed whole and `unnest`ed).
//! - Commits announce what they changed with `pg_notify` inside the
//!   transaction (delivered only if it commits) on one channel that every
//!   agent LISTENs to ([`MetadataStore::changes`]), so a tail reader on one
//!   agent wakes on another agent's commit.
//! - Schema migrations run at start-up under the migrator's advisory lock:
//!   agents starting together apply them once.

mod agents;
mod chunks;
mod groups;
mod views;

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

use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::metadata::commit;
use crate::metadata::rows::{self, AGENT_COLUMNS, CHUNK_COLUMNS, STREAM_COLUMNS, VIEW_COLUMNS};
use crate::metadata::{
    AgentRecord, AgentStore, Change, ChunkRecord, ChunkStore, CommitOutcome, FlushCommit,
    GroupStore, MetadataStore, PartitionStats, StreamStore, TimeFilter, TxnCommit, ViewCheckpoint,
    ViewRecord, ViewStore,
};
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

/// Upserts a group's next offsets for some partitions of a stream (the last
/// of several for one partition wins, as in SQLite's statement-by-statement
/// upsert).
async fn write_group_offsets(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    stream_id: StreamId,
    offsets: &[(u32, u64)],
    committed_at: Micros,
) -> Result<()> {
    let by_partition: BTreeMap<u32, u64> = offsets.iter().copied().collect();
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The current epochs of some transactional producers (absent: never
/// started), their rows locked until the transaction ends so that no
/// producer starts again while a commit of its old epoch is deciding.
async fn transactional_epochs(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[String],
) -> Result<BTreeMap<String, u64>> {
    let rows = sqlx::query(
        "SELECT transactional_id, epoch FROM transactional_producers \
         WHERE transactional_id = ANY($1) ORDER BY transactional_id FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut epochs = BTreeMap::new();
    for r in &rows {
        epochs.insert(
            r.try_get("transactional_id")?,
            r.try_get::<i64, _>("epoch")? as u64,
        );
    }
    Ok(epochs)
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
impl StreamStore for PostgresMetadata {
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
}

#[async_trait]
impl MetadataStore for PostgresMetadata {
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
