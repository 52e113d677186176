//! Produce: each partition's records are checked whole and appended to
//! the stream's partition as one append, buffered in request order; the
//! values of a stream with typed columns are decoded into its rows first
//! (see `records`, and `streamhouse_sql::typed` for Avro). The
//! answer waits until every append is durable (acks 1 and all alike: an
//! acknowledgement means durable), and acks=0 gets none.
//!
//! An idempotent producer's batch carries its producer id, epoch and run
//! of sequences; the log deduplicates it per producer, epoch and partition
//! (a retry of the last batch answers its original offset, an older one
//! DUPLICATE_SEQUENCE_NUMBER) and refuses a gap as
//! OUT_OF_ORDER_SEQUENCE_NUMBER, in the same metadata transaction that
//! commits the rows. A transactional producer's batch is staged for its
//! transaction instead and answered at once (see `txns`).

use arrow::array::AsArray;
use arrow::datatypes::SchemaRef;
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::ProduceResponse;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use streamhouse_log::metadata::SharedStaged;
use streamhouse_log::{AppendAck, AppendOptions, LogError, ProducerSeq, StreamKind};
use streamhouse_sql::SqlError;
use streamhouse_sql::privileges::{Need, Object, Privilege};
use streamhouse_sql::topics::is_record_shaped;
use streamhouse_sql::typed::follows;

use crate::ctx::{Answer, Ctx, text};
use crate::errors::{About, of_log, of_sql};
use crate::records::{self, Sequences};
use crate::txn_state::Staging;
use crate::txns::message as txn_message;

/// How a topic's produced values become its rows.
enum Values {
    Records,
    Json(SchemaRef),
    Avro,
}

/// One partition's outcome: its answer now, or once durable.
enum Outcome {
    Done(PartitionProduceResponse),
    Durable(i32, BoxFuture<'static, Result<AppendAck, LogError>>),
}

fn refused(partition: i32, code: E, message: impl Into<String>) -> Outcome {
    Outcome::Done(
        PartitionProduceResponse::default()
            .with_index(partition)
            .with_error_code(code.code())
            .with_base_offset(-1)
            .with_error_message(Some(text(message))),
    )
}

/// The log producer a Kafka producer's batches are deduplicated as: one
/// per producer id, epoch and partition (the log keys producers per
/// stream).
fn log_producer(s: Sequences, partition: i32) -> Result<ProducerSeq, String> {
    let (Ok(first), Ok(last)) = (u64::try_from(s.first), u64::try_from(s.last)) else {
        return Err(format!(
            "negative sequence {} of an idempotent producer",
            s.first
        ));
    };
    if last < first {
        return Err(format!(
            "sequences {first}..{last} wrap around, which is not supported"
        ));
    }
    Ok(ProducerSeq {
        producer_id: format!("kafka:{}:{}:{partition}", s.producer_id, s.epoch),
        sequence: last,
        progress: None,
        epoch: None,
        first: Some(first),
    })
}

/// Answers a Produce request.
pub async fn produce(ctx: &Ctx, r: ProduceRequest) -> Answer {
    let acks = r.acks;
    let general = if !matches!(acks, -1..=1) {
        Some((
            E::InvalidRequiredAcks,
            format!("acks {acks}: use 0, 1 or -1"),
        ))
    } else {
        None
    };
    // A transactional produce stages its rows until EndTxn (see `txns`).
    let txn = r
        .transactional_id
        .as_ref()
        .filter(|id| !id.is_empty())
        .map(|id| id.0.to_string());
    let log = ctx.door.db.log().clone();
    let now_ms = log.now_micros() / 1_000;
    let mut topics = Vec::with_capacity(r.topic_data.len());
    for topic in r.topic_data {
        let name = topic.name.0.to_string();
        let mut topic_error = general.clone();
        // How values become rows: as they are (record shape), as JSON rows
        // of a typed stream, or as Avro values of a followed subject.
        let mut values = Values::Records;
        if topic_error.is_none() {
            let need = [Need::Privilege(
                Privilege::Insert,
                Object::table(name.clone()),
            )];
            if let Err(e) = ctx
                .door
                .db
                .authorize(crate::ctx::DOOR, ctx.role(), &need)
                .await
            {
                topic_error = Some((of_sql(&e, About::Topic), e.to_string()));
            }
        }
        if topic_error.is_none() {
            topic_error = match log.stream(&name).await {
                Ok(_) if StreamKind::of(&name).is_internal() => Some((
                    E::UnknownTopicOrPartition,
                    format!("\"{name}\" is not a topic"),
                )),
                Ok(info) => {
                    if follows(&info.spec.schema).is_some() {
                        values = Values::Avro;
                    } else if !is_record_shaped(&info) {
                        values = Values::Json(info.spec.schema.clone());
                    }
                    None
                }
                Err(e) => Some((of_log(&e), e.to_string())),
            };
        }
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let index = p.index;
            if let Some((code, message)) = &topic_error {
                parts.push(refused(index, *code, message.clone()));
                continue;
            }
            let Ok(partition) = u32::try_from(index) else {
                parts.push(refused(
                    index,
                    E::UnknownTopicOrPartition,
                    "negative partition",
                ));
                continue;
            };
            let Some(raw) = p.records else {
                parts.push(refused(index, E::InvalidRecord, "no records"));
                continue;
            };
            let produced = match records::decode(raw, now_ms) {
                Ok(p) => p,
                Err((code, message)) => {
                    parts.push(refused(index, code, message));
                    continue;
                }
            };
            let batch = match &values {
                Values::Records => Ok(produced.batch),
                Values::Json(schema) => records::json_to_typed(&produced.batch, schema.clone()),
                Values::Avro => ctx
                    .door
                    .db
                    .decode_values(&name, produced.batch.column(1).as_binary::<i32>())
                    .await
                    .map(|(_, rows)| rows)
                    .map_err(|e| match e {
                        SqlError::Unavailable(_) | SqlError::ShuttingDown => {
                            (of_sql(&e, About::Topic), e.to_string())
                        }
                        _ => (E::InvalidRecord, e.to_string()),
                    }),
            };
            let batch = match batch {
                Ok(rows) => rows,
                Err((code, message)) => {
                    parts.push(refused(index, code, message));
                    continue;
                }
            };
            let producer = match produced.sequences.map(|s| log_producer(s, index)) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(message)) => {
                    parts.push(refused(index, E::InvalidRecord, message));
                    continue;
                }
            };
            if produced.transactional != txn.is_some() {
                parts.push(refused(
                    index,
                    E::InvalidRecord,
                    "transactional records come with a transactional id, and only they",
                ));
                continue;
            }
            if let (Some(id), Some(s)) = (&txn, produced.sequences) {
                parts.push(staged(ctx, id, s, &name, index, batch).await);
                continue;
            }
            let options = AppendOptions {
                partition: Some(partition),
                producer,
                ..AppendOptions::default()
            };
            match log.submit(&name, vec![batch], options).await {
                Ok(Some(submitted)) => {
                    parts.push(Outcome::Durable(index, submitted.durable().boxed()))
                }
                Ok(None) => parts.push(Outcome::Done(
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_base_offset(-1),
                )),
                Err(e) => parts.push(refused(index, of_log(&e), e.to_string())),
            }
        }
        topics.push((topic.name, parts));
    }
    let answer = async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, parts) in topics {
            let outcomes = join_all(parts.into_iter().map(|o| async move {
                match o {
                    Outcome::Done(r) => r,
                    Outcome::Durable(index, f) => acknowledged(index, f.await),
                }
            }))
            .await;
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(outcomes),
            );
        }
        ProduceResponse::default().with_responses(responses).into()
    };
    if acks == 0 {
        // Nothing is answered; the appends complete on their own.
        tokio::spawn(answer);
        return Answer::None;
    }
    Answer::Later(answer.boxed())
}

/// A transactional produce of one partition: staged for the producer's
/// open transaction, answered at once (offsets come at commit).
async fn staged(
    ctx: &Ctx,
    id: &str,
    s: Sequences,
    stream: &str,
    index: i32,
    batch: arrow::array::RecordBatch,
) -> Outcome {
    let done = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1);
    let txns = &ctx.door.txns;
    if !crate::txns::is_local(ctx, id, s.producer_id, s.epoch).await {
        // Started on another agent: staged through the stores.
        return match crate::txns::stage_shared(ctx, id, s, stream, index, batch).await {
            Ok(SharedStaged::Staged) => Outcome::Done(done),
            Ok(SharedStaged::Duplicate) => {
                Outcome::Done(done.with_error_code(E::DuplicateSequenceNumber.code()))
            }
            Err((code, message)) => {
                tracing::debug!(transactional_id = %id, %stream, partition = index, ?code, %message,
                    "shared transactional produce refused");
                refused(index, code, message)
            }
        };
    }
    let log_epoch = match txns.stage(id, s, stream, index) {
        Ok(Staging::Stage(epoch)) => epoch,
        Ok(Staging::Duplicate) => {
            return Outcome::Done(done.with_error_code(E::DuplicateSequenceNumber.code()));
        }
        Err(code) => return refused(index, code, txn_message(code)),
    };
    let options = AppendOptions {
        partition: Some(index as u32),
        ..AppendOptions::default()
    };
    match ctx
        .door
        .db
        .log()
        .stage_transactional_run(
            id,
            log_epoch,
            stream,
            vec![batch],
            &options,
            Some(streamhouse_log::metadata::SeqRun {
                first: s.first as u64,
                last: s.last as u64,
            }),
        )
        .await
    {
        Ok(_) => Outcome::Done(done),
        Err(e) => {
            txns.unstage(id, s, stream, index);
            let code = match &e {
                LogError::UnknownTransactionalProducer(_) => E::InvalidProducerIdMapping,
                other => of_log(other),
            };
            refused(index, code, e.to_string())
        }
    }
}

fn acknowledged(index: i32, ack: Result<AppendAck, LogError>) -> PartitionProduceResponse {
    let r = PartitionProduceResponse::default().with_index(index);
    match ack {
        Ok(ack) => match ack.parts.first() {
            Some(part) => r.with_base_offset(part.base_offset as i64),
            None if ack.duplicate => r
                .with_error_code(E::DuplicateSequenceNumber.code())
                .with_base_offset(-1),
            None => r.with_base_offset(-1),
        },
        Err(e) => r
            .with_error_code(of_log(&e).code())
            .with_base_offset(-1)
            .with_error_message(Some(text(e.to_string()))),
    }
}
