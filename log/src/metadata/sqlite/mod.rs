//! The embedded metadata store: SQLite in the data directory.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a committed flush
//! survives a crash of the process or the machine. Writes are serialized by
//! an in-process mutex and run as `BEGIN IMMEDIATE` transactions; the data
//! directory lock (see `crate::log`) keeps other processes out. Reads use the
//! pool concurrently and see only committed state.

mod agents;
mod chunks;
mod groups;
mod views;

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

use crate::groups::rules::{CommitCheck, GroupOp, StoredGroup};
use crate::metadata::commit;
use crate::metadata::rows::{self, AGENT_COLUMNS, CHUNK_COLUMNS, STREAM_COLUMNS, VIEW_COLUMNS};

use crate::clock::Micros;
use crate::error::{LogError, Result};
use crate::metadata::{
    AgentRecord, AgentStore, ChunkRecord, ChunkStore, CommitOutcome, FlushCommit, GroupStore,
    MetadataStore, PartitionStats, StreamStore, TimeFilter, TxnCommit, ViewCheckpoint, ViewRecord,
    ViewStore,
};
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
/// Upserts a group's next offsets for some partitions of a stream.
async fn write_group_offsets(
    tx: &mut Transaction<'_, Sqlite>,
    group: &str,
    stream_id: StreamId,
    offsets: &[(u32, u64)],
    committed_at: Micros,
) -> Result<()> {
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
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The current epochs of some transactional producers (absent: never
/// started).
async fn transactional_epochs(
    tx: &mut Transaction<'_, Sqlite>,
    ids: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, u64>> {
    let mut epochs = BTreeMap::new();
    for id in ids {
        let row =
            sqlx::query("SELECT epoch FROM transactional_producers WHERE transactional_id = ?")
                .bind(&id)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(r) = row {
            epochs.insert(id, r.try_get::<i64, _>("epoch")? as u64);
        }
    }
    Ok(epochs)
}

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
impl StreamStore for SqliteMetadata {
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
}

#[async_trait]
impl MetadataStore for SqliteMetadata {
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
