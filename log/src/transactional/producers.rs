//! The transactional producers one process has started: each one's epoch,
//! its open transaction's staged rows, and the rules that roll a
//! transaction back (timeout, refusal) or forget an idle producer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::monotonic;
use crate::error::{LogError, Result};
use crate::metadata::{GroupOffsets, fenced_message};
use crate::staged::StagedAppend;

/// A producer with nothing staged and no call for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The producers this process has started, by transactional id.
#[derive(Debug)]
pub(crate) struct TransactionalProducers {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) producers: HashMap<String, Producer>,
    swept: Instant,
}

/// How a producer's last ended transaction ended.
#[derive(Debug, Clone)]
pub(super) enum Ended {
    /// Its commit is running.
    Committing,
    Committed,
    Aborted,
    /// Its commit failed, or the server had rolled it back: why.
    Failed(String),
}

#[derive(Debug)]
pub(crate) struct Producer {
    pub(super) epoch: u64,
    /// The number of its open transaction (from 0 in each epoch): a call
    /// to end a transaction names the one it was sent for, so a call
    /// that arrives late (its client gave up on it and sent it again)
    /// cannot end the next one.
    pub(super) txn: u64,
    /// Its last ended transaction's number, and how it ended.
    pub(super) ended: Option<(u64, Ended)>,
    timeout: Duration,
    pub(super) staged: Vec<StagedAppend>,
    /// Group offsets staged for the open transaction.
    pub(super) offsets: Vec<GroupOffsets>,
    pub(super) bytes: usize,
    /// When its open transaction staged its first batch.
    pub(super) began: Option<Instant>,
    /// Why its open transaction was rolled back by the server, until the
    /// producer aborts (or tries to commit).
    pub(super) failed: Option<String>,
    used: Instant,
}

impl Producer {
    pub(super) fn new(epoch: u64, timeout: Duration, now: Instant) -> Self {
        Producer {
            epoch,
            txn: 0,
            ended: None,
            timeout,
            staged: Vec::new(),
            offsets: Vec::new(),
            bytes: 0,
            began: None,
            failed: None,
            used: now,
        }
    }

    /// How long its transactions may stay open.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Ends the open transaction; what it staged.
    pub(super) fn take(&mut self) -> Vec<StagedAppend> {
        self.offsets.clear();
        self.bytes = 0;
        self.began = None;
        self.failed = None;
        std::mem::take(&mut self.staged)
    }

    /// Ends open transaction `txn` (`outcome`): the next one opens.
    pub(super) fn end(&mut self, txn: u64, outcome: Ended) {
        self.txn = txn + 1;
        self.ended = Some((txn, outcome));
    }

    /// The answer to a call to end transaction `txn` that has already
    /// ended (or was never opened): success for a repeated commit of a
    /// committed one (`commit`) or a repeated abort of an aborted or
    /// failed one (the call is then answered with nothing done).
    pub(super) fn ended_already(&self, id: &str, txn: u64, commit: bool) -> Result<()> {
        if txn > self.txn {
            return Err(LogError::InvalidArgument(format!(
                "producer \"{id}\" has not opened transaction {txn}"
            )));
        }
        let gone = || {
            LogError::TransactionAborted(format!(
                "the transaction of producer \"{id}\" this call was sent for has ended; begin \
                 another"
            ))
        };
        // (A transaction being committed is still the open one: a second
        // call for it meets `not_committing`, not this.)
        match &self.ended {
            Some((n, e)) if *n == txn => match (e, commit) {
                (Ended::Committed, true) | (Ended::Aborted | Ended::Failed(_), false) => Ok(()),
                (Ended::Committed, false) => Err(LogError::InvalidArgument(format!(
                    "the transaction of producer \"{id}\" was committed; it cannot be aborted"
                ))),
                (Ended::Failed(why), true) => Err(LogError::TransactionAborted(why.clone())),
                (Ended::Aborted, true) | (Ended::Committing, _) => Err(gone()),
            },
            _ => Err(gone()),
        }
    }

    /// Refuses a second call to end open transaction `txn` while its
    /// commit runs.
    pub(super) fn not_committing(&self, id: &str, txn: u64) -> Result<()> {
        match &self.ended {
            Some((n, Ended::Committing)) if *n == txn => Err(LogError::Conflict(format!(
                "the transaction of producer \"{id}\" is being committed; ask again"
            ))),
            _ => Ok(()),
        }
    }

    /// Rolls the open transaction back for `why`.
    pub(super) fn fail(&mut self, why: String) {
        self.take();
        self.failed = Some(why);
    }

    /// Rolls back a transaction open past its timeout.
    fn expire(&mut self, id: &str, now: Instant) {
        if let Some(began) = self.began
            && now.duration_since(began) > self.timeout
        {
            self.fail(format!(
                "the transaction of producer \"{id}\" was open longer than its timeout ({} ms) \
                 and was rolled back; abort it and begin again",
                self.timeout.as_millis()
            ));
        }
    }
}

impl Default for TransactionalProducers {
    fn default() -> Self {
        TransactionalProducers {
            inner: Mutex::new(Inner {
                producers: HashMap::new(),
                swept: monotonic(),
            }),
        }
    }
}

impl TransactionalProducers {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// At most once a second: rolls back expired transactions (freeing
    /// their rows) and forgets long-idle producers.
    pub(super) fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < Duration::from_secs(1) {
            return;
        }
        self.swept = now;
        for (id, p) in &mut self.producers {
            p.expire(id, now);
        }
        self.producers.retain(|_, p| {
            p.began.is_some() || p.failed.is_some() || now.duration_since(p.used) < FORGET_AFTER
        });
    }

    /// The producer `id` in `epoch`, its expired transaction rolled back.
    pub(super) fn producer(&mut self, id: &str, epoch: u64, now: Instant) -> Result<&mut Producer> {
        self.sweep(now);
        let p = self
            .producers
            .get_mut(id)
            .ok_or_else(|| LogError::UnknownTransactionalProducer(id.to_string()))?;
        if epoch < p.epoch {
            return Err(LogError::Fenced(fenced_message(id, epoch, Some(p.epoch))));
        }
        if epoch > p.epoch {
            return Err(LogError::UnknownTransactionalProducer(id.to_string()));
        }
        p.used = now;
        p.expire(id, now);
        Ok(p)
    }
}
