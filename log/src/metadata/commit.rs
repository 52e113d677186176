//! The decisions of a flush commit, made once for both metadata stores.
//!
//! Inside its transaction a store reads (and locks) the partitions a flush
//! advances ([`partitions`]), the state of its idempotent producers
//! ([`producers`]) and the epochs of its transactional producers
//! ([`transactional_ids`]), then calls [`plan`]: which appends cannot be
//! committed (stream dropped meanwhile, sequence already committed, epoch
//! fenced), else the base offset of every chunk, the partitions' new next
//! offsets and each producer's new state. The store writes the plan, and
//! the transactions' group offsets, in its own SQL.

use std::collections::{BTreeMap, BTreeSet};

use super::rows::{StoredProducer, encode_ack, producer_rejection, sequence_rejection};
use super::{FlushCommit, Rejection, TxnCommit};
use crate::error::{LogError, Result};
use crate::stream::StreamId;

/// A partition, as the commit keys it.
pub(super) type PartitionKey = (StreamId, u32);

/// A producer on a stream, as the commit keys it.
pub(super) type ProducerKey = (String, StreamId);

/// What a commit writes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CommitPlan {
    /// The base offset of each chunk, in order.
    pub bases: Vec<u64>,
    /// Each partition's next offset after the commit.
    pub next_offsets: BTreeMap<PartitionKey, u64>,
    /// Each producer's state after the commit.
    pub producers: BTreeMap<ProducerKey, ProducerState>,
}

/// A producer's state as a commit leaves it. The store keeps the greater of
/// `epoch` and the stored epoch.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ProducerState {
    pub last_sequence: u64,
    /// The offsets of its latest append (what a retry is answered with).
    pub last_ack: String,
    pub progress: Option<String>,
    pub epoch: u64,
}

/// The partitions the flush advances, in key order (the order to lock them).
pub(super) fn partitions(c: &FlushCommit) -> BTreeSet<PartitionKey> {
    c.chunks
        .iter()
        .map(|ch| (ch.stream_id, ch.partition))
        .collect()
}

/// The idempotent producers of the flush, in key order.
pub(super) fn producers(c: &FlushCommit) -> BTreeSet<ProducerKey> {
    c.appends
        .iter()
        .filter_map(|a| {
            a.producer
                .as_ref()
                .map(|p| (p.producer_id.clone(), a.stream_id))
        })
        .collect()
}

/// The transactional producers of the flush, in key order (the order to
/// lock them).
pub(super) fn transactional_ids(c: &FlushCommit) -> BTreeSet<String> {
    c.transactions
        .iter()
        .map(|t| t.transactional_id.clone())
        .collect()
}

/// A transactional producer as stored: its current epoch and the number
/// of its open transaction within that epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxnState {
    pub epoch: u64,
    pub txn_no: u64,
}

/// Why a transaction cannot commit over its producer's `current` state
/// (`None`: never started), if it cannot.
pub(super) fn transaction_rejection(
    txn: &TxnCommit,
    current: Option<TxnState>,
) -> Option<Rejection> {
    if current.map(|c| c.epoch) != Some(txn.epoch) {
        return Some(Rejection::TransactionFenced {
            transactional_id: txn.transactional_id.clone(),
            epoch: txn.epoch,
            current: current.map(|c| c.epoch),
        });
    }
    match (txn.shared, current) {
        (Some(n), Some(c)) if n != c.txn_no => Some(Rejection::TransactionEnded {
            transactional_id: txn.transactional_id.clone(),
        }),
        _ => None,
    }
}

/// What a commit whose transaction ended meanwhile is told.
pub(crate) fn ended_message(transactional_id: &str) -> String {
    format!(
        "the transaction of producer \"{transactional_id}\" ended (committed or aborted) \
         while this commit was deciding; nothing of it was written by this commit"
    )
}

/// What a refused transaction is told.
pub(crate) fn fenced_message(transactional_id: &str, epoch: u64, current: Option<u64>) -> String {
    match current {
        Some(current) => format!(
            "transactional producer \"{transactional_id}\" epoch {epoch} is fenced: \
             a newer instance started epoch {current}"
        ),
        None => format!("transactional producer \"{transactional_id}\" was never started"),
    }
}

/// Decides the commit of `c` over the partitions' current next offsets
/// (`next`; a partition missing from it was dropped), the producers'
/// stored state and the transactional producers' current `epochs`: the
/// rejected appends, by index, or what to write.
pub(super) fn plan(
    c: &FlushCommit,
    mut next: BTreeMap<PartitionKey, u64>,
    stored: &BTreeMap<ProducerKey, StoredProducer>,
    epochs: &BTreeMap<String, TxnState>,
) -> Result<std::result::Result<CommitPlan, Vec<(usize, Rejection)>>> {
    let mut rejections = Vec::new();
    // Each producer's last sequence as the appends before this one in the
    // flush leave it: a retry buffered beside its original is a duplicate,
    // and consecutive appends of one producer in one flush follow on.
    let mut flushed: BTreeMap<ProducerKey, u64> = BTreeMap::new();
    for (i, a) in c.appends.iter().enumerate() {
        if let Some(t) = a.transaction {
            let txn = c
                .transactions
                .get(t)
                .ok_or_else(|| LogError::Internal("append names no transaction".into()))?;
            let current = epochs.get(&txn.transactional_id).copied();
            if let Some(r) = transaction_rejection(txn, current) {
                rejections.push((i, r));
                continue;
            }
        }
        let gone = a.slices.iter().any(|&(ci, _, _)| {
            let ch = &c.chunks[ci];
            !next.contains_key(&(ch.stream_id, ch.partition))
        });
        if gone {
            rejections.push((i, Rejection::StreamGone));
            continue;
        }
        let Some(p) = &a.producer else { continue };
        let key = (p.producer_id.clone(), a.stream_id);
        let rejection = match flushed.get(&key) {
            Some(&last) => sequence_rejection(p, Some(last)),
            None => producer_rejection(p, stored.get(&key))?,
        };
        match rejection {
            Some(r) => rejections.push((i, r)),
            None => {
                flushed.insert(key, p.sequence);
            }
        }
    }
    if !rejections.is_empty() {
        return Ok(Err(rejections));
    }
    let mut bases = Vec::with_capacity(c.chunks.len());
    for ch in &c.chunks {
        let slot = next
            .get_mut(&(ch.stream_id, ch.partition))
            .ok_or_else(|| LogError::Internal("partition vanished in commit".into()))?;
        let base = *slot;
        *slot = base
            .checked_add(ch.rows)
            .ok_or_else(|| LogError::Internal("partition offset overflow".into()))?;
        bases.push(base);
    }
    let mut producers: BTreeMap<ProducerKey, ProducerState> = BTreeMap::new();
    for a in &c.appends {
        let Some(p) = &a.producer else { continue };
        let key = (p.producer_id.clone(), a.stream_id);
        // The latest append's sequence and offsets, the greatest epoch.
        let epoch = producers
            .get(&key)
            .map_or(0, |s: &ProducerState| s.epoch)
            .max(p.epoch.unwrap_or(0));
        let state = ProducerState {
            last_sequence: p.sequence,
            last_ack: encode_ack(c, a, &bases),
            progress: p.progress.clone(),
            epoch,
        };
        producers.insert(key, state);
    }
    Ok(Ok(CommitPlan {
        bases,
        next_offsets: next,
        producers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::TimeBounds;
    use crate::metadata::{AckPart, NewAppend, NewChunk, ProducerSeq};

    fn chunk(stream_id: StreamId, partition: u32, rows: u64) -> NewChunk {
        NewChunk {
            stream_id,
            partition,
            byte_range: 0..1,
            rows,
            event_time: TimeBounds::default(),
            append_time: TimeBounds::default(),
            schema_version: 1,
        }
    }

    fn producer(id: &str, sequence: u64, epoch: Option<u64>) -> Option<ProducerSeq> {
        Some(ProducerSeq {
            producer_id: id.into(),
            sequence,
            progress: Some(format!("p{sequence}")),
            epoch,
            first: None,
        })
    }

    fn flush(appends: Vec<NewAppend>) -> FlushCommit {
        FlushCommit {
            object: "o".into(),
            object_size: 1,
            created_at: 0,
            chunks: vec![chunk(1, 0, 10), chunk(1, 1, 5), chunk(2, 0, 3)],
            appends,
            transactions: Vec::new(),
        }
    }

    fn append(
        stream_id: StreamId,
        p: Option<ProducerSeq>,
        slices: Vec<(usize, u64, u64)>,
    ) -> NewAppend {
        NewAppend {
            stream_id,
            producer: p,
            transaction: None,
            slices,
        }
    }

    #[test]
    fn offsets_follow_each_partition_and_producers_keep_their_latest_append() {
        let c = flush(vec![
            append(1, producer("a", 1, Some(2)), vec![(0, 0, 4), (1, 0, 5)]),
            append(1, producer("a", 2, Some(3)), vec![(0, 4, 6)]),
            append(2, None, vec![(2, 0, 3)]),
        ]);
        assert_eq!(
            partitions(&c).into_iter().collect::<Vec<_>>(),
            [(1, 0), (1, 1), (2, 0)]
        );
        assert_eq!(producers(&c).len(), 1);
        let next = BTreeMap::from([((1, 0), 100), ((1, 1), 7), ((2, 0), 0)]);
        let plan = plan(&c, next, &BTreeMap::new(), &BTreeMap::new())
            .unwrap()
            .unwrap();
        assert_eq!(plan.bases, [100, 7, 0]);
        assert_eq!(
            plan.next_offsets,
            BTreeMap::from([((1, 0), 110), ((1, 1), 12), ((2, 0), 3)])
        );
        let a = &plan.producers[&("a".to_string(), 1)];
        assert_eq!((a.last_sequence, a.epoch), (2, 3));
        assert_eq!(a.progress.as_deref(), Some("p2"));
        let ack: Vec<(u32, u64, u64)> = serde_json::from_str(&a.last_ack).unwrap();
        assert_eq!(ack, [(0, 104, 6)]);
    }

    #[test]
    fn dropped_streams_duplicates_and_fenced_producers_are_rejected() {
        let c = flush(vec![
            append(1, producer("a", 5, None), vec![(0, 0, 10)]),
            append(1, producer("b", 9, Some(1)), vec![(1, 0, 5)]),
            append(2, None, vec![(2, 0, 3)]),
            append(1, producer("c", 3, None), vec![(0, 0, 1)]),
        ]);
        // Stream 2 was dropped; "a" already committed sequence 5, "b" was
        // fenced to epoch 4, "c" committed up to 2.
        let next = BTreeMap::from([((1, 0), 0), ((1, 1), 0)]);
        let ack = serde_json::to_string(&[(0u32, 40u64, 10u64)]).unwrap();
        let stored = BTreeMap::from([
            (
                ("a".to_string(), 1),
                StoredProducer {
                    last_sequence: 5,
                    last_ack: ack,
                    epoch: 0,
                },
            ),
            (
                ("b".to_string(), 1),
                StoredProducer {
                    last_sequence: 1,
                    last_ack: "[]".into(),
                    epoch: 4,
                },
            ),
            (
                ("c".to_string(), 1),
                StoredProducer {
                    last_sequence: 2,
                    last_ack: "[]".into(),
                    epoch: 0,
                },
            ),
        ]);
        let rejected = plan(&c, next, &stored, &BTreeMap::new())
            .unwrap()
            .unwrap_err();
        assert_eq!(
            rejected,
            [
                (
                    0,
                    Rejection::Duplicate {
                        previous: Some(vec![AckPart {
                            partition: 0,
                            base_offset: 40,
                            rows: 10
                        }])
                    }
                ),
                (
                    1,
                    Rejection::Fenced {
                        epoch: 1,
                        current: 4
                    }
                ),
                (2, Rejection::StreamGone),
            ]
        );
    }

    #[test]
    fn runs_of_sequences_must_follow_on_and_retries_in_one_flush_are_duplicates() {
        let run = |id: &str, first: u64, last: u64| {
            let mut p = producer(id, last, None);
            if let Some(p) = &mut p {
                p.first = Some(first);
            }
            p
        };
        let c = flush(vec![
            append(1, run("k", 0, 4), vec![(0, 0, 5)]),
            append(1, run("k", 5, 6), vec![(0, 5, 2)]),
            append(1, run("k", 5, 6), vec![(0, 7, 2)]),
            append(1, run("k", 9, 9), vec![(0, 9, 1)]),
            append(1, run("new", 3, 3), vec![(1, 0, 1)]),
        ]);
        let next = BTreeMap::from([((1, 0), 0), ((1, 1), 0)]);
        let rejected = plan(&c, next, &BTreeMap::new(), &BTreeMap::new())
            .unwrap()
            .unwrap_err();
        assert_eq!(
            rejected,
            [
                (2, Rejection::Duplicate { previous: None }),
                (
                    3,
                    Rejection::OutOfOrder {
                        expected: 7,
                        got: 9
                    }
                ),
                (
                    4,
                    Rejection::OutOfOrder {
                        expected: 0,
                        got: 3
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_transaction_commits_only_in_its_producers_current_epoch() {
        let txn = |id: &str, epoch| TxnCommit {
            transactional_id: id.into(),
            epoch,
            offsets: Vec::new(),
            shared: None,
            sequences: Vec::new(),
        };
        let state = |epoch| TxnState { epoch, txn_no: 0 };
        let mut c = flush(vec![
            append(1, None, vec![(0, 0, 10)]),
            append(2, None, vec![(2, 0, 3)]),
            append(1, None, vec![(1, 0, 5)]),
        ]);
        c.transactions = vec![txn("t", 2), txn("new", 1)];
        c.appends[0].transaction = Some(0);
        c.appends[1].transaction = Some(0);
        c.appends[2].transaction = Some(1);
        assert_eq!(
            transactional_ids(&c).into_iter().collect::<Vec<_>>(),
            ["new", "t"]
        );
        let next = || BTreeMap::from([((1, 0), 0), ((1, 1), 0), ((2, 0), 0)]);
        // Both current: committed.
        let epochs = BTreeMap::from([("t".to_string(), state(2)), ("new".to_string(), state(1))]);
        assert!(plan(&c, next(), &BTreeMap::new(), &epochs).unwrap().is_ok());
        // "t" was started again (epoch 3) and "new" never was.
        let epochs = BTreeMap::from([("t".to_string(), state(3))]);
        let rejected = plan(&c, next(), &BTreeMap::new(), &epochs)
            .unwrap()
            .unwrap_err();
        let fenced = |id: &str, epoch, current| Rejection::TransactionFenced {
            transactional_id: id.into(),
            epoch,
            current,
        };
        assert_eq!(
            rejected,
            [
                (0, fenced("t", 2, Some(3))),
                (1, fenced("t", 2, Some(3))),
                (2, fenced("new", 1, None)),
            ]
        );
        // A commit of shared rows needs its transaction still open.
        c.transactions[1].shared = Some(4);
        let epochs = BTreeMap::from([
            ("t".to_string(), state(2)),
            (
                "new".to_string(),
                TxnState {
                    epoch: 1,
                    txn_no: 5,
                },
            ),
        ]);
        let rejected = plan(&c, next(), &BTreeMap::new(), &epochs)
            .unwrap()
            .unwrap_err();
        let ended = Rejection::TransactionEnded {
            transactional_id: "new".into(),
        };
        assert_eq!(rejected, [(2, ended)]);
    }
}
