//! What the two metadata stores have in common, and where they differ.
//!
//! A [`Statement`] is SQL text with `$1`, `$2`, … parameters (both SQLite
//! and PostgreSQL read that form) and its arguments; [`Sql`] runs one on a
//! connection of either driver. The store operations are written once over
//! these (`super::queries`), for any [`Backend`]: the backend says how to
//! get a connection for reads, a write transaction, or a single write, and
//! supplies the few pieces that differ — row locks (`FOR UPDATE`), advisory
//! locks, change announcements, and the statements PostgreSQL batches into
//! arrays so that a transaction's statement count does not grow with its
//! size.

use std::collections::BTreeMap;
use std::ops::DerefMut;

use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::commit::TxnState;
use super::rows::MetaRow;
use super::{CommitOutcome, FlushCommit, TxnCommit};
use crate::clock::Micros;
use crate::error::Result;
use crate::groups::rules::StoredGroup;
use crate::stream::StreamId;

/// A value bound to a statement parameter.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
    Bytes(Vec<u8>),
    Bool(bool),
}

/// SQL text with `$n` parameters and their arguments, in order.
#[derive(Debug, Clone)]
pub(super) struct Statement {
    sql: String,
    args: Vec<Arg>,
}

impl Statement {
    /// A statement with no arguments yet.
    pub(super) fn new(sql: impl Into<String>) -> Statement {
        Statement {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    pub(super) fn int(mut self, v: i64) -> Statement {
        self.args.push(Arg::Int(v));
        self
    }

    /// An unsigned offset, sequence or epoch (stored as a 64-bit integer).
    pub(super) fn uint(self, v: u64) -> Statement {
        self.int(v as i64)
    }

    pub(super) fn opt_int(mut self, v: Option<i64>) -> Statement {
        self.args.push(Arg::OptInt(v));
        self
    }

    pub(super) fn text(mut self, v: impl Into<String>) -> Statement {
        self.args.push(Arg::Text(v.into()));
        self
    }

    pub(super) fn opt_text(mut self, v: Option<String>) -> Statement {
        self.args.push(Arg::OptText(v));
        self
    }

    pub(super) fn bytes(mut self, v: Vec<u8>) -> Statement {
        self.args.push(Arg::Bytes(v));
        self
    }

    pub(super) fn bool(mut self, v: bool) -> Statement {
        self.args.push(Arg::Bool(v));
        self
    }
}

/// Runs statements on one connection (or transaction) of a driver.
#[async_trait]
pub(super) trait Sql: Send {
    type Row: MetaRow + Send + Sync;
    /// Runs `s`; the rows it changed.
    async fn execute(&mut self, s: Statement) -> Result<u64>;
    /// Every row `s` returns.
    async fn fetch_all(&mut self, s: Statement) -> Result<Vec<Self::Row>>;
    /// The first row `s` returns, if any.
    async fn fetch_optional(&mut self, s: Statement) -> Result<Option<Self::Row>>;
}

macro_rules! sql_for {
    ($conn:ty, $row:ty) => {
        #[async_trait]
        impl Sql for $conn {
            type Row = $row;

            async fn execute(&mut self, s: Statement) -> Result<u64> {
                Ok(bind!(s).execute(&mut *self).await?.rows_affected())
            }

            async fn fetch_all(&mut self, s: Statement) -> Result<Vec<$row>> {
                Ok(bind!(s).fetch_all(&mut *self).await?)
            }

            async fn fetch_optional(&mut self, s: Statement) -> Result<Option<$row>> {
                Ok(bind!(s).fetch_optional(&mut *self).await?)
            }
        }
    };
}

/// The sqlx query of a [`Statement`], its arguments bound.
macro_rules! bind {
    ($s:expr) => {{
        let Statement { sql, args } = $s;
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for a in args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::OptInt(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::OptText(v) => q.bind(v),
                Arg::Bytes(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q
    }};
}

sql_for!(SqliteConnection, SqliteRow);
sql_for!(PgConnection, PgRow);

/// A metadata database: how to reach it, and the statements in which the
/// two dialects differ. Every store operation is written once over this
/// (`super::queries`); the defaults are statement-per-row SQL both
/// databases run.
#[async_trait]
pub(super) trait Backend: Send + Sync + 'static {
    type Conn: Sql + Send;
    /// A pooled connection: reads see committed state.
    type Reader: DerefMut<Target = Self::Conn> + Send;
    /// A write transaction; dropped without [`Backend::commit`], it rolls
    /// back.
    type Writer: DerefMut<Target = Self::Conn> + Send;
    /// A connection for one statement that writes, outside a transaction.
    type Single: DerefMut<Target = Self::Conn> + Send;

    /// Appended to a `SELECT` that reads rows the transaction then
    /// changes: ` FOR UPDATE` where other writers run at the same time.
    const FOR_UPDATE: &'static str;
    /// The function that takes the larger of two integers.
    const GREATEST: &'static str;

    async fn reader(&self) -> Result<Self::Reader>;
    async fn writer(&self) -> Result<Self::Writer>;
    async fn single(&self) -> Result<Self::Single>;
    async fn commit(w: Self::Writer) -> Result<()>;

    /// Holds `key` of lock space `space` until the transaction ends, so
    /// that operations on one key run one at a time; nothing where writes
    /// are serial anyway.
    async fn lock_key(_c: &mut Self::Conn, _space: i64, _key: &str) -> Result<()> {
        Ok(())
    }

    /// Tells other agents about `changes` (see `MetadataStore::changes`)
    /// when the transaction commits; nothing where no one else listens.
    async fn announce(_c: &mut Self::Conn, _changes: &[String]) -> Result<()> {
        Ok(())
    }

    /// [`super::ChunkStore::commit_flush`]: the decisions of
    /// `super::commit`, in this dialect's statements.
    async fn commit_chunks(&self, c: &FlushCommit) -> Result<CommitOutcome>;

    /// The current state of some transactional producers (absent: never
    /// started), their rows locked until the transaction ends.
    async fn transactional_epochs(
        c: &mut Self::Conn,
        ids: &[String],
    ) -> Result<BTreeMap<String, TxnState>> {
        let mut epochs = BTreeMap::new();
        for id in ids {
            let row = c
                .fetch_optional(
                    Statement::new(format!(
                        "SELECT epoch, txn_no FROM transactional_producers \
                         WHERE transactional_id = $1{}",
                        Self::FOR_UPDATE
                    ))
                    .text(id),
                )
                .await?;
            if let Some(r) = row {
                let state = TxnState {
                    epoch: r.int("epoch")? as u64,
                    txn_no: r.int("txn_no")? as u64,
                };
                epochs.insert(id.clone(), state);
            }
        }
        Ok(epochs)
    }

    /// Ends the open transaction of each of `txns` that took shared rows:
    /// forgets them and moves the transaction number on (after the checks
    /// of [`super::commit::transaction_rejection`], in the same
    /// transaction).
    async fn end_shared_transactions(c: &mut Self::Conn, txns: &[TxnCommit]) -> Result<()> {
        for t in txns {
            let Some(n) = t.shared else { continue };
            // The committed runs: a late staging of one is a duplicate.
            for &(stream, partition, next) in &t.sequences {
                c.execute(
                    Statement::new(
                        "INSERT INTO shared_sequences \
                         (transactional_id, epoch, stream_id, partition_no, next_seq) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (transactional_id, stream_id, partition_no) DO UPDATE \
                         SET epoch = excluded.epoch, next_seq = excluded.next_seq \
                         WHERE shared_sequences.epoch <> excluded.epoch \
                         OR shared_sequences.next_seq < excluded.next_seq",
                    )
                    .text(&t.transactional_id)
                    .uint(t.epoch)
                    .int(stream)
                    .int(i64::from(partition))
                    .uint(next),
                )
                .await?;
            }
            c.execute(
                Statement::new(
                    "DELETE FROM shared_staged \
                     WHERE transactional_id = $1 AND epoch = $2 AND txn_no = $3",
                )
                .text(&t.transactional_id)
                .uint(t.epoch)
                .uint(n),
            )
            .await?;
            c.execute(
                Statement::new(
                    "UPDATE transactional_producers SET txn_no = txn_no + 1 \
                     WHERE transactional_id = $1",
                )
                .text(&t.transactional_id),
            )
            .await?;
        }
        Ok(())
    }

    /// Upserts a group's next offsets for some partitions of a stream (the
    /// last of several for one partition wins).
    async fn write_group_offsets(
        c: &mut Self::Conn,
        group: &str,
        stream_id: StreamId,
        offsets: &[(u32, u64)],
        committed_at: Micros,
    ) -> Result<()> {
        for &(partition, offset) in offsets {
            c.execute(
                Statement::new(
                    "INSERT INTO group_offsets \
                     (group_id, stream_id, partition_no, next_offset, committed_at_us) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (group_id, stream_id, partition_no) DO UPDATE SET \
                     next_offset = excluded.next_offset, \
                     committed_at_us = excluded.committed_at_us",
                )
                .text(group)
                .int(stream_id)
                .int(partition as i64)
                .uint(offset)
                .int(committed_at),
            )
            .await?;
        }
        Ok(())
    }

    /// Writes a group's members (its old members were deleted).
    async fn write_members(c: &mut Self::Conn, group: &str, g: &StoredGroup) -> Result<()> {
        for (id, m) in &g.members {
            c.execute(
                Statement::new(
                    "INSERT INTO group_members \
                     (group_id, member_id, heartbeat_at_us, timeout_us) \
                     VALUES ($1, $2, $3, $4)",
                )
                .text(group)
                .text(id)
                .int(m.heartbeat_at)
                .int(m.timeout.as_micros() as i64),
            )
            .await?;
        }
        Ok(())
    }
}
