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
//! producer lives on the agent that started it (its coordinator, where
//! InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn and EndTxn go);
//! a produce or TxnOffsetCommit that reaches another agent (the
//! partition's leader, the group's coordinator) is staged through the
//! object and metadata stores under the producer's epoch, with its
//! sequences checked there, and EndTxn commits it with the rest
//! (`streamhouse_log::transactional`, shared staging). An agent's restart
//! rolls back the open transactions it coordinates (the producer is told
//! INVALID_PRODUCER_ID_MAPPING and starts again).

use std::collections::HashMap;
use std::time::Duration;

use arrow::array::RecordBatch;
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
use streamhouse_log::metadata::{SeqRun, SharedStaged};
use streamhouse_log::transactional::MAX_PRODUCERS;
use streamhouse_log::{AppendOptions, GroupCommit, LogError, monotonic};
use streamhouse_sql::privileges::{Need, Object, Privilege};

use crate::ctx::Ctx;
use crate::errors::{About, of_log, of_sql};
use crate::groups::may_consume;
use crate::records::Sequences;
use crate::txn_state::{IDLE, Txn, kafka_epoch, producer_id};

/// The log epoch of producer `id`, started on another agent, if
/// `producer_id` and `epoch` are the client's current ones.
async fn shared_epoch(ctx: &Ctx, id: &str, producer_id: i64, epoch: i16) -> Result<u64, E> {
    if producer_id != crate::txn_state::producer_id(id) {
        return Err(E::InvalidProducerIdMapping);
    }
    match ctx.door.db.log().transactional_epoch(id).await {
        Ok(Some(e)) if kafka_epoch(e) == epoch => Ok(e),
        Ok(Some(_)) => Err(E::ProducerFenced),
        Ok(None) => Err(E::InvalidProducerIdMapping),
        Err(e) => Err(of_log(&e)),
    }
}

/// Whether producer `id` is this agent's, as the client with
/// `producer_id` and `epoch` knows it: an entry left from an older epoch
/// (the producer started again on another agent) is forgotten.
pub(crate) async fn is_local(ctx: &Ctx, id: &str, producer_id: i64, epoch: i16) -> bool {
    let txns = &ctx.door.txns;
    if !txns.knows(id) {
        return false;
    }
    if txns.with(id, producer_id, epoch, |_| Ok(())) != Err(E::ProducerFenced) {
        return true;
    }
    if let Ok(Some(current)) = ctx.door.db.log().transactional_epoch(id).await
        && kafka_epoch(current) == epoch
    {
        txns.forget_before(id, current);
    }
    txns.knows(id)
}

/// The Kafka error for a refused transactional call.
fn txn_code(e: &LogError) -> E {
    match e {
        LogError::UnknownTransactionalProducer(_) => E::InvalidProducerIdMapping,
        LogError::TransactionAborted(_) => E::InvalidTxnState,
        other => of_log(other),
    }
}

/// A transactional produce of one partition for a producer started on
/// another agent: staged through the object and metadata stores, where
/// that agent's EndTxn finds it.
pub(crate) async fn stage_shared(
    ctx: &Ctx,
    id: &str,
    s: Sequences,
    stream: &str,
    index: i32,
    batch: RecordBatch,
) -> Result<SharedStaged, (E, String)> {
    let log_epoch = shared_epoch(ctx, id, s.producer_id, s.epoch)
        .await
        .map_err(|code| (code, message(code).to_string()))?;
    if s.first < 0 || s.last < s.first || index < 0 {
        return Err((E::InvalidRecord, "a batch's sequences run backwards".into()));
    }
    let options = AppendOptions {
        partition: Some(index as u32),
        ..AppendOptions::default()
    };
    let run = SeqRun {
        first: s.first as u64,
        last: s.last as u64,
    };
    ctx.door
        .db
        .log()
        .stage_shared(id, log_epoch, stream, vec![batch], &options, Some(run))
        .await
        .map_err(|e| (txn_code(&e), e.to_string()))
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
    // An instance that names its producer id and epoch (KIP-360, to bump
    // its epoch after an abortable error) must be the current one: an
    // older instance may not fence the newer.
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 {
        if r.producer_id.0 != producer_id(id) {
            return out.with_error_code(E::InvalidProducerIdMapping.code());
        }
        match log.transactional_epoch(id).await {
            Ok(Some(current)) if kafka_epoch(current) == r.producer_epoch => {}
            Ok(Some(_)) => return out.with_error_code(E::ProducerFenced.code()),
            Ok(None) => return out.with_error_code(E::InvalidProducerIdMapping.code()),
            Err(e) => return out.with_error_code(of_log(&e).code()),
        }
    }
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

/// AddOffsetsToTxn: the group's offsets will come by TxnOffsetCommit.
pub async fn add_offsets(ctx: &Ctx, r: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let out = AddOffsetsToTxnResponse::default();
    if let Err(e) = may_consume(ctx, &r.group_id.0).await {
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
    let mut refusal = may_consume(ctx, &group).await.err();
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
    let kept = if is_local(ctx, &id, r.producer_id.0, r.producer_epoch).await {
        match ctx
            .door
            .txns
            .with(&id, r.producer_id.0, r.producer_epoch, |t| Ok(t.log_epoch))
        {
            Ok(epoch) => ctx
                .door
                .db
                .log()
                .stage_transaction_offsets(&id, epoch, &commits)
                .await
                .map_err(|e| txn_code(&e)),
            Err(e) => Err(e),
        }
    } else {
        // Started on another agent: staged through the metadata store.
        match shared_epoch(ctx, &id, r.producer_id.0, r.producer_epoch).await {
            Ok(epoch) => ctx
                .door
                .db
                .log()
                .stage_shared_offsets(&id, epoch, &commits)
                .await
                .map_err(|e| txn_code(&e)),
            Err(e) => Err(e),
        }
    };
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
/// It ends the transaction open when it arrived: a request the client gave
/// up on (its agent was paused, its connection cut) and sent again, handled
/// late, answers as the first did and never ends the next transaction.
pub async fn end(ctx: &Ctx, r: EndTxnRequest) -> EndTxnResponse {
    let out = EndTxnResponse::default();
    let id = r.transactional_id.0.to_string();
    let log = ctx.door.db.log();
    let open = ctx
        .door
        .txns
        .with(&id, r.producer_id.0, r.producer_epoch, |t| Ok(t.log_epoch))
        .and_then(|epoch| {
            let txn = log.open_transaction(&id, epoch).map_err(|e| txn_code(&e))?;
            Ok((epoch, txn))
        });
    let (log_epoch, txn) = match open {
        Ok(x) => x,
        Err(e) => return out.with_error_code(e.code()),
    };
    let done = if r.committed {
        log.commit_transaction_shared(&id, log_epoch, Some(txn), &[])
            .await
            .map(|_| ())
    } else {
        match log.abort_transaction_numbered(&id, log_epoch, Some(txn)) {
            Ok(true) => log.abort_shared(&id, log_epoch).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        }
    };
    match done {
        Ok(()) => out,
        Err(e) => {
            let code = txn_code(&e);
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
