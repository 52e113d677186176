//! Kafka transactions over the log's transactional producers
//! (`streamhouse_log::transactional`): InitProducerId with a transactional
//! id, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn.
//!
//! InitProducerId starts the log producer of that transactional id, whose
//! new epoch fences every older instance (its open transaction is rolled
//! back, its later calls refused with PRODUCER_FENCED), on this agent or
//! another. The Kafka producer id is a hash of the transactional id, the
//! Kafka epoch the log's epoch modulo 2^15 − 1. A transactional produce is
//! staged in this agent — nothing reaches the log before EndTxn commits —
//! and EndTxn commits the staged rows of every partition with the offsets
//! TxnOffsetCommit gave, in one metadata transaction (or aborts them).
//! So a consumer never sees an uncommitted or aborted record, with either
//! isolation level, and no transaction markers exist in the log.
//!
//! Sequences are checked per partition as Kafka does (a repeated batch is
//! DUPLICATE_SEQUENCE_NUMBER, a gap OUT_OF_ORDER_SEQUENCE_NUMBER) and go on
//! across the transactions of one epoch. A produce is answered once staged,
//! with base offset −1 (offsets are given at commit). The state of a
//! producer lives on the agent that started it: produce and EndTxn must
//! reach it (with one agent, always), and an agent's restart rolls its open
//! transactions back (the producer is told INVALID_PRODUCER_ID_MAPPING and
//! starts again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use streamhouse_log::transactional::MAX_PRODUCERS;
use streamhouse_log::{GroupCommit, LogError, monotonic};
use streamhouse_sql::privileges::{Need, Object, Privilege};
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::errors::{About, of_log, of_sql};
use crate::records::Sequences;

/// A producer idle this long is forgotten (as the log forgets it).
const IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The transactional producers started on this agent.
#[derive(Default)]
pub struct Txns {
    inner: Mutex<HashMap<String, Txn>>,
}

/// One transactional producer, as its Kafka client knows it.
struct Txn {
    producer_id: i64,
    epoch: i16,
    /// The log producer's epoch.
    log_epoch: u64,
    /// The next sequence per (topic, partition), for this epoch.
    next: HashMap<(String, i32), i32>,
    /// Group offsets to commit with the open transaction.
    offsets: Vec<GroupCommit>,
    used: Instant,
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
fn kafka_epoch(log_epoch: u64) -> i16 {
    (log_epoch % i16::MAX as u64) as i16
}

impl Txns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Txn>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on producer `id` if `producer_id` and `epoch` are its
    /// current ones, else the Kafka error saying why not.
    fn with<T>(
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
            let next = t.next.entry((topic.to_string(), partition)).or_insert(0);
            if s.last < s.first {
                return Err(E::InvalidRecord);
            }
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

/// InitProducerId with a transactional id: starts (or starts again) its
/// producer, fencing older instances.
pub async fn init(ctx: &Ctx, id: &str, r: &InitProducerIdRequest) -> InitProducerIdResponse {
    let out = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if r.transaction_timeout_ms <= 0 {
        return out.with_error_code(E::InvalidTransactionTimeout.code());
    }
    let timeout = Duration::from_millis(r.transaction_timeout_ms as u64);
    let log = ctx.door.db.log();
    let log_epoch = match log.init_transactions(id, Some(timeout)).await {
        Ok(e) => e,
        Err(LogError::InvalidArgument(m)) if m.contains("timeout") => {
            return out.with_error_code(E::InvalidTransactionTimeout.code());
        }
        Err(e) => return out.with_error_code(of_log(&e).code()),
    };
    let producer_id = producer_id(id);
    let epoch = kafka_epoch(log_epoch);
    let now = monotonic();
    {
        let mut all = ctx.door.txns.lock();
        all.retain(|_, t| now.duration_since(t.used) < IDLE);
        if all.len() >= MAX_PRODUCERS && !all.contains_key(id) {
            return out.with_error_code(E::PolicyViolation.code());
        }
        // Two starts racing: the newer epoch stays.
        if all.get(id).is_none_or(|t| t.log_epoch < log_epoch) {
            all.insert(
                id.to_string(),
                Txn {
                    producer_id,
                    epoch,
                    log_epoch,
                    next: HashMap::new(),
                    offsets: Vec::new(),
                    used: now,
                },
            );
        }
    }
    out.with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
}

/// AddPartitionsToTxn (versions 0–3, from clients): every partition is
/// accepted while the producer is current; staging checks the rest.
pub async fn add_partitions(ctx: &Ctx, r: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let id = r.v3_and_below_transactional_id.0.to_string();
    let code = match ctx.door.txns.with(
        &id,
        r.v3_and_below_producer_id.0,
        r.v3_and_below_producer_epoch,
        |_| Ok(()),
    ) {
        Ok(()) => 0,
        Err(e) => e.code(),
    };
    let results = r
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name)
                .with_results_by_partition(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

async fn may_commit_for(ctx: &Ctx, group: &str) -> Result<(), E> {
    let need = [Need::Privilege(
        Privilege::Consume,
        Object::group(group.to_string()),
    )];
    ctx.door
        .db
        .authorize(crate::ctx::DOOR, ctx.role(), &need)
        .await
        .map_err(|e| of_sql(&e, About::Group))
}

/// AddOffsetsToTxn: the group's offsets will come by TxnOffsetCommit.
pub async fn add_offsets(ctx: &Ctx, r: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let out = AddOffsetsToTxnResponse::default();
    if let Err(e) = may_commit_for(ctx, &r.group_id.0).await {
        return out.with_error_code(e.code());
    }
    let id = r.transactional_id.0.to_string();
    match ctx
        .door
        .txns
        .with(&id, r.producer_id.0, r.producer_epoch, |_| Ok(()))
    {
        Ok(()) => out,
        Err(e) => out.with_error_code(e.code()),
    }
}

/// TxnOffsetCommit: offsets committed with the open transaction, or not
/// at all.
pub async fn commit_offsets(ctx: &Ctx, r: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let group = r.group_id.0.to_string();
    let mut refusal = may_commit_for(ctx, &group).await.err();
    if refusal.is_none() && group.is_empty() {
        refusal = Some(E::InvalidGroupId);
    }
    let mut commits = Vec::new();
    let mut answers = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let name = t.name.0.to_string();
        let need = [Need::Privilege(
            Privilege::Select,
            Object::table(name.clone()),
        )];
        let topic_refusal = match refusal {
            Some(e) => Some(e),
            None => ctx
                .door
                .db
                .authorize(crate::ctx::DOOR, ctx.role(), &need)
                .await
                .err()
                .map(|e| of_sql(&e, About::Topic)),
        };
        let mut offsets = Vec::new();
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let code = match topic_refusal {
                Some(e) => e.code(),
                None if p.partition_index < 0 => E::UnknownTopicOrPartition.code(),
                None if p.committed_offset < 0 => E::InvalidCommitOffsetSize.code(),
                None => {
                    offsets.push((p.partition_index as u32, p.committed_offset as u64));
                    0
                }
            };
            parts.push(
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        if !offsets.is_empty() {
            commits.push(GroupCommit {
                group: group.clone(),
                stream: name,
                offsets,
            });
        }
        answers.push((t.name, parts));
    }
    let id = r.transactional_id.0.to_string();
    let kept = ctx
        .door
        .txns
        .with(&id, r.producer_id.0, r.producer_epoch, |t| {
            t.offsets.extend(commits);
            Ok(())
        });
    let topics = answers
        .into_iter()
        .map(|(name, mut parts)| {
            if let Err(e) = kept {
                for p in &mut parts {
                    p.error_code = e.code();
                }
            }
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(parts)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// EndTxn: commits the staged rows and offsets together, or aborts them.
pub async fn end(ctx: &Ctx, r: EndTxnRequest) -> EndTxnResponse {
    let out = EndTxnResponse::default();
    let id = r.transactional_id.0.to_string();
    let taken = ctx
        .door
        .txns
        .with(&id, r.producer_id.0, r.producer_epoch, |t| {
            Ok((t.log_epoch, std::mem::take(&mut t.offsets)))
        });
    let (log_epoch, offsets) = match taken {
        Ok(x) => x,
        Err(e) => return out.with_error_code(e.code()),
    };
    let log = ctx.door.db.log();
    let done = if r.committed {
        log.commit_transaction(&id, log_epoch, &offsets)
            .await
            .map(|_| ())
    } else {
        log.abort_transaction(&id, log_epoch)
    };
    match done {
        Ok(()) => out,
        Err(e) => {
            let code = match &e {
                LogError::UnknownTransactionalProducer(_) => E::InvalidProducerIdMapping,
                LogError::TransactionAborted(_) => E::InvalidTxnState,
                other => of_log(other),
            };
            tracing::debug!(transactional_id = %id, error = %e, "EndTxn refused");
            out.with_error_code(code.code())
        }
    }
}

/// The text of a refusal, for produce answers.
pub fn message(code: E) -> &'static str {
    match code {
        E::InvalidProducerIdMapping => {
            "this agent does not know the transactional producer: start it again (InitProducerId)"
        }
        E::ProducerFenced => "a newer instance of this transactional producer has started",
        E::OutOfOrderSequenceNumber => "a gap in the producer's sequences",
        _ => "refused",
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
                offsets: Vec::new(),
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
