//! The transactional producers a Kafka door has started on this agent, as
//! their clients know them: Kafka producer id and epoch, the log
//! producer's epoch and the next sequence per partition (the open
//! transaction's rows and offsets are the log producer's). The requests
//! that change them are
//! handled in `txns`; a producer started on another agent is not here
//! (its rows staged on this agent go through the log's shared staging).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kafka_protocol::ResponseError as E;
use streamhouse_log::monotonic;
use tokio::time::Instant;

use crate::records::Sequences;

/// A producer idle this long is forgotten (as the log forgets it).
pub(crate) const IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The transactional producers started on this agent.
#[derive(Default)]
pub struct Txns {
    inner: Mutex<HashMap<String, Txn>>,
}

/// One transactional producer, as its Kafka client knows it.
pub(crate) struct Txn {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    /// The log producer's epoch.
    pub(crate) log_epoch: u64,
    /// The next sequence per (topic, partition), for this epoch.
    pub(crate) next: HashMap<(String, i32), i32>,
    pub(crate) used: Instant,
}

/// What a transactional produce may do with its batch.
pub enum Staging {
    /// Stage it under the log producer's epoch.
    Stage(u64),
    /// It was staged before (a retry): answer DUPLICATE_SEQUENCE_NUMBER.
    Duplicate,
}

/// The Kafka producer id of a transactional id: positive, 62 bits, the
/// same on every agent.
pub fn producer_id(transactional_id: &str) -> i64 {
    (xxhash_rust::xxh3::xxh3_64(transactional_id.as_bytes()) & ((1 << 62) - 1)) as i64
}

/// The Kafka epoch of a log epoch.
pub(crate) fn kafka_epoch(log_epoch: u64) -> i16 {
    (log_epoch % i16::MAX as u64) as i16
}

impl Txns {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Txn>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether producer `id` was started on this agent (and not forgotten).
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Forgets producer `id` if this agent started it in an epoch before
    /// `current` (it was started again on another agent since).
    pub(crate) fn forget_before(&self, id: &str, current: u64) {
        let mut all = self.lock();
        if all.get(id).is_some_and(|t| t.log_epoch < current) {
            all.remove(id);
        }
    }

    /// Runs `f` on producer `id` if `producer_id` and `epoch` are its
    /// current ones, else the Kafka error saying why not.
    pub(crate) fn with<T>(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        f: impl FnOnce(&mut Txn) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut all = self.lock();
        let Some(t) = all.get_mut(id) else {
            return Err(E::InvalidProducerIdMapping);
        };
        if t.producer_id != producer_id {
            return Err(E::InvalidProducerIdMapping);
        }
        if t.epoch != epoch {
            return Err(E::ProducerFenced);
        }
        t.used = monotonic();
        f(t)
    }

    /// Whether a transactional produce of `s` to `topic`'s `partition` may
    /// be staged; a staged batch moves the partition's next sequence on.
    pub fn stage(&self, id: &str, s: Sequences, topic: &str, partition: i32) -> Result<Staging, E> {
        self.with(id, s.producer_id, s.epoch, |t| {
            if s.last < s.first || s.first < 0 {
                return Err(E::InvalidRecord);
            }
            // A partition this agent has not staged for in this epoch
            // (its leader may have moved here) starts where the batch does.
            let next = t
                .next
                .entry((topic.to_string(), partition))
                .or_insert(s.first);
            if s.first == *next {
                *next = s.last.checked_add(1).ok_or(E::InvalidRecord)?;
                Ok(Staging::Stage(t.log_epoch))
            } else if s.last < *next {
                Ok(Staging::Duplicate)
            } else {
                Err(E::OutOfOrderSequenceNumber)
            }
        })
    }

    /// Gives back the sequences of a batch the log refused to stage.
    pub fn unstage(&self, id: &str, s: Sequences, topic: &str, partition: i32) {
        let _ = self.with(id, s.producer_id, s.epoch, |t| {
            if let Some(next) = t.next.get_mut(&(topic.to_string(), partition))
                && s.last.checked_add(1) == Some(*next)
            {
                *next = s.first;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(first: i32, last: i32, epoch: i16) -> Sequences {
        Sequences {
            producer_id: producer_id("t"),
            epoch,
            first,
            last,
        }
    }

    #[test]
    fn sequences_go_on_per_partition_and_old_epochs_are_fenced() {
        let txns = Txns::default();
        assert!(matches!(
            txns.stage("t", seqs(0, 4, 3), "a", 0),
            Err(E::InvalidProducerIdMapping)
        ));
        txns.lock().insert(
            "t".into(),
            Txn {
                producer_id: producer_id("t"),
                epoch: 3,
                log_epoch: 3,
                next: HashMap::new(),
                used: monotonic(),
            },
        );
        assert!(matches!(
            txns.stage("t", seqs(0, 4, 3), "a", 0),
            Ok(Staging::Stage(3))
        ));
        // A retry of the batch, and of an older one.
        assert!(matches!(
            txns.stage("t", seqs(0, 4, 3), "a", 0),
            Ok(Staging::Duplicate)
        ));
        assert!(matches!(
            txns.stage("t", seqs(7, 9, 3), "a", 0),
            Err(E::OutOfOrderSequenceNumber)
        ));
        // Each partition has its own sequences.
        assert!(matches!(
            txns.stage("t", seqs(0, 0, 3), "a", 1),
            Ok(Staging::Stage(3))
        ));
        assert!(matches!(
            txns.stage("t", seqs(5, 6, 3), "a", 0),
            Ok(Staging::Stage(3))
        ));
        // A batch the log refused gives its sequences back.
        txns.unstage("t", seqs(5, 6, 3), "a", 0);
        assert!(matches!(
            txns.stage("t", seqs(5, 6, 3), "a", 0),
            Ok(Staging::Stage(3))
        ));
        assert!(matches!(
            txns.stage("t", seqs(7, 7, 2), "a", 0),
            Err(E::ProducerFenced)
        ));
        let mut other = seqs(7, 7, 3);
        other.producer_id += 1;
        assert!(matches!(
            txns.stage("t", other, "a", 0),
            Err(E::InvalidProducerIdMapping)
        ));
        assert_eq!(kafka_epoch(3), 3);
        assert_eq!(kafka_epoch(i16::MAX as u64 + 2), 2);
        assert!(producer_id("t") > 0);
    }
}
