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
//!
//! The store's operations are the shared ones (`super::queries`) over this
//! [`Backend`], which adds the row and advisory locks, the announcements
//! and the array statements; the flush commit is `flush`.

mod flush;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::clock::Micros;
use crate::error::Result;
use crate::groups::rules::StoredGroup;
use crate::metadata::commit::TxnState;
use crate::metadata::sql::Backend;
use crate::metadata::{Change, CommitOutcome, FlushCommit, MetadataStore};
use crate::stream::StreamId;

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

/// Sends `changes` to every listening agent when `tx` commits.
async fn announce(c: &mut PgConnection, changes: &[String]) -> Result<()> {
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
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Parses one notification payload (`e:stream:partition:end`, `d:stream`
/// and `r` (roles changed) items separated by `;`).
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
            (Some("s"), Some(s), None, None) => {
                if let Ok(s) = s.parse() {
                    out.push(Change::StreamChanged(s));
                }
            }
            (Some("r"), None, None, None) => out.push(Change::Roles),
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
    c: &mut PgConnection,
    group: &str,
    stream_id: StreamId,
    offsets: &[(u32, u64)],
    committed_at: Micros,
) -> Result<()> {
    let by_partition: BTreeMap<u32, u64> = offsets.iter().copied().collect();
    let (parts, offs): (Vec<i64>, Vec<i64>) = by_partition
        .iter()
        .map(|(&p, &o)| (p as i64, o as i64))
        .unzip();
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
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The current epochs of some transactional producers (absent: never
/// started), their rows locked until the transaction ends so that no
/// producer starts again while a commit of its old epoch is deciding.
async fn transactional_epochs(
    c: &mut PgConnection,
    ids: &[String],
) -> Result<BTreeMap<String, TxnState>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = sqlx::query(
        "SELECT transactional_id, epoch, txn_no FROM transactional_producers \
         WHERE transactional_id = ANY($1) ORDER BY transactional_id FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut *c)
    .await?;
    let mut epochs = BTreeMap::new();
    for r in &rows {
        let state = TxnState {
            epoch: r.try_get::<i64, _>("epoch")? as u64,
            txn_no: r.try_get::<i64, _>("txn_no")? as u64,
        };
        epochs.insert(r.try_get("transactional_id")?, state);
    }
    Ok(epochs)
}

/// Writes a group's members in one statement.
async fn write_members(c: &mut PgConnection, group: &str, g: &StoredGroup) -> Result<()> {
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
    .execute(&mut *c)
    .await?;
    Ok(())
}

#[async_trait]
impl Backend for PostgresMetadata {
    type Conn = PgConnection;
    type Reader = PoolConnection<Postgres>;
    type Writer = Transaction<'static, Postgres>;
    type Single = PoolConnection<Postgres>;

    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const GREATEST: &'static str = "GREATEST";

    async fn reader(&self) -> Result<Self::Reader> {
        Ok(self.pool.acquire().await?)
    }

    async fn writer(&self) -> Result<Self::Writer> {
        Ok(self.pool.begin().await?)
    }

    async fn single(&self) -> Result<Self::Single> {
        Ok(self.pool.acquire().await?)
    }

    async fn commit(w: Self::Writer) -> Result<()> {
        Ok(w.commit().await?)
    }

    /// A transaction-scoped advisory lock on the key's hash.
    async fn lock_key(c: &mut PgConnection, space: i64, key: &str) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
            .bind(key)
            .bind(space)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    async fn announce(c: &mut PgConnection, changes: &[String]) -> Result<()> {
        announce(c, changes).await
    }

    async fn commit_chunks(&self, c: &FlushCommit) -> Result<CommitOutcome> {
        flush::commit(self, c).await
    }

    async fn transactional_epochs(
        c: &mut PgConnection,
        ids: &[String],
    ) -> Result<BTreeMap<String, TxnState>> {
        transactional_epochs(c, ids).await
    }

    async fn write_group_offsets(
        c: &mut PgConnection,
        group: &str,
        stream_id: StreamId,
        offsets: &[(u32, u64)],
        committed_at: Micros,
    ) -> Result<()> {
        write_group_offsets(c, group, stream_id, offsets, committed_at).await
    }

    async fn write_members(c: &mut PgConnection, group: &str, g: &StoredGroup) -> Result<()> {
        write_members(c, group, g).await
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
