//! Transactional producers: appends to several streams and a consumer
//! group's offsets, visible together at commit or never (read, process,
//! write, exactly once).
//!
//! A producer names itself with a transactional id and starts
//! ([`Log::init_transactions`]): the metadata store bumps the id's epoch,
//! which fences every older instance of it. It then stages batches
//! ([`Log::stage_transactional`]) and commits ([`Log::commit_transaction`])
//! or aborts ([`Log::abort_transaction`]); the next transaction begins with
//! its next staged batch.
//!
//! Staged rows stay in this process, checked against their stream and split
//! by partition ([`Log::stage`]); nothing is written before the commit. The
//! commit is one group of the writer: one flush and one metadata
//! transaction, which checks that the epoch is still the id's current one
//! and writes the group offsets. So a crash or a vanished producer before
//! the commit leaves nothing, and an older instance cannot commit once a
//! newer one has started, on this agent or another.
//!
//! A producer's calls go to the agent it started on (its staged rows live
//! there), except that rows and offsets may be staged on another agent
//! through the metadata and object stores (`shared`, for Kafka clients,
//! which send each partition's records to its leader) and committed with
//! [`Log::commit_transaction_shared`].
//!
//! Each transaction of an epoch has a number ([`Log::open_transaction`]);
//! a call to end one may name it, and then ends that transaction or, when
//! it has ended already (the call was sent again by a client that gave up
//! on it, and is handled late), answers as the first call did — a repeated
//! commit succeeds with nothing written, a repeated abort does nothing —
//! so it cannot end a later transaction.
//!
//! Bounds: a transaction open longer than its timeout (default 60 s, at
//! most 15 min) or whose staged rows pass 256 MiB is rolled back, as is
//! one whose batch was refused or whose commit failed (its rows went with
//! it: a retried commit must not succeed with what is left); the producer
//! is told at its next call and must abort (or commit, which is refused)
//! before it goes on. At most 100,000 producers are known at once; one
//! idle for 7 days is forgotten.

pub(crate) mod producers;
mod shared;

use std::time::Duration;

use arrow::array::RecordBatch;

use crate::clock::monotonic;
use crate::error::{LogError, Result};
use crate::log::{AppendOptions, Log};
use crate::metadata::{GroupOffsets, SeqRun, TxnCommit};
use crate::staged::StagedAppend;
use crate::writer::AppendAck;

use producers::{Ended, Producer};

/// How long a transaction may stay open unless its producer says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest timeout a producer may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Staged rows per transaction, at most (memory, as Arrow holds them).
pub const MAX_STAGED_BYTES: usize = 256 << 20;
/// Producers known to one process, at most.
pub const MAX_PRODUCERS: usize = 100_000;
/// The longest transactional id.
const MAX_ID_BYTES: usize = 255;

/// Offsets a transaction commits for a consumer group on a stream.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    pub group: String,
    pub stream: String,
    /// (partition, next offset to read).
    pub offsets: Vec<(u32, u64)>,
}

/// A transaction's staged batches with each run of producer sequences kept
/// once, in sequence order per partition: when a partition's leader moved
/// mid-transaction, a Kafka client's retry of a batch may have been
/// staged by the new leader as well as the old.
fn one_per_run(mut staged: Vec<StagedAppend>) -> Vec<StagedAppend> {
    let key = |s: &StagedAppend| {
        s.seq
            .map(|r| (s.info.id, s.parts.first().map(|p| p.0), r.first, r.last))
    };
    staged.sort_by_key(|s| key(s));
    let mut seen = std::collections::HashSet::new();
    staged.retain(|s| key(s).is_none_or(|k| seen.insert(k)));
    staged
}

/// (stream, partition, next sequence) after the runs of producer
/// sequences in `staged`.
fn next_sequences(staged: &[StagedAppend]) -> Vec<(i64, u32, u64)> {
    let mut next = std::collections::BTreeMap::new();
    for s in staged {
        if let (Some(run), Some((partition, _))) = (s.seq, s.parts.first()) {
            let n = next.entry((s.info.id, *partition)).or_insert(0);
            *n = (*n).max(run.last.saturating_add(1));
        }
    }
    next.into_iter().map(|((s, p), n)| (s, p, n)).collect()
}

/// What a commit appended to one stream.
#[derive(Debug, Clone)]
pub struct CommittedAppend {
    pub stream: String,
    pub ack: AppendAck,
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(LogError::InvalidArgument(format!(
            "a transactional id has 1 to {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Log {
    /// Starts (or starts again) the transactional producer `id`: a new
    /// epoch that fences every older instance, whose open transaction is
    /// rolled back. `timeout`: how long its transactions may stay open.
    pub async fn init_transactions(&self, id: &str, timeout: Option<Duration>) -> Result<u64> {
        check_id(id)?;
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(LogError::InvalidArgument(format!(
                "a transaction timeout is between 1 ms and {} ms",
                MAX_TIMEOUT.as_millis()
            )));
        }
        {
            let mut inner = self.transactional.lock();
            inner.sweep(monotonic());
            if !inner.producers.contains_key(id) && inner.producers.len() >= MAX_PRODUCERS {
                return Err(LogError::LimitExceeded(format!(
                    "{MAX_PRODUCERS} transactional producers are open on this server"
                )));
            }
        }
        let epoch = self
            .metadata()
            .init_transactional_producer(id, self.now_micros())
            .await?;
        let now = monotonic();
        let mut inner = self.transactional.lock();
        // Two starts racing: the newer epoch stays.
        if inner.producers.get(id).is_none_or(|p| p.epoch < epoch) {
            inner
                .producers
                .insert(id.to_string(), Producer::new(epoch, timeout, now));
        }
        Ok(epoch)
    }

    /// Stages batches for the open transaction of producer `id` (beginning
    /// one if none is open); nothing is written until the commit. The rows
    /// staged. A batch refused (its schema, its size) rolls the transaction
    /// back.
    pub async fn stage_transactional(
        &self,
        id: &str,
        epoch: u64,
        stream: &str,
        batches: Vec<RecordBatch>,
        options: &AppendOptions,
    ) -> Result<u64> {
        self.stage_transactional_run(id, epoch, stream, batches, options, None)
            .await
    }

    /// [`Log::stage_transactional`] of a Kafka batch with its run of
    /// producer sequences (its rows go to one partition): a commit keeps
    /// one batch of each run, wherever it was staged.
    pub async fn stage_transactional_run(
        &self,
        id: &str,
        epoch: u64,
        stream: &str,
        batches: Vec<RecordBatch>,
        options: &AppendOptions,
        seq: Option<SeqRun>,
    ) -> Result<u64> {
        {
            let mut inner = self.transactional.lock();
            let p = inner.producer(id, epoch, monotonic())?;
            if let Some(why) = &p.failed {
                return Err(LogError::TransactionAborted(why.clone()));
            }
        }
        let staged = self.stage(stream, batches, options).await;
        let mut inner = self.transactional.lock();
        let now = monotonic();
        let p = inner.producer(id, epoch, now)?;
        if let Some(why) = &p.failed {
            return Err(LogError::TransactionAborted(why.clone()));
        }
        let staged = match staged {
            Ok(Some(mut s)) => {
                s.seq = seq;
                s
            }
            Ok(None) => return Ok(0),
            Err(e) => {
                p.fail(format!(
                    "the transaction of producer \"{id}\" was rolled back: a batch was refused \
                     ({e}); abort it and begin again"
                ));
                return Err(e);
            }
        };
        let bytes = staged.bytes();
        if p.bytes.saturating_add(bytes) > MAX_STAGED_BYTES {
            let why = format!(
                "the transaction of producer \"{id}\" staged more than {} MiB and was rolled \
                 back; abort it and commit smaller transactions",
                MAX_STAGED_BYTES >> 20
            );
            p.fail(why.clone());
            return Err(LogError::LimitExceeded(why));
        }
        let rows = staged.rows();
        p.bytes += bytes;
        p.began.get_or_insert(now);
        p.staged.push(staged);
        Ok(rows)
    }

    /// Commits the open transaction of producer `id`: its staged batches and
    /// `offsets`, in one flush and one metadata transaction, or nothing
    /// (`Fenced` when a newer instance has started). Answers once durable,
    /// with what each staged batch received, in staging order.
    pub async fn commit_transaction(
        &self,
        id: &str,
        epoch: u64,
        offsets: &[GroupCommit],
    ) -> Result<Vec<CommittedAppend>> {
        self.commit_with(id, epoch, None, offsets, false).await
    }

    /// [`Log::commit_transaction`] of transaction `txn` (see
    /// [`Log::open_transaction`]): a commit of one that has ended answers
    /// as its first commit did, with nothing written.
    pub async fn commit_transaction_numbered(
        &self,
        id: &str,
        epoch: u64,
        txn: u64,
        offsets: &[GroupCommit],
    ) -> Result<Vec<CommittedAppend>> {
        self.commit_with(id, epoch, Some(txn), offsets, false).await
    }

    /// The number of the open transaction of producer `id` (from 0 in each
    /// epoch; it moves on when a transaction is committed or aborted). A
    /// server takes it when a call to end a transaction arrives and passes
    /// it on, so that the call, answered late or sent again by a client
    /// that gave up on it, ends that transaction and no later one.
    pub fn open_transaction(&self, id: &str, epoch: u64) -> Result<u64> {
        let mut inner = self.transactional.lock();
        Ok(inner.producer(id, epoch, monotonic())?.txn)
    }

    /// Stages group offsets for the open transaction of producer `id`:
    /// committed with its rows, or not at all.
    pub async fn stage_transaction_offsets(
        &self,
        id: &str,
        epoch: u64,
        offsets: &[GroupCommit],
    ) -> Result<()> {
        let groups = self.checked_group_commits(offsets).await?;
        let mut inner = self.transactional.lock();
        let now = monotonic();
        let p = inner.producer(id, epoch, now)?;
        if let Some(why) = &p.failed {
            return Err(LogError::TransactionAborted(why.clone()));
        }
        p.began.get_or_insert(now);
        p.offsets.extend(groups);
        Ok(())
    }

    /// The offsets of `offsets`, checked against their streams.
    async fn checked_group_commits(&self, offsets: &[GroupCommit]) -> Result<Vec<GroupOffsets>> {
        let mut groups = Vec::with_capacity(offsets.len());
        for g in offsets {
            if g.group.is_empty() {
                return Err(LogError::InvalidArgument(
                    "a consumer group needs a name".into(),
                ));
            }
            let info = self.checked_offsets(&g.stream, &g.offsets).await?;
            groups.push(GroupOffsets {
                group: g.group.clone(),
                stream_id: info.id,
                offsets: g.offsets.clone(),
            });
        }
        Ok(groups)
    }

    /// [`Log::commit_transaction`], with the rows and offsets other agents
    /// staged for the transaction ([`Log::stage_shared`]): all of them or
    /// nothing, and the transaction ends in the same metadata transaction.
    /// `txn`: the transaction to commit ([`Log::open_transaction`] when the
    /// call arrived; `None`: the open one).
    pub async fn commit_transaction_shared(
        &self,
        id: &str,
        epoch: u64,
        txn: Option<u64>,
        offsets: &[GroupCommit],
    ) -> Result<Vec<CommittedAppend>> {
        self.commit_with(id, epoch, txn, offsets, true).await
    }

    async fn commit_with(
        &self,
        id: &str,
        epoch: u64,
        txn: Option<u64>,
        offsets: &[GroupCommit],
        with_shared: bool,
    ) -> Result<Vec<CommittedAppend>> {
        let mut groups = self.checked_group_commits(offsets).await?;
        // This call ends transaction `txn`, unless it has ended already.
        let (txn, timeout, failed) = {
            let mut inner = self.transactional.lock();
            let p = inner.producer(id, epoch, monotonic())?;
            let txn = txn.unwrap_or(p.txn);
            if txn != p.txn {
                p.ended_already(id, txn, true)?;
                return Ok(Vec::new());
            }
            p.not_committing(id, txn)?;
            let failed = p.failed.clone();
            p.ended = Some((txn, Ended::Committing));
            (txn, p.timeout(), failed)
        };
        // Ends it with `outcome`, what it staged dropped.
        let end = |outcome: Ended| -> Result<()> {
            let mut inner = self.transactional.lock();
            let p = inner.producer(id, epoch, monotonic())?;
            p.take();
            p.end(txn, outcome);
            Ok(())
        };
        if let Some(why) = failed {
            // Rolled back earlier: the refused commit ends the transaction,
            // with what other agents staged for it.
            if with_shared && let Err(e) = self.abort_shared(id, epoch).await {
                self.transactional
                    .lock()
                    .producer(id, epoch, monotonic())?
                    .ended = None;
                return Err(e);
            }
            end(Ended::Failed(why.clone()))?;
            return Err(LogError::TransactionAborted(why));
        }
        let shared = if with_shared {
            match self.take_shared(id, epoch, timeout).await {
                Ok(s) => Some(s),
                Err(LogError::TransactionAborted(why)) => {
                    // The transaction cannot commit: it is rolled back.
                    end(Ended::Failed(why.clone()))?;
                    self.abort_shared(id, epoch).await?;
                    return Err(LogError::TransactionAborted(why));
                }
                // Nothing taken yet: the commit may be tried again.
                Err(e) => {
                    self.transactional
                        .lock()
                        .producer(id, epoch, monotonic())?
                        .ended = None;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let (mut staged, own_offsets) = {
            let mut inner = self.transactional.lock();
            let p = inner.producer(id, epoch, monotonic())?;
            if let Some(why) = p.failed.clone() {
                // Rolled back while the shared rows were read: they stay
                // with the transaction, which the producer must abort.
                p.take();
                p.failed = Some(why.clone());
                p.ended = None;
                return Err(LogError::TransactionAborted(why));
            }
            let offsets = std::mem::take(&mut p.offsets);
            (p.take(), offsets)
        };
        groups.extend(own_offsets);
        let mut objects = Vec::new();
        let mut shared_no = None;
        if let Some(s) = shared {
            staged.extend(s.staged);
            groups.extend(s.offsets);
            objects = s.objects;
            shared_no = Some(s.txn_no);
            staged = one_per_run(staged);
        }
        let commit = TxnCommit {
            transactional_id: id.to_string(),
            epoch,
            offsets: groups,
            shared: shared_no,
            sequences: next_sequences(&staged),
        };
        match self.commit_staged(staged, commit).await {
            Ok(out) => {
                if let Ok(p) = self.transactional.lock().producer(id, epoch, monotonic()) {
                    p.end(txn, Ended::Committed);
                }
                self.forget_staged_objects(&objects).await;
                Ok(out)
            }
            Err(e) => {
                // The staged rows are gone with the failed commit: a retry
                // must not commit the rest as if it were all, and the
                // producer aborts before it goes on.
                let why = format!(
                    "the commit of producer \"{id}\"'s transaction failed ({e}); abort it and \
                     begin again"
                );
                if let Ok(p) = self.transactional.lock().producer(id, epoch, monotonic()) {
                    p.end(txn, Ended::Failed(why.clone()));
                    if !matches!(e, LogError::Fenced(_)) {
                        p.fail(why);
                    }
                }
                Err(e)
            }
        }
    }

    /// Appends a transaction's staged rows with its commit record, or
    /// writes only the record when nothing was staged.
    async fn commit_staged(
        &self,
        staged: Vec<StagedAppend>,
        txn: TxnCommit,
    ) -> Result<Vec<CommittedAppend>> {
        if staged.is_empty() {
            if !txn.offsets.is_empty() || txn.shared.is_some() {
                self.metadata()
                    .commit_transaction_offsets(&txn, self.now_micros())
                    .await?;
            }
            return Ok(Vec::new());
        }
        let streams: Vec<String> = staged.iter().map(|s| s.info.name().to_string()).collect();
        let submitted = self
            .writer()
            .submit_group(
                staged.into_iter().map(|s| (s.info, s.parts)).collect(),
                Some(txn),
                None,
            )
            .await?;
        let mut out = Vec::with_capacity(submitted.len());
        for (stream, s) in streams.into_iter().zip(submitted) {
            out.push(CommittedAppend {
                stream,
                ack: s.durable().await?,
            });
        }
        Ok(out)
    }

    /// Rolls back the open transaction of producer `id`: nothing it staged
    /// in this process is written (see [`Log::abort_shared`] for what
    /// other agents staged).
    pub fn abort_transaction(&self, id: &str, epoch: u64) -> Result<()> {
        self.abort_transaction_numbered(id, epoch, None).map(|_| ())
    }

    /// [`Log::abort_transaction`] of transaction `txn` (`None`: the open
    /// one); `false` when it had ended already (an abort sent again, or
    /// one that arrived after its failed commit): then nothing is done.
    pub fn abort_transaction_numbered(
        &self,
        id: &str,
        epoch: u64,
        txn: Option<u64>,
    ) -> Result<bool> {
        let mut inner = self.transactional.lock();
        let p = inner.producer(id, epoch, monotonic())?;
        let txn = txn.unwrap_or(p.txn);
        if txn != p.txn {
            p.ended_already(id, txn, false)?;
            return Ok(false);
        }
        p.not_committing(id, txn)?;
        p.take();
        p.end(txn, Ended::Aborted);
        Ok(true)
    }
}
