//! The embedded metadata store: SQLite in the data directory.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a committed flush
//! survives a crash of the process or the machine. Writes are serialized by
//! an in-process mutex and run as `BEGIN IMMEDIATE` transactions; the data
//! directory lock (see `crate::log`) keeps other processes out. Reads use the
//! pool concurrently and see only committed state.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, Sqlite, SqliteConnection, Transaction};
use tokio::sync::Mutex;

use super::commit;
use super::rows::{self, AGENT_COLUMNS, CHUNK_COLUMNS, STREAM_COLUMNS, VIEW_COLUMNS};
use crate::groups::rules::{CommitCheck, GroupOp, StoredGroup};

use super::{
    AgentRecord, ChunkRecord, CommitOutcome, FlushCommit, MetadataStore, PartitionStats,
    TimeFilter, ViewCheckpoint, ViewRecord,
};
use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::stream::{StreamId, StreamInfo, StreamSpec, encode_schema};

/// SQLite-backed [`MetadataStore`].
#[derive(Debug)]
pub struct SqliteMetadata {
    pool: SqlitePool,
    write: Mutex<()>,
}

impl SqliteMetadata {
    /// Opens (creating if missing) the database file at `path` and applies
    /// pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::connect_file(opts).await
    }

    /// Opens a `sqlite://…` URL (e.g. `sqlite:///var/lib/sh/meta.db`).
    pub async fn open_url(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        Self::connect_file(opts).await
    }

    /// A private in-memory database (tests): one connection, or each
    /// connection would see a database of its own.
    pub async fn open_in_memory() -> Result<Self> {
        let opts = base_options(SqliteConnectOptions::from_str("sqlite::memory:")?);
        let pool = pool_options(1).connect_with(opts).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            write: Mutex::new(()),
        })
    }

    async fn connect_file(opts: SqliteConnectOptions) -> Result<Self> {
        let opts = base_options(opts);
        // Openers of one file migrate one at a time (SQLite's migrator takes
        // no lock of its own): an exclusive lock on a file beside it.
        let lock_path = {
            let mut p = opts.get_filename().as_os_str().to_owned();
            p.push(".migrate-lock");
            std::path::PathBuf::from(p)
        };
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let f = std::fs::File::create(&lock_path)?;
            f.lock()?;
            Ok(f)
        })
        .await
        .map_err(|e| LogError::Internal(format!("migration lock: {e}")))??;
        // One bootstrap connection switches the file to WAL (a persistent
        // setting) and migrates. Pooled connections never set the journal
        // mode: doing so takes an exclusive lock that busy_timeout cannot
        // wait on, so concurrent opens would fail with "database is locked".
        let mut boot =
            SqliteConnection::connect_with(&opts.clone().journal_mode(SqliteJournalMode::Wal))
                .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run_direct(None, &mut boot, false)
            .await?;
        boot.close().await?;
        drop(lock);
        let pool = pool_options(4).connect_with(opts).await?;
        Ok(Self {
            pool,
            write: Mutex::new(()),
        })
    }
}

/// Settings every connection gets.
fn base_options(opts: SqliteConnectOptions) -> SqliteConnectOptions {
    opts.synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
}

fn pool_options(max: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
}

fn u(v: u64) -> i64 {
    v as i64
}

async fn stream_in_tx(tx: &mut Transaction<'_, Sqlite>, name: &str) -> Result<Option<StreamInfo>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {STREAM_COLUMNS} FROM streams WHERE name = ?"
    )))
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(rows::stream).transpose()
}

/// A group's stored state, read inside a write transaction.
async fn load_group(tx: &mut Transaction<'_, Sqlite>, group: &str) -> Result<Option<StoredGroup>> {
    let Some(row) = sqlx::query(
        "SELECT stream_id, partitions, strategy, generation FROM consumer_groups \
         WHERE group_id = ?",
    )
    .bind(group)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let members = sqlx::query(
        "SELECT member_id, heartbeat_at_us, timeout_us FROM group_members WHERE group_id = ?",
    )
    .bind(group)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Some(rows::stored_group(&row, &members)?))
}

#[async_trait]
impl MetadataStore for SqliteMetadata {
    async fn create_stream(&self, spec: &StreamSpec, created_at: Micros) -> Result<StreamInfo> {
        spec.validate()?;
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if stream_in_tx(&mut tx, &spec.name).await?.is_some() {
            return Err(LogError::StreamExists(spec.name.clone()));
        }
        let key = serde_json::to_string(&spec.key)
            .map_err(|e| LogError::Internal(format!("encode key: {e}")))?;
        let id: i64 = sqlx::query(
            "INSERT INTO streams (name, schema_ipc, partitions, key_columns, event_time_column, \
             watermark_delay_us, retention_us, created_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             RETURNING id",
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
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        for p in 0..spec.partitions {
            sqlx::query(
                "INSERT INTO partitions (stream_id, partition_no, next_offset) VALUES (?, ?, 0)",
            )
            .bind(id)
            .bind(p as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(StreamInfo {
            id,
            spec: spec.clone(),
            created_at,
        })
    }

    async fn drop_stream(&self, name: &str) -> Result<StreamInfo> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let info = stream_in_tx(&mut tx, name)
            .await?
            .ok_or_else(|| LogError::UnknownStream(name.to_string()))?;
        // Children first: the cascade would do it, but explicit deletes keep
        // the PostgreSQL sibling's behaviour identical without relying on it.
        for table in [
            "chunks",
            "partitions",
            "producers",
            "group_offsets",
            "consumer_groups",
        ] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE stream_id = ?"
            )))
            .bind(info.id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM streams WHERE id = ?")
            .bind(info.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(info)
    }

    async fn stream(&self, name: &str) -> Result<Option<StreamInfo>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {STREAM_COLUMNS} FROM streams WHERE name = ?"
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
            "SELECT next_offset FROM partitions WHERE stream_id = ? ORDER BY partition_no",
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
                    coalesce(sum(c.end_offset - c.base_offset), 0) AS rows_held, \
                    coalesce(sum(c.byte_len), 0) AS bytes, count(c.base_offset) AS chunks, \
                    max(c.max_append_time_us) AS last_append \
             FROM partitions p LEFT JOIN chunks c \
               ON c.stream_id = p.stream_id AND c.partition_no = p.partition_no \
             WHERE p.stream_id = ? GROUP BY p.partition_no, p.next_offset ORDER BY p.partition_no",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::partition_stats).collect()
    }

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
        let plan = match commit::plan(c, next, &stored)? {
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

    async fn commit_group_offsets(
        &self,
        group: &str,
        stream_id: StreamId,
        offsets: &[(u32, u64)],
        committed_at: Micros,
        check: Option<&CommitCheck>,
    ) -> Result<()> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(check) = check {
            let stored = load_group(&mut tx, group).await?;
            crate::groups::rules::check_commit(group, stored.as_ref(), check)?;
        }
        for &(partition, offset) in offsets {
            sqlx::query(
                "INSERT INTO group_offsets \
                 (group_id, stream_id, partition_no, next_offset, committed_at_us) \
                 VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (group_id, stream_id, partition_no) DO UPDATE SET \
                 next_offset = excluded.next_offset, committed_at_us = excluded.committed_at_us",
            )
            .bind(group)
            .bind(stream_id)
            .bind(partition as i64)
            .bind(u(offset))
            .bind(committed_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn update_group(
        &self,
        group: &str,
        op: &GroupOp,
        now: Micros,
    ) -> Result<Option<StoredGroup>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let stored = load_group(&mut tx, group).await?;
        let Some(g) = crate::groups::rules::apply(group, stored, op, now)? else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO consumer_groups (group_id, stream_id, partitions, strategy, generation) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET \
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
        sqlx::query("DELETE FROM group_members WHERE group_id = ?")
            .bind(group)
            .execute(&mut *tx)
            .await?;
        for (id, m) in &g.members {
            sqlx::query(
                "INSERT INTO group_members (group_id, member_id, heartbeat_at_us, timeout_us) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(group)
            .bind(id)
            .bind(m.heartbeat_at)
            .bind(m.timeout.as_micros() as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(g))
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

    async fn group_names(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT group_id FROM consumer_groups ORDER BY group_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("group_id")?)).collect()
    }

    async fn group_offsets(&self, group: &str, stream_id: StreamId) -> Result<Vec<(u32, u64)>> {
        let rows = sqlx::query(
            "SELECT partition_no, next_offset FROM group_offsets \
             WHERE group_id = ? AND stream_id = ? ORDER BY partition_no",
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

    async fn create_view(&self, view: &ViewRecord, created_at: Micros) -> Result<()> {
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "INSERT INTO views \
             (name, dataflow, definition, created_at_us, owner, epoch, lease_until_us) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
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
        let _w = self.write.lock().await;
        let done = sqlx::query("DELETE FROM views WHERE name = ?")
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
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "UPDATE views SET checkpoint_no = ?, input_offsets = ?, state_key = ?, \
             checkpointed_at_us = ? \
             WHERE name = ? AND dataflow = ? AND epoch = ? \
             AND (checkpoint_no IS NULL OR checkpoint_no < ?)",
        )
        .bind(u(checkpoint.number))
        .bind(&checkpoint.input_offsets)
        .bind(&checkpoint.state_key)
        .bind(at)
        .bind(name)
        .bind(dataflow)
        .bind(u(epoch))
        .bind(u(checkpoint.number))
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

    async fn acquire_view_lease(
        &self,
        name: &str,
        agent: &str,
        now: Micros,
        until: Micros,
        steal: bool,
    ) -> Result<Option<u64>> {
        let _w = self.write.lock().await;
        let row = sqlx::query(
            "UPDATE views SET owner = ?, epoch = epoch + 1, lease_until_us = ? \
             WHERE name = ? AND (? OR owner IS NULL OR lease_until_us IS NULL \
                                 OR lease_until_us < ?) \
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
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "UPDATE views SET lease_until_us = ? WHERE name = ? AND owner = ? AND epoch = ?",
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
        let _w = self.write.lock().await;
        sqlx::query(
            "UPDATE views SET owner = NULL, lease_until_us = NULL \
             WHERE name = ? AND owner = ? AND epoch = ?",
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

    async fn register_agent(&self, a: &AgentRecord) -> Result<()> {
        let _w = self.write.lock().await;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) \
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
        sqlx::query("DELETE FROM agents WHERE heartbeat_at_us < ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A reopened file must not report "database is locked" while the pool
    /// opens its connections under concurrent use (one process holds the
    /// file: the data-directory lock keeps others out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopening_under_concurrent_use_never_reports_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        for _ in 0..10 {
            let m = Arc::new(SqliteMetadata::open(&path).await.unwrap());
            let reads = (0..8).map(|_| {
                let m = m.clone();
                tokio::spawn(async move { m.streams().await })
            });
            for r in futures::future::join_all(reads).await {
                r.unwrap().unwrap();
            }
            m.close().await;
        }
    }
}
