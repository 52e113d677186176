//! The transactional producers one process has started: each one's epoch,
//! its open transaction's staged rows, and the rules that roll a
//! transaction back (timeout, refusal) or forget an idle producer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::monotonic;
use crate::error::{LogError, Result};
use crate::metadata::fenced_message;
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

#[derive(Debug)]
pub(crate) struct Producer {
    pub(super) epoch: u64,
    timeout: Duration,
    pub(super) staged: Vec<StagedAppend>,
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
            timeout,
            staged: Vec::new(),
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
        self.bytes = 0;
        self.began = None;
        self.failed = None;
        std::mem::take(&mut self.staged)
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
