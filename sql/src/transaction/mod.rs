//! Transaction blocks: what `BEGIN` … `COMMIT` holds, and the rules of a
//! block.
//!
//! A block buffers its writes as staged appends: rows checked against their
//! stream and split by partition when the INSERT or COPY runs (so a bad row
//! fails that statement, not the COMMIT), appended by nobody yet. `COMMIT`
//! appends them all, to any number of streams, as one atomic append
//! ([`streamhouse_log::Log::append_staged`]) and answers once it is
//! durable. Nothing reaches the log before: `ROLLBACK`, a failed block, a
//! dropped connection or a crash leave nothing behind. Savepoints are
//! positions in the list of writes.
//!
//! Rules, as PostgreSQL has them: after an error the block is failed and
//! refuses everything (25P02) but `ROLLBACK`, `ROLLBACK TO SAVEPOINT` and
//! `COMMIT` (which then rolls back). Statements that could not be undone
//! (creating or dropping streams and views) are refused inside a block
//! with 25001; that refusal leaves the block usable. The writes a block
//! holds are bounded (`transaction_buffer_size`, 256 MB by default): past
//! it the statement fails with 54000 and the block with it.
//!
//! Settings changed with `SET` inside a block are not undone by `ROLLBACK`.

pub(crate) mod overlay;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use streamhouse_log::{Micros, StagedAppend, StreamInfo};

use crate::error::{Result, SqlError};

/// A transaction-control statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
}

/// One write of a block: the rows, and when the statement ran (what a read
/// in the block shows as their `_timestamp`).
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub staged: StagedAppend,
    pub at: Micros,
}

#[derive(Debug)]
struct Savepoint {
    name: String,
    /// Writes before it.
    writes: usize,
    bytes: usize,
}

/// An open block.
#[derive(Debug, Default)]
struct Block {
    /// Tells this block from a later one of the same session.
    id: u64,
    writes: Vec<Write>,
    bytes: usize,
    savepoints: Vec<Savepoint>,
    failed: bool,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// No block: every statement commits on its own.
    Idle,
    /// In a block.
    Open,
    /// In a block that failed: only its end is accepted.
    Failed,
}

/// A session's transaction block, if one is open. Clones share it (a
/// query's rows, read after the statement returned, can still fail it).
#[derive(Debug, Default, Clone)]
pub struct Transaction(Arc<Mutex<Option<Block>>>);

/// Block ids, unique in the process.
static BLOCKS: AtomicU64 = AtomicU64::new(1);

/// What ends a block at `COMMIT`.
#[derive(Debug)]
pub(crate) enum Ending {
    /// No block was open.
    NoBlock,
    /// The block had failed: nothing is written (the tag says ROLLBACK).
    RolledBack,
    /// The writes to append, in order.
    Commit(Vec<Write>),
}

impl Transaction {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Block>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the session stands.
    pub fn state(&self) -> BlockState {
        match &*self.lock() {
            None => BlockState::Idle,
            Some(b) if b.failed => BlockState::Failed,
            Some(_) => BlockState::Open,
        }
    }

    /// A statement of the block failed: the block refuses everything but
    /// its end from now on. Nothing happens outside a block.
    pub fn fail(&self) {
        if let Some(b) = &mut *self.lock() {
            b.failed = true;
        }
    }

    /// The open block's id, if any (see [`Transaction::fail_block`]).
    pub fn block_id(&self) -> Option<u64> {
        self.lock().as_ref().map(|b| b.id)
    }

    /// Fails block `id` if it is still the open one: for an error that
    /// surfaces after its statement returned (while its rows are read).
    pub fn fail_block(&self, id: u64) {
        if let Some(b) = &mut *self.lock()
            && b.id == id
        {
            b.failed = true;
        }
    }

    /// `BEGIN`; `false` if a block was open already (it goes on, as in
    /// PostgreSQL, which only warns).
    pub(crate) fn begin(&self) -> bool {
        let mut block = self.lock();
        if block.is_some() {
            return false;
        }
        *block = Some(Block {
            id: BLOCKS.fetch_add(1, Ordering::Relaxed),
            ..Block::default()
        });
        true
    }

    /// `COMMIT`: the block ends here whatever follows.
    pub(crate) fn end(&self) -> Ending {
        match self.lock().take() {
            None => Ending::NoBlock,
            Some(b) if b.failed => Ending::RolledBack,
            Some(b) => Ending::Commit(b.writes),
        }
    }

    /// `ROLLBACK` (or the connection's end): drops the block's writes.
    pub fn rollback(&self) {
        self.lock().take();
    }

    /// `SAVEPOINT name`.
    pub(crate) fn savepoint(&self, name: &str) -> Result<()> {
        let mut guard = self.lock();
        let b = open_block(&mut guard, "SAVEPOINT")?;
        if b.failed {
            return Err(SqlError::InFailedTransaction);
        }
        let (writes, bytes) = (b.writes.len(), b.bytes);
        b.savepoints.push(Savepoint {
            name: name.to_string(),
            writes,
            bytes,
        });
        Ok(())
    }

    /// `RELEASE SAVEPOINT name`: forgets it and every later savepoint,
    /// keeping the writes.
    pub(crate) fn release(&self, name: &str) -> Result<()> {
        let mut guard = self.lock();
        let b = open_block(&mut guard, "RELEASE SAVEPOINT")?;
        if b.failed {
            return Err(SqlError::InFailedTransaction);
        }
        let i = find(b, name)?;
        b.savepoints.truncate(i);
        Ok(())
    }

    /// `ROLLBACK TO SAVEPOINT name`: drops the writes made after it and
    /// forgets later savepoints; the savepoint stays, and a failed block is
    /// usable again.
    pub(crate) fn rollback_to(&self, name: &str) -> Result<()> {
        let mut guard = self.lock();
        let b = open_block(&mut guard, "ROLLBACK TO SAVEPOINT")?;
        let i = match find(b, name) {
            Ok(i) => i,
            Err(e) => {
                b.failed = true;
                return Err(e);
            }
        };
        let (writes, bytes) = (b.savepoints[i].writes, b.savepoints[i].bytes);
        b.savepoints.truncate(i + 1);
        b.writes.truncate(writes);
        b.bytes = bytes;
        b.failed = false;
        Ok(())
    }

    /// Adds a statement's write to the open block, within `limit` bytes in
    /// all; past it the block fails (54000) and keeps nothing more.
    pub(crate) fn stage(&self, write: Write, limit: usize) -> Result<()> {
        let mut guard = self.lock();
        let Some(b) = guard.as_mut() else {
            return Err(SqlError::Internal(
                "no transaction block to write in".into(),
            ));
        };
        let bytes = write.staged.bytes();
        let total = b.bytes.saturating_add(bytes);
        if total > limit {
            b.failed = true;
            return Err(SqlError::ProgramLimitExceeded(format!(
                "the transaction's writes would take {total} bytes, over \
                 transaction_buffer_size ({limit} bytes); commit smaller blocks \
                 or raise the setting"
            )));
        }
        b.bytes = total;
        b.writes.push(write);
        Ok(())
    }

    /// The block's rows per stream (declared columns, by partition), with
    /// the time each write ran: what reads in the block add to what the log
    /// holds.
    pub(crate) fn pending(&self) -> Vec<(Arc<StreamInfo>, u32, RecordBatch, Micros)> {
        let guard = self.lock();
        let Some(b) = guard.as_ref() else {
            return Vec::new();
        };
        b.writes
            .iter()
            .flat_map(|w| {
                let stream = w.staged.stream().clone();
                w.staged
                    .parts()
                    .iter()
                    .map(move |(p, batch)| (stream.clone(), *p, batch.clone(), w.at))
            })
            .collect()
    }
}

fn open_block<'a>(block: &'a mut Option<Block>, what: &str) -> Result<&'a mut Block> {
    block.as_mut().ok_or_else(|| {
        SqlError::NoActiveTransaction(format!("{what} can only be used in transaction blocks"))
    })
}

/// The latest savepoint called `name`.
fn find(b: &Block, name: &str) -> Result<usize> {
    b.savepoints
        .iter()
        .rposition(|s| s.name == name)
        .ok_or_else(|| SqlError::InvalidSavepoint(format!("savepoint \"{name}\" does not exist")))
}

/// A size setting as PostgreSQL writes one: a number of bytes, or a number
/// with a unit (`B`, `kB`, `MB`, `GB`, `TB`; powers of 1024).
pub(crate) fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size \"{text}\": use a number with kB, MB, GB or TB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "kB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        other => {
            return Err(format!(
                "invalid unit \"{other}\" in \"{text}\": valid units are B, kB, MB, GB and TB"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("size \"{text}\" is too large"))
}

#[cfg(test)]
mod tests;
